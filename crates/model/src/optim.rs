//! The classifier's optimiser: `cxr_ops::Adam` (the workspace's one Adam) with PyTorch's epsilon, 1e-8, as
//! this crate always trained with (see `cxr_ops::AdamConfig` for why the UNet keeps Keras' 1e-7 and this
//! one does not move), and every step recorded in the parameter generation, so that the folded inference
//! weights are rebuilt after it.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
pub use cxr_ops::AdamConfig;

use crate::error::{CandleContext, Result};

/// Adam over the classifier's trainable parameters. Reads (`t`, `config`, `state`) go to the inner
/// `cxr_ops::Adam`; `step` and `restore` are this type's.
#[derive(Debug)]
pub struct Adam(cxr_ops::Adam);

impl Adam {
    /// Adam with PyTorch's defaults (betas 0.9 / 0.999, eps 1e-8) at learning rate `lr`.
    pub fn new(vars: Vec<(String, Var)>, lr: f64) -> Result<Self> {
        cxr_ops::Adam::new(vars, AdamConfig::pytorch(lr))
            .map(Self)
            .ctx(|| "Adam moments".into())
    }

    /// One update; the parameter generation moves even if a variable failed half-way (some may have changed).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let done = self.0.step(grads).ctx(|| "Adam step".into());
        crate::params::bump_generation();
        done
    }

    /// Restores moments saved by `state` and the step count; returns the name of the first one missing or
    /// mis-shaped, if any.
    pub fn restore(&mut self, tensors: &BTreeMap<String, Tensor>, t: u64) -> Option<String> {
        self.0.restore(tensors, t)
    }
}

impl std::ops::Deref for Adam {
    type Target = cxr_ops::Adam;

    fn deref(&self) -> &cxr_ops::Adam {
        &self.0
    }
}
