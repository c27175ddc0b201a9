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
    pub split: Split,
    pub label: Label,
    pub score: f64,
    #[serde(default)]
    pub patient: String,
    #[serde(default)]
    pub model: String,
}

/// Reads predictions; errors name the file and line. Scores must be finite and within [0, 1].
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>, CoreError> {
    let file = std::fs::File::open(path).map_err(|e| CoreError::io(path, e))?;
    let mut rdr = csv::Reader::from_reader(file);
    let mut out = Vec::new();
    for (i, row) in rdr.deserialize::<Prediction>().enumerate() {
        let line = i as u64 + 2;
        let p = row.map_err(|e| CoreError::Csv {
            path: path.to_path_buf(),
            line,
            message: e.to_string(),
        })?;
        if !(p.score.is_finite() && (0.0..=1.0).contains(&p.score)) {
            return Err(CoreError::InvalidValue {
                path: path.to_path_buf(),
                line,
                column: "score".into(),
                value: p.score.to_string(),
                expected: "a probability in [0, 1]".into(),
            });
        }
        out.push(p);
    }
    Ok(out)
}

/// Writes predictions atomically.
pub fn write_predictions(path: &Path, predictions: &[Prediction]) -> Result<(), CoreError> {
    let mut wtr = csv::Writer::from_writer(Vec::new());
    for p in predictions {
        wtr.serialize(p).map_err(|e| CoreError::Csv {
            path: path.to_path_buf(),
            line: 0,
            message: e.to_string(),
        })?;
    }
    let bytes = wtr.into_inner().map_err(|e| CoreError::Csv {
        path: path.to_path_buf(),
        line: 0,
        message: e.to_string(),
    })?;
    fsutil::write_atomic(path, &bytes)
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

        std::fs::write(&path, "id,source,split,label,score\na,nih,test,covid,1.5\n").unwrap();
        let msg = read_predictions(&path).unwrap_err().to_string();
        assert!(msg.contains("line 2") && msg.contains("score"), "{msg}");
        std::fs::write(&path, "id,source,split,label,score\na,nih,test,covid,NaN\n").unwrap();
        assert!(read_predictions(&path).is_err());
    }
}
