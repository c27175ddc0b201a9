//! VGG16 under torchvision names (`features.{i}`): 3x3 convolutions with bias and ReLU, five blocks with a
//! 2x2 max-pool after each.

use candle_core::{Tensor, Var};
use rand::Rng;

use super::cfg;
use crate::error::Result;
use crate::params::{Init, ParamRole, ParamStore};

/// VGG conv (with bias) + ReLU.
#[derive(Debug, Clone)]
pub(super) struct VggConv {
    w: Var,
    b: Var,
    pub(super) trainable: bool,
    pool_after: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Vgg {
    pub(super) convs: Vec<VggConv>,
}

impl Vgg {
    pub(super) fn new<R: Rng>(
        store: &mut ParamStore,
        init: &mut Init<'_, R>,
        widths: [usize; 5],
    ) -> Result<Self> {
        let per_block = [2, 2, 3, 3, 3];
        let mut idx = 0;
        let mut cin = 3;
        let mut convs = Vec::new();
        for (blk, &n) in per_block.iter().enumerate() {
            let cout = widths[blk];
            for i in 0..n {
                let w = store.add(
                    &format!("features.{idx}.weight"),
                    init.kaiming_out(&[cout, cin, 3, 3])?,
                    ParamRole::ConvWeight,
                )?;
                let b = store.add(
                    &format!("features.{idx}.bias"),
                    init.constant(0.0, cout)?,
                    ParamRole::ConvBias,
                )?;
                idx += 2; // conv, relu
                let pool_after = i + 1 == n;
                if pool_after {
                    idx += 1;
                }
                convs.push(VggConv {
                    w,
                    b,
                    trainable: false,
                    pool_after,
                });
                cin = cout;
            }
        }
        Ok(Self { convs })
    }

    pub(super) fn conv_names(&self) -> Vec<String> {
        let mut idx = 0;
        self.convs
            .iter()
            .map(|c| {
                let name = format!("features.{idx}");
                idx += if c.pool_after { 3 } else { 2 };
                name
            })
            .collect()
    }

    /// Output of the last conv + ReLU (before the last max-pool): the Grad-CAM feature map.
    pub(super) fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        let last = self.convs.len() - 1;
        for (i, c) in self.convs.iter().enumerate() {
            y = if train && c.trainable {
                cxr_ops::conv2d(&y, c.w.as_tensor(), Some(c.b.as_tensor()), cfg(1, 1))?.relu()?
            } else {
                let z = cxr_ops::conv2d_frozen(&y, &c.w.as_tensor().detach(), None, cfg(1, 1))?;
                cxr_ops::bias_relu(&z, &c.b.as_tensor().detach())?
            };
            if c.pool_after && i != last {
                y = cxr_ops::max_pool2d(&y, 2, 2, 0)?;
            }
        }
        Ok(y)
    }
}
