//! Named parameters: every weight of a network under its torchvision/timm name, with its trainability.
//!
//! We keep our own store instead of candle-nn's `VarMap` because training needs, per tensor, whether it is
//! trainable in the current mode, and loading must accept torchvision/timm files as they ship (extra tensors
//! such as `fc.*` or `num_batches_tracked` ignored, missing or mis-shaped ones reported by name).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::error::{CandleContext, ModelError, Result};

/// What a parameter is; decides its initialisation and whether a mode trains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    ConvWeight,
    ConvBias,
    /// BatchNorm gamma / beta.
    BnAffine,
    /// BatchNorm running mean / variance (updated by training-mode forwards, never by the optimiser).
    BnRunning,
    /// Weights of the classification head (dense layers).
    Head,
    /// The head's input standardisation (per-feature mean and 1/std of the training features): set once
    /// before training, saved with the model, never touched by the optimiser.
    FeatureNorm,
}

/// One parameter.
#[derive(Debug, Clone)]
pub struct Param {
    pub var: Var,
    pub role: ParamRole,
    pub trainable: bool,
}

/// All parameters of a model, by name, in a deterministic (sorted) order.
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    params: BTreeMap<String, Param>,
}

impl ParamStore {
    pub(crate) fn add(&mut self, name: &str, tensor: Tensor, role: ParamRole) -> Result<Var> {
        let var = Var::from_tensor(&tensor).ctx(|| format!("creating `{name}`"))?;
        self.params.insert(
            name.to_string(),
            Param {
                var: var.clone(),
                role,
                trainable: false,
            },
        );
        Ok(var)
    }

    pub fn get(&self, name: &str) -> Option<&Param> {
        self.params.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Param)> {
        self.params.iter()
    }

    pub(crate) fn set_trainable(&mut self, name: &str, trainable: bool) {
        if let Some(p) = self.params.get_mut(name) {
            p.trainable = trainable;
        }
    }

    /// Number of scalar parameters the optimiser updates.
    pub fn trainable_count(&self) -> usize {
        self.params
            .values()
            .filter(|p| p.trainable)
            .map(|p| p.var.elem_count())
            .sum()
    }

    /// The trainable parameters, sorted by name.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        self.params
            .iter()
            .filter(|(_, p)| p.trainable)
            .map(|(n, p)| (n.clone(), p.var.clone()))
            .collect()
    }

    /// Copies of every tensor (for saving or for keeping the best weights).
    pub fn snapshot(&self, filter: impl Fn(&Param) -> bool) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (name, p) in &self.params {
            if filter(p) {
                let t = p
                    .var
                    .as_tensor()
                    .detach()
                    .copy()
                    .ctx(|| format!("copying `{name}`"))?;
                out.insert(name.clone(), t);
            }
        }
        Ok(out)
    }

    /// Overwrites parameters from `tensors` (every name must be ours, shapes must match). Used for
    /// checkpoints and best-weight restores; `path` only names the origin in errors.
    pub fn restore(&self, tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
        for (name, t) in tensors {
            let p = self.params.get(name).ok_or_else(|| ModelError::Weights {
                path: path.to_path_buf(),
                message: format!("tensor `{name}` does not belong to this model"),
            })?;
            set_checked(p, name, t, path)?;
        }
        Ok(())
    }

    /// Loads backbone weights as torchvision/timm ship them: every parameter whose name passes `wanted` must
    /// be present with the right shape (any float dtype, converted to f32); extra tensors are ignored.
    pub fn load_safetensors(&self, path: &Path, wanted: impl Fn(&str) -> bool) -> Result<usize> {
        self.load_map(&read_safetensors(path)?, path, wanted)
    }

    pub(crate) fn load_map(
        &self,
        tensors: &HashMap<String, Tensor>,
        path: &Path,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<usize> {
        let mut n = 0;
        for (name, p) in self.params.iter().filter(|(n, _)| wanted(n)) {
            let t = tensors.get(name).ok_or_else(|| ModelError::MissingTensor {
                path: path.to_path_buf(),
                tensor: name.clone(),
                expected: p.var.dims().to_vec(),
            })?;
            set_checked(p, name, t, path)?;
            n += 1;
        }
        Ok(n)
    }

    /// Every tensor, for `model.safetensors`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let map = self.snapshot(|_| true)?;
        let bytes = safetensors::serialize(map.iter().map(|(k, v)| (k.as_str(), v)), None)
            .map_err(|e| ModelError::Weights {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        cxr_core::fsutil::write_atomic(path, &bytes)?;
        Ok(())
    }
}

/// Bumped by every change this crate makes to any parameter (loads, restores, optimiser steps, running-statistics
/// updates). Values derived from parameters and cached between calls (the folded BatchNorm weights of inference)
/// are valid while it stays the one they were computed at. Process-wide, so it errs towards recomputing.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Records that some parameter changed (see [`generation`]).
pub(crate) fn bump_generation() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// The current parameter generation.
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

fn set_checked(p: &Param, name: &str, t: &Tensor, path: &Path) -> Result<()> {
    if t.dims() != p.var.dims() {
        return Err(ModelError::TensorShape {
            path: path.to_path_buf(),
            tensor: name.to_string(),
            found: t.dims().to_vec(),
            expected: p.var.dims().to_vec(),
        });
    }
    if !t.dtype().is_float() {
        return Err(ModelError::Weights {
            path: path.to_path_buf(),
            message: format!(
                "tensor `{name}` has dtype {:?}, expected a float",
                t.dtype()
            ),
        });
    }
    let t = t
        .to_dtype(p.var.dtype())
        .and_then(|t| t.to_device(p.var.device()))
        .and_then(|t| t.contiguous())
        .ctx(|| format!("converting `{name}` from {}", path.display()))?;
    p.var.set(&t).ctx(|| format!("setting `{name}`"))?;
    bump_generation();
    Ok(())
}

/// Seeded initialisers (candle's CPU RNG cannot be seeded, so every random tensor comes from here).
pub(crate) struct Init<'a, R: Rng> {
    pub rng: &'a mut R,
    pub device: &'a Device,
}

impl<R: Rng> Init<'_, R> {
    /// He (Kaiming) normal with fan-out, as torchvision initialises ResNet/VGG convolutions.
    pub fn kaiming_out(&mut self, shape: &[usize]) -> Result<Tensor> {
        let fan_out = shape[0] * shape[2..].iter().product::<usize>();
        let std = (2.0 / fan_out as f64).sqrt() as f32;
        let normal = Normal::new(0.0f32, std).map_err(|e| ModelError::Invalid(e.to_string()))?;
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| normal.sample(self.rng)).collect();
        Tensor::from_vec(data, shape, self.device).ctx(|| "init".into())
    }

    /// Glorot (Xavier) uniform for a dense weight [out, in], Keras' default (the paper used Keras).
    pub fn glorot(&mut self, out: usize, inp: usize) -> Result<Tensor> {
        let limit = (6.0 / (out + inp) as f64).sqrt() as f32;
        let u = Uniform::new_inclusive(-limit, limit)
            .map_err(|e| ModelError::Invalid(e.to_string()))?;
        let data: Vec<f32> = (0..out * inp).map(|_| u.sample(self.rng)).collect();
        Tensor::from_vec(data, (out, inp), self.device).ctx(|| "init".into())
    }

    pub fn constant(&self, value: f32, n: usize) -> Result<Tensor> {
        Tensor::full(value, n, self.device)
            .and_then(|t| t.to_dtype(DType::F32))
            .ctx(|| "init".into())
    }
}

/// Every tensor of a safetensors file, on the CPU; errors name the file.
pub(crate) fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| ModelError::Weights {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
