//! The per-epoch checkpoint (`checkpoint.safetensors`): mutable parameters, best-epoch snapshot and Adam
//! moments as tensors, the training state as JSON metadata; written atomically, read back by `--resume`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::net::Classifier;
use crate::optim::Adam;
use crate::params::ParamRole;
use crate::train::LogRow;

/// Checkpoint state (JSON in the safetensors metadata). Floats are stored exactly: the best score as its bit
/// pattern and the log as CSV (shortest round-trip formatting), since JSON float parsing may be off by an ulp
/// and a resumed run must compare scores exactly as the uninterrupted one did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct CkptState {
    pub(super) config_hash: String,
    pub(super) epochs_done: usize,
    pub(super) best_epoch: usize,
    #[serde(with = "f64_bits")]
    pub(super) best_val_accuracy: f64,
    /// Validation loss of the best epoch: breaks ties of accuracy (a few dozen validation images reach 100 %
    /// within epochs, long before the head has converged).
    #[serde(with = "f64_bits", default = "infinity")]
    pub(super) best_val_loss: f64,
    pub(super) since_best: usize,
    pub(super) adam_t: u64,
    pub(super) finished: bool,
    #[serde(with = "log_csv")]
    pub(super) log: Vec<LogRow>,
}

fn infinity() -> f64 {
    f64::INFINITY
}

mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.to_bits())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(f64::from_bits(u64::deserialize(d)?))
    }
}

mod log_csv {
    use crate::train::LogRow;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::Error as _};
    pub fn serialize<S: Serializer>(log: &[LogRow], s: S) -> Result<S::Ok, S::Error> {
        let mut w = csv::Writer::from_writer(Vec::new());
        for r in log {
            w.serialize(r).map_err(S::Error::custom)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| S::Error::custom(e.to_string()))?;
        s.serialize_str(&String::from_utf8_lossy(&bytes))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<LogRow>, D::Error> {
        let text = String::deserialize(d)?;
        csv::Reader::from_reader(text.as_bytes())
            .deserialize()
            .collect::<Result<Vec<LogRow>, _>>()
            .map_err(D::Error::custom)
    }
}

pub const CHECKPOINT: &str = "checkpoint.safetensors";

/// Parameters a training run can change (saved in checkpoints and best-weight snapshots).
pub(super) fn mutable(p: &crate::params::Param) -> bool {
    p.trainable || matches!(p.role, ParamRole::BnRunning | ParamRole::FeatureNorm)
}

pub(super) fn save_checkpoint(
    path: &Path,
    model: &Classifier,
    adam: &Adam,
    state: &CkptState,
    best: Option<&BTreeMap<String, Tensor>>,
) -> Result<()> {
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    for (k, v) in model.params().snapshot(mutable)? {
        tensors.insert(format!("param.{k}"), v);
    }
    if let Some(b) = best {
        for (k, v) in b {
            tensors.insert(format!("best.{k}"), v.clone());
        }
    }
    tensors.extend(adam.state());
    let meta = serde_json::to_string(state).map_err(|e| ModelError::Invalid(e.to_string()))?;
    let mut info = HashMap::new();
    info.insert("state".to_string(), meta);
    let bytes = safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(info))
        .map_err(|e| ModelError::Checkpoint {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    cxr_core::fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

type Loaded = (CkptState, Option<BTreeMap<String, Tensor>>);

pub(super) fn load_checkpoint(
    path: &Path,
    model: &Classifier,
    adam: &mut Adam,
    config_hash: &str,
) -> Result<Loaded> {
    let err = |message: String| ModelError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| err(e.to_string()))?;
    let state_json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("state"))
        .ok_or_else(|| err("no `state` metadata".into()))?;
    let state: CkptState = serde_json::from_str(state_json).map_err(|e| err(e.to_string()))?;
    if state.config_hash != config_hash {
        return Err(err(
            "written by a different config; remove it or run without --resume".into(),
        ));
    }
    let all = candle_core::safetensors::load_buffer(&bytes, model.device())
        .map_err(|e| err(e.to_string()))?;
    let mut params = BTreeMap::new();
    let mut best = BTreeMap::new();
    let mut moments = BTreeMap::new();
    for (k, v) in all {
        if let Some(n) = k.strip_prefix("param.") {
            params.insert(n.to_string(), v);
        } else if let Some(n) = k.strip_prefix("best.") {
            best.insert(n.to_string(), v);
        } else {
            moments.insert(k, v);
        }
    }
    model.params().restore(&params, path)?;
    if let Some(missing) = adam.restore(&moments, state.adam_t) {
        return Err(err(format!(
            "optimizer tensor `{missing}` missing or mis-shaped"
        )));
    }
    let best = if best.is_empty() { None } else { Some(best) };
    Ok((state, best))
}
