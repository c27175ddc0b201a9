//! Training data: image/mask pairs from the two supported layouts, patient-level splits, augmentation.
//!
//! Layouts (detected from the folder's content; several folders can be trained on together):
//! - **Shenzhen/Montgomery** (`../shared/data/shenzhen-montgomery-lung-masks`): `manifest.csv` with columns
//!   `file, mask` (paths relative to the folder; `source` names the hospital, `tb` is ignored). File stems
//!   are `<SET>_<patient number>_<tb flag>`: the patient key drops the flag, so a patient never straddles
//!   splits.
//! - **Cohen lung masks** (`../shared/data/cohen-lung-masks-v7labs-dev`): `masks.csv` with columns
//!   `filename, mask, patientid`; `filename` is an image of the Cohen collection, looked up in the folder's
//!   own `images/` or else in the sibling `cohen-covid-chestxray/images/`. Source `cohen`; several images of
//!   one patient share the patient key `cohen:<patientid>`.
//! - **Synthetic world** (written by cxr-synth): `<world>/lung-masks/{images,masks}/*.png` or the
//!   `lung-masks` folder itself; masks have the same file names. Each synthetic image is its own patient.
//!
//! Splits are by a keyed hash of the patient key (stable when files are added or removed), so one patient's
//! images are always on the same side, and images are resized to the model's side once at load time (the
//! triangle filter; masks re-thresholded).

use std::path::{Path, PathBuf};

use cxr_core::Grey8;
use rand::Rng;
use rayon::prelude::*;

use crate::SegmentError;
use crate::imageio;

/// One image/mask pair, at the model's side and at its original size.
#[derive(Debug, Clone)]
pub struct Sample {
    /// File stem (no patient identifier beyond the public dataset's own file name).
    pub name: String,
    /// Patient key: pairs of one patient always land in the same split.
    pub patient: String,
    /// Data source (`shenzhen`, `montgomery`, `cohen`, `synthetic`): the unit of the per-source report.
    pub source: String,
    /// Grey image resized to the model side.
    pub image: Grey8,
    /// Mask ({0, 255}) resized to the model side.
    pub mask: Grey8,
    /// The original-size mask, for Dice of the full inference pipeline (held-out parts only).
    pub full_mask: Option<Grey8>,
    /// The original-size image (held-out parts only).
    pub full_image: Option<Grey8>,
}

/// Where each pair goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Train,
    Val,
    Test,
}

/// A listed (not yet loaded) pair.
#[derive(Debug, Clone)]
pub struct PairFile {
    pub name: String,
    pub patient: String,
    pub source: String,
    pub image: PathBuf,
    pub mask: PathBuf,
}

/// Lists the image/mask pairs of a training folder in either layout, sorted by name.
pub fn list_pairs(dir: &Path) -> Result<Vec<PairFile>, SegmentError> {
    let manifest = dir.join("manifest.csv");
    let cohen = dir.join("masks.csv");
    let mut pairs = if manifest.is_file() {
        list_manifest(dir, &manifest)?
    } else if cohen.is_file() {
        list_cohen(dir, &cohen)?
    } else {
        let root = if dir.join("lung-masks").is_dir() {
            dir.join("lung-masks")
        } else {
            dir.to_path_buf()
        };
        list_folders(&root)?
    };
    if pairs.is_empty() {
        return Err(SegmentError::data(
            dir,
            "no image/mask pairs found (expected manifest.csv with `file, mask` columns, masks.csv with \
             `filename, mask, patientid` columns, or lung-masks/{images,masks}/)",
        ));
    }
    pairs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pairs)
}

fn list_manifest(dir: &Path, manifest: &Path) -> Result<Vec<PairFile>, SegmentError> {
    let mut rdr = csv::Reader::from_path(manifest)
        .map_err(|e| SegmentError::data(manifest, e.to_string()))?;
    let headers = rdr
        .headers()
        .map_err(|e| SegmentError::data(manifest, e.to_string()))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| SegmentError::data(manifest, format!("missing column `{name}`")))
    };
    let (fc, mc) = (col("file")?, col("mask")?);
    let sc = headers.iter().position(|h| h.trim() == "source");
    let mut pairs = Vec::new();
    for (i, row) in rdr.records().enumerate() {
        let row = row.map_err(|e| SegmentError::data(manifest, format!("line {}: {e}", i + 2)))?;
        let file = row.get(fc).unwrap_or("").trim();
        let mask = row.get(mc).unwrap_or("").trim();
        if file.is_empty() || mask.is_empty() {
            return Err(SegmentError::data(
                manifest,
                format!("line {}: empty `file` or `mask`", i + 2),
            ));
        }
        let name = stem(Path::new(file));
        let source = sc
            .and_then(|c| row.get(c))
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| source_of_name(&name));
        pairs.push(PairFile {
            patient: patient_key(&name),
            name,
            source,
            image: dir.join(file),
            mask: dir.join(mask),
        });
    }
    Ok(pairs)
}

/// The Cohen lung-mask layout: `masks.csv` (`filename, mask, patientid`), images in `images/` beside it or
/// in the sibling Cohen collection.
fn list_cohen(dir: &Path, csv_path: &Path) -> Result<Vec<PairFile>, SegmentError> {
    let images = [
        dir.join("images"),
        dir.parent()
            .map(|p| p.join("cohen-covid-chestxray").join("images"))
            .unwrap_or_default(),
    ]
    .into_iter()
    .find(|p| p.is_dir())
    .ok_or_else(|| {
        SegmentError::data(
            dir,
            "masks.csv lists Cohen images, but neither images/ here nor ../cohen-covid-chestxray/images exists",
        )
    })?;
    let mut rdr = csv::Reader::from_path(csv_path)
        .map_err(|e| SegmentError::data(csv_path, e.to_string()))?;
    let headers = rdr
        .headers()
        .map_err(|e| SegmentError::data(csv_path, e.to_string()))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| SegmentError::data(csv_path, format!("missing column `{name}`")))
    };
    let (fc, mc, pc) = (col("filename")?, col("mask")?, col("patientid")?);
    let mut pairs = Vec::new();
    for (i, row) in rdr.records().enumerate() {
        let row = row.map_err(|e| SegmentError::data(csv_path, format!("line {}: {e}", i + 2)))?;
        let field = |c: usize| row.get(c).unwrap_or("").trim();
        let (file, mask, patient) = (field(fc), field(mc), field(pc));
        if file.is_empty() || mask.is_empty() || patient.is_empty() {
            return Err(SegmentError::data(
                csv_path,
                format!("line {}: empty `filename`, `mask` or `patientid`", i + 2),
            ));
        }
        pairs.push(PairFile {
            name: stem(Path::new(file)),
            patient: format!("cohen:{patient}"),
            source: "cohen".into(),
            image: images.join(file),
            mask: dir.join(mask),
        });
    }
    Ok(pairs)
}

/// Lists the pairs of several training folders together, each in its own layout. Two folders that hold the
/// same image name are refused: a duplicated image could sit on both sides of the split.
pub fn list_all(dirs: &[PathBuf]) -> Result<Vec<PairFile>, SegmentError> {
    let mut all = Vec::new();
    for d in dirs {
        all.extend(list_pairs(d)?);
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = all.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(SegmentError::data(
            &w[1].image,
            format!(
                "image name `{}` appears twice ({} and {}): the same image in two training folders?",
                w[1].name,
                w[0].image.display(),
                w[1].image.display()
            ),
        ));
    }
    Ok(all)
}

/// The lung-mask sets `segment train` uses when given no `--data`, as folder names under the shared data
/// root (`$CXR_SHARED_DATA`): the tuberculosis hospitals and the Cohen Covid-19 development masks.
pub const DEFAULT_SETS: [&str; 2] = [
    "shenzhen-montgomery-lung-masks",
    "cohen-lung-masks-v7labs-dev",
];

/// Which of [`DEFAULT_SETS`] exist under `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub found: Vec<PathBuf>,
    pub missing: Vec<PathBuf>,
}

impl Discovery {
    /// One line for the user: what will be trained on and what is missing.
    pub fn describe(&self) -> String {
        let names = |v: &[PathBuf]| {
            v.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut s = format!("training data: {}", names(&self.found));
        if !self.missing.is_empty() {
            s.push_str(&format!(" (not found, skipped: {})", names(&self.missing)));
        }
        s
    }
}

/// Looks for the default lung-mask sets under `root`; an error when none is there.
pub fn discover(root: &Path) -> Result<Discovery, SegmentError> {
    let (found, missing): (Vec<PathBuf>, Vec<PathBuf>) = DEFAULT_SETS
        .iter()
        .map(|d| root.join(d))
        .partition(|p| p.is_dir());
    if found.is_empty() {
        return Err(SegmentError::data(
            root,
            format!(
                "none of the default lung-mask sets ({}) is here: set CXR_SHARED_DATA or pass --data",
                DEFAULT_SETS.join(", ")
            ),
        ));
    }
    Ok(Discovery { found, missing })
}

/// Source of a file stem when the layout does not say: `CHNCXR_*` Shenzhen, `MCUCXR_*` Montgomery.
fn source_of_name(name: &str) -> String {
    match name.split(['_', '-']).next().unwrap_or("") {
        "CHNCXR" => "shenzhen".into(),
        "MCUCXR" => "montgomery".into(),
        other => other.to_ascii_lowercase(),
    }
}

fn list_folders(root: &Path) -> Result<Vec<PairFile>, SegmentError> {
    let (images, masks) = (root.join("images"), root.join("masks"));
    if !images.is_dir() || !masks.is_dir() {
        return Err(SegmentError::data(
            root,
            "expected `images/` and `masks/` folders (or a manifest.csv)",
        ));
    }
    let mut pairs = Vec::new();
    for entry in std::fs::read_dir(&images).map_err(|e| SegmentError::io(&images, e))? {
        let entry = entry.map_err(|e| SegmentError::io(&images, e))?;
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let file_name = entry.file_name();
        let mask = masks.join(&file_name);
        if !mask.is_file() {
            return Err(SegmentError::data(&path, "no mask with the same file name"));
        }
        let name = stem(&path);
        pairs.push(PairFile {
            patient: name.clone(),
            name,
            source: "synthetic".into(),
            image: path,
            mask,
        });
    }
    Ok(pairs)
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `CHNCXR_0001_0` → `CHNCXR_0001`: drops a trailing `_<digit>` flag (the tuberculosis label).
pub fn patient_key(name: &str) -> String {
    match name.rsplit_once('_') {
        Some((head, tail)) if tail.len() == 1 && tail.chars().all(|c| c.is_ascii_digit()) => {
            head.to_string()
        }
        _ => name.to_string(),
    }
}

/// Assigns a patient to a part by a seeded hash: a fraction `val` to validation, `test` to test.
pub fn part_of(patient: &str, seed: u64, val: f64, test: f64) -> Part {
    let h = cxr_core::fsutil::sha256_bytes(format!("{seed}:{patient}").as_bytes());
    let x = u64::from_str_radix(&h[..13], 16).unwrap_or(0) as f64 / (1u64 << 52) as f64;
    if x < val {
        Part::Val
    } else if x < val + test {
        Part::Test
    } else {
        Part::Train
    }
}

/// Loads pairs (in parallel) resized to `size`; keeps the original size too when `keep_full`.
pub fn load_pairs(
    pairs: &[PairFile],
    size: u32,
    keep_full: bool,
) -> Result<Vec<Sample>, SegmentError> {
    pairs
        .par_iter()
        .map(|p| {
            let image = cxr_core::png8::read_grey8(&p.image)?;
            let mask = cxr_core::png8::read_grey8(&p.mask)?;
            if (image.width, image.height) != (mask.width, mask.height) {
                return Err(SegmentError::data(
                    &p.mask,
                    format!(
                        "mask is {}x{}, image {} is {}x{}",
                        mask.width,
                        mask.height,
                        p.image.display(),
                        image.width,
                        image.height
                    ),
                ));
            }
            let small_img = imageio::resize(&image, size, size);
            let small_mask = imageio::resize_mask(&mask, size, size);
            Ok(Sample {
                name: p.name.clone(),
                patient: p.patient.clone(),
                source: p.source.clone(),
                image: small_img,
                mask: small_mask,
                full_mask: keep_full.then_some(mask),
                full_image: keep_full.then_some(image),
            })
        })
        .collect()
}

/// Random-augmentation ranges (Rajaraman et al. augment with rotation, shift, zoom and flip).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Maximum rotation, degrees (uniform in ±).
    pub rotate_deg: f64,
    /// Maximum shift as a fraction of the side (uniform in ±, x and y independently).
    pub shift: f64,
    /// Maximum zoom deviation (scale uniform in 1 ± zoom).
    pub zoom: f64,
    /// Probability of a horizontal flip.
    pub flip: f64,
    /// The appearance shifts of real archives (contrast, gamma, blur, noise, text, opacities, film
    /// borders); `None` for the geometric augmentation alone (configs written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appearance: Option<crate::appearance::Appearance>,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            rotate_deg: 10.0,
            shift: 0.05,
            zoom: 0.1,
            flip: 0.5,
            appearance: None,
        }
    }
}

impl Augment {
    /// The geometric augmentation plus the appearance shifts of real archives (the `cpu` preset's).
    pub fn archive() -> Self {
        Self {
            appearance: Some(crate::appearance::Appearance::default()),
            ..Self::default()
        }
    }
}

/// Applies one random affine transform to an image (bilinear, edge pixels repeated, like Keras'
/// `fill_mode="nearest"`) and the same transform to its mask (bilinear, then > 0.5). Values in [0, 1].
pub fn augment_pair<R: Rng>(
    image: &[f32],
    mask: &[f32],
    side: usize,
    aug: &Augment,
    rng: &mut R,
) -> (Vec<f32>, Vec<f32>) {
    let angle = rng.random_range(-1.0..=1.0) * aug.rotate_deg.to_radians();
    let scale = 1.0 + rng.random_range(-1.0..=1.0) * aug.zoom;
    let tx = rng.random_range(-1.0..=1.0) * aug.shift * side as f64;
    let ty = rng.random_range(-1.0..=1.0) * aug.shift * side as f64;
    let flip = rng.random::<f64>() < aug.flip;
    // A scanned-film border: the picture shrunk into a constant frame (drawn only when the appearance
    // shifts are on, so a geometric-only config keeps its random sequence).
    let frame = match &aug.appearance {
        Some(a) if rng.random::<f64>() < a.border_p => {
            let shrink = 1.0 - rng.random_range(0.05..=a.border_max.max(0.05));
            let fill = match rng.random_range(0..3) {
                0 => 0.0,
                1 => 1.0,
                _ => rng.random_range(0.0..=1.0f32),
            };
            Some((shrink, fill))
        }
        _ => None,
    };
    let scale = scale * frame.map_or(1.0, |(s, _)| s);
    let c = (side as f64 - 1.0) / 2.0;
    let (sin, cos) = angle.sin_cos();
    let mut out_i = vec![0f32; side * side];
    let mut out_m = vec![0f32; side * side];
    for y in 0..side {
        for x in 0..side {
            // Inverse map: output → source. Undo shift, then rotation and zoom, then flip.
            let (dx, dy) = (x as f64 - c - tx, y as f64 - c - ty);
            let sx = (cos * dx + sin * dy) / scale;
            let sy = (-sin * dx + cos * dy) / scale;
            let sx = if flip { -sx } else { sx } + c;
            let sy = sy + c;
            let o = y * side + x;
            let outside =
                sx < -0.5 || sy < -0.5 || sx > side as f64 - 0.5 || sy > side as f64 - 0.5;
            if let (Some((_, fill)), true) = (frame, outside) {
                out_i[o] = fill;
                out_m[o] = 0.0;
                continue;
            }
            out_i[o] = bilinear(image, side, sx, sy);
            out_m[o] = if bilinear(mask, side, sx, sy) > 0.5 {
                1.0
            } else {
                0.0
            };
        }
    }
    if let Some(a) = &aug.appearance {
        crate::appearance::apply(&mut out_i, &out_m, side, a, rng);
    }
    (out_i, out_m)
}

fn bilinear(img: &[f32], side: usize, x: f64, y: f64) -> f32 {
    let max = (side - 1) as f64;
    let (x, y) = (x.clamp(0.0, max), y.clamp(0.0, max));
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(side - 1), (y0 + 1).min(side - 1));
    let (fx, fy) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
    let a = img[y0 * side + x0] * (1.0 - fx) + img[y0 * side + x1] * fx;
    let b = img[y1 * side + x0] * (1.0 - fx) + img[y1 * side + x1] * fx;
    a * (1.0 - fy) + b * fy
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn patient_keys_and_splits_are_stable() {
        assert_eq!(patient_key("CHNCXR_0001_0"), "CHNCXR_0001");
        assert_eq!(patient_key("MCUCXR_0104_1"), "MCUCXR_0104");
        assert_eq!(patient_key("synthetic-0007"), "synthetic-0007");
        let parts: Vec<Part> = (0..2000)
            .map(|i| part_of(&format!("p{i}"), 3, 0.1, 0.2))
            .collect();
        let val = parts.iter().filter(|p| **p == Part::Val).count();
        let test = parts.iter().filter(|p| **p == Part::Test).count();
        assert!((150..250).contains(&val), "{val}");
        assert!((330..470).contains(&test), "{test}");
        assert_eq!(part_of("p17", 3, 0.1, 0.2), parts[17]);
    }

    #[test]
    fn identity_augmentation_is_exact_and_flip_mirrors() {
        let side = 8;
        let img: Vec<f32> = (0..side * side).map(|i| i as f32 / 64.0).collect();
        let mask: Vec<f32> = (0..side * side)
            .map(|i| if i % side < 3 { 1.0 } else { 0.0 })
            .collect();
        let none = Augment {
            rotate_deg: 0.0,
            shift: 0.0,
            zoom: 0.0,
            flip: 0.0,
            appearance: None,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let (i2, m2) = augment_pair(&img, &mask, side, &none, &mut rng);
        for (a, b) in i2.iter().zip(&img) {
            assert!((a - b).abs() < 1e-6);
        }
        assert_eq!(m2, mask);
        let flip = Augment { flip: 1.0, ..none };
        let (_, m3) = augment_pair(&img, &mask, side, &flip, &mut rng);
        let mirrored: Vec<f32> = (0..side * side)
            .map(|i| if i % side >= side - 3 { 1.0 } else { 0.0 })
            .collect();
        assert_eq!(m3, mirrored);
        // A random transform keeps the mask binary and roughly its area.
        let (_, m4) = augment_pair(&img, &mask, side, &Augment::default(), &mut rng);
        assert!(m4.iter().all(|&v| v == 0.0 || v == 1.0));
    }
}
