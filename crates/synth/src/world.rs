//! The world: planning (patients, sessions, distractors, metadata tables), parallel rendering and writing.
//!
//! Planning is sequential and cheap (one ChaCha8 stream per source); it fixes every file name, size, age and
//! metadata value. Rendering is parallel (rayon) and each image draws from its own ChaCha8 stream seeded from
//! (world seed, source, image index), so the bytes never depend on scheduling.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use cxr_core::Label;
use cxr_core::fsutil::write_atomic;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::SynthError;
use crate::acquisition::Acquisition;
use crate::confounders::ConfounderKind;
use crate::formats::{self, DicomMeta};
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
enum Encoding {
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
struct Job {
    source: usize,
    path: String,
    label: Label,
    pattern: Pattern,
    lateral: bool,
    view: &'static str,
    selected: bool,
    distractor: &'static str,
    patient: String,
    age: u32,
    sex: char,
    seed: u64,
    width: usize,
    height: usize,
    encoding: Encoding,
    photometric: &'static str,
    window: Option<(f64, f64)>,
    gallery: bool,
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

fn range(rng: &mut impl Rng, r: [f32; 2]) -> f32 {
    if r[1] > r[0] {
        rng.random_range(r[0]..r[1])
    } else {
        r[0]
    }
}

/// SplitMix64 finaliser: independent per-image seeds from (world seed, source, index).
fn mix(seed: u64, a: u64, b: u64) -> u64 {
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
        write_atomic(&path, &compose_gallery(&names, &thumbs)?)?;
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
    let bytes = match &job.encoding {
        Encoding::Png8 => formats::png8(w, h, &to_u8(&display))?,
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
            write_image(&out.join(mask_path), &formats::png8(w, h, &mask)?)?;
            formats::png8(w, h, &to_u8(&display))?
        }
    };
    write_image(&out.join(&job.path), &bytes)?;
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

fn compose_gallery(
    names: &[&str],
    thumbs: &BTreeMap<usize, Vec<Thumb>>,
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
    let mut out = Vec::new();
    use image::ImageEncoder;
    image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::Adaptive,
    )
    .write_image(
        &img,
        width as u32,
        height as u32,
        image::ExtendedColorType::L8,
    )
    .map_err(|e| SynthError::Encode {
        what: "gallery PNG".into(),
        message: e.to_string(),
    })?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------
// Planning helpers

struct Planner<'a> {
    cfg: &'a WorldConfig,
    spec: &'a SourceSpec,
    source: usize,
    rng: ChaCha8Rng,
    next_image: u64,
}

impl<'a> Planner<'a> {
    fn new(cfg: &'a WorldConfig, spec: &'a SourceSpec, source: usize) -> Self {
        Planner {
            cfg,
            spec,
            source,
            rng: ChaCha8Rng::seed_from_u64(mix(cfg.seed, source as u64 + 1, 0x5EED)),
            next_image: 0,
        }
    }

    /// The label of the i-th selected image.
    fn class(&self, i: usize) -> Label {
        let paper = self.spec.paper_class;
        match self.cfg.kind {
            WorldKind::Paper => paper,
            WorldKind::Clean => {
                if i.is_multiple_of(2) {
                    paper
                } else if paper == Label::Covid {
                    Label::Pneumonia
                } else {
                    Label::Covid
                }
            }
        }
    }

    fn distractor_count(&self, kinds: usize) -> usize {
        if kinds == 0 {
            return 0;
        }
        ((self.cfg.per_source as f32 * self.cfg.distractor_fraction).round() as usize).max(kinds)
    }

    fn size(&mut self) -> (usize, usize) {
        let s = self.cfg.size as f32;
        if self.spec.square {
            return (self.cfg.size as usize, self.cfg.size as usize);
        }
        let h = s * (1.0 + self.rng.random_range(-1.0..=1.0) * self.spec.size_jitter);
        let a =
            self.spec.aspect * (1.0 + self.rng.random_range(-1.0..=1.0) * self.spec.aspect_jitter);
        (
            (h * a).round().max(32.0) as usize,
            h.round().max(32.0) as usize,
        )
    }

    fn age(&mut self) -> u32 {
        let [mean, sd, lo, hi] = self.spec.age;
        let n: f32 = rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut self.rng);
        (mean + sd * n).clamp(lo, hi).round() as u32
    }

    fn sex(&mut self) -> char {
        if self.rng.random_bool(0.55) { 'M' } else { 'F' }
    }

    fn chance(&mut self, p: f32) -> bool {
        self.rng.random::<f32>() < p
    }

    /// Stored range (lo, hi) and full scale for this source's bit depth.
    fn stored(&mut self) -> (f32, f32, u16) {
        let maxval = ((1u32 << self.spec.bits_stored) - 1) as f32;
        let lo = range(&mut self.rng, self.spec.stored_low) * maxval;
        let hi = range(&mut self.rng, self.spec.stored_high) * maxval;
        (lo, hi.max(lo + 16.0), maxval as u16)
    }

    /// A window over the stored range (slightly off-centre, as technologists set them); flipped for
    /// MONOCHROME1 so that it covers the same values after inversion.
    fn window(&mut self, lo: f32, hi: f32, maxval: u16, mono1: bool) -> (f64, f64) {
        let centre = (lo + hi) / 2.0 + (hi - lo) * self.rng.random_range(-0.05..0.05);
        let width = (hi - lo) * self.rng.random_range(0.9..1.1);
        let centre = if mono1 {
            maxval as f32 - centre
        } else {
            centre
        };
        (centre.round() as f64, width.round().max(2.0) as f64)
    }

    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from_digit(self.rng.random_range(0..16), 16).unwrap_or('0'))
            .collect()
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|k| {
                let lo = if k == 0 { 1 } else { 0 };
                char::from_digit(self.rng.random_range(lo..10), 10).unwrap_or('1')
            })
            .collect()
    }

    fn uid(&mut self) -> String {
        format!(
            "2.25.{}{:04}",
            self.rng.random::<u64>(),
            self.rng.random_range(0..10000)
        )
    }

    fn pattern_for(label: Label) -> Pattern {
        match label {
            Label::Covid => Pattern::Covid,
            Label::Pneumonia => Pattern::Pneumonia,
            Label::Normal => Pattern::None,
        }
    }

    /// A job with the common fields filled; callers adjust the rest.
    fn job(
        &mut self,
        path: String,
        label: Label,
        encoding: Encoding,
        width: usize,
        height: usize,
    ) -> Job {
        let seed = mix(self.cfg.seed, self.source as u64 + 1, self.next_image);
        self.next_image += 1;
        Job {
            source: self.source,
            path,
            label,
            pattern: Self::pattern_for(label),
            lateral: false,
            view: "PA",
            selected: false,
            distractor: "",
            patient: String::new(),
            age: 50,
            sex: 'M',
            seed,
            width,
            height,
            encoding,
            photometric: "MONOCHROME2",
            window: None,
            gallery: false,
        }
    }
}

/// Days since 2020-01-01 -> (year, month, day), for the 2020 outbreak dates.
fn date_2020(day: i32) -> (i32, u32, u32) {
    let months = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut d = day.clamp(0, 365);
    for (m, &len) in months.iter().enumerate() {
        if d < len {
            return (2020, m as u32 + 1, d as u32 + 1);
        }
        d -= len;
    }
    (2020, 12, 31)
}

fn csv_bytes(header: &[&str], rows: &[Vec<String>], delimiter: u8) -> Result<Vec<u8>, SynthError> {
    let mut w = csv::WriterBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_writer(Vec::new());
    let err = |e: csv::Error| SynthError::Write {
        path: "metadata table".into(),
        message: e.to_string(),
    };
    w.write_record(header).map_err(err)?;
    for r in rows {
        w.write_record(r).map_err(err)?;
    }
    w.into_inner().map_err(|e| SynthError::Write {
        path: "metadata table".into(),
        message: e.to_string(),
    })
}

/// A TSV without quoting (BIMCV's files are plain tab-separated text).
fn tsv_bytes(header: &[&str], rows: &[Vec<String>]) -> Vec<u8> {
    let mut s = header.join("\t");
    s.push('\n');
    for r in rows {
        let clean: Vec<String> = r.iter().map(|c| c.replace(['\t', '\n'], " ")).collect();
        s.push_str(&clean.join("\t"));
        s.push('\n');
    }
    s.into_bytes()
}

fn py_list(items: &[&str]) -> String {
    let inner: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", inner.join(", "))
}

type Plan = (Vec<Job>, Vec<(String, Vec<u8>)>);

// ---------------------------------------------------------------------------------------------------------
// BIMCV-COVID19+

struct BimcvSession {
    id: String,
    day: i32,
    labels: Vec<&'static str>,
}

const BIMCV_FINDINGS: [&str; 6] = [
    "ground glass pattern",
    "consolidation",
    "infiltrates",
    "alveolar pattern",
    "interstitial pattern",
    "pleural effusion",
];

#[allow(clippy::type_complexity, clippy::needless_range_loop)]
fn plan_bimcv(p: &mut Planner) -> Result<Plan, SynthError> {
    let root = p.spec.folder.as_str();
    let n = p.cfg.per_source;
    let kinds = ["lateral", "no_positive_pcr", "not_most_severe"];
    let nd = p.distractor_count(kinds.len());
    let mut jobs = Vec::new();
    let mut participants = Vec::new();
    let mut pcr_rows = Vec::new();
    let mut label_rows = Vec::new();
    let mut files = Vec::new();
    let mut session_counter = 10001;
    // Distractor j goes to a subject: covid subjects only for the PCR-based traps.
    let covid_subjects: Vec<usize> = (0..n).filter(|&i| p.class(i) == Label::Covid).collect();
    let mut assigned: Vec<Vec<&'static str>> = vec![Vec::new(); n];
    for j in 0..nd {
        let kind = kinds[j % kinds.len()];
        let who = if kind == "lateral" || covid_subjects.is_empty() {
            j % n
        } else {
            covid_subjects[j % covid_subjects.len()]
        };
        if kind != "lateral" && p.class(who) != Label::Covid {
            assigned[who].push("lateral");
        } else {
            assigned[who].push(kind);
        }
    }
    for i in 0..n {
        let label = p.class(i);
        let subject = format!("sub-S{:05}", 10001 + i);
        let age = p.age();
        let sex = p.sex();
        let main_day = p.rng.random_range(60..108); // March to mid-April 2020
        let mut sessions: Vec<(BimcvSession, Vec<(&'static str, bool, &'static str)>)> = Vec::new();
        let severity = p.rng.random_range(1..=3);
        let mut main_labels: Vec<&'static str> = if label == Label::Covid {
            vec!["COVID 19"]
        } else {
            vec!["pneumonia"]
        };
        for f in BIMCV_FINDINGS.iter().take(severity) {
            main_labels.push(f);
        }
        let view = if p.chance(0.7) { "ap" } else { "pa" };
        let mut main_images = vec![(view, true, "")];
        if label == Label::Covid {
            pcr_rows.push(vec![
                subject.clone(),
                fmt_dmy(main_day + p.rng.random_range(-3..=3)),
                "PCR".into(),
                "POSITIVO".into(),
            ]);
        } else {
            pcr_rows.push(vec![
                subject.clone(),
                fmt_dmy(main_day - p.rng.random_range(0..=2)),
                "PCR".into(),
                "NEGATIVO".into(),
            ]);
        }
        if p.chance(0.3) {
            pcr_rows.push(vec![
                subject.clone(),
                fmt_dmy(main_day + 20),
                "IGG".into(),
                "POSITIVO".into(),
            ]);
        }
        let mut extra_sessions = Vec::new();
        for kind in &assigned[i] {
            match *kind {
                "lateral" => main_images.push(("ll", false, "lateral")),
                "no_positive_pcr" => {
                    // Later, more severe, but no PCR within 14 days: a rule ignoring PCR would pick it.
                    let day = main_day + 45;
                    pcr_rows.push(vec![
                        subject.clone(),
                        fmt_dmy(day),
                        "PCR".into(),
                        "NEGATIVO".into(),
                    ]);
                    let mut l = main_labels.clone();
                    l.push("atelectasis");
                    extra_sessions.push((day, l, "no_positive_pcr"));
                }
                _ => {
                    // PCR-positive but milder.
                    let day = main_day + p.rng.random_range(4..=9);
                    extra_sessions.push((day, vec!["COVID 19"], "not_most_severe"));
                }
            }
        }
        let sid = format!("ses-E{session_counter:05}");
        session_counter += 1;
        sessions.push((
            BimcvSession {
                id: sid,
                day: main_day,
                labels: main_labels,
            },
            main_images,
        ));
        for (day, labels, kind) in extra_sessions {
            let sid = format!("ses-E{session_counter:05}");
            session_counter += 1;
            let v = if p.chance(0.5) { "ap" } else { "pa" };
            sessions.push((
                BimcvSession {
                    id: sid,
                    day,
                    labels,
                },
                vec![(v, false, kind)],
            ));
        }
        let mut modalities = Vec::new();
        let mut session_rows = Vec::new();
        for (ses, images) in &sessions {
            let modality = if p.chance(0.6) { "cr" } else { "dx" };
            if !modalities.contains(&modality) {
                modalities.push(modality);
            }
            for (run, (view, selected, kind)) in images.iter().enumerate() {
                let (w, h) = p.size();
                let (lo, hi, maxval) = p.stored();
                let has_window = p.chance(p.spec.window);
                let window = has_window.then(|| p.window(lo, hi, maxval, false));
                let stem = format!(
                    "{subject}_{}_run-{}_bp-chest_vp-{view}_{modality}",
                    ses.id,
                    run + 1
                );
                let dir = format!("{root}/covid19_posi/{subject}/{}/mod-rx", ses.id);
                let mut job = p.job(
                    format!("{dir}/{stem}.png"),
                    label,
                    Encoding::Png16 {
                        lo,
                        hi,
                        maxval,
                        mono1: false,
                    },
                    w,
                    h,
                );
                job.selected = *selected;
                job.distractor = kind;
                job.lateral = *view == "ll";
                job.view = match *view {
                    "ap" => "AP",
                    "pa" => "PA",
                    _ => "LL",
                };
                job.patient = subject.clone();
                job.age = age;
                job.sex = sex;
                job.window = window;
                let mut sidecar = serde_json::Map::new();
                let tag =
                    |vr: &str, v: serde_json::Value| serde_json::json!({"vr": vr, "Value": [v]});
                sidecar.insert("00080060".into(), tag("CS", modality.to_uppercase().into()));
                sidecar.insert("00185101".into(), tag("CS", job.view.into()));
                sidecar.insert("00280004".into(), tag("CS", "MONOCHROME2".into()));
                sidecar.insert("00280101".into(), tag("US", 12.into()));
                sidecar.insert("00280010".into(), tag("US", h.into()));
                sidecar.insert("00280011".into(), tag("US", w.into()));
                if let Some((c, wd)) = window {
                    sidecar.insert("00281050".into(), tag("DS", c.into()));
                    sidecar.insert("00281051".into(), tag("DS", wd.into()));
                }
                let text = serde_json::to_vec_pretty(&serde_json::Value::Object(sidecar)).map_err(
                    |e| SynthError::Write {
                        path: format!("{dir}/{stem}.json").into(),
                        message: e.to_string(),
                    },
                )?;
                files.push((format!("{dir}/{stem}.json"), text));
                jobs.push(job);
            }
            let (y, m, d) = date_2020(ses.day);
            session_rows.push(vec![
                ses.id.clone(),
                format!("{y:04}{m:02}{d:02}"),
                "Estudio radiologico de torax. Texto sintetico.".to_string(),
            ]);
            let findings: Vec<&str> = ses.labels.clone();
            label_rows.push(vec![
                subject.clone(),
                ses.id.clone(),
                "informe sintetico".to_string(),
                py_list(&findings),
                py_list(&["loc bilateral"]),
                "[]".to_string(),
                "[]".to_string(),
                "[]".to_string(),
            ]);
        }
        files.push((
            format!("{root}/covid19_posi/{subject}/{subject}_sessions.tsv"),
            tsv_bytes(
                &["session_id", "study_date", "medical_evaluation"],
                &session_rows,
            ),
        ));
        let ages: Vec<String> = sessions.iter().map(|_| age.to_string()).collect();
        let mods: Vec<String> = modalities
            .iter()
            .map(|m| format!("'{}'", m.to_uppercase()))
            .collect();
        participants.push(vec![
            subject.clone(),
            format!("[{}]", mods.join(", ")),
            format!("[{}]", ages.join(", ")),
            sex.to_string(),
        ]);
    }
    files.push((
        format!("{root}/covid19_posi/participants.tsv"),
        tsv_bytes(
            &["participant", "modality_dicom", "age", "gender"],
            &participants,
        ),
    ));
    files.push((
        format!("{root}/covid19_posi/derivatives/EHR/sil_reg_covid_posi.tsv"),
        tsv_bytes(&["participant", "date", "test", "result"], &pcr_rows),
    ));
    files.push((
        format!("{root}/covid19_posi/derivatives/labels/labels_covid_posi.tsv"),
        tsv_bytes(
            &[
                "PatientID",
                "ReportID",
                "Report",
                "Labels",
                "Localizations",
                "LabelsLocalizationsBySentence",
                "labelCUIS",
                "LocalizationsCUIS",
            ],
            &label_rows,
        ),
    ));
    Ok((jobs, files))
}

fn fmt_dmy(day: i32) -> String {
    let (y, m, d) = date_2020(day);
    format!("{d:02}.{m:02}.{y:04}")
}

// ---------------------------------------------------------------------------------------------------------
// COVID-19-AR

fn plan_covid19_ar(p: &mut Planner) -> Result<Plan, SynthError> {
    let root = p.spec.folder.as_str();
    let n = p.cfg.per_source;
    let nd = p.distractor_count(1);
    let mut jobs = Vec::new();
    let mut clinical = Vec::new();
    let mut nbia = Vec::new();
    let clean = p.cfg.kind == WorldKind::Clean;
    for i in 0..n {
        let label = p.class(i);
        let pid = format!("COVID-19-AR-{}", 16406488 + 37 * i as u64);
        let age = p.age();
        let sex = p.sex();
        let day = p.rng.random_range(70..200);
        let (y, m, d) = date_2020(day);
        let study_date = format!("{y:04}{m:02}{d:02}");
        let with_lateral = i < nd;
        let portable = !with_lateral && p.chance(0.75);
        let view = if portable { "AP" } else { "PA" };
        let study_desc = if with_lateral {
            "XR CHEST PA AND LATERAL"
        } else if portable {
            "XR CHEST AP PORTABLE"
        } else {
            "XR CHEST PA"
        };
        let study_uid = p.uid();
        let study_dir = format!(
            "{:02}-{:02}-{:04}-NA-{study_desc}-{}",
            m,
            d,
            y,
            &study_uid[study_uid.len() - 5..]
        );
        let modality = if p.chance(0.6) { "CR" } else { "DX" };
        let mut series = vec![(view, true, "")];
        if with_lateral {
            series.push(("LL", false, "lateral"));
        }
        for (k, (vp, selected, kind)) in series.into_iter().enumerate() {
            let (w, h) = p.size();
            let (lo, hi, maxval) = p.stored();
            let mono1 = p.chance(p.spec.monochrome1);
            let (wc, ww) = p.window(lo, hi, maxval, mono1);
            let series_uid = p.uid();
            let series_desc = if vp == "LL" { "LATERAL" } else { vp };
            let series_dir = format!(
                "{}.000000-{series_desc}-{}",
                k + 1,
                &series_uid[series_uid.len() - 5..]
            );
            let rel = format!("{root}/COVID-19-AR/{pid}/{study_dir}/{series_dir}/1-1.dcm");
            let photometric = if mono1 { "MONOCHROME1" } else { "MONOCHROME2" };
            let meta = DicomMeta {
                modality,
                sop_instance_uid: p.uid(),
                study_uid: study_uid.clone(),
                series_uid: series_uid.clone(),
                study_date: study_date.clone(),
                study_description: study_desc.to_string(),
                series_description: series_desc.to_string(),
                series_number: k as u32 + 1,
                patient_name: format!("SYNTH^PATIENT^{}", &pid[12..]),
                patient_id: pid.clone(),
                patient_birth_date: format!("{:04}0101", 2020 - age as i32),
                patient_sex: sex,
                patient_age: age,
                view_position: vp,
                photometric,
                bits_stored: p.spec.bits_stored as u16,
                window_center: wc,
                window_width: ww,
                pixel_spacing: 0.139 * 2048.0 / h as f64,
            };
            let mut job = p.job(
                rel,
                label,
                Encoding::Dicom {
                    lo,
                    hi,
                    maxval,
                    meta: Box::new(meta),
                },
                w,
                h,
            );
            job.selected = selected;
            job.distractor = kind;
            job.lateral = vp == "LL";
            job.view = vp;
            job.patient = pid.clone();
            job.age = age;
            job.sex = sex;
            job.photometric = photometric;
            job.window = Some((wc, ww));
            nbia.push(vec![
                series_uid,
                "COVID-19-AR".to_string(),
                pid.clone(),
                study_uid.clone(),
                study_desc.to_string(),
                format!("{:02}-{:02}-{:04}", m, d, y),
                series_desc.to_string(),
                modality.to_string(),
                "1".to_string(),
                format!("./COVID-19-AR/{pid}/{study_dir}/{series_dir}"),
            ]);
            jobs.push(job);
        }
        let mut row = vec![
            pid.clone(),
            age.to_string(),
            sex.to_string(),
            format!("{}", p.rng.random_range(716..729)),
            format!("{:.1}", p.rng.random_range(19.0..42.0f32)),
            if p.chance(0.2) { "Y" } else { "N" }.to_string(),
            "0".to_string(),
            if p.chance(0.1) { "Y" } else { "N" }.to_string(),
        ];
        if row[5] == "Y" {
            row[6] = "1".to_string();
        }
        if clean {
            row.push(
                if label == Label::Covid {
                    "COVID-19"
                } else {
                    "Pneumonia"
                }
                .to_string(),
            );
        }
        clinical.push(row);
    }
    let mut header = vec![
        "PATIENT_ID",
        "AGE",
        "SEX",
        "ZIP",
        "LATEST_BMI",
        "ICU_ADMIT",
        "NUM_ICU_ADMITS",
        "MORTALITY",
    ];
    if clean {
        header.push("FINDING");
    }
    let files = vec![
        (
            format!("{root}/COVID-19-AR-Clinical-Data.csv"),
            csv_bytes(&header, &clinical, b',')?,
        ),
        (
            format!("{root}/metadata.csv"),
            csv_bytes(
                &[
                    "Series UID",
                    "Collection",
                    "Subject ID",
                    "Study UID",
                    "Study Description",
                    "Study Date",
                    "Series Description",
                    "Modality",
                    "Number of Images",
                    "File Location",
                ],
                &nbia,
                b',',
            )?,
        ),
    ];
    Ok((jobs, files))
}

// ---------------------------------------------------------------------------------------------------------
// V2-COV19-NII

fn plan_v2(p: &mut Planner) -> Result<Plan, SynthError> {
    let root = p.spec.folder.as_str();
    let n = p.cfg.per_source;
    let nd = p.distractor_count(1);
    let clean = p.cfg.kind == WorldKind::Clean;
    let mut jobs = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for i in 0..n + nd {
        let selected = i < n;
        let label = if selected {
            p.class(i)
        } else {
            p.class((i - n) % n)
        };
        let patient = if selected {
            format!("P{}", p.hex(6))
        } else {
            // The lateral belongs to a selected patient.
            rows[(i - n) % n.max(1)][0].clone()
        };
        let image_id = p.hex(16);
        let age = p.age();
        let sex = if p.chance(0.55) { 'm' } else { 'w' };
        let (w, h) = p.size();
        let (lo, hi, _) = p.stored();
        let projection = if !selected {
            "lateral"
        } else if p.chance(0.8) {
            "ap"
        } else {
            "pa"
        };
        let mut job = p.job(
            format!("{root}/images/{image_id}.nii.gz"),
            label,
            Encoding::Nifti {
                lo,
                hi,
                spacing: 0.15 * 2500.0 / h as f32,
            },
            w,
            h,
        );
        job.selected = selected;
        job.distractor = if selected { "" } else { "lateral" };
        job.lateral = !selected;
        job.view = match projection {
            "ap" => "AP",
            "pa" => "PA",
            _ => "LL",
        };
        job.patient = patient.clone();
        job.age = age;
        job.sex = if sex == 'm' { 'M' } else { 'F' };
        let mut row = vec![
            patient,
            image_id,
            sex.to_string(),
            if p.chance(0.3) {
                String::new()
            } else {
                age.to_string()
            },
            "cr".to_string(),
            projection.to_string(),
        ];
        if clean {
            row.push(
                if label == Label::Covid {
                    "COVID-19"
                } else {
                    "Pneumonia"
                }
                .to_string(),
            );
        }
        rows.push(row);
        jobs.push(job);
    }
    let mut header = vec![
        "patient_id",
        "image_id",
        "sex",
        "age",
        "modality",
        "projection",
    ];
    if clean {
        header.push("finding");
    }
    Ok((
        jobs,
        vec![(format!("{root}/data.csv"), csv_bytes(&header, &rows, b',')?)],
    ))
}

// ---------------------------------------------------------------------------------------------------------
// NIH ChestX-ray14

fn plan_nih(p: &mut Planner) -> Result<Plan, SynthError> {
    let root = p.spec.folder.as_str();
    let n = p.cfg.per_source;
    let kinds = ["multi_label", "no_finding", "other_finding"];
    let nd = p.distractor_count(kinds.len());
    let mut jobs = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let multi = [
        "Infiltration|Pneumonia",
        "Consolidation|Pneumonia",
        "Effusion|Pneumonia",
        "Pneumonia|Atelectasis",
    ];
    let other = [
        "Effusion",
        "Infiltration",
        "Atelectasis",
        "Nodule",
        "Cardiomegaly",
    ];
    for i in 0..n + nd {
        let selected = i < n;
        let (label, finding, kind): (Label, String, &'static str) = if selected {
            let l = p.class(i);
            let f = if l == Label::Covid {
                "COVID-19"
            } else {
                "Pneumonia"
            };
            (l, f.to_string(), "")
        } else {
            let j = i - n;
            match kinds[j % kinds.len()] {
                "multi_label" => (
                    Label::Pneumonia,
                    multi[j % multi.len()].to_string(),
                    "multi_label",
                ),
                "no_finding" => (Label::Normal, "No Finding".to_string(), "no_finding"),
                _ => (
                    Label::Normal,
                    other[j % other.len()].to_string(),
                    "other_finding",
                ),
            }
        };
        let pid = 1000 + 3 * i as u32 + p.rng.random_range(0..3);
        let follow = p.rng.random_range(0..4u32);
        let name = format!("{pid:08}_{follow:03}.png");
        let age = p.age();
        let sex = p.sex();
        let view = if p.chance(0.6) { "PA" } else { "AP" };
        let (w, h) = p.size();
        let mut job = p.job(format!("{root}/images/{name}"), label, Encoding::Png8, w, h);
        job.selected = selected;
        job.distractor = kind;
        job.view = view;
        job.patient = pid.to_string();
        job.age = age;
        job.sex = sex;
        rows.push(vec![
            name,
            finding,
            follow.to_string(),
            pid.to_string(),
            age.to_string(),
            sex.to_string(),
            view.to_string(),
            "2500".to_string(),
            "2048".to_string(),
            "0.143".to_string(),
            "0.143".to_string(),
            String::new(),
        ]);
        jobs.push(job);
    }
    rows.sort();
    let header = [
        "Image Index",
        "Finding Labels",
        "Follow-up #",
        "Patient ID",
        "Patient Age",
        "Patient Gender",
        "View Position",
        "OriginalImage[Width",
        "Height]",
        "OriginalImagePixelSpacing[x",
        "y]",
        "",
    ];
    Ok((
        jobs,
        vec![(
            format!("{root}/Data_Entry_2017.csv"),
            csv_bytes(&header, &rows, b',')?,
        )],
    ))
}

// ---------------------------------------------------------------------------------------------------------
// CheXpert

const CHEXPERT_OBS: [&str; 14] = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
];

fn plan_chexpert(p: &mut Planner) -> Result<Plan, SynthError> {
    let root = p.spec.folder.as_str();
    let n = p.cfg.per_source;
    let kinds = ["lateral", "multi_label", "uncertain_label", "no_finding"];
    let nd = p.distractor_count(kinds.len());
    let clean = p.cfg.kind == WorldKind::Clean;
    let q = p.spec.jpeg_quality.unwrap_or(80);
    let mut jobs = Vec::new();
    let mut train: Vec<Vec<String>> = Vec::new();
    let mut valid: Vec<Vec<String>> = Vec::new();
    let n_valid = n / 10;
    let obs_index = |name: &str| CHEXPERT_OBS.iter().position(|o| *o == name).unwrap_or(0);
    // Selected patients first; distractors that are not laterals get their own patients after them.
    let mut selected_studies: Vec<(String, bool, Label, u32, char, Vec<String>)> = Vec::new();
    let mut patient_no = 1u32;
    let valid_base = 64541u32;
    for i in 0..n {
        let label = p.class(i);
        let is_valid = i >= n - n_valid;
        let (split, pnum) = if is_valid {
            ("valid", valid_base + (i - (n - n_valid)) as u32)
        } else {
            let x = patient_no;
            patient_no += 1;
            ("train", x)
        };
        let study = format!("{split}/patient{pnum:05}/study1");
        let age = p.age();
        let sex = p.sex();
        let mut obs: Vec<String> = vec![String::new(); 14];
        for o in obs.iter_mut() {
            *o = match p.rng.random_range(0..10) {
                0..=4 => String::new(),
                5..=8 => "0.0".to_string(),
                _ if !is_valid => "-1.0".to_string(),
                _ => "0.0".to_string(),
            };
        }
        if is_valid {
            for o in obs.iter_mut().filter(|o| o.is_empty()) {
                *o = "0.0".to_string();
            }
        }
        obs[0] = if is_valid {
            "0.0".into()
        } else {
            String::new()
        };
        let mut covid_col = String::new();
        if label == Label::Covid {
            obs[obs_index("Pneumonia")] = if is_valid {
                "0.0".into()
            } else {
                String::new()
            };
            covid_col = "1.0".into();
        } else {
            obs[obs_index("Pneumonia")] = "1.0".into();
            if clean {
                covid_col = if is_valid {
                    "0.0".into()
                } else {
                    String::new()
                };
            }
        }
        if clean {
            obs.push(covid_col);
        }
        selected_studies.push((study, is_valid, label, age, sex, obs));
    }
    let push_row = |train: &mut Vec<Vec<String>>,
                    valid: &mut Vec<Vec<String>>,
                    is_valid: bool,
                    path: &str,
                    sex: char,
                    age: u32,
                    frontal: bool,
                    appa: &str,
                    obs: &[String]| {
        let mut r = vec![
            format!("CheXpert-v1.0-small/{path}"),
            if sex == 'M' { "Male" } else { "Female" }.to_string(),
            age.to_string(),
            if frontal { "Frontal" } else { "Lateral" }.to_string(),
            appa.to_string(),
        ];
        r.extend(obs.iter().cloned());
        if is_valid {
            valid.push(r)
        } else {
            train.push(r)
        }
    };
    for (i, (study, is_valid, label, age, sex, obs)) in selected_studies.iter().enumerate() {
        let (w, h) = p.size();
        let appa = if p.chance(0.8) { "AP" } else { "PA" };
        let path = format!("{study}/view1_frontal.jpg");
        let mut job = p.job(format!("{root}/{path}"), *label, Encoding::Jpeg(q), w, h);
        job.selected = true;
        job.view = if appa == "AP" { "AP" } else { "PA" };
        job.patient = study.split('/').nth(1).unwrap_or("").to_string();
        job.age = *age;
        job.sex = *sex;
        push_row(
            &mut train, &mut valid, *is_valid, &path, *sex, *age, true, appa, obs,
        );
        jobs.push(job);
        let _ = i;
    }
    for j in 0..nd {
        let kind = kinds[j % kinds.len()];
        let (w, h) = p.size();
        if kind == "lateral" {
            let (study, is_valid, label, age, sex, obs) = selected_studies[j % n].clone();
            let path = format!("{study}/view2_lateral.jpg");
            let mut job = p.job(format!("{root}/{path}"), label, Encoding::Jpeg(q), w, h);
            job.distractor = "lateral";
            job.lateral = true;
            job.view = "LL";
            job.patient = study.split('/').nth(1).unwrap_or("").to_string();
            job.age = age;
            job.sex = sex;
            push_row(
                &mut train, &mut valid, is_valid, &path, sex, age, false, "", &obs,
            );
            jobs.push(job);
            continue;
        }
        let pnum = patient_no;
        patient_no += 1;
        let study = format!("train/patient{pnum:05}/study1");
        let age = p.age();
        let sex = p.sex();
        let mut obs: Vec<String> = vec![String::new(); 14];
        let label = match kind {
            "multi_label" => {
                obs[obs_index("Pneumonia")] = "1.0".into();
                let other = if j % 2 == 0 {
                    "Lung Opacity"
                } else {
                    "Consolidation"
                };
                obs[obs_index(other)] = "1.0".into();
                Label::Pneumonia
            }
            "uncertain_label" => {
                obs[obs_index("Pneumonia")] = "-1.0".into();
                Label::Pneumonia
            }
            _ => {
                obs[0] = "1.0".into();
                Label::Normal
            }
        };
        if clean {
            obs.push(String::new());
        }
        let path = format!("{study}/view1_frontal.jpg");
        let mut job = p.job(format!("{root}/{path}"), label, Encoding::Jpeg(q), w, h);
        job.distractor = kind;
        job.view = "AP";
        job.patient = format!("patient{pnum:05}");
        job.age = age;
        job.sex = sex;
        push_row(
            &mut train, &mut valid, false, &path, sex, age, true, "AP", &obs,
        );
        jobs.push(job);
    }
    let mut header = vec!["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"];
    header.extend(CHEXPERT_OBS.iter());
    if clean {
        header.push("COVID-19");
    }
    train.sort();
    valid.sort();
    Ok((
        jobs,
        vec![
            (
                format!("{root}/train.csv"),
                csv_bytes(&header, &train, b',')?,
            ),
            (
                format!("{root}/valid.csv"),
                csv_bytes(&header, &valid, b',')?,
            ),
        ],
    ))
}

// ---------------------------------------------------------------------------------------------------------
// PadChest

const PADCHEST_COLUMNS: [&str; 36] = [
    "",
    "ImageID",
    "ImageDir",
    "StudyDate_DICOM",
    "StudyID",
    "PatientID",
    "PatientBirth",
    "PatientSex_DICOM",
    "ViewPosition_DICOM",
    "Projection",
    "MethodProjection",
    "Pediatric",
    "Modality_DICOM",
    "Manufacturer_DICOM",
    "PhotometricInterpretation_DICOM",
    "PixelRepresentation_DICOM",
    "PixelAspectRatio_DICOM",
    "SpatialResolution_DICOM",
    "BitsStored_DICOM",
    "WindowCenter_DICOM",
    "WindowWidth_DICOM",
    "Rows_DICOM",
    "Columns_DICOM",
    "XRayTubeCurrent_DICOM",
    "Exposure_DICOM",
    "ExposureInuAs_DICOM",
    "ExposureTime",
    "RelativeXRayExposure_DICOM",
    "ReportID",
    "Report",
    "MethodLabel",
    "Labels",
    "Localizations",
    "LabelsLocalizationsBySentence",
    "labelCUIS",
    "LocalizationsCUIS",
];

fn plan_padchest(p: &mut Planner) -> Result<Plan, SynthError> {
    let root = p.spec.folder.as_str();
    let n = p.cfg.per_source;
    let kinds = ["lateral", "multi_label", "no_finding"];
    let nd = p.distractor_count(kinds.len());
    let mut jobs = Vec::new();
    let mut rows = Vec::new();
    for i in 0..n + nd {
        let selected = i < n;
        let (label, labels, kind): (Label, String, &'static str) = if selected {
            let l = p.class(i);
            let s = if l == Label::Covid {
                "['COVID 19']".to_string()
            } else if p.chance(0.1) {
                "['pneumonia', '']".to_string()
            } else {
                "['pneumonia']".to_string()
            };
            (l, s, "")
        } else {
            match kinds[(i - n) % kinds.len()] {
                "lateral" => (Label::Pneumonia, "['pneumonia']".to_string(), "lateral"),
                "multi_label" => {
                    let s = if (i - n).is_multiple_of(2) {
                        "['pneumonia', 'infiltrates']"
                    } else {
                        "['pneumonia', 'consolidation']"
                    };
                    (Label::Pneumonia, s.to_string(), "multi_label")
                }
                _ => (Label::Normal, "['normal']".to_string(), "no_finding"),
            }
        };
        let (projection, view_dicom) = if kind == "lateral" {
            ("L", "LL")
        } else {
            match p.rng.random_range(0..20) {
                0..=11 => ("PA", "PA"),
                12..=16 => ("AP", "AP"),
                _ => ("AP_horizontal", "AP"),
            }
        };
        let image_id = format!(
            "{}_{:02}-{:03}-{:03}.png",
            p.digits(45),
            p.rng.random_range(0..100),
            p.rng.random_range(0..1000),
            p.rng.random_range(0..1000)
        );
        let dir = p.rng.random_range(0..4u32);
        let (w, h) = p.size();
        let (lo, hi, maxval) = p.stored();
        let mono1 = p.chance(p.spec.monochrome1);
        let window = p
            .chance(p.spec.window)
            .then(|| p.window(lo, hi, maxval, mono1));
        let photometric = if mono1 { "MONOCHROME1" } else { "MONOCHROME2" };
        let age = p.age();
        let sex = p.sex();
        let year = p.rng.random_range(2009..2018);
        let patient = p.hex(32);
        let mut job = p.job(
            format!("{root}/{dir}/{image_id}"),
            label,
            Encoding::Png16 {
                lo,
                hi,
                maxval,
                mono1,
            },
            w,
            h,
        );
        job.selected = selected;
        job.distractor = kind;
        job.lateral = kind == "lateral";
        job.view = if kind == "lateral" { "LL" } else { view_dicom };
        job.patient = patient.clone();
        job.age = age;
        job.sex = sex;
        job.photometric = photometric;
        job.window = window;
        let (wc, ww) = window
            .map(|(c, w)| (format!("{c:.1}"), format!("{w:.1}")))
            .unwrap_or_default();
        let row = vec![
            i.to_string(),
            image_id,
            dir.to_string(),
            format!(
                "{year}{:02}{:02}",
                p.rng.random_range(1..13),
                p.rng.random_range(1..29)
            ),
            p.hex(32),
            patient,
            (year - age as i32).to_string(),
            sex.to_string(),
            view_dicom.to_string(),
            projection.to_string(),
            "Manual review of DICOM fields".to_string(),
            "No".to_string(),
            if p.chance(0.5) { "CR" } else { "DX" }.to_string(),
            "SynthVendor".to_string(),
            photometric.to_string(),
            "0".to_string(),
            String::new(),
            "0.139".to_string(),
            p.spec.bits_stored.to_string(),
            wc,
            ww,
            h.to_string(),
            w.to_string(),
            p.rng.random_range(100..400).to_string(),
            p.rng.random_range(2..10).to_string(),
            String::new(),
            String::new(),
            String::new(),
            p.digits(8),
            "informe sintetico .".to_string(),
            "Physician".to_string(),
            labels,
            "[]".to_string(),
            "[]".to_string(),
            "[]".to_string(),
            "[]".to_string(),
        ];
        rows.push(row);
        jobs.push(job);
    }
    Ok((
        jobs,
        vec![(
            format!("{root}/PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"),
            csv_bytes(&PADCHEST_COLUMNS, &rows, b',')?,
        )],
    ))
}
