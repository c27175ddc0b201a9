//! Training-mode BatchNorm over NCHW as one fused CPU op with its own backward.
//!
//! Why: built from candle's broadcast ops, a training-mode BatchNorm is ~8 passes forward and ~16 backward over
//! every activation, and those dominated a Finetune1 step (every BatchNorm of ResNet50 trains). Here the forward
//! is two passes (statistics, affine) and the backward two (reductions, input gradient), parallel over channels
//! and (image, channel) planes. The batch statistics are handed back to the caller for the running update.
//! Checked against PyTorch by the parity fixture (training-mode features, running statistics, gradients).

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Batch mean and biased variance per channel, from the last forward.
#[derive(Debug, Default, Clone)]
pub(crate) struct BatchStats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

struct BnTrain {
    eps: f64,
    stats: Arc<Mutex<BatchStats>>,
}

fn dims(l: &Layout) -> Result<(usize, usize, usize)> {
    let d = l.dims();
    if d.len() != 4 {
        candle_core::bail!("bn_train: expected NCHW, got {d:?}");
    }
    Ok((d[0], d[1], d[2] * d[3]))
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("bn_train: {what} is not contiguous"),
    }
}

/// Per-channel sums over planes: `f(c, plane)` accumulated over images, in f64.
fn per_channel(n: usize, c: usize, hw: usize, f: impl Fn(usize, usize) -> f64 + Sync) -> Vec<f64> {
    (0..c)
        .into_par_iter()
        .map(|ch| (0..n).map(|i| f(ch, (i * c + ch) * hw)).sum())
        .collect()
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "bn-train"
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
        let (n, c, hw) = dims(l1)?;
        let x = slice(s1, l1, "x")?;
        let gamma = slice(s2, l2, "gamma")?;
        let beta = slice(s3, l3, "beta")?;
        let m = (n * hw) as f64;
        let mean: Vec<f64> = per_channel(n, c, hw, |_, o| {
            x[o..o + hw].iter().map(|&v| v as f64).sum::<f64>()
        })
        .into_iter()
        .map(|s| s / m)
        .collect();
        let var: Vec<f64> = per_channel(n, c, hw, |ch, o| {
            let mu = mean[ch];
            x[o..o + hw]
                .iter()
                .map(|&v| (v as f64 - mu).powi(2))
                .sum::<f64>()
        })
        .into_iter()
        .map(|s| s / m)
        .collect();
        let scale: Vec<f32> = (0..c)
            .map(|ch| (gamma[ch] as f64 / (var[ch] + self.eps).sqrt()) as f32)
            .collect();
        let shift: Vec<f32> = (0..c)
            .map(|ch| (beta[ch] as f64 - mean[ch] * scale[ch] as f64) as f32)
            .collect();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(hw)
            .zip(x.par_chunks(hw))
            .enumerate()
            .for_each(|(k, (yo, xi))| {
                let ch = k % c;
                let (a, b) = (scale[ch], shift[ch]);
                for (o, &v) in yo.iter_mut().zip(xi) {
                    *o = v * a + b;
                }
            });
        if let Ok(mut s) = self.stats.lock() {
            s.mean = mean.iter().map(|&v| v as f32).collect();
            s.var = var.iter().map(|&v| v as f32).collect();
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let hw = h * w;
        let xv = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let gv = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let gam = gamma.to_vec1::<f32>()?;
        let (mean, var) = match self.stats.lock() {
            Ok(s) => (s.mean.clone(), s.var.clone()),
            Err(_) => candle_core::bail!("bn_train: statistics lock poisoned"),
        };
        let m = (n * hw) as f64;
        let invstd: Vec<f64> = var
            .iter()
            .map(|&v| 1.0 / (v as f64 + self.eps).sqrt())
            .collect();
        let dbeta = per_channel(n, c, hw, |_, o| {
            gv[o..o + hw].iter().map(|&g| g as f64).sum::<f64>()
        });
        let dxhat = per_channel(n, c, hw, |ch, o| {
            let mu = mean[ch];
            gv[o..o + hw]
                .iter()
                .zip(&xv[o..o + hw])
                .map(|(&g, &v)| g as f64 * (v - mu) as f64)
                .sum::<f64>()
        });
        // dgamma = Σ g * xhat; dx = gamma * invstd * (g - dbeta/m - xhat * dgamma/m).
        let dgamma: Vec<f64> = (0..c).map(|ch| dxhat[ch] * invstd[ch]).collect();
        let mut dx = vec![0f32; xv.len()];
        dx.par_chunks_mut(hw)
            .zip(gv.par_chunks(hw).zip(xv.par_chunks(hw)))
            .enumerate()
            .for_each(|(k, (o, (g, xs)))| {
                let ch = k % c;
                let k1 = (gam[ch] as f64 * invstd[ch]) as f32;
                let b = (dbeta[ch] / m) as f32;
                let a = (invstd[ch] * dgamma[ch] / m) as f32;
                let mu = mean[ch];
                for ((d, &gi), &xi) in o.iter_mut().zip(g).zip(xs) {
                    *d = k1 * (gi - b - (xi - mu) * a);
                }
            });
        let dev = x.device();
        let dx = Tensor::from_vec(dx, (n, c, h, w), dev)?;
        let dgamma =
            Tensor::from_vec(dgamma.iter().map(|&v| v as f32).collect::<Vec<_>>(), c, dev)?;
        let dbeta = Tensor::from_vec(dbeta.iter().map(|&v| v as f32).collect::<Vec<_>>(), c, dev)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Training-mode BatchNorm of a contiguous f32 NCHW tensor on the CPU: returns the output and the batch
/// statistics (mean, biased variance).
pub(crate) fn bn_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, BatchStats)> {
    let stats = Arc::new(Mutex::new(BatchStats::default()));
    let op = BnTrain {
        eps,
        stats: stats.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let s = match stats.lock() {
        Ok(s) => s.clone(),
        Err(_) => candle_core::bail!("bn_train: statistics lock poisoned"),
    };
    Ok((y, s))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    /// The fused op and the candle-ops composition (used on non-CPU devices) agree on output, batch statistics
    /// and all three gradients.
    #[test]
    fn fused_batch_norm_matches_the_composed_one() {
        let dev = Device::Cpu;
        let data: Vec<f32> = (0..3 * 4 * 5 * 6)
            .map(|i| ((i as f32) * 0.7).sin() * 3.0 + (i % 4) as f32)
            .collect();
        let x = Var::from_tensor(&Tensor::from_vec(data, (3, 4, 5, 6), &dev).unwrap()).unwrap();
        let gamma =
            Var::from_tensor(&Tensor::new(&[1.5f32, 0.5, -1.0, 2.0], &dev).unwrap()).unwrap();
        let beta =
            Var::from_tensor(&Tensor::new(&[0.1f32, -0.2, 0.3, 0.0], &dev).unwrap()).unwrap();
        let coef = Tensor::from_vec(
            (0..360).map(|i| (i as f32 * 0.3).cos()).collect::<Vec<_>>(),
            (3, 4, 5, 6),
            &dev,
        )
        .unwrap();

        let (y1, stats) =
            super::bn_train(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), 1e-5).unwrap();
        let g1 = (&y1 * &coef)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();

        let xt = x.as_tensor();
        let mean = xt.mean_keepdim((0, 2, 3)).unwrap();
        let xc = xt.broadcast_sub(&mean).unwrap();
        let var = xc.sqr().unwrap().mean_keepdim((0, 2, 3)).unwrap();
        let y2 = xc
            .broadcast_div(&(var.clone() + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&gamma.as_tensor().reshape((1, 4, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&beta.as_tensor().reshape((1, 4, 1, 1)).unwrap())
            .unwrap();
        let g2 = (&y2 * &coef)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();

        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (u, v) in a.iter().zip(&b) {
                assert!(
                    (u - v).abs() <= 1e-4 * (1.0 + v.abs()),
                    "{what}: {u} vs {v}"
                );
            }
        };
        close(&y1, &y2, "output");
        close(
            &Tensor::new(stats.mean.as_slice(), &dev).unwrap(),
            &mean,
            "mean",
        );
        close(
            &Tensor::new(stats.var.as_slice(), &dev).unwrap(),
            &var,
            "var",
        );
        for (v, what) in [(&x, "dx"), (&gamma, "dgamma"), (&beta, "dbeta")] {
            close(
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
                what,
            );
        }
    }
}
