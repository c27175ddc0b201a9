//! `cargo xtask bench onnx`: ONNX scoring images/s, cxr-onnx (tract) against onnxruntime on the same export,
//! the same batch and the same pixels, in the same run (`$CXR_PYTHON`, default /work/pyvenv/bin/python).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use cxr_core::{Grey8, Scorer};

#[derive(Debug, Args)]
pub struct BenchOnnxArgs {
    /// Model spec to time; default `target/onnx-fixtures/resnet50.toml`, exported by
    /// `crates/onnx/scripts/make_fixtures.py --large target/onnx-fixtures` (run here when missing, needs torch).
    #[arg(long)]
    spec: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Timed batches per engine (after one warm-up batch).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Rayon threads for cxr-onnx's batch split (each figure is one row).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
}

/// The same pixels on both sides: image `i`, pixel `k` is `(k * (i + 7)) % 251`.
fn batch_images(n: usize, side: u32) -> Result<Vec<Grey8>> {
    (0..n as u32)
        .map(|i| {
            Grey8::new(
                side,
                side,
                (0..side * side)
                    .map(|k| ((k * (i + 7)) % 251) as u8)
                    .collect(),
            )
        })
        .collect::<Result<_, _>>()
        .map_err(Into::into)
}

fn repo_root() -> PathBuf {
    let up = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    up.canonicalize().unwrap_or(up)
}

fn default_spec() -> Result<PathBuf> {
    let dir = repo_root().join("target/onnx-fixtures");
    let spec = dir.join("resnet50.toml");
    if !spec.is_file() {
        let script = repo_root().join("crates/onnx/scripts/make_fixtures.py");
        println!("exporting torchvision ResNet50 to {} ...", dir.display());
        let ok = Command::new(crate::bench_ops::python())
            .arg(&script)
            .arg("--large")
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok || !spec.is_file() {
            bail!(
                "no {} and could not export it ({} {} --large {} needs torch + torchvision; set CXR_PYTHON)",
                spec.display(),
                crate::bench_ops::python().display(),
                script.display(),
                dir.display()
            );
        }
    }
    Ok(spec)
}

const ORT_SCRIPT: &str = r#"
import sys, time, json
import numpy as np, onnxruntime as ort
path, side, n, reps, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
mean = np.array(json.loads(sys.argv[6]), np.float32).reshape(1, -1, 1, 1)
std = np.array(json.loads(sys.argv[7]), np.float32).reshape(1, -1, 1, 1)
k = np.arange(side * side, dtype=np.int64)
imgs = np.stack([((k * (i + 7)) % 251).reshape(side, side) for i in range(n)]).astype(np.float32) / 255.0
x = np.repeat(imgs[:, None], c, axis=1)
x = ((x - mean) / std).astype(np.float32)
sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
sess.run(None, {name: x})
t = time.perf_counter()
for _ in range(reps):
    sess.run(None, {name: x})
print(json.dumps({"images_per_s": reps * n / (time.perf_counter() - t), "version": ort.__version__}))
"#;

fn onnxruntime(spec: &cxr_onnx::ModelSpec, n: usize, reps: usize) -> Option<(f64, String)> {
    let py = crate::bench_ops::python();
    let out = Command::new(&py)
        .args(["-c", ORT_SCRIPT])
        .arg(&spec.onnx)
        .arg(spec.input_size.to_string())
        .arg(n.to_string())
        .arg(reps.to_string())
        .arg(spec.channels.to_string())
        .arg(serde_json::to_string(&spec.mean).ok()?)
        .arg(serde_json::to_string(&spec.std).ok()?)
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            Some((
                v["images_per_s"].as_f64()?,
                v["version"].as_str()?.to_string(),
            ))
        }
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            println!(
                "onnxruntime: skipped ({}: {})",
                py.display(),
                err.lines().last().unwrap_or("")
            );
            None
        }
        Err(e) => {
            println!(
                "onnxruntime: skipped (no python at {}: {e}; set CXR_PYTHON)",
                py.display()
            );
            None
        }
    }
}

fn ours(spec_path: &Path, threads: usize, images: &[Grey8], reps: usize) -> Result<f64> {
    let scorer = cxr_onnx::OnnxScorer::from_spec_file(spec_path)?.with_threads(threads);
    scorer.score(images, false)?; // builds the plan for this batch size
    let t = Instant::now();
    for _ in 0..reps {
        scorer.score(images, false)?;
    }
    Ok((reps * images.len()) as f64 / t.elapsed().as_secs_f64())
}

pub fn run(args: BenchOnnxArgs) -> Result<()> {
    let spec_path = match &args.spec {
        Some(p) => p.clone(),
        None => default_spec()?,
    };
    let spec = cxr_onnx::ModelSpec::load(&spec_path)
        .with_context(|| format!("bench onnx: {}", spec_path.display()))?;
    let (n, reps) = (args.batch.max(1), args.reps.max(1));
    let images = batch_images(n, spec.input_size as u32)?;
    println!(
        "ONNX scoring, {} ({} px), batch {n}, {reps} timed batches after one warm-up; {} cores",
        spec.onnx.display(),
        spec.input_size,
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );
    let ort = onnxruntime(&spec, n, reps);
    if let Some((v, version)) = &ort {
        println!(
            "  onnxruntime {version} (CPUExecutionProvider, default threads): {v:.2} images/s"
        );
    }
    for &t in &args.threads {
        let v = ours(&spec_path, t, &images, reps)?;
        let ratio = ort
            .as_ref()
            .map(|(o, _)| format!("  ({:.2}x onnxruntime)", v / o))
            .unwrap_or_default();
        println!("  cxr-onnx (tract), batch split over {t} thread(s): {v:.2} images/s{ratio}");
    }
    Ok(())
}
