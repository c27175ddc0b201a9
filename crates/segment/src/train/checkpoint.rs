//! The checkpoint `W.ckpt.safetensors`, written after every epoch: the UNet's tensors, the Adam moments
//! (`adam.m.*`, `adam.v.*`) and the training state ([`State`], JSON metadata), from which a killed run resumes
//! bit for bit.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use cxr_ops::Adam;
use serde::{Deserialize, Serialize};

use super::EpochLog;
use crate::{SegmentError, UNet, unet};

/// Training state beside the weights in the checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) fingerprint: String,
    pub(super) epochs_done: usize,
    pub(super) adam_t: u64,
    pub(super) best_val_dice: f64,
    pub(super) best_epoch: usize,
    pub(super) bad_epochs: usize,
    pub(super) train_seconds: f64,
    pub(super) history: Vec<EpochLog>,
    pub(super) stopped: Option<String>,
}

pub(super) fn save_checkpoint(
    path: &Path,
    model: &UNet,
    adam: &Adam,
    state: &State,
) -> Result<(), SegmentError> {
    let mut tensors = model.tensors();
    tensors.extend(adam.state());
    let state = serde_json::to_value(state).map_err(|e| SegmentError::data(path, e.to_string()))?;
    let bytes = unet::serialize(&tensors, model.config(), Some(state))?;
    cxr_core::fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

/// The UNet's tensors, the Adam moments (`adam.m.*`, `adam.v.*`) and the training state.
type Loaded = (HashMap<String, Tensor>, BTreeMap<String, Tensor>, State);

pub(super) fn load_checkpoint(
    path: &Path,
    device: &Device,
    fingerprint: &str,
) -> Result<Loaded, SegmentError> {
    let (_, mut tensors, meta) = unet::read_weights(path, device)?;
    let state: State = meta
        .and_then(|s| serde_json::from_value(s).ok())
        .ok_or_else(|| SegmentError::weights(path, "no training state: not a checkpoint"))?;
    if state.fingerprint != fingerprint {
        return Err(SegmentError::weights(
            path,
            "checkpoint of a different configuration (data, width, size, lr, seed, batch, split or \
             augmentation differ): delete it or train without resuming",
        ));
    }
    let names: Vec<String> = tensors
        .keys()
        .filter(|k| k.starts_with("adam."))
        .cloned()
        .collect();
    let moments = names
        .into_iter()
        .filter_map(|k| tensors.remove(&k).map(|t| (k, t)))
        .collect();
    Ok((tensors, moments, state))
}
