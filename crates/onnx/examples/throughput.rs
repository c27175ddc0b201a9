//! Images/s of an ONNX spec at batch 8 (warm plans), without onnxruntime beside it (`cargo xtask bench onnx` has both):
//! `cargo run --release -p cxr-onnx --example throughput -- target/onnx-fixtures/resnet50.toml [threads]`.

use std::time::Instant;

use cxr_core::{Grey8, Scorer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let spec = args.next().ok_or("usage: throughput SPEC.toml [threads]")?;
    let mut scorer = cxr_onnx::OnnxScorer::from_spec_file(spec.as_ref())?;
    if let Some(t) = args.next() {
        scorer = scorer.with_threads(t.parse()?);
    }
    let s = scorer.input_size() as u32;
    let batch: Vec<Grey8> = (0..8u32)
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
    println!("{spec}: {per_s:.2} images/s at batch 8");
    Ok(())
}
