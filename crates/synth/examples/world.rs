//! Writes a small synthetic world: `cargo run -p cxr-synth --release --example world -- OUT [paper|clean] [N] [SIZE]`.
//! (`cargo xtask synth` is the full command; this example needs only this crate.)

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(
        args.get(1)
            .map(String::as_str)
            .unwrap_or("target/synth-example"),
    );
    let mut cfg = cxr_synth::WorldConfig {
        gallery: true,
        lung_mask_count: 8,
        per_source: 12,
        ..Default::default()
    };
    if let Some(k) = args.get(2) {
        cfg.kind = k.parse()?;
    }
    if let Some(n) = args.get(3) {
        cfg.per_source = n.parse()?;
    }
    if let Some(s) = args.get(4) {
        cfg.size = s.parse()?;
    }
    let t = std::time::Instant::now();
    let summary = cxr_synth::generate(&cfg, &out)?;
    println!(
        "{} images in {:.2} s",
        summary.images_written + summary.lung_masks,
        t.elapsed().as_secs_f64()
    );
    for s in &summary.sources {
        println!(
            "{:<14} selected {} covid {} pneumonia {} distractors {}",
            s.id, s.selected, s.covid, s.pneumonia, s.distractors
        );
    }
    Ok(())
}
