//! What the refined occlusion maps save on a real model (docs/PERFORMANCE.md, "Occlusion saliency maps"):
//! the default audit of a model spec on a manifest, once with exhaustive maps (`saliency_tolerance = 0`) and
//! once refined (the default), printing each step's wall time, the passes and seconds per map and the lung
//! energy of both.
//!
//!     cargo run --release -p cxr-tests --example saliency_cost -- SPEC.toml MANIFEST.csv [MAPS [COLUMN]]
//!
//! The lung energy of each map, both ways, is in `target/saliency-cost/{exhaustive,refined}/saliency/lung_energy.csv`.

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [spec, manifest, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: saliency_cost SPEC.toml MANIFEST.csv [MAPS [COLUMN]]");
    };
    let maps: usize = rest.first().map_or(Ok(2), |m| m.parse()).context("MAPS")?;
    let column = rest.get(1).cloned();
    let scorer = cxr_onnx::OnnxScorer::from_spec_file(std::path::Path::new(spec))
        .with_context(|| format!("reading {spec}"))?;
    for tolerance in [0.0, cxr_explain::SaliencyPlan::DEFAULT_TOLERANCE] {
        let cfg = cxr_audit::AuditConfig {
            saliency_images: maps,
            saliency_tolerance: tolerance,
            column: column.clone(),
            out: Some(std::path::PathBuf::from(if tolerance == 0.0 {
                "target/saliency-cost/exhaustive"
            } else {
                "target/saliency-cost/refined"
            })),
            batch_size: 16,
            ..Default::default()
        };
        let t = std::time::Instant::now();
        let done = cxr_audit::run_audit(&scorer, std::path::Path::new(manifest), &cfg)?;
        let e = &done.report.evidence[0];
        let steps: Vec<String> = done
            .timings
            .iter()
            .map(|(s, v)| format!("{s} {v:.1} s"))
            .collect();
        println!(
            "tolerance {tolerance}: {:.1} s in all ({}); {:?}; lung energy {:?}; verdict {:?}",
            t.elapsed().as_secs_f64(),
            steps.join(", "),
            e.saliency,
            e.lung_energy.map(|f| f.value),
            done.report.verdicts[0].verdict
        );
    }
    Ok(())
}
