//! The manifest: one CSV row per image, the contract between stages.
//!
//! Required columns (written by ingest): `id, source, label, patient, view, path, format, sha256`.
//! Optional core column: `split`. Every later stage appends its own columns (see `docs/ARCHITECTURE.md`);
//! columns this crate does not know are kept, in order, in [`ManifestRecord::extra`], so a stage that reads
//! and rewrites a manifest never drops another stage's work.
//!
//! `path` is stored as written; relative paths are relative to the manifest's folder ([`Manifest::resolve`]).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use crate::{CoreError, ImageFormat, Label, SourceId, Split, fsutil};

/// The columns every manifest has, in this order.
pub const REQUIRED_COLUMNS: [&str; 8] = [
    "id", "source", "label", "patient", "view", "path", "format", "sha256",
];

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
    /// Folder of the manifest file (relative `path`s are resolved against it). Empty when built in memory.
    pub base_dir: PathBuf,
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
        if record.path.is_absolute() {
            record.path.clone()
        } else {
            self.base_dir.join(&record.path)
        }
    }

    /// Reads a manifest. Errors name the file, the line (1-based, header = line 1) and the column.
    pub fn read(path: &Path) -> Result<Self, CoreError> {
        let file = std::fs::File::open(path).map_err(|e| CoreError::io(path, e))?;
        let mut manifest = Self::from_reader(file, path)?;
        manifest.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(manifest)
    }

    /// Parses CSV from any reader; `path` is only used in error messages.
    pub fn from_reader(reader: impl std::io::Read, path: &Path) -> Result<Self, CoreError> {
        let csv_err = |line: u64, e: &dyn std::fmt::Display| CoreError::Csv {
            path: path.to_path_buf(),
            line,
            message: e.to_string(),
        };
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(reader);
        let headers = rdr.headers().map_err(|e| csv_err(1, &e))?.clone();
        let index = |name: &str| headers.iter().position(|h| h.trim() == name);
        let mut cols = [0usize; 8];
        for (slot, name) in cols.iter_mut().zip(REQUIRED_COLUMNS) {
            *slot = index(name).ok_or_else(|| CoreError::MissingColumn {
                path: path.to_path_buf(),
                column: name.to_string(),
            })?;
        }
        let split_col = index("split");
        let extra_columns: Vec<(usize, String)> = headers
            .iter()
            .enumerate()
            .filter(|(_, h)| !REQUIRED_COLUMNS.contains(&h.trim()) && h.trim() != "split")
            .map(|(i, h)| (i, h.trim().to_string()))
            .collect();

        let mut records = Vec::new();
        let mut seen = HashSet::new();
        for (row_index, row) in rdr.records().enumerate() {
            let line = row_index as u64 + 2;
            let row = row.map_err(|e| csv_err(line, &e))?;
            let field = |i: usize| row.get(i).unwrap_or("").to_string();
            let invalid = |column: &str, value: String, expected: String| CoreError::InvalidValue {
                path: path.to_path_buf(),
                line,
                column: column.to_string(),
                value,
                expected,
            };
            let id = field(cols[0]);
            if id.trim().is_empty() {
                return Err(invalid("id", id, "a non-empty id".into()));
            }
            if !seen.insert(id.clone()) {
                return Err(CoreError::DuplicateId {
                    path: path.to_path_buf(),
                    line,
                    id,
                });
            }
            let (v, c) = (field(cols[1]), "source");
            let source = v
                .parse::<SourceId>()
                .map_err(|e| invalid(c, v.clone(), e.to_string()))?;
            let (v, c) = (field(cols[2]), "label");
            let label = v
                .parse::<Label>()
                .map_err(|e| invalid(c, v.clone(), e.to_string()))?;
            let (v, c) = (field(cols[6]), "format");
            let format = v
                .parse::<ImageFormat>()
                .map_err(|e| invalid(c, v.clone(), e.to_string()))?;
            let split = match split_col.map(field) {
                Some(v) if !v.trim().is_empty() => Some(
                    v.parse::<Split>()
                        .map_err(|e| invalid("split", v.clone(), e.to_string()))?,
                ),
                _ => None,
            };
            let extra = extra_columns
                .iter()
                .map(|(i, name)| (name.clone(), field(*i)))
                .collect();
            records.push(ManifestRecord {
                id,
                source,
                label,
                patient: field(cols[3]),
                view: field(cols[4]),
                path: PathBuf::from(field(cols[5])),
                format,
                sha256: field(cols[7]),
                split,
                extra,
            });
        }
        Ok(Self {
            records,
            extra_columns: extra_columns.into_iter().map(|(_, n)| n).collect(),
            base_dir: PathBuf::new(),
        })
    }

    /// Every column in write order: the core ones, `split` when any record has one, then the extra ones
    /// (file order first, then new ones in sorted order).
    pub fn columns(&self) -> Vec<String> {
        let mut cols: Vec<String> = REQUIRED_COLUMNS.iter().map(|c| c.to_string()).collect();
        if self.records.iter().any(|r| r.split.is_some()) {
            cols.push("split".into());
        }
        let mut extra = self.extra_columns.clone();
        let known: HashSet<String> = extra.iter().cloned().collect();
        let mut new: Vec<String> = self
            .records
            .iter()
            .flat_map(|r| r.extra.keys())
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
    pub fn write(&self, path: &Path) -> Result<(), CoreError> {
        fsutil::write_atomic(path, &self.to_csv()?)
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
