//! The shortcut audit of one trained model inside the study: Grad-CAM under the immutability guard, source
//! probe, occlusion, split design and verdict, run on a few test images per source and class, and on
//! synthetic worlds the counterfactual confounder test.
//!
//! The steps themselves come from an [`Auditor`]: until `cxr-audit` offers them as library functions, the
//! front end supplies the audit it runs as commands (`cxr explain`, `cxr audit`, `cxr audit-confounders`),
//! so the study and those commands run the same code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cxr_core::{Manifest, ManifestRecord, Split};
use serde::{Deserialize, Serialize};

use crate::Env;
use crate::error::{Cause, Context as _, Result, StudyError};
use crate::experiment::ModelRun;
use crate::stage::{cached, file_key, key_of};

/// The audit's steps as the study calls them.
pub trait Auditor: Sync {
    /// Grad-CAM of the model in `model_dir` on `manifest`'s rows into `out` (`lung_energy.csv`, `gallery/`).
    fn explain(&self, model_dir: &Path, manifest: &Path, out: &Path) -> Result<(), Cause>;
    /// The shortcut audit with occlusion `fills` (comma-separated) and Grad-CAM's `lung_energy.csv`: writes
    /// `out/audit.json` (and `out/probe.json` when the probe ran) and returns the report.
    fn audit(
        &self,
        model_dir: &Path,
        manifest: &Path,
        fills: &str,
        lung_energy: &Path,
        out: &Path,
    ) -> Result<cxr_explain::AuditReport, Cause>;
    /// The counterfactual confounder test with `pairs` pairs per group and direction: writes
    /// `out/confounders.json` and returns its content.
    fn confounders(
        &self,
        model_dir: &Path,
        world: &Path,
        manifest: &Path,
        pairs: usize,
        out: &Path,
    ) -> Result<serde_json::Value, Cause>;
}

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
pub fn run(env: Env<'_>, model: &ModelRun, manifest_path: &Path, dir: &Path) -> Result<AuditOutput> {
    let profile = env.profile;
    let key = key_of(&(
        "audit-v7",
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
        // Occlusion asks what the model uses where it works: the test images of its training sources (all test
        // images when none comes from one), at most `occlusion_per_group` per source and class. Every
        // non-test row stays, so the probe and the split-design check see the whole experiment.
        let seen: std::collections::BTreeSet<String> = manifest
            .records
            .iter()
            .filter(|r| r.split == Some(Split::Train))
            .map(|r| r.source.to_string())
            .collect();
        let any_seen_test = manifest
            .records
            .iter()
            .any(|r| r.split == Some(Split::Test) && seen.contains(r.source.as_str()));
        let mut taken: BTreeMap<(String, String), usize> = BTreeMap::new();
        let audit_rows: Vec<ManifestRecord> = manifest
            .records
            .iter()
            .filter(|r| {
                if r.split != Some(Split::Test) {
                    return true;
                }
                if any_seen_test && !seen.contains(r.source.as_str()) {
                    return false;
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
        let cause = |what: &str| {
            let what = format!("{what} of {}", model.dir.display());
            move |source: Cause| StudyError::Context { what, source }
        };
        env.auditor
            .explain(&model.dir, &sample_path, &gradcam_dir)
            .map_err(cause("Grad-CAM"))?;
        let report = env
            .auditor
            .audit(
                &model.dir,
                &audit_manifest,
                profile.occlusion_fills,
                &gradcam_dir.join("lung_energy.csv"),
                dir,
            )
            .map_err(cause("the audit"))?;
        let probe_path = dir.join("probe.json");
        let probe = match std::fs::read(&probe_path) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes).ctx(|| format!("parsing {}", probe_path.display()))?,
            ),
            // No probe.json: the probe did not run (the audit says why).
            Err(_) => None,
        };
        let mut galleries: Vec<PathBuf> = std::fs::read_dir(gradcam_dir.join("gallery"))
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "png"))
                    .collect()
            })
            .unwrap_or_default();
        galleries.sort();
        Ok(AuditOutput {
            report: StudyAudit { report, probe },
            gradcam_dir,
            galleries,
        })
    })
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
        let json = env
            .auditor
            .confounders(&model.dir, world_root, manifest_path, env.profile.confounder_pairs, dir)
            .map_err(|source| StudyError::Context {
                what: format!("the confounder test of {}", model.dir.display()),
                source,
            })?;
        serde_json::from_value(json).ctx(|| format!("reading {}", dir.join("confounders.json").display()))
    })
}
