//! End-to-end: `cargo xtask reproduce` on a tiny synthetic world shows the paper's pattern, flags the shortcut
//! in the confounded world and not in the clean-world control, writes a self-contained report, and a second run
//! with nothing changed reuses every stage.

use std::path::Path;

#[path = "support/json_schema.rs"]
mod json_schema;

fn auc(v: &serde_json::Value) -> Option<f64> {
    assert_eq!(v["method"], "delong", "{v}");
    v["value"].as_f64()
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
    // results.json follows its documented schema: numbers as numbers, no keys with spaces, labelled
    // intervals (docs/RESULTS.md).
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/results.schema.json");
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&schema_path).unwrap()).unwrap();
    let errors = json_schema::validate(&schema, &results);
    assert!(
        errors.is_empty(),
        "results.json against the schema:\n{}",
        errors.join("\n")
    );
    let mut problems = Vec::new();
    json_schema::style_problems(&results, "$", &mut problems);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(results["run"]["wall_time_s"].as_f64().unwrap() > 0.0);
    assert_eq!(results["run"]["seed"], 2021);

    // The operating threshold comes from the validation rows that training now writes beside the test rows.
    let models = results["experiments"][0]["eval"]["models"]
        .as_array()
        .unwrap();
    for m in models {
        assert_eq!(
            m["threshold"]["from"], "val",
            "{}: {}",
            m["model"], m["threshold"]
        );
    }
    // The test sets hold the test rows only; the validation rows form sets of their own.
    let exp0 = &results["experiments"][0];
    let set = |key: &str| {
        models[0]["sets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"].as_str().unwrap().ends_with(key))
            .unwrap_or_else(|| panic!("no set {key}"))
            .clone()
    };
    assert_eq!(set("/test/all")["n"], exp0["split_counts"]["test"]);
    assert_eq!(set("/val/all")["n"], exp0["split_counts"]["val"]);
    // The fallback to 0.5 is logged only for a model whose validation rows lack a class (in this tiny world
    // that can happen in the clean-world control, whose 12 % validation share is a handful of images).
    let defaults = results["control_clean_world"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["eval"]["models"].as_array().unwrap())
        .filter(|m| m["threshold"]["from"] == "default")
        .count();
    let log = std::fs::read_to_string(out.join("reproduce.log")).unwrap();
    assert_eq!(
        log.matches("no validation images of both classes").count(),
        defaults,
        "{log}"
    );

    let rows = results["seen_unseen_auc"]
        .as_array()
        .expect("seen_unseen_auc");
    let split1 = rows
        .iter()
        .find(|r| r["experiment"] == "figure4-split1")
        .expect("figure4-split1 in results.json");
    let (seen, unseen) = (
        auc(&split1["seen"]).unwrap(),
        auc(&split1["unseen"]).unwrap(),
    );
    // The paper world: each source holds one class, so the source gives the label away on seen sources only.
    assert!(seen >= 0.9, "seen-source AUC {seen}");
    assert!(
        seen - unseen >= 0.2,
        "seen {seen} should clearly beat unseen {unseen}"
    );

    // The audit flags the shortcut for a behavioural reason; the fully confounded training split is the data
    // risk, reported apart and never on its own the reason.
    let audit = &results["experiments"][0]["audit"];
    let paper_verdict = &audit["verdicts"][0];
    assert_eq!(paper_verdict["verdict"], "shortcut", "{audit}");
    assert_eq!(
        paper_verdict["data_risk"]["risk"], "high",
        "{paper_verdict}"
    );
    let decided: Vec<&serde_json::Value> = paper_verdict["decided_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| {
            paper_verdict["tests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| &t["test"] == name)
                .unwrap()
        })
        .collect();
    assert!(!decided.is_empty(), "{paper_verdict}");
    for t in decided {
        assert_eq!(
            (&t["role"], &t["status"]),
            (&"behaviour".into(), &"flag".into()),
            "{t}"
        );
    }

    // The clean-world control: same split, same pipeline, but every source holds both classes. The sources are
    // as identifiable as before; the label no longer follows them, and the audit must not call it a shortcut.
    let control = results["control_clean_world"]
        .as_array()
        .expect("control_clean_world");
    let control_split1 = control
        .iter()
        .find(|e| e["spec"]["name"] == "figure4-split1")
        .expect("the control ran figure4-split1");
    let verdict = &control_split1["audit"]["verdicts"][0];
    let v = control_split1["train_cramers_v"].as_f64().unwrap();
    assert!(v < 0.5, "clean-world training split: Cramér's V {v}");
    // No test may flag it. (The occlusion test runs on a handful of test images here; its permutation p-value,
    // not DeLong's CI, is what keeps a chance separation of six images from flagging.)
    for t in verdict["tests"].as_array().unwrap() {
        assert_ne!(t["status"], "flag", "clean world flagged by {t}");
    }
    // No false alarm either: the Grad-CAM lung energy rule abstains on a map too coarse to resolve a lung
    // (2x2 cells at this 64 px input) instead of warning, so the clean control is not even `suspicious`.
    assert_eq!(verdict["verdict"], "no_shortcut_found", "{verdict}");
    let energy = verdict["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["test"] == "lung_energy")
        .expect("a lung_energy test");
    assert_eq!(energy["status"], "not_run", "{energy}");

    // The counterfactual confounder test: the confounded model follows at least one planted confounder (the
    // in-lung textures and the grey curve, in practice: lung crops remove the corner markers and text), the
    // clean-world one none.
    let followed = |e: &serde_json::Value| -> Vec<String> {
        e["confounders"]["confounders"]
            .as_array()
            .expect("confounders.json in results.json")
            .iter()
            .filter(|k| k["flagged"] == true)
            .map(|k| k["kind"].as_str().unwrap().to_string())
            .collect()
    };
    let paper_followed = followed(&results["experiments"][0]);
    assert!(
        !paper_followed.is_empty(),
        "{}",
        results["experiments"][0]["confounders"]
    );
    assert_eq!(
        followed(control_split1),
        Vec::<String>::new(),
        "{}",
        control_split1["confounders"]
    );

    // The report is one self-contained file and shows what results.json holds.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("random initialisation — no ImageNet weights supplied"));
    assert!(
        html.contains(&format!("{seen:.3}")),
        "report lacks the seen AUC {seen:.3}"
    );
    assert!(!html.contains("<script") && !html.contains("https://"));
    // The first screen says what was found, the paper's figure beside ours; then the details.
    let found = html.find("What was found").expect("a findings list");
    assert!(found < html.find("What was run").unwrap());
    assert!(
        html.contains("the paper reports test AUC 1.00 on seen and 0.38 on unseen sources"),
        "finding sentence"
    );
    assert!(html.contains("Audit: shortcut found (raised by the "));
    // Human labels, not identifiers; verdicts in words; galleries as linked thumbnails; a small page.
    for raw in [
        "probe_auc",
        "cramers_v",
        "lungs_removed_p",
        "NoShortcutFound",
        "Shortcut\n",
    ] {
        assert!(!html.contains(raw), "report shows `{raw}`");
    }
    assert!(html.contains(">full size</a>"), "galleries are linked");
    assert!(
        html.len() < 3 * 1024 * 1024,
        "report is {} bytes",
        html.len()
    );

    // Privacy: the planted fake patient names of the synthetic COVID-19-AR DICOMs (`SYNTH^PATIENT^<id>`) reach no
    // output, and no patient id of any dataset reaches a report, results.json or an output file name. (Manifests
    // keep the input files' paths, whose folders are the datasets' own public de-identified ids.)
    let worlds = [
        out.join("data-world-paper/world"),
        out.join("data-world-clean/world"),
    ];
    let mut ids: Vec<String> = Vec::new();
    for world in &worlds {
        let truth = std::fs::read_to_string(world.join("truth.csv")).unwrap();
        ids.extend(
            truth
                .lines()
                .skip(1)
                .filter_map(|l| l.split(',').nth(5).map(str::to_string))
                .filter(|p| p.len() >= 6),
        );
    }
    ids.sort();
    ids.dedup();
    assert!(
        ids.iter().any(|p| p.starts_with("COVID-19-AR-")),
        "truth.csv lists the COVID-19-AR patient ids"
    );
    let mut checked = 0;
    let mut stack = vec![out.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if worlds.iter().any(|w| path.starts_with(w)) {
                continue; // the input datasets themselves
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            for id in &ids {
                assert!(
                    !name.contains(id.as_str()),
                    "an output file name holds patient id {id}: {}",
                    path.display()
                );
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let ext = path
                .extension()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !matches!(
                ext.as_str(),
                "csv" | "json" | "html" | "md" | "txt" | "toml" | "log"
            ) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                !text.contains("SYNTH^PATIENT") && !text.contains("SYNTH PATIENT"),
                "a patient name in {}",
                path.display()
            );
            if matches!(
                name.as_str(),
                "report.html"
                    | "results.json"
                    | "metrics.json"
                    | "metrics.csv"
                    | "audit.json"
                    | "reproduce.log"
            ) {
                for id in &ids {
                    assert!(
                        !text.contains(id.as_str()),
                        "patient id {id} in {}",
                        path.display()
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} output files checked");
    // The log of the run is among the checked outputs (the run logs at info level).
    // The test sets hold the test rows only; the validation rows form sets of their own.
    let exp0 = &results["experiments"][0];
    let set = |key: &str| {
        models[0]["sets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"].as_str().unwrap().ends_with(key))
            .unwrap_or_else(|| panic!("no set {key}"))
            .clone()
    };
    assert_eq!(set("/test/all")["n"], exp0["split_counts"]["test"]);
    assert_eq!(set("/val/all")["n"], exp0["split_counts"]["val"]);
    let log = std::fs::read_to_string(out.join("reproduce.log")).unwrap();
    assert!(log.contains("figure4-split1"), "reproduce.log: {log:.300}");
    // Progress counts what runs: split 1 and its clean-world control.
    assert!(
        log.contains("experiment 1 of 2: figure4-split1"),
        "{log:.2000}"
    );
    assert!(
        log.contains("experiment 2 of 2: figure4-split1"),
        "{log:.2000}"
    );
    assert!(log.contains("epoch 1/"), "no epoch k/N line");
    assert!(!log.contains('\u{1b}'), "colour codes in reproduce.log");

    // Nothing changed: every stage is reused and the numbers are identical.
    let before = std::fs::read(out.join("results.json")).unwrap();
    let t = std::time::Instant::now();
    run_tiny(&out);
    let after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let before: serde_json::Value = serde_json::from_slice(&before).unwrap();
    assert_eq!(before["seen_unseen_auc"], after["seen_unseen_auc"]);
    // Not a speed goal (those live in benchmarks): a cache miss would retrain the UNet for about a minute.
    println!("second run: {:.1} s", t.elapsed().as_secs_f64());
}
