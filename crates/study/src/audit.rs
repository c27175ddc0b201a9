//! The shortcut audit of one trained model inside `reproduce`: the same code as `cxr explain` and
//! `cxr audit` (Grad-CAM under the immutability guard, source probe, occlusion with mean and noise
//! fills, split design, verdict), run on a few test images per source and class.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use cxr_core::{Manifest, ManifestRecord, Split};

use super::Profile;
use super::experiment::ModelRun;
use super::stage::{cached, file_key, key_of};

#[derive(Parser)]
struct ExplainCli {
    #[command(flatten)]
    args: crate::explain::ExplainArgs,
}

#[derive(Parser)]
struct AuditCli {
    #[command(flatten)]
    args: crate::explain::AuditArgs,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AuditOutput {
    /// `audit.json` (evidence and verdicts) plus `probe.json` under `probe`.
    pub report: serde_json::Value,
    pub gradcam_dir: PathBuf,
    pub galleries: Vec<PathBuf>,
}

pub fn run(
    profile: &Profile,
    model: &ModelRun,
    manifest_path: &Path,
    dir: &Path,
) -> Result<AuditOutput> {
    let key = key_of(&(
        "audit-v7",
        file_key(&model.model_path)?,
        file_key(manifest_path)?,
        profile.gradcam_per_group,
        profile.occlusion_per_group,
        profile.occlusion_fills,
    ));
    cached("audit", dir, &key, || {
        let run_dir = model.dir.to_string_lossy().into_owned();
        // Grad-CAM on the first few test images of every source and class.
        let manifest = Manifest::read(manifest_path)?;
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
        .write(&audit_manifest)?;
        let sample_path = dir.join("gradcam-sample.csv");
        Manifest {
            records: chosen,
            ..manifest.clone()
        }
        .write(&sample_path)?;
        let gradcam_dir = dir.join("gradcam");
        let explain = ExplainCli::try_parse_from([
            "explain",
            "--model",
            &run_dir,
            "--manifest",
            &sample_path.to_string_lossy(),
            "--out",
            &gradcam_dir.to_string_lossy(),
        ])?;
        crate::explain::explain(explain.args)?;
        let audit = AuditCli::try_parse_from([
            "audit",
            "--model",
            &run_dir,
            "--manifest",
            &audit_manifest.to_string_lossy(),
            "--fills",
            profile.occlusion_fills,
            "--lung-energy",
            &gradcam_dir.join("lung_energy.csv").to_string_lossy(),
            "--out",
            &dir.to_string_lossy(),
        ])?;
        crate::explain::audit(audit.args)?;

        let read_json = |p: PathBuf| -> Result<serde_json::Value> {
            serde_json::from_slice(
                &std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
            )
            .with_context(|| format!("parsing {}", p.display()))
        };
        let mut report = read_json(dir.join("audit.json"))?;
        if let Ok(probe) = read_json(dir.join("probe.json")) {
            report["probe"] = probe;
        }
        let mut galleries: Vec<PathBuf> = std::fs::read_dir(gradcam_dir.join("gallery"))
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "png"))
                    .collect()
            })
            .unwrap_or_default();
        galleries.sort();
        Ok(AuditOutput {
            report,
            gradcam_dir,
            galleries,
        })
    })
}

/// The counterfactual confounder test (`cxr audit-confounders`) of one model on a synthetic world: does
/// its output follow each planted confounder group? Cached by the model, the split and the world.
pub fn confounders(
    profile: &Profile,
    model: &ModelRun,
    manifest_path: &Path,
    world_root: &Path,
    dir: &Path,
) -> Result<serde_json::Value> {
    let world_json = world_root.join("world.json");
    let key = key_of(&(
        "confounders-v1",
        file_key(&model.model_path)?,
        file_key(manifest_path)?,
        file_key(&world_json)?,
        profile.confounder_pairs,
    ));
    cached("confounders", dir, &key, || {
        let pairs = profile.confounder_pairs.to_string();
        let args = crate::confounders::AuditConfoundersArgs::try_parse_from([
            "audit-confounders",
            "--model",
            &model.dir.to_string_lossy(),
            "--world",
            &world_root.to_string_lossy(),
            "--manifest",
            &manifest_path.to_string_lossy(),
            "--pairs",
            &pairs,
            "--out",
            &dir.to_string_lossy(),
        ])?;
        crate::confounders::audit_confounders(args)
    })
}
