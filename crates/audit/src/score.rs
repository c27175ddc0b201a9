//! Any scorer over a manifest (`cxr score`): `predictions.csv` in the format `cxr evaluate` reads, and
//! `predictions.rejects.csv` (`id, file, reason`) for the images that could not be read. With a shard, only the
//! rows it owns, into `*.part-K-of-N.csv` (the caller writes the parts' sidecars: `ScoreOutcome::config_hash`,
//! which holds the model's content hash). Unsharded, `predictions.model.json` beside it names the model and its
//! content hash.

use std::path::{Path, PathBuf};

use cxr_core::fsutil::AtomicFile;
use cxr_core::{
    Grey8, Manifest, ManifestRecord, Prediction, PredictionWriter, Scorer, Shard, Split,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::ModelSource;
use crate::error::{AuditError, Result, StepExt};
use crate::progress::{Bar, Progress};
use crate::resume::{Journal, RunKey};

/// Options of [`score_manifest`]; `Default` gives `cxr score`'s (set `out`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScoreConfig {
    /// The image column; `None`: `png8` (`load_scorer` says which column a model of ours reads).
    pub column: Option<String>,
    /// The predictions CSV; its rejects go beside it, to [`rejects_path`] (never preprocess's `rejects.csv`).
    pub out: PathBuf,
    /// Images per scorer call.
    pub batch_size: usize,
    /// Only the rows this shard owns, into `predictions.part-K-of-N.csv` and
    /// `predictions.rejects.part-K-of-N.csv`.
    pub shard: Option<Shard>,
    /// What identifies the model in the parts' config hash ([`model_key`]).
    pub model_key: String,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        Self {
            column: None,
            out: PathBuf::from("predictions.csv"),
            batch_size: 16,
            shard: None,
            model_key: String::new(),
        }
    }
}

/// What [`score_manifest`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreOutcome {
    pub predictions: PathBuf,
    pub rejects: PathBuf,
    pub scored: usize,
    pub rejected: usize,
    /// The hash of the model (spec and content) and the column, for the sidecars of a shard's parts.
    pub config_hash: String,
    /// The model's content hash ([`Scorer::model_sha256`]), also in `predictions.model.json`.
    pub model_sha256: Option<String>,
}

/// What identifies a model in a shard's config hash: a spec file's SHA-256 (the spec names the ONNX file),
/// a run's path.
pub fn model_key(source: &ModelSource) -> Result<String> {
    Ok(match source {
        ModelSource::Spec(p) => cxr_core::fsutil::sha256_file(p)?,
        ModelSource::Run(p) => p.display().to_string(),
    })
}

/// Where `score` lists the images it could not read: `<out stem>.rejects.csv` beside `out`
/// (`predictions.csv` → `predictions.rejects.csv`), so it never replaces the `rejects.csv` that preprocess
/// wrote in the same folder, nor another score's.
pub fn rejects_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!("{stem}.rejects.csv"))
}

/// An image file as 8-bit grey, or why not (the reason goes to the rejects table).
fn read_grey(path: &Path) -> std::result::Result<Grey8, String> {
    // Every reason names the file: an OS error alone ("No such device (os error 19)") says nothing of which.
    let named = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    cxr_core::png8::read_grey8(path).map_err(|e| match e {
        cxr_core::CoreError::Image { message, .. } => named(&message),
        cxr_core::CoreError::Io { source, .. } => named(&source),
        other => other.to_string(),
    })
}

/// Scores every row of the manifest at `manifest` (needs `id, source, label` and the image column; keeps
/// `split`, `patient` where given) with `scorer`. Streamed: a first pass checks every row (errors before any
/// work) and counts the shard's rows, the second scores them a batch at a time into the outputs' temporary
/// files, renamed at the end; memory is one batch plus the manifest reader's 16 bytes per row, whatever the
/// row count (docs/PERFORMANCE.md).
pub fn score_manifest(
    scorer: &dyn Scorer,
    manifest: &Path,
    cfg: &ScoreConfig,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<ScoreOutcome> {
    let column = cfg.column.as_deref().unwrap_or("png8");
    let step = || format!("manifest {}", manifest.display());
    let owns = |r: &ManifestRecord| cfg.shard.is_none_or(|s| s.owns_record(r));
    let open = || Manifest::stream(manifest, Some(&[column][..])).step(step());
    let mut total = 0usize;
    for r in open()? {
        total += usize::from(owns(&r.step(step())?));
    }
    let (out, rejects_path) = match cfg.shard {
        Some(s) => (s.part_path(&cfg.out), s.part_path(&rejects_path(&cfg.out))),
        None => (cfg.out.clone(), rejects_path(&cfg.out)),
    };
    cxr_core::fsutil::refuse_inputs(&[&out, &rejects_path], &[manifest])?;
    let mut rows = open()?;
    let base_dir = rows.header.base_dir.clone();
    // Resumable: the batches of a killed run with the same model, configuration and manifest are reused; any
    // other run's outputs under these names are removed first (crate::resume).
    let mut owned = vec![out.clone(), rejects_path.clone(), model_json_path(&out)];
    if cfg.shard.is_some() {
        owned.extend([
            out.with_extension("json"),
            rejects_path.with_extension("json"),
        ]);
    }
    let inputs = cxr_core::fsutil::sha256_file(manifest)?;
    let key = RunKey::new(
        "score",
        scorer,
        &(cfg, column),
        format!("{inputs} {}", base_dir.display()).as_bytes(),
    )?;
    let journal = Journal::open(&journal_dir(&out), &key, &owned, &[manifest])?;
    let journaled = journal.scorer(scorer);
    let scorer: &dyn Scorer = &journaled;
    let csv_err = |e: csv::Error| AuditError::input(&rejects_path, e.to_string());
    let mut preds = PredictionWriter::new(AtomicFile::create_partial(&out)?, &out);
    let mut rejects = csv::Writer::from_writer(AtomicFile::create_partial(&rejects_path)?);
    rejects
        .write_record(["id", "file", "reason"])
        .map_err(csv_err)?;
    let bar = Bar::new(progress, "score".into(), total);
    let batch_size = cfg.batch_size.max(1);
    let mut scored_rows = 0usize;
    let mut batch: Vec<ManifestRecord> = Vec::with_capacity(batch_size);
    loop {
        batch.clear();
        // The shard's next `batch_size` rows: the batches of the whole-manifest reading, so a journal
        // written by an earlier run answers them.
        for r in rows.by_ref() {
            let r = r.step(step())?;
            if owns(&r) {
                batch.push(r);
                if batch.len() == batch_size {
                    break;
                }
            }
        }
        if batch.is_empty() {
            break;
        }
        // The cell as the manifest gives it: a rejects row names the file the way its user wrote it.
        let loaded: Vec<(usize, String, std::result::Result<Grey8, String>)> = batch
            .par_iter()
            .enumerate()
            .map(
                |(i, r)| match r.get(column).filter(|c| !c.trim().is_empty()) {
                    None => (i, String::new(), Err(format!("no `{column}` value"))),
                    Some(cell) => {
                        let p = cxr_core::absolute_path(&base_dir.join(cell.trim()));
                        (i, cell.trim().to_string(), read_grey(&p))
                    }
                },
            )
            .collect();
        let mut images = Vec::new();
        let mut owners = Vec::new();
        for (i, p, g) in loaded {
            match g {
                Ok(g) => {
                    images.push(g);
                    owners.push(i);
                }
                Err(reason) => {
                    tracing::warn!("score: {}: {reason}", batch[i].id);
                    rejects
                        .write_record([batch[i].id.as_str(), p.as_str(), reason.as_str()])
                        .map_err(csv_err)?;
                }
            }
        }
        let scored = scorer.score(&images, false)?;
        // A scorer returning fewer or more scores than images would pair scores with the wrong rows.
        if scored.scores.len() != images.len() {
            return Err(cxr_core::ScoreError::new(
                scorer.name(),
                format!(
                    "{} scores for a batch of {} images",
                    scored.scores.len(),
                    images.len()
                ),
            )
            .into());
        }
        for (i, s) in owners.into_iter().zip(scored.scores) {
            let r = &batch[i];
            preds
                .write(&Prediction {
                    id: r.id.clone(),
                    source: r.source.clone(),
                    // A manifest without splits is an external test set.
                    split: r.split.unwrap_or(Split::Test),
                    label: r.label,
                    score: s,
                    patient: r.patient.clone(),
                    model: scorer.name().to_string(),
                })
                .step(format!("writing {}", out.display()))?;
            scored_rows += 1;
        }
        bar.inc(batch.len());
    }
    drop(bar);
    preds.finish().step(format!("writing {}", out.display()))?;
    let rejected = total - scored_rows;
    rejects
        .into_inner()
        .map_err(|e| AuditError::input(&rejects_path, e.to_string()))?
        .commit()
        .step(format!("writing {}", rejects_path.display()))?;
    // The model's content hash too: a spec's hash alone would not see the ONNX file behind it swapped.
    let model_sha256 = scorer.model_sha256().map(str::to_string);
    let config_hash = cxr_core::fsutil::sha256_bytes(
        format!(
            "score model={} content={} column={column}",
            cfg.model_key,
            model_sha256.as_deref().unwrap_or("")
        )
        .as_bytes(),
    );
    if cfg.shard.is_none() {
        let model_json = model_json_path(&out);
        let meta = serde_json::json!({
            "model": scorer.name(),
            "model_key": cfg.model_key,
            "model_sha256": model_sha256,
            "engine": scorer.engine(),
            "column": column,
            "predictions": out.file_name().map(|n| n.to_string_lossy().into_owned()),
        });
        let bytes = serde_json::to_vec_pretty(&meta)
            .map_err(|e| AuditError::input(&model_json, e.to_string()))?;
        cxr_core::fsutil::write_atomic(&model_json, &bytes)
            .step(format!("writing {}", model_json.display()))?;
    }
    journal.finish()?;
    Ok(ScoreOutcome {
        predictions: out,
        rejects: rejects_path,
        scored: scored_rows,
        rejected,
        config_hash,
        model_sha256,
    })
}

/// The journal of a predictions file (crate::resume): `.predictions.csv.resume/` beside it.
pub fn journal_dir(predictions: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(predictions.file_name().unwrap_or_default());
    name.push(".resume");
    predictions.with_file_name(name)
}

/// The sidecar naming the model that wrote a predictions file: `predictions.csv` → `predictions.model.json`.
pub fn model_json_path(predictions: &Path) -> PathBuf {
    predictions.with_extension("model.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{Hashed, MeanGrey, tiny_manifest};

    #[test]
    fn predictions_record_the_model_hash_and_short_batches_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let m = tiny_manifest(dir.path());
        let cfg = |name: &str| ScoreConfig {
            out: dir.path().join(name).join("predictions.csv"),
            ..Default::default()
        };
        let a = score_manifest(&Hashed(false), &m, &cfg("a"), &|_| {}).unwrap();
        assert_eq!(a.model_sha256.as_deref(), Some("ab12"));
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("a/predictions.model.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(meta["model_sha256"], "ab12");
        assert_eq!(meta["model"], "hashed");
        // The content hash is part of the shard parts' config hash.
        let b = score_manifest(&MeanGrey, &m, &cfg("b"), &|_| {}).unwrap();
        assert_ne!(a.config_hash, b.config_hash);
        assert_eq!(b.model_sha256, None);
        let e = score_manifest(&Hashed(true), &m, &cfg("c"), &|_| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hashed") && e.contains("scores for a batch of"),
            "{e}"
        );
        assert!(!dir.path().join("c/predictions.csv").exists());
    }
}
