//! Batch mode on generated files: outputs and columns, rejects, the content-keyed cache (a rerun decodes
//! nothing, a resumed run only what is missing), augmentation rows, config TOML.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use cxr_core::png8::read_grey8;
use cxr_core::{ImageFormat, Label, Manifest, ManifestRecord, PixelMeta, RawImage, SourceId};
use cxr_preprocess::{BatchOptions, PreprocessConfig, WindowMode, run_batch};

/// A toy "format": the file holds `W H v0 v1 ...` as text, or anything else (unreadable).
fn toy_reader(calls: &AtomicUsize) -> impl Fn(&Path) -> Result<RawImage, String> + Sync + '_ {
    move |p: &Path| {
        calls.fetch_add(1, Ordering::SeqCst);
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let nums: Vec<f32> = text
            .split_whitespace()
            .map(|t| t.parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: not a toy image: {e}", p.display()))?;
        if nums.len() < 2 {
            return Err(format!("{}: too short", p.display()));
        }
        let (w, h) = (nums[0] as u32, nums[1] as u32);
        RawImage::new(
            w,
            h,
            nums[2..].to_vec(),
            PixelMeta {
                bits_stored: 16,
                ..PixelMeta::default()
            },
        )
        .map_err(|e| format!("{}: {e}", p.display()))
    }
}

fn record(id: &str, source: &str, path: &str) -> ManifestRecord {
    ManifestRecord {
        id: id.into(),
        source: SourceId::new(source).unwrap(),
        label: Label::Pneumonia,
        patient: format!("p-{id}"),
        view: "PA".into(),
        path: PathBuf::from(path),
        format: ImageFormat::Png,
        sha256: String::new(),
        split: None,
        extra: BTreeMap::new(),
    }
}

fn write_toy(dir: &Path, name: &str, w: u32, h: u32, seed: u32) {
    let mut s = format!("{w} {h}");
    for i in 0..w * h {
        s.push_str(&format!(" {}", (i * 37 + seed * 101) % 4000));
    }
    std::fs::write(dir.join(name), s).unwrap();
}

fn setup() -> (tempfile::TempDir, Manifest) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_toy(&data, "a.toy", 40, 30, 1);
    write_toy(&data, "b.toy", 30, 60, 2);
    write_toy(&data, "c.toy", 20, 20, 3);
    std::fs::write(data.join("bad.toy"), "this is not an image").unwrap();
    let mut c = record("c", "padchest", "data/c.toy");
    c.set("window_center", "2000");
    c.set("window_width", "1001");
    c.set("photometric", "MONOCHROME1");
    let records = vec![
        record("a", "nih", "data/a.toy"),
        record("b", "cohen:hannover", "data/b.toy"),
        c,
        record("bad", "nih", "data/bad.toy"),
        record("gone", "nih", "data/missing.toy"),
    ];
    let mut m = Manifest::new(records);
    m.base_dir = dir.path().to_path_buf();
    (dir, m)
}

fn config(size: u32) -> PreprocessConfig {
    let mut cfg = PreprocessConfig::from_toml_str(&format!(
        "size = {size}\n[sources.cohen]\nwindow = \"percentile\"\npercentile = [1.0, 99.0]\n"
    ))
    .unwrap();
    cfg.default.window = WindowMode::Auto;
    cfg
}

#[test]
fn batch_writes_pngs_columns_and_rejects_and_never_does_work_twice() {
    let (dir, manifest) = setup();
    let out = dir.path().join("out");
    let calls = AtomicUsize::new(0);
    let reader = toy_reader(&calls);
    let last = std::sync::Mutex::new(None);
    let progress = |p: cxr_preprocess::Progress| {
        *last.lock().unwrap() = Some(p);
    };
    let cfg = config(16);
    let s = run_batch(
        &manifest,
        &out,
        &cfg,
        &BatchOptions::default(),
        &reader,
        &progress,
    )
    .unwrap();
    assert_eq!(
        (s.total, s.processed, s.cached, s.rejected, s.rows),
        (5, 3, 0, 2, 3)
    );
    let p = last.lock().unwrap().unwrap();
    assert_eq!((p.done, p.total, p.rejected), (5, 5, 2));
    // The missing file fails at hashing, before the reader; the bad one in the reader.
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    let rejects = std::fs::read_to_string(out.join("rejects.csv")).unwrap();
    let lines: Vec<&str> = rejects.lines().collect();
    assert_eq!(lines[0], "id,file,reason");
    assert_eq!(lines.len(), 3, "{rejects}");
    assert!(
        lines.iter().any(|l| l.starts_with("bad,")
            && l.contains("bad.toy")
            && l.contains("not a toy image"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("gone,") && l.contains("missing.toy"))
    );

    let m = Manifest::read(&out.join("manifest.csv")).unwrap();
    assert_eq!(m.records.len(), 3);
    let by_id = |id: &str| m.records.iter().find(|r| r.id == id).unwrap();
    let a = by_id("a");
    assert_eq!(a.get("pre_window_source").as_deref(), Some("minmax"));
    assert_eq!(a.get("pre_window").as_deref(), Some(""));
    assert_eq!(a.get("pre_inverted").as_deref(), Some("false"));
    assert_eq!(a.get("pre_size").as_deref(), Some("16x12"));
    // Paths still resolve from the new manifest's folder.
    assert!(m.resolve(a).is_file());
    let png = out.join(a.get("png8").unwrap());
    let img = read_grey8(&png).unwrap();
    assert_eq!((img.width, img.height), (16, 12));
    assert_eq!(
        by_id("b").get("pre_window_source").as_deref(),
        Some("percentile")
    );
    assert_eq!(by_id("b").get("pre_size").as_deref(), Some("8x16"));
    let c = by_id("c");
    assert_eq!(c.get("pre_window_source").as_deref(), Some("metadata"));
    assert_eq!(c.get("pre_window").as_deref(), Some("2000/1001"));
    assert_eq!(c.get("pre_inverted").as_deref(), Some("true"));
    assert_eq!(c.get("pre_min").as_deref(), Some("1499.5"));
    assert_eq!(c.get("pre_max").as_deref(), Some("2499.5"));
    let first = std::fs::read(out.join("manifest.csv")).unwrap();

    // A rerun decodes nothing and writes the same manifest.
    let s = run_batch(
        &manifest,
        &out,
        &cfg,
        &BatchOptions::default(),
        &reader,
        &|_| {},
    )
    .unwrap();
    assert_eq!((s.processed, s.cached, s.rejected), (0, 3, 2));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "only the bad file is read again"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("manifest.csv")).unwrap(),
        String::from_utf8(first).unwrap()
    );

    // A run killed before one entry was committed resumes with exactly that image.
    let json = png.with_extension("json");
    std::fs::remove_file(&json).unwrap();
    let s = run_batch(
        &manifest,
        &out,
        &cfg,
        &BatchOptions::default(),
        &reader,
        &|_| {},
    )
    .unwrap();
    assert_eq!((s.processed, s.cached), (1, 2));

    // A changed config is a different cache key: everything is processed again.
    let s = run_batch(
        &manifest,
        &out,
        &config(8),
        &BatchOptions::default(),
        &reader,
        &|_| {},
    )
    .unwrap();
    assert_eq!((s.processed, s.cached), (3, 0));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["processed"], 3);
}

#[test]
fn augment_writes_ten_rows_per_image() {
    let (dir, manifest) = setup();
    let out = dir.path().join("out");
    let calls = AtomicUsize::new(0);
    let reader = toy_reader(&calls);
    let opts = BatchOptions {
        augment: true,
        ..BatchOptions::default()
    };
    let s = run_batch(&manifest, &out, &config(16), &opts, &reader, &|_| {}).unwrap();
    assert_eq!(s.rows, 30);
    let m = Manifest::read(&out.join("manifest.csv")).unwrap();
    let rows: Vec<_> = m
        .records
        .iter()
        .filter(|r| r.get("aug_of").as_deref() == Some("a"))
        .collect();
    assert_eq!(rows.len(), 10);
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        (0..10).map(|k| format!("a.aug{k}")).collect::<Vec<_>>()
    );
    let augs: Vec<String> = rows.iter().map(|r| r.get("aug").unwrap()).collect();
    assert_eq!(augs[0], "orig");
    assert_eq!(augs[1], "flip");
    assert_eq!(augs[9], "flip+rot-4");
    let orig = read_grey8(&out.join(rows[0].get("png8").unwrap())).unwrap();
    let flip = read_grey8(&out.join(rows[1].get("png8").unwrap())).unwrap();
    for y in 0..orig.height {
        for x in 0..orig.width {
            assert_eq!(flip.get(x, y), orig.get(orig.width - 1 - x, y));
        }
    }
    for r in &rows {
        let img = read_grey8(&out.join(r.get("png8").unwrap())).unwrap();
        assert_eq!((img.width, img.height), (16, 12));
    }
    // Cached with the augmented files: a rerun reads nothing but the bad file.
    let before = calls.load(Ordering::SeqCst);
    let s = run_batch(&manifest, &out, &config(16), &opts, &reader, &|_| {}).unwrap();
    assert_eq!((s.cached, s.rows), (3, 30));
    assert_eq!(calls.load(Ordering::SeqCst), before + 1);
}

#[test]
fn config_toml_policies_and_errors() {
    let cfg = PreprocessConfig::from_toml_str(
        "size = 224\nresize = \"square\"\nfilter = \"lanczos3\"\n[default]\nfallback = \"percentile\"\n\
         [sources.nih]\nwindow = \"minmax\"\n[sources.cohen]\nmetadata = false\n",
    )
    .unwrap();
    assert_eq!(cfg.display_options("nih").window, WindowMode::Minmax);
    assert_eq!(
        cfg.display_options("padchest").fallback,
        cxr_preprocess::Fallback::Percentile
    );
    assert!(!cfg.display_options("cohen:hannover").use_metadata);
    assert!(cfg.display_options("bimcv").use_metadata);
    assert_ne!(cfg.hash(), PreprocessConfig::default().hash());
    assert_eq!(cfg.hash(), cfg.clone().hash());

    let err = PreprocessConfig::from_toml_str("sise = 3\n").unwrap_err();
    assert!(err.contains("sise"), "{err}");
    let err =
        PreprocessConfig::from_toml_str("[default]\npercentile = [50.0, 10.0]\n").unwrap_err();
    assert!(err.contains("percentile"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pre.toml");
    std::fs::write(&p, "filter = \"cubic\"\n").unwrap();
    let err = PreprocessConfig::from_toml_file(&p)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pre.toml"), "{err}");
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    cxr_core::fsutil::files_under(root).unwrap()
}

/// Hostile ids (`../../x/y`, absolute paths, `..`, case twins, a 3000-byte id): preprocess names its PNGs by
/// content, so every file stays under `--out`, one PNG per image and augmentation, every row in the manifest.
#[test]
fn hostile_ids_never_write_outside_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let long = "Z".repeat(3000);
    let ids: Vec<&str> = cxr_core::outname::HOSTILE_IDS
        .iter()
        .copied()
        .filter(|id| !id.is_empty())
        .chain([long.as_str()])
        .collect();
    let records: Vec<ManifestRecord> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            write_toy(&data, &format!("{i}.toy"), 12, 10, i as u32);
            record(id, "nih", &format!("data/{i}.toy"))
        })
        .collect();
    let mut manifest = Manifest::new(records);
    manifest.base_dir = dir.path().to_path_buf();
    let out = dir.path().join("deep/out");
    let calls = AtomicUsize::new(0);
    let opts = BatchOptions {
        augment: true,
        ..BatchOptions::default()
    };
    let s = run_batch(
        &manifest,
        &out,
        &config(8),
        &opts,
        &toy_reader(&calls),
        &|_| {},
    )
    .unwrap();
    assert_eq!((s.rejected, s.rows), (0, ids.len() * 10));
    for p in files_under(dir.path()) {
        assert!(
            p.starts_with(&out) || p.starts_with(&data),
            "{} escaped",
            p.display()
        );
    }
    let pngs = files_under(&out)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .count();
    assert_eq!(pngs, ids.len() * 10);
    let back = Manifest::read(&out.join("manifest.csv")).unwrap();
    for id in &ids {
        let rows = back
            .records
            .iter()
            .filter(|r| r.get("aug_of").as_deref() == Some(*id))
            .count();
        assert_eq!(rows, 10, "{id:?}");
    }
}
