//! The one interface through which every audit path queries a classifier.
//!
//! The audit must work on models we did not train (ONNX exports from PyTorch, TensorFlow, JAX; scores
//! written by any framework), so it never sees a network, only a [`Scorer`]: a batch of 8-bit grey images
//! in, Covid-19 scores (and, when the model exposes them, pooled feature vectors) out. `cxr-model`'s
//! classifier implements it, and so does the ONNX scorer. The trait lives here because the model stage
//! implements it and the explain stage consumes it, and stages never depend on each other.

use crate::Grey8;

/// What a [`Scorer`] returns for one batch, in the batch's order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scored {
    /// P(Covid-19) per image, in `[0, 1]` (a logit output is passed through the sigmoid by the scorer).
    pub scores: Vec<f64>,
    /// One pooled feature vector per image when features were asked for and the model exposes them.
    pub features: Option<Vec<Vec<f32>>>,
}

/// Why a batch could not be scored; the message names the model file or graph node.
#[derive(Debug, thiserror::Error)]
#[error("{model}: {message}")]
pub struct ScoreError {
    /// The model (file path or run name) that failed.
    pub model: String,
    pub message: String,
}

impl ScoreError {
    pub fn new(model: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            message: message.into(),
        }
    }
}

/// A Covid-19 classifier as the audit sees it.
///
/// Contract: `score` takes 8-bit grey images of any size; an image not already `input_size` square is
/// resized by the scorer with the same resize our own models use (`image`'s `Triangle` filter, i.e.
/// bilinear with anti-aliasing); an image already at that size is passed unchanged. Scores are finite and
/// in `[0, 1]`, or the call fails with a [`ScoreError`]. Scoring never changes the model.
pub trait Scorer: Send + Sync {
    /// Name for logs, reports and the `model` column of `predictions.csv`.
    fn name(&self) -> &str;
    /// Side of the square input the model takes.
    fn input_size(&self) -> usize;
    /// Whether `score(.., true)` returns feature vectors (needed by the source probe).
    fn has_features(&self) -> bool;
    /// SHA-256 (hex) of the model's content where the scorer knows it (an ONNX file and its external data),
    /// recorded beside what it scored so that two models' outputs are never mixed.
    fn model_sha256(&self) -> Option<&str> {
        None
    }
    /// The engine that runs the model and its version where there is a choice (`onnxruntime 1.32.0`,
    /// `tract 0.23.9`), recorded beside what it scored so that runs on different engines are told apart.
    fn engine(&self) -> Option<&str> {
        None
    }
    /// Scores one batch; with `features`, also returns the pooled feature vectors (if the model has them).
    fn score(&self, images: &[Grey8], features: bool) -> Result<Scored, ScoreError>;
    /// The model's raw Covid-19 logit per image, for what must still move where the probability is
    /// saturated (occlusion maps of a sure model). A scorer that has the logit returns it; the default is
    /// the [`logit`] of `score`'s probability, exact unless the probability was rounded to 0 or 1 (an f32
    /// sigmoid is beyond |logit| ~ 17, an f64 one beyond ~ 37).
    fn logits(&self, images: &[Grey8]) -> Result<Vec<f64>, ScoreError> {
        Ok(self
            .score(images, false)?
            .scores
            .into_iter()
            .map(logit)
            .collect())
    }
}

/// ln(p / (1 - p)) as exactly as f64 allows (`ln p - ln(1 - p)` through `ln_1p`), with p kept inside
/// [`f64::MIN_POSITIVE`, 1 - `f64::EPSILON` / 2] so that a probability rounded to 0 or 1 still gives a
/// finite logit (about -708 and +36.7).
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON / 2.0);
    p.ln() - (-p).ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logit_inverts_the_sigmoid_far_into_saturation() {
        for l in [-30.0, -12.0, -1.0, 0.0, 0.5, 7.0, 20.0, 30.0] {
            let p = 1.0 / (1.0 + (-l as f64).exp());
            let back = logit(p);
            assert!(
                (back - l).abs() < 1e-4 * (1.0 + l.abs()),
                "{l} -> {p} -> {back}"
            );
        }
        assert!(logit(1.0).is_finite() && logit(1.0) > 36.0);
        assert!(logit(0.0).is_finite() && logit(0.0) < -700.0);
    }
}
