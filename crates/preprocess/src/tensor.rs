//! Network input helpers: grey → 3 channels (the ImageNet backbones want RGB) and normalisation.

use cxr_core::Grey8;
use serde::{Deserialize, Serialize};

/// ImageNet channel means and standard deviations (on the 0..1 scale), torchvision's values.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How 0..255 grey becomes network input. Every variant first scales to 0..1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Normalization {
    /// `v / 255`.
    #[default]
    Unit,
    /// `(v / 255 - mean[c]) / std[c]` with the ImageNet statistics.
    Imagenet,
    /// `(v / 255 - mean) / std` with one scalar pair (the authors' code: the training set's statistics,
    /// see [`scalar_mean_std`]).
    Scalar { mean: f32, std: f32 },
}

/// CHW `f32` tensor data of `3 x h x w`: the grey image replicated into three channels and normalised.
pub fn to_chw3(img: &Grey8, norm: Normalization) -> Vec<f32> {
    let n = img.data.len();
    let mut out = Vec::with_capacity(3 * n);
    for ch in 0..3 {
        let (mean, std) = match norm {
            Normalization::Unit => (0.0, 1.0),
            Normalization::Imagenet => (IMAGENET_MEAN[ch], IMAGENET_STD[ch]),
            Normalization::Scalar { mean, std } => (mean, std),
        };
        let inv = 1.0 / std;
        out.extend(
            img.data
                .iter()
                .map(|&v| (f32::from(v) / 255.0 - mean) * inv),
        );
    }
    out
}

/// Mean and (population) standard deviation of all pixels on the 0..1 scale; `None` without pixels.
pub fn scalar_mean_std<'a>(images: impl IntoIterator<Item = &'a Grey8>) -> Option<(f32, f32)> {
    let (mut n, mut sum, mut sq) = (0u64, 0f64, 0f64);
    for img in images {
        for &v in &img.data {
            let x = f64::from(v) / 255.0;
            n += 1;
            sum += x;
            sq += x * x;
        }
    }
    if n == 0 {
        return None;
    }
    let mean = sum / n as f64;
    let var = (sq / n as f64 - mean * mean).max(0.0);
    Some((mean as f32, var.sqrt() as f32))
}
