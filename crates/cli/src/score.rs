//! `cxr score`: any classifier (an ONNX model described by a spec, or one of our trained runs) over
//! a manifest → `predictions.csv` in the format `evaluate` reads, plus `predictions.rejects.csv` for unreadable images
//! (`cxr_audit::score_manifest`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use cxr_audit::ScoreConfig;

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
    /// Output predictions CSV; unreadable images go to `<stem>.rejects.csv` beside it (preprocess's
    /// `rejects.csv` in the same folder is left alone). Refused when it names an input. A killed score rerun
    /// with the same model (content hash), options and manifest resumes from `.<name>.resume/` beside it;
    /// another run's files under these names are removed first (docs/RELIABILITY.md).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Engine of a `--model-spec`: `auto` (onnxruntime where found, else tract), `onnxruntime`, `tract`
    /// (docs/MODEL_SPEC.md, "Engines").
    #[arg(long, default_value = "auto")]
    engine: cxr_onnx::Engine,
    /// With a shard, `--out DIR/predictions.csv` becomes `DIR/predictions.part-K-of-N.csv` (+ sidecar).
    #[command(flatten)]
    shard: crate::shard::ShardArgs,
}

pub fn run(args: ScoreArgs) -> Result<()> {
    let shard = args.shard.resolve("score")?;
    let inputs: Vec<&std::path::Path> = [
        Some(&args.manifest),
        args.model.as_ref(),
        args.model_spec.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| p.as_path())
    .collect();
    let rejects = cxr_audit::rejects_path(&args.out);
    cxr_core::fsutil::refuse_inputs(&[&args.out, &rejects], &inputs).context("score")?;
    // The same loading (and default column) as the audits, so `score` and `audit` see one model the same way.
    let model_args = crate::explain::ModelArgs {
        model: args.model.clone(),
        model_spec: args.model_spec.clone(),
        backbone: None,
        image_size: None,
        column: args.column.clone(),
        batch_size: args.batch_size,
        engine: args.engine,
    };
    let (loaded, column) = model_args.load().context("score")?;
    let scorer = loaded.scorer.as_ref();
    let cfg = ScoreConfig {
        column: Some(column),
        out: args.out.clone(),
        batch_size: args.batch_size,
        shard,
        model_key: cxr_audit::model_key(&model_args.source()?).context("score")?,
    };
    let t = Instant::now();
    let bars = crate::explain::Bars::default();
    let done = cxr_audit::score_manifest(scorer, &args.manifest, &cfg, &|p| bars.update(p))
        .context("score")?;
    if let Some(s) = shard {
        // The model's content: the ONNX file (and external data) behind a spec, the spec itself, or the
        // weights of one of our runs.
        let mut inputs = Vec::new();
        if let Some(sha) = &done.model_sha256 {
            inputs.push(("model", sha.clone()));
        }
        match (&args.model_spec, &args.model) {
            (Some(_), _) => inputs.push(("model_spec", cfg.model_key.clone())),
            (None, Some(run)) => {
                let weights = if run.is_dir() {
                    run.join("model.safetensors")
                } else {
                    run.clone()
                };
                let sha = cxr_core::fsutil::sha256_file(&weights)
                    .with_context(|| format!("score: hashing {}", weights.display()))?;
                inputs.push(("weights", sha));
            }
            (None, None) => {}
        }
        crate::shard::write_sidecars(
            "score",
            s,
            &args.manifest,
            &done.config_hash,
            &inputs,
            &[done.predictions.clone(), done.rejects.clone()],
        )?;
    }
    println!(
        "score: {} images scored by {}, {} rejected -> {} ({:.1} s)",
        done.scored,
        scorer.name(),
        done.rejected,
        done.predictions.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
