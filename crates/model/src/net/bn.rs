//! The BatchNorm layer (PyTorch's names and semantics): training mode on batch statistics with the running
//! ones updated (momentum 0.1, unbiased running variance), inference mode on the running statistics. On the CPU
//! the NCHW training mode is `cxr_ops::batch_norm_train`, the workspace's one fused BatchNorm.

use candle_core::{Tensor, Var};
use rand::Rng;

use super::{BN_EPS, BN_MOMENTUM};
use crate::error::Result;
use crate::params::{Init, ParamRole, ParamStore};

/// BatchNorm over dim 1 of an [N, C] or [N, C, H, W] tensor.
#[derive(Debug, Clone)]
pub(super) struct Bn {
    pub(super) gamma: Var,
    pub(super) beta: Var,
    pub(super) mean: Var,
    pub(super) var: Var,
}

impl Bn {
    pub(super) fn new<R: Rng>(
        store: &mut ParamStore,
        init: &mut Init<'_, R>,
        name: &str,
        c: usize,
    ) -> Result<Self> {
        Ok(Self {
            gamma: store.add(
                &format!("{name}.weight"),
                init.constant(1.0, c)?,
                ParamRole::BnAffine,
            )?,
            beta: store.add(
                &format!("{name}.bias"),
                init.constant(0.0, c)?,
                ParamRole::BnAffine,
            )?,
            mean: store.add(
                &format!("{name}.running_mean"),
                init.constant(0.0, c)?,
                ParamRole::BnRunning,
            )?,
            var: store.add(
                &format!("{name}.running_var"),
                init.constant(1.0, c)?,
                ParamRole::BnRunning,
            )?,
        })
    }

    /// Training mode: normalise with the batch statistics (biased variance), update the running ones.
    pub(super) fn forward_train(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() && x.rank() == 4 && x.dtype() == candle_core::DType::F32 {
            return self.forward_train_fused(x);
        }
        let c = x.dim(1)?;
        let shape = channel_shape(x.rank(), c);
        let dims: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
        let n = x.elem_count() / c;
        let mean = x.mean_keepdim(dims.as_slice())?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(dims.as_slice())?;
        let inv = (var.clone() + BN_EPS)?.sqrt()?.recip()?;
        let scale = inv.broadcast_mul(&self.gamma.as_tensor().reshape(shape.as_slice())?)?;
        let y = xc
            .broadcast_mul(&scale)?
            .broadcast_add(&self.beta.as_tensor().reshape(shape.as_slice())?)?;
        let m = mean.detach().flatten_all()?;
        let unbiased = if n > 1 {
            n as f64 / (n as f64 - 1.0)
        } else {
            1.0
        };
        let v = (var.detach().flatten_all()? * unbiased)?;
        let rm = ((self.mean.as_tensor().detach() * (1.0 - BN_MOMENTUM))? + (m * BN_MOMENTUM)?)?;
        let rv = ((self.var.as_tensor().detach() * (1.0 - BN_MOMENTUM))? + (v * BN_MOMENTUM)?)?;
        self.mean.set(&rm)?;
        self.var.set(&rv)?;
        crate::params::bump_generation();
        Ok(y)
    }

    /// CPU NCHW path: `cxr-ops`' fused training-mode BatchNorm (two passes forward, two backward, instead of
    /// candle's ~8 and ~16 broadcast passes), then the same running update.
    fn forward_train_fused(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (y, mean, var) = cxr_ops::batch_norm_train(
            x,
            self.gamma.as_tensor(),
            self.beta.as_tensor(),
            BN_EPS,
            false,
        )?;
        let n = x.elem_count() / x.dim(1)?;
        let unbiased = if n > 1 {
            n as f64 / (n as f64 - 1.0)
        } else {
            1.0
        };
        let m = mean;
        let v = (var * unbiased)?;
        let rm = ((self.mean.as_tensor().detach() * (1.0 - BN_MOMENTUM))? + (m * BN_MOMENTUM)?)?;
        let rv = ((self.var.as_tensor().detach() * (1.0 - BN_MOMENTUM))? + (v * BN_MOMENTUM)?)?;
        self.mean.set(&rm)?;
        self.var.set(&rv)?;
        crate::params::bump_generation();
        Ok(y)
    }

    /// Inference mode with the running statistics, for [N, C] inputs (the head; convs fold instead).
    pub(super) fn forward_eval(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let shape = channel_shape(x.rank(), x.dim(1)?);
        let scale = (self.gamma.as_tensor().detach()
            / (self.var.as_tensor().detach() + BN_EPS)?.sqrt()?)?;
        let shift = (self.beta.as_tensor().detach() - (self.mean.as_tensor().detach() * &scale)?)?;
        x.broadcast_mul(&scale.reshape(shape.as_slice())?)?
            .broadcast_add(&shift.reshape(shape.as_slice())?)
    }
}

/// `[1, c, 1, ...]` of the given rank: a per-channel tensor broadcast over dim 1.
fn channel_shape(rank: usize, c: usize) -> Vec<usize> {
    let mut s = vec![1; rank];
    s[1] = c;
    s
}
