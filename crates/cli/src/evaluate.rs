//! `cxr evaluate`: predictions → `metrics.json`, `metrics.csv`, `tables.md`, `plots/*.svg`
//! (cxr-eval).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use cxr_core::{Manifest, Split};
use cxr_eval::{EvalOptions, Group, ThresholdRule};

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// predictions.csv files (`--predictions A.csv B.csv` or the flag repeated). Rows with an empty `model`
    /// are named after their file, or its folder when the file is called predictions.csv.
    #[arg(long = "predictions", required = true, num_args = 1..)]
    predictions: Vec<PathBuf>,
    /// Training manifest: the sources of its `train` split count as seen (the whole manifest when it has
    /// no split column); its patients group the bootstrap resamples when predictions lack them.
    #[arg(long)]
    train_manifest: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "target/eval")]
    out: PathBuf,
    /// Bootstrap resamples per set.
    #[arg(long, default_value_t = 2000)]
    resamples: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 2021)]
    seed: u64,
    /// Operating threshold chosen on the validation split: `youden` or `accuracy`.
    #[arg(long, default_value = "youden")]
    threshold: ThresholdRule,
}

/// `--help`'s account of the predictions file: its columns and the values each accepts.
pub fn input_help() -> String {
    let aliases = |ours: &str| {
        cxr_core::prediction::COLUMN_ALIASES
            .iter()
            .filter(|(_, o)| *o == ours)
            .map(|(a, _)| *a)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "Predictions file (CSV with a header; column names in any case, other columns ignored):\n  \
         id       image id, unique per model (also: {})\n  \
         source   the image's data source, kept as written (also: {})\n  \
         split    optional, default test: {}\n  \
         label    {} (column also: {})\n  \
         score    the model's score for Covid-19, any finite number (also: {}); AUC/AP take any\n           \
                  ranking score, Brier/ECE only probabilities (skipped, saying why, for logits)\n  \
         patient  optional: groups the bootstrap resamples (also: {})\n  \
         model    optional: tells several models in one file apart\n\
         The operating threshold is chosen on the `val` rows (both classes needed; 0.5 otherwise).",
        aliases("id"),
        aliases("source"),
        Split::ACCEPTED,
        cxr_core::Label::ACCEPTED,
        aliases("label"),
        aliases("score"),
        aliases("patient"),
    )
}

pub fn run(args: EvaluateArgs) -> Result<()> {
    let preds = cxr_eval::load_predictions(&args.predictions).context("reading predictions")?;
    let mut options = EvalOptions {
        resamples: args.resamples,
        seed: args.seed,
        threshold_rule: args.threshold,
        ..EvalOptions::default()
    };
    if let Some(path) = &args.train_manifest {
        let manifest = Manifest::read(path)
            .with_context(|| format!("reading training manifest {}", path.display()))?;
        options = options.with_train_manifest(&manifest);
    }
    let bar = indicatif::ProgressBar::new_spinner().with_message(format!(
        "evaluating {} predictions ({} bootstrap resamples per set)",
        preds.len(),
        args.resamples
    ));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let report = cxr_eval::evaluate(&preds, &options).context("evaluating predictions")?;
    bar.finish_and_clear();
    let written = cxr_eval::write_outputs(&report, &args.out)
        .with_context(|| format!("writing outputs under {}", args.out.display()))?;
    print!("{}", summary(&report));
    println!("wrote {} files under {}", written.len(), args.out.display());
    Ok(())
}

/// One line per model and evaluated split, then the alarms.
fn summary(report: &cxr_eval::EvalReport) -> String {
    let fmt =
        |s: Option<&cxr_eval::SetReport>| match s.and_then(|s| s.delong.as_ref().map(|d| (s, d))) {
            Some((s, d)) => format!("AUC {:.3} [{:.3}, {:.3}] n={}", d.auc, d.lo, d.hi, s.n),
            None => "AUC n/a".to_string(),
        };
    let mut out = String::new();
    for m in &report.models {
        out.push_str(&format!(
            "{}: threshold {:.4} ({} from {})\n",
            m.model,
            m.threshold.value,
            serde_json::to_string(&m.threshold.rule)
                .unwrap_or_default()
                .trim_matches('"'),
            m.threshold.from
        ));
        for split in [Split::Val, Split::Test, Split::Finetune] {
            let Some(all) = report.set(&m.model, split, &Group::All) else {
                continue;
            };
            let acc = all
                .at_val_threshold
                .accuracy
                .value
                .map(|a| format!("{:.1}%", a * 100.0))
                .unwrap_or_else(|| "n/a".into());
            out.push_str(&format!(
                "  {split:<8} all: {}, accuracy {acc}\n",
                fmt(Some(all))
            ));
            if let Some(seen) = report.set(&m.model, split, &Group::Seen) {
                out.push_str(&format!("  {split:<8} seen: {}\n", fmt(Some(seen))));
            }
            if let Some(unseen) = report.set(&m.model, split, &Group::Unseen) {
                out.push_str(&format!("  {split:<8} unseen: {}\n", fmt(Some(unseen))));
            }
        }
        for t in &m.seen_vs_unseen {
            out.push_str(&format!(
                "  {} seen - unseen: {:+.3} [{:+.3}, {:+.3}], p = {}\n",
                t.split,
                t.test.difference,
                t.test.lo,
                t.test.hi,
                t.test
                    .p_value
                    .map(|p| format!("{p:.2e}"))
                    .unwrap_or_else(|| "n/a".into())
            ));
        }
    }
    for note in report
        .models
        .iter()
        .filter_map(|m| m.probability_metrics_skipped.as_ref())
    {
        out.push_str(&format!("NOTE {note}\n"));
    }
    for a in &report.alarms {
        out.push_str(&format!("ALARM {}\n", a.message));
    }
    out
}

#[cfg(test)]
mod tests {
    /// A predictions file as a scikit-learn user writes it (pandas index, `y_true` 0/1, `y_score`,
    /// `validation`, sources in their own case): read, threshold chosen on its validation rows, sources kept
    /// as written, and `tables.md` shows this model without the paper's empty rows.
    #[test]
    fn evaluate_reads_a_scikit_learn_style_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mine.csv");
        let mut csv = String::from(",image_id,site,split,y_true,y_score\n");
        let mut k = 0;
        for (split, n) in [("validation", 12), ("test", 20)] {
            for i in 0..n {
                let y = i % 2;
                // Positives score 0.55-0.95, negatives 0.05-0.45 + a little overlap: a threshold inside.
                let s = if y == 1 {
                    0.5 + 0.04 * (i % 10) as f64 + 0.01
                } else {
                    0.1 + 0.04 * (i % 10) as f64
                };
                let site = if i % 3 == 0 {
                    "hospital_A"
                } else {
                    "Hospital_B"
                };
                csv.push_str(&format!("{k},img{k},{site},{split},{y},{s}\n"));
                k += 1;
            }
        }
        std::fs::write(&path, csv).unwrap();
        let out = dir.path().join("eval");
        crate::run([
            "xtask",
            "evaluate",
            "--predictions",
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--resamples",
            "50",
        ])
        .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap())
                .unwrap();
        let m = &json["models"][0];
        assert_eq!(m["model"], "mine");
        assert_eq!(m["threshold"]["from"], "val", "{}", m["threshold"]);
        let keys: Vec<&str> = m["sets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["key"].as_str().unwrap())
            .collect();
        assert!(keys.contains(&"mine/test/source=hospital_A"), "{keys:?}");
        assert!(keys.contains(&"mine/test/source=Hospital_B"), "{keys:?}");
        let test = m["sets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == "mine/test/all")
            .unwrap();
        assert_eq!(test["n"], 20);
        let tables = std::fs::read_to_string(out.join("tables.md")).unwrap();
        assert!(tables.contains("mine"), "{tables}");
        assert!(!tables.contains("(not run)"), "{tables}");

        let help = super::input_help();
        for want in ["y_true", "non-covid", "validation", "Covid-19"] {
            assert!(help.contains(want), "{want} missing from the help: {help}");
        }
    }

    #[test]
    fn evaluate_writes_json_csv_and_plots() {
        let fixtures =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../eval/tests/fixtures");
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("train.csv");
        std::fs::write(
            &manifest,
            "id,source,label,patient,view,path,format,sha256,split\n\
             x1,bimcv,covid,p1,PA,x1.png,png,00,train\n\
             x2,padchest,pneumonia,p2,PA,x2.png,png,00,val\n",
        )
        .unwrap();
        let out = dir.path().join("eval");
        crate::run([
            "xtask",
            "evaluate",
            "--predictions",
            fixtures.join("paired.csv").to_str().unwrap(),
            fixtures.join("ties.csv").to_str().unwrap(),
            "--train-manifest",
            manifest.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--resamples",
            "100",
        ])
        .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap())
                .unwrap();
        let models: Vec<&str> = json["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["model"].as_str().unwrap())
            .collect();
        assert_eq!(models, ["model-a", "model-b", "tied"]);
        // bimcv is seen (train split), padchest is not (val only).
        assert_eq!(
            json["models"][0]["seen_sources"],
            serde_json::json!(["bimcv"])
        );
        let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
        assert!(csv.lines().any(|l| l.starts_with("model-a,test,unseen,")));
        for name in [
            "roc-model-a.svg",
            "reliability-tied.svg",
            "scores-model-b.svg",
        ] {
            let svg = std::fs::read_to_string(out.join("plots").join(name)).unwrap();
            assert!(svg.starts_with("<svg") && svg.contains("<text"), "{name}");
        }

        let err = crate::run([
            "xtask",
            "evaluate",
            "--predictions",
            "/nonexistent/p.csv",
            "--out",
            out.to_str().unwrap(),
        ])
        .unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/p.csv"), "{err:#}");
    }
}
