//! Dataset adapters: one file per dataset, each reading the dataset's official layout and metadata
//! (`docs/DATASETS.md`) and applying the paper's selection rules.
//!
//! An adapter only *selects*: it returns [`Candidate`]s (file, label, source, the dataset's own patient key,
//! view, dataset columns). [`scan`] then pseudonymises the patient keys, hashes every file, detects its format by
//! content and builds the [`Manifest`]. Adding a dataset is one file implementing [`DatasetAdapter`] plus one
//! line in [`all`].

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use cxr_core::privacy::Pseudonymizer;
use cxr_core::{Label, Manifest, ManifestRecord, SourceId, fsutil};
use rayon::prelude::*;

use crate::error::{IngestError, Result};
use crate::format::detect_format_reader;

mod bimcv;
mod chexpert;
mod cohen;
mod covid19_ar;
mod nih;
mod padchest;
mod v2_cov19_nii;

pub use bimcv::Bimcv;
pub use chexpert::Chexpert;
pub use cohen::Cohen;
pub use covid19_ar::Covid19Ar;
pub use nih::Nih;
pub use padchest::Padchest;
pub use v2_cov19_nii::V2Cov19Nii;

/// One image an adapter selected. `patient_key` is the dataset's own patient identifier: it never leaves
/// this crate ([`scan`] replaces it by a keyed pseudonym).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub source: SourceId,
    pub label: Label,
    pub patient_key: String,
    /// Upper-case projection (`PA`, `AP`, `AP SUPINE`).
    pub view: String,
    /// Absolute path of the file.
    pub path: PathBuf,
    /// Dataset-specific manifest columns (window, photometric, age, sex, location, ...).
    pub extra: BTreeMap<String, String>,
}

/// A dataset's reader and selection rule.
pub trait DatasetAdapter: Send + Sync {
    /// Name used on the command line (`--dataset NAME`).
    fn name(&self) -> &'static str;
    /// One line: what the adapter reads and selects.
    fn describe(&self) -> &'static str;
    /// Reads the metadata under `root` and returns the selected images (files listed but absent are skipped
    /// with a `tracing` warning and counted in [`ScanOutput::missing`] by the caller).
    fn select(&self, root: &Path) -> Result<Selection>;
}

/// What an adapter's selection found.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub candidates: Vec<Candidate>,
    /// Rows that passed the rule but whose file is absent (relative path or file name).
    pub missing: Vec<String>,
}

/// Every adapter, in the paper's order then Cohen.
pub fn all() -> Vec<Box<dyn DatasetAdapter>> {
    vec![
        Box::new(Bimcv),
        Box::new(Covid19Ar),
        Box::new(V2Cov19Nii),
        Box::new(Nih),
        Box::new(Chexpert),
        Box::new(Padchest),
        Box::new(Cohen),
    ]
}

/// The adapter named `name` (case-insensitive; a few aliases such as the source ids are accepted).
pub fn by_name(name: &str) -> Option<Box<dyn DatasetAdapter>> {
    let n = name.trim().to_ascii_lowercase().replace('_', "-");
    let canonical = match n.as_str() {
        "bimcv-covid19" | "bimcv-covid19+" | "bimcv" => "bimcv",
        "covid-19-ar" | "covid19-ar" => "covid19-ar",
        "v2-cov19-nii" | "hannover" => "v2-cov19-nii",
        "nih" | "chestx-ray14" | "chestxray14" => "nih",
        "chexpert" => "chexpert",
        "padchest" => "padchest",
        "cohen" | "covid-chestxray" | "ieee8023" => "cohen",
        _ => return None,
    };
    all().into_iter().find(|a| a.name() == canonical)
}

/// The result of [`scan`]: a manifest with absolute paths, and what could not be included.
#[derive(Debug, Clone, Default)]
pub struct ScanOutput {
    pub manifest: Manifest,
    /// Selected rows whose file is absent.
    pub missing: Vec<String>,
    /// Files that exist but are not a readable image format: `(path, reason)`.
    pub rejected: Vec<(PathBuf, String)>,
}

/// Runs an adapter over `root`: selection, pseudonymous patients and ids, content hashes and formats.
/// Records come out sorted by id; paths are absolute (see [`write_manifest`] to write them relative).
pub fn scan(
    adapter: &dyn DatasetAdapter,
    root: &Path,
    pseudo: &Pseudonymizer,
) -> Result<ScanOutput> {
    if !root.is_dir() {
        return Err(IngestError::dataset(root, "dataset root is not a folder"));
    }
    let root = root.canonicalize().map_err(|e| IngestError::io(root, e))?;
    let selection = adapter.select(&root)?;
    let name = adapter.name();
    let hashed: Vec<std::result::Result<ManifestRecord, (PathBuf, String)>> = selection
        .candidates
        .into_par_iter()
        .map(|c| {
            let bytes = std::fs::read(&c.path).map_err(|e| (c.path.clone(), e.to_string()))?;
            let format = match detect_format_reader(&bytes[..]) {
                Ok(Some((f, _, _))) => f,
                _ => {
                    return Err((
                        c.path.clone(),
                        "not DICOM, NIfTI, PNG or JPEG by content".into(),
                    ));
                }
            };
            let rel = c
                .path
                .strip_prefix(&root)
                .unwrap_or(&c.path)
                .to_string_lossy()
                .into_owned();
            Ok(ManifestRecord {
                id: pseudo.pseudonym(name, "image", &rel),
                source: c.source,
                label: c.label,
                patient: pseudo.pseudonym("pat", name, &c.patient_key),
                view: c.view,
                path: c.path,
                format,
                sha256: fsutil::sha256_bytes(&bytes),
                split: None,
                extra: c.extra,
            })
        })
        .collect();
    let mut records = Vec::with_capacity(hashed.len());
    let mut rejected = Vec::new();
    // A file listed twice (Cohen does this) gets `-2`, `-3`, ... in the adapter's (metadata) order.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for h in hashed {
        match h {
            Ok(mut r) => {
                let n = seen.entry(r.id.clone()).or_default();
                *n += 1;
                if *n > 1 {
                    r.id = format!("{}-{n}", r.id);
                }
                records.push(r)
            }
            Err((p, why)) => {
                tracing::warn!(file = %p.display(), "rejected: {why}");
                rejected.push((p, why));
            }
        }
    }
    records.sort_by(|a, b| a.id.cmp(&b.id));
    for m in &selection.missing {
        tracing::warn!(dataset = name, "selected but absent: {m}");
    }
    Ok(ScanOutput {
        manifest: Manifest::new(records),
        missing: selection.missing,
        rejected,
    })
}

/// Writes a manifest by the path rule of `cxr_core::manifest`: every path relative to the manifest's folder
/// (when both sit on the same tree, so a manifest and its data can move together), absolute otherwise.
pub fn write_manifest(manifest: &Manifest, out: &Path) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| IngestError::io(dir, e))?;
    }
    manifest.write(out)?;
    Ok(())
}

// ---------- helpers shared by the adapters ----------

/// A delimited table read whole: header names and rows (missing trailing fields read as empty).
pub(crate) struct Table {
    pub path: PathBuf,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Reads CSV (`b','`) or TSV (`b'\t'`); a `.gz` file (by content) is decompressed.
    pub fn read(path: &Path, delimiter: u8) -> Result<Self> {
        let mut bytes = std::fs::read(path).map_err(|e| IngestError::io(path, e))?;
        if bytes.starts_with(&[0x1F, 0x8B]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut out)
                .map_err(|e| IngestError::io(path, e))?;
            bytes = out;
        }
        if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
            bytes.drain(..3);
        }
        let mut rdr = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .quoting(delimiter == b',')
            .from_reader(&bytes[..]);
        let meta_err = |line: u64, e: &dyn std::fmt::Display| IngestError::Metadata {
            path: path.to_path_buf(),
            line,
            message: e.to_string(),
        };
        let headers: Vec<String> = rdr
            .headers()
            .map_err(|e| meta_err(1, &e))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        let mut rows = Vec::new();
        for (i, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(|e| meta_err(i as u64 + 2, &e))?;
            rows.push(rec.iter().map(|s| s.to_string()).collect());
        }
        Ok(Self {
            path: path.to_path_buf(),
            headers,
            rows,
        })
    }

    /// Index of a column, or an error naming the file and the column.
    pub fn col(&self, name: &str) -> Result<usize> {
        self.headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| IngestError::Metadata {
                path: self.path.clone(),
                line: 1,
                message: format!("missing column `{name}`"),
            })
    }

    pub fn opt_col(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }
}

/// Field `i` of a row, trimmed; empty when the row is short.
pub(crate) fn field(row: &[String], i: usize) -> &str {
    row.get(i).map(|s| s.trim()).unwrap_or("")
}

/// Parses a Python list repr such as `['COVID 19', 'ground glass pattern']` or `[63, 64]` into its items
/// (trimmed, empty ones dropped). A bare value is a one-item list.
pub(crate) fn py_list(s: &str) -> Vec<String> {
    let s = s.trim();
    let inner = s
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(s);
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for ch in inner.chars() {
        match (quote, ch) {
            (None, '\'' | '"') => quote = Some(ch),
            (Some(q), c) if c == q => quote = None,
            (None, ',') => items.push(std::mem::take(&mut cur)),
            (_, c) => cur.push(c),
        }
    }
    items.push(cur);
    items
        .into_iter()
        .map(|i| i.trim().to_string())
        .filter(|i| !i.is_empty() && i != "None" && i != "nan")
        .collect()
}

/// First number of a value that may be a number, a list repr or a DICOM multi-value (`a\b`).
pub(crate) fn first_number(s: &str) -> Option<f64> {
    py_list(&s.replace('\\', ","))
        .first()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

/// Formats a number for a manifest cell without a trailing `.0` noise for integers.
pub(crate) fn num_cell(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Every file under `dir` (recursively) whose name satisfies `keep`, sorted.
pub(crate) fn walk(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| IngestError::io(&d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| IngestError::io(&d, e))?;
            let p = entry.path();
            let ft = entry.file_type().map_err(|e| IngestError::io(&p, e))?;
            if ft.is_dir() {
                stack.push(p);
            } else if keep(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Index of files by file name (first wins, paths sorted), for datasets whose images sit in several folders.
pub(crate) fn index_by_name(files: Vec<PathBuf>) -> HashMap<String, PathBuf> {
    let mut map = HashMap::new();
    for f in files {
        if let Some(n) = f.file_name() {
            map.entry(n.to_string_lossy().into_owned()).or_insert(f);
        }
    }
    map
}

pub(crate) fn source(id: &str) -> SourceId {
    // The constants are valid slugs; `new` cannot fail on them.
    SourceId::new(id).unwrap_or_else(|_| unreachable_source(id))
}

#[cold]
fn unreachable_source(id: &str) -> SourceId {
    panic!("invalid built-in source id {id:?}")
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian), for the BIMCV 14-day PCR window.
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_lists_parse() {
        assert_eq!(
            py_list("['COVID 19', 'ground glass pattern']"),
            vec!["COVID 19", "ground glass pattern"]
        );
        assert_eq!(py_list("[' pneumonia', '']"), vec!["pneumonia"]);
        assert_eq!(py_list("[63, 64]"), vec!["63", "64"]);
        assert_eq!(py_list("['a, b', \"c\"]"), vec!["a, b", "c"]);
        assert_eq!(py_list("[]"), Vec::<String>::new());
        assert_eq!(first_number("['2047.0', '4095']"), Some(2047.0));
        assert_eq!(first_number("40\\400"), Some(40.0));
        assert_eq!(first_number(""), None);
        assert_eq!(num_cell(2047.0), "2047");
        assert_eq!(num_cell(0.5), "0.5");
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(
            days_from_civil(2020, 3, 1) - days_from_civil(2020, 2, 28),
            2
        );
        assert_eq!(
            days_from_civil(2021, 1, 1) - days_from_civil(2020, 1, 1),
            366
        );
    }

    #[test]
    fn adapters_are_found_by_name() {
        for a in all() {
            assert_eq!(by_name(a.name()).unwrap().name(), a.name());
        }
        assert_eq!(by_name("ChestX-ray14").unwrap().name(), "nih");
        assert!(by_name("mnist").is_none());
    }
}
