//! The world: its config, the images to render ([`Job`]s, planned per source by `crate::layouts`), parallel
//! rendering and writing, `truth.csv`, `world.json` and the gallery.
//!
//! Planning is sequential and cheap (one ChaCha8 stream per source); it fixes every file name, size, age and
//! metadata value. Rendering is parallel (rayon) and each image draws from its own ChaCha8 stream seeded from
//! (world seed, source, image index), so the bytes never depend on scheduling.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use cxr_core::fsutil::write_atomic;
use cxr_core::{Grey8, Label, png8};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::SynthError;
use crate::acquisition::Acquisition;
use crate::confounders::ConfounderKind;
use crate::formats::{self, DicomMeta};
use crate::layouts::{
    Planner, plan_bimcv, plan_chexpert, plan_covid19_ar, plan_nih, plan_padchest, plan_v2,
};
use crate::pathology::{self, Pattern};
use crate::phantom::{self, Anatomy};
use crate::sources::{SourceSpec, generic_source, paper_sources};

/// `paper`: each source holds one class, as in the paper. `clean`: each source holds both classes 50/50.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorldKind {
    Paper,
    Clean,
}

impl WorldKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorldKind::Paper => "paper",
            WorldKind::Clean => "clean",
        }
    }
}

impl FromStr for WorldKind {
    type Err = SynthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "paper" => Ok(WorldKind::Paper),
            "clean" => Ok(WorldKind::Clean),
            other => Err(SynthError::Config(format!(
                "unknown world {other:?} (expected paper or clean)"
            ))),
        }
    }
}

/// What to generate. `Default` is the paper world.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorldConfig {
    pub kind: WorldKind,
    /// Images per source that pass the dataset's selection rule (distractors come on top).
    pub per_source: usize,
    /// Nominal image height in pixels (each source has its own aspect and jitter).
    pub size: u32,
    pub seed: u64,
    /// Pathology strength: 0 = none, 1 = the default (moderate); amplitudes scale linearly.
    pub signal: f32,
    /// Images in the lung-mask training set.
    pub lung_mask_count: usize,
    /// Distractors per source as a fraction of `per_source` (each kind at least once).
    pub distractor_fraction: f32,
    /// Also write `gallery.png` (4 selected images per source) into the world folder.
    pub gallery: bool,
    /// Plant this confounder group alone: every source keeps its own values of it and shares one broad,
    /// source-free signature for the rest ([`isolate`](crate::confounders::isolate)); `world.json` records the
    /// isolated signatures. `None` (the default): every source's full signature.
    #[serde(default)]
    pub only: Option<ConfounderKind>,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            kind: WorldKind::Paper,
            per_source: 80,
            size: 256,
            seed: 210_204_300,
            signal: 1.0,
            lung_mask_count: 200,
            distractor_fraction: 0.3,
            gallery: false,
            only: None,
        }
    }
}

/// What one source folder holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSummary {
    pub id: String,
    pub dataset: String,
    /// The dataset root (give it to the ingest adapter).
    pub root: PathBuf,
    pub selected: usize,
    pub covid: usize,
    pub pneumonia: usize,
    pub distractors: usize,
}

/// What `generate` wrote (read back from the study's stage cache, hence `Deserialize`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldSummary {
    pub root: PathBuf,
    pub kind: WorldKind,
    pub sources: Vec<SourceSummary>,
    pub images_written: usize,
    pub lung_masks: usize,
    pub world_json: PathBuf,
    pub truth_csv: PathBuf,
    pub gallery: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub(crate) enum Encoding {
    Png16 {
        lo: f32,
        hi: f32,
        maxval: u16,
        mono1: bool,
    },
    Png8,
    Jpeg(u8),
    Dicom {
        lo: f32,
        hi: f32,
        maxval: u16,
        meta: Box<DicomMeta>,
    },
    Nifti {
        lo: f32,
        hi: f32,
        spacing: f32,
    },
    LungMask {
        mask_path: String,
    },
}

/// One image to render and write.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) source: usize,
    pub(crate) path: String,
    pub(crate) label: Label,
    pub(crate) pattern: Pattern,
    pub(crate) lateral: bool,
    pub(crate) view: &'static str,
    pub(crate) selected: bool,
    pub(crate) distractor: &'static str,
    pub(crate) patient: String,
    pub(crate) age: u32,
    pub(crate) sex: char,
    pub(crate) seed: u64,
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) encoding: Encoding,
    pub(crate) photometric: &'static str,
    pub(crate) window: Option<(f64, f64)>,
    pub(crate) gallery: bool,
}

/// A rendered phantom without any file: for tests and for callers that want pixels in memory.
#[derive(Debug, Clone)]
pub struct RenderedSample {
    pub width: usize,
    pub height: usize,
    /// Display values in [0, 1], MONOCHROME2 sense.
    pub display: Vec<f32>,
    /// Ground-truth lung mask (1 = lung).
    pub mask: Vec<u8>,
    /// The pathology added to the attenuation map (zero outside the mask).
    pub pathology: Vec<f32>,
}

/// Renders one frontal image of `spec`'s signature in memory (same code path as the writers use).
pub fn render_sample(
    spec: &SourceSpec,
    pattern: Pattern,
    signal: f32,
    width: usize,
    height: usize,
    seed: u64,
    age: u32,
) -> RenderedSample {
    render_swapped(spec, None, pattern, signal, width, height, seed, age)
}

/// [`render_sample`], optionally with one confounder group drawn from a donor source (the one render path of
/// both the world and `confounders::render_counterfactual`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn render_swapped(
    spec: &SourceSpec,
    swap: Option<(&SourceSpec, ConfounderKind)>,
    pattern: Pattern,
    signal: f32,
    width: usize,
    height: usize,
    seed: u64,
    age: u32,
) -> RenderedSample {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (phantom, acq) = draw_swapped(
        &mut rng, spec, swap, pattern, signal, false, width, height, age,
    );
    let display = acq.apply(&mut rng, &phantom.density, width, height);
    RenderedSample {
        width,
        height,
        display,
        mask: phantom.mask,
        pathology: phantom.pathology,
    }
}

#[allow(clippy::too_many_arguments)]
fn draw(
    rng: &mut ChaCha8Rng,
    spec: &SourceSpec,
    pattern: Pattern,
    signal: f32,
    lateral: bool,
    width: usize,
    height: usize,
    age: u32,
) -> (phantom::Phantom, Acquisition) {
    draw_swapped(
        rng, spec, None, pattern, signal, lateral, width, height, age,
    )
}

/// [`draw`], optionally with one confounder group drawn from a donor source: the donor's values are drawn
/// from a clone of the stream at the point where the base draws that group, and the stream itself goes on as
/// the base's, so nothing else in the image moves (see `confounders::render_counterfactual`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn draw_swapped(
    rng: &mut ChaCha8Rng,
    spec: &SourceSpec,
    swap: Option<(&SourceSpec, ConfounderKind)>,
    pattern: Pattern,
    signal: f32,
    lateral: bool,
    width: usize,
    height: usize,
    age: u32,
) -> (phantom::Phantom, Acquisition) {
    let fork = rng.clone();
    let mut zoom = range(rng, spec.zoom);
    let mut shift = range(rng, spec.shift_y);
    if let Some((donor, ConfounderKind::Framing)) = swap {
        let mut f = fork;
        zoom = range(&mut f, donor.zoom);
        shift = range(&mut f, donor.shift_y);
    }
    let anatomy = Anatomy::sample(rng, age, zoom, shift);
    // Lesions draw from their own stream, so that the same seed with another pattern or signal renders the
    // same patient and the same acquisition: the difference between two such images is the pathology alone.
    let mut lesion_rng = ChaCha8Rng::seed_from_u64(rng.random::<u64>());
    let lesions = pathology::sample_lesions(&mut lesion_rng, &anatomy, pattern, signal);
    let vessel_phase: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    let ph = if lateral {
        phantom::render_lateral(&anatomy, &lesions, width, height)
    } else {
        phantom::render_frontal(&anatomy, &lesions, width, height, vessel_phase)
    };
    let fork = rng.clone();
    let mut acq = Acquisition::sample(rng, spec, width, height);
    if let Some((donor, kind)) = swap {
        let mut f = fork;
        acq.take_group(kind, &Acquisition::sample(&mut f, donor, width, height));
    }
    (ph, acq)
}

pub(crate) fn range(rng: &mut impl Rng, r: [f32; 2]) -> f32 {
    if r[1] > r[0] {
        rng.random_range(r[0]..r[1])
    } else {
        r[0]
    }
}

/// SplitMix64 finaliser: independent per-image seeds from (world seed, source, index).
pub(crate) fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Generates the world into `out` (created if missing). See [`generate_with_progress`].
pub fn generate(cfg: &WorldConfig, out: &Path) -> Result<WorldSummary, SynthError> {
    generate_with_progress(cfg, out, &|_, _| {})
}

/// Generates the world, calling `progress(done, total)` as images are written (from worker threads).
pub fn generate_with_progress(
    cfg: &WorldConfig,
    out: &Path,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<WorldSummary, SynthError> {
    if cfg.size < 64 || cfg.size > 4096 {
        return Err(SynthError::Config(format!(
            "size {} out of range 64..=4096",
            cfg.size
        )));
    }
    if !(0.0..=10.0).contains(&cfg.signal) || !cfg.signal.is_finite() {
        return Err(SynthError::Config(format!(
            "signal {} out of range 0..=10",
            cfg.signal
        )));
    }
    if cfg.per_source == 0 {
        return Err(SynthError::Config("per_source must be at least 1".into()));
    }
    std::fs::create_dir_all(out).map_err(|e| SynthError::Io {
        path: out.to_path_buf(),
        source: e,
    })?;
    let specs: Vec<SourceSpec> = match cfg.only {
        None => paper_sources(),
        Some(keep) => paper_sources()
            .iter()
            .map(|s| crate::confounders::isolate(s, keep))
            .collect(),
    };
    let generic = generic_source();
    let mut jobs: Vec<Job> = Vec::new();
    let mut meta_files: Vec<(String, Vec<u8>)> = Vec::new();
    for (k, spec) in specs.iter().enumerate() {
        let mut p = Planner::new(cfg, spec, k);
        let (mut j, m) = match k {
            0 => plan_bimcv(&mut p)?,
            1 => plan_covid19_ar(&mut p)?,
            2 => plan_v2(&mut p)?,
            3 => plan_nih(&mut p)?,
            4 => plan_chexpert(&mut p)?,
            _ => plan_padchest(&mut p)?,
        };
        let mut shown = 0;
        for job in j.iter_mut().filter(|j| j.selected) {
            if shown < 4 {
                job.gallery = true;
                shown += 1;
            }
        }
        jobs.extend(j);
        meta_files.extend(m);
    }
    {
        let mut p = Planner::new(cfg, &generic, specs.len());
        for i in 0..cfg.lung_mask_count {
            let (w, h) = p.size();
            let pattern = match i % 3 {
                0 => Pattern::None,
                1 => Pattern::Covid,
                _ => Pattern::Pneumonia,
            };
            let name = format!("lung-{i:05}.png");
            let mut job = p.job(
                format!("lung-masks/images/{name}"),
                Label::Normal,
                Encoding::LungMask {
                    mask_path: format!("lung-masks/masks/{name}"),
                },
                w,
                h,
            );
            job.pattern = pattern;
            job.view = "PA";
            jobs.push(job);
        }
    }

    let total = jobs.len() as u64;
    let done = AtomicU64::new(0);
    #[allow(clippy::type_complexity)]
    let results: Vec<Result<(Option<TruthRow>, Option<Thumb>), SynthError>> = jobs
        .par_iter()
        .map(|job| {
            let spec = specs.get(job.source).unwrap_or(&generic);
            let r = render_and_write(job, spec, cfg.signal, out);
            progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
            r
        })
        .collect();
    let mut truth = Vec::new();
    let mut thumbs: BTreeMap<usize, Vec<Thumb>> = BTreeMap::new();
    for (job, r) in jobs.iter().zip(results) {
        let (row, thumb) = r?;
        if let Some(row) = row {
            truth.push(row);
        }
        if let Some(t) = thumb {
            thumbs.entry(job.source).or_default().push(t);
        }
    }
    for (rel, bytes) in &meta_files {
        write_atomic(&out.join(rel), bytes)?;
    }
    let truth_csv = out.join("truth.csv");
    write_atomic(&truth_csv, &truth_to_csv(&truth)?)?;

    let mut sources = Vec::new();
    for (k, spec) in specs.iter().enumerate() {
        let rows: Vec<&TruthRow> = truth.iter().filter(|r| r.source == spec.id).collect();
        let sel: Vec<&&TruthRow> = rows.iter().filter(|r| r.selected).collect();
        sources.push(SourceSummary {
            id: spec.id.to_string(),
            dataset: spec.dataset.to_string(),
            root: out.join(&spec.folder),
            selected: sel.len(),
            covid: sel.iter().filter(|r| r.label == "covid").count(),
            pneumonia: sel.iter().filter(|r| r.label == "pneumonia").count(),
            distractors: rows.len() - sel.len(),
        });
        let _ = k;
    }
    let world_json = out.join("world.json");
    let world = serde_json::json!({
        "generator": "cxr-synth",
        "version": env!("CARGO_PKG_VERSION"),
        "config": cfg,
        "pathology": {
            "covid": "bilateral, peripheral, lower-zone ground-glass opacities with a reticular texture, 2-4 per lung",
            "pneumonia": "dense homogeneous focal consolidation, one lung (80%) or both (20%)",
            "ggo_amplitude_at_signal_1": pathology::GGO_AMPLITUDE,
            "consolidation_amplitude_at_signal_1": pathology::CONSOLIDATION_AMPLITUDE,
            "signal": cfg.signal,
            "inside_lung_mask_only": true,
        },
        "sources": specs,
        "lung_mask_source": generic,
        "summary": sources.iter().zip(&specs).map(|(s, spec)| serde_json::json!({
            "id": s.id,
            "dataset": s.dataset,
            "folder": spec.folder,
            "selected": s.selected,
            "covid": s.covid,
            "pneumonia": s.pneumonia,
            "distractors": s.distractors,
        })).collect::<Vec<_>>(),
        "layout": "docs/DATASETS.md",
    });
    let text = serde_json::to_vec_pretty(&world).map_err(|e| SynthError::Write {
        path: world_json.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&world_json, &text)?;

    let gallery = if cfg.gallery {
        let path = out.join("gallery.png");
        let names: Vec<&str> = specs.iter().map(|s| s.dataset.as_str()).collect();
        write_atomic(&path, &compose_gallery(&names, &thumbs, &path)?)?;
        Some(path)
    } else {
        None
    };
    tracing::info!(root = %out.display(), images = truth.len(), "synthetic world written");
    Ok(WorldSummary {
        root: out.to_path_buf(),
        kind: cfg.kind,
        sources,
        images_written: truth.len(),
        lung_masks: cfg.lung_mask_count,
        world_json,
        truth_csv,
        gallery,
    })
}

#[derive(Debug, Clone, Serialize)]
struct TruthRow {
    source: String,
    path: String,
    label: &'static str,
    selected: bool,
    distractor: &'static str,
    patient: String,
    age: u32,
    sex: char,
    view: &'static str,
    photometric: &'static str,
    window_center: String,
    window_width: String,
    width: usize,
    height: usize,
    lesions: usize,
    image_seed: u64,
    lung_x: usize,
    lung_y: usize,
    lung_w: usize,
    lung_h: usize,
}

fn truth_to_csv(rows: &[TruthRow]) -> Result<Vec<u8>, SynthError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r).map_err(|e| SynthError::Write {
            path: "truth.csv".into(),
            message: e.to_string(),
        })?;
    }
    w.into_inner().map_err(|e| SynthError::Write {
        path: "truth.csv".into(),
        message: e.to_string(),
    })
}

struct Thumb {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

fn quantize(display: &[f32], lo: f32, hi: f32, maxval: u16, mono1: bool) -> Vec<u16> {
    let m = maxval as f32;
    display
        .iter()
        .map(|&v| {
            let s = (lo + (hi - lo) * v).round().clamp(0.0, m);
            if mono1 { (m - s) as u16 } else { s as u16 }
        })
        .collect()
}

fn to_u8(display: &[f32]) -> Vec<u8> {
    display
        .iter()
        .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect()
}

fn render_and_write(
    job: &Job,
    spec: &SourceSpec,
    signal: f32,
    out: &Path,
) -> Result<(Option<TruthRow>, Option<Thumb>), SynthError> {
    let mut rng = ChaCha8Rng::seed_from_u64(job.seed);
    let (ph, acq) = draw(
        &mut rng,
        spec,
        job.pattern,
        signal,
        job.lateral,
        job.width,
        job.height,
        job.age,
    );
    let display = acq.apply(&mut rng, &ph.density, job.width, job.height);
    let (w, h) = (job.width, job.height);
    let path = out.join(&job.path);
    let encode8 = |pixels: Vec<u8>, path: &Path| -> Result<Vec<u8>, SynthError> {
        Ok(png8::encode_grey8(
            &Grey8::new(w as u32, h as u32, pixels)?,
            path,
        )?)
    };
    let bytes = match &job.encoding {
        Encoding::Png8 => encode8(to_u8(&display), &path)?,
        Encoding::Jpeg(q) => formats::jpeg(w, h, &to_u8(&display), *q)?,
        Encoding::Png16 {
            lo,
            hi,
            maxval,
            mono1,
        } => formats::png16(w, h, &quantize(&display, *lo, *hi, *maxval, *mono1))?,
        Encoding::Dicom {
            lo,
            hi,
            maxval,
            meta,
        } => {
            let mono1 = meta.photometric == "MONOCHROME1";
            formats::dicom(w, h, &quantize(&display, *lo, *hi, *maxval, mono1), meta)?
        }
        Encoding::Nifti { lo, hi, spacing } => formats::nifti_gz(
            w,
            h,
            &quantize(&display, *lo, *hi, u16::MAX, false),
            *spacing,
        )?,
        Encoding::LungMask { mask_path } => {
            let mask: Vec<u8> = ph
                .mask
                .iter()
                .map(|&m| if m != 0 { 255 } else { 0 })
                .collect();
            let mask_path = out.join(mask_path);
            write_image(&mask_path, &encode8(mask, &mask_path)?)?;
            encode8(to_u8(&display), &path)?
        }
    };
    write_image(&path, &bytes)?;
    if matches!(job.encoding, Encoding::LungMask { .. }) {
        return Ok((None, None));
    }
    let lung = if job.lateral { None } else { ph.lung_box() };
    let (lx, ly, lw, lh) = lung.unwrap_or((0, 0, 0, 0));
    let lesions = ph.pathology.iter().any(|&p| p > 0.0) as usize
        * match job.pattern {
            Pattern::None => 0,
            _ => 1,
        };
    let row = TruthRow {
        source: spec.id.clone(),
        path: job.path.clone(),
        label: job.label.as_str(),
        selected: job.selected,
        distractor: job.distractor,
        patient: job.patient.clone(),
        age: job.age,
        sex: job.sex,
        view: job.view,
        photometric: job.photometric,
        window_center: job
            .window
            .map(|w| format!("{:.1}", w.0))
            .unwrap_or_default(),
        window_width: job
            .window
            .map(|w| format!("{:.1}", w.1))
            .unwrap_or_default(),
        width: w,
        height: h,
        lesions,
        image_seed: job.seed,
        lung_x: lx,
        lung_y: ly,
        lung_w: lw,
        lung_h: lh,
    };
    let thumb = job.gallery.then(|| thumbnail(&display, w, h, 120));
    Ok((Some(row), thumb))
}

/// Writes an image file to a temporary name and renames it into place: atomic against a killed run (never a
/// half file under the final name), but without `fsync`, which cost ~3 ms per file on the development disk and
/// would dominate the run time. The world is deterministic, so a crash is repaired by running again; the
/// metadata tables, `truth.csv` and `world.json` (written last) still go through `write_atomic` with `fsync`.
fn write_image(path: &Path, bytes: &[u8]) -> Result<(), SynthError> {
    Ok(cxr_core::fsutil::write_replace(path, bytes)?)
}

/// Area-averaged downscale so the longer side is `max` pixels.
fn thumbnail(display: &[f32], w: usize, h: usize, max: usize) -> Thumb {
    let f = (w.max(h) as f32 / max as f32).max(1.0);
    let (tw, th) = (
        ((w as f32) / f).round() as usize,
        ((h as f32) / f).round() as usize,
    );
    let mut px = vec![0u8; tw * th];
    for ty in 0..th {
        for tx in 0..tw {
            let (x0, x1) = (
                (tx as f32 * f) as usize,
                (((tx + 1) as f32 * f) as usize).min(w).max(1),
            );
            let (y0, y1) = (
                (ty as f32 * f) as usize,
                (((ty + 1) as f32 * f) as usize).min(h).max(1),
            );
            let mut s = 0.0f32;
            let mut n = 0.0f32;
            for y in y0..y1.max(y0 + 1).min(h) {
                for x in x0..x1.max(x0 + 1).min(w) {
                    s += display[y * w + x];
                    n += 1.0;
                }
            }
            px[ty * tw + tx] = ((s / n.max(1.0)) * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    Thumb {
        width: tw,
        height: th,
        pixels: px,
    }
}

/// The gallery PNG's bytes (`path` names it in an error).
fn compose_gallery(
    names: &[&str],
    thumbs: &BTreeMap<usize, Vec<Thumb>>,
    path: &Path,
) -> Result<Vec<u8>, SynthError> {
    let (cell, cols, caption, pad) = (120usize, 4usize, 14usize, 4usize);
    let rows = names.len();
    let width = cols * (cell + pad) + pad;
    let height = rows * (cell + caption + pad) + pad;
    let mut img = vec![40u8; width * height];
    for (r, name) in names.iter().enumerate() {
        let y0 = pad + r * (cell + caption + pad);
        crate::font::draw_text_u8(
            &mut img,
            width,
            height,
            pad as i64,
            y0 as i64 + 2,
            name,
            1,
            230,
        );
        if let Some(ts) = thumbs.get(&r) {
            for (c, t) in ts.iter().take(cols).enumerate() {
                let x0 = pad + c * (cell + pad) + (cell - t.width) / 2;
                let yy = y0 + caption + (cell - t.height) / 2;
                for y in 0..t.height {
                    let dst = (yy + y) * width + x0;
                    img[dst..dst + t.width]
                        .copy_from_slice(&t.pixels[y * t.width..(y + 1) * t.width]);
                }
            }
        }
    }
    let img = Grey8::new(width as u32, height as u32, img)?;
    Ok(png8::encode_grey8_small(&img, path)?)
}
