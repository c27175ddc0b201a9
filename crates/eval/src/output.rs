//! Reading several predictions files and writing `metrics.json`, `metrics.csv`, `tables.md` and
//! `plots/*.svg`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use cxr_core::{Prediction, fsutil, read_predictions};

use crate::EvalError;
use crate::report::{Estimate, EvalReport, SetReport};
use crate::tables::{figure4, summary_markdown, table3};

/// The model name of a file whose rows have an empty `model`: the file's stem, or its folder's name when
/// the stem is the generic `predictions`.
fn model_name_for(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if stem == "predictions"
        && let Some(dir) = path.parent().and_then(Path::file_name)
    {
        return dir.to_string_lossy().into_owned();
    }
    stem
}

/// Reads predictions files; rows with an empty `model` are named after their file (see
/// [`model_name_for`]). An image scored twice by one model is an error naming the file.
pub fn load_predictions(paths: &[PathBuf]) -> Result<Vec<Prediction>, EvalError> {
    let mut all = Vec::new();
    // 16 bytes per row (a digest of model and id), not two cloned strings.
    let mut seen: HashSet<u128> = HashSet::new();
    for path in paths {
        let default = model_name_for(path);
        for mut p in read_predictions(path)? {
            if p.model.is_empty() {
                p.model = default.clone();
            }
            if !seen.insert(cxr_core::key_digest(&[&p.model, &p.id])) {
                return Err(EvalError::Input {
                    path: path.clone(),
                    message: format!(
                        "image `{}` already scored by model `{}` (in this or an earlier file); name the \
                         models apart with the `model` column",
                        p.id, p.model
                    ),
                });
            }
            all.push(p);
        }
        tracing::debug!(file = %path.display(), "predictions read");
    }
    Ok(all)
}

/// `metrics.csv`: one row per set and metric (long format), with the interval and the method behind it.
pub fn metrics_csv(report: &EvalReport) -> Result<String, EvalError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: &dyn std::fmt::Display| EvalError::Output {
        path: "metrics.csv".into(),
        message: e.to_string(),
    };
    w.write_record([
        "model",
        "split",
        "group",
        "n",
        "n_covid",
        "n_pneumonia",
        "small_sample",
        "metric",
        "threshold",
        "value",
        "lo",
        "hi",
        "interval",
    ])
    .map_err(|e| csv_err(&e))?;
    let num = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_default();
    for m in &report.models {
        for s in &m.sets {
            let mut rows: Vec<(&str, String, Estimate, &str)> = vec![
                ("auc", String::new(), s.auc, "bootstrap"),
                (
                    "average_precision",
                    String::new(),
                    s.average_precision,
                    "bootstrap",
                ),
                ("brier", String::new(), s.brier, "bootstrap"),
                ("ece", String::new(), s.ece, "bootstrap"),
            ];
            if let Some(d) = &s.delong {
                rows.push((
                    "auc",
                    String::new(),
                    Estimate {
                        value: Some(d.auc),
                        lo: Some(d.lo),
                        hi: Some(d.hi),
                        method: crate::report::IntervalMethod::Delong,
                    },
                    "delong",
                ));
            }
            for op in [&s.at_val_threshold, &s.at_half] {
                let t = format!("{}", op.threshold);
                for (name, e) in [
                    ("accuracy", op.accuracy),
                    ("sensitivity", op.sensitivity),
                    ("specificity", op.specificity),
                    ("precision", op.precision),
                    ("f1", op.f1),
                ] {
                    rows.push((name, t.clone(), e, "bootstrap"));
                }
            }
            for (metric, threshold, e, interval) in rows {
                w.write_record(record(s, metric, &threshold, &e, interval, &num))
                    .map_err(|e| csv_err(&e))?;
            }
        }
    }
    let bytes = w.into_inner().map_err(|e| csv_err(&e))?;
    String::from_utf8(bytes).map_err(|e| csv_err(&e))
}

fn record(
    s: &SetReport,
    metric: &str,
    threshold: &str,
    e: &Estimate,
    interval: &str,
    num: &impl Fn(Option<f64>) -> String,
) -> Vec<String> {
    vec![
        s.model.clone(),
        s.split.to_string(),
        s.group.label(),
        s.n.to_string(),
        s.n_covid.to_string(),
        s.n_pneumonia.to_string(),
        s.small_sample.to_string(),
        metric.to_string(),
        threshold.to_string(),
        num(e.value),
        num(e.lo),
        num(e.hi),
        interval.to_string(),
    ]
}

/// Writes `metrics.json`, `metrics.csv`, `tables.md` and `plots/*.svg` under `out_dir` (atomically, file by
/// file) and returns the paths written.
pub fn write_outputs(report: &EvalReport, out_dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let mut written = Vec::new();
    let json_path = out_dir.join("metrics.json");
    let json = serde_json::to_vec_pretty(report).map_err(|e| EvalError::Output {
        path: json_path.clone(),
        message: e.to_string(),
    })?;
    fsutil::write_atomic(&json_path, &json)?;
    written.push(json_path);

    let csv_path = out_dir.join("metrics.csv");
    fsutil::write_atomic(&csv_path, metrics_csv(report)?.as_bytes())?;
    written.push(csv_path);

    // Only the rows holding one of these models: a user's own model is not set among the paper's models
    // left empty ("(not run)"); a table with none of them is left out.
    let split = cxr_core::Split::Test;
    let mut t3 = table3(report, split);
    t3.rows.retain(|r| r.ours.is_some());
    let mut f4 = figure4(report, split, &[]);
    f4.rows.retain(|r| r.model.is_some());
    let mut tables = String::from("# Evaluation\n\n");
    if !t3.rows.is_empty() {
        tables.push_str(&format!("{}\n", t3.to_markdown()));
    }
    if !f4.rows.is_empty() {
        tables.push_str(&format!("{}\n", f4.to_markdown()));
    }
    tables.push_str(&summary_markdown(report));
    let tables_path = out_dir.join("tables.md");
    fsutil::write_atomic(&tables_path, tables.as_bytes())?;
    written.push(tables_path);

    for (name, svg) in crate::plots::render_plots(report)? {
        let p = out_dir.join("plots").join(name);
        fsutil::write_atomic(&p, svg.as_bytes())?;
        written.push(p);
    }
    Ok(written)
}
