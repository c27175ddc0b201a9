//! Models as the audit sees them: our own classifier from a run folder (with the image size and column
//! its `run.json` records), or a foreign one from a model spec, behind `cxr_core::Scorer`.

use std::path::{Path, PathBuf};

use cxr_core::Scorer;
use cxr_model::{Arch, Classifier};

use crate::config::{ModelOptions, ModelSource};
use crate::error::{AuditError, Result, StepExt};

/// Our own classifier, loaded with what its run recorded.
pub struct OurModel {
    pub model: Classifier,
    /// The run's model name (`run.json`'s `model`), else the backbone's.
    pub name: String,
    /// The input size it was trained at.
    pub size: usize,
    /// The manifest column it was trained on (`run.json`'s `config.image_column`, else `crop`).
    pub column: String,
    /// Content hash of what decides its outputs: the weights file's SHA-256, the backbone and the input size.
    pub sha256: String,
}

/// A scorer and the manifest column its model reads by default.
pub struct LoadedScorer {
    pub scorer: Box<dyn Scorer>,
    /// `png8` for a spec (a foreign model sees whole images unless told otherwise), the run's column for
    /// ours.
    pub column: String,
}

/// What a run folder records about its model: only the fields the audit needs.
#[derive(Debug, Default, serde::Deserialize)]
struct RunJson {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    backbone: Option<String>,
    #[serde(default)]
    config: RunConfig,
}

#[derive(Debug, Default, serde::Deserialize)]
struct RunConfig {
    #[serde(default)]
    image_size: Option<usize>,
    #[serde(default)]
    image_column: Option<String>,
}

/// The weights file and `run.json` (default when absent) of a run folder or a weights file.
fn run_of(model: &Path) -> Result<(PathBuf, RunJson)> {
    if !model.is_dir() {
        return Ok((model.to_path_buf(), RunJson::default()));
    }
    let run_path = model.join("run.json");
    let run = match std::fs::read(&run_path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| AuditError::input(&run_path, format!("malformed run.json: {e}")))?,
        Err(_) => RunJson::default(),
    };
    Ok((model.join("model.safetensors"), run))
}

/// The column a run's model was trained on: `run.json`'s, else `crop`.
pub fn run_column(model: &Path) -> Result<String> {
    Ok(run_of(model)?
        .1
        .config
        .image_column
        .unwrap_or_else(|| "crop".into()))
}

/// Loads our classifier from a run folder or a weights file (Grad-CAM needs it: gradients).
pub fn load_classifier(model: &Path, opts: &ModelOptions) -> Result<OurModel> {
    let (weights, run) = run_of(model)?;
    let backbone = opts
        .backbone
        .clone()
        .or(run.backbone)
        .unwrap_or_else(|| "resnet50".into());
    let arch: Arch = backbone
        .parse()
        .map_err(|e| AuditError::config(format!("backbone {backbone}"), format!("{e}")))?;
    let size = opts.image_size.or(run.config.image_size).unwrap_or(224);
    let column = run.config.image_column.unwrap_or_else(|| "crop".into());
    let name = run.model.unwrap_or_else(|| format!("{arch}"));
    let model = cxr_model::load_classifier(&arch, &weights)
        .step(format!("loading model {}", weights.display()))?;
    let weights_sha256 = cxr_core::fsutil::sha256_file(&weights)
        .step(format!("hashing model {}", weights.display()))?;
    let sha256 =
        cxr_core::fsutil::sha256_bytes(format!("{weights_sha256} {arch} {size}").as_bytes());
    Ok(OurModel {
        model,
        name,
        size,
        column,
        sha256,
    })
}

/// The scorer of any model: ours (`Run`) or a foreign one (`Spec`).
pub fn load_scorer(source: &ModelSource, opts: &ModelOptions) -> Result<LoadedScorer> {
    match source {
        ModelSource::Spec(spec) => Ok(LoadedScorer {
            scorer: Box::new(cxr_onnx::OnnxScorer::load(
                cxr_onnx::ModelSpec::load(spec)?,
                &cxr_onnx::LoadOptions::engine(opts.engine),
            )?),
            column: "png8".into(),
        }),
        ModelSource::Run(run) => {
            let ours = load_classifier(run, opts)?;
            Ok(LoadedScorer {
                scorer: Box::new(
                    cxr_model::ClassifierScorer::new(ours.model, ours.name, ours.size)
                        .with_sha256(ours.sha256),
                ),
                column: ours.column,
            })
        }
    }
}

/// A scorer under another name: `audit.json` and the report name the model as the user does (`--name`).
pub(crate) struct Named<'a> {
    pub inner: &'a dyn Scorer,
    pub name: &'a str,
}

/// The `Scorer` methods of a wrapper (a struct with an `inner: &dyn Scorer`) that only pass through to the
/// wrapped scorer: `name` too unless the wrapper gives its own (`delegate_scorer!(except name)`).
macro_rules! delegate_scorer {
    () => {
        fn name(&self) -> &str {
            self.inner.name()
        }
        $crate::load::delegate_scorer!(except name);
    };
    (except name) => {
        fn input_size(&self) -> usize {
            self.inner.input_size()
        }
        fn has_features(&self) -> bool {
            self.inner.has_features()
        }
        fn model_sha256(&self) -> Option<&str> {
            self.inner.model_sha256()
        }
        fn engine(&self) -> Option<&str> {
            self.inner.engine()
        }
    };
}
pub(crate) use delegate_scorer;

impl Scorer for Named<'_> {
    fn name(&self) -> &str {
        self.name
    }
    delegate_scorer!(except name);
    fn score(
        &self,
        images: &[cxr_core::Grey8],
        features: bool,
    ) -> std::result::Result<cxr_core::Scored, cxr_core::ScoreError> {
        self.inner.score(images, features)
    }
    fn logits(
        &self,
        images: &[cxr_core::Grey8],
    ) -> std::result::Result<Vec<f64>, cxr_core::ScoreError> {
        self.inner.logits(images)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our runs have a content hash (so a killed audit or score of one resumes): the same weights give the
    /// same hash, other weights or another input size another one.
    #[test]
    fn our_runs_are_hashed_by_weights_backbone_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let arch: Arch = "resnet:1,1,1,1:8".parse().unwrap();
        let save = |name: &str| {
            let run = dir.path().join(name);
            std::fs::create_dir_all(&run).unwrap();
            let model = cxr_model::Classifier::new(
                &arch,
                cxr_model::Mode::Frozen,
                3,
                &candle_core::Device::Cpu,
            )
            .unwrap();
            model.save(&run.join("model.safetensors")).unwrap();
            run
        };
        let a = save("a");
        std::fs::copy(
            a.join("model.safetensors"),
            dir.path().join("a-copy.safetensors"),
        )
        .unwrap();
        // Other weights: the same file with its last tensor byte changed (still a valid file).
        let mut other = std::fs::read(a.join("model.safetensors")).unwrap();
        *other.last_mut().unwrap() ^= 1;
        std::fs::write(dir.path().join("b.safetensors"), &other).unwrap();
        let opts = |size| ModelOptions {
            backbone: Some(arch.to_string()),
            image_size: Some(size),
            ..Default::default()
        };
        let hash = |p: &Path, size| {
            let loaded = load_scorer(&ModelSource::Run(p.to_path_buf()), &opts(size)).unwrap();
            loaded.scorer.model_sha256().unwrap().to_string()
        };
        let ha = hash(&a, 32);
        assert_eq!(ha.len(), 64);
        assert_eq!(ha, hash(&dir.path().join("a-copy.safetensors"), 32));
        assert_ne!(ha, hash(&a, 40), "another input size is another model");
        assert_ne!(
            ha,
            hash(&dir.path().join("b.safetensors"), 32),
            "other weights are another model"
        );
    }
}
