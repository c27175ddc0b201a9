//! ResNet (v1.5: the stride in the 3x3 convolution) under torchvision/timm names: `conv1`, `bn1`,
//! `layer{1..4}.{i}.conv{1,2,3}`, `bn{1,2,3}`, `downsample.{0,1}`. Inference folds each BatchNorm into its
//! convolution and fuses bias, residual and ReLU.

use std::sync::{Arc, Mutex};

use candle_core::{Tensor, Var};
use cxr_ops::Conv2dCfg;
use rand::Rng;

use super::bn::Bn;
use super::{BN_EPS, cfg};
use crate::error::Result;
use crate::params::{Init, ParamRole, ParamStore};

/// A bias-free convolution followed by BatchNorm (ResNet).
#[derive(Debug, Clone)]
pub(super) struct ConvBn {
    w: Var,
    bn: Bn,
    cfg: Conv2dCfg,
    pub(super) trainable: bool,
    /// The folded (weight, bias) of inference and the parameter generation they were computed at: folding
    /// rewrites the whole weight tensor (and the Winograd layers transform it), which every inference pass would
    /// otherwise repeat.
    folded: Arc<Mutex<Option<(u64, cxr_ops::InferenceWeight, Tensor)>>>,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new<R: Rng>(
        store: &mut ParamStore,
        init: &mut Init<'_, R>,
        conv: &str,
        bn: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let w = store.add(
            &format!("{conv}.weight"),
            init.kaiming_out(&[cout, cin, k, k])?,
            ParamRole::ConvWeight,
        )?;
        Ok(Self {
            w,
            bn: Bn::new(store, init, bn, cout)?,
            cfg: cfg(stride, pad),
            trainable: false,
            folded: Arc::default(),
        })
    }

    fn forward_train(&self, x: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
        let y = if self.trainable {
            cxr_ops::conv2d(x, self.w.as_tensor(), None, self.cfg)?
        } else {
            cxr_ops::conv2d_frozen(x, self.w.as_tensor(), None, self.cfg)?
        };
        let y = self.bn.forward_train(&y)?;
        if relu { y.relu() } else { Ok(y) }
    }

    /// Inference: relu?(conv(x, folded weight) + folded bias [+ residual]), fused into the convolution's epilogue.
    fn forward_eval_fused(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> candle_core::Result<Tensor> {
        let (w, b) = self.folded()?;
        cxr_ops::conv2d_bias_act_prepared(x, &w, Some(&b), residual, relu, self.cfg)
    }

    /// The BatchNorm folded into the weight, recomputed only when a parameter changed since the last fold.
    fn folded(&self) -> candle_core::Result<(cxr_ops::InferenceWeight, Tensor)> {
        let generation = crate::params::generation();
        let mut cache = self
            .folded
            .lock()
            .map_err(|_| candle_core::Error::Msg("folded BatchNorm cache poisoned".into()))?;
        if let Some((g, w, b)) = cache.as_ref()
            && *g == generation
        {
            return Ok((w.clone(), b.clone()));
        }
        let (w, b) = cxr_ops::fold_batch_norm(
            &self.w.as_tensor().detach(),
            None,
            &self.bn.gamma.as_tensor().detach(),
            &self.bn.beta.as_tensor().detach(),
            &self.bn.mean.as_tensor().detach(),
            &self.bn.var.as_tensor().detach(),
            BN_EPS,
        )?;
        let w = cxr_ops::InferenceWeight::new(&w, self.cfg)?;
        *cache = Some((generation, w.clone(), b.clone()));
        Ok((w, b))
    }

    fn forward_eval(&self, x: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
        self.forward_eval_fused(x, None, relu)
    }

    fn forward(&self, x: &Tensor, train: bool, relu: bool) -> candle_core::Result<Tensor> {
        if train {
            self.forward_train(x, relu)
        } else {
            self.forward_eval(x, relu)
        }
    }
}

#[derive(Debug, Clone)]
struct Bottleneck {
    c1: ConvBn,
    c2: ConvBn,
    c3: ConvBn,
    down: Option<ConvBn>,
}

impl Bottleneck {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = self.c1.forward(x, train, true)?;
        let y = self.c2.forward(&y, train, true)?;
        let identity = match &self.down {
            Some(d) => d.forward(x, train, false)?,
            None => x.clone(),
        };
        if train {
            let y = self.c3.forward_train(&y, false)?;
            (y + identity)?.relu()
        } else {
            // relu(conv3 + folded bias + identity) in the convolution's epilogue.
            self.c3.forward_eval_fused(&y, Some(&identity), true)
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct ResNet {
    stem: ConvBn,
    layers: Vec<Vec<Bottleneck>>,
}

impl ResNet {
    pub(super) fn new<R: Rng>(
        store: &mut ParamStore,
        init: &mut Init<'_, R>,
        blocks: [usize; 4],
        width: usize,
    ) -> Result<Self> {
        let stem = ConvBn::new(store, init, "conv1", "bn1", 3, width, 7, 2, 3)?;
        let mut inplanes = width;
        let mut layers = Vec::new();
        for (l, &n) in blocks.iter().enumerate() {
            let planes = width << l;
            let out = planes * 4;
            let stride = if l == 0 { 1 } else { 2 };
            let mut layer = Vec::new();
            for i in 0..n {
                let p = format!("layer{}.{i}", l + 1);
                let s = if i == 0 { stride } else { 1 };
                let cin = if i == 0 { inplanes } else { out };
                let down = if i == 0 && (s != 1 || cin != out) {
                    Some(ConvBn::new(
                        store,
                        init,
                        &format!("{p}.downsample.0"),
                        &format!("{p}.downsample.1"),
                        cin,
                        out,
                        1,
                        s,
                        0,
                    )?)
                } else {
                    None
                };
                layer.push(Bottleneck {
                    c1: ConvBn::new(
                        store,
                        init,
                        &format!("{p}.conv1"),
                        &format!("{p}.bn1"),
                        cin,
                        planes,
                        1,
                        1,
                        0,
                    )?,
                    c2: ConvBn::new(
                        store,
                        init,
                        &format!("{p}.conv2"),
                        &format!("{p}.bn2"),
                        planes,
                        planes,
                        3,
                        s,
                        1,
                    )?,
                    c3: ConvBn::new(
                        store,
                        init,
                        &format!("{p}.conv3"),
                        &format!("{p}.bn3"),
                        planes,
                        out,
                        1,
                        1,
                        0,
                    )?,
                    down,
                });
            }
            inplanes = out;
            layers.push(layer);
        }
        Ok(Self { stem, layers })
    }

    pub(super) fn convs_mut(&mut self) -> Vec<(String, &mut ConvBn)> {
        let mut v: Vec<(String, &mut ConvBn)> = vec![("conv1".into(), &mut self.stem)];
        for (l, layer) in self.layers.iter_mut().enumerate() {
            for (i, b) in layer.iter_mut().enumerate() {
                let p = format!("layer{}.{i}", l + 1);
                // Forward order: conv1, conv2, (downsample), conv3 -- the last two are conv2/conv3 of the last
                // block only when it has no downsample, which holds for every block but the first of a layer.
                v.push((format!("{p}.conv1"), &mut b.c1));
                v.push((format!("{p}.conv2"), &mut b.c2));
                if let Some(d) = b.down.as_mut() {
                    v.push((format!("{p}.downsample.0"), d));
                }
                v.push((format!("{p}.conv3"), &mut b.c3));
            }
        }
        v
    }

    pub(super) fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut y = self.stem.forward(x, train, true)?;
        y = cxr_ops::max_pool2d(&y, 3, 2, 1)?;
        for layer in &self.layers {
            for b in layer {
                y = b.forward(&y, train)?;
            }
        }
        Ok(y)
    }
}
