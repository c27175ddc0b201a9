//! `cargo xtask score` end to end: a tiny manifest (one unreadable row) scored with the small-CNN ONNX spec
//! and with a cue reader; the CSV parses with cxr-eval and holds exactly what `OnnxScorer` gives directly,
//! the bad row lands in `predictions.rejects.csv` (preprocess's `rejects.csv` beside it untouched), an
//! `--out` naming the manifest is refused, and a bad spec path fails with one line naming the file.

use std::path::{Path, PathBuf};

use cxr_core::{Grey8, Scorer};

fn fixtures() -> PathBuf {
    cxr_tests::repo_root().join("crates/onnx/tests/fixtures")
}

fn xtask(args: &[&str]) -> anyhow::Result<()> {
    let mut v = vec!["xtask"];
    v.extend_from_slice(args);
    xtask::run(v)
}

/// `score --model-spec SPEC --manifest M --out OUT` and the extra flags.
fn score(spec: &Path, manifest: &Path, out: &Path, extra: &[&str]) -> anyhow::Result<()> {
    let mut args = vec![
        "score",
        "--model-spec",
        spec.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    xtask(&args)
}

/// Five images of varied sizes (the scorers resize), a bright square in the top-left corner of two.
fn write_manifest(dir: &Path) -> (PathBuf, Vec<Grey8>) {
    let mut csv = String::from("id,source,label,patient,view,path,format,sha256,split,png8\n");
    let mut images = Vec::new();
    for i in 0..5u32 {
        let (w, h) = (180 + i * 20, 224 - i * 10);
        let mut g = Grey8::new(
            w,
            h,
            (0..w * h)
                .map(|k| ((k * (i + 3)) % 97 + 60) as u8)
                .collect(),
        )
        .unwrap();
        if i % 2 == 1 {
            for r in 5..45 {
                for c in 5..45 {
                    g.data[(r * w + c) as usize] = 255;
                }
            }
        }
        let name = format!("img{i}.png");
        image::GrayImage::from_raw(w, h, g.data.clone())
            .unwrap()
            .save(dir.join(&name))
            .unwrap();
        let (label, split, src) = if i % 2 == 1 {
            ("covid", "test", "a")
        } else {
            ("pneumonia", "val", "b")
        };
        csv.push_str(&format!(
            "im{i},{src},{label},p{i},PA,{name},png,,{split},{name}\n"
        ));
        images.push(g);
    }
    std::fs::write(dir.join("broken.png"), b"not a png").unwrap();
    csv.push_str("imbad,a,covid,p9,PA,broken.png,png,,test,broken.png\n");
    let m = dir.join("manifest.csv");
    std::fs::write(&m, csv).unwrap();
    (m, images)
}

#[test]
fn score_writes_evaluable_predictions_equal_to_the_scorer_and_records_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, images) = write_manifest(dir.path());
    for model in ["small_cnn", "cue_outside"] {
        let spec = fixtures().join(format!("{model}.toml"));
        let out = dir.path().join(format!("{model}/predictions.csv"));
        // What preprocess wrote beside it must survive the score.
        let theirs = out.with_file_name("rejects.csv");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        std::fs::write(&theirs, "id,file,reason\npre,x.dcm,unreadable\n").unwrap();
        score(&spec, &manifest, &out, &["--batch-size", "2"]).unwrap();
        let preds = cxr_eval::load_predictions(std::slice::from_ref(&out)).unwrap();
        let direct = cxr_onnx::OnnxScorer::from_spec_file(&spec).unwrap();
        let want = direct.score(&images, false).unwrap().scores;
        assert_eq!(preds.len(), 5);
        for (i, (p, w)) in preds.iter().zip(&want).enumerate() {
            assert_eq!(p.id, format!("im{i}"));
            assert_eq!(p.split.to_string(), if i % 2 == 1 { "test" } else { "val" });
            assert_eq!(p.source.as_str(), if i % 2 == 1 { "a" } else { "b" });
            assert!(
                (p.score - w).abs() < 1e-12,
                "{model} {i}: {} vs {w}",
                p.score
            );
            assert_eq!(p.model, model);
        }
        if model == "cue_outside" {
            // The squares are read: Covid rows score above the others.
            assert!(
                preds
                    .iter()
                    .filter(|p| p.id.ends_with(['1', '3']))
                    .all(|p| p.score > 0.9)
            );
            assert!(
                preds
                    .iter()
                    .filter(|p| !p.id.ends_with(['1', '3']))
                    .all(|p| p.score < 0.8)
            );
        }
        assert_eq!(
            std::fs::read_to_string(&theirs).unwrap(),
            "id,file,reason\npre,x.dcm,unreadable\n"
        );
        let rejects =
            std::fs::read_to_string(out.with_file_name("predictions.rejects.csv")).unwrap();
        let lines: Vec<&str> = rejects.lines().collect();
        assert_eq!(lines.len(), 2, "{rejects}");
        assert!(
            lines[1].starts_with("imbad,") && lines[1].contains("broken.png"),
            "{rejects}"
        );
    }
}

/// A rejected row records its file as the manifest gives it (`../../etc/passwd`, not a mangled
/// `/../etc/passwd`), and every reason names the file it could not read (a device, a system file).
#[test]
fn rejects_record_the_cell_as_given_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = write_manifest(dir.path());
    let up = "../".repeat(40) + "etc/passwd";
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str(&format!("imup,a,covid,p7,PA,x.png,png,,test,{up}\n"));
    text.push_str("imdev,a,covid,p8,PA,x.png,png,,test,/dev/null\n");
    std::fs::write(&manifest, text).unwrap();
    let out = dir.path().join("out/predictions.csv");
    xtask(&[
        "score",
        "--model-spec",
        fixtures().join("cue_outside.toml").to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let rejects = std::fs::read_to_string(out.with_file_name("predictions.rejects.csv")).unwrap();
    // (id, file, reason) of a row; no field here holds a comma or a quote.
    let row = |id: &str| -> Vec<String> {
        let line = rejects
            .lines()
            .find(|l| l.starts_with(&format!("{id},")))
            .unwrap_or_else(|| panic!("{id} not rejected:\n{rejects}"));
        line.splitn(3, ',').map(str::to_string).collect()
    };
    assert_eq!(row("imup")[1], up);
    assert!(row("imup")[2].starts_with("/etc/passwd: "), "{rejects}");
    assert_eq!(row("imdev")[1], "/dev/null");
    assert!(row("imdev")[2].starts_with("/dev/null: "), "{rejects}");
    assert!(row("imbad")[2].contains("broken.png"), "{rejects}");
}

/// `--out` equal to `--manifest` (spelled another way) is refused before anything is written.
#[test]
fn an_output_naming_the_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = write_manifest(dir.path());
    let before = std::fs::read(&manifest).unwrap();
    let spec = fixtures().join("small_cnn.toml");
    let same = dir.path().join(".").join("manifest.csv");
    let e = score(&spec, &manifest, &same, &[]).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("overwrite the input") && msg.contains("manifest.csv"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&manifest).unwrap(), before);
    assert!(!dir.path().join("manifest.rejects.csv").exists());
}

#[test]
fn a_bad_spec_path_fails_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = write_manifest(dir.path());
    let spec = dir.path().join("no_such_spec.toml");
    let e = score(&spec, &manifest, &dir.path().join("p.csv"), &[]).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("no_such_spec.toml") && !msg.contains('\n'),
        "{msg}"
    );
    assert!(!dir.path().join("p.csv").exists());
}

/// Sharded `cxr score`: each part's sidecar records the part's own hash and the model's content (the ONNX
/// file, the spec); the parts merge; a part scored by another model in their place is refused by name.
#[test]
fn score_parts_carry_the_model_hash_and_merge_refuses_another_models_part() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = write_manifest(dir.path());
    let run = |model: &str, out: &Path, k: u32| {
        let spec = fixtures().join(format!("{model}.toml"));
        let shard = format!("{k}/2");
        score(
            &spec,
            &manifest,
            &out.join("predictions.csv"),
            &["--shard", &shard],
        )
        .unwrap();
    };
    let parts = dir.path().join("parts");
    for k in 0..2 {
        run("small_cnn", &parts, k);
    }
    let side: serde_json::Value =
        serde_json::from_slice(&std::fs::read(parts.join("predictions.part-1-of-2.json")).unwrap())
            .unwrap();
    let direct = cxr_onnx::OnnxScorer::from_spec_file(&fixtures().join("small_cnn.toml")).unwrap();
    assert_eq!(side["inputs"]["model"], direct.sha256(), "{side}");
    assert!(side["inputs"]["model_spec"].is_string(), "{side}");
    assert_eq!(side["part_sha256"].as_str().map(str::len), Some(64));
    xtask(&["manifest", "merge", parts.to_str().unwrap()]).unwrap();
    assert!(parts.join("predictions.csv").is_file());

    let other = dir.path().join("other");
    run("cue_outside", &other, 1);
    std::fs::remove_file(parts.join("predictions.csv")).unwrap();
    for name in [
        "predictions.part-1-of-2.csv",
        "predictions.part-1-of-2.json",
    ] {
        std::fs::copy(other.join(name), parts.join(name)).unwrap();
    }
    let e = xtask(&["manifest", "merge", parts.to_str().unwrap()]).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("predictions.part-1-of-2.csv") && msg.contains("another config"),
        "{msg}"
    );
    assert!(!parts.join("predictions.csv").exists());
}

/// `--engine` picks the engine, `predictions.model.json` names it and its version, and the two engines'
/// predictions agree (onnxruntime only where it is found: `skipped: ...` otherwise).
#[test]
fn score_records_the_engine_and_both_engines_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = write_manifest(dir.path());
    let spec = fixtures().join("small_cnn.toml");
    let mut engines = vec!["tract"];
    match cxr_onnx::engine::onnxruntime() {
        Ok(_) => engines.push("onnxruntime"),
        Err(e) => println!("skipped: score --engine onnxruntime ({e})"),
    }
    let mut runs = Vec::new();
    for engine in engines {
        let out = dir.path().join(format!("{engine}/predictions.csv"));
        score(&spec, &manifest, &out, &["--engine", engine]).unwrap();
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.with_file_name("predictions.model.json")).unwrap(),
        )
        .unwrap();
        let recorded = meta["engine"].as_str().unwrap_or_default().to_string();
        assert!(recorded.starts_with(&format!("{engine} ")), "{meta}");
        runs.push(cxr_eval::load_predictions(std::slice::from_ref(&out)).unwrap());
    }
    if let [tract, ort] = &runs[..] {
        assert_eq!(tract.len(), ort.len());
        for (a, b) in tract.iter().zip(ort) {
            let what = format!("{}: {} vs {}", a.id, a.score, b.score);
            assert!(a.id == b.id && (a.score - b.score).abs() < 1e-5, "{what}");
        }
    }
    let out = dir.path().join("x/predictions.csv");
    let e = score(&spec, &manifest, &out, &["--engine", "cuda"]).unwrap_err();
    assert!(
        format!("{e:#}").contains("auto, onnxruntime or tract"),
        "{e:#}"
    );
}
