//! `cargo xtask bench segment` and `bench synth`: UNet inference and synthetic-world rendering throughput.

use std::time::Instant;

use anyhow::{Context, Result};
use cxr_segment::{UNet, UNetConfig};
use cxr_synth::WorldConfig;

/// `cargo xtask bench segment`: inference images/s at 256 px on the CPU for each width (random weights:
/// the speed does not depend on them).
pub fn segment(bases: &[usize], images: usize, batch: usize) -> Result<()> {
    let device = cxr_segment::default_device();
    println!("segment inference at 256x256, batch {batch}, device {device:?}");
    for &base in bases {
        let cfg = UNetConfig { base, size: 256 };
        let (unet, _) =
            UNet::trainable(cfg, 0, &device).context("bench segment: building the UNet")?;
        let x = candle_core::Tensor::rand(0f32, 1f32, (batch, 1, 256, 256), &device)?;
        unet.predict(&x)?; // warm-up
        let t = Instant::now();
        let mut done = 0;
        while done < images {
            let p = unet.predict(&x)?;
            p.flatten_all()?.to_vec1::<f32>()?;
            done += batch;
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "base {base:>3} ({:>10} parameters): {:.2} images/s ({done} images in {s:.1} s)",
            cfg.parameter_count(),
            done as f64 / s
        );
    }
    Ok(())
}

/// `cargo xtask bench synth`: images per second at the given size (source images and lung-mask pairs).
pub fn synth(per_source: usize, size: u32) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("cxr-bench-synth-{}", std::process::id()));
    let cfg = WorldConfig {
        per_source,
        size,
        lung_mask_count: per_source,
        ..WorldConfig::default()
    };
    let t = Instant::now();
    let summary = cxr_synth::generate(&cfg, &dir)
        .with_context(|| format!("synth bench in {}", dir.display()))?;
    let secs = t.elapsed().as_secs_f64();
    let images = summary.images_written + summary.lung_masks;
    println!(
        "synth: {images} images at {size} px in {secs:.2} s = {:.1} images/s on {} threads",
        images as f64 / secs,
        rayon::current_num_threads()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
