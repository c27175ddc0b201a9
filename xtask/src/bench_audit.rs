//! `cargo xtask bench audit`: the wall time of a whole default audit (`cxr audit`, every test, the shipped lung
//! UNet's masks included) of torchvision exports on real radiographs, per model and engine, with the time of
//! each step as the audit itself measured it.
//!
//! The images are the Cohen collection under `$CXR_SHARED_DATA` (`cxr manifest build --dataset cohen`, then
//! the `cohen-locations` split design): every training row, and the first `--images` test rows (by id, a
//! pseudonymous hash, so a fixed pseudo-random pick) of the two classes. The exports have random weights
//! (nothing is downloaded), so the verdicts say nothing about a real model; the cost is a real model's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use cxr_core::{Label, Manifest, Split};

#[derive(Debug, Args)]
pub struct BenchAuditArgs {
    /// Models, exported into `target/onnx-fixtures/NAME_default.toml` (PyTorch's default exporter)
    /// by `crates/onnx/scripts/make_fixtures.py --default-export` when missing (needs torch + torchvision in `$CXR_PYTHON`).
    #[arg(long, value_delimiter = ',', default_value = "resnet18,resnet50")]
    models: Vec<String>,
    /// Engines (`cxr audit --engine`); one row per model and engine.
    #[arg(long, value_delimiter = ',', default_value = "onnxruntime,tract")]
    engines: Vec<String>,
    /// Test images audited.
    #[arg(long, default_value_t = 120)]
    images: usize,
    /// Work folder (the manifest and one audit folder per row).
    #[arg(long, default_value = "target/bench-audit")]
    out: PathBuf,
}

/// The audit's own command line, run in this process (`cxr_cli::run`, as `cargo xtask audit` would).
fn cxr(args: &[&str]) -> Result<()> {
    let mut argv = vec!["cxr".to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    cxr_cli::run(argv)
}

/// The Cohen manifest with the `cohen-locations` split, cut to every training row plus `images` test rows.
fn bench_manifest(out: &Path, images: usize) -> Result<PathBuf> {
    let root = crate::shared_data().join("cohen-covid-chestxray");
    if !root.join("metadata.csv").is_file() {
        bail!(
            "skipped: {} absent (set CXR_SHARED_DATA)",
            root.join("metadata.csv").display()
        );
    }
    std::fs::create_dir_all(out)?;
    let built = out.join("cohen.csv");
    let split = out.join("cohen-split.csv");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    cxr(&[
        "manifest",
        "build",
        "--dataset",
        "cohen",
        "--root",
        &s(&root),
        "--out",
        &s(&built),
    ])?;
    let design = crate::repo_root().join("data-manifests/splits/cohen-locations.toml");
    cxr(&[
        "manifest",
        "split",
        "--design",
        &s(&design),
        "--out",
        &s(&split),
        &s(&built),
    ])?;
    let mut manifest = Manifest::read(&split)?;
    let mut records = std::mem::take(&mut manifest.records);
    records.sort_by(|a, b| a.id.cmp(&b.id));
    let two_classes =
        |r: &cxr_core::ManifestRecord| matches!(r.label, Label::Covid | Label::Pneumonia);
    let mut tests = 0;
    manifest.records = records
        .into_iter()
        .filter(|r| two_classes(r))
        .filter(|r| match r.split {
            Some(Split::Train) => true,
            Some(Split::Test) if tests < images => {
                tests += 1;
                true
            }
            _ => false,
        })
        .collect();
    if tests < images {
        bail!("the Cohen split has only {tests} test images of the two classes (asked {images})");
    }
    let path = out.join("manifest.csv");
    manifest.write(&path)?;
    Ok(path)
}

/// One audit's figures.
struct Row {
    model: String,
    engine: String,
    wall_s: f64,
    verdict: String,
    passes_per_map: Option<usize>,
    steps: Vec<(String, f64)>,
}

pub fn run(args: BenchAuditArgs) -> Result<()> {
    let out = crate::repo_root().join(&args.out);
    let manifest = bench_manifest(&out, args.images)?;
    let specs = crate::bench_onnx::default_exports(&args.models)?;
    let mut rows = Vec::new();
    for (model, spec) in args.models.iter().zip(&specs) {
        for engine in &args.engines {
            let engine_choice: cxr_onnx::Engine = engine
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--engines: {e}"))?;
            let dir = out.join(format!("{model}-{engine}"));
            // A fresh folder: the audit would otherwise resume from the last run's journal.
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            println!(
                "audit of {model} on {engine} ({} test images) ...",
                args.images
            );
            let t = Instant::now();
            let opts = cxr_audit::ModelOptions {
                engine: engine_choice,
                ..Default::default()
            };
            let loaded =
                cxr_audit::load_scorer(&cxr_audit::ModelSource::Spec(spec.clone()), &opts)?;
            let cfg = cxr_audit::AuditConfig {
                column: Some("path".into()),
                out: Some(dir.clone()),
                ..Default::default()
            };
            let outcome = cxr_audit::run_audit(loaded.scorer.as_ref(), &manifest, &cfg)
                .with_context(|| format!("auditing {model} on {engine}"))?;
            let evidence = outcome.report.evidence.first();
            rows.push(Row {
                model: model.clone(),
                engine: evidence
                    .and_then(|e| e.engine.clone())
                    .unwrap_or_else(|| engine.clone()),
                wall_s: t.elapsed().as_secs_f64(),
                verdict: outcome
                    .report
                    .verdicts
                    .first()
                    .and_then(|v| serde_json::to_value(v.verdict).ok())
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                passes_per_map: evidence
                    .and_then(|e| e.saliency.as_ref())
                    .map(|c| c.passes_per_map),
                steps: outcome.timings,
            });
        }
    }
    println!(
        "\nwhole default audit of {} test images (threads: {})",
        args.images,
        rayon::current_num_threads()
    );
    println!(
        "| model | engine | wall s | verdict | passes/map | steps (s, as the audit timed them) |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        let steps: Vec<String> = r.steps.iter().map(|(k, s)| format!("{k} {s:.1}")).collect();
        println!(
            "| {} | {} | {:.1} | {} | {} | {} |",
            r.model,
            r.engine,
            r.wall_s,
            r.verdict,
            r.passes_per_map.map_or("-".into(), |p| p.to_string()),
            steps.join("; ")
        );
    }
    Ok(())
}
