//! Batch mode: a manifest in, 8-bit PNGs plus an extended manifest out.
//!
//! - Streamed ([`run_batch`] of [`Streamed`] rows): rows are taken from the input 1024 at a time and processed in parallel
//!   with rayon, each worker holding one image at a time; output rows go to a spool file
//!   ([`cxr_core::ManifestWriter`]), so memory is flat in the number of images (`cxr preprocess` reads the
//!   manifest with `Manifest::stream`; docs/PERFORMANCE.md).
//! - Content-keyed cache: `<out>/png8/<k[..2]>/<k>.png` with `k = sha256(input sha256, the image's display
//!   options, geometry, metadata override, PIPELINE_VERSION)`, plus `<k>.json` recording what was applied,
//!   written last as the commit marker. A rerun or a resumed run decodes nothing that is already there.
//! - Bad files become rows of `rejects.csv` (`id, file, reason`); the run carries on.
//! - Outputs: `<out>/manifest.csv` (input columns, `path` made absolute, plus `png8, pre_window,
//!   pre_window_source, pre_inverted, pre_min, pre_max, pre_size, pre_modality, pre_voi_function`),
//!   `<out>/rejects.csv`, `<out>/summary.json`. With augmentation each input gives ten rows `<id>.aug<k>`
//!   (k = 0..9, 0 = the original) with `aug_of` and `aug`.
//! - Sharded (`BatchOptions::shard`): only the shard's rows, written as `manifest.part-K-of-N.csv` and
//!   `rejects.part-K-of-N.csv`; shards share the cache (disjoint rows; an image listed twice writes identical
//!   bytes through per-process temporary names).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use cxr_core::png8::encode_grey8;
use cxr_core::{Manifest, ManifestRecord, Photometric, RawImage, Window, absolute_path, fsutil};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::PreprocessError;
use crate::augment::AUGMENTATIONS;
use crate::config::{PIPELINE_VERSION, PreprocessConfig};
use crate::display::{Applied, MetadataOverride, ModalityApplied, fmt_num};
use crate::pipeline::{Geometry, preprocess};
use crate::png::write_cache_file;

/// Batch switches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOptions {
    /// Write the paper's ten augmented variants and ten manifest rows per image.
    pub augment: bool,
    /// Hash every input file instead of trusting the manifest's `sha256` column.
    pub verify_hash: bool,
    /// Process only this shard's rows (`cxr_core::shard`) and write `manifest.part-K-of-N.csv` and
    /// `rejects.part-K-of-N.csv` instead of `manifest.csv`, `rejects.csv` and `summary.json` (merged later by
    /// `cargo xtask manifest merge`). The cache folder is shared by all shards.
    pub shard: Option<cxr_core::Shard>,
}

/// Progress after each image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub cached: usize,
    pub rejected: usize,
}

/// The end-of-run summary (also written to `summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchSummary {
    pub total: usize,
    /// Images decoded and processed in this run.
    pub processed: usize,
    /// Images found in the cache.
    pub cached: usize,
    pub rejected: usize,
    /// Rows of the output manifest.
    pub rows: usize,
    pub augment: bool,
    pub config_hash: String,
    pub elapsed_s: f64,
    pub manifest: PathBuf,
    pub rejects: PathBuf,
}

/// One rejected input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub id: String,
    pub file: PathBuf,
    pub reason: String,
}

/// What the cache remembers about one image (`<key>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CacheEntry {
    applied: Applied,
    input_size: (u32, u32),
    output_size: (u32, u32),
    augmented: bool,
    /// The manifest columns, formatted once: a float read back from JSON need not print the same.
    columns: BTreeMap<String, String>,
}

/// The `pre_*` manifest columns of one image.
fn pre_columns(a: &Applied, output_size: (u32, u32)) -> BTreeMap<String, String> {
    let function = match a.voi_function {
        Some(cxr_core::VoiLutFunction::Linear) => "LINEAR",
        Some(cxr_core::VoiLutFunction::LinearExact) => "LINEAR_EXACT",
        Some(cxr_core::VoiLutFunction::Sigmoid) => "SIGMOID",
        None => "",
    };
    let modality = match a.modality {
        ModalityApplied::Identity => "identity",
        ModalityApplied::Rescale => "rescale",
        ModalityApplied::Lut => "lut",
        ModalityApplied::ByReader => "by-reader",
    };
    [
        ("pre_window", a.window_string()),
        ("pre_window_source", a.source.as_str().to_string()),
        ("pre_inverted", a.inverted.to_string()),
        ("pre_min", fmt_num(a.min)),
        ("pre_max", fmt_num(a.max)),
        ("pre_size", format!("{}x{}", output_size.0, output_size.1)),
        ("pre_modality", modality.to_string()),
        ("pre_voi_function", function.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

enum Outcome {
    Rows(Vec<ManifestRecord>, bool),
    Rejected(Reject),
}

/// Reads the metadata window / photometric columns of a record; empty cells mean absent.
pub fn metadata_override(record: &ManifestRecord) -> Result<MetadataOverride, String> {
    let num = |col: &str| -> Result<Option<f64>, String> {
        match record.get(col) {
            Some(v) if !v.trim().is_empty() => {
                // Multi-valued DICOM strings (`40\400`) keep the first value, as the first window is the default.
                let first = v.split(['\\', ';']).next().unwrap_or("").trim();
                first
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .map(Some)
                    .ok_or_else(|| format!("column `{col}`: {v:?} is not a number"))
            }
            _ => Ok(None),
        }
    };
    let window = match (num("window_center")?, num("window_width")?) {
        (Some(center), Some(width)) => Some(Window {
            center,
            width,
            explanation: String::new(),
        }),
        (None, None) => None,
        _ => return Err("only one of `window_center` / `window_width` is set".into()),
    };
    let photometric = match record
        .get("photometric")
        .map(|s| s.trim().to_ascii_uppercase())
    {
        Some(s) if s == "MONOCHROME1" => Some(Photometric::Monochrome1),
        Some(s) if s == "MONOCHROME2" => Some(Photometric::Monochrome2),
        Some(s) if s.is_empty() => None,
        None => None,
        Some(s) => return Err(format!("column `photometric`: {s:?} is not MONOCHROME1/2")),
    };
    Ok(MetadataOverride {
        window,
        photometric,
    })
}

/// What [`run_batch`] reads: a manifest held in memory (`&Manifest`), or one streamed ([`Streamed`]).
pub trait BatchInput {
    type Rows: Iterator<Item = Result<ManifestRecord, cxr_core::CoreError>>;
    /// The columns and base folder (no records), the rows, and how many of them `shard` owns.
    fn into_rows(self, shard: Option<cxr_core::Shard>) -> (Manifest, Self::Rows, usize);
}

type Owned = fn(ManifestRecord) -> Result<ManifestRecord, cxr_core::CoreError>;

impl<'a> BatchInput for &'a Manifest {
    type Rows = std::iter::Map<std::iter::Cloned<std::slice::Iter<'a, ManifestRecord>>, Owned>;
    fn into_rows(self, shard: Option<cxr_core::Shard>) -> (Manifest, Self::Rows, usize) {
        let total = self
            .records
            .iter()
            .filter(|r| shard.is_none_or(|s| s.owns_record(r)))
            .count();
        let header = Manifest {
            records: Vec::new(),
            extra_columns: self.extra_columns.clone(),
            base_dir: self.base_dir.clone(),
            absent: self.absent.clone(),
        };
        (header, self.records.iter().cloned().map(Ok as Owned), total)
    }
}

/// The rows of a manifest read one at a time (`Manifest::stream`): `header` gives their base folder and
/// columns (`ManifestRows::header`), `total` the number the shard owns (for the progress; the caller counts
/// them in a first pass, which also checks every row before any work).
pub struct Streamed<I> {
    pub header: Manifest,
    pub rows: I,
    pub total: usize,
}

impl<I: Iterator<Item = Result<ManifestRecord, cxr_core::CoreError>>> BatchInput for Streamed<I> {
    type Rows = I;
    fn into_rows(self, _: Option<cxr_core::Shard>) -> (Manifest, I, usize) {
        (self.header, self.rows, self.total)
    }
}

/// Rows taken from the input at a time: enough to keep every core busy, few enough to hold.
const CHUNK_ROWS: usize = 1024;

/// Runs the stage over a manifest (held or [`Streamed`]). Rows are processed [`CHUNK_ROWS`] at a time and
/// their output rows streamed to the output manifest ([`cxr_core::ManifestWriter`]) and `rejects.csv`, so
/// memory does not grow with the row count. `read` decodes one file (xtask passes cxr-ingest's reader); its
/// errors become rejects. Returns an error when a row cannot be read or an output cannot be written.
pub fn run_batch<F, E>(
    input: impl BatchInput,
    out_dir: &Path,
    config: &PreprocessConfig,
    options: &BatchOptions,
    read: F,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<BatchSummary, PreprocessError>
where
    F: Fn(&Path) -> Result<RawImage, E> + Sync,
    E: Display,
{
    let start = Instant::now();
    let (header, rows, total) = input.into_rows(options.shard);
    let header = &header;
    let geometry = Geometry {
        size: config.size,
        resize: config.resize,
        filter: config.filter,
    };
    let (done, cached, rejected) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let cache_dir = out_dir.join("png8");
    std::fs::create_dir_all(&cache_dir).map_err(|e| cxr_core::CoreError::io(&cache_dir, e))?;
    let name = |n: &str| match &options.shard {
        Some(s) => s.part_path(&out_dir.join(n)),
        None => out_dir.join(n),
    };
    let manifest_path = name("manifest.csv");
    let rejects_path = name("rejects.csv");
    // `path` cells stay relative to the input manifest's folder, `png8` cells are absolute: the writer
    // re-expresses both for the output folder.
    let mut out = cxr_core::ManifestWriter::create(&manifest_path, header)?;
    let mut rejects = RejectWriter::create(&rejects_path)?;
    let (mut n_cached, mut n_rejected) = (0, 0);
    // Errors pass, to be returned; rows of other shards do not.
    let mut rows =
        rows.filter(|r| !matches!(r, Ok(r) if options.shard.is_some_and(|s| !s.owns_record(r))));
    let mut chunk = Vec::with_capacity(CHUNK_ROWS);
    loop {
        chunk.clear();
        for r in rows.by_ref().take(CHUNK_ROWS) {
            chunk.push(r?);
        }
        if chunk.is_empty() {
            break;
        }
        let outcomes: Vec<Result<Outcome, PreprocessError>> = chunk
            .par_iter()
            .map(|record| {
                let file = header.resolve(record);
                let outcome =
                    process_one(record, &file, out_dir, config, &geometry, options, &read);
                match &outcome {
                    Ok(Outcome::Rows(_, true)) => {
                        cached.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Outcome::Rejected(r)) => {
                        tracing::debug!(id = %r.id, "rejected: {}", r.reason);
                        rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(Progress {
                    done: d,
                    total,
                    cached: cached.load(Ordering::Relaxed),
                    rejected: rejected.load(Ordering::Relaxed),
                });
                outcome
            })
            .collect();
        for o in outcomes {
            match o? {
                Outcome::Rows(rs, hit) => {
                    n_cached += usize::from(hit);
                    for r in &rs {
                        out.write(r)?;
                    }
                }
                Outcome::Rejected(r) => {
                    rejects.write(&r)?;
                    n_rejected += 1;
                }
            }
        }
    }
    let n_rows = out.finish()?;
    rejects.finish()?;
    let summary = BatchSummary {
        total,
        processed: total - n_cached - n_rejected,
        cached: n_cached,
        rejected: n_rejected,
        rows: n_rows,
        augment: options.augment,
        config_hash: config.hash(),
        elapsed_s: start.elapsed().as_secs_f64(),
        manifest: manifest_path,
        rejects: rejects_path,
    };
    // A shard's counts are in its log; `summary.json` describes a whole run only.
    if options.shard.is_none() {
        let summary_path = out_dir.join("summary.json");
        let json = serde_json::to_vec_pretty(&summary).map_err(|e| PreprocessError::Cache {
            path: summary_path.clone(),
            message: e.to_string(),
        })?;
        fsutil::write_atomic(&summary_path, &json)?;
    }
    tracing::info!(
        total,
        processed = summary.processed,
        cached = summary.cached,
        rejected = summary.rejected,
        "preprocess finished in {:.1} s",
        summary.elapsed_s
    );
    Ok(summary)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[allow(clippy::too_many_arguments)]
fn process_one<F, E>(
    record: &ManifestRecord,
    file: &Path,
    out_dir: &Path,
    config: &PreprocessConfig,
    geometry: &Geometry,
    options: &BatchOptions,
    read: &F,
) -> Result<Outcome, PreprocessError>
where
    F: Fn(&Path) -> Result<RawImage, E> + Sync,
    E: Display,
{
    let reject = |reason: String| {
        Ok(Outcome::Rejected(Reject {
            id: record.id.clone(),
            file: file.to_path_buf(),
            reason: one_line(&reason),
        }))
    };
    let sha = if record.sha256.trim().is_empty() || options.verify_hash {
        match fsutil::sha256_file(file) {
            Ok(s) => s,
            Err(e) => return reject(e.to_string()),
        }
    } else {
        record.sha256.trim().to_ascii_lowercase()
    };
    let over = match metadata_override(record) {
        Ok(o) => o,
        Err(e) => return reject(format!("{}: {e}", file.display())),
    };
    let opts = config.display_options(record.source.as_str());
    let key_json = serde_json::json!({
        "v": PIPELINE_VERSION, "sha256": sha, "display": opts, "geometry": geometry, "metadata": over,
    });
    let key = fsutil::sha256_bytes(key_json.to_string().as_bytes());
    let rel_dir = PathBuf::from("png8").join(&key[..2]);
    let dir = out_dir.join(&rel_dir);
    let png_rel = rel_dir.join(format!("{key}.png"));
    let aug_rel = |k: usize| {
        if k == 0 {
            png_rel.clone()
        } else {
            rel_dir.join(format!("{key}.aug{k}.png"))
        }
    };
    let json_path = dir.join(format!("{key}.json"));

    let hit = read_entry(&json_path).filter(|e| {
        out_dir.join(&png_rel).is_file()
            && (!options.augment
                || (e.augmented && (1..10).all(|k| out_dir.join(aug_rel(k)).is_file())))
    });
    let (entry, was_cached) = match hit {
        Some(e) => (e, true),
        None => {
            // A decoder panic on one malformed file must not end the batch: it becomes a reject.
            let read_result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(file)));
            let raw = match read_result {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return reject(e.to_string()),
                Err(_) => return reject(format!("{}: the decoder panicked", file.display())),
            };
            let p = match preprocess(&raw, &over, &opts, geometry) {
                Ok(p) => p,
                Err(e) => return reject(format!("{}: {e}", file.display())),
            };
            drop(raw);
            let png_path = out_dir.join(&png_rel);
            write_cache_file(&png_path, &encode_grey8(&p.image, &png_path)?)?;
            if options.augment {
                for (k, kind) in AUGMENTATIONS.iter().enumerate().skip(1) {
                    let path = out_dir.join(aug_rel(k));
                    write_cache_file(&path, &encode_grey8(&kind.apply(&p.image), &path)?)?;
                }
            }
            let output_size = (p.image.width, p.image.height);
            let entry = CacheEntry {
                columns: pre_columns(&p.applied, output_size),
                applied: p.applied,
                input_size: p.input_size,
                output_size,
                augmented: options.augment,
            };
            let json = serde_json::to_vec(&entry).map_err(|e| PreprocessError::Cache {
                path: json_path.clone(),
                message: e.to_string(),
            })?;
            // Written last: its presence commits the entry.
            write_cache_file(&json_path, &json)?;
            (entry, false)
        }
    };

    let mut base = record.clone();
    if base.path.is_relative() {
        // The output manifest lives elsewhere: make the path absolute (canonical when the file exists).
        base.path = std::fs::canonicalize(file)
            .or_else(|_| std::path::absolute(file))
            .unwrap_or_else(|_| file.to_path_buf());
    }
    for (k, v) in &entry.columns {
        base.set(k, v.clone());
    }
    let rows = if options.augment {
        AUGMENTATIONS
            .iter()
            .enumerate()
            .map(|(k, kind)| {
                let mut r = base.clone();
                r.id = format!("{}.aug{k}", record.id);
                r.set("aug_of", record.id.clone());
                r.set("aug", kind.name());
                r.set(
                    "png8",
                    absolute_path(&out_dir.join(aug_rel(k)))
                        .to_string_lossy()
                        .into_owned(),
                );
                r
            })
            .collect()
    } else {
        base.set(
            "png8",
            absolute_path(&out_dir.join(&png_rel))
                .to_string_lossy()
                .into_owned(),
        );
        vec![base]
    };
    Ok(Outcome::Rows(rows, was_cached))
}

fn read_entry(path: &Path) -> Option<CacheEntry> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes `rejects.csv` (`id, file, reason`) atomically; a header only when nothing was rejected.
pub fn write_rejects(rejects: &[Reject], path: &Path) -> Result<(), PreprocessError> {
    let mut w = RejectWriter::create(path)?;
    for r in rejects {
        w.write(r)?;
    }
    w.finish()
}

/// `rejects.csv` written one row at a time, committed by [`RejectWriter::finish`].
struct RejectWriter {
    w: csv::Writer<fsutil::AtomicFile>,
    path: PathBuf,
}

impl RejectWriter {
    fn create(path: &Path) -> Result<Self, PreprocessError> {
        let mut w = Self {
            w: csv::Writer::from_writer(fsutil::AtomicFile::create_partial(path)?),
            path: path.to_path_buf(),
        };
        w.row(["id", "file", "reason"])?;
        Ok(w)
    }

    fn write(&mut self, r: &Reject) -> Result<(), PreprocessError> {
        self.row([r.id.as_str(), &r.file.to_string_lossy(), r.reason.as_str()])
    }

    fn row(&mut self, cells: [&str; 3]) -> Result<(), PreprocessError> {
        let path = &self.path;
        self.w.write_record(cells).map_err(|e| cache_err(path, &e))
    }

    fn finish(self) -> Result<(), PreprocessError> {
        let file = self.w.into_inner().map_err(|e| cache_err(&self.path, &e))?;
        Ok(file.commit()?)
    }
}

fn cache_err(path: &Path, e: &dyn Display) -> PreprocessError {
    PreprocessError::Cache {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}
