//! The shortcut audit of one trained model inside the study, through `cxr-audit` (the same functions as
//! `cxr explain`, `cxr audit` and `cxr audit-confounders`): Grad-CAM under the immutability guard, source
//! probe, occlusion, split design and verdict, run on a few test images per source and class, and on
//! synthetic worlds the counterfactual confounder test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cxr_audit::{
    AuditConfig, ConfounderConfig, FillKind, GradCamConfig, ModelOptions, ModelSource,
};
use cxr_core::{Manifest, ManifestRecord, Split};
use serde::{Deserialize, Serialize};

use crate::Env;
use crate::error::{Context as _, Result, StudyError};
use crate::experiment::ModelRun;
use crate::stage::{cached, file_key, key_of};

/// Images per scorer call: the audit commands' default.
const BATCH_SIZE: usize = 8;

/// The audit of one experiment's model (`results.json` `experiments[].audit`): `audit.json` with the probe's
/// details (`probe.json`) under `probe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyAudit {
    #[serde(flatten)]
    pub report: cxr_explain::AuditReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeDetails>,
}

/// `probe.json`: the source probe's AUC per source and per pair of sources, and its folds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeDetails {
    pub per_source: Vec<cxr_explain::probe::SourceAuc>,
    pub pairs: Vec<cxr_explain::probe::PairAuc>,
    pub folds: usize,
}

/// The counterfactual confounder test's `confounders.json`: the fields the study reads, typed; the rest
/// (the test's settings, input path, training sources) kept as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfounderReport {
    pub model: String,
    /// `follows planted confounders` or `no planted confounder followed`.
    pub verdict: String,
    /// The flag rule in words.
    pub flag_rule: String,
    /// One row per confounder group.
    pub confounders: Vec<ConfounderRow>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// The test's result for one planted confounder group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfounderRow {
    /// The group (`framing`, `grid`, ...: `cxr_synth::ConfounderKind`).
    pub kind: String,
    /// Some pair of training sources differs in this group and in its Covid share.
    pub label_associated: bool,
    /// Scored pairs.
    pub n: usize,
    /// Mean score shift towards the donor's class, with its bootstrap 95% CI.
    pub mean_shift: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// `followed`, `not_followed`, `not_in_model_input`, ...
    pub status: String,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// What the audit step produced (cached in its `stage.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditOutput {
    pub report: StudyAudit,
    pub gradcam_dir: PathBuf,
    pub galleries: Vec<PathBuf>,
}

/// Audits `model` on the experiment's split manifest into `dir` (cached by the model, the manifest and the
/// profile's audit settings).
pub fn run(
    env: Env<'_>,
    model: &ModelRun,
    manifest_path: &Path,
    dir: &Path,
) -> Result<AuditOutput> {
    let profile = env.profile;
    let key = key_of(&(
        "audit-v8",
        file_key(&model.model_path)?,
        file_key(manifest_path)?,
        profile.gradcam_per_group,
        profile.occlusion_per_group,
        profile.occlusion_fills,
    ));
    cached("audit", dir, &key, || {
        // Grad-CAM on the first few test images of every source and class.
        let manifest =
            Manifest::read(manifest_path).ctx(|| format!("reading {}", manifest_path.display()))?;
        let mut per_group: BTreeMap<(String, String), usize> = BTreeMap::new();
        let chosen: Vec<ManifestRecord> = manifest
            .records
            .iter()
            .filter(|r| r.split == Some(Split::Test))
            .filter(|r| {
                let n = per_group
                    .entry((r.source.to_string(), r.label.to_string()))
                    .or_default();
                *n += 1;
                *n <= profile.gradcam_per_group
            })
            .cloned()
            .collect();
        // At most `occlusion_per_group` test images per source and class, seen and unseen sources alike: the
        // score-follows-source test compares them. Occlusion asks what the model uses where it works
        // (`occlusion_seen_only`: the test images of its training sources, all test images when none comes
        // from one). Every non-test row stays, so the probe and the split-design check see the whole
        // experiment.
        let mut taken: BTreeMap<(String, String), usize> = BTreeMap::new();
        let audit_rows: Vec<ManifestRecord> = manifest
            .records
            .iter()
            .filter(|r| {
                if r.split != Some(Split::Test) {
                    return true;
                }
                let n = taken
                    .entry((r.source.to_string(), r.label.to_string()))
                    .or_default();
                *n += 1;
                *n <= profile.occlusion_per_group
            })
            .cloned()
            .collect();
        let audit_manifest = dir.join("audit-manifest.csv");
        Manifest {
            records: audit_rows,
            ..manifest.clone()
        }
        .write(&audit_manifest)
        .ctx(|| format!("writing {}", audit_manifest.display()))?;
        let sample_path = dir.join("gradcam-sample.csv");
        Manifest {
            records: chosen,
            ..manifest.clone()
        }
        .write(&sample_path)
        .ctx(|| format!("writing {}", sample_path.display()))?;
        let gradcam_dir = dir.join("gradcam");
        let on_progress = |p: cxr_audit::Progress<'_>| {
            env.progress.update(p.step, p.done as u64, p.total as u64);
            if p.done >= p.total {
                env.progress.finish(p.step);
            }
        };
        let ours = cxr_audit::load_classifier(&model.dir, &ModelOptions::default())
            .ctx(|| format!("loading {}", model.dir.display()))?;
        let cam = GradCamConfig {
            batch_size: BATCH_SIZE,
            out: gradcam_dir.clone(),
            ..Default::default()
        };
        cxr_audit::run_grad_cam(&ours, &sample_path, &cam, &on_progress)
            .ctx(|| format!("Grad-CAM of {}", model.dir.display()))?;
        let loaded = cxr_audit::load_scorer(
            &ModelSource::Run(model.dir.clone()),
            &ModelOptions::default(),
        )
        .ctx(|| format!("loading {}", model.dir.display()))?;
        let fills = profile
            .occlusion_fills
            .split(',')
            .map(|f| f.parse::<FillKind>().map_err(StudyError::Invalid))
            .collect::<Result<Vec<_>>>()?;
        let cfg = AuditConfig {
            column: Some(loaded.column.clone()),
            fills,
            lung_energy: Some(gradcam_dir.join("lung_energy.csv")),
            batch_size: BATCH_SIZE,
            out: Some(dir.to_path_buf()),
            occlusion_seen_only: true,
            ..AuditConfig::default()
        };
        let outcome =
            cxr_audit::run_audit_with(loaded.scorer.as_ref(), &audit_manifest, &cfg, &on_progress)
                .ctx(|| format!("the audit of {}", model.dir.display()))?;
        let probe = outcome.probe.map(|p| ProbeDetails {
            per_source: p.per_source,
            pairs: p.pairs,
            folds: p.folds,
        });
        let report = outcome.report;
        let galleries = cxr_audit::galleries_in(&gradcam_dir.join("gallery"));
        Ok(AuditOutput {
            report: StudyAudit { report, probe },
            gradcam_dir,
            galleries,
        })
    })
}

/// Folds the counterfactual confounder test into the audit as behavioural evidence and recomputes the
/// verdicts: on a synthetic world it is the one test that sees a source cue where every test image's label
/// follows its source and the cues lie in the lungs (Table 3).
pub fn fold_planted(audit: &mut StudyAudit, confounders: &ConfounderReport) {
    let names = |followed_only: bool| -> Vec<String> {
        confounders
            .confounders
            .iter()
            .filter(|k| k.label_associated && (!followed_only || k.status == "followed"))
            .map(|k| k.kind.clone())
            .collect()
    };
    let planted = cxr_explain::PlantedConfounders {
        tested: names(false),
        followed: names(true),
    };
    audit.report = audit.report.clone().with_planted_confounders(&planted);
}

/// The counterfactual confounder test (`cxr audit-confounders`) of one model on a synthetic world: does its
/// output follow each planted confounder group? Cached by the model, the split and the world.
pub fn confounders(
    env: Env<'_>,
    model: &ModelRun,
    manifest_path: &Path,
    world_root: &Path,
    dir: &Path,
) -> Result<ConfounderReport> {
    let world_json = world_root.join("world.json");
    let key = key_of(&(
        "confounders-v1",
        file_key(&model.model_path)?,
        file_key(manifest_path)?,
        file_key(&world_json)?,
        env.profile.confounder_pairs,
    ));
    cached("confounders", dir, &key, || {
        let source = ModelSource::Run(model.dir.clone());
        let loaded = cxr_audit::load_scorer(&source, &ModelOptions::default())
            .ctx(|| format!("loading {}", model.dir.display()))?;
        let cfg = ConfounderConfig {
            column: Some(loaded.column.clone()),
            pairs: env.profile.confounder_pairs,
            batch_size: BATCH_SIZE,
            out: Some(dir.to_path_buf()),
            model: Some(source),
            ..ConfounderConfig::new(world_root)
        };
        let done = cxr_audit::run_confounder_test(loaded.scorer.as_ref(), manifest_path, &cfg)
            .ctx(|| format!("the confounder test of {}", model.dir.display()))?;
        serde_json::from_value(done.json)
            .ctx(|| format!("reading {}", dir.join("confounders.json").display()))
    })
}
