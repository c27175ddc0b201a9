//! Inference and the segment stage over a manifest or a folder.
//!
//! Per image (PAPER.md step 3): grey /255, resized to the model side, UNet, the probability map resized back
//! to the image's size (bilinear: thresholding after the resize puts the edge between model pixels, which
//! raised held-out Dice by 0.0015 over resizing the thresholded mask), probability > 0.5, the two largest
//! components kept, holes filled ({0, 255} PNG). Then the
//! lung-box crop and rejection rules of [`crate::crop`]. Images are processed in chunks (decode in parallel,
//! one UNet batch per chunk), so memory stays flat on large manifests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use cxr_core::{Grey8, Manifest, ManifestRecord};
use rayon::prelude::*;

use crate::error::TensorContext;
use crate::{SegmentError, UNet, crop, imageio, postprocess};

/// Columns this stage adds to a manifest, in order.
pub const COLUMNS: [&str; 8] = [
    "mask",
    "crop",
    "crop_x",
    "crop_y",
    "crop_w",
    "crop_h",
    "mask_area",
    "reject_reason",
];

/// The shipped default lung UNet: the weights `segment train` writes with its default command on the
/// default lung-mask sets (`crates/segment/weights/README.md`: the command, the data and their terms, the
/// held-out Dice per source), embedded so that the `cxr` binary and the Python wheel carry them.
pub const DEFAULT_LUNG_UNET: &[u8] = include_bytes!("../weights/lung-unet-default.safetensors");

/// How the shipped default names itself in logs and errors.
pub const DEFAULT_LUNG_UNET_NAME: &str = "<shipped lung-unet-default.safetensors>";

/// Reason recorded when an image cannot be read or decoded.
pub const UNREADABLE: &str = "unreadable";

/// A trained UNet ready for inference.
pub struct Segmenter {
    unet: UNet,
    /// Images per forward pass.
    pub batch: usize,
    /// Test-time flip: average the probabilities of each image and of its mirror image. On by default: it
    /// raised held-out Dice on every source measured (+0.001 to +0.003, docs/PERFORMANCE.md) for twice the
    /// inference cost, which is small beside decoding.
    pub flip_tta: bool,
}

impl Segmenter {
    pub fn new(unet: UNet) -> Self {
        Self {
            unet,
            batch: 8,
            flip_tta: true,
        }
    }

    /// Loads weights written by training (config read from the file) on [`crate::default_device`].
    pub fn load(path: &Path) -> Result<Self, SegmentError> {
        Ok(Self::new(UNet::load(path, &crate::default_device())?))
    }

    /// The shipped default lung UNet ([`DEFAULT_LUNG_UNET`]), embedded in the library: no file to find.
    pub fn default_lung() -> Result<Self, SegmentError> {
        let name = Path::new(DEFAULT_LUNG_UNET_NAME);
        Ok(Self::new(UNet::from_bytes(
            DEFAULT_LUNG_UNET,
            name,
            &crate::default_device(),
        )?))
    }

    /// [`Segmenter::load`] of `weights`, or [`Segmenter::default_lung`] when none is given.
    pub fn load_or_default(weights: Option<&Path>) -> Result<Self, SegmentError> {
        match weights {
            Some(p) => Self::load(p),
            None => Self::default_lung(),
        }
    }

    pub fn unet(&self) -> &UNet {
        &self.unet
    }

    /// Probability maps at the model side (row-major, side x side) for images of any size.
    pub fn probabilities(&self, images: &[Grey8]) -> Result<Vec<Vec<f32>>, SegmentError> {
        probabilities(&self.unet, images, self.batch, self.flip_tta)
    }

    /// Post-processed masks ({0, 255}) at each input image's own size.
    pub fn predict_masks(&self, images: &[Grey8]) -> Result<Vec<Grey8>, SegmentError> {
        let side = self.unet.config().size;
        let probs = self.probabilities(images)?;
        Ok(images
            .par_iter()
            .zip(probs)
            .map(|(img, p)| {
                let prob = imageio::resize_prob(&p, side, img.width, img.height);
                Grey8 {
                    width: img.width,
                    height: img.height,
                    data: postprocess::binarize(&prob, img.width as usize, img.height as usize),
                }
            })
            .collect())
    }
}

/// Probability maps at the model side (row-major, side x side) for images of any size, `batch` per pass;
/// with `flip`, each map is the mean of the image's and its mirror image's (mirrored back).
pub fn probabilities(
    unet: &UNet,
    images: &[Grey8],
    batch: usize,
    flip: bool,
) -> Result<Vec<Vec<f32>>, SegmentError> {
    let side = unet.config().size;
    let s = side as usize;
    let mut out = Vec::with_capacity(images.len());
    let run = |flat: Vec<f32>, n: usize| -> Result<Vec<f32>, SegmentError> {
        let x = Tensor::from_vec(flat, (n, 1, s, s), unet.device()).ctx(|| "UNet input".into())?;
        unet.predict(&x)
            .and_then(|p| p.flatten_all())
            .and_then(|p| p.to_vec1::<f32>())
            .ctx(|| "UNet forward".into())
    };
    for chunk in images.chunks(batch.max(1)) {
        let flat: Vec<f32> = chunk
            .par_iter()
            .flat_map_iter(|img| imageio::to_unit(&imageio::resize(img, side, side)))
            .collect();
        let mirrored = flip.then(|| mirror_rows(&flat, s));
        let mut p = run(flat, chunk.len())?;
        if let Some(m) = mirrored {
            let q = mirror_rows(&run(m, chunk.len())?, s);
            for (a, b) in p.iter_mut().zip(q) {
                *a = 0.5 * (*a + b);
            }
        }
        out.extend(p.chunks(s * s).map(<[f32]>::to_vec));
    }
    Ok(out)
}

/// Every row of every `side`-wide map reversed (a horizontal mirror).
fn mirror_rows(flat: &[f32], side: usize) -> Vec<f32> {
    flat.chunks(side)
        .flat_map(|row| row.iter().rev().copied())
        .collect()
}

/// Dice coefficient of two masks (non-zero = foreground); 1 when both are empty.
pub fn dice(a: &[u8], b: &[u8]) -> f64 {
    let (mut inter, mut sa, mut sb) = (0u64, 0u64, 0u64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x != 0, y != 0);
        inter += u64::from(x && y);
        sa += u64::from(x);
        sb += u64::from(y);
    }
    if sa + sb == 0 {
        1.0
    } else {
        2.0 * inter as f64 / (sa + sb) as f64
    }
}

/// Options of a manifest run.
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// Column holding the 8-bit image (relative to the manifest's folder): `png8` by the contract.
    pub image_column: String,
    /// Records per chunk (decoded together, then segmented in UNet batches).
    pub chunk: usize,
    /// Process only this shard's rows (`cxr_core::shard`): `manifest.part-K-of-N.csv` and
    /// `rejects.part-K-of-N.csv` instead of `manifest.csv` and `rejects.csv`; masks and crops keep their
    /// per-id names in the shared folder.
    pub shard: Option<cxr_core::Shard>,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self {
            image_column: "png8".into(),
            chunk: 32,
            shard: None,
        }
    }
}

/// What a batch run did (read back from the study's stage cache, hence `Deserialize`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SegmentSummary {
    pub images: usize,
    pub kept: usize,
    /// Rejected or failed images by reason (`empty_mask`, `small_crop`, `unreadable`).
    pub rejected: BTreeMap<String, usize>,
    /// Path of the manifest written (manifest runs only).
    pub manifest: Option<PathBuf>,
    /// The same counts per record source (manifest runs only): a rejection rule that hits one source
    /// harder than the others changes the source mix the classifier sees, a confounder of its own.
    pub by_source: BTreeMap<String, SourceCounts>,
}

/// Images, kept and rejected (by reason) of one source.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceCounts {
    pub images: usize,
    pub kept: usize,
    pub rejected: BTreeMap<String, usize>,
}

impl SegmentSummary {
    /// Counts one record of `source`: kept when `reason` is None, else rejected for it.
    fn count(&mut self, source: &str, reason: Option<&str>) {
        let s = self.by_source.entry(source.to_string()).or_default();
        s.images += 1;
        match reason {
            None => {
                self.kept += 1;
                s.kept += 1;
            }
            Some(r) => {
                *self.rejected.entry(r.into()).or_default() += 1;
                *s.rejected.entry(r.into()).or_default() += 1;
            }
        }
    }
}

/// Progress callback: (images done, images in all).
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// The segment stage: for each record, reads `image_column`, predicts the mask, crops, and writes
/// `out_dir/masks/<id>.png`, `out_dir/crops/<id>.png`, `out_dir/manifest.csv` (with [`COLUMNS`]; relative
/// `path` and image columns rebased onto `out_dir`) and `out_dir/rejects.csv`.
pub fn segment_manifest(
    seg: &Segmenter,
    manifest_path: &Path,
    out_dir: &Path,
    opts: &SegmentOptions,
    progress: Progress<'_>,
) -> Result<SegmentSummary, SegmentError> {
    let manifest = Manifest::read(manifest_path)?;
    Ok(segment_records(seg, manifest, out_dir, opts, progress)?.0)
}

/// [`segment_manifest`] of a manifest already in memory (relative cells resolved against its
/// `base_dir`): the same files under `out_dir`, and the manifest with the new columns (new cells absolute).
pub fn segment_records(
    seg: &Segmenter,
    manifest: Manifest,
    out_dir: &Path,
    opts: &SegmentOptions,
    progress: Progress<'_>,
) -> Result<(SegmentSummary, Manifest), SegmentError> {
    run_manifest(
        manifest,
        out_dir,
        opts,
        progress,
        |images| seg.predict_masks(images),
        None,
    )
}

/// Crops from masks already listed in the manifest's `mask` column (e.g. ground truth or an earlier
/// `predict`), writing the same outputs as [`segment_manifest`] except new masks.
pub fn crop_manifest(
    manifest_path: &Path,
    out_dir: &Path,
    opts: &SegmentOptions,
    progress: Progress<'_>,
) -> Result<SegmentSummary, SegmentError> {
    let manifest = Manifest::read(manifest_path)?;
    if !manifest.extra_columns.iter().any(|c| c == "mask") {
        return Err(SegmentError::data(
            manifest_path,
            "no `mask` column: run `segment predict` first",
        ));
    }
    let base = manifest.base_dir.clone();
    Ok(run_manifest(
        manifest,
        out_dir,
        opts,
        progress,
        |_| Ok(Vec::new()),
        Some(base),
    )?
    .0)
}

/// Shared loop. `predict` maps decoded images to masks; when `mask_base` is set, masks are read from the
/// records' `mask` column (resolved against it) instead.
fn run_manifest(
    mut manifest: Manifest,
    out_dir: &Path,
    opts: &SegmentOptions,
    progress: Progress<'_>,
    predict: impl Fn(&[Grey8]) -> Result<Vec<Grey8>, SegmentError>,
    mask_base: Option<PathBuf>,
) -> Result<(SegmentSummary, Manifest), SegmentError> {
    if let Some(s) = &opts.shard {
        manifest = s.filter(&manifest);
    }
    let base = manifest.base_dir.clone();
    let out_abs = cxr_core::absolute_path(out_dir);
    let total = manifest.records.len();
    let mut summary = SegmentSummary {
        images: total,
        ..Default::default()
    };
    let mut rejects: Vec<(String, String, String)> = Vec::new();
    let column = opts.image_column.clone();
    let mut done = 0;
    for chunk in manifest.records.chunks_mut(opts.chunk.max(1)) {
        // Decode in parallel; a bad file becomes a recorded reject, not an error.
        type Loaded = Result<(Grey8, Option<Grey8>), String>;
        let loaded: Vec<Loaded> = chunk
            .par_iter()
            .map(|r| {
                let rel = r
                    .get(&column)
                    .filter(|v| !v.trim().is_empty())
                    .ok_or_else(|| format!("empty `{column}` column"))?;
                let img =
                    cxr_core::png8::read_grey8(&resolve(&base, &rel)).map_err(|e| e.to_string())?;
                let mask = match &mask_base {
                    None => None,
                    Some(mb) => {
                        let m = r
                            .get("mask")
                            .filter(|v| !v.trim().is_empty())
                            .ok_or_else(|| "empty `mask` column".to_string())?;
                        let m = cxr_core::png8::read_grey8(&resolve(mb, &m))
                            .map_err(|e| e.to_string())?;
                        if (m.width, m.height) != (img.width, img.height) {
                            return Err(format!(
                                "mask {}x{} differs from image {}x{}",
                                m.width, m.height, img.width, img.height
                            ));
                        }
                        Some(m)
                    }
                };
                Ok((img, mask))
            })
            .collect();
        let ok_images: Vec<Grey8> = loaded
            .iter()
            .filter_map(|l| l.as_ref().ok().map(|(i, _)| i.clone()))
            .collect();
        let mut predicted = if mask_base.is_none() {
            predict(&ok_images)?.into_iter()
        } else {
            Vec::new().into_iter()
        };
        let mut ok_iter = ok_images.into_iter();
        for (record, l) in chunk.iter_mut().zip(loaded) {
            let file = record.get(&column).unwrap_or_default();
            match l {
                Err(message) => {
                    tracing::warn!(id = %record.id, "segment: {message}");
                    set_reject_columns(record, UNREADABLE);
                    summary.count(record.source.as_str(), Some(UNREADABLE));
                    rejects.push((record.id.clone(), file, format!("{UNREADABLE}: {message}")));
                }
                Ok((_, given_mask)) => {
                    let img = ok_iter.next().ok_or_else(|| {
                        SegmentError::Config("internal: image count mismatch".into())
                    })?;
                    let mask = match given_mask {
                        Some(m) => m,
                        None => predicted.next().ok_or_else(|| {
                            SegmentError::Config("internal: mask count mismatch".into())
                        })?,
                    };
                    let mask_rel = if mask_base.is_some() {
                        record.get("mask").unwrap_or_default()
                    } else {
                        let file = out_abs
                            .join("masks")
                            .join(format!("{}.png", cxr_core::outname::safe_stem(&record.id)));
                        cxr_core::png8::write_grey8(&file, &mask)?;
                        file.to_string_lossy().into_owned()
                    };
                    let decision = crop::lung_box(&mask);
                    record.set("mask", mask_rel);
                    record.set("mask_area", decision.mask_area.to_string());
                    let (xs, ys, ws, hs) = match decision.crop {
                        Some(b) => (
                            b.x.to_string(),
                            b.y.to_string(),
                            b.w.to_string(),
                            b.h.to_string(),
                        ),
                        None => Default::default(),
                    };
                    record.set("crop_x", xs);
                    record.set("crop_y", ys);
                    record.set("crop_w", ws);
                    record.set("crop_h", hs);
                    match (decision.reject, decision.crop) {
                        (None, Some(b)) => {
                            let file = out_abs
                                .join("crops")
                                .join(format!("{}.png", cxr_core::outname::safe_stem(&record.id)));
                            let c = imageio::crop(&img, b.x, b.y, b.w, b.h);
                            cxr_core::png8::write_grey8(&file, &c)?;
                            record.set("crop", file.to_string_lossy().into_owned());
                            record.set("reject_reason", "");
                            summary.count(record.source.as_str(), None);
                        }
                        (reason, _) => {
                            let reason = reason.unwrap_or(crop::RejectReason::EmptyMask).as_str();
                            record.set("crop", "");
                            record.set("reject_reason", reason);
                            summary.count(record.source.as_str(), Some(reason));
                            rejects.push((record.id.clone(), file, reason.into()));
                        }
                    }
                }
            }
        }
        done += chunk.len();
        progress(done, total);
    }
    // New cells are absolute, the input's are relative to its folder: `write` re-expresses both for the
    // output folder (the path rule of `cxr_core::manifest`).
    for c in COLUMNS {
        if !manifest.extra_columns.iter().any(|e| e == c) {
            manifest.extra_columns.push(c.to_string());
        }
    }
    let name = |n: &str| match &opts.shard {
        Some(s) => s.part_path(&out_dir.join(n)),
        None => out_dir.join(n),
    };
    let out_manifest = name("manifest.csv");
    manifest.write(&out_manifest)?;
    write_rejects(&name("rejects.csv"), &rejects)?;
    summary.manifest = Some(out_manifest);
    Ok((summary, manifest))
}

fn set_reject_columns(record: &mut ManifestRecord, reason: &str) {
    for c in COLUMNS {
        record.set(c, "");
    }
    record.set("reject_reason", reason);
}

fn resolve(base: &Path, rel: &str) -> PathBuf {
    let p = Path::new(rel);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn write_rejects(path: &Path, rows: &[(String, String, String)]) -> Result<(), SegmentError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| SegmentError::data(path, e.to_string());
    w.write_record(["id", "file", "reason"]).map_err(err)?;
    for (id, file, reason) in rows {
        w.write_record([id, file, reason]).map_err(err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| SegmentError::data(path, e.to_string()))?;
    cxr_core::fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

/// Predicts masks for every readable image in a folder (format by content), written as
/// `out_dir/<file stem>.png`; unreadable files are listed in `out_dir/rejects.csv`.
pub fn predict_folder(
    seg: &Segmenter,
    dir: &Path,
    out_dir: &Path,
    progress: Progress<'_>,
) -> Result<SegmentSummary, SegmentError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| SegmentError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut summary = SegmentSummary {
        images: files.len(),
        ..Default::default()
    };
    let mut rejects = Vec::new();
    let mut done = 0;
    for chunk in files.chunks(32) {
        let loaded: Vec<_> = chunk
            .par_iter()
            .map(|p| cxr_core::png8::read_grey8(p))
            .collect();
        let mut ok = Vec::new();
        let mut names = Vec::new();
        for (p, l) in chunk.iter().zip(loaded) {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            match l {
                Ok(img) => {
                    ok.push(img);
                    names.push(name);
                }
                Err(e) => {
                    *summary.rejected.entry(UNREADABLE.into()).or_default() += 1;
                    rejects.push((name, p.display().to_string(), e.to_string()));
                }
            }
        }
        for (name, mask) in names.iter().zip(seg.predict_masks(&ok)?) {
            cxr_core::png8::write_grey8(
                &out_dir.join(format!("{}.png", cxr_core::outname::safe_stem(name))),
                &mask,
            )?;
            match crop::lung_box(&mask).reject {
                None => summary.kept += 1,
                Some(r) => *summary.rejected.entry(r.as_str().into()).or_default() += 1,
            }
        }
        done += chunk.len();
        progress(done, files.len());
    }
    write_rejects(&out_dir.join("rejects.csv"), &rejects)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxr_core::{ImageFormat, Label, SourceId};

    #[test]
    fn dice() {
        assert_eq!(super::dice(&[0, 0], &[0, 0]), 1.0);
        assert_eq!(super::dice(&[255, 255, 0, 0], &[255, 0, 255, 0]), 0.5);
    }

    /// A 20x20 mask with the rectangle (x, y, w, h) set.
    fn mask(rect: Option<(u32, u32, u32, u32)>) -> Grey8 {
        let mut m = Grey8 {
            width: 20,
            height: 20,
            data: vec![0; 400],
        };
        if let Some((x, y, w, h)) = rect {
            for yy in y..y + h {
                for xx in x..x + w {
                    m.data[(yy * 20 + xx) as usize] = 255;
                }
            }
        }
        m
    }

    /// Every file under `root`, recursively.
    fn files_under(root: &Path) -> Vec<PathBuf> {
        cxr_core::fsutil::files_under(root).unwrap()
    }

    /// `segment crop` (masks from the manifest) and `segment predict` (masks from the model, here a fixed
    /// closure) with hostile ids: every mask and crop stays under `out/masks` / `out/crops`, one file per row.
    #[test]
    fn hostile_ids_never_write_outside_out() {
        for predicted in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let input = dir.path().join("in");
            let image = Grey8::new(20, 20, vec![128; 400]).unwrap();
            let lungs = mask(Some((2, 2, 16, 16)));
            cxr_core::png8::write_grey8(&input.join("img.png"), &image).unwrap();
            cxr_core::png8::write_grey8(&input.join("mask.png"), &lungs).unwrap();
            let long = "Y".repeat(400);
            let ids: Vec<&str> = cxr_core::outname::HOSTILE_IDS
                .iter()
                .copied()
                .filter(|id| !id.is_empty())
                .chain([long.as_str()])
                .collect();
            let records: Vec<ManifestRecord> = ids
                .iter()
                .map(|id| {
                    let mut r = ManifestRecord {
                        id: id.to_string(),
                        source: SourceId::new("nih").unwrap(),
                        label: Label::Pneumonia,
                        patient: "p".into(),
                        view: "PA".into(),
                        path: PathBuf::from("img.png"),
                        format: ImageFormat::Png,
                        sha256: "00".repeat(32),
                        split: None,
                        extra: Default::default(),
                    };
                    r.set("png8", "img.png");
                    r.set("mask", "mask.png");
                    r
                })
                .collect();
            let out = dir.path().join("deep/out");
            let mut manifest = Manifest::new(records);
            manifest.base_dir = input.clone();
            let s = run_manifest(
                manifest,
                &out,
                &SegmentOptions::default(),
                &mut |_, _| {},
                |imgs| Ok(vec![lungs.clone(); imgs.len()]),
                (!predicted).then(|| input.clone()),
            )
            .unwrap()
            .0;
            assert_eq!(s.kept, ids.len(), "predicted={predicted}");
            let written: Vec<PathBuf> = files_under(dir.path())
                .into_iter()
                .filter(|p| !p.starts_with(&input))
                .collect();
            for p in &written {
                assert!(
                    p.starts_with(&out),
                    "{} escaped {}",
                    p.display(),
                    out.display()
                );
            }
            let count = |sub: &str| {
                written
                    .iter()
                    .filter(|p| p.starts_with(out.join(sub)))
                    .count()
            };
            assert_eq!(count("crops"), ids.len(), "predicted={predicted}");
            assert_eq!(count("masks"), if predicted { ids.len() } else { 0 });
        }
    }

    #[test]
    fn per_source_counts_add_up_to_the_totals() {
        let dir = tempfile::tempdir().unwrap();
        let image = Grey8 {
            width: 20,
            height: 20,
            data: vec![128; 400],
        };
        // (id, source, lung mask or None for an unreadable image): nih keeps one and loses one to each
        // mask rule; bimcv keeps two and loses one unreadable file.
        let lungs = Some((2, 2, 16, 16));
        let cases = [
            ("a", "nih", Some(lungs)),
            ("b", "nih", Some(None)),
            ("c", "nih", Some(Some((4, 4, 3, 3)))),
            ("d", "bimcv", Some(lungs)),
            ("e", "bimcv", Some(lungs)),
            ("f", "bimcv", None),
        ];
        let mut records = Vec::new();
        for (id, source, m) in cases {
            let png = format!("png/{id}.png");
            let mpath = format!("mask/{id}.png");
            match m {
                Some(rect) => {
                    cxr_core::png8::write_grey8(&dir.path().join(&png), &image).unwrap();
                    cxr_core::png8::write_grey8(&dir.path().join(&mpath), &mask(rect)).unwrap();
                }
                None => {
                    std::fs::create_dir_all(dir.path().join("png")).unwrap();
                    std::fs::write(dir.path().join(&png), b"not a png").unwrap();
                }
            }
            let mut r = ManifestRecord {
                id: id.into(),
                source: SourceId::new(source).unwrap(),
                label: Label::Pneumonia,
                patient: format!("p-{id}"),
                view: "PA".into(),
                path: PathBuf::from(&png),
                format: ImageFormat::Png,
                sha256: "00".repeat(32),
                split: None,
                extra: Default::default(),
            };
            r.set("png8", png);
            r.set("mask", mpath);
            records.push(r);
        }
        let manifest = dir.path().join("manifest.csv");
        Manifest::new(records).write(&manifest).unwrap();
        let s = crop_manifest(
            &manifest,
            &dir.path().join("out"),
            &SegmentOptions::default(),
            &mut |_, _| {},
        )
        .unwrap();

        let counts = |images, kept, rejected: &[(&str, usize)]| SourceCounts {
            images,
            kept,
            rejected: rejected.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
        };
        assert_eq!(
            s.by_source["nih"],
            counts(3, 1, &[("empty_mask", 1), ("small_crop", 1)])
        );
        assert_eq!(s.by_source["bimcv"], counts(3, 2, &[(UNREADABLE, 1)]));
        assert_eq!(s.by_source.len(), 2);
        // The per-source counts add up to the totals, reason by reason.
        let v: Vec<&SourceCounts> = s.by_source.values().collect();
        assert_eq!(v.iter().map(|c| c.images).sum::<usize>(), s.images);
        assert_eq!(v.iter().map(|c| c.kept).sum::<usize>(), s.kept);
        for (reason, n) in &s.rejected {
            let per: usize = v.iter().filter_map(|c| c.rejected.get(reason)).sum();
            assert_eq!(per, *n, "{reason}");
        }
        assert_eq!(s.images, 6);
        assert_eq!(s.kept, 3);
    }
}
