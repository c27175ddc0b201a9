//! Pictures: a Grad-CAM overlay (heat in a "jet" colour map over the grey image, the lung mask outlined in
//! green) and galleries per source and class, sorted by how much heat falls outside the lungs (most first),
//! so the images where the model looks away from the lungs are the first ones a reader sees.
//!
//! [`ExplainWriter`] streams: it writes each overlay as it comes and keeps only one small row per image,
//! then builds the galleries from the overlay files at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cxr_core::{Grey8, Label, SourceId};
use image::{ImageEncoder, RgbImage};
use serde::Serialize;

use crate::energy::{self, EnergyRow, EnergySummary};
use crate::error::{ExplainError, Result};
use crate::gradcam::Heatmap;
use crate::occlusion::{MASK_THRESHOLD, mask_area_fraction};

/// The "jet" colour map (blue → cyan → yellow → red) at `t` in `[0, 1]`.
pub fn jet(t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0);
    let c = |x: f32| ((1.5 - x.abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [c(4.0 * t - 3.0), c(4.0 * t - 2.0), c(4.0 * t - 1.0)]
}

/// Colour of the lung outline.
pub const OUTLINE: [u8; 3] = [0, 255, 0];

/// Heat blended over the grey image with weight `alpha` (0 = image only), the heat resized bilinearly to
/// the image first; lung pixels with a 4-neighbour outside the mask (or on the image edge) drawn in
/// [`OUTLINE`]. The mask, when given, must have the image's size.
pub fn overlay(
    image: &Grey8,
    heat: &Heatmap,
    mask: Option<&Grey8>,
    alpha: f32,
) -> Result<RgbImage> {
    let (w, h) = (image.width as usize, image.height as usize);
    if let Some(m) = mask
        && (m.width != image.width || m.height != image.height)
    {
        return Err(ExplainError::shape(
            "lung mask",
            format!("mask is {}x{} but the image is {w}x{h}", m.width, m.height),
        ));
    }
    let heat = heat.resize(w, h);
    let mut out = RgbImage::new(image.width, image.height);
    for (i, px) in out.pixels_mut().enumerate() {
        let g = image.data[i] as f32;
        let c = jet(heat.data[i]);
        px.0 = c.map(|c| {
            ((1.0 - alpha) * g + alpha * c as f32)
                .round()
                .clamp(0.0, 255.0) as u8
        });
    }
    if let Some(m) = mask {
        let lung = |x: usize, y: usize| m.data[y * w + x] >= MASK_THRESHOLD;
        for y in 0..h {
            for x in 0..w {
                let edge = lung(x, y)
                    && (x == 0
                        || y == 0
                        || x + 1 == w
                        || y + 1 == h
                        || !lung(x - 1, y)
                        || !lung(x + 1, y)
                        || !lung(x, y - 1)
                        || !lung(x, y + 1));
                if edge {
                    out.put_pixel(x as u32, y as u32, image::Rgb(OUTLINE));
                }
            }
        }
    }
    Ok(out)
}

/// Encodes an RGB image as PNG and writes it atomically.
pub fn write_png_rgb(path: &Path, img: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| ExplainError::Image {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    cxr_core::fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

/// Writes an 8-bit grey PNG atomically (occlusion images): `cxr_core::png8::write_grey8` with this crate's
/// error (kept for xtask's callers).
pub fn write_png_grey(path: &Path, img: &Grey8) -> Result<()> {
    Ok(cxr_core::png8::write_grey8(path, img)?)
}

/// Reads a PNG or JPEG (a mask, a `png8`, a `crop`) as 8-bit grey: `cxr_core::png8::read_grey8` with this
/// crate's error (kept for xtask's callers).
pub fn read_grey8(path: &Path) -> Result<Grey8> {
    Ok(cxr_core::png8::read_grey8(path)?)
}

/// Options of [`ExplainWriter`].
#[derive(Debug, Clone)]
pub struct ExplainConfig {
    /// Weight of the heat colour in overlays.
    pub alpha: f32,
    /// Side of a gallery thumbnail in pixels.
    pub thumb: u32,
    /// Thumbnails per gallery row.
    pub columns: u32,
    /// At most this many images per gallery (the ones with most heat outside the lungs); the gallery's CSV
    /// lists them all.
    pub max_per_gallery: usize,
}

impl Default for ExplainConfig {
    fn default() -> Self {
        Self {
            alpha: 0.45,
            thumb: 128,
            columns: 8,
            max_per_gallery: 64,
        }
    }
}

/// One image to explain: what the model saw, before its own resize, and the lung mask on the same pixels.
#[derive(Debug, Clone)]
pub struct CamItem {
    pub id: String,
    pub source: SourceId,
    pub label: Label,
    pub image: Grey8,
    pub mask: Grey8,
}

/// What [`ExplainWriter::finish`] wrote.
#[derive(Debug, Clone)]
pub struct ExplainOutputs {
    pub rows: Vec<EnergyRow>,
    pub summary: Vec<EnergySummary>,
    /// `lung_energy.csv`
    pub energy_csv: PathBuf,
    /// `lung_energy_summary.csv`
    pub summary_csv: PathBuf,
    /// One PNG per (source, class), under `gallery/`.
    pub galleries: Vec<PathBuf>,
}

/// Writes overlays (`overlays/<id>.png`), `lung_energy.csv`, `lung_energy_summary.csv` and galleries
/// (`gallery/<source>__<class>.png` + `.csv`) under one folder.
pub struct ExplainWriter {
    out_dir: PathBuf,
    cfg: ExplainConfig,
    rows: Vec<EnergyRow>,
    overlays: Vec<PathBuf>,
}

impl ExplainWriter {
    pub fn new(out_dir: &Path, cfg: ExplainConfig) -> Result<Self> {
        for sub in ["overlays", "gallery"] {
            let d = out_dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|source| ExplainError::Io { path: d, source })?;
        }
        Ok(Self {
            out_dir: out_dir.to_path_buf(),
            cfg,
            rows: Vec::new(),
            overlays: Vec::new(),
        })
    }

    /// Records one explained image: `heat` is its Grad-CAM at the model's input size (resized here to the
    /// image), `logit` the model's Covid-19 logit. Writes the overlay and returns the image's row.
    pub fn add(&mut self, item: &CamItem, heat: &Heatmap, logit: f32) -> Result<EnergyRow> {
        self.add_with_map(item, heat, logit, None)
    }

    /// As [`Self::add`], with the map's native width in cells (Grad-CAM's feature map, an occlusion map's
    /// positions), recorded as `lung_cells` so the audit can tell a map too coarse to localise anything.
    pub fn add_with_map(
        &mut self,
        item: &CamItem,
        heat: &Heatmap,
        logit: f32,
        map_width: Option<usize>,
    ) -> Result<EnergyRow> {
        let row = energy_row(item, heat, logit, map_width)?;
        let heat = heat.resize(item.image.width as usize, item.image.height as usize);
        let img = overlay(&item.image, &heat, Some(&item.mask), self.cfg.alpha)
            .map_err(|e| annotate(e, &item.id))?;
        let path = self
            .out_dir
            .join("overlays")
            .join(format!("{}.png", cxr_core::outname::safe_stem(&item.id)));
        write_png_rgb(&path, &img)?;
        self.rows.push(row.clone());
        self.overlays.push(path);
        Ok(row)
    }

    /// Writes the CSVs and the galleries.
    pub fn finish(self) -> Result<ExplainOutputs> {
        let energy_csv = self.out_dir.join("lung_energy.csv");
        energy::write_energy_csv(&energy_csv, &self.rows)?;
        let summary = energy::summarise(&self.rows);
        let summary_csv = self.out_dir.join("lung_energy_summary.csv");
        energy::write_summary_csv(&summary_csv, &summary)?;
        let mut groups: BTreeMap<(String, Label), Vec<usize>> = BTreeMap::new();
        for (i, r) in self.rows.iter().enumerate() {
            groups
                .entry((r.source.as_str().to_string(), r.label))
                .or_default()
                .push(i);
        }
        let mut galleries = Vec::new();
        for ((source, label), mut idx) in groups {
            // Most heat outside the lungs first; maps with no energy last; ties by id for stable output.
            idx.sort_by(|&a, &b| {
                let (ra, rb) = (&self.rows[a], &self.rows[b]);
                let key = |r: &EnergyRow| r.outside_share().unwrap_or(f64::NEG_INFINITY);
                key(rb).total_cmp(&key(ra)).then_with(|| ra.id.cmp(&rb.id))
            });
            let stem = format!(
                "{}__{}",
                cxr_core::outname::safe_stem(&source),
                label.as_str()
            );
            let listing: Vec<GalleryRow> = idx
                .iter()
                .enumerate()
                .map(|(rank, &i)| GalleryRow {
                    rank: rank + 1,
                    id: self.rows[i].id.clone(),
                    outside_share: self.rows[i].outside_share(),
                    overlay: self.overlays[i]
                        .strip_prefix(&self.out_dir)
                        .unwrap_or(&self.overlays[i])
                        .display()
                        .to_string(),
                })
                .collect();
            let csv_path = self.out_dir.join("gallery").join(format!("{stem}.csv"));
            cxr_core::fsutil::write_atomic(&csv_path, &energy::to_csv(&listing, &csv_path)?)?;
            let shown: Vec<&Path> = idx
                .iter()
                .take(self.cfg.max_per_gallery)
                .map(|&i| self.overlays[i].as_path())
                .collect();
            let png = self.out_dir.join("gallery").join(format!("{stem}.png"));
            write_png_rgb(
                &png,
                &contact_sheet(&shown, self.cfg.thumb, self.cfg.columns)?,
            )?;
            galleries.push(png);
        }
        tracing::info!(
            images = self.rows.len(),
            galleries = galleries.len(),
            "explain outputs written to {}",
            self.out_dir.display()
        );
        Ok(ExplainOutputs {
            rows: self.rows,
            summary,
            energy_csv,
            summary_csv,
            galleries,
        })
    }
}

/// The row [`ExplainWriter::add_with_map`] records for an image (`heat` at the model's input size), without
/// writing anything: for an audit that keeps no files.
pub fn energy_row(
    item: &CamItem,
    heat: &Heatmap,
    logit: f32,
    map_width: Option<usize>,
) -> Result<EnergyRow> {
    let heat = heat.resize(item.image.width as usize, item.image.height as usize);
    let lung_energy =
        energy::lung_energy_fraction(&heat, &item.mask).map_err(|e| annotate(e, &item.id))?;
    Ok(EnergyRow {
        id: item.id.clone(),
        source: item.source.clone(),
        label: item.label,
        logit,
        lung_energy,
        mask_area: mask_area_fraction(&item.mask),
        lung_cells: map_width.and_then(|w| energy::lung_cells(&item.mask, w)),
    })
}

fn annotate(e: ExplainError, id: &str) -> ExplainError {
    ExplainError::invalid(format!("image {id}"), e.to_string())
}

#[derive(Serialize)]
struct GalleryRow {
    rank: usize,
    id: String,
    outside_share: Option<f64>,
    overlay: String,
}

/// A grid of thumbnails (aspect kept, letter-boxed in black, 2-pixel gaps), in the given order.
pub fn contact_sheet(files: &[&Path], thumb: u32, columns: u32) -> Result<RgbImage> {
    let columns = columns.max(1).min(files.len().max(1) as u32);
    let rows = (files.len() as u32).div_ceil(columns).max(1);
    let gap = 2;
    let mut sheet = RgbImage::new(columns * (thumb + gap) + gap, rows * (thumb + gap) + gap);
    for (k, file) in files.iter().enumerate() {
        let img = image::open(file)
            .map_err(|e| ExplainError::Image {
                path: file.to_path_buf(),
                message: e.to_string(),
            })?
            .to_rgb8();
        let scale = thumb as f64 / img.width().max(img.height()) as f64;
        let (tw, th) = (
            ((img.width() as f64 * scale).round() as u32).clamp(1, thumb),
            ((img.height() as f64 * scale).round() as u32).clamp(1, thumb),
        );
        let small = image::imageops::resize(&img, tw, th, image::imageops::FilterType::Triangle);
        let (col, row) = (k as u32 % columns, k as u32 / columns);
        let x0 = gap + col * (thumb + gap) + (thumb - tw) / 2;
        let y0 = gap + row * (thumb + gap) + (thumb - th) / 2;
        image::imageops::replace(&mut sheet, &small, x0 as i64, y0 as i64);
    }
    Ok(sheet)
}

/// A PNG of `path` shrunk to at most `max_width` pixels wide (aspect kept; never enlarged), for a report that
/// shows galleries as small inline previews and links the full-size files beside it.
pub fn thumbnail_png(path: &Path, max_width: u32) -> Result<Vec<u8>> {
    let img = image::open(path)
        .map_err(|e| ExplainError::Image {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
        .to_rgb8();
    let small = if img.width() > max_width.max(1) {
        let w = max_width.max(1);
        let h = ((img.height() as f64 * w as f64 / img.width() as f64).round() as u32).max(1);
        image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle)
    } else {
        img
    };
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(
            small.as_raw(),
            small.width(),
            small.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| ExplainError::Image {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_shrink_wide_images_and_keep_small_ones() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.png");
        write_png_rgb(&big, &RgbImage::new(800, 400)).unwrap();
        let thumb = image::load_from_memory(&thumbnail_png(&big, 200).unwrap()).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (200, 100));
        let small = dir.path().join("small.png");
        write_png_rgb(&small, &RgbImage::new(50, 30)).unwrap();
        let same = image::load_from_memory(&thumbnail_png(&small, 200).unwrap()).unwrap();
        assert_eq!((same.width(), same.height()), (50, 30));
        assert!(thumbnail_png(&dir.path().join("absent.png"), 200).is_err());
    }

    #[test]
    fn jet_runs_blue_to_red() {
        assert_eq!(jet(0.0), [0, 0, 128]);
        assert_eq!(jet(1.0), [128, 0, 0]);
        assert_eq!(jet(0.5), [128, 255, 128]);
    }

    #[test]
    fn overlay_blends_and_outlines_the_mask() {
        let image = Grey8::new(5, 5, vec![100; 25]).unwrap();
        let mut mask = vec![0u8; 25];
        for y in 1..4 {
            for x in 1..4 {
                mask[y * 5 + x] = 255;
            }
        }
        let mask = Grey8::new(5, 5, mask).unwrap();
        let heat = Heatmap::new(5, 5, vec![0.0; 25]).unwrap();
        let out = overlay(&image, &heat, Some(&mask), 0.5).unwrap();
        // Outside: 0.5*100 + 0.5*jet(0) = (50, 50, 114); ring of the 3x3 lung: green; its centre: blended.
        assert_eq!(out.get_pixel(0, 0).0, [50, 50, 114]);
        assert_eq!(out.get_pixel(1, 1).0, OUTLINE);
        assert_eq!(out.get_pixel(3, 2).0, OUTLINE);
        assert_eq!(out.get_pixel(2, 2).0, [50, 50, 114]);
        let bad = Grey8::new(4, 5, vec![0; 20]).unwrap();
        assert!(overlay(&image, &heat, Some(&bad), 0.5).is_err());
    }

    #[test]
    fn writer_sorts_galleries_by_heat_outside_the_lungs() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ExplainWriter::new(dir.path(), ExplainConfig::default()).unwrap();
        // 8x8 images, lungs = left half. Heat on the left (inside) or right (outside) columns.
        let mask = Grey8::new(
            8,
            8,
            (0..64).map(|i| if i % 8 < 4 { 255 } else { 0 }).collect(),
        )
        .unwrap();
        let image = Grey8::new(8, 8, vec![90; 64]).unwrap();
        let heat_at = |inside_cols: usize| {
            Heatmap::new(
                8,
                8,
                (0..64)
                    .map(|i| if i % 8 < inside_cols { 1.0 } else { 0.0 })
                    .collect(),
            )
            .unwrap()
        };
        let src = SourceId::new("nih").unwrap();
        for (id, cols) in [("a", 4usize), ("b", 8), ("c", 2), ("d", 0)] {
            let item = CamItem {
                id: id.into(),
                source: src.clone(),
                label: Label::Pneumonia,
                image: image.clone(),
                mask: mask.clone(),
            };
            w.add(&item, &heat_at(cols), 0.1).unwrap();
        }
        let out = w.finish().unwrap();
        assert_eq!(out.rows.len(), 4);
        assert_eq!(out.rows[0].lung_energy, Some(1.0));
        assert_eq!(out.rows[1].lung_energy, Some(0.5));
        assert_eq!(out.rows[3].lung_energy, None);
        let listing =
            std::fs::read_to_string(dir.path().join("gallery/nih__pneumonia.csv")).unwrap();
        let order: Vec<&str> = listing
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap())
            .collect();
        // b (half outside) first, then a and c (all inside, tie broken by id), then d (no energy).
        assert_eq!(order, vec!["b", "a", "c", "d"]);
        let sheet = image::open(&out.galleries[0]).unwrap();
        assert_eq!(sheet.width(), 4 * 130 + 2);
        assert!(dir.path().join("overlays/a.png").exists());
        assert!(
            std::fs::read_to_string(&out.summary_csv)
                .unwrap()
                .contains("nih,pneumonia,4,1,")
        );
    }

    /// Hostile ids and sources: every overlay and gallery stays under the writer's folder, one overlay per
    /// item (case twins and long ids included).
    #[test]
    fn hostile_ids_never_write_outside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let out_dir = dir.path().join("deep/out");
        let mut w = ExplainWriter::new(&out_dir, ExplainConfig::default()).unwrap();
        let mask = Grey8::new(
            8,
            8,
            (0..64).map(|i| if i % 8 < 4 { 255 } else { 0 }).collect(),
        )
        .unwrap();
        let image = Grey8::new(8, 8, vec![90; 64]).unwrap();
        let heat = Heatmap::new(8, 8, vec![0.5; 64]).unwrap();
        let long = "W".repeat(2000);
        let ids: Vec<&str> = cxr_core::outname::HOSTILE_IDS
            .iter()
            .copied()
            .chain([long.as_str()])
            .collect();
        for (k, id) in ids.iter().enumerate() {
            let source = if k % 2 == 0 { "../../evil" } else { "EVIL" };
            let item = CamItem {
                id: id.to_string(),
                source: SourceId::new(source).unwrap(),
                label: Label::Pneumonia,
                image: image.clone(),
                mask: mask.clone(),
            };
            w.add(&item, &heat, 0.1).unwrap();
        }
        w.finish().unwrap();
        let mut stack = vec![dir.path().to_path_buf()];
        let mut overlays = 0;
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    assert!(p.starts_with(&out_dir), "{} escaped", p.display());
                    overlays += usize::from(p.parent() == Some(&out_dir.join("overlays")));
                }
            }
        }
        assert_eq!(overlays, ids.len());
    }
}
