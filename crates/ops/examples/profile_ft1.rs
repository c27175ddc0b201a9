//! Development profile of one Finetune1 step with cxr-ops (for `perf`).
use cxr_ops::bench::{self, Ops};
fn main() -> candle_core::Result<()> {
    let net = bench::ResNet50::new()?;
    let x = bench::uniform(&[8, 3, 224, 224], 1.0, 3)?;
    let what = std::env::args().nth(1).unwrap_or_default();
    for _ in 0..2 {
        let t = std::time::Instant::now();
        if what == "infer" {
            net.infer(&x, Ops::Ours)?;
        } else {
            net.finetune1_step(&x, Ops::Ours)?;
        }
        eprintln!("{:.2} s", t.elapsed().as_secs_f64());
    }
    Ok(())
}
