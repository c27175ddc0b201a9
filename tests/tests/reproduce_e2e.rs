//! End-to-end: `cargo xtask reproduce` on a tiny synthetic world shows the paper's pattern, writes a
//! self-contained report, and a second run with nothing changed reuses every stage.

use std::path::Path;

fn auc(v: &serde_json::Value) -> Option<f64> {
    v.as_array()?.first()?.as_f64()
}

fn run_tiny(out: &Path) {
    let out = out.to_str().unwrap();
    xtask::run([
        "xtask",
        "reproduce",
        "--out",
        out,
        "--per-source",
        "24",
        "--world-size",
        "128",
        "--image-size",
        "64",
        "--resamples",
        "200",
        "--experiment",
        "figure4-split1",
        "--no-control",
    ])
    .expect("reproduce on a tiny synthetic world");
}

#[test]
fn reproduce_shows_the_collapse_on_unseen_sources_and_resumes_for_free() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rep");
    run_tiny(&out);

    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let rows = results["seen_unseen_auc"].as_array().expect("seen_unseen_auc");
    let split1 = rows
        .iter()
        .find(|r| r["experiment"] == "figure4-split1")
        .expect("figure4-split1 in results.json");
    let (seen, unseen) = (auc(&split1["seen"]).unwrap(), auc(&split1["unseen"]).unwrap());
    // The paper world: each source holds one class, so the source gives the label away on seen sources only.
    assert!(seen >= 0.9, "seen-source AUC {seen}");
    assert!(seen - unseen >= 0.2, "seen {seen} should clearly beat unseen {unseen}");

    // The audit flags the shortcut: the training split is fully confounded.
    let audit = &results["experiments"][0]["audit"];
    assert_eq!(audit["verdicts"][0]["verdict"], "shortcut", "{audit}");

    // The report is one self-contained file and shows what results.json holds.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("random initialisation — no ImageNet weights supplied"));
    assert!(html.contains(&format!("{seen:.3}")), "report lacks the seen AUC {seen:.3}");
    assert!(!html.contains("<script") && !html.contains("https://"));

    // Nothing changed: every stage is reused and the numbers are identical.
    let before = std::fs::read(out.join("results.json")).unwrap();
    let t = std::time::Instant::now();
    run_tiny(&out);
    let after: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let before: serde_json::Value = serde_json::from_slice(&before).unwrap();
    assert_eq!(before["seen_unseen_auc"], after["seen_unseen_auc"]);
    // Not a speed goal (those live in benchmarks): a cache miss would retrain the UNet for about a minute.
    println!("second run: {:.1} s", t.elapsed().as_secs_f64());
}
