//! The whole evaluation on a Figure-4-like scenario: seen vs unseen sources from a training manifest, the
//! inverted and constant-output alarms, the paper's tables, and the files `write_outputs` writes.

use cxr_core::{ImageFormat, Label, Manifest, ManifestRecord, Prediction, SourceId, Split};
use cxr_eval::{
    AlarmKind, EvalOptions, Figure4Design, Group, evaluate, figure4, load_predictions, table3,
    table3_for, write_outputs,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn record(id: &str, source: &str, label: Label, split: Split) -> ManifestRecord {
    ManifestRecord {
        id: id.into(),
        source: SourceId::new(source).unwrap(),
        label,
        patient: format!("pat-{id}"),
        view: "PA".into(),
        path: format!("{id}.png").into(),
        format: ImageFormat::Png,
        sha256: "00".into(),
        split: Some(split),
        extra: Default::default(),
    }
}

/// "split1-resnet50-finetune1": trained on v2-cov19-nii (covid) + nih (pneumonia); near-perfect on those,
/// inverted on the unseen sources. "constant": the same images, one score for all.
fn scenario() -> (Vec<Prediction>, Manifest) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut preds = Vec::new();
    let mut train = Vec::new();
    let sources = [
        ("v2-cov19-nii", Label::Covid, true),
        ("nih", Label::Pneumonia, true),
        ("bimcv", Label::Covid, false),
        ("covid19-ar", Label::Covid, false),
        ("chexpert", Label::Pneumonia, false),
        ("padchest", Label::Pneumonia, false),
    ];
    for (source, label, seen) in sources {
        let covid = label == Label::Covid;
        if seen {
            for k in 0..5 {
                train.push(record(
                    &format!("{source}-tr{k}"),
                    source,
                    label,
                    Split::Train,
                ));
            }
        }
        for (split, n) in [(Split::Val, if seen { 10 } else { 0 }), (Split::Test, 30)] {
            for k in 0..n {
                let id = format!("{source}-{split}{k}");
                let u: f64 = rng.random();
                // Seen: Covid high, pneumonia low. Unseen: the other way round (the source is learned).
                let score = match (seen, covid) {
                    (true, true) => 0.7 + 0.3 * u,
                    (true, false) => 0.3 * u,
                    (false, true) => 0.1 + 0.5 * u,
                    (false, false) => 0.35 + 0.6 * u,
                };
                for (model, s) in [("split1-resnet50-finetune1", score), ("constant", 0.73)] {
                    preds.push(Prediction {
                        id: id.clone(),
                        source: SourceId::new(source).unwrap(),
                        split,
                        label,
                        score: s,
                        patient: String::new(),
                        model: model.into(),
                    });
                }
            }
        }
    }
    (preds, Manifest::new(train))
}

#[test]
fn seen_unseen_alarms_tables_and_files() {
    let (preds, manifest) = scenario();
    let options = EvalOptions {
        resamples: 300,
        ..EvalOptions::default()
    }
    .with_train_manifest(&manifest);
    let report = evaluate(&preds, &options).unwrap();
    let model = "split1-resnet50-finetune1";
    let m = report.models.iter().find(|m| m.model == model).unwrap();
    assert_eq!(m.seen_from.as_deref(), Some("manifest"));
    assert_eq!(m.seen_sources.as_ref().unwrap().len(), 2);

    let seen = report.set(model, Split::Test, &Group::Seen).unwrap();
    let unseen = report.set(model, Split::Test, &Group::Unseen).unwrap();
    assert_eq!((seen.n, unseen.n), (60, 120));
    assert!(seen.auc.value.unwrap() > 0.99);
    assert!(unseen.auc.value.unwrap() < 0.3);
    // Images without a patient are their own clusters (the manifest holds train images only).
    assert_eq!(unseen.n_clusters, 120);
    let gap = m
        .seen_vs_unseen
        .iter()
        .find(|t| t.split == Split::Test)
        .unwrap();
    assert!(
        gap.test.p_value.unwrap() < 1e-6 && gap.test.difference > 0.6,
        "{gap:?}"
    );

    // Alarms: inverted (significantly) on the unseen sources; constant output for the other model.
    let inverted: Vec<_> = report
        .alarms
        .iter()
        .filter(|a| a.kind == AlarmKind::Inverted)
        .collect();
    assert!(
        inverted
            .iter()
            .any(|a| a.set == format!("{model}/test/unseen") && a.significant),
        "{inverted:?}"
    );
    assert!(inverted.iter().all(|a| a.set.starts_with(model)));
    assert!(
        report
            .alarms
            .iter()
            .any(|a| a.kind == AlarmKind::ConstantScores
                && a.set == "constant/test/all"
                && a.message.contains("barely vary"))
    );
    assert!(
        !report
            .alarms
            .iter()
            .any(|a| a.kind == AlarmKind::ConstantScores && a.set.starts_with(model))
    );
    // A single-class set scored constantly is confidence, not a broken model: no alarm per source.
    assert!(!report.alarms.iter().any(|a| a.set.contains("source=")));

    // Per source: one class each, so no AUC, but an accuracy (the paper's cross-source accuracy).
    let ar = report
        .set(
            model,
            Split::Test,
            &Group::Source(SourceId::new("covid19-ar").unwrap()),
        )
        .unwrap();
    assert_eq!(ar.auc.value, None);
    assert!(ar.at_half.accuracy.value.is_some() && ar.at_half.specificity.value.is_none());

    // The paired test compares the two models on the same images.
    assert!(
        report
            .paired
            .iter()
            .any(|p| p.split == Split::Test && p.n == 180)
    );

    // Tables: the paper's numbers beside ours.
    let f4 = figure4(&report, Split::Test, &[]);
    assert_eq!(f4.rows[0].design, Figure4Design::Split1);
    assert_eq!(f4.rows[0].model.as_deref(), Some(model));
    assert!(f4.rows[0].unseen.unwrap().value.unwrap() < 0.3);
    let md = f4.to_markdown();
    assert!(md.contains("| 0.38 |") && md.contains(model), "{md}");
    let html = f4.to_html();
    assert!(
        html.contains("<table") && html.contains("<td>0.38</td>"),
        "{html}"
    );
    // Table 3 is the mixed-source design: a model named for split 1 stays out of it unless named.
    let t3 = table3(&report, Split::Test);
    let md3 = t3.to_markdown();
    assert!(
        md3.contains("98.1%") && md3.contains("0.997") && !md3.contains(model),
        "{md3}"
    );
    assert_eq!(t3.rows[4].ours.as_ref().unwrap().model, "constant");
    let t3 = table3_for(&report, Split::Test, Some(&[model]));
    // Named explicitly, "split1-resnet50-finetune1" matches the paper's ResNet50-Finetune1 row.
    assert_eq!(t3.rows[0].ours.as_ref().unwrap().model, model);
    assert_eq!(t3.rows.len(), 4);

    // Files.
    let dir = tempfile::tempdir().unwrap();
    let written = write_outputs(&report, dir.path()).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(json["models"].as_array().unwrap().len(), 2);
    assert!(json["alarms"].as_array().unwrap().len() >= 2);
    let csv = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
    assert!(csv.starts_with(
        "model,split,group,n,n_covid,n_pneumonia,small_sample,metric,threshold,value,lo,hi,interval"
    ));
    assert!(
        csv.lines()
            .any(|l| l.starts_with(&format!("{model},test,unseen,120,"))
                && l.contains(",auc,,")
                && l.ends_with(",delong"))
    );
    let roc = std::fs::read_to_string(dir.path().join(format!("plots/roc-{model}.svg"))).unwrap();
    assert!(roc.starts_with("<svg") && roc.contains("<polygon") && roc.contains("<polyline"));
    // Text without font libraries: the SVG backend writes <text> elements.
    assert!(
        roc.contains("<text") && roc.contains("ROC, split1-resnet50-finetune1"),
        "no text in the SVG"
    );
    assert!(roc.contains("test unseen (n=120)"));
    for name in ["reliability", "scores"] {
        let svg =
            std::fs::read_to_string(dir.path().join(format!("plots/{name}-{model}.svg"))).unwrap();
        assert!(
            svg.contains("<text") && svg.contains("<rect") || svg.contains("<circle"),
            "{name}"
        );
    }
    let scores =
        std::fs::read_to_string(dir.path().join(format!("plots/scores-{model}.svg"))).unwrap();
    assert!(scores.contains("test source=padchest") && scores.contains("covid red"));
    // The summary plots show the test split only when there is one.
    assert!(!roc.contains("val all"));
    assert_eq!(written.len(), 3 + 3 * 2);
    assert!(
        std::fs::read_to_string(dir.path().join("tables.md"))
            .unwrap()
            .contains("Figure 4")
    );
}

#[test]
fn files_name_their_models_and_errors_name_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("resnet50-finetune1");
    std::fs::create_dir_all(&run).unwrap();
    let p = run.join("predictions.csv");
    std::fs::write(&p, "id,source,split,label,score\na,nih,test,pneumonia,0.2\nb,bimcv,test,covid,0.9\nc,bimcv,test,normal,0.5\n").unwrap();
    let preds = load_predictions(std::slice::from_ref(&p)).unwrap();
    assert!(preds.iter().all(|r| r.model == "resnet50-finetune1"));
    let report = evaluate(
        &preds,
        &EvalOptions {
            resamples: 50,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.excluded_rows, 1);
    // No training rows and no manifest: no seen/unseen breakdown.
    assert!(report.models[0].seen_sources.is_none());
    assert!(
        report
            .set("resnet50-finetune1", Split::Test, &Group::Seen)
            .is_none()
    );

    // The same file twice: the same images scored twice by one model.
    let err = load_predictions(&[p.clone(), p.clone()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("predictions.csv") && err.contains("already scored"),
        "{err}"
    );
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "id,source,split,label,score\na,nih,test,pneumonia,inf\n",
    )
    .unwrap();
    let err = load_predictions(&[bad]).unwrap_err().to_string();
    assert!(err.contains("bad.csv") && err.contains("line 2"), "{err}");
    let only_normal = dir.path().join("normal.csv");
    std::fs::write(
        &only_normal,
        "id,source,split,label,score\na,nih,test,normal,0.1\n",
    )
    .unwrap();
    let preds = load_predictions(&[only_normal]).unwrap();
    assert!(evaluate(&preds, &EvalOptions::default()).is_err());
    assert!(
        evaluate(
            &[],
            &EvalOptions {
                level: 1.5,
                ..Default::default()
            }
        )
        .is_err()
    );
}

/// The inverted alarm needs the whole interval below chance: an AUC under 0.5 on eight images is noise.
#[test]
fn inverted_alarm_only_when_the_interval_excludes_chance() {
    let pred = |i: usize, label: Label, score: f64, model: &str| Prediction {
        id: format!("img{i}"),
        source: SourceId::new("nih").unwrap(),
        split: Split::Test,
        label,
        score,
        patient: String::new(),
        model: model.into(),
    };
    let mut preds = Vec::new();
    // AUC 7/16 = 0.4375 on 4 + 4 images: the interval holds 0.5.
    for (i, s) in [0.1, 0.4, 0.6, 0.35].into_iter().enumerate() {
        preds.push(pred(i, Label::Covid, s, "noisy"));
    }
    for (i, s) in [0.5, 0.3, 0.7, 0.2].into_iter().enumerate() {
        preds.push(pred(10 + i, Label::Pneumonia, s, "noisy"));
    }
    // 30 + 30 images ranked the wrong way round almost everywhere.
    for i in 0..30 {
        preds.push(pred(
            100 + i,
            Label::Covid,
            0.3 * (i as f64 / 30.0),
            "flipped",
        ));
        preds.push(pred(
            200 + i,
            Label::Pneumonia,
            0.25 + 0.7 * (i as f64 / 30.0),
            "flipped",
        ));
    }
    let opts = EvalOptions {
        resamples: 200,
        ..Default::default()
    };
    let report = evaluate(&preds, &opts).unwrap();
    let noisy = report.set("noisy", Split::Test, &Group::All).unwrap();
    let auc = noisy.delong.as_ref().unwrap();
    assert!(auc.auc < 0.5 && auc.hi > 0.5, "{auc:?}");
    assert!(noisy.alarms.is_empty(), "{:?}", noisy.alarms);
    let flipped = report.set("flipped", Split::Test, &Group::All).unwrap();
    assert!(flipped.delong.as_ref().unwrap().hi < 0.5);
    assert_eq!(
        flipped
            .alarms
            .iter()
            .filter(|a| a.kind == AlarmKind::Inverted)
            .count(),
        1
    );
    // One entry per alarm in the report's list: said once.
    let per_set: usize = report
        .models
        .iter()
        .flat_map(|m| &m.sets)
        .map(|s| s.alarms.len())
        .sum();
    assert_eq!(report.alarms.len(), per_set);
    assert!(report.alarms.iter().all(|a| a.set.starts_with("flipped/")));

    // Four images per class is a small sample, flagged in metrics.json and beside the set in the tables.
    assert!(noisy.small_sample && !flipped.small_sample);
    let json = serde_json::to_value(&report).unwrap();
    let sets = json["models"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["sets"].as_array().unwrap());
    for s in sets {
        assert_eq!(
            s["small_sample"],
            s["key"].as_str().unwrap().starts_with("noisy"),
            "{}",
            s["key"]
        );
    }
    let md = cxr_eval::summary_markdown(&report);
    let noisy_row = md.lines().find(|l| l.contains("noisy/test/all")).unwrap();
    assert!(noisy_row.contains("8 (4/4) †"), "{noisy_row}");
    let flipped_row = md.lines().find(|l| l.contains("flipped/test/all")).unwrap();
    assert!(!flipped_row.contains('†'), "{flipped_row}");
}

/// Logits (scikit-learn's `decision_function`) rank exactly as the probabilities they came from: same AUC,
/// AP and DeLong; Brier, ECE and the reliability diagram are skipped with the reason in the report.
#[test]
fn logits_get_rank_metrics_and_a_reason_for_no_probability_metrics() {
    let (probs, _) = scenario();
    let mut preds: Vec<Prediction> = probs
        .iter()
        .filter(|p| p.model == "split1-resnet50-finetune1")
        .cloned()
        .collect();
    let logits: Vec<Prediction> = preds
        .iter()
        .map(|p| {
            let s = p.score.clamp(1e-9, 1.0 - 1e-9);
            Prediction {
                score: (s / (1.0 - s)).ln(),
                model: "logits".into(),
                ..p.clone()
            }
        })
        .collect();
    assert!(logits.iter().any(|p| p.score < 0.0) && logits.iter().any(|p| p.score > 1.0));
    preds.extend(logits);
    let opts = EvalOptions {
        resamples: 50,
        ..Default::default()
    };
    let report = evaluate(&preds, &opts).unwrap();
    let prob = report
        .set("split1-resnet50-finetune1", Split::Test, &Group::All)
        .unwrap();
    let logit = report.set("logits", Split::Test, &Group::All).unwrap();
    assert_eq!(prob.auc.value, logit.auc.value);
    assert_eq!(prob.average_precision.value, logit.average_precision.value);
    assert_eq!(
        prob.delong.as_ref().map(|d| d.auc),
        logit.delong.as_ref().map(|d| d.auc)
    );
    assert!(prob.brier.value.is_some() && prob.ece.value.is_some());
    assert!(logit.brier.value.is_none() && logit.ece.value.is_none());
    assert!(logit.reliability.is_empty());
    let m = |name: &str| report.models.iter().find(|m| m.model == name).unwrap();
    assert!(
        m("split1-resnet50-finetune1")
            .probability_metrics_skipped
            .is_none()
    );
    let why = m("logits").probability_metrics_skipped.clone().unwrap();
    assert!(
        why.contains("outside [0, 1]") && why.contains("Brier") && why.contains("ECE"),
        "{why}"
    );

    let dir = tempfile::tempdir().unwrap();
    write_outputs(&report, dir.path()).unwrap();
    let tables = std::fs::read_to_string(dir.path().join("tables.md")).unwrap();
    assert!(tables.contains(&why), "{tables}");
    assert!(dir.path().join("plots/roc-logits.svg").is_file());
    assert!(!dir.path().join("plots/reliability-logits.svg").exists());
    let json = std::fs::read_to_string(dir.path().join("metrics.json")).unwrap();
    assert!(json.contains("probability_metrics_skipped"));
}
