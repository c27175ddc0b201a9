//! Training-mode BatchNorm (batch statistics) with optional fused ReLU as custom candle ops on CPU: the one
//! implementation in the workspace (`cxr-model`'s BatchNorm layers call it through [`crate::batch_norm_train`]).
//!
//! Why: built from candle's broadcast ops, a training-mode BatchNorm is ~8 passes forward and ~16 backward over
//! every activation, and those dominated a Finetune1 step (every BatchNorm of ResNet50 trains). Here the forward
//! is two passes (statistics, affine) and the backward two (reductions, input gradient), parallel over channels
//! and (image, channel) planes.
//!
//! Forward: per-channel mean and biased variance accumulated in f64 (per plane, then over images), kept in f64
//! for the affine step: `y = [relu](x * a + b)` with `a = gamma / sqrt(var + eps)`, `b = beta - mean * a`, both
//! rounded to the element type. The statistics are handed back rounded to the element type (the caller's
//! running update).
//! Backward (exact, the statistics depend on x): with the statistics as the forward handed them back (rounded),
//! invstd = 1 / sqrt(var + eps), xhat = (x - mean) * invstd and g = dy masked by the ReLU:
//! dbeta = sum g, dgamma = sum g * xhat, dx = gamma * invstd * (g - dbeta / M - xhat * dgamma / M), M = N*H*W,
//! the sums in f64 and the last line in the element type. The backward op returns dx, dgamma and dbeta packed
//! in one flat tensor, split by views.
//!
//! The exact order of these operations is the one `cxr-model`'s classifier was trained and checked with (against
//! PyTorch, by its parity fixture): changing it moves the study's figures in the last bits, so keep it.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::elem::{Elem, SendPtr, slice, storage};

fn nchw(l: &Layout, what: &str) -> Result<(usize, usize, usize)> {
    let &[n, c, h, w] = l.dims() else {
        candle_core::bail!("batch_norm_train: {what} {:?} must be 4-d (NCHW)", l.dims());
    };
    Ok((n, c, h * w))
}

/// Per-channel sums over the planes of an NCHW tensor: `f(c, plane offset)` summed over images, in f64.
fn per_channel(n: usize, c: usize, hw: usize, f: impl Fn(usize, usize) -> f64 + Sync) -> Vec<f64> {
    (0..c)
        .into_par_iter()
        .map(|ch| (0..n).map(|i| f(ch, (i * c + ch) * hw)).sum())
        .collect()
}

/// Per-channel (mean, biased variance) of an NCHW tensor, in f64.
fn stats<T: Elem>(x: &[T], n: usize, c: usize, hw: usize) -> (Vec<f64>, Vec<f64>) {
    let m = (n * hw) as f64;
    let mean: Vec<f64> = per_channel(n, c, hw, |_, o| {
        x[o..o + hw].iter().map(|v| v.to_f64()).sum::<f64>()
    })
    .into_iter()
    .map(|s| s / m)
    .collect();
    let var: Vec<f64> = per_channel(n, c, hw, |ch, o| {
        let mu = mean[ch];
        x[o..o + hw]
            .iter()
            .map(|v| (v.to_f64() - mu).powi(2))
            .sum::<f64>()
    })
    .into_iter()
    .map(|s| s / m)
    .collect();
    (mean, var)
}

/// [2, C] f64 (whatever the input's type): batch mean and biased variance per channel, no gradient. Kept in f64
/// so that the forward normalises with the unrounded statistics.
pub(crate) struct ChannelStats;

impl CustomOp1 for ChannelStats {
    fn name(&self) -> &'static str {
        "cxr-channel-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, hw) = nchw(l, "input")?;
        dispatch!(s, |T| {
            let (mut v, var) = stats::<T>(slice(s, l, "batch_norm_train input")?, n, c, hw);
            v.extend(var);
            Ok((CpuStorage::F64(v), Shape::from((2, c))))
        })
    }
}

/// y = [relu](x * a + b), a = gamma / sqrt(var + eps), b = beta - mean * a, with the batch statistics
/// (f64, unrounded) computed beforehand by [`ChannelStats`].
pub(crate) struct BnTrain {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    pub eps: f64,
    pub relu: bool,
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "cxr-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, hw) = nchw(l1, "input")?;
        if l2.dims() != [c] || l3.dims() != [c] {
            candle_core::bail!(
                "batch_norm_train: gamma {:?} / beta {:?} do not match {c} channels",
                l2.dims(),
                l3.dims()
            );
        }
        dispatch!(s1, |T| {
            let x = slice::<T>(s1, l1, "batch_norm_train input")?;
            let g = slice::<T>(s2, l2, "batch_norm_train gamma")?;
            let b = slice::<T>(s3, l3, "batch_norm_train beta")?;
            let scale: Vec<T> = (0..c)
                .map(|ci| T::from_f64(g[ci].to_f64() / (self.var[ci] + self.eps).sqrt()))
                .collect();
            let shift: Vec<T> = (0..c)
                .map(|ci| T::from_f64(b[ci].to_f64() - self.mean[ci] * scale[ci].to_f64()))
                .collect();
            let mut y = vec![T::ZERO; x.len()];
            y.par_chunks_mut(hw.max(1))
                .zip(x.par_chunks(hw.max(1)))
                .enumerate()
                .for_each(|(i, (yo, xi))| {
                    let (a, off) = (scale[i % c], shift[i % c]);
                    if self.relu {
                        for (o, &v) in yo.iter_mut().zip(xi) {
                            let s = v * a + off;
                            *o = if s > T::ZERO { s } else { T::ZERO };
                        }
                    } else {
                        for (o, &v) in yo.iter_mut().zip(xi) {
                            *o = v * a + off;
                        }
                    }
                });
            Ok((storage(y), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let gvals = gamma.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
        let op = BnTrainBwd {
            mean: self.mean.clone(),
            var: self.var.clone(),
            eps: self.eps,
            gamma: gvals,
            relu: self.relu,
        };
        let packed = x.apply_op3_no_bwd(&grad.contiguous()?, res, &op)?;
        let len = n * c * h * w;
        let dx = packed.narrow(0, 0, len)?.reshape((n, c, h, w))?;
        let dgamma = packed.narrow(0, len, c)?;
        let dbeta = packed.narrow(0, len + c, c)?;
        Ok((
            if x.track_op() { Some(dx) } else { None },
            if gamma.track_op() { Some(dgamma) } else { None },
            if beta.track_op() { Some(dbeta) } else { None },
        ))
    }
}

/// (x, dy, y) -> [dx (flat), dgamma, dbeta].
struct BnTrainBwd {
    /// The forward's statistics (f64); rounded to the element type here, as the forward handed them back.
    mean: Vec<f64>,
    var: Vec<f64>,
    eps: f64,
    gamma: Vec<f64>,
    relu: bool,
}

impl CustomOp3 for BnTrainBwd {
    fn name(&self) -> &'static str {
        "cxr-batch-norm-train-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, hw) = nchw(l1, "input")?;
        if l2.dims() != l1.dims() || l3.dims() != l1.dims() {
            candle_core::bail!(
                "batch_norm_train backward: gradient {:?} for input {:?}",
                l2.dims(),
                l1.dims()
            );
        }
        dispatch!(s1, |T| {
            let x = slice::<T>(s1, l1, "batch_norm_train input")?;
            let dy = slice::<T>(s2, l2, "batch_norm_train output gradient")?;
            let y = slice::<T>(s3, l3, "batch_norm_train output")?;
            let len = x.len();
            let m = (n * hw) as f64;
            let mean: Vec<T> = self.mean.iter().map(|&v| T::from_f64(v)).collect();
            let invstd: Vec<f64> = self
                .var
                .iter()
                .map(|&v| 1.0 / (T::from_f64(v).to_f64() + self.eps).sqrt())
                .collect();
            let relu = self.relu;
            // The output gradient, zero where the ReLU cut the output.
            let g_at = |i: usize| -> T {
                if relu && !(y[i] > T::ZERO) {
                    T::ZERO
                } else {
                    dy[i]
                }
            };
            // Pass 1: dbeta and sum g * (x - mean) per channel (dgamma once scaled by invstd).
            let dbeta = per_channel(n, c, hw, |_, o| {
                (o..o + hw).map(|i| g_at(i).to_f64()).sum::<f64>()
            });
            let dxhat = per_channel(n, c, hw, |ch, o| {
                let mu = mean[ch];
                (o..o + hw)
                    .map(|i| g_at(i).to_f64() * (x[i] - mu).to_f64())
                    .sum::<f64>()
            });
            let dgamma: Vec<f64> = (0..c).map(|ch| dxhat[ch] * invstd[ch]).collect();
            // Pass 2: dx per plane.
            let mut out = vec![T::ZERO; len + 2 * c];
            let dxp = SendPtr(out.as_mut_ptr());
            (0..n * c).into_par_iter().for_each(|plane| {
                let ch = plane % c;
                let k1 = T::from_f64(self.gamma[ch] * invstd[ch]);
                let b = T::from_f64(dbeta[ch] / m);
                let a = T::from_f64(invstd[ch] * dgamma[ch] / m);
                let mu = mean[ch];
                let base = plane * hw;
                // SAFETY: each plane is written by one job only, and `out` outlives the loop.
                let d = unsafe { std::slice::from_raw_parts_mut(dxp.get().add(base), hw) };
                for (j, o) in d.iter_mut().enumerate() {
                    let i = base + j;
                    *o = k1 * (g_at(i) - b - (x[i] - mu) * a);
                }
            });
            for ch in 0..c {
                out[len + ch] = T::from_f64(dgamma[ch]);
                out[len + c + ch] = T::from_f64(dbeta[ch]);
            }
            Ok((storage(out), Shape::from(len + 2 * c)))
        })
    }
}
