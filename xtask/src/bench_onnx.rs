//! `cargo xtask bench onnx`: ONNX scoring images/s of cxr-onnx on both its engines (onnxruntime through `ort`,
//! tract) against onnxruntime from Python on the same export, the same batch, the same pixels and the same
//! thread count, in the same run (`$CXR_PYTHON`, default /work/pyvenv/bin/python).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use cxr_core::{Grey8, Scorer};

#[derive(Debug, Args)]
pub struct BenchOnnxArgs {
    /// Model specs to time; default `target/onnx-fixtures/resnet18_default.toml` and `resnet50_default.toml`,
    /// torchvision exports through PyTorch's default exporter written by `crates/onnx/scripts/make_fixtures.py
    /// --default-export target/onnx-fixtures --arch resnet18,resnet50` (run here when missing, needs torch).
    #[arg(long, value_delimiter = ',')]
    spec: Vec<PathBuf>,
    #[arg(long, value_delimiter = ',', default_value = "8,32")]
    batch: Vec<usize>,
    /// Timed batches per engine (after one warm-up batch).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Threads on every side: onnxruntime's intra-op threads (ours and Python's, inter-op 1), tract's
    /// batch split. Default: rayon's thread count (the cores, or RAYON_NUM_THREADS).
    #[arg(long)]
    threads: Option<usize>,
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

/// The default PyTorch exports of `models` (torchvision names, random weights): `target/onnx-fixtures/
/// NAME_default.toml`, written by `make_fixtures.py --default-export` when missing.
pub(crate) fn default_exports(models: &[String]) -> Result<Vec<PathBuf>> {
    let dir = crate::repo_root().join("target/onnx-fixtures");
    let specs: Vec<PathBuf> = models
        .iter()
        .map(|m| dir.join(format!("{m}_default.toml")))
        .collect();
    if specs.iter().all(|s| s.is_file()) {
        return Ok(specs);
    }
    let script = crate::repo_root().join("crates/onnx/scripts/make_fixtures.py");
    println!(
        "exporting torchvision {} (default exporter) to {} ...",
        models.join(", "),
        dir.display()
    );
    let ok = Command::new(crate::bench_ops::python())
        .arg(&script)
        .arg("--default-export")
        .arg(&dir)
        .args(["--arch", &models.join(",")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok || !specs.iter().all(|s| s.is_file()) {
        bail!(
            "no exports in {} and could not write them ({} {} --default-export {} needs torch, torchvision, \
             onnxscript; set CXR_PYTHON)",
            dir.display(),
            crate::bench_ops::python().display(),
            script.display(),
            dir.display()
        );
    }
    Ok(specs)
}

const ORT_SCRIPT: &str = r#"
import sys, time, json
import numpy as np, onnxruntime as ort
path, side, n, reps, c, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[8])
mean = np.array(json.loads(sys.argv[6]), np.float32).reshape(1, -1, 1, 1)
std = np.array(json.loads(sys.argv[7]), np.float32).reshape(1, -1, 1, 1)
k = np.arange(side * side, dtype=np.int64)
imgs = np.stack([((k * (i + 7)) % 251).reshape(side, side) for i in range(n)]).astype(np.float32) / 255.0
x = np.repeat(imgs[:, None], c, axis=1)
x = ((x - mean) / std).astype(np.float32)
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
sess.run(None, {name: x})
t = time.perf_counter()
for _ in range(reps):
    sess.run(None, {name: x})
print(json.dumps({"images_per_s": reps * n / (time.perf_counter() - t), "version": ort.__version__}))
"#;

fn onnxruntime(
    spec: &cxr_onnx::ModelSpec,
    n: usize,
    reps: usize,
    threads: usize,
) -> Option<(f64, String)> {
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
        .arg(threads.to_string())
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
                "onnxruntime (Python): skipped ({}: {})",
                py.display(),
                err.lines().last().unwrap_or("")
            );
            None
        }
        Err(e) => {
            println!(
                "onnxruntime (Python): skipped (no python at {}: {e}; set CXR_PYTHON)",
                py.display()
            );
            None
        }
    }
}

/// Images/s of one engine of ours, the session or plan built (and warmed) before the clock starts.
fn ours(
    spec: &cxr_onnx::ModelSpec,
    engine: cxr_onnx::Engine,
    threads: usize,
    images: &[Grey8],
    reps: usize,
) -> Result<(f64, String)> {
    let opts = cxr_onnx::LoadOptions {
        threads: Some(threads),
        ..cxr_onnx::LoadOptions::engine(engine)
    };
    let scorer = cxr_onnx::OnnxScorer::load(spec.clone(), &opts)?;
    scorer.score(images, false)?; // builds the plan for this batch size
    let t = Instant::now();
    for _ in 0..reps {
        scorer.score(images, false)?;
    }
    Ok((
        (reps * images.len()) as f64 / t.elapsed().as_secs_f64(),
        scorer.engine().to_string(),
    ))
}

pub fn run(args: BenchOnnxArgs) -> Result<()> {
    let specs = if args.spec.is_empty() {
        default_exports(&["resnet18".into(), "resnet50".into()])?
    } else {
        args.spec.clone()
    };
    let reps = args.reps.max(1);
    let threads = args
        .threads
        .unwrap_or_else(rayon::current_num_threads)
        .max(1);
    println!(
        "ONNX scoring images/s, {reps} timed batches after one warm-up, {threads} thread(s) on every side; \
         {} cores, load average {}",
        std::thread::available_parallelism().map_or(1, |p| p.get()),
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "?".into())
    );
    println!("| model | batch | engine | images/s | ours / onnxruntime (Python) |");
    println!("|---|---|---|---|---|");
    for spec_path in &specs {
        let spec = cxr_onnx::ModelSpec::load(spec_path)
            .with_context(|| format!("bench onnx: {}", spec_path.display()))?;
        let model = spec_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for &n in &args.batch {
            let n = n.max(1);
            let images = batch_images(n, spec.input_size as u32)?;
            let py = onnxruntime(&spec, n, reps, threads);
            if let Some((v, version)) = &py {
                println!("| {model} | {n} | onnxruntime {version} (Python) | {v:.2} | 1 |");
            }
            for engine in [cxr_onnx::Engine::Onnxruntime, cxr_onnx::Engine::Tract] {
                match ours(&spec, engine, threads, &images, reps) {
                    Ok((v, name)) => {
                        let ratio = py
                            .as_ref()
                            .map(|(o, _)| format!("**{:.2}x**", v / o))
                            .unwrap_or_else(|| "-".into());
                        println!("| {model} | {n} | cxr-onnx, {name} | {v:.2} | {ratio} |");
                    }
                    Err(e) if engine == cxr_onnx::Engine::Onnxruntime => {
                        println!("| {model} | {n} | cxr-onnx, onnxruntime | skipped: {e:#} | - |");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}
