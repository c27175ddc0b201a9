//! The paper's classification head (Table 2) on pooled backbone features, under `head.*` names.

use candle_core::{Tensor, Var};
use rand::Rng;

use super::bn::Bn;
use super::{HEAD_HIDDEN, INPUT_NORM};
use crate::error::Result;
use crate::params::{Init, ParamRole, ParamStore};

/// The paper's head (Table 2): GAP → Dense(64, ReLU) → Dropout(0.5) → BatchNorm → Dense(1); sigmoid lives in
/// the loss and the score. One addition: a fixed per-feature standardisation in front of Dense(64)
/// (`head.norm.mean`, `head.norm.scale`; identity until [`Classifier::set_feature_norm`]), because pooled
/// features of a randomly initialised backbone sit at arbitrary scales per channel and the head then fails
/// to learn from a few dozen images.
#[derive(Debug, Clone)]
pub(super) struct Head {
    /// 1 when every input image is standardised on its own before the backbone
    /// ([`Classifier::set_per_image_norm`]), else 0. A model property, saved with it, so that every consumer
    /// (prediction, Grad-CAM, the audits) feeds the backbone what training did.
    pub(super) input_norm: Var,
    pub(super) norm_mean: Var,
    pub(super) norm_scale: Var,
    w1: Var,
    b1: Var,
    bn: Bn,
    w2: Var,
    b2: Var,
}

impl Head {
    pub(super) fn new<R: Rng>(
        store: &mut ParamStore,
        init: &mut Init<'_, R>,
        inp: usize,
    ) -> Result<Self> {
        Ok(Self {
            input_norm: store.add(INPUT_NORM, init.constant(0.0, 1)?, ParamRole::FeatureNorm)?,
            norm_mean: store.add(
                "head.norm.mean",
                init.constant(0.0, inp)?,
                ParamRole::FeatureNorm,
            )?,
            norm_scale: store.add(
                "head.norm.scale",
                init.constant(1.0, inp)?,
                ParamRole::FeatureNorm,
            )?,
            w1: store.add(
                "head.fc1.weight",
                init.glorot(HEAD_HIDDEN, inp)?,
                ParamRole::Head,
            )?,
            b1: store.add(
                "head.fc1.bias",
                init.constant(0.0, HEAD_HIDDEN)?,
                ParamRole::Head,
            )?,
            bn: Bn::new(store, init, "head.bn", HEAD_HIDDEN)?,
            w2: store.add(
                "head.fc2.weight",
                init.glorot(1, HEAD_HIDDEN)?,
                ParamRole::Head,
            )?,
            b2: store.add("head.fc2.bias", init.constant(0.0, 1)?, ParamRole::Head)?,
        })
    }

    fn dense(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&w.t()?)?.broadcast_add(b)
    }

    /// `dropout_mask` (already scaled by 1/(1-p)) switches training mode on; `None` is inference.
    pub(super) fn forward(
        &self,
        f: &Tensor,
        dropout_mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let f = f
            .broadcast_sub(&self.norm_mean.as_tensor().detach())?
            .broadcast_mul(&self.norm_scale.as_tensor().detach())?;
        let f = &f;
        match dropout_mask {
            Some(mask) => {
                let h = Self::dense(f, self.w1.as_tensor(), self.b1.as_tensor())?.relu()?;
                let h = (h * mask)?;
                let h = self.bn.forward_train(&h)?;
                Self::dense(&h, self.w2.as_tensor(), self.b2.as_tensor())?.squeeze(1)
            }
            None => {
                let d = |v: &Var| v.as_tensor().detach();
                let h = Self::dense(f, &d(&self.w1), &d(&self.b1))?.relu()?;
                let h = self.bn.forward_eval(&h)?;
                Self::dense(&h, &d(&self.w2), &d(&self.b2))?.squeeze(1)
            }
        }
    }
}
