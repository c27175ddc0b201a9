//! The Cohen adapter on the real collection in `../shared/data/cohen-covid-chestxray`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use cxr_core::Label;
use cxr_core::privacy::Pseudonymizer;
use cxr_ingest::adapters::Cohen;
use cxr_ingest::{read_image, scan};

mod common;

fn cohen_root() -> Option<PathBuf> {
    let dir = common::shared_data()?.join("cohen-covid-chestxray");
    dir.is_dir().then_some(dir)
}

#[test]
fn cohen_selection_matches_the_published_counts() {
    let Some(root) = cohen_root() else {
        println!("skipped: shared data absent");
        return;
    };
    let out = scan(&Cohen, &root, &Pseudonymizer::new(b"test")).unwrap();
    let m = &out.manifest;
    // 542 frontal X-ray rows in metadata.csv; 11 of them name a file the upstream snapshot lacks.
    assert_eq!(out.missing.len(), 11, "{:?}", out.missing);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(m.records.len(), 531);
    let mut by_label: BTreeMap<Label, usize> = BTreeMap::new();
    for r in &m.records {
        *by_label.entry(r.label).or_default() += 1;
    }
    assert_eq!(by_label[&Label::Covid], 427);
    assert_eq!(by_label[&Label::Pneumonia], 85);
    assert_eq!(by_label[&Label::Normal], 19);
    // 103 locations once slugged (105 raw strings: blank and two spelling variants merge).
    let sources: BTreeSet<_> = m
        .records
        .iter()
        .map(|r| r.source.as_str().to_string())
        .collect();
    assert_eq!(sources.len(), 103, "{sources:?}");
    assert!(sources.contains("cohen:unknown"));
    let hannover: Vec<_> = m
        .records
        .iter()
        .filter(|r| r.source.as_str() == "cohen:hannover-medical-school-hannover-germany")
        .collect();
    assert_eq!(
        hannover.iter().filter(|r| r.label == Label::Covid).count(),
        84
    );
    assert_eq!(
        hannover.iter().filter(|r| r.label == Label::Normal).count(),
        8
    );
    // 311 patients, pseudonymised; 527 distinct files (4 are listed twice), of which two hold identical
    // bytes under different names: 526 distinct contents (what the linter's duplicate check is for).
    let patients: BTreeSet<_> = m.records.iter().map(|r| r.patient.clone()).collect();
    assert_eq!(patients.len(), 311);
    assert!(
        patients
            .iter()
            .all(|p| p.starts_with("pat-") && p.len() == 20)
    );
    let hashes: BTreeSet<_> = m.records.iter().map(|r| r.sha256.clone()).collect();
    let paths: BTreeSet<_> = m.records.iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths.len(), 527);
    assert_eq!(hashes.len(), 526);
    // Ids are unique and file-name safe; views are the three frontal ones.
    let ids: BTreeSet<_> = m.records.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 531);
    assert!(
        m.records
            .iter()
            .all(|r| ["PA", "AP", "AP SUPINE"].contains(&r.view.as_str()))
    );
    // Re-encoded upstream: a `.jpg` name often holds PNG bytes; the format column says what is inside.
    let png_named_jpg = m
        .records
        .iter()
        .filter(|r| {
            r.path
                .extension()
                .is_some_and(|e| e == "jpg" || e == "jpeg")
        })
        .filter(|r| r.format == cxr_core::ImageFormat::Png)
        .count();
    assert!(png_named_jpg > 0);
    // Every selected image decodes.
    for r in &m.records {
        let img = read_image(&r.path).unwrap_or_else(|e| panic!("{e}"));
        assert!(img.width.max(img.height) <= 512, "{}", r.path.display());
    }
}
