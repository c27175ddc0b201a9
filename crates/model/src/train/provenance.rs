//! Where a trained model's backbone weights came from ([`Provenance`]), followed through `init` chains via
//! the `run.json` beside each starting model.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::TrainConfig;
use crate::error::Result;

/// Where a trained model's backbone weights came from, followed through every fine-tuning step: ImageNet
/// weights given → pretrained; none → random; a classifier given as `init` → that run's origin (read from the
/// `run.json` beside it), with its path and hash recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// `imagenet`, `random`, or `unknown` (an `init` without a readable `run.json`).
    pub origin: String,
    /// The ImageNet weights file at the root of the chain, when there is one.
    pub weights: Option<String>,
    /// Fine-tuned from these classifiers, nearest first: (path, sha256).
    pub fine_tuned_from: Vec<FineTunedFrom>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FineTunedFrom {
    pub path: String,
    pub sha256: String,
}

impl Provenance {
    pub fn pretrained(&self) -> bool {
        self.origin == "imagenet"
    }

    /// One line for a report: `ImageNet`, `random init`, `random init, fine-tuned from <run>/model.safetensors`
    /// (the starting model's folder and file; the full path is in `fine_tuned_from`).
    pub fn describe(&self) -> String {
        let root = match self.origin.as_str() {
            "imagenet" => "ImageNet",
            "random" => "random init",
            _ => "unknown origin",
        };
        match self.fine_tuned_from.first() {
            Some(f) => {
                let p = Path::new(&f.path);
                let short: Vec<String> = p
                    .iter()
                    .rev()
                    .take(2)
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect();
                let short: Vec<&str> = short.iter().rev().map(String::as_str).collect();
                format!("{root}, fine-tuned from {}", short.join("/"))
            }
            None => root.to_string(),
        }
    }

    /// The provenance of a config's starting weights. ImageNet weights given alongside an `init` are
    /// overwritten by it, so the `init` decides.
    pub fn of(cfg: &TrainConfig) -> Result<Self> {
        let Some(init) = &cfg.init else {
            return Ok(match &cfg.weights {
                Some(w) => Self {
                    origin: "imagenet".into(),
                    weights: Some(w.display().to_string()),
                    fine_tuned_from: Vec::new(),
                },
                None => Self {
                    origin: "random".into(),
                    weights: None,
                    fine_tuned_from: Vec::new(),
                },
            });
        };
        let sha256 = cxr_core::fsutil::sha256_file(init)?;
        let run_json = init.with_file_name("run.json");
        let parent: Option<Self> = std::fs::read(&run_json)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                // Runs written before provenance was recorded say only `pretrained`.
                serde_json::from_value::<Self>(v["provenance"].clone())
                    .ok()
                    .or_else(|| {
                        v["pretrained"].as_bool().map(|p| Self {
                            origin: if p { "imagenet" } else { "random" }.into(),
                            weights: v["weights"].as_str().map(String::from),
                            fine_tuned_from: Vec::new(),
                        })
                    })
            });
        let mut p = parent.unwrap_or_else(|| {
            tracing::warn!(init = %init.display(), "no run.json beside the initial classifier: backbone origin unknown");
            Self {
                origin: "unknown".into(),
                weights: None,
                fine_tuned_from: Vec::new(),
            }
        });
        p.fine_tuned_from.insert(
            0,
            FineTunedFrom {
                path: init.display().to_string(),
                sha256,
            },
        );
        Ok(p)
    }
}
