//! `predictions.csv`: one scored image per row (model → eval, explain, report).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{CoreError, Label, SourceId, Split, fsutil};

/// One prediction. `score` is the model's probability of the positive class (Covid-19, see
/// [`Label::target`]); `model` names the run when several models share a file (empty otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub id: String,
    pub source: SourceId,
    #[serde(default = "test_split")]
    pub split: Split,
    pub label: Label,
    pub score: f64,
    #[serde(default)]
    pub patient: String,
    #[serde(default)]
    pub model: String,
}

/// Other names users give the columns (scikit-learn and pandas habits), lower-case → ours. Used only when
/// the file has no column of our name.
pub const COLUMN_ALIASES: [(&str, &str); 13] = [
    ("image", "id"),
    ("image_id", "id"),
    ("filename", "id"),
    ("site", "source"),
    ("hospital", "source"),
    ("y_true", "label"),
    ("target", "label"),
    ("class", "label"),
    ("y_score", "score"),
    ("y_prob", "score"),
    ("prob", "score"),
    ("probability", "score"),
    ("patient_id", "patient"),
];

/// Column names trimmed and lower-cased, aliases mapped to ours where ours is absent.
fn normalise_headers(headers: &csv::StringRecord) -> csv::StringRecord {
    let lower: Vec<String> = headers
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    lower
        .iter()
        .map(
            |h| match COLUMN_ALIASES.iter().find(|(alias, _)| alias == h) {
                Some((_, ours)) if !lower.iter().any(|x| x == ours) => ours.to_string(),
                _ => h.clone(),
            },
        )
        .collect()
}

fn test_split() -> Split {
    Split::Test
}

/// Largest score table [`read_predictions`] reads (4 GiB, some 40 million rows): a bound on a file given by
/// a user, refused from its size before it is read. Special files (FIFO, device) are refused by path.
pub const MAX_TABLE_BYTES: u64 = 4 << 30;

/// Reads predictions; errors name the file and line. Scores must be finite (probabilities or any real
/// ranking score). Column names
/// in any case, with the [`COLUMN_ALIASES`]; labels and splits through [`Label`]'s and [`Split`]'s parsers
/// (`1`/`0`, `Covid-19`, `non-covid`, `validation`, ...); no `split` column means every row is `test`;
/// other columns are ignored.
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>, CoreError> {
    let file = fsutil::open_regular(path)?;
    let len = file.metadata().map_err(|e| CoreError::io(path, e))?.len();
    if len > MAX_TABLE_BYTES {
        return Err(CoreError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{len} bytes is over the limit of {MAX_TABLE_BYTES} bytes for a score table"
                ),
            ),
        ));
    }
    // `take`: a file that grows while it is read still stops at the limit.
    let mut rdr = csv::Reader::from_reader(std::io::Read::take(file, MAX_TABLE_BYTES));
    let headers = rdr.headers().map_err(|e| CoreError::Csv {
        path: path.to_path_buf(),
        line: 1,
        message: e.to_string(),
    })?;
    let headers = normalise_headers(headers);
    rdr.set_headers(headers);
    let mut out = Vec::new();
    for (i, row) in rdr.deserialize::<Prediction>().enumerate() {
        let line = i as u64 + 2;
        let p = row.map_err(|e| CoreError::Csv {
            path: path.to_path_buf(),
            line,
            message: e.to_string(),
        })?;
        // Any real score ranks (logits, `decision_function` values); only metrics that need probabilities
        // (Brier, ECE) look at the range, and say so (cxr_eval).
        if !p.score.is_finite() {
            return Err(CoreError::InvalidValue {
                path: path.to_path_buf(),
                line,
                column: "score".into(),
                value: p.score.to_string(),
                expected: "a finite number (a probability, a logit or any ranking score)".into(),
            });
        }
        out.push(p);
    }
    Ok(out)
}

/// Writes predictions atomically.
pub fn write_predictions(path: &Path, predictions: &[Prediction]) -> Result<(), CoreError> {
    let mut w = PredictionWriter::new(fsutil::AtomicFile::create(path)?, path);
    for p in predictions {
        w.write(p)?;
    }
    w.finish()
}

/// Predictions written one at a time into an [`fsutil::AtomicFile`] (the bytes of [`write_predictions`]),
/// renamed over their path by [`PredictionWriter::finish`]: a score table of any length in constant memory.
pub struct PredictionWriter {
    wtr: csv::Writer<fsutil::AtomicFile>,
    path: std::path::PathBuf,
}

impl PredictionWriter {
    /// `path` names the destination in errors.
    pub fn new(file: fsutil::AtomicFile, path: &Path) -> Self {
        Self {
            wtr: csv::Writer::from_writer(file),
            path: path.to_path_buf(),
        }
    }

    pub fn write(&mut self, p: &Prediction) -> Result<(), CoreError> {
        self.wtr.serialize(p).map_err(|e| self.err(&e))
    }

    /// Flushes and commits the file.
    pub fn finish(self) -> Result<(), CoreError> {
        let path = self.path;
        let file = self.wtr.into_inner().map_err(|e| CoreError::Csv {
            path: path.clone(),
            line: 0,
            message: e.to_string(),
        })?;
        file.commit()
    }

    fn err(&self, e: &dyn std::fmt::Display) -> CoreError {
        CoreError::Csv {
            path: self.path.clone(),
            line: 0,
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_round_trip_and_reject_bad_scores() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("predictions.csv");
        let preds = vec![Prediction {
            id: "img-1".into(),
            source: SourceId::new("nih").unwrap(),
            split: Split::Test,
            label: Label::Pneumonia,
            score: 0.25,
            patient: "pat-1".into(),
            model: String::new(),
        }];
        write_predictions(&path, &preds).unwrap();
        assert_eq!(read_predictions(&path).unwrap(), preds);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("id,source,split,label,score"), "{text}");

        // A logit is a score; NaN and infinities are not.
        std::fs::write(
            &path,
            "id,source,split,label,score\na,nih,test,covid,-3.5\n",
        )
        .unwrap();
        assert_eq!(read_predictions(&path).unwrap()[0].score, -3.5);
        for bad in ["NaN", "inf", "-inf"] {
            std::fs::write(
                &path,
                format!("id,source,split,label,score\na,nih,test,covid,{bad}\n"),
            )
            .unwrap();
            let msg = read_predictions(&path).unwrap_err().to_string();
            assert!(
                msg.contains("line 2") && msg.contains("score"),
                "{bad}: {msg}"
            );
        }
    }

    /// A file as a scikit-learn user writes it: pandas' index column, other column names, 0/1 labels,
    /// `validation`, sources in their own case.
    #[test]
    fn predictions_as_users_write_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mine.csv");
        std::fs::write(
            &path,
            ",image_id,Site,Split,y_true,y_score\n\
             0,a,hospital_A,validation,1,0.9\n\
             1,b,hospital_B,test,0,0.2\n\
             2,c,hospital_A,Test,Non-COVID,0.4\n",
        )
        .unwrap();
        let p = read_predictions(&path).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].id.as_str(), p[0].split, p[0].label),
            ("a", Split::Val, Label::Covid)
        );
        assert_eq!(p[0].source.as_str(), "hospital_A");
        assert_eq!((p[1].split, p[1].label), (Split::Test, Label::Pneumonia));
        assert_eq!(p[2].label, Label::Pneumonia);
        // No split column: every row is a test row.
        std::fs::write(&path, "id,source,label,score\na,nih,COVID-19,0.7\n").unwrap();
        let p = read_predictions(&path).unwrap();
        assert_eq!((p[0].split, p[0].label), (Split::Test, Label::Covid));
        // A label outside the task is refused, naming the line.
        std::fs::write(&path, "id,source,label,score\na,nih,flu,0.7\n").unwrap();
        let msg = read_predictions(&path).unwrap_err().to_string();
        assert!(msg.contains("line 2") && msg.contains("flu"), "{msg}");
    }

    /// A score table that is a device or a FIFO is refused by path, not read until memory runs out or forever.
    #[cfg(unix)]
    #[test]
    fn special_files_as_score_tables_are_refused() {
        let msg = read_predictions(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("/dev/zero") && msg.contains("a device"),
            "{msg}"
        );
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("scores.csv");
        if std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success())
        {
            let msg = read_predictions(&fifo).unwrap_err().to_string();
            assert!(
                msg.contains("scores.csv") && msg.contains("a FIFO"),
                "{msg}"
            );
        } else {
            println!("skipped: no mkfifo for the FIFO case");
        }
        let msg = read_predictions(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("a directory"), "{msg}");
    }
}
