//! Fused `relu(x + bias[c])` as a custom candle op on CPU (one pass over memory instead of three).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::elem::{Elem, slice, storage};

pub(crate) struct BiasRelu;

fn check(lx: &Layout, lb: &Layout) -> Result<usize> {
    let &[_, c, h, w] = lx.dims() else {
        candle_core::bail!("bias_relu: input {:?} must be 4-d (NCHW)", lx.dims());
    };
    if lb.dims() != [c] {
        candle_core::bail!(
            "bias_relu: bias {:?} does not match {c} channels of {:?}",
            lb.dims(),
            lx.dims()
        );
    }
    Ok(h * w)
}

impl CustomOp2 for BiasRelu {
    fn name(&self) -> &'static str {
        "cxr-bias-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let hw = check(l1, l2)?;
        dispatch!(s1, |T| {
            let x = slice::<T>(s1, l1, "bias_relu input")?;
            let b = slice::<T>(s2, l2, "bias_relu bias")?;
            let c = b.len();
            let mut y = vec![T::ZERO; x.len()];
            y.par_chunks_mut(hw.max(1))
                .zip(x.par_chunks(hw.max(1)))
                .enumerate()
                .for_each(|(i, (yo, xi))| {
                    let bc = b[i % c];
                    for (o, &v) in yo.iter_mut().zip(xi) {
                        let s = v + bc;
                        *o = if s > T::ZERO { s } else { T::ZERO };
                    }
                });
            Ok((storage(y), l1.shape().clone()))
        })
    }

    fn bwd(
        &self,
        _x: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = res.apply_op2_no_bwd(&grad.contiguous()?, &ReluMask)?;
        let db = if b.track_op() {
            Some(channel_sum(&dx)?)
        } else {
            None
        };
        Ok((Some(dx), db))
    }
}

/// dy where the output was positive, else 0: from (y, dy).
struct ReluMask;

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "cxr-relu-mask"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            candle_core::bail!(
                "bias_relu backward: gradient {:?} for output {:?}",
                l2.dims(),
                l1.dims()
            );
        }
        dispatch!(s1, |T| {
            let y = slice::<T>(s1, l1, "bias_relu output")?;
            let dy = slice::<T>(s2, l2, "bias_relu output gradient")?;
            let mut dx = vec![T::ZERO; y.len()];
            dx.par_chunks_mut(1 << 14)
                .zip(y.par_chunks(1 << 14))
                .zip(dy.par_chunks(1 << 14))
                .for_each(|((d, yy), g)| {
                    for ((d, &yv), &gv) in d.iter_mut().zip(yy).zip(g) {
                        *d = if yv > T::ZERO { gv } else { T::ZERO };
                    }
                });
            Ok((storage(dx), l1.shape().clone()))
        })
    }
}

/// [C]: the sum of an NCHW tensor over N, H and W (bias gradients), parallel over channels.
pub(crate) struct ChannelSum;

impl candle_core::CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "cxr-channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[n, c, h, w] = l.dims() else {
            candle_core::bail!("channel sum: gradient {:?} must be 4-d (NCHW)", l.dims());
        };
        let hw = h * w;
        dispatch!(s, |T| {
            let x = slice::<T>(s, l, "bias gradient input")?;
            let v: Vec<T> = (0..c)
                .into_par_iter()
                .map(|ci| {
                    let mut acc = 0.0f64;
                    for ni in 0..n {
                        let mut part = T::ZERO;
                        for &v in &x[(ni * c + ci) * hw..(ni * c + ci + 1) * hw] {
                            part += v;
                        }
                        acc += part.to_f64();
                    }
                    T::from_f64(acc)
                })
                .collect();
            Ok((storage(v), Shape::from(c)))
        })
    }
}

/// Per-channel sum of an NCHW gradient (CPU f32/f64; candle's `sum` elsewhere).
pub(crate) fn channel_sum(t: &Tensor) -> Result<Tensor> {
    if t.device().is_cpu() && matches!(t.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
    {
        t.contiguous()?.apply_op1_no_bwd(&ChannelSum)
    } else {
        t.sum((0, 2, 3))
    }
}
