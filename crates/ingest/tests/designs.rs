//! The committed split designs (`data-manifests/splits/*.toml`) parse, split by patient, and the linter
//! flags the paper's split 1 as fully confounded.

use std::path::{Path, PathBuf};

use cxr_core::{ImageFormat, Label, Manifest, ManifestRecord, SourceId, Split};
use cxr_ingest::{SplitDesign, apply_split, lint};

fn designs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-manifests/splits")
}

/// A world of six sources, 60 patients each (every fifth with two images). `paper`: one class per source as in
/// the paper; otherwise every source holds both classes half and half.
fn world(paper: bool) -> Manifest {
    let covid = ["bimcv", "covid19-ar", "v2-cov19-nii"];
    let mut v = Vec::new();
    for src in SourceId::PAPER {
        for p in 0..60 {
            let label = if paper {
                if covid.contains(&src) {
                    Label::Covid
                } else {
                    Label::Pneumonia
                }
            } else if p % 2 == 0 {
                Label::Covid
            } else {
                Label::Pneumonia
            };
            for k in 0..(1 + (p % 5 == 0) as usize) {
                let id = format!("{src}-{p}-{k}");
                v.push(ManifestRecord {
                    id: id.clone(),
                    source: SourceId::new(src).unwrap(),
                    label,
                    patient: format!("pat-{src}-{p}"),
                    view: "PA".into(),
                    path: PathBuf::from(format!("{id}.png")),
                    format: ImageFormat::Png,
                    sha256: format!("{:0>64}", v.len()),
                    split: None,
                    extra: Default::default(),
                });
            }
        }
    }
    Manifest::new(v)
}

fn design(name: &str) -> SplitDesign {
    SplitDesign::read(&designs_dir().join(format!("{name}.toml"))).unwrap()
}

#[test]
fn every_design_parses_and_is_leak_free() {
    for name in ["mixed", "split1", "split2", "finetune"] {
        let d = design(name);
        assert_eq!(d.name, name);
        for paper in [true, false] {
            let (m, _) = apply_split(&world(paper), &d, 0.1).unwrap();
            let report = lint(&m);
            assert!(
                report.patient_overlap.is_empty(),
                "{name}: {:?}",
                report.patient_overlap
            );
            assert!(report.duplicate_hashes.is_empty(), "{name}");
        }
    }
}

#[test]
fn split1_is_flagged_fully_confounded() {
    let (m, report) = apply_split(&world(true), &design("split1"), 1.0).unwrap();
    assert!(report.shortfalls.is_empty());
    let l = lint(&m);
    let v = l.train_cramers_v.unwrap();
    assert!((v - 1.0).abs() < 1e-9, "{v}");
    assert!(l.has_errors());
    assert!(
        l.findings
            .iter()
            .any(|f| f.severity == "error" && f.message.contains("train is fully confounded"))
    );
    let train = l.splits.iter().find(|s| s.split == "train").unwrap();
    let sources: Vec<&String> = train.contingency.keys().collect();
    assert_eq!(sources, ["nih", "v2-cov19-nii"]);
    assert_eq!(
        l.unseen_test_sources,
        ["bimcv", "chexpert", "covid19-ar", "padchest"]
    );
    // 15 % of 60 patients per seen source held out for test, 12 % of the rest for validation.
    assert_eq!(
        m.records
            .iter()
            .filter(|r| r.split == Some(Split::Test) && r.source.as_str() == "nih")
            .map(|r| &r.patient)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        9
    );
    // In a world where every source holds both classes, the same design is not confounded.
    let (m, _) = apply_split(&world(false), &design("split1"), 1.0).unwrap();
    let v = lint(&m).train_cramers_v.unwrap();
    assert!(v < 0.1, "{v}");
}

#[test]
fn mixed_and_finetune_sizes_follow_the_paper() {
    // Scaled by 0.1: test 3 BIMCV, 1 COVID-19-AR, 4 V2, 5 NIH, 25 CheXpert; val 4 + 5; train 43 + 43.
    let (m, report) = apply_split(&world(true), &design("mixed"), 0.1).unwrap();
    assert!(report.shortfalls.is_empty(), "{:?}", report.shortfalls);
    let count = |split: Split, f: &dyn Fn(&ManifestRecord) -> bool| {
        m.records
            .iter()
            .filter(|r| r.split == Some(split) && f(r))
            .count()
    };
    assert_eq!(count(Split::Test, &|r| r.source.as_str() == "chexpert"), 25);
    assert_eq!(count(Split::Test, &|r| r.source.as_str() == "bimcv"), 3);
    assert_eq!(count(Split::Val, &|r| r.label == Label::Covid), 4);
    assert_eq!(count(Split::Val, &|r| r.label == Label::Pneumonia), 5);
    assert_eq!(count(Split::Train, &|r| r.label == Label::Covid), 43);
    assert_eq!(count(Split::Train, &|r| r.label == Label::Pneumonia), 43);
    // Local fine-tuning keeps split 1's training patients and adds 80 + 80 (here 8 + 8) fine-tuning images.
    let (s1, _) = apply_split(&world(true), &design("split1"), 0.1).unwrap();
    let (ft, _) = apply_split(&world(true), &design("finetune"), 0.1).unwrap();
    let train = |m: &Manifest| {
        m.records
            .iter()
            .filter(|r| r.split == Some(Split::Train))
            .map(|r| r.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(train(&s1), train(&ft));
    let fine: Vec<_> = ft
        .records
        .iter()
        .filter(|r| r.split == Some(Split::Finetune))
        .collect();
    assert_eq!(
        fine.iter().filter(|r| r.source.as_str() == "bimcv").count(),
        8
    );
    assert_eq!(
        fine.iter()
            .filter(|r| r.source.as_str() == "chexpert")
            .count(),
        8
    );
}
