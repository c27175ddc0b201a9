//! The audit's typed configuration: every option of `cxr audit`, with the command's defaults.
//!
//! These types are what travels between a front end (the `cxr` command, the study, a test) and this crate,
//! and what `audit prepare` stores in `prepare.json`: never command-line arguments.

use std::path::PathBuf;
use std::str::FromStr;

use cxr_core::Split;
use cxr_explain::{BehaviourConfig, Overall, Thresholds};
use serde::{Deserialize, Serialize};

/// How the occluded region is filled (`cxr_explain::Fill`); the noise seed comes from each image's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FillKind {
    /// The image's mean grey.
    Mean,
    /// Noise with the image's mean and spread, seeded per image.
    Noise,
}

impl FillKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FillKind::Mean => "mean",
            FillKind::Noise => "noise",
        }
    }
}

impl std::fmt::Display for FillKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FillKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mean" => Ok(FillKind::Mean),
            "noise" => Ok(FillKind::Noise),
            other => Err(format!("unknown fill `{other}` (mean, noise)")),
        }
    }
}

/// Everything `run_audit` needs besides the scorer and the manifest. `Default` gives `cxr audit`'s defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditConfig {
    /// The manifest column holding the images the model reads (`png8`, `crop`, ...). `None`: `png8`, whole
    /// images (`load_scorer` says which column a model of ours was trained on).
    pub column: Option<String>,
    /// The split the occlusion tests and saliency maps run on; a manifest with no usable row of it is an
    /// error (falling back to every row would put training images into the verdict).
    pub split: Split,
    /// Occlusion fills, one pair of tests (lungs removed, lungs only) each.
    pub fills: Vec<FillKind>,
    /// Folds of the patient-grouped cross-validation of the source probe (at least 2).
    pub folds: usize,
    /// Frozen features (`id, f0 … fN`, from `cxr embed`) for the source probe; `None`: the scorer's own
    /// pooled features when it has them, else no probe.
    pub features: Option<PathBuf>,
    /// `lung_energy.csv` from a Grad-CAM run, for the saliency evidence; `None`: occlusion sensitivity maps.
    pub lung_energy: Option<PathBuf>,
    /// Without `lung_energy`: occlusion sensitivity maps on this many images (round-robin over source and
    /// class; 0: none).
    pub saliency_images: usize,
    /// Occlusion map positions per side: at most `grid² + 1` forward passes per map.
    pub saliency_grid: usize,
    /// Occlusion maps score every other position per side, then the rest only where neighbouring tiles'
    /// changes differ by at least this share of the map's largest change (`cxr_explain::SaliencyPlan`);
    /// 0: every position (the exhaustive reference map).
    pub saliency_tolerance: f64,
    /// Images per scorer call.
    pub batch_size: usize,
    /// The model's name in `audit.json` and the report; `None`: the scorer's (a spec's file stem).
    pub name: Option<String>,
    /// Output folder for `audit.json`, `report.html`, `probe.json`, occlusion images and saliency maps;
    /// `None`: nothing is written (the report is only returned).
    pub out: Option<PathBuf>,
    /// The verdict's thresholds (`cxr_explain::audit` documents each rule).
    pub thresholds: Thresholds,
    /// Run the occlusion tests and saliency maps on the test images of the training split's sources only
    /// (all test images when none comes from one): what the model uses where it works. The behavioural
    /// tests of the score (`cxr_explain::behaviour`) always see every test image. `reproduce` sets it; off by
    /// default.
    pub occlusion_seen_only: bool,
    /// Sample sizes and resampling of the score-follows-source and AUC spread tests.
    pub behaviour: BehaviourConfig,
    /// The scorer records or replays scores computed elsewhere (`audit prepare` / `audit finish`): the time
    /// a map takes here says nothing of the model's, so none is reported. Set by `crate::protocol`.
    #[serde(skip)]
    pub scored_outside: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            column: None,
            split: Split::Test,
            fills: vec![FillKind::Mean, FillKind::Noise],
            folds: 5,
            features: None,
            lung_energy: None,
            saliency_images: 8,
            saliency_grid: 24,
            saliency_tolerance: cxr_explain::SaliencyPlan::DEFAULT_TOLERANCE,
            batch_size: 8,
            name: None,
            out: None,
            thresholds: Thresholds::default(),
            occlusion_seen_only: false,
            behaviour: BehaviourConfig::default(),
            scored_outside: false,
        }
    }
}

impl AuditConfig {
    /// The image column: [`AuditConfig::column`], else `png8`.
    pub fn column(&self) -> &str {
        self.column.as_deref().unwrap_or("png8")
    }

    /// Refuses settings that would run nothing or fail deep inside a stage.
    pub fn validate(&self) -> crate::Result<()> {
        if self.folds < 2 {
            return Err(crate::AuditError::config(
                "--folds",
                format!(
                    "{} folds: the source probe needs at least 2 (train on some, test on the rest)",
                    self.folds
                ),
            ));
        }
        if self.batch_size == 0 {
            return Err(crate::AuditError::config(
                "--batch-size",
                "0: at least 1 image per call",
            ));
        }
        if !(0.0..=1.0).contains(&self.saliency_tolerance) {
            return Err(crate::AuditError::config(
                "--saliency-tolerance",
                format!(
                    "{}: a share of the map's largest change, from 0 (every position) to 1",
                    self.saliency_tolerance
                ),
            ));
        }
        Ok(())
    }
}

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    /// A training run folder (`model.safetensors` + `run.json`) or a `.safetensors` file: our own classifier.
    Run(PathBuf),
    /// A model spec (TOML naming an ONNX file, its input size and normalisation; docs/MODEL_SPEC.md).
    Spec(PathBuf),
}

impl ModelSource {
    /// The file or folder named.
    pub fn path(&self) -> &std::path::Path {
        match self {
            ModelSource::Run(p) | ModelSource::Spec(p) => p,
        }
    }
}

/// How a model is read: ours beyond what its run folder says, a spec's on which engine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelOptions {
    /// Backbone (`resnet50`, `vgg16`, ...); `None`: the run's (else `resnet50`).
    pub backbone: Option<String>,
    /// Input size; `None`: the run's (else 224).
    pub image_size: Option<usize>,
    /// The engine of a model spec (docs/MODEL_SPEC.md, "Engines"); ours always run on candle.
    pub engine: cxr_onnx::Engine,
}

/// The verdict from which a pipeline's check fails (`cxr audit --fail-on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailOn {
    /// Fail on `shortcut` only.
    Shortcut,
    /// Fail on `suspicious` or `shortcut`.
    Suspicious,
}

impl FailOn {
    /// Whether `verdict` is at least as bad as this level. `insufficient_evidence` never fails the check:
    /// nothing was found either way, and the printed verdict says so.
    pub fn fails(self, verdict: Overall) -> bool {
        match (self, verdict) {
            (_, Overall::Shortcut) => true,
            (FailOn::Suspicious, Overall::Suspicious) => true,
            _ => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailOn::Shortcut => "shortcut",
            FailOn::Suspicious => "suspicious",
        }
    }
}

impl FromStr for FailOn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "shortcut" => Ok(FailOn::Shortcut),
            "suspicious" => Ok(FailOn::Suspicious),
            other => Err(format!("unknown verdict `{other}` (shortcut, suspicious)")),
        }
    }
}

impl std::fmt::Display for FailOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_on_orders_the_verdicts() {
        use Overall::*;
        for (level, fails) in [
            (FailOn::Shortcut, [true, false, false, false]),
            (FailOn::Suspicious, [true, true, false, false]),
        ] {
            let got = [Shortcut, Suspicious, NoShortcutFound, InsufficientEvidence]
                .map(|v| level.fails(v));
            assert_eq!(got, fails, "{level}");
        }
        assert_eq!("Suspicious".parse::<FailOn>(), Ok(FailOn::Suspicious));
        assert!("bad".parse::<FailOn>().is_err());
    }

    #[test]
    fn a_config_round_trips_and_missing_fields_take_the_defaults() {
        let cfg = AuditConfig {
            column: Some("crop".into()),
            features: Some("f.csv".into()),
            ..Default::default()
        };
        let back: AuditConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        let partial: AuditConfig = serde_json::from_str(r#"{"fills": ["noise"]}"#).unwrap();
        assert_eq!(partial.fills, vec![FillKind::Noise]);
        assert_eq!(partial.saliency_grid, 24);
    }
}
