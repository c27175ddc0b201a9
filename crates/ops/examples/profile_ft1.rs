//! Development profile of one Finetune1 step (or `infer`, or `unet`) with cxr-ops, for `perf`.
use cxr_ops::bench::{self, Ops};
fn main() -> candle_core::Result<()> {
    // The same allocator settings as xtask.
    cxr_ops::alloc::retain_freed_memory();
    let what = std::env::args().nth(1).unwrap_or_default();
    let net = bench::ResNet50::new()?;
    let unet = bench::UNet::new(16)?;
    let x = bench::uniform(&[8, 3, 224, 224], 1.0, 3)?;
    let xu = bench::uniform(&[4, 1, 256, 256], 1.0, 4)?;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        match what.as_str() {
            "infer" => drop(net.infer(&x, Ops::Ours)?),
            "unet" => unet.train_step(&xu, Ops::Ours)?,
            _ => net.finetune1_step(&x, Ops::Ours)?,
        }
        eprintln!("{what}: {:.2} s", t.elapsed().as_secs_f64());
    }
    Ok(())
}
