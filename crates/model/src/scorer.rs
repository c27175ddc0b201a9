//! Our own trained classifier behind `cxr_core::Scorer`, so that every audit path takes it and a foreign
//! (ONNX) model alike.

use candle_core::Tensor;
use cxr_core::{Grey8, ScoreError, Scored, Scorer};

use crate::data::grey_to_input;
use crate::net::Classifier;

/// A trained [`Classifier`] with the input size it was trained at.
pub struct ClassifierScorer {
    model: Classifier,
    name: String,
    size: usize,
    sha256: Option<String>,
}

impl ClassifierScorer {
    pub fn new(model: Classifier, name: impl Into<String>, size: usize) -> Self {
        Self {
            model,
            name: name.into(),
            size,
            sha256: None,
        }
    }

    /// The model's content hash ([`Scorer::model_sha256`]): what a killed `score` or audit needs to resume.
    pub fn with_sha256(mut self, sha256: String) -> Self {
        self.sha256 = Some(sha256);
        self
    }

    pub fn classifier(&self) -> &Classifier {
        &self.model
    }

    /// Scores (and features) with the head's raw logits.
    fn run(&self, images: &[Grey8], features: bool) -> candle_core::Result<(Scored, Vec<f64>)> {
        let size = self.size;
        let mut data = Vec::with_capacity(images.len() * 3 * size * size);
        for g in images {
            let img =
                image::GrayImage::from_raw(g.width, g.height, g.data.clone()).ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "an image buffer of {}x{} is malformed",
                        g.width, g.height
                    ))
                })?;
            data.extend(grey_to_input(&img, size));
        }
        let x = Tensor::from_vec(data, (images.len(), 3, size, size), self.model.device())?;
        let (pooled, logits) = self.model.features_and_logits(&x)?;
        let logits: Vec<f64> = logits
            .to_vec1::<f32>()?
            .into_iter()
            .map(f64::from)
            .collect();
        let scores = logits.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
        let features = if features {
            Some(pooled.to_vec2::<f32>()?)
        } else {
            None
        };
        Ok((Scored { scores, features }, logits))
    }
}

impl Scorer for ClassifierScorer {
    fn name(&self) -> &str {
        &self.name
    }
    fn input_size(&self) -> usize {
        self.size
    }
    fn has_features(&self) -> bool {
        true
    }
    fn model_sha256(&self) -> Option<&str> {
        self.sha256.as_deref()
    }
    fn score(&self, images: &[Grey8], features: bool) -> Result<Scored, ScoreError> {
        if images.is_empty() {
            return Ok(Scored {
                scores: Vec::new(),
                features: features.then(Vec::new),
            });
        }
        self.run(images, features)
            .map(|(s, _)| s)
            .map_err(|e| ScoreError::new(&self.name, e.to_string()))
    }
    /// The head's logits themselves (Grad-CAM's target), not the logit of their sigmoid.
    fn logits(&self, images: &[Grey8]) -> Result<Vec<f64>, ScoreError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        self.run(images, false)
            .map(|(_, l)| l)
            .map_err(|e| ScoreError::new(&self.name, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageRow;
    use crate::infer::predict_rows;
    use crate::net::{Arch, Mode};
    use candle_core::Device;
    use cxr_core::{Label, SourceId};

    fn grey(w: u32, h: u32, seed: u32) -> Grey8 {
        let data = (0..w * h)
            .map(|i| ((i * 7 + seed * 31) % 251) as u8)
            .collect();
        Grey8::new(w, h, data).unwrap()
    }

    #[test]
    fn scores_match_the_file_path_and_features_come_from_the_same_pass() {
        let model = Classifier::new(&Arch::resnet50(), Mode::Frozen, 3, &Device::Cpu).unwrap();
        let images = [grey(40, 40, 1), grey(57, 33, 2)];
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<ImageRow> = images
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let path = dir.path().join(format!("{i}.png"));
                image::GrayImage::from_raw(g.width, g.height, g.data.clone())
                    .unwrap()
                    .save(&path)
                    .unwrap();
                ImageRow {
                    id: i.to_string(),
                    path,
                    source: SourceId::new("s").unwrap(),
                    label: Label::Covid,
                    split: None,
                    patient: "p".into(),
                    aug: None,
                }
            })
            .collect();
        let refs: Vec<&ImageRow> = rows.iter().collect();
        let from_files = predict_rows(&model, &refs, 40, 8).unwrap();

        let scorer = ClassifierScorer::new(model, "m", 40);
        let scored = scorer.score(&images, true).unwrap();
        assert_eq!(scored.scores.len(), 2);
        for (a, b) in scored.scores.iter().zip(&from_files) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let feats = scored.features.unwrap();
        assert_eq!(feats.len(), 2);
        assert_eq!(feats[0].len(), 2048);
        assert!(scorer.score(&images, false).unwrap().features.is_none());
    }
}
