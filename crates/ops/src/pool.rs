//! Max-pooling as custom candle ops on CPU: forward, and a backward that routes each output gradient to the first
//! maximal cell of its window (PyTorch's choice on ties), recomputed from the input rather than stored.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::elem::{Elem, slice, storage};

#[derive(Debug, Clone, Copy)]
pub(crate) struct MaxPool {
    pub k: usize,
    pub s: usize,
    pub p: usize,
}

struct PoolGeom {
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

impl MaxPool {
    pub(crate) fn out_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        if self.k == 0 || self.s == 0 {
            candle_core::bail!(
                "max_pool2d: kernel {} and stride {} must be positive",
                self.k,
                self.s
            );
        }
        if 2 * self.p > self.k {
            candle_core::bail!(
                "max_pool2d: padding {} exceeds half the kernel {}",
                self.p,
                self.k
            );
        }
        if h + 2 * self.p < self.k || w + 2 * self.p < self.k {
            candle_core::bail!(
                "max_pool2d: input {h}x{w} (padding {}) smaller than the kernel {}",
                self.p,
                self.k
            );
        }
        Ok((
            (h + 2 * self.p - self.k) / self.s + 1,
            (w + 2 * self.p - self.k) / self.s + 1,
        ))
    }

    fn geom(&self, dims: &[usize]) -> Result<PoolGeom> {
        let &[n, c, h, w] = dims else {
            candle_core::bail!("max_pool2d: input {dims:?} must be 4-d (NCHW)");
        };
        let (oh, ow) = self.out_hw(h, w)?;
        Ok(PoolGeom {
            planes: n * c,
            h,
            w,
            oh,
            ow,
        })
    }

    /// Window bounds clipped to the image: padded cells are -inf and never win.
    #[inline]
    fn range(&self, o: usize, len: usize) -> (usize, usize) {
        let lo = (o * self.s) as isize - self.p as isize;
        let hi = (lo + self.k as isize).min(len as isize);
        (lo.max(0) as usize, hi.max(0) as usize)
    }

    /// Index (in the plane) of the first maximum of window (oy, ox); None if the window holds no cell.
    #[inline]
    fn argmax<T: Elem>(&self, plane: &[T], g: &PoolGeom, oy: usize, ox: usize) -> Option<usize> {
        let (y0, y1) = self.range(oy, g.h);
        let (x0, x1) = self.range(ox, g.w);
        let mut best: Option<(usize, T)> = None;
        for y in y0..y1 {
            for x in x0..x1 {
                let v = plane[y * g.w + x];
                match best {
                    Some((_, b)) if !(v > b) => {}
                    _ => best = Some((y * g.w + x, v)),
                }
            }
        }
        best.map(|(i, _)| i)
    }

    fn forward<T: Elem>(&self, x: &[T], g: &PoolGeom) -> Vec<T> {
        let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
        let mut y = vec![T::NEG_INF; g.planes * ohw];
        y.par_chunks_mut(ohw)
            .zip(x.par_chunks(hw))
            .for_each(|(yo, plane)| {
                for oy in 0..g.oh {
                    let (y0, y1) = self.range(oy, g.h);
                    for ox in 0..g.ow {
                        let (x0, x1) = self.range(ox, g.w);
                        let mut m = T::NEG_INF;
                        for yy in y0..y1 {
                            for &v in &plane[yy * g.w + x0..yy * g.w + x1] {
                                if v > m {
                                    m = v;
                                }
                            }
                        }
                        yo[oy * g.ow + ox] = m;
                    }
                }
            });
        y
    }

    fn backward<T: Elem>(&self, x: &[T], dy: &[T], g: &PoolGeom) -> Vec<T> {
        let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
        let mut dx = vec![T::ZERO; g.planes * hw];
        dx.par_chunks_mut(hw)
            .zip(x.par_chunks(hw))
            .zip(dy.par_chunks(ohw))
            .for_each(|((dxp, plane), dyp)| {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        if let Some(i) = self.argmax(plane, g, oy, ox) {
                            dxp[i] += dyp[oy * g.ow + ox];
                        }
                    }
                }
            });
        dx
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "cxr-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(l.dims())?;
        let shape = Shape::from((l.dims()[0], l.dims()[1], g.oh, g.ow));
        dispatch!(s, |T| Ok((
            storage(self.forward::<T>(slice(s, l, "max_pool2d input")?, &g)),
            shape
        )))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(
            &grad.contiguous()?,
            &MaxPoolBwd(*self),
        )?))
    }
}

/// dx from (x, dy).
struct MaxPoolBwd(MaxPool);

impl CustomOp2 for MaxPoolBwd {
    fn name(&self) -> &'static str {
        "cxr-max-pool2d-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0.geom(l1.dims())?;
        if l2.dims() != [l1.dims()[0], l1.dims()[1], g.oh, g.ow] {
            candle_core::bail!(
                "max_pool2d backward: gradient {:?} for input {:?}",
                l2.dims(),
                l1.dims()
            );
        }
        dispatch!(s1, |T| {
            let dx = self.0.backward::<T>(
                slice(s1, l1, "max_pool2d input")?,
                slice(s2, l2, "max_pool2d output gradient")?,
                &g,
            );
            Ok((storage(dx), l1.shape().clone()))
        })
    }
}
