//! The manifest: one CSV row per image, the contract between stages.
//!
//! Required columns (written by ingest): `id, source, label, patient, view, path, format, sha256`.
//! Optional core column: `split`. A consumer that reads only some columns (the audit of a model from
//! elsewhere, whose manifest a user writes by hand) reads with [`Manifest::read_lenient`], which needs only
//! `id, source, label` and the columns it names. Every later stage appends its own columns (see `docs/ARCHITECTURE.md`);
//! columns this crate does not know are kept, in order, in [`ManifestRecord::extra`], so a stage that reads
//! and rewrites a manifest never drops another stage's work.
//!
//! **Path rule.** Every cell of a [`PATH_COLUMNS`] column is either absolute or relative to the folder of the
//! manifest file that holds it ([`Manifest::resolve`], [`Manifest::resolve_cell`]); never relative to the
//! working directory. [`Manifest::read`] records that folder, absolute, in `base_dir`, and [`Manifest::write`]
//! re-expresses every path cell for the folder it writes to ([`path_cell`]), so a stage that reads a manifest
//! in one folder and writes it into another keeps every path valid, whatever the working directory.

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};

use crate::{CoreError, ImageFormat, Label, SourceId, Split, fsutil};

/// The columns every manifest has, in this order.
pub const REQUIRED_COLUMNS: [&str; 8] = [
    "id", "source", "label", "patient", "view", "path", "format", "sha256",
];

/// Columns whose cells name files: resolved and rewritten by the path rule (module docs).
pub const PATH_COLUMNS: [&str; 4] = ["path", "png8", "mask", "crop"];

/// `p` made absolute against the working directory and lexically normalised (`.` dropped, `a/..` folded);
/// the file system is not touched beyond reading the working directory.
pub fn absolute_path(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            // `..` at the root is the root (POSIX), never a `/../etc/passwd` component to carry along.
            Component::ParentDir => {
                if !out.pop() && !out.has_root() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The cell to write for `file` in a manifest stored in `manifest_dir` (either may be relative to the working
/// directory): relative to `manifest_dir` with forward slashes (and `..` where needed) when the two share a
/// folder below the root, absolute otherwise.
pub fn path_cell(manifest_dir: &Path, file: &Path) -> String {
    let (f, d) = (absolute_path(file), absolute_path(manifest_dir));
    let fc: Vec<Component<'_>> = f.components().collect();
    let dc: Vec<Component<'_>> = d.components().collect();
    let common = fc.iter().zip(&dc).take_while(|(a, b)| a == b).count();
    let shares_folder = fc[..common]
        .iter()
        .any(|c| matches!(c, Component::Normal(_)));
    if !shares_folder {
        return f.to_string_lossy().into_owned();
    }
    let mut parts: Vec<String> = vec!["..".into(); dc.len() - common];
    parts.extend(
        fc[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// One image of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestRecord {
    /// Stable, pseudonymous image id, unique within the manifest (safe in file names).
    pub id: String,
    pub source: SourceId,
    pub label: Label,
    /// Pseudonymous patient id (see [`crate::privacy`]); never a real identifier.
    pub patient: String,
    /// Projection as the dataset states it, upper-case (`PA`, `AP`, `AP SUPINE`, ...); empty when unknown.
    pub view: String,
    pub path: PathBuf,
    pub format: ImageFormat,
    /// SHA-256 of the file's bytes, lower-case hex.
    pub sha256: String,
    pub split: Option<Split>,
    /// Columns added by later stages or datasets, by name.
    pub extra: BTreeMap<String, String>,
}

impl ManifestRecord {
    /// The value of any column, core or extra, as it is written in the CSV.
    pub fn get(&self, column: &str) -> Option<String> {
        Some(match column {
            "id" => self.id.clone(),
            "source" => self.source.to_string(),
            "label" => self.label.to_string(),
            "patient" => self.patient.clone(),
            "view" => self.view.clone(),
            "path" => self.path.to_string_lossy().into_owned(),
            "format" => self.format.to_string(),
            "sha256" => self.sha256.clone(),
            "split" => self.split.map(|s| s.to_string()).unwrap_or_default(),
            other => return self.extra.get(other).cloned(),
        })
    }

    /// Sets an extra column (a stage's output). Core columns have typed fields: set those directly.
    pub fn set(&mut self, column: &str, value: impl Into<String>) {
        self.extra.insert(column.to_string(), value.into());
    }
}

/// A manifest: records plus the order of the extra columns, and the folder relative paths start from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    pub records: Vec<ManifestRecord>,
    /// Extra column names in file order; new columns set on records are appended on write.
    pub extra_columns: Vec<String>,
    /// Folder of the manifest file, absolute after [`Manifest::read`]; relative path cells are resolved
    /// against it. Empty when built in memory: relative cells are then written as they are (the builder
    /// made them relative to the destination folder), absolute ones by the path rule.
    pub base_dir: PathBuf,
    /// Core columns the file did not have ([`Manifest::read_lenient`]): their fields hold placeholders and
    /// [`Manifest::columns`] leaves them out, so a manifest is never written with values nobody gave.
    pub absent: Vec<String>,
}

impl Manifest {
    pub fn new(records: Vec<ManifestRecord>) -> Self {
        Self {
            records,
            ..Self::default()
        }
    }

    /// Absolute (or base-relative) path of a record's file.
    pub fn resolve(&self, record: &ManifestRecord) -> PathBuf {
        self.resolve_path(&record.path)
    }

    /// Absolute (or base-relative) path named by any path cell (`png8`, `mask`, `crop`, ...).
    pub fn resolve_cell(&self, cell: &str) -> PathBuf {
        self.resolve_path(Path::new(cell))
    }

    fn resolve_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// A copy whose path cells are expressed for a manifest stored in `dir` (the path rule, module docs).
    pub fn rebased(&self, dir: &Path) -> Manifest {
        let mut m = self.clone();
        for r in &mut m.records {
            self.rebase_record(dir, r);
        }
        m.base_dir = absolute_path(dir);
        m
    }

    /// `r`'s path cells (read with this manifest's `base_dir`) expressed for a manifest stored in `dir`.
    fn rebase_record(&self, dir: &Path, r: &mut ManifestRecord) {
        let from_file = !self.base_dir.as_os_str().is_empty();
        let cell = |v: &str| -> Option<String> {
            if v.trim().is_empty() {
                return None;
            }
            let p = Path::new(v);
            if p.is_absolute() || from_file {
                Some(path_cell(dir, &self.resolve_path(p)))
            } else {
                None
            }
        };
        if let Some(c) = cell(&r.path.to_string_lossy()) {
            r.path = PathBuf::from(c);
        }
        for col in &PATH_COLUMNS[1..] {
            if let Some(c) = r.extra.get(*col).and_then(|v| cell(v)) {
                r.extra.insert((*col).to_string(), c);
            }
        }
    }

    /// Reads a manifest. Errors name the file, the line (1-based, header = line 1) and the column.
    pub fn read(path: &Path) -> Result<Self, CoreError> {
        let file = std::fs::File::open(path).map_err(|e| CoreError::io(path, e))?;
        let mut manifest = Self::from_reader(file, path)?;
        manifest.base_dir = absolute_path(path.parent().unwrap_or(Path::new("")));
        Ok(manifest)
    }

    /// Reads a manifest for a consumer that needs only some columns: `id, source, label` and `needs` (core
    /// or extra columns). Every one of them the file lacks is named in one [`CoreError::MissingColumns`];
    /// core columns it lacks and does not need are filled with placeholders (a missing `patient` makes each
    /// image its own patient; `view`, `path`, `sha256` are empty; `format` reads `png`) and listed in
    /// [`Manifest::absent`], so writing the manifest leaves them out rather than inventing them.
    pub fn read_lenient(path: &Path, needs: &[&str]) -> Result<Self, CoreError> {
        let file = std::fs::File::open(path).map_err(|e| CoreError::io(path, e))?;
        let mut manifest = Self::parse(file, path, Some(needs))?;
        manifest.base_dir = absolute_path(path.parent().unwrap_or(Path::new("")));
        Ok(manifest)
    }

    /// [`Manifest::read_lenient`] of CSV from any reader (a table built in memory: a DataFrame, rows):
    /// `name` stands for the file in errors and relative cells resolve against `base_dir`.
    pub fn read_lenient_from(
        reader: impl std::io::Read,
        name: &Path,
        base_dir: &Path,
        needs: &[&str],
    ) -> Result<Self, CoreError> {
        let mut manifest = Self::parse(reader, name, Some(needs))?;
        manifest.base_dir = absolute_path(base_dir);
        Ok(manifest)
    }

    /// Parses CSV from any reader; `path` is only used in error messages.
    pub fn from_reader(reader: impl std::io::Read, path: &Path) -> Result<Self, CoreError> {
        Self::parse(reader, path, None)
    }

    /// [`Manifest::from_reader`], or with `lenient = Some(needs)` the reading of [`Manifest::read_lenient`]:
    /// every row of [`ManifestRows`], kept.
    fn parse(
        reader: impl std::io::Read,
        path: &Path,
        lenient: Option<&[&str]>,
    ) -> Result<Self, CoreError> {
        let mut rows = ManifestRows::new(reader, path, lenient)?;
        let records = rows.by_ref().collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            records,
            ..rows.header
        })
    }

    /// Opens a manifest to read row by row ([`ManifestRows`]): the reading of [`Manifest::read`] (`lenient =
    /// None`) or of [`Manifest::read_lenient`] (`Some(needs)`), same checks and errors, without holding the
    /// rows. For a consumer of a manifest that can be large (`manifest check`, `score`, `preprocess`).
    pub fn stream(
        path: &Path,
        lenient: Option<&[&str]>,
    ) -> Result<ManifestRows<std::io::BufReader<std::fs::File>>, CoreError> {
        let file = std::fs::File::open(path).map_err(|e| CoreError::io(path, e))?;
        let mut rows = ManifestRows::new(std::io::BufReader::new(file), path, lenient)?;
        rows.header.base_dir = absolute_path(path.parent().unwrap_or(Path::new("")));
        Ok(rows)
    }

    /// Every column in write order: the core ones, `split` when any record has one, then the extra ones
    /// (file order first, then new ones in sorted order).
    pub fn columns(&self) -> Vec<String> {
        self.column_order(
            self.records.iter().any(|r| r.split.is_some()),
            self.records.iter().flat_map(|r| r.extra.keys()),
        )
    }

    /// [`Manifest::columns`] for records of which any has a split (`any_split`) and whose extra columns are
    /// `keys` (repeats allowed).
    fn column_order<'a>(
        &self,
        any_split: bool,
        keys: impl Iterator<Item = &'a String>,
    ) -> Vec<String> {
        let mut cols: Vec<String> = REQUIRED_COLUMNS
            .iter()
            .filter(|c| !self.absent.iter().any(|a| a == *c))
            .map(|c| c.to_string())
            .collect();
        if any_split {
            cols.push("split".into());
        }
        let mut extra = self.extra_columns.clone();
        let known: HashSet<&String> = extra.iter().collect();
        let mut new: Vec<String> = keys
            .filter(|k| !known.contains(*k))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        extra.append(&mut new);
        cols.extend(extra);
        cols
    }

    /// Serialises to CSV bytes.
    pub fn to_csv(&self) -> Result<Vec<u8>, CoreError> {
        let cols = self.columns();
        let mut wtr = csv::Writer::from_writer(Vec::new());
        let err = |e: csv::Error| CoreError::Csv {
            path: PathBuf::from("<manifest>"),
            line: 0,
            message: e.to_string(),
        };
        wtr.write_record(&cols).map_err(err)?;
        for r in &self.records {
            wtr.write_record(cols.iter().map(|c| r.get(c).unwrap_or_default()))
                .map_err(err)?;
        }
        wtr.into_inner().map_err(|e| CoreError::Csv {
            path: PathBuf::from("<manifest>"),
            line: 0,
            message: e.to_string(),
        })
    }

    /// Writes the manifest atomically (temporary file + rename): a killed run never leaves half a manifest.
    /// Path cells are re-expressed for `path`'s folder ([`Manifest::rebased`]).
    pub fn write(&self, path: &Path) -> Result<(), CoreError> {
        let dir = path.parent().unwrap_or(Path::new(""));
        fsutil::write_atomic(path, &self.rebased(dir).to_csv()?)
    }
}

/// Column positions of a manifest's header: where each core field is read from.
#[derive(Debug)]
struct Layout {
    /// [`REQUIRED_COLUMNS`]' positions; `None`: absent (lenient reads only), the field gets a placeholder.
    cols: [Option<usize>; 8],
    split: Option<usize>,
    /// Positions and names of the extra columns, in file order.
    extra: Vec<(usize, String)>,
}

/// A manifest read one row at a time: the one reader of manifests ([`Manifest::read`] keeps what it yields).
/// Each item is a record or the error that ends the reading (naming the file, the line and the column); after
/// an error it yields nothing more. Memory is the current row plus 16 bytes per row read (a 128-bit digest of
/// each id, for the duplicate-id check: a SHA-256 prefix, so a crafted file cannot make two ids collide).
pub struct ManifestRows<R: std::io::Read> {
    rdr: csv::Reader<R>,
    path: PathBuf,
    layout: Layout,
    /// The manifest without its records: extra columns, absent core columns, base folder (set by
    /// [`Manifest::stream`]; empty for [`ManifestRows::new`]). Use it to resolve a record's paths.
    pub header: Manifest,
    row: csv::StringRecord,
    line: u64,
    seen: HashSet<u128>,
    failed: bool,
}

impl<R: std::io::Read> ManifestRows<R> {
    /// Reads the header of CSV from `reader` (`path` names it in errors; `lenient`: see
    /// [`Manifest::stream`]); the rows come from the iterator.
    pub fn new(reader: R, path: &Path, lenient: Option<&[&str]>) -> Result<Self, CoreError> {
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(reader);
        let headers = rdr
            .headers()
            .map_err(|e| CoreError::Csv {
                path: path.to_path_buf(),
                line: 1,
                message: e.to_string(),
            })?
            .clone();
        let index = |name: &str| headers.iter().position(|h| h.trim() == name);
        let mut cols = [None::<usize>; 8];
        let mut absent = Vec::new();
        match lenient {
            None => {
                for (slot, name) in cols.iter_mut().zip(REQUIRED_COLUMNS) {
                    *slot = Some(index(name).ok_or_else(|| CoreError::MissingColumn {
                        path: path.to_path_buf(),
                        column: name.to_string(),
                    })?);
                }
            }
            Some(needs) => {
                let mut missing: Vec<String> = Vec::new();
                for name in ["id", "source", "label"].iter().chain(needs) {
                    if index(name).is_none() && !missing.iter().any(|m| m == name) {
                        missing.push(name.to_string());
                    }
                }
                if !missing.is_empty() {
                    return Err(CoreError::MissingColumns {
                        path: path.to_path_buf(),
                        columns: missing,
                    });
                }
                for (slot, name) in cols.iter_mut().zip(REQUIRED_COLUMNS) {
                    *slot = index(name);
                    if slot.is_none() {
                        absent.push(name.to_string());
                    }
                }
            }
        }
        let extra: Vec<(usize, String)> = headers
            .iter()
            .enumerate()
            .filter(|(_, h)| !REQUIRED_COLUMNS.contains(&h.trim()) && h.trim() != "split")
            .map(|(i, h)| (i, h.trim().to_string()))
            .collect();
        let header = Manifest {
            extra_columns: extra.iter().map(|(_, n)| n.clone()).collect(),
            absent,
            ..Manifest::default()
        };
        Ok(Self {
            rdr,
            path: path.to_path_buf(),
            layout: Layout {
                cols,
                split: index("split"),
                extra,
            },
            header,
            row: csv::StringRecord::new(),
            line: 1,
            seen: HashSet::new(),
            failed: false,
        })
    }

    /// The file the rows come from, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record of the row just read (line `self.line`).
    fn record(&mut self) -> Result<ManifestRecord, CoreError> {
        let (path, line, row, l) = (&self.path, self.line, &self.row, &self.layout);
        let field = |i: usize| row.get(i).unwrap_or("").to_string();
        let cell = |i: Option<usize>| i.map(field).unwrap_or_default();
        let invalid = |column: &str, value: String, expected: String| CoreError::InvalidValue {
            path: path.to_path_buf(),
            line,
            column: column.to_string(),
            value,
            expected,
        };
        let id = cell(l.cols[0]);
        if id.trim().is_empty() {
            return Err(invalid("id", id, "a non-empty id".into()));
        }
        if !self.seen.insert(id_digest(&id)) {
            return Err(CoreError::DuplicateId {
                path: path.to_path_buf(),
                line,
                id,
            });
        }
        let (v, c) = (cell(l.cols[1]), "source");
        let source = v
            .parse::<SourceId>()
            .map_err(|e| invalid(c, v.clone(), e.to_string()))?;
        let (v, c) = (cell(l.cols[2]), "label");
        let label = v
            .parse::<Label>()
            .map_err(|e| invalid(c, v.clone(), e.to_string()))?;
        let format = match l.cols[6] {
            Some(i) => {
                let v = field(i);
                v.parse::<ImageFormat>()
                    .map_err(|e| invalid("format", v.clone(), e.to_string()))?
            }
            // Never written back: `format` is then in `absent`.
            None => ImageFormat::Png,
        };
        let split = match l.split.map(field) {
            Some(v) if !v.trim().is_empty() => Some(
                v.parse::<Split>()
                    .map_err(|e| invalid("split", v.clone(), e.to_string()))?,
            ),
            _ => None,
        };
        let extra = l
            .extra
            .iter()
            .map(|(i, name)| (name.clone(), field(*i)))
            .collect();
        // Without a patient column every image is its own patient.
        let patient = l.cols[3].map_or_else(|| id.clone(), field);
        Ok(ManifestRecord {
            id,
            source,
            label,
            patient,
            view: cell(l.cols[4]),
            path: PathBuf::from(cell(l.cols[5])),
            format,
            sha256: cell(l.cols[7]),
            split,
            extra,
        })
    }
}

/// A 128-bit digest of an id: the duplicate check's set holds these, not the ids.
fn id_digest(id: &str) -> u128 {
    key_digest(&[id])
}

/// A 128-bit digest (SHA-256, truncated) of a key made of several strings (`[model, id]`), each
/// length-prefixed so that no two keys collide by concatenation: duplicate checks over millions of rows
/// hold 16 bytes per row instead of the strings.
pub fn key_digest(parts: &[&str]) -> u128 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let h = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    u128::from_le_bytes(b)
}

impl<R: std::io::Read> Iterator for ManifestRows<R> {
    type Item = Result<ManifestRecord, CoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        self.line += 1;
        let item = match self.rdr.read_record(&mut self.row) {
            Ok(false) => return None,
            Ok(true) => self.record(),
            Err(e) => Err(CoreError::Csv {
                path: self.path.clone(),
                line: self.line,
                message: e.to_string(),
            }),
        };
        self.failed = item.is_err();
        Some(item)
    }
}

/// A manifest written one record at a time: the bytes [`Manifest::write`] writes for the same records, in
/// memory independent of their number. The columns depend on every record (`split` when any has one, new
/// extra columns sorted), so records go first to a spool file beside the destination (`.NAME.spool`: their
/// core cells, then their extra columns as name/value pairs) and [`ManifestWriter::finish`] writes the
/// manifest from it under a temporary name (`.NAME.partial`) renamed over the destination. One writer per
/// destination at a time; a killed run's spool and partial file are replaced by the next run's.
pub struct ManifestWriter {
    path: PathBuf,
    dir: PathBuf,
    /// The columns and base folder of the records written (its own records are ignored).
    header: Manifest,
    spool_path: PathBuf,
    spool: Option<csv::Writer<std::io::BufWriter<std::fs::File>>>,
    any_split: bool,
    /// Extra columns seen (a few names, whatever the row count).
    keys: std::collections::BTreeSet<String>,
    rows: usize,
}

impl ManifestWriter {
    /// Starts the manifest at `path` for records read with `header`'s base folder and columns
    /// (`extra_columns`, `absent`).
    pub fn create(path: &Path, header: &Manifest) -> Result<Self, CoreError> {
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let spool_dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir.as_path()
        };
        std::fs::create_dir_all(spool_dir).map_err(|e| CoreError::io(spool_dir, e))?;
        let spool_path = spool_dir.join(format!(".{name}.spool"));
        let file = std::fs::File::create(&spool_path).map_err(|e| CoreError::io(&spool_path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            dir,
            header: Manifest {
                records: Vec::new(),
                extra_columns: header.extra_columns.clone(),
                base_dir: header.base_dir.clone(),
                absent: header.absent.clone(),
            },
            spool: Some(
                csv::WriterBuilder::new()
                    .flexible(true)
                    .from_writer(std::io::BufWriter::new(file)),
            ),
            spool_path,
            any_split: false,
            keys: Default::default(),
            rows: 0,
        })
    }

    /// Appends a record.
    pub fn write(&mut self, record: &ManifestRecord) -> Result<(), CoreError> {
        let mut r = record.clone();
        self.header.rebase_record(&self.dir, &mut r);
        self.any_split |= r.split.is_some();
        for k in r.extra.keys() {
            if !self.keys.contains(k) {
                self.keys.insert(k.clone());
            }
        }
        let core = REQUIRED_COLUMNS
            .iter()
            .chain(&["split"])
            .map(|c| r.get(c).unwrap_or_default());
        let extra = r.extra.iter().flat_map(|(k, v)| [k.clone(), v.clone()]);
        let err = self.err();
        let spool = self.spool.as_mut().ok_or_else(|| err("finished".into()))?;
        spool
            .write_record(core.chain(extra))
            .map_err(|e| err(e.to_string()))?;
        self.rows += 1;
        Ok(())
    }

    /// Writes the manifest (header, then every record in order) and removes the spool; returns the number of
    /// records.
    pub fn finish(mut self) -> Result<usize, CoreError> {
        let err = self.err();
        if let Some(spool) = self.spool.take() {
            spool
                .into_inner()
                .map_err(|e| err(e.to_string()))?
                .into_inner()
                .map_err(|e| err(e.to_string()))?;
        }
        let cols = self.header.column_order(self.any_split, self.keys.iter());
        let n_core = REQUIRED_COLUMNS.len() + 1;
        // Where each column's cell is in a spool row: a core cell's index, or an extra column's name.
        let slots: Vec<Result<usize, &str>> = cols
            .iter()
            .map(|c| {
                REQUIRED_COLUMNS
                    .iter()
                    .chain(&["split"])
                    .position(|k| *k == c.as_str())
                    .ok_or(c.as_str())
            })
            .collect();
        let mut out =
            csv::Writer::from_writer(crate::fsutil::AtomicFile::create_partial(&self.path)?);
        out.write_record(&cols).map_err(|e| err(e.to_string()))?;
        let mut spool = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_path(&self.spool_path)
            .map_err(|e| err(e.to_string()))?;
        let mut row = csv::StringRecord::new();
        while spool
            .read_record(&mut row)
            .map_err(|e| err(e.to_string()))?
        {
            let cell = |slot: &Result<usize, &str>| match slot {
                Ok(i) => row.get(*i).unwrap_or(""),
                Err(name) => (n_core..row.len())
                    .step_by(2)
                    .find(|&i| row.get(i) == Some(*name))
                    .and_then(|i| row.get(i + 1))
                    .unwrap_or(""),
            };
            out.write_record(slots.iter().map(cell))
                .map_err(|e| err(e.to_string()))?;
        }
        out.into_inner().map_err(|e| err(e.to_string()))?.commit()?;
        Ok(self.rows)
    }

    /// An error about the manifest being written.
    fn err(&self) -> impl Fn(String) -> CoreError + use<> {
        let path = self.path.clone();
        move |message| CoreError::Csv {
            path: path.clone(),
            line: 0,
            message,
        }
    }
}

impl Drop for ManifestWriter {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.spool_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> ManifestRecord {
        ManifestRecord {
            id: id.into(),
            source: SourceId::new("nih").unwrap(),
            label: Label::Pneumonia,
            patient: "p-0001".into(),
            view: "PA".into(),
            path: PathBuf::from(format!("images/{id}.png")),
            format: ImageFormat::Png,
            sha256: "ab".repeat(32),
            split: None,
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn records_round_trip_with_extra_columns_and_quoting() {
        let mut a = record("a");
        a.set("window", "40,400");
        a.split = Some(Split::Train);
        let mut b = record("b");
        b.set("note", "line\nbreak \"quoted\"");
        let m = Manifest::new(vec![a, b]);
        let bytes = m.to_csv().unwrap();
        let back = Manifest::from_reader(&bytes[..], Path::new("m.csv")).unwrap();
        assert_eq!(back.records.len(), 2);
        assert_eq!(back.records[0].get("window").as_deref(), Some("40,400"));
        assert_eq!(
            back.records[1].get("note").as_deref(),
            Some("line\nbreak \"quoted\"")
        );
        assert_eq!(back.records[0].split, Some(Split::Train));
        assert_eq!(back.records[1].split, None);
        // Columns a record lacks come back empty, not missing.
        assert_eq!(back.records[0].get("note").as_deref(), Some(""));
        assert_eq!(back.columns(), m.columns());
    }

    #[test]
    fn malformed_rows_name_the_line_and_column() {
        let csv = "id,source,label,patient,view,path,format,sha256\n\
                   a,nih,pneumonia,p1,PA,a.png,png,00\n\
                   b,nih,flu,p2,PA,b.png,png,00\n";
        let err = Manifest::from_reader(csv.as_bytes(), Path::new("bad.csv")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("bad.csv") && msg.contains("line 3") && msg.contains("label"),
            "{msg}"
        );

        let csv = "id,source,label,patient,view,path,format,sha256\na,nih,covid,p1,PA,a.png,png\n";
        let msg = Manifest::from_reader(csv.as_bytes(), Path::new("short.csv"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("short.csv") && msg.contains("line 2"), "{msg}");

        let csv = "id,source,label,patient,view,path,format\n";
        let msg = Manifest::from_reader(csv.as_bytes(), Path::new("cols.csv"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("sha256"), "{msg}");
    }

    #[test]
    fn a_lenient_read_names_every_missing_column_and_never_writes_placeholders() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hand.csv");
        std::fs::write(&p, "id,label,png8\na,covid,a.png\n").unwrap();
        let err = Manifest::read_lenient(&p, &["split", "png8", "mask"]).unwrap_err();
        match &err {
            CoreError::MissingColumns { columns, .. } => {
                assert_eq!(columns, &["source", "split", "mask"], "{err}")
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("hand.csv"), "{err}");

        std::fs::write(&p, "id,source,label,split,png8\na,nih,covid,test,a.png\n").unwrap();
        let m = Manifest::read_lenient(&p, &["split", "png8"]).unwrap();
        assert_eq!(m.records[0].patient, "a", "each image its own patient");
        assert_eq!(
            m.columns(),
            ["id", "source", "label", "split", "png8"].map(String::from)
        );
        let out = dir.path().join("out.csv");
        m.write(&out).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "id,source,label,split,png8\na,nih,covid,test,a.png\n"
        );
        // The strict read still wants ingest's columns.
        assert!(Manifest::read(&p).is_err());
    }

    /// The streaming reader yields the whole-file reader's records, and on a bad row the records before it,
    /// then the same error (file, line, column), then nothing.
    #[test]
    fn streaming_rows_match_the_whole_file_reader() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-manifests/cohen.csv");
        let whole = Manifest::read(&fixture).unwrap();
        let mut rows = Manifest::stream(&fixture, None).unwrap();
        let streamed: Vec<_> = rows.by_ref().map(Result::unwrap).collect();
        assert!(streamed.len() > 500);
        assert_eq!(streamed, whole.records);
        assert_eq!(rows.header.extra_columns, whole.extra_columns);
        assert_eq!(rows.header.base_dir, whole.base_dir);
        let lenient = Manifest::read_lenient(&fixture, &["path"]).unwrap();
        let streamed: Vec<_> = Manifest::stream(&fixture, Some(&["path"][..]))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(streamed, lenient.records);

        let head = "id,source,label,patient,view,path,format,sha256\n\
                    a,nih,pneumonia,p1,PA,a.png,png,00\n\
                    \"b\nc\",nih,covid,p2,PA,b.png,png,00\n";
        for (bad, line, what) in [
            ("d,nih,flu,p2,PA,b.png,png,00\n", 4, "label"),
            ("a,nih,covid,p2,PA,b.png,png,00\n", 4, "duplicate"),
            ("e,nih,covid,p2,PA,b.png\n", 4, "found record with 6 fields"),
            (",nih,covid,p2,PA,b.png,png,00\n", 4, "id"),
        ] {
            let csv = format!("{head}{bad}f,nih,covid,p3,PA,f.png,png,00\n");
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("bad.csv");
            std::fs::write(&p, &csv).unwrap();
            let whole = Manifest::read(&p).unwrap_err().to_string();
            let mut rows = Manifest::stream(&p, None).unwrap();
            let ids: Vec<String> = rows.by_ref().map_while(Result::ok).map(|r| r.id).collect();
            assert_eq!(ids, ["a", "b\nc"], "{bad}");
            assert!(rows.next().is_none(), "{bad}: nothing after the error");
            let streamed = Manifest::stream(&p, None)
                .unwrap()
                .find_map(Result::err)
                .unwrap()
                .to_string();
            assert_eq!(streamed, whole);
            assert!(
                whole.contains("bad.csv") && whole.contains(&format!("line {line}")),
                "{whole}"
            );
            assert!(whole.contains(what), "{bad}: {whole}");
        }
    }

    /// The streaming writer writes the bytes of `Manifest::write`: columns from every record (a split on one
    /// row, new extra columns in any row), quoting, path cells re-expressed for another folder.
    #[test]
    fn the_streaming_writer_writes_the_bytes_of_write() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in/manifest.csv");
        let mut a = record("a");
        a.set("window", "40,400");
        a.set("mask", "masks/a.png");
        let mut b = record("b");
        b.set("note", "line\nbreak \"quoted\"");
        b.set("aug", "flip");
        let mut c = record("c");
        c.split = Some(Split::Test);
        Manifest::new(vec![a, b, c]).write(&src).unwrap();
        let mut m = Manifest::read(&src).unwrap();
        m.records[1].set("png8", dir.path().join("cache/b.png").to_string_lossy());
        m.records[2].set("aaa", "first");
        for (name, records) in [
            ("all", m.records.clone()),
            ("nosplit", m.records[..2].to_vec()),
            ("none", Vec::new()),
        ] {
            let whole = dir.path().join(format!("out/{name}/whole.csv"));
            let streamed = dir.path().join(format!("out/{name}/streamed.csv"));
            Manifest {
                records: records.clone(),
                ..m.clone()
            }
            .write(&whole)
            .unwrap();
            let mut w = ManifestWriter::create(&streamed, &m).unwrap();
            for r in &records {
                w.write(r).unwrap();
            }
            assert_eq!(w.finish().unwrap(), records.len());
            let (whole, streamed_bytes) = (
                std::fs::read_to_string(&whole).unwrap(),
                std::fs::read_to_string(&streamed).unwrap(),
            );
            assert_eq!(streamed_bytes, whole, "{name}");
            let left: Vec<_> = std::fs::read_dir(streamed.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(
                left.len(),
                2,
                "{name}: no spool or partial file left: {left:?}"
            );
        }
        let text = std::fs::read_to_string(dir.path().join("out/all/streamed.csv")).unwrap();
        assert!(text.starts_with("id,source,label,patient,view,path,format,sha256,split,"));
        assert!(text.contains("../../in/masks/a.png"), "{text}");
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let csv = "id,source,label,patient,view,path,format,sha256\n\
                   a,nih,pneumonia,p1,PA,a.png,png,00\n\
                   a,nih,pneumonia,p1,PA,a.png,png,00\n";
        let err = Manifest::from_reader(csv.as_bytes(), Path::new("dup.csv")).unwrap_err();
        assert!(
            matches!(err, CoreError::DuplicateId { line: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn path_cells_follow_the_manifest_folder() {
        assert_eq!(
            path_cell(Path::new("/a/b"), Path::new("/a/b/c/x.png")),
            "c/x.png"
        );
        assert_eq!(
            path_cell(Path::new("/a/b/e"), Path::new("/a/b/./c/../d.png")),
            "../d.png"
        );
        assert_eq!(
            path_cell(Path::new("/a/b"), Path::new("/z/x.png")),
            "/z/x.png"
        );
        // Relative inputs are taken from the working directory, never copied as they are.
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            absolute_path(Path::new("t/r/../s/x.png")),
            cwd.join("t/s/x.png")
        );
        // More `..` than folders: the root, as the OS resolves it.
        assert_eq!(
            absolute_path(Path::new("/tmp/x/../../../../etc/passwd")),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            path_cell(Path::new("t/r/exp"), Path::new("t/r/seg/c.png")),
            "../seg/c.png"
        );
    }

    /// A manifest read from one folder (given relative to the working directory, as a user types it) and
    /// written into another keeps naming the same files: the bug of a relative `--out`.
    #[test]
    fn rewriting_into_another_folder_keeps_every_path() {
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join("out/segment");
        std::fs::create_dir_all(seg.join("crops")).unwrap();
        std::fs::write(seg.join("crops/x.png"), b"png").unwrap();
        let mut r = record("x");
        r.path = dir.path().join("world/x.dcm");
        r.set("crop", "crops/x.png");
        r.set("note", "crops/not-a-path");
        let mut m = Manifest::new(vec![r]);
        m.base_dir = seg.clone();
        m.write(&seg.join("manifest.csv")).unwrap();
        let rel_seg = relative_from_cwd(&seg);
        let m = Manifest::read(&rel_seg.join("manifest.csv")).unwrap();
        assert!(m.base_dir.is_absolute());
        let exp = dir.path().join("out/experiments/e");
        m.write(&relative_from_cwd(&exp).join("manifest.csv"))
            .unwrap();
        let back = Manifest::read(&exp.join("manifest.csv")).unwrap();
        let r = &back.records[0];
        assert_eq!(r.get("crop").unwrap(), "../../segment/crops/x.png");
        assert!(back.resolve_cell(&r.get("crop").unwrap()).is_file());
        assert_eq!(
            absolute_path(&back.resolve(r)),
            dir.path().join("world/x.dcm")
        );
        assert_eq!(r.get("note").unwrap(), "crops/not-a-path");
    }

    /// `p` as a relative path from the working directory (`..` up to the root), as a user would type it.
    fn relative_from_cwd(p: &Path) -> PathBuf {
        let cwd = std::env::current_dir().unwrap();
        let mut out = PathBuf::new();
        for _ in cwd.components().skip(1) {
            out.push("..");
        }
        out.join(p.strip_prefix("/").unwrap())
    }

    #[test]
    fn write_read_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/manifest.csv");
        Manifest::new(vec![record("x")]).write(&path).unwrap();
        let m = Manifest::read(&path).unwrap();
        assert_eq!(
            m.resolve(&m.records[0]),
            dir.path().join("sub/images/x.png")
        );
    }
}
