//! The six sources' dataset layouts, one file per dataset (mirroring `crates/ingest/src/adapters/`, which reads
//! them back), and the [`Planner`] they share.
//!
//! Planning is sequential and cheap (one ChaCha8 stream per source): a layout fixes every file name, size, age
//! and metadata value of its source and returns the images to render ([`Job`]s) plus its metadata files. Adding
//! a source is one file here with a `plan_*` function, plus one line in `world::generate_with_progress`.

use cxr_core::Label;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::SynthError;
use crate::pathology::Pattern;
use crate::sources::SourceSpec;
use crate::world::{Encoding, Job, WorldConfig, WorldKind, mix, range};

mod bimcv;
mod chexpert;
mod covid19_ar;
mod nih;
mod padchest;
mod v2_cov19_nii;

pub(crate) use bimcv::plan_bimcv;
pub(crate) use chexpert::plan_chexpert;
pub(crate) use covid19_ar::plan_covid19_ar;
pub(crate) use nih::plan_nih;
pub(crate) use padchest::plan_padchest;
pub(crate) use v2_cov19_nii::plan_v2;

/// One source's planning state: the world config, the source's signature and its own ChaCha8 stream.
pub(crate) struct Planner<'a> {
    cfg: &'a WorldConfig,
    spec: &'a SourceSpec,
    source: usize,
    rng: ChaCha8Rng,
    next_image: u64,
}

impl<'a> Planner<'a> {
    pub(crate) fn new(cfg: &'a WorldConfig, spec: &'a SourceSpec, source: usize) -> Self {
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

    pub(crate) fn size(&mut self) -> (usize, usize) {
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
    pub(crate) fn job(
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

/// A source's jobs and its metadata files (path under the world root, bytes).
type Plan = (Vec<Job>, Vec<(String, Vec<u8>)>);
