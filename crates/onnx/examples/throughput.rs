//! Images/s of an ONNX spec on one engine (warm session or plans), without onnxruntime's Python beside it
//! (`cargo xtask bench onnx` has both): `cargo run --release -p cxr-onnx --example throughput --
//! target/onnx-fixtures/resnet50_default.toml [threads] [auto|onnxruntime|tract] [batch]`.

use std::time::Instant;

use cxr_core::{Grey8, Scorer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let spec = args
        .next()
        .ok_or("usage: throughput SPEC.toml [threads] [engine] [batch]")?;
    let threads = args.next().map(|t| t.parse()).transpose()?;
    let engine = args
        .next()
        .map(|e| e.parse())
        .transpose()?
        .unwrap_or_default();
    let n: u32 = args.next().map(|b| b.parse()).transpose()?.unwrap_or(8);
    let opts = cxr_onnx::LoadOptions {
        threads,
        ..cxr_onnx::LoadOptions::engine(engine)
    };
    let scorer = cxr_onnx::OnnxScorer::load(cxr_onnx::ModelSpec::load(spec.as_ref())?, &opts)?;
    let s = scorer.input_size() as u32;
    let batch: Vec<Grey8> = (0..n)
        .map(|i| {
            Grey8::new(
                s,
                s,
                (0..s * s).map(|k| ((k * (i + 7)) % 251) as u8).collect(),
            )
        })
        .collect::<Result<_, _>>()?;
    scorer.score(&batch, false)?; // builds the plans
    let (reps, t) = (5, Instant::now());
    for _ in 0..reps {
        scorer.score(&batch, false)?;
    }
    let per_s = (reps * batch.len()) as f64 / t.elapsed().as_secs_f64();
    println!(
        "{spec}: {}: {per_s:.2} images/s at batch {n}",
        scorer.engine()
    );
    Ok(())
}
