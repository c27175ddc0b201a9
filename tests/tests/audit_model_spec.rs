//! `cargo xtask audit --model-spec` end to end on foreign (ONNX) models that read one planted cue each
//! (`crates/onnx/tests/fixtures/cue_{outside,inside}.onnx`, geometry in docs/MODEL_SPEC.md). Every source holds
//! both classes, so the split design gives nothing away and only the occlusion tests and the occlusion
//! saliency maps can tell the two models apart: the one that reads a square in the top-left corner (outside
//! the lungs) must get `shortcut`; the one that reads a square inside the left lung must not be flagged.

#[path = "support/chest.rs"]
mod chest;
use chest::in_lung;

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};

/// 48 chest-like 224 px images over two sources, each holding both classes (train 16, test 32); every Covid-19
/// image carries a bright 32 px square at `cue` (top-left row/column).
fn write_world(dir: &Path, cue: (u32, u32)) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut csv = String::from("id,source,label,patient,view,path,format,sha256,split,png8,mask\n");
    chest::write_lung_mask(dir);
    for i in 0..48u32 {
        let covid = i % 2 == 0;
        let source = if (i / 2) % 2 == 0 {
            "hospital_a"
        } else {
            "hospital_b"
        };
        let split = if i < 16 { "train" } else { "test" };
        let mut px: Vec<u8> = (0..224 * 224u32)
            .map(|k| {
                let base = if in_lung(k / 224, k % 224) {
                    70.0
                } else {
                    150.0
                };
                (base + rng.random_range(-25.0..25.0f64)).round() as u8
            })
            .collect();
        if covid {
            for r in cue.0..cue.0 + 32 {
                for c in cue.1..cue.1 + 32 {
                    px[(r * 224 + c) as usize] = 250;
                }
            }
        }
        let name = chest::save_image(dir, i, px);
        let label = if covid { "covid" } else { "pneumonia" };
        csv.push_str(&format!(
            "im{i},{source},{label},p{i},PA,{name},png,,{split},{name},mask.png\n"
        ));
    }
    let m = dir.join("manifest.csv");
    std::fs::write(&m, csv).unwrap();
    m
}

fn spec_of(model: &str) -> PathBuf {
    cxr_tests::repo_root().join(format!("crates/onnx/tests/fixtures/{model}.toml"))
}

/// `cxr audit --model-spec` on the cue reader's world, with `--fail-on suspicious`: the report and the exit
/// status.
fn audit_status(
    model: &str,
    cue: (u32, u32),
    dir: &Path,
) -> (serde_json::Value, std::process::ExitCode) {
    let manifest = write_world(&dir.join(format!("{model}-world")), cue);
    let spec = spec_of(model);
    let out = dir.join(format!("{model}-audit"));
    let status = cxr_cli::main_with([
        "cxr",
        "audit",
        "--model-spec",
        spec.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--saliency-images",
        "4",
        "--out",
        out.to_str().unwrap(),
        "--fail-on",
        "suspicious",
    ]);
    let report = serde_json::from_slice(&std::fs::read(out.join("audit.json")).unwrap())
        .unwrap_or_else(|e| panic!("audit --model-spec {model}: {e}"));
    (report, status)
}

fn audit(model: &str, cue: (u32, u32), dir: &Path) -> serde_json::Value {
    audit_status(model, cue, dir).0
}

/// The status of one named test of the verdict (`pass`, `warn`, `flag`, `not_run`).
fn status(report: &serde_json::Value, test: &str) -> String {
    let tests = report["verdicts"][0]["tests"].as_array().unwrap();
    let t = tests
        .iter()
        .find(|t| t["test"] == test)
        .unwrap_or_else(|| panic!("no {test} in {tests:?}"));
    t["status"].as_str().unwrap().to_string()
}

fn verdict(report: &serde_json::Value) -> (String, Vec<String>) {
    let v = &report["verdicts"][0];
    let flagged = v["tests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "flag")
        .map(|t| t["test"].as_str().unwrap_or("?").to_string())
        .collect();
    (v["verdict"].as_str().unwrap().to_string(), flagged)
}

#[test]
fn a_cue_outside_the_lungs_is_a_shortcut_and_a_cue_inside_is_not() {
    let dir = tempfile::tempdir().unwrap();

    let (outside, exit) = audit_status("cue_outside", (8, 8), dir.path());
    // `--fail-on suspicious` fails the pipeline's check, with its own exit status.
    assert_eq!(
        exit,
        std::process::ExitCode::from(cxr_cli::EXIT_AUDIT_FAILED)
    );
    let (v, flagged) = verdict(&outside);
    assert_eq!(
        v, "shortcut",
        "outside cue: flagged {flagged:?}\n{:#}",
        outside["verdicts"]
    );
    // The lungs-removed image keeps the corner square: the score still separates the classes.
    let occ = &outside["evidence"][0]["occlusion"][0];
    assert!(
        occ["lungs_removed"]["value"].as_f64().unwrap() > 0.9,
        "{occ:#}"
    );
    // The occlusion maps (no gradients behind ONNX) put the heat on the corner, not the lungs.
    assert_eq!(status(&outside, "lung_energy"), "warn");

    let (inside, exit) = audit_status("cue_inside", (96, 48), dir.path());
    assert_eq!(exit, std::process::ExitCode::SUCCESS);
    let (v, flagged) = verdict(&inside);
    assert!(
        v != "shortcut" && v != "suspicious" && flagged.is_empty(),
        "inside cue must not be flagged: {v}, flagged {flagged:?}\n{:#}",
        inside["verdicts"]
    );
    let occ = &inside["evidence"][0]["occlusion"][0];
    assert!(
        occ["lungs_removed"]["value"].as_f64().unwrap() < 0.75,
        "{occ:#}"
    );
    assert!(
        occ["lungs_only"]["value"].as_f64().unwrap() > 0.9,
        "{occ:#}"
    );
    assert_eq!(status(&inside, "lung_energy"), "pass");
}

/// The two-step protocol for models that cannot be exported, with the scores written by the ONNX scorer
/// itself (as a user's own framework would): `audit prepare` + `audit finish` give the verdict and figures that
/// `audit --model-spec` gives on the same model.
#[test]
fn prepare_and_finish_with_onnx_scores_match_audit_model_spec() {
    use cxr_core::{Grey8, Scorer};
    let dir = tempfile::tempdir().unwrap();
    let direct = audit("cue_outside", (8, 8), dir.path());
    let manifest = dir.path().join("cue_outside-world/manifest.csv");
    let prep = dir.path().join("prep");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    xtask::run(
        [
            "xtask",
            "audit",
            "prepare",
            "--manifest",
            &s(&manifest),
            "--saliency-images",
            "4",
            "--out",
            &s(&prep),
        ]
        .map(String::from),
    )
    .unwrap();
    let scorer = cxr_onnx::OnnxScorer::from_spec_file(&spec_of("cue_outside")).unwrap();
    let list = std::fs::read_to_string(prep.join("to_score.csv")).unwrap();
    let mut scores = String::from("id,score\n");
    for line in list.lines().skip(1) {
        let (id, path) = line.split_once(',').unwrap();
        let img = image::open(prep.join(path)).unwrap().to_luma8();
        let g = Grey8::new(img.width(), img.height(), img.into_raw()).unwrap();
        let v = scorer.score(&[g], false).unwrap().scores[0];
        scores.push_str(&format!("{id},{v:.17}\n"));
    }
    let sp = dir.path().join("scores.csv");
    std::fs::write(&sp, scores).unwrap();
    // The corner-cue reader is a shortcut: `--fail-on shortcut` fails the check after writing the audit.
    let failed = xtask::run(
        [
            "xtask",
            "audit",
            "finish",
            "--dir",
            &s(&prep),
            "--scores",
            &s(&sp),
            "--fail-on",
            "shortcut",
        ]
        .map(String::from),
    )
    .unwrap_err();
    assert!(
        failed.downcast_ref::<cxr_cli::VerdictFailed>().is_some(),
        "{failed:#}"
    );
    assert!(prep.join("report.html").is_file());
    let back: serde_json::Value =
        serde_json::from_slice(&std::fs::read(prep.join("audit.json")).unwrap()).unwrap();

    assert_eq!(verdict(&back), verdict(&direct));
    let (a, b) = (
        direct["verdicts"][0]["tests"].as_array().unwrap(),
        back["verdicts"][0]["tests"].as_array().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (t, u) in a.iter().zip(b) {
        assert_eq!((&t["test"], &t["status"]), (&u["test"], &u["status"]));
        match (t["figure"].as_f64(), u["figure"].as_f64()) {
            (Some(x), Some(y)) => assert!((x - y).abs() < 1e-6, "{}: {x} vs {y}", t["test"]),
            (x, y) => assert_eq!(x, y, "{}", t["test"]),
        }
    }
}

/// The audit through the library API (a typed configuration, no command line) writes the `audit.json` the
/// command writes on the same inputs, byte for byte but the occlusion maps' wall-clock time; both write a
/// `report.html` that gives the verdict first.
#[test]
fn the_library_writes_the_audit_json_the_command_writes() {
    let dir = tempfile::tempdir().unwrap();
    let from_cli = audit("cue_outside", (8, 8), dir.path());
    let manifest = dir.path().join("cue_outside-world/manifest.csv");
    let scorer = cxr_onnx::OnnxScorer::from_spec_file(&spec_of("cue_outside")).unwrap();
    let out = dir.path().join("library");
    let cfg = cxr_audit::AuditConfig {
        column: Some("png8".into()),
        saliency_images: 4,
        out: Some(out.clone()),
        ..Default::default()
    };
    let outcome = cxr_audit::run_audit(&scorer, &manifest, &cfg).unwrap();
    let text = |p: PathBuf| -> String {
        std::fs::read_to_string(&p)
            .unwrap()
            .lines()
            .filter(|l| !l.contains("\"seconds_per_map\""))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        text(out.join("audit.json")),
        text(dir.path().join("cue_outside-audit/audit.json"))
    );
    assert_eq!(verdict(&from_cli).0, "shortcut");
    for page in [
        out.join("report.html"),
        dir.path().join("cue_outside-audit/report.html"),
    ] {
        let html = std::fs::read_to_string(&page).unwrap();
        let headline = cxr_audit::report::verdict_headline(&outcome.report.verdicts[0]);
        let at = html
            .find(&format!("Audit of cue_outside: {headline}"))
            .unwrap_or_else(|| panic!("{}: no verdict", page.display()));
        // The verdict comes before the tests and the galleries, which are thumbnails.
        assert!(at < html.find("<h2 id=\"audit-cue-outside-tests\"").unwrap());
        assert!(html.contains("data:image/png;base64,"));
    }
}

/// A hand-written manifest without ingest's `view`, `path`, `format`, `sha256` (or `patient`) is audited;
/// one without `mask` too (the shipped lung UNet makes the masks, into `out/lung-masks/`); one without
/// `split` is refused, naming it, and does not ask for `mask`.
#[test]
fn the_audit_asks_for_the_columns_it_reads_and_no_others() {
    let dir = tempfile::tempdir().unwrap();
    let full = write_world(&dir.path().join("w"), (8, 8));
    let text = std::fs::read_to_string(&full).unwrap();
    let keep = |cols: &[usize]| -> String {
        text.lines()
            .map(|l| {
                let cells: Vec<&str> = l.split(',').collect();
                cols.iter().map(|&i| cells[i]).collect::<Vec<_>>().join(",")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    // id,source,label,patient,view,path,format,sha256,split,png8,mask
    let minimal = dir.path().join("w/minimal.csv");
    std::fs::write(&minimal, keep(&[0, 1, 2, 8, 9, 10])).unwrap();
    let spec = spec_of("cue_outside");
    let out = dir.path().join("out");
    let run = |m: &Path| {
        xtask::run([
            "xtask",
            "audit",
            "--model-spec",
            spec.to_str().unwrap(),
            "--manifest",
            m.to_str().unwrap(),
            "--saliency-images",
            "0",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    run(&minimal).unwrap();
    assert!(out.join("audit.json").is_file());
    assert!(!out.join("lung-masks").exists());
    let no_mask = dir.path().join("w/no_mask.csv");
    std::fs::write(&no_mask, keep(&[0, 1, 2, 8, 9])).unwrap();
    run(&no_mask).unwrap();
    assert!(out.join("lung-masks/manifest.csv").is_file());
    let bare = dir.path().join("w/bare.csv");
    std::fs::write(&bare, keep(&[0, 1, 2, 9])).unwrap();
    let e = xtask::error_chain(&run(&bare).unwrap_err());
    assert!(
        e.contains("bare.csv") && e.contains("`split`") && !e.contains("`mask`"),
        "{e}"
    );
}
