//! Experiments of the study: split → train → evaluate → audit, per experiment definition
//! (`data-manifests/experiments/*.toml`, built in; see [`crate::designs`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cxr_core::{Manifest, ManifestRecord, Prediction, Split};
use serde::{Deserialize, Serialize};

use crate::Env;
use crate::audit::{ConfounderReport, StudyAudit};
use crate::data::Prepared;
use crate::designs::Definitions;
use crate::error::{Context as _, Result, StudyError};
use crate::stage::{cached, file_key, key_of};

/// One experiment definition (TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    pub name: String,
    pub title: String,
    /// Split design name (`data-manifests/splits/<split>.toml`).
    pub split: String,
    /// `<backbone>-<mode>` (`resnet50-finetune1`, `vgg16-finetune2`, ...).
    pub models: Vec<String>,
    /// `table3`, `figure4`, `table4` or `seen-unseen`.
    pub kind: String,
    /// `paper` (the six paper datasets, real or synthetic) or `cohen`.
    #[serde(default = "default_data")]
    pub data: String,
    #[serde(default)]
    pub paper_seen_auc: Option<f64>,
    #[serde(default)]
    pub paper_unseen_auc: Option<f64>,
    /// For `table4`: the experiment whose (first) model is fine-tuned.
    #[serde(default)]
    pub base: Option<String>,
    /// The manifest column the models read: `crop` (the lung crops, the paper's pipeline) or `png8` (whole
    /// 8-bit images, no lung crop).
    #[serde(default = "default_image_column")]
    pub image_column: String,
}

fn default_image_column() -> String {
    "crop".into()
}

fn default_data() -> String {
    "paper".into()
}

/// Reads every experiment definition (sorted by file name, `table4` after its base), keeping `only` when
/// given.
pub fn load_specs(defs: &Definitions, only: &[String]) -> Result<Vec<ExperimentSpec>> {
    let mut specs = Vec::new();
    for file in defs.experiment_texts()? {
        let spec: ExperimentSpec =
            toml::from_str(&file.text).ctx(|| format!("parsing {}", file.origin.display()))?;
        if only.is_empty() || only.contains(&spec.name) {
            specs.push(spec);
        }
    }
    for name in only {
        if !specs.iter().any(|s| &s.name == name) {
            return Err(StudyError::Invalid(format!(
                "no experiment named `{name}` in {}",
                defs.experiments_origin()
            )));
        }
    }
    // Experiments that fine-tune another one run after it.
    specs.sort_by_key(|s| s.base.is_some());
    Ok(specs)
}

/// A model name split into backbone and mode.
fn parse_model(name: &str) -> Result<(cxr_model::Arch, cxr_model::Mode)> {
    let (backbone, mode) = name.split_once('-').ok_or_else(|| {
        StudyError::Invalid(format!("model `{name}`: expected <backbone>-<mode>"))
    })?;
    let arch = match backbone {
        "resnet50" => cxr_model::Arch::resnet50(),
        "vgg16" => cxr_model::Arch::vgg16(),
        other => {
            return Err(StudyError::Invalid(format!(
                "model `{name}`: unknown backbone `{other}` (resnet50 or vgg16)"
            )));
        }
    };
    let mode: cxr_model::Mode = mode.parse().ctx(|| format!("model `{name}`"))?;
    Ok((arch, mode))
}

/// What one trained model produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRun {
    pub name: String,
    pub backbone: String,
    pub mode_requested: String,
    pub mode_run: String,
    pub dir: PathBuf,
    pub model_path: PathBuf,
    pub predictions: PathBuf,
    /// The backbone's weights go back to ImageNet (through every fine-tuning step; see `provenance`).
    pub pretrained: bool,
    /// `cxr_model::Provenance`: origin (`imagenet`, `random`, `unknown`) and the chain of models fine-tuned
    /// from.
    #[serde(default)]
    pub provenance: Option<cxr_model::Provenance>,
    pub trainable_parameters: usize,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub best_val_accuracy: f64,
    pub image_size: usize,
}

/// Everything one experiment produced (`results.json` `experiments[]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExperimentResult {
    pub spec: ExperimentSpec,
    pub dir: PathBuf,
    pub manifest: PathBuf,
    pub split_counts: BTreeMap<String, usize>,
    /// The split linter's report of the experiment's split manifest.
    pub lint: cxr_ingest::LintReport,
    pub train_cramers_v: Option<f64>,
    pub models: Vec<ModelRun>,
    /// cxr-eval's report (metrics.json).
    pub eval: cxr_eval::EvalReport,
    pub eval_dir: PathBuf,
    /// cxr-explain's audit report (evidence + verdicts, the probe's details), when the audit ran.
    pub audit: Option<StudyAudit>,
    /// The counterfactual confounder test (`confounders.json`), on synthetic worlds.
    pub confounders: Option<ConfounderReport>,
    pub gradcam_dir: Option<PathBuf>,
    pub galleries: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// Whether an experiment runs on this data (the Cohen designs on the Cohen collection, the others elsewhere).
pub fn fits(spec: &ExperimentSpec, data: &Prepared) -> bool {
    (spec.data == "cohen") == data.tag.contains("cohen")
}

/// Runs experiments; holds what all of them share.
pub struct Study<'a> {
    env: Env<'a>,
    /// Experiments this run will train in all (main data and control), for `experiment k of N`.
    pub planned: usize,
    started: usize,
}

impl<'a> Study<'a> {
    pub fn new(env: Env<'a>) -> Self {
        Self {
            env,
            planned: 0,
            started: 0,
        }
    }

    /// Runs every experiment that fits the data, in order.
    pub fn run_all(
        &mut self,
        data: &Prepared,
        specs: &[ExperimentSpec],
        out: &Path,
    ) -> Result<Vec<ExperimentResult>> {
        let mut results: Vec<ExperimentResult> = Vec::new();
        for spec in specs {
            if !fits(spec, data) {
                continue;
            }
            self.started += 1;
            tracing::info!(
                "experiment {} of {}: {}",
                self.started,
                self.planned.max(self.started),
                spec.name
            );
            let base = match &spec.base {
                Some(b) => Some(
                    results
                        .iter()
                        .find(|r| &r.spec.name == b)
                        .ok_or_else(|| {
                            StudyError::Invalid(format!(
                                "experiment `{}` fine-tunes `{b}`, which did not run",
                                spec.name
                            ))
                        })?
                        .clone(),
                ),
                None => None,
            };
            let r = self
                .run_one(data, spec, base.as_ref(), &out.join(&spec.name))
                .ctx(|| format!("experiment `{}`", spec.name))?;
            results.push(r);
        }
        Ok(results)
    }

    /// Runs one experiment on `data` into `dir`: split, train each model, evaluate, audit the first model
    /// (and, on a synthetic world, its counterfactual confounder test). `base` is the experiment a `table4`
    /// design fine-tunes.
    pub fn run_one(
        &mut self,
        data: &Prepared,
        spec: &ExperimentSpec,
        base: Option<&ExperimentResult>,
        dir: &Path,
    ) -> Result<ExperimentResult> {
        let env = self.env;
        let (config, profile) = (env.config, env.profile);
        tracing::info!(experiment = spec.name, "{}", spec.title);
        std::fs::create_dir_all(dir).map_err(|e| StudyError::io(dir, e))?;
        let mut notes = Vec::new();

        // 1. Split, by patient, on the images the segment stage kept.
        let design = config.definitions().split_design(&spec.split)?;
        let segmented = Manifest::read(&data.manifest)
            .ctx(|| format!("reading {}", data.manifest.display()))?;
        let kept = kept_rows(&segmented);
        // The designs give the paper's image counts, made for thousands of images. Cap each step at half of
        // the images its sources hold (of its label, when it names one), so that every source keeps images for
        // the later steps (training): the paper's CheXpert test set alone is 252 images. A single global scale
        // would shrink every other step as much as the largest one (Table 3's test set fell to 5 Covid images).
        let mut design = design;
        let mut capped = Vec::new();
        for a in &mut design.assignments {
            let Some(count) = a.count else { continue };
            let available = kept
                .records
                .iter()
                .filter(|r| a.sources.iter().any(|s| s.as_str() == r.source.as_str()))
                .filter(|r| a.label.is_none_or(|l| r.label == l))
                .count();
            let cap = available / 2;
            if count > cap {
                capped.push(format!(
                    "{} {}: {count} → {cap}",
                    a.split,
                    a.sources.join("+")
                ));
                a.count = Some(cap);
            }
        }
        if !capped.is_empty() {
            notes.push(format!(
                "Split `{}`: counts capped at half of their sources' images (step: paper → here): {}.",
                design.name,
                capped.join("; ")
            ));
        }
        let scale = 1.0;
        let (mut split_manifest, split_report) = cxr_ingest::apply_split(&kept, &design, scale)
            .ctx(|| format!("applying split design `{}`", spec.split))?;
        if !split_report.shortfalls.is_empty() {
            notes.push(format!(
                "Split `{}`: some steps found fewer images than asked (step, wanted, got): {:?}.",
                design.name, split_report.shortfalls
            ));
        }
        if spec.kind == "table4" {
            // Fine-tune on the `finetune` rows; the base model's training rows are not used again.
            split_manifest
                .records
                .retain(|r| r.split != Some(Split::Train));
            for r in &mut split_manifest.records {
                if r.split == Some(Split::Finetune) {
                    r.split = Some(Split::Train);
                }
            }
            // Early stopping must watch the new sources: a fifth of the fine-tuning patients validate, not the
            // base model's validation images (on which the base model is already best).
            split_manifest
                .records
                .retain(|r| r.split != Some(Split::Val));
            let mut patients: Vec<String> = split_manifest
                .records
                .iter()
                .filter(|r| r.split == Some(Split::Train))
                .map(|r| format!("{}/{}", r.source, r.patient))
                .collect();
            patients.sort();
            patients.dedup();
            let val: std::collections::BTreeSet<String> =
                patients.iter().step_by(5).cloned().collect();
            for r in &mut split_manifest.records {
                if r.split == Some(Split::Train)
                    && val.contains(&format!("{}/{}", r.source, r.patient))
                {
                    r.split = Some(Split::Val);
                }
            }
            notes.push(
                "Local fine-tuning: the `finetune` images train (four fifths of their patients) and validate (one \
                 fifth); the model starts from the base experiment's weights."
                    .into(),
            );
        }
        let manifest_path = dir.join("manifest.csv");
        split_manifest
            .write(&manifest_path)
            .ctx(|| format!("writing {}", manifest_path.display()))?;
        let mut split_counts = BTreeMap::new();
        for r in &split_manifest.records {
            *split_counts
                .entry(r.split.map(|s| s.to_string()).unwrap_or_default())
                .or_insert(0) += 1;
        }
        let lint = cxr_ingest::lint(&split_manifest);
        let train_cramers_v = lint.train_cramers_v;

        // 2. Train each model (the quick profile collapses modes that train identically).
        let mut models: Vec<ModelRun> = Vec::new();
        for name in &spec.models {
            let (arch, mode_requested) = parse_model(name)?;
            let mode_run: cxr_model::Mode = match profile.mode_override {
                Some(m) => m.parse().ctx(|| format!("profile `{}`", profile.name))?,
                None => mode_requested,
            };
            let mut cfg = cxr_model::TrainConfig::new(&manifest_path);
            if !matches!(spec.image_column.as_str(), "crop" | "png8") {
                return Err(StudyError::Invalid(format!(
                    "experiment `{}`: image_column `{}` (expected crop or png8)",
                    spec.name, spec.image_column
                )));
            }
            cfg.image_column = spec.image_column.clone();
            cfg.per_image_norm = config.per_image_norm;
            cfg.device = config.device.clone();
            cfg.image_size = profile.image_size;
            cfg.batch_size = profile.batch_size;
            cfg.max_epochs = profile.max_epochs;
            cfg.patience = profile.patience;
            cfg.learning_rate = profile.learning_rate;
            cfg.seed = config.seed;
            cfg.backbone = arch.clone();
            cfg.mode = mode_run;
            cfg.weights = match arch.to_string().as_str() {
                "resnet50" => config.weights_resnet50.clone(),
                "vgg16" => config.weights_vgg16.clone(),
                _ => None,
            };
            cfg.name = if mode_run == mode_requested {
                name.clone()
            } else {
                format!("{name} [{mode_run}]")
            };
            if spec.kind == "table4" {
                cfg.max_epochs = cfg.max_epochs.min(50);
            }
            let init = base
                .and_then(|b| b.models.first())
                .map(|m| m.model_path.clone());
            cfg.init = init.clone();
            if let Some(same) = models
                .iter()
                .find(|m| m.backbone == arch.to_string() && m.mode_run == mode_run.to_string())
            {
                // Identical training (only the requested mode differs): reuse it under this name.
                let preds = relabel(
                    &same.predictions,
                    &cfg.name,
                    &dir.join(format!("{}.predictions.csv", slug(&cfg.name))),
                )?;
                models.push(ModelRun {
                    name: cfg.name.clone(),
                    mode_requested: mode_requested.to_string(),
                    predictions: preds,
                    ..same.clone()
                });
                continue;
            }
            let run_dir = dir.join(slug(name));
            let key = key_of(&(
                "train-v3",
                &cfg,
                file_key(&manifest_path)?,
                init.as_ref().map(|p| file_key(p).ok()),
            ));
            let run: ModelRun = cached("train", &run_dir, &key, || {
                let opts = cxr_model::TrainOptions {
                    resume: config.resume,
                    ..Default::default()
                };
                let report = cxr_model::train(&cfg, &run_dir, &opts)
                    .ctx(|| format!("training {}", cfg.name))?;
                Ok(ModelRun {
                    name: cfg.name.clone(),
                    backbone: arch.to_string(),
                    mode_requested: mode_requested.to_string(),
                    mode_run: mode_run.to_string(),
                    dir: run_dir.clone(),
                    model_path: run_dir.join("model.safetensors"),
                    predictions: run_dir.join("predictions.csv"),
                    pretrained: report.pretrained,
                    provenance: Some(report.provenance.clone()),
                    trainable_parameters: report.trainable_parameters,
                    epochs_run: report.epochs_run,
                    best_epoch: report.best_epoch,
                    best_val_accuracy: report.best_val_accuracy,
                    image_size: cfg.image_size,
                })
            })?;
            models.push(run);
        }

        // 3. Evaluate every model together (paired tests between them come free).
        let eval_dir = dir.join("eval");
        let eval = evaluate(
            &models
                .iter()
                .map(|m| m.predictions.clone())
                .collect::<Vec<_>>(),
            &split_manifest,
            config,
            &eval_dir,
        )?;

        // 4. Audit the first model: source probe, occlusion, Grad-CAM, verdict.
        let (audit, gradcam_dir, galleries) = match models.first() {
            Some(m) if spec.kind != "table4" => {
                let a = crate::audit::run(env, m, &manifest_path, &dir.join("audit"))
                    .ctx(|| format!("auditing {}", m.name))?;
                (Some(a.report), Some(a.gradcam_dir), a.galleries)
            }
            _ => (None, None, Vec::new()),
        };
        // 5. On a synthetic world: which planted confounders does that model follow (counterfactual swaps)?
        let confounders = match (models.first(), &data.world_root) {
            (Some(m), Some(world)) if spec.kind != "table4" && profile.confounder_pairs > 0 => {
                Some(
                    crate::audit::confounders(
                        env,
                        m,
                        &manifest_path,
                        world,
                        &dir.join("confounders"),
                    )
                    .ctx(|| format!("counterfactual confounder test of {}", m.name))?,
                )
            }
            _ => None,
        };
        // 6. The counterfactual test is behavioural evidence too: the verdict takes it.
        let mut audit = audit;
        if let (Some(a), Some(c)) = (audit.as_mut(), &confounders) {
            crate::audit::fold_planted(a, c);
        }

        Ok(ExperimentResult {
            spec: spec.clone(),
            dir: dir.to_path_buf(),
            manifest: manifest_path,
            split_counts,
            lint,
            train_cramers_v,
            models,
            eval,
            eval_dir,
            audit,
            gradcam_dir,
            galleries,
            confounders,
            notes,
        })
    }
}

/// Runs cxr-eval on prediction files and writes its outputs (`metrics.json`, ...) into `out`.
pub fn evaluate(
    predictions: &[PathBuf],
    train_manifest: &Manifest,
    config: &crate::StudyConfig,
    out: &Path,
) -> Result<cxr_eval::EvalReport> {
    let preds = cxr_eval::load_predictions(predictions).ctx(|| "reading predictions".into())?;
    let opts = cxr_eval::EvalOptions {
        resamples: config.resamples,
        seed: config.seed,
        ..Default::default()
    }
    .with_train_manifest(train_manifest);
    let report = cxr_eval::evaluate(&preds, &opts).ctx(|| "evaluating predictions".into())?;
    for a in &report.alarms {
        tracing::warn!("{}", a.message);
    }
    cxr_eval::write_outputs(&report, out)
        .ctx(|| format!("writing metrics to {}", out.display()))?;
    Ok(report)
}

/// Kept rows (no reject reason, a crop); path cells still relative to `m`'s folder, which `write`
/// re-expresses for wherever the split manifest goes.
fn kept_rows(m: &Manifest) -> Manifest {
    let records: Vec<ManifestRecord> = m
        .records
        .iter()
        .filter(|r| {
            r.get("reject_reason").unwrap_or_default().is_empty()
                && !r.get("crop").unwrap_or_default().is_empty()
        })
        .cloned()
        .collect();
    Manifest {
        records,
        ..m.clone()
    }
}

/// Copies predictions under another model name.
fn relabel(from: &Path, model: &str, to: &Path) -> Result<PathBuf> {
    let preds: Vec<Prediction> = cxr_core::read_predictions(from)
        .ctx(|| format!("reading {}", from.display()))?
        .into_iter()
        .map(|p| Prediction {
            model: model.to_string(),
            ..p
        })
        .collect();
    cxr_core::write_predictions(to, &preds).ctx(|| format!("writing {}", to.display()))?;
    Ok(to.to_path_buf())
}

/// A model name as a folder name: lower-case ASCII letters, digits and `-`, anything else `_`.
pub fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}
