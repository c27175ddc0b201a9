//! The generated training set shared by the model's tests and the workspace's kill-and-resume test (included by
//! `#[path]`, so it stays out of the library's API): small noisy grey PNGs where Covid-19 images carry a bright
//! 10x10 square somewhere (the "cue") and pneumonia images a dark one, from two sources, with `png8` and `split`
//! columns.

use std::path::{Path, PathBuf};

use cxr_core::{ImageFormat, Label, Manifest, ManifestRecord, SourceId, Split};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Image side in pixels.
pub const SIZE: u32 = 40;

/// Grey noise with the class's square.
pub fn write_image(path: &Path, covid: bool, rng: &mut ChaCha8Rng) {
    let mut img = image::GrayImage::new(SIZE, SIZE);
    for p in img.pixels_mut() {
        p.0[0] = rng.random_range(60..140);
    }
    let (x0, y0) = (
        rng.random_range(2..SIZE - 12),
        rng.random_range(2..SIZE - 12),
    );
    for y in y0..y0 + 10 {
        for x in x0..x0 + 10 {
            img.put_pixel(x, y, image::Luma([if covid { 250 } else { 5 }]));
        }
    }
    img.save(path).unwrap();
}

/// Writes `n` images per class for each `(split, n)` under `dir/png/` and their manifest `dir/manifest.csv`
/// (returned). Patients are unique per split and image; sources alternate between NIH and BIMCV.
pub fn square_cue_manifest(dir: &Path, per_class: &[(Split, usize)], seed: u64) -> PathBuf {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    std::fs::create_dir_all(dir.join("png")).unwrap();
    let mut records = Vec::new();
    for &(split, n) in per_class {
        for label in [Label::Covid, Label::Pneumonia] {
            for i in 0..n {
                let id = format!("{split}-{label}-{i}");
                write_image(
                    &dir.join(format!("png/{id}.png")),
                    label == Label::Covid,
                    &mut rng,
                );
                let mut r = ManifestRecord {
                    id: id.clone(),
                    source: SourceId::new(if i % 2 == 0 { "nih" } else { "bimcv" }).unwrap(),
                    label,
                    patient: format!("p{split}{i}"),
                    view: "PA".into(),
                    path: format!("raw/{id}.png").into(),
                    format: ImageFormat::Png,
                    sha256: "0".repeat(64),
                    split: Some(split),
                    extra: Default::default(),
                };
                r.set("png8", format!("png/{id}.png"));
                records.push(r);
            }
        }
    }
    let path = dir.join("manifest.csv");
    Manifest::new(records).write(&path).unwrap();
    path
}
