//! Grad-CAM (Selvaraju et al. 2017) that never changes the model it explains.
//!
//! The positive class is **Covid-19** (`cxr_core::Label::target() == 1`): the model's single logit is the
//! logit of Covid-19, and [`grad_cam`] differentiates that logit. [`CamTarget::Pneumonia`] differentiates its
//! negation, which is the logit of "other pneumonia" for a sigmoid output.
//!
//! Why it is safe for BatchNorm: [`CamModel`] implementors run every layer in inference mode (BatchNorm with
//! its running statistics, dropout off), and the backward pass starts from a *detached copy* of the last
//! feature map wrapped in a fresh `Var` (candle's `GradStore` keeps no gradients of intermediate tensors,
//! ../shared/docs/CRATE_NOTES.md), so the backbone is not even differentiated and no optimiser ever sees the
//! gradients. [`grad_cam_guarded`] checks it: it fingerprints every variable before and after and fails with
//! [`ExplainError::ModelMutated`] when anything changed.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;

use crate::error::{ExplainError, Result};

/// A model that Grad-CAM can explain: the contract between `cxr-model` and `cxr-explain`
/// (docs/ARCHITECTURE.md). Both methods run in inference mode and mutate no state.
pub trait CamModel {
    /// Output of the last convolutional block for the input batch `x` (NCHW), itself NCHW.
    fn feature_map(&self, x: &Tensor) -> candle_core::Result<Tensor>;
    /// The Covid-19 logit (shape `[N]` or `[N, 1]`) computed from a feature map (GAP + head).
    fn logit_from_feature_map(&self, fmap: &Tensor) -> candle_core::Result<Tensor>;
}

/// Which class's logit Grad-CAM explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CamTarget {
    /// Covid-19, the positive class: the gradient of the model's logit.
    #[default]
    Covid,
    /// Other pneumonia: the gradient of the negated logit.
    Pneumonia,
}

/// A grey-level map of `width * height` values, row-major. Grad-CAM maps are in `[0, 1]` (divided by their
/// maximum; all zeros when the ReLU'd map is zero everywhere).
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Heatmap {
    /// A map from its values; fails when the buffer does not match the dimensions.
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Result<Self> {
        if width == 0 || height == 0 || data.len() != width * height {
            return Err(ExplainError::shape(
                "heatmap",
                format!("{width}x{height} with {} values", data.len()),
            ));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    pub fn get(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }

    /// Total energy (sum of values).
    pub fn total(&self) -> f64 {
        self.data.iter().map(|&v| v as f64).sum()
    }

    /// Bilinear resampling to `width x height` with pixel centres aligned (PyTorch's
    /// `interpolate(mode="bilinear", align_corners=False)`, OpenCV's `INTER_LINEAR` when up-sampling).
    pub fn resize(&self, width: usize, height: usize) -> Heatmap {
        if width == self.width && height == self.height {
            return self.clone();
        }
        let sx = self.width as f64 / width as f64;
        let sy = self.height as f64 / height as f64;
        // Pre-compute the two source columns and their weights for every destination column.
        let cols: Vec<(usize, usize, f32)> =
            (0..width).map(|x| axis_sample(x, sx, self.width)).collect();
        let mut data = Vec::with_capacity(width * height);
        for y in 0..height {
            let (y0, y1, wy) = axis_sample(y, sy, self.height);
            let r0 = &self.data[y0 * self.width..(y0 + 1) * self.width];
            let r1 = &self.data[y1 * self.width..(y1 + 1) * self.width];
            for &(x0, x1, wx) in &cols {
                let top = r0[x0] + (r0[x1] - r0[x0]) * wx;
                let bottom = r1[x0] + (r1[x1] - r1[x0]) * wx;
                data.push(top + (bottom - top) * wy);
            }
        }
        Heatmap {
            width,
            height,
            data,
        }
    }

    /// Divides by the maximum so that the map spans `[0, max/max]`; a map with no positive value becomes zero.
    fn normalise(&mut self) {
        let max = self.data.iter().copied().fold(0.0f32, f32::max);
        if max > 0.0 && max.is_finite() {
            self.data.iter_mut().for_each(|v| *v = (*v / max).max(0.0));
        } else {
            self.data.iter_mut().for_each(|v| *v = 0.0);
        }
    }
}

/// Source coordinates and weight for destination index `i` of an axis scaled by `scale` (src/dst).
fn axis_sample(i: usize, scale: f64, src_len: usize) -> (usize, usize, f32) {
    let s = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
    let i0 = (s.floor() as usize).min(src_len - 1);
    let i1 = (i0 + 1).min(src_len - 1);
    (i0, i1, (s - i0 as f64) as f32)
}

/// Grad-CAM of one batch.
#[derive(Debug, Clone)]
pub struct GradCamOutput {
    /// One map per image at the input's resolution, in `[0, 1]`.
    pub heatmaps: Vec<Heatmap>,
    /// The model's Covid-19 logit per image (whatever the [`CamTarget`]).
    pub logits: Vec<f32>,
    /// Spatial size of the feature map (`width`, `height`) the maps were up-sampled from.
    pub feature_size: (usize, usize),
}

/// Grad-CAM of the Covid-19 logit for the batch `x` (NCHW); see [`grad_cam_for`].
pub fn grad_cam<M: CamModel + ?Sized>(model: &M, x: &Tensor) -> Result<GradCamOutput> {
    grad_cam_for(model, x, CamTarget::Covid)
}

/// Grad-CAM for `target`: the gradient of the target's logit w.r.t. the last feature map `A` (per image,
/// since inference-mode images do not interact), channel weights `w_c` = spatial mean of that gradient,
/// map = ReLU(sum_c w_c A_c), bilinearly up-sampled to the input's height and width and divided by its max.
pub fn grad_cam_for<M: CamModel + ?Sized>(
    model: &M,
    x: &Tensor,
    target: CamTarget,
) -> Result<GradCamOutput> {
    let dims = x.dims();
    if dims.len() != 4 {
        return Err(ExplainError::shape(
            "Grad-CAM input",
            format!("expected NCHW, got {:?}", dims),
        ));
    }
    let (n, in_h, in_w) = (dims[0], dims[2], dims[3]);
    let fmap = model
        .feature_map(x)
        .map_err(ExplainError::tensor("feature map"))?;
    let fdims = fmap.dims().to_vec();
    if fdims.len() != 4 || fdims[0] != n {
        return Err(ExplainError::shape(
            "feature map",
            format!("expected [{n}, C, H, W], got {fdims:?}"),
        ));
    }
    // The backward pass starts here: a detached copy, so gradients never reach the backbone.
    let fvar = Var::from_tensor(&fmap.detach()).map_err(ExplainError::tensor("feature map Var"))?;
    let logits = model
        .logit_from_feature_map(fvar.as_tensor())
        .map_err(ExplainError::tensor("logit"))?
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::F32))
        .map_err(ExplainError::tensor("logit"))?;
    if logits.dims() != [n] {
        return Err(ExplainError::shape(
            "logit",
            format!(
                "expected {n} logits ([N] or [N, 1]), got {:?}",
                logits.dims()
            ),
        ));
    }
    let objective = match target {
        CamTarget::Covid => logits.sum_all(),
        CamTarget::Pneumonia => logits.neg().and_then(|t| t.sum_all()),
    }
    .map_err(ExplainError::tensor("logit sum"))?;
    let grads = objective
        .backward()
        .map_err(ExplainError::tensor("backward from the logit"))?;
    let grad = grads.get(fvar.as_tensor()).ok_or_else(|| {
        ExplainError::shape(
            "feature map gradient",
            "the logit does not depend on the feature map",
        )
    })?;
    let cam = (|| {
        let a = fvar.as_tensor().to_dtype(DType::F32)?;
        let weights = grad.to_dtype(DType::F32)?.mean_keepdim((2, 3))?;
        a.broadcast_mul(&weights)?.sum(1)?.relu()?.to_vec3::<f32>()
    })()
    .map_err(ExplainError::tensor("Grad-CAM map"))?;
    let (fh, fw) = (fdims[2], fdims[3]);
    let heatmaps = cam
        .into_iter()
        .map(|rows| {
            let mut h = Heatmap {
                width: fw,
                height: fh,
                data: rows.into_iter().flatten().collect(),
            }
            .resize(in_w, in_h);
            h.normalise();
            h
        })
        .collect();
    let logits = logits
        .to_vec1::<f32>()
        .map_err(ExplainError::tensor("logit"))?;
    Ok(GradCamOutput {
        heatmaps,
        logits,
        feature_size: (fw, fh),
    })
}

/// A fingerprint of a model's variables (weights *and* BatchNorm running statistics): name → SHA-256 of
/// shape, dtype and raw bits. Equal fingerprints mean bit-identical state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSnapshot(BTreeMap<String, String>);

impl ModelSnapshot {
    /// Fingerprints named tensors (e.g. every `Var` of every `VarMap` a model owns).
    pub fn from_named<I, S>(tensors: I) -> Result<Self>
    where
        I: IntoIterator<Item = (S, Tensor)>,
        S: Into<String>,
    {
        let mut map = BTreeMap::new();
        for (name, t) in tensors {
            let name = name.into();
            let digest = tensor_digest(&t).map_err(ExplainError::tensor(name.clone()))?;
            map.insert(name, digest);
        }
        Ok(Self(map))
    }

    /// Fingerprints every variable of `varmap`.
    pub fn of_varmap(varmap: &VarMap) -> Result<Self> {
        let named: Vec<(String, Tensor)> = {
            let data = varmap.data().lock().map_err(|_| {
                ExplainError::invalid("VarMap", "its lock was poisoned by a panic elsewhere")
            })?;
            data.iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
                .collect()
        };
        Self::from_named(named)
    }

    /// Number of fingerprinted tensors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Names whose fingerprint differs, or that exist in only one of the two snapshots.
    pub fn differences(&self, other: &ModelSnapshot) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .iter()
            .filter(|(k, v)| other.0.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        names.extend(other.0.keys().filter(|k| !self.0.contains_key(*k)).cloned());
        names
    }
}

fn tensor_digest(t: &Tensor) -> candle_core::Result<String> {
    let flat = t.flatten_all()?;
    let mut bytes = format!("{:?}{:?}", t.dtype(), t.dims()).into_bytes();
    match t.dtype() {
        DType::F32 => {
            for v in flat.to_vec1::<f32>()? {
                bytes.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        }
        DType::F64 => {
            for v in flat.to_vec1::<f64>()? {
                bytes.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        }
        DType::U8 => bytes.extend(flat.to_vec1::<u8>()?),
        DType::U32 => {
            for v in flat.to_vec1::<u32>()? {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        DType::I64 => {
            for v in flat.to_vec1::<i64>()? {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        // Half types widen to f32 exactly (an injective map), so equal digests still mean equal bits.
        _ => {
            for v in flat.to_dtype(DType::F32)?.to_vec1::<f32>()? {
                bytes.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        }
    }
    Ok(cxr_core::fsutil::sha256_bytes(&bytes))
}

/// [`grad_cam_for`] with proof: takes a [`ModelSnapshot`] of every variable the model owns (weights and
/// running statistics) before and after, and fails with [`ExplainError::ModelMutated`] if explaining changed
/// any of them. `snapshot` fingerprints the model's state, e.g. `|| ModelSnapshot::of_varmap(&varmap)` or
/// `|| ModelSnapshot::from_named(params.iter().map(|(n, p)| (n.clone(), p.var.as_tensor().clone())))`.
pub fn grad_cam_guarded<M, F>(
    model: &M,
    x: &Tensor,
    target: CamTarget,
    snapshot: F,
) -> Result<GradCamOutput>
where
    M: CamModel + ?Sized,
    F: Fn() -> Result<ModelSnapshot>,
{
    let before = snapshot()?;
    let out = grad_cam_for(model, x, target)?;
    let names = before.differences(&snapshot()?);
    if !names.is_empty() {
        return Err(ExplainError::ModelMutated { names });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_resize_matches_pytorch_align_corners_false() {
        // torch.nn.functional.interpolate(torch.tensor([[[[0.,1.],[2.,3.]]]]), size=(4,4), mode="bilinear",
        // align_corners=False) -> rows [0, .25, .75, 1], [.5, .75, 1.25, 1.5], [1.5, 1.75, 2.25, 2.5], [2, 2.25, 2.75, 3]
        let h = Heatmap::new(2, 2, vec![0.0, 1.0, 2.0, 3.0]).unwrap();
        let r = h.resize(4, 4);
        let want = [
            0.0, 0.25, 0.75, 1.0, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2.0, 2.25, 2.75, 3.0,
        ];
        for (a, b) in r.data.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{:?}", r.data);
        }
        // Constant maps stay constant at any size; same-size resize is the identity.
        let c = Heatmap::new(3, 2, vec![0.7; 6]).unwrap().resize(7, 5);
        assert!(c.data.iter().all(|&v| (v - 0.7).abs() < 1e-6));
        assert_eq!(h.resize(2, 2), h);
    }

    #[test]
    fn heatmap_rejects_bad_buffers() {
        assert!(Heatmap::new(2, 2, vec![0.0; 3]).is_err());
        assert!(Heatmap::new(0, 2, vec![]).is_err());
    }
}
