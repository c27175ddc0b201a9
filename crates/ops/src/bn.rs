//! Training-mode BatchNorm (batch statistics) with optional fused ReLU as custom candle ops on CPU.
//!
//! Forward: per-channel mean and biased variance in f64 (one pass for the statistics, one for the output).
//! Backward (exact, the statistics depend on x): with xhat = (x - mean) * invstd and g = dy masked by the ReLU,
//! dbeta = sum g, dgamma = sum g * xhat, dx = gamma * invstd / M * (M * g - dbeta - xhat * dgamma), M = N*H*W.
//! The backward op returns dx, dgamma and dbeta packed in one flat tensor, split by views.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::elem::{Elem, SendPtr, slice, storage};

fn nchw(l: &Layout, what: &str) -> Result<(usize, usize, usize)> {
    let &[n, c, h, w] = l.dims() else {
        candle_core::bail!("batch_norm_train: {what} {:?} must be 4-d (NCHW)", l.dims());
    };
    Ok((n, c, h * w))
}

/// Per-channel (mean, biased variance) of an NCHW tensor, as f64.
fn stats<T: Elem>(x: &[T], n: usize, c: usize, hw: usize) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ci| {
            let m = (n * hw) as f64;
            let mut s = 0.0f64;
            for ni in 0..n {
                let p = &x[(ni * c + ci) * hw..(ni * c + ci + 1) * hw];
                s += p.iter().map(|v| v.to_f64()).sum::<f64>();
            }
            let mean = s / m;
            let mut q = 0.0f64;
            for ni in 0..n {
                let p = &x[(ni * c + ci) * hw..(ni * c + ci + 1) * hw];
                q += p
                    .iter()
                    .map(|v| (v.to_f64() - mean) * (v.to_f64() - mean))
                    .sum::<f64>();
            }
            (mean, q / m)
        })
        .collect()
}

/// [2, C]: batch mean and biased variance per channel (no gradient).
pub(crate) struct ChannelStats;

impl CustomOp1 for ChannelStats {
    fn name(&self) -> &'static str {
        "cxr-channel-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, hw) = nchw(l, "input")?;
        dispatch!(s, |T| {
            let st = stats::<T>(slice(s, l, "batch_norm_train input")?, n, c, hw);
            let mut v: Vec<T> = st.iter().map(|p| T::from_f64(p.0)).collect();
            v.extend(st.iter().map(|p| T::from_f64(p.1)));
            Ok((storage(v), Shape::from((2, c))))
        })
    }
}

/// y = [relu](gamma * (x - mean) * invstd + beta) with the batch statistics computed beforehand.
pub(crate) struct BnTrain {
    pub mean: Vec<f64>,
    pub invstd: Vec<f64>,
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
            let mut y = vec![T::ZERO; x.len()];
            y.par_chunks_mut(hw.max(1))
                .zip(x.par_chunks(hw.max(1)))
                .enumerate()
                .for_each(|(i, (yo, xi))| {
                    let ci = i % c;
                    let a = T::from_f64(g[ci].to_f64() * self.invstd[ci]);
                    let off = T::from_f64(
                        b[ci].to_f64() - g[ci].to_f64() * self.invstd[ci] * self.mean[ci],
                    );
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
            invstd: self.invstd.clone(),
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
    mean: Vec<f64>,
    invstd: Vec<f64>,
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
            let mut out = vec![T::ZERO; len + 2 * c];
            let relu = self.relu;
            let g_at = |i: usize| -> f64 {
                if relu && !(y[i] > T::ZERO) {
                    0.0
                } else {
                    dy[i].to_f64()
                }
            };
            // Pass 1: dbeta, dgamma per channel.
            let sums: Vec<(f64, f64)> = (0..c)
                .into_par_iter()
                .map(|ci| {
                    let (mu, is) = (self.mean[ci], self.invstd[ci]);
                    let (mut sb, mut sg) = (0.0f64, 0.0f64);
                    for ni in 0..n {
                        let base = (ni * c + ci) * hw;
                        for i in base..base + hw {
                            let g = g_at(i);
                            sb += g;
                            sg += g * (x[i].to_f64() - mu) * is;
                        }
                    }
                    (sg, sb)
                })
                .collect();
            // Pass 2: dx per plane.
            let m = (n * hw) as f64;
            let dxp = SendPtr(out.as_mut_ptr());
            (0..n * c).into_par_iter().for_each(|plane| {
                let ci = plane % c;
                let (mu, is) = (self.mean[ci], self.invstd[ci]);
                let (sg, sb) = sums[ci];
                let k = self.gamma[ci] * is / m;
                let base = plane * hw;
                // SAFETY: each plane is written by one job only.
                let d = unsafe { std::slice::from_raw_parts_mut(dxp.get().add(base), hw) };
                for (j, o) in d.iter_mut().enumerate() {
                    let i = base + j;
                    let xhat = (x[i].to_f64() - mu) * is;
                    *o = T::from_f64(k * (m * g_at(i) - sb - xhat * sg));
                }
            });
            for (ci, &(sg, sb)) in sums.iter().enumerate() {
                out[len + ci] = T::from_f64(sg);
                out[len + c + ci] = T::from_f64(sb);
            }
            Ok((storage(out), Shape::from(len + 2 * c)))
        })
    }
}
