//! `cxr score`: any classifier (an ONNX model described by a spec, or one of our trained runs) over
//! a manifest → `predictions.csv` in the format `evaluate` reads, plus `rejects.csv` for unreadable images.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use cxr_core::{Grey8, Manifest, Prediction, Split};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// ONNX model spec (TOML, docs/MODEL_SPEC.md).
    #[arg(long, conflicts_with = "model", required_unless_present = "model")]
    model_spec: Option<PathBuf>,
    /// A trained run folder (`run.json` + `model.safetensors`) or a `.safetensors` file.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Manifest whose rows to score (its split/source/label/patient columns are kept).
    #[arg(long)]
    manifest: PathBuf,
    /// Image column: `png8` or `crop` (default: the run's training column, else `png8`).
    #[arg(long)]
    column: Option<String>,
    /// Output predictions CSV; `rejects.csv` is written beside it.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// With a shard, `--out DIR/predictions.csv` becomes `DIR/predictions.part-K-of-N.csv` (+ sidecar).
    #[command(flatten)]
    shard: crate::shard::ShardArgs,
}

fn read_grey(path: &Path) -> Result<Grey8, String> {
    let img = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?
        .to_luma8();
    Grey8::new(img.width(), img.height(), img.into_raw()).map_err(|e| e.to_string())
}

pub fn run(args: ScoreArgs) -> Result<()> {
    let shard = args.shard.resolve("score")?;
    // The same loading (and default column) as the audits, so `score` and `audit` see one model the same way.
    let model_args = crate::explain::ModelArgs {
        model: args.model.clone(),
        model_spec: args.model_spec.clone(),
        backbone: None,
        image_size: None,
        column: args.column.clone(),
        batch_size: args.batch_size,
    };
    let scorer = crate::explain::scorer_for_audit(&model_args)?;
    let column = crate::explain::column_for_audit(&model_args)?;
    let manifest = Manifest::read(&args.manifest)
        .with_context(|| format!("score: manifest {}", args.manifest.display()))?;
    let rows: Vec<_> = manifest
        .records
        .iter()
        .filter(|r| shard.is_none_or(|s| s.owns_record(r)))
        .collect();
    let (out, rejects_path) = match shard {
        Some(s) => (
            s.part_path(&args.out),
            s.part_path(&args.out.with_file_name("rejects.csv")),
        ),
        None => (args.out.clone(), args.out.with_file_name("rejects.csv")),
    };
    let t = Instant::now();
    let bar = ProgressBar::new(rows.len() as u64).with_style(
        ProgressStyle::with_template("score {bar:40} {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut preds = Vec::with_capacity(rows.len());
    let mut rejects = csv::Writer::from_writer(Vec::new());
    rejects.write_record(["id", "file", "reason"])?;
    for batch in rows.chunks(args.batch_size.max(1)) {
        let loaded: Vec<(usize, PathBuf, Result<Grey8, String>)> = batch
            .par_iter()
            .enumerate()
            .map(
                |(i, r)| match r.get(&column).filter(|c| !c.trim().is_empty()) {
                    None => (i, PathBuf::new(), Err(format!("no `{column}` value"))),
                    Some(cell) => {
                        let p = cxr_core::absolute_path(&manifest.base_dir.join(cell.trim()));
                        let g = read_grey(&p);
                        (i, p, g)
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
                    let cell =
                        cxr_core::path_cell(rejects_path.parent().unwrap_or(Path::new(".")), &p);
                    rejects.write_record([batch[i].id.as_str(), cell.as_str(), reason.as_str()])?;
                }
            }
        }
        let scored = scorer.score(&images, false).context("score")?;
        for (i, s) in owners.into_iter().zip(scored.scores) {
            let r = batch[i];
            preds.push(Prediction {
                id: r.id.clone(),
                source: r.source.clone(),
                // A manifest without splits is an external test set.
                split: r.split.unwrap_or(Split::Test),
                label: r.label,
                score: s,
                patient: r.patient.clone(),
                model: scorer.name().to_string(),
            });
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("score: creating {}", dir.display()))?;
    }
    cxr_core::write_predictions(&out, &preds)
        .with_context(|| format!("score: writing {}", out.display()))?;
    let rejected = rows.len() - preds.len();
    cxr_core::fsutil::write_atomic(&rejects_path, &rejects.into_inner()?)
        .with_context(|| format!("score: writing {}", rejects_path.display()))?;
    if let Some(s) = shard {
        let spec_hash = match (&args.model_spec, &args.model) {
            (Some(p), _) => cxr_core::fsutil::sha256_file(p)?,
            (_, Some(p)) => p.display().to_string(),
            _ => String::new(),
        };
        let config_hash = cxr_core::fsutil::sha256_bytes(
            format!("score model={spec_hash} column={column}").as_bytes(),
        );
        crate::shard::write_sidecars(
            "score",
            s,
            &args.manifest,
            &config_hash,
            &[out.clone(), rejects_path.clone()],
        )?;
    }
    println!(
        "score: {} images scored by {}, {rejected} rejected -> {} ({:.1} s)",
        preds.len(),
        scorer.name(),
        out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
