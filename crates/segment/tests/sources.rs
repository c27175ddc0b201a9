//! Several lung-mask sets trained on together: the default discovery, the Cohen `masks.csv` layout, the
//! split by patient and the per-source report — on generated sets laid out like the shared ones and, when
//! present, on the real sets under `$CXR_SHARED_DATA`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cxr_core::Grey8;
use cxr_segment::data::{self, Part};
use cxr_segment::{TrainConfig, UNetConfig, train};

/// Two dark ellipses (lungs) on a lighter body, `w` x `h`, varying with `k`; the mask is the ellipses.
fn phantom(w: u32, h: u32, k: u32) -> (Grey8, Grey8) {
    let (fw, fh) = (w as f64, h as f64);
    let dx = ((k * 7) % 5) as f64 / 5.0 * 0.06 * fw - 0.03 * fw;
    let mut img = vec![0u8; (w * h) as usize];
    let mut mask = vec![0u8; (w * h) as usize];
    let mut noise = k.wrapping_mul(2654435761).wrapping_add(99);
    for y in 0..h {
        for x in 0..w {
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            let inside = [0.32, 0.68].iter().any(|cx| {
                let ex = (x as f64 - cx * fw - dx) / (0.14 * fw);
                let ey = (y as f64 - 0.5 * fh) / (0.3 * fh);
                ex * ex + ey * ey <= 1.0
            });
            let i = (y * w + x) as usize;
            img[i] = if inside {
                60 + (noise % 30) as u8
            } else {
                150 + (noise % 40) as u8
            };
            mask[i] = if inside { 255 } else { 0 };
        }
    }
    (
        Grey8::new(w, h, img).unwrap(),
        Grey8::new(w, h, mask).unwrap(),
    )
}

/// A shared-data root with both default sets in their real layouts: a Shenzhen/Montgomery manifest (with
/// a `source` column) and the Cohen masks (`masks.csv`, images in the sibling Cohen collection), where
/// Cohen patients have one to three images of different sizes.
fn write_root(root: &Path) -> usize {
    let sm = root.join("shenzhen-montgomery-lung-masks");
    let mut manifest = String::from("file,mask,source,tb\n");
    for k in 0..24u32 {
        let (set, source) = if k % 3 == 0 {
            ("MCUCXR", "montgomery")
        } else {
            ("CHNCXR", "shenzhen")
        };
        let name = format!("{set}_{k:04}_{}.png", k % 2);
        let (img, mask) = phantom(40, 40, k);
        cxr_core::png8::write_grey8(&sm.join("cxr_256").join(&name), &img).unwrap();
        cxr_core::png8::write_grey8(&sm.join("masks_256").join(&name), &mask).unwrap();
        manifest.push_str(&format!(
            "cxr_256/{name},masks_256/{name},{source},{}\n",
            k % 2
        ));
    }
    std::fs::write(sm.join("manifest.csv"), manifest).unwrap();
    let cohen = root.join("cohen-lung-masks-v7labs-dev");
    let images = root.join("cohen-covid-chestxray/images");
    let mut csv = String::from("filename,mask,patientid\n");
    let mut n = 0;
    for patient in 0..14u32 {
        for view in 0..=(patient % 3) {
            let k = 100 + patient * 3 + view;
            let (w, h) = (44 + 4 * (k % 3), 40 + 4 * (k % 2));
            let (img, mask) = phantom(w, h, k);
            // The collection stores some PNG bytes under .jpg names: the reader goes by content.
            let file = format!("covid-{patient}-{view}.jpg");
            let mask_rel = format!("masks/covid-{patient}-{view}.png");
            cxr_core::png8::write_grey8(&images.join(&file), &img).unwrap();
            cxr_core::png8::write_grey8(&cohen.join(&mask_rel), &mask).unwrap();
            csv.push_str(&format!("{file},{mask_rel},{}\n", 500 + patient));
            n += 1;
        }
    }
    std::fs::write(cohen.join("masks.csv"), csv).unwrap();
    n
}

/// Every patient's pairs in one part, for the given split.
fn assert_no_patient_straddles(pairs: &[data::PairFile], seed: u64, val: f64, test: f64) {
    let mut parts: BTreeMap<&str, BTreeSet<&'static str>> = BTreeMap::new();
    for p in pairs {
        let part = match data::part_of(&p.patient, seed, val, test) {
            Part::Train => "train",
            Part::Val => "val",
            Part::Test => "test",
        };
        parts.entry(&p.patient).or_default().insert(part);
    }
    let straddling: Vec<_> = parts.iter().filter(|(_, s)| s.len() > 1).collect();
    assert!(straddling.is_empty(), "{straddling:?}");
}

#[test]
fn default_discovery_finds_both_sets_and_says_which_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    let cohen_n = write_root(dir.path());
    let found = data::discover(dir.path()).unwrap();
    assert_eq!(found.found.len(), 2);
    assert!(found.missing.is_empty());
    let line = found.describe();
    assert!(
        line.contains("shenzhen-montgomery-lung-masks")
            && line.contains("cohen-lung-masks-v7labs-dev")
            && !line.contains("not found"),
        "{line}"
    );
    let pairs = data::list_all(&found.found).unwrap();
    assert_eq!(pairs.len(), 24 + cohen_n);
    let sources: BTreeSet<&str> = pairs.iter().map(|p| p.source.as_str()).collect();
    assert_eq!(sources, BTreeSet::from(["cohen", "montgomery", "shenzhen"]));
    // A Cohen patient's images share one key.
    assert_eq!(pairs.iter().filter(|p| p.patient == "cohen:502").count(), 3);

    // One set missing: trained on the other, and said.
    std::fs::remove_dir_all(dir.path().join("cohen-lung-masks-v7labs-dev")).unwrap();
    let one = data::discover(dir.path()).unwrap();
    assert_eq!(one.found.len(), 1);
    assert!(
        one.describe().contains("not found, skipped"),
        "{}",
        one.describe()
    );
    // None: an error that names the variable to set.
    let empty = tempfile::tempdir().unwrap();
    let err = data::discover(empty.path()).unwrap_err().to_string();
    assert!(err.contains("CXR_SHARED_DATA"), "{err}");
}

#[test]
fn a_cohen_image_without_its_collection_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    write_root(dir.path());
    std::fs::remove_dir_all(dir.path().join("cohen-covid-chestxray")).unwrap();
    let err = data::list_pairs(&dir.path().join("cohen-lung-masks-v7labs-dev"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cohen-covid-chestxray"), "{err}");
    // The same set given twice would put the same images on both sides of the split: refused.
    write_root(dir.path());
    let sm = dir.path().join("shenzhen-montgomery-lung-masks");
    let err = data::list_all(&[sm.clone(), sm]).unwrap_err().to_string();
    assert!(err.contains("appears twice"), "{err}");
}

#[test]
fn training_on_both_sets_splits_by_patient_and_reports_each_source() {
    let dir = tempfile::tempdir().unwrap();
    write_root(dir.path());
    let sets = data::discover(dir.path()).unwrap().found;
    let out = dir.path().join("w/unet.safetensors");
    let cfg = TrainConfig {
        data: sets.clone(),
        unet: UNetConfig { base: 4, size: 32 },
        epochs: 3,
        batch: 4,
        lr: 3e-3,
        val_fraction: 0.25,
        test_fraction: 0.3,
        time_budget_s: None,
        ..TrainConfig::cpu_default(&sets[0], &out)
    };
    // Source balancing is on (the preset's), and the archive appearance shifts are exercised too.
    assert!(cfg.balance > 0.0);
    let cfg = TrainConfig {
        augment: Some(cxr_segment::data::Augment::archive()),
        ..cfg
    };
    let report = train(&cfg).unwrap();

    let pairs = data::list_all(&sets).unwrap();
    assert_no_patient_straddles(&pairs, cfg.seed, cfg.val_fraction, cfg.test_fraction);
    // The report's split agrees: per source, the parts' patients add up to the source's patients (a
    // patient on two sides would be counted twice).
    for (source, c) in &report.split {
        let patients: BTreeSet<&str> = pairs
            .iter()
            .filter(|p| &p.source == source)
            .map(|p| p.patient.as_str())
            .collect();
        assert_eq!(
            c.train_patients + c.val_patients + c.test_patients,
            patients.len(),
            "{source}: {c:?}"
        );
        assert_eq!(
            c.train + c.val + c.test,
            pairs.iter().filter(|p| &p.source == source).count()
        );
    }
    // Balancing repeated the smaller sources' pairs.
    assert!(report.epoch_pairs > report.train_pairs, "{report:?}");
    // Held-out Dice per source, with its spread, for every source that has test patients.
    let with_test: BTreeSet<&String> = report
        .split
        .iter()
        .filter(|(_, c)| c.test > 0)
        .map(|(s, _)| s)
        .collect();
    assert!(
        with_test.contains(&"cohen".to_string()),
        "{:?}",
        report.split
    );
    assert_eq!(
        report.test_by_source.keys().collect::<BTreeSet<_>>(),
        with_test
    );
    for (source, s) in &report.test_by_source {
        assert_eq!(s.n, report.split[source].test);
        assert!(s.min <= s.p10 && s.p10 <= s.median && s.min <= s.mean && s.mean <= 1.0);
        assert!(report.test_by_source_flip[source].n == s.n);
    }
    // The validation log is per source too, and its mean is what picks the best epoch.
    let last = report.history.last().unwrap();
    let macro_mean =
        last.val_dice_by_source.values().sum::<f64>() / last.val_dice_by_source.len() as f64;
    assert!((macro_mean - last.val_dice).abs() < 1e-12);
    // The worst cases, worst first, with overlays on disk; and all of it in W.report.json.
    assert!(!report.worst.is_empty());
    assert!(report.worst.windows(2).all(|w| w[0].dice <= w[1].dice));
    for w in &report.worst {
        let png = out.parent().unwrap().join(&w.overlay);
        let img = image::open(&png).unwrap();
        assert!(img.width() > 0, "{}", png.display());
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cfg.report_path()).unwrap()).unwrap();
    assert!(
        json["test_by_source"]["cohen"]["median"].is_number(),
        "{json}"
    );
    assert_eq!(json["config"]["data"].as_array().unwrap().len(), 2);
}

/// The real sets: both found, and the split by patient keeps every Cohen patient (several have many images)
/// on one side.
#[test]
fn real_default_sets_split_by_patient() {
    let root = std::env::var_os("CXR_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let Ok(found) = data::discover(&root) else {
        println!("skipped: no lung-mask sets under {}", root.display());
        return;
    };
    if found.found.len() < 2 {
        println!("skipped: {}", found.describe());
        return;
    }
    let pairs = data::list_all(&found.found).unwrap();
    let cohen: Vec<_> = pairs.iter().filter(|p| p.source == "cohen").collect();
    assert_eq!(cohen.len(), 185);
    let patients: BTreeSet<&str> = cohen.iter().map(|p| p.patient.as_str()).collect();
    assert_eq!(patients.len(), 111);
    assert_eq!(pairs.len(), 704 + 185);
    let cfg = TrainConfig::cpu_default("unused", "unused.safetensors");
    assert_no_patient_straddles(&pairs, cfg.seed, cfg.val_fraction, cfg.test_fraction);
    // The split is meaningful: some held-out Cohen patients have several images, all held out.
    let mut per_patient: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &cohen {
        if data::part_of(&p.patient, cfg.seed, cfg.val_fraction, cfg.test_fraction) == Part::Test {
            *per_patient.entry(&p.patient).or_default() += 1;
        }
    }
    assert!(per_patient.values().any(|&n| n >= 2), "{per_patient:?}");
    assert!(per_patient.len() >= 10, "{per_patient:?}");
    // Every Cohen pair exists and has an image of the mask's size.
    let loaded = data::load_pairs(
        &cohen
            .iter()
            .take(3)
            .map(|p| (*p).clone())
            .collect::<Vec<_>>(),
        64,
        true,
    )
    .unwrap();
    assert!(
        loaded
            .iter()
            .all(|s| s.source == "cohen" && s.full_mask.is_some())
    );
}
