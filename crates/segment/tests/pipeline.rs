//! End-to-end tests of the segment stage on generated data (tiny UNet, 32-48 px) and, when present, on the
//! real Shenzhen/Montgomery pairs (`$CXR_SHARED_DATA`).

use std::path::{Path, PathBuf};

use cxr_core::{Grey8, ImageFormat, Label, Manifest, ManifestRecord, SourceId};
use cxr_segment::{
    SegmentOptions, Segmenter, TrainConfig, TrainEvent, UNet, UNetConfig, crop_manifest,
    data::Augment, segment_manifest, train, train_with_progress,
};

/// A phantom chest: two bright-edged dark ellipses (lungs) on a lighter, noisy body; the mask is the
/// ellipses. Position and size vary with `k`.
fn phantom(side: u32, k: u32) -> (Grey8, Grey8) {
    let s = side as f64;
    let dx = ((k * 7) % 5) as f64 / 5.0 * 0.08 * s - 0.04 * s;
    let dy = ((k * 3) % 4) as f64 / 4.0 * 0.08 * s - 0.04 * s;
    let scale = 1.0 + ((k % 3) as f64 - 1.0) * 0.07;
    let mut img = vec![0u8; (side * side) as usize];
    let mut mask = vec![0u8; (side * side) as usize];
    let mut noise = k.wrapping_mul(2654435761).wrapping_add(12345);
    for y in 0..side {
        for x in 0..side {
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            let (fx, fy) = (x as f64, y as f64);
            let inside = [0.32, 0.68].iter().any(|cx| {
                let ex = (fx - cx * s - dx) / (0.14 * s * scale);
                let ey = (fy - 0.5 * s - dy) / (0.3 * s * scale);
                ex * ex + ey * ey <= 1.0
            });
            let i = (y * side + x) as usize;
            let body = 170.0 + (noise % 40) as f64 - 20.0;
            img[i] = if inside {
                60 + (noise % 30) as u8
            } else {
                body as u8
            };
            mask[i] = if inside { 255 } else { 0 };
        }
    }
    (
        Grey8::new(side, side, img).unwrap(),
        Grey8::new(side, side, mask).unwrap(),
    )
}

/// Writes a synthetic-world style `lung-masks/{images,masks}` folder.
fn write_world(dir: &Path, n: u32, side: u32) {
    for k in 0..n {
        let (img, mask) = phantom(side, k);
        let name = format!("synthetic-{k:04}.png");
        cxr_core::png8::write_grey8(&dir.join("lung-masks/images").join(&name), &img).unwrap();
        cxr_core::png8::write_grey8(&dir.join("lung-masks/masks").join(&name), &mask).unwrap();
    }
}

fn tiny_config(data: &Path, out: &Path, epochs: usize) -> TrainConfig {
    TrainConfig {
        unet: UNetConfig { base: 4, size: 32 },
        epochs,
        batch: 4,
        lr: 3e-3,
        patience: 100,
        val_fraction: 0.2,
        test_fraction: 0.2,
        time_budget_s: None,
        max_pairs: None,
        augment: Some(Augment {
            rotate_deg: 5.0,
            shift: 0.03,
            zoom: 0.05,
            flip: 0.5,
            appearance: None,
        }),
        ..TrainConfig::cpu_default(data, out)
    }
}

#[test]
fn trains_resumes_exactly_and_segments_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    write_world(dir.path(), 40, 48);

    // Straight run of 6 epochs.
    let straight = dir.path().join("a/w.safetensors");
    let cfg = tiny_config(dir.path(), &straight, 6);
    let report = train(&cfg).unwrap();
    assert_eq!(report.epochs_run, 6);
    assert!(report.train_pairs > 15 && report.val_pairs > 0 && report.test_pairs > 0);
    let first = report.history[0].val_dice;
    assert!(
        report.best_val_dice > 0.85 && report.best_val_dice > first,
        "{:?}",
        report.history
    );
    let test = report.test_dice.unwrap();
    assert!(test > 0.85, "test Dice {test}");
    assert!(cfg.report_path().is_file() && cfg.checkpoint_path().is_file());

    // The same run killed after epoch 3 (a panic in the progress callback, after the checkpoint was
    // written), then resumed: the same weights bit for bit, the learning-rate schedule included.
    let resumed = dir.path().join("b/w.safetensors");
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train_with_progress(&tiny_config(dir.path(), &resumed, 6), &mut |ev| {
            if let TrainEvent::Epoch(log) = ev
                && log.epoch == 3
            {
                panic!("simulated kill after epoch 3");
            }
        })
    }));
    assert!(killed.is_err() && !resumed.with_extension("report.json").exists());
    let r2 = train(&tiny_config(dir.path(), &resumed, 6)).unwrap();
    let key = |r: &cxr_segment::TrainReport| -> Vec<(usize, f64, f64)> {
        r.history
            .iter()
            .map(|h| (h.epoch, h.train_loss, h.val_dice))
            .collect()
    };
    // (JSON round trips of the log may move the last bit of an f64.)
    for (a, b) in key(&r2).iter().zip(key(&report)) {
        assert!(
            a.0 == b.0 && (a.1 - b.1).abs() < 1e-12 && (a.2 - b.2).abs() < 1e-12,
            "{a:?} {b:?}"
        );
    }
    assert_eq!(r2.history.len(), 6);
    assert!(std::fs::read(&resumed).unwrap() == std::fs::read(&straight).unwrap());
    // Same command, same bytes: a second fresh run, this one under a clock guard it never reaches (a guard
    // decides only where to stop, never what an epoch does), gives the same weights bit for bit.
    let again = dir.path().join("c/w.safetensors");
    let mut guarded = tiny_config(dir.path(), &again, 6);
    guarded.time_budget_s = Some(1e9);
    let r3 = train(&guarded).unwrap();
    assert_eq!(r3.epochs_run, 6);
    assert!(std::fs::read(&again).unwrap() == std::fs::read(&straight).unwrap());
    // A guard that runs out stops the run early, on the same rates as the full run's first epochs.
    let mut stopped = tiny_config(dir.path(), &dir.path().join("d/w.safetensors"), 6);
    stopped.time_budget_s = Some(1e-9);
    let r4 = train(&stopped).unwrap();
    assert_eq!(r4.epochs_run, 1);
    assert!(
        r4.stopped_because.contains("time budget"),
        "{}",
        r4.stopped_because
    );
    assert_eq!(r4.history[0].lr, report.history[0].lr);
    // The default cosine schedule decayed the rate epoch by epoch (3e-3 at the start).
    let lrs: Vec<f64> = report.history.iter().map(|h| h.lr).collect();
    assert!(
        (lrs[0] - 3e-3).abs() < 1e-12 && lrs.windows(2).all(|w| w[1] < w[0]) && lrs[5] < 3e-4,
        "{lrs:?}"
    );
    // Its checkpoint resumes only under the same epoch budget: more epochs would change the rates.
    let err = train(&tiny_config(dir.path(), &resumed, 8))
        .unwrap_err()
        .to_string();
    assert!(err.contains("w.ckpt.safetensors"), "{err}");
    // A checkpoint of another configuration is refused, naming the file.
    let mut other = tiny_config(dir.path(), &resumed, 8);
    other.lr = 1e-2;
    let err = train(&other).unwrap_err().to_string();
    assert!(err.contains("w.ckpt.safetensors"), "{err}");

    // The stage over a manifest whose png8 column points at images of another size, one unreadable.
    let seg = Segmenter::load(&straight).unwrap();
    let mdir = dir.path().join("pre");
    let mut records = Vec::new();
    for k in 0..3u32 {
        let (img, _) = phantom(40, 100 + k);
        let rel = format!("png/img{k}.png");
        cxr_core::png8::write_grey8(&mdir.join(&rel), &img).unwrap();
        records.push(record(&format!("img{k}"), &rel));
    }
    std::fs::write(mdir.join("png/broken.png"), b"nope").unwrap();
    records.push(record("broken", "png/broken.png"));
    let manifest_path = mdir.join("manifest.csv");
    Manifest::new(records).write(&manifest_path).unwrap();
    let out = dir.path().join("seg");
    let summary = segment_manifest(
        &seg,
        &manifest_path,
        &out,
        &SegmentOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(summary.images, 4);
    assert_eq!(summary.rejected.get("unreadable"), Some(&1));
    assert_eq!(summary.kept, 3, "{summary:?}");
    let m = Manifest::read(&out.join("manifest.csv")).unwrap();
    for c in cxr_segment::COLUMNS {
        assert!(m.extra_columns.iter().any(|e| e == c), "{c}");
    }
    let r0 = &m.records[0];
    let mask = cxr_core::png8::read_grey8(&m.base_dir.join(r0.get("mask").unwrap())).unwrap();
    assert_eq!((mask.width, mask.height), (40, 40));
    assert!(mask.data.iter().all(|&v| v == 0 || v == 255));
    let (_, truth) = phantom(40, 100);
    let d = cxr_segment::infer::dice(&mask.data, &truth.data);
    assert!(d > 0.8, "Dice on an unseen phantom {d}");
    let crop = cxr_core::png8::read_grey8(&m.base_dir.join(r0.get("crop").unwrap())).unwrap();
    assert_eq!(crop.width.to_string(), r0.get("crop_w").unwrap());
    assert_eq!(crop.height.to_string(), r0.get("crop_h").unwrap());
    // Relative paths of the input manifest still reach the files from the new folder.
    assert!(m.base_dir.join(r0.get("png8").unwrap()).is_file());
    assert!(m.resolve(r0).is_file());
    assert_eq!(m.records[3].get("reject_reason").unwrap(), "unreadable");
    let rejects = std::fs::read_to_string(out.join("rejects.csv")).unwrap();
    assert!(
        rejects.contains("broken") && rejects.contains("unreadable"),
        "{rejects}"
    );

    // `crop` from the manifest's own masks gives the same crops.
    let out2 = dir.path().join("crop-again");
    let s2 = crop_manifest(
        &out.join("manifest.csv"),
        &out2,
        &SegmentOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(s2.kept, 3);
    let m2 = Manifest::read(&out2.join("manifest.csv")).unwrap();
    assert_eq!(m2.records[0].get("crop_w"), r0.get("crop_w"));
    let c2 =
        cxr_core::png8::read_grey8(&m2.base_dir.join(m2.records[0].get("crop").unwrap())).unwrap();
    assert_eq!(c2, crop);
}

fn record(id: &str, png8: &str) -> ManifestRecord {
    let mut r = ManifestRecord {
        id: id.into(),
        source: SourceId::new("nih").unwrap(),
        label: Label::Pneumonia,
        patient: format!("p-{id}"),
        view: "PA".into(),
        path: PathBuf::from(png8),
        format: ImageFormat::Png,
        sha256: "00".repeat(32),
        split: None,
        extra: Default::default(),
    };
    r.set("png8", png8);
    r
}

/// The real Shenzhen/Montgomery layout is listed with patient keys and loads at the model side.
#[test]
fn real_lung_mask_pairs_load() {
    let root = shared_data();
    let dir = root.join("shenzhen-montgomery-lung-masks");
    if !dir.join("manifest.csv").is_file() {
        println!("skipped: {} absent", dir.display());
        return;
    }
    let pairs = cxr_segment::data::list_pairs(&dir).unwrap();
    assert_eq!(pairs.len(), 704);
    assert!(
        pairs
            .iter()
            .all(|p| !p.patient.ends_with("_0") && !p.patient.ends_with("_1"))
    );
    let loaded = cxr_segment::data::load_pairs(&pairs[..4], 64, true).unwrap();
    for s in &loaded {
        assert_eq!((s.image.width, s.mask.width), (64, 64));
        let area = s.mask.data.iter().filter(|&&v| v == 255).count();
        // Lungs cover roughly a fifth to a half of a frontal CXR.
        assert!((64 * 64 / 8..64 * 64 / 2).contains(&area), "{area}");
        assert!(s.full_mask.as_ref().unwrap().width == 256);
    }
    // An untrained model still runs on the real images at 64 px.
    let (net, _) = UNet::trainable(
        UNetConfig { base: 2, size: 64 },
        0,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let masks = Segmenter::new(net)
        .predict_masks(&[loaded[0].full_image.clone().unwrap()])
        .unwrap();
    assert_eq!((masks[0].width, masks[0].height), (256, 256));
}

/// The shipped UNet, embedded in the library, finds the lungs of the four demo radiographs of
/// `imlab-lung-masks-demo` (a set it never trained on; 512 px JPEGs): Dice 0.946-0.968 when committed.
#[test]
fn the_shipped_unet_finds_the_lungs_of_radiographs_it_never_saw() {
    let root = shared_data();
    let dir = root.join("imlab-lung-masks-demo");
    if !dir.is_dir() {
        println!("skipped: {} absent", dir.display());
        return;
    }
    let seg = Segmenter::default_lung().unwrap();
    assert_eq!(seg.unet().config(), UNetConfig { base: 8, size: 128 });
    for k in 1..=4 {
        let img = cxr_core::png8::read_grey8(&dir.join(format!("{k}.jpg"))).unwrap();
        let truth = cxr_core::png8::read_grey8(&dir.join(format!("{k}-mask.png"))).unwrap();
        let truth: Vec<u8> = truth.data.iter().map(|&v| u8::from(v >= 128)).collect();
        let mask = seg
            .predict_masks(std::slice::from_ref(&img))
            .unwrap()
            .remove(0);
        assert_eq!((mask.width, mask.height), (img.width, img.height));
        let d = cxr_segment::infer::dice(&mask.data, &truth);
        assert!(d > 0.9, "image {k}: Dice {d}");
    }
}

/// `$CXR_SHARED_DATA`, else `../shared/data` beside the repository.
fn shared_data() -> PathBuf {
    std::env::var_os("CXR_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}
