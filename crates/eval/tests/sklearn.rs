//! Metrics against scikit-learn (and numpy/scipy where scikit-learn has none) on committed prediction files.
//! `scripts/make_fixtures.py` generated the files and `tests/fixtures/expected.json` once.

use std::path::{Path, PathBuf};

use cxr_core::Split;
use cxr_eval::{EvalOptions, EvalReport, Group, SetReport, evaluate, load_predictions};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

fn run(name: &str) -> EvalReport {
    let preds = load_predictions(&[fixture(name)]).unwrap();
    let options = EvalOptions {
        resamples: 200,
        ..EvalOptions::default()
    };
    evaluate(&preds, &options).unwrap()
}

fn close(what: &str, ours: Option<f64>, theirs: &Value) {
    let t = theirs
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: no expected value"));
    let o = ours.unwrap_or_else(|| panic!("{what}: undefined, expected {t}"));
    assert!((o - t).abs() < 1e-9, "{what}: ours {o}, scikit-learn {t}");
}

fn check_threshold_free(what: &str, s: &SetReport, e: &Value) {
    assert_eq!(s.n as u64, e["n"].as_u64().unwrap(), "{what}: n");
    assert_eq!(
        s.n_covid as u64,
        e["n_pos"].as_u64().unwrap(),
        "{what}: n_pos"
    );
    close(&format!("{what} auc"), s.auc.value, &e["auc"]);
    close(&format!("{what} ap"), s.average_precision.value, &e["ap"]);
    close(&format!("{what} brier"), s.brier.value, &e["brier"]);
    close(&format!("{what} ece"), s.ece.value, &e["ece"]);
    let d = s.delong.as_ref().unwrap();
    close(&format!("{what} delong auc"), Some(d.auc), &e["auc"]);
    close(
        &format!("{what} delong variance"),
        Some(d.variance),
        &e["delong_var"],
    );
    // Every bootstrap interval brackets its point estimate.
    for (name, est) in [
        ("auc", s.auc),
        ("ap", s.average_precision),
        ("brier", s.brier),
    ] {
        let (v, lo, hi) = (est.value.unwrap(), est.lo.unwrap(), est.hi.unwrap());
        assert!(
            lo <= v + 1e-12 && v <= hi + 1e-12,
            "{what} {name}: {lo} {v} {hi}"
        );
    }
}

fn check_confusion(what: &str, op: &cxr_eval::report::OperatingPoint, e: &Value) {
    close(
        &format!("{what} threshold"),
        Some(op.threshold),
        &e["threshold"],
    );
    let c = op.counts;
    let counts = [c.tp, c.fp, c.tn, c.fn_].map(|v| v as u64);
    let exp = ["tp", "fp", "tn", "fn"].map(|k| e[k].as_u64().unwrap());
    assert_eq!(counts, exp, "{what}: tp fp tn fn");
    close(
        &format!("{what} accuracy"),
        op.accuracy.value,
        &e["accuracy"],
    );
    close(
        &format!("{what} sensitivity"),
        op.sensitivity.value,
        &e["sensitivity"],
    );
    close(
        &format!("{what} specificity"),
        op.specificity.value,
        &e["specificity"],
    );
    close(
        &format!("{what} precision"),
        op.precision.value,
        &e["precision"],
    );
    close(&format!("{what} f1"), op.f1.value, &e["f1"]);
}

#[test]
fn tied_scores_with_val_threshold() {
    let exp = &expected()["ties.csv"];
    let report = run("ties.csv");
    let m = &report.models[0];
    assert_eq!(m.model, "tied");
    assert_eq!(m.threshold.from, "val");
    close(
        "val threshold",
        Some(m.threshold.value),
        &exp["val_threshold"],
    );
    let test = report.set("tied", Split::Test, &Group::All).unwrap();
    check_threshold_free("ties test", test, &exp["test"]);
    check_threshold_free(
        "ties val",
        report.set("tied", Split::Val, &Group::All).unwrap(),
        &exp["val"],
    );
    check_confusion("ties test @0.5", &test.at_half, &exp["test_at_half"]);
    check_confusion(
        "ties test @val",
        &test.at_val_threshold,
        &exp["test_at_val_threshold"],
    );
}

#[test]
fn two_models_and_the_paired_delong_test() {
    let exp = &expected()["paired.csv"];
    let report = run("paired.csv");
    assert_eq!(report.models.len(), 2);
    for model in ["model-a", "model-b"] {
        let e = &exp[model];
        let m = report.models.iter().find(|m| m.model == model).unwrap();
        close(
            &format!("{model} val threshold"),
            Some(m.threshold.value),
            &e["val_threshold"],
        );
        let test = report.set(model, Split::Test, &Group::All).unwrap();
        check_threshold_free(model, test, &e["test"]);
        check_confusion(&format!("{model} @0.5"), &test.at_half, &e["test_at_half"]);
        check_confusion(
            &format!("{model} @val"),
            &test.at_val_threshold,
            &e["test_at_val_threshold"],
        );
    }
    let t = &exp["paired_test"];
    let p = report
        .paired
        .iter()
        .find(|p| p.split == Split::Test)
        .unwrap();
    assert_eq!(
        (p.model_a.as_str(), p.model_b.as_str(), p.n),
        ("model-a", "model-b", 120)
    );
    close("paired var a", Some(p.test.var_a), &t["var1"]);
    close("paired var b", Some(p.test.var_b), &t["var2"]);
    close("paired cov", Some(p.test.covariance), &t["cov"]);
    close("paired z", p.test.z, &t["z"]);
    close("paired p", p.test.p_value, &t["p"]);
}

#[test]
fn tiny_hand_made_set() {
    let exp = &expected()["tiny.csv"];
    let report = run("tiny.csv");
    let test = report.set("tiny", Split::Test, &Group::All).unwrap();
    check_threshold_free("tiny", test, &exp["test"]);
    check_confusion("tiny @0.5", &test.at_half, &exp["test_at_half"]);
    // No validation split: the operating threshold falls back to 0.5.
    assert_eq!(report.models[0].threshold.from, "default");
    assert_eq!(test.at_val_threshold.threshold, 0.5);
}
