//! Convolution as custom candle ops on CPU: forward, input gradient and weight gradient.
//!
//! Layout: x [N, C, H, W], w [O, C, KH, KW], y [N, O, OH, OW], all contiguous row-major. With R = C*KH*KW and
//! P = OH*OW, per image `y[n] (O x P) = w (O x R) . col[n] (R x P)` where `col` is the im2col matrix.
//! - 1x1, stride 1, no padding: `col[n]` is `x[n]` itself, no copy.
//! - 3x3, stride 1, 64+ channels in and out: the forward goes to Winograd F(2x2, 3x3) (`crate::winograd`).
//! - otherwise `col` is built in tiles of whole output rows, sized to stay in L2, and multiplied tile by tile.
//!
//! Every pass multiplies through the `gemm` crate (candle's own GEMM). A hand-written AVX2/FMA micro-kernel
//! with a fused epilogue was tried and removed: on idle cores it ran ResNet50 inference 30–45 % slower
//! (docs/PERFORMANCE.md).
//!
//! Work is split into (image, tile) jobs over rayon, each with a single-threaded GEMM, so that the 2 cores never
//! synchronise inside a GEMM. In the forward pass each job also adds the bias and residual and applies the ReLU to
//! its own tile while it is still in cache. The input gradient is tiled by input channels (disjoint writes), the weight gradient
//! by images with one accumulator per thread.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::elem::{Elem, SendPtr, gemm, slice, storage, written_by};

/// Bytes of im2col tile a job aims for: fits the 1 MiB L2 of this machine with the GEMM's packing buffers.
const TILE_BYTES: usize = 384 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub dil: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    pub(crate) fn new(
        xd: &[usize],
        wd: &[usize],
        stride: usize,
        pad: usize,
        dil: usize,
    ) -> Result<Self> {
        let (&[n, c, h, w], &[o, wc, kh, kw]) = (xd, wd) else {
            candle_core::bail!("conv2d: input {xd:?} and weight {wd:?} must both be 4-d");
        };
        if wc != c {
            candle_core::bail!("conv2d: input {xd:?} has {c} channels, weight {wd:?} expects {wc}");
        }
        if stride == 0 || dil == 0 {
            candle_core::bail!("conv2d: stride {stride} and dilation {dil} must be positive");
        }
        let ekh = dil * (kh - 1) + 1;
        let ekw = dil * (kw - 1) + 1;
        if h + 2 * pad < ekh || w + 2 * pad < ekw {
            candle_core::bail!(
                "conv2d: input {xd:?} (padding {pad}) smaller than the kernel {wd:?}"
            );
        }
        Ok(Self {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            stride,
            pad,
            dil,
            oh: (h + 2 * pad - ekh) / stride + 1,
            ow: (w + 2 * pad - ekw) / stride + 1,
        })
    }

    fn r(&self) -> usize {
        self.c * self.kh * self.kw
    }
    fn p(&self) -> usize {
        self.oh * self.ow
    }
    fn hw(&self) -> usize {
        self.h * self.w
    }
    /// 1x1, stride 1, no padding: the input image is its own im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    fn out_shape(&self) -> Shape {
        Shape::from((self.n, self.o, self.oh, self.ow))
    }
    /// Output rows per im2col tile: about TILE_BYTES of columns, and enough tiles to keep every thread busy.
    fn tile_rows<T>(&self) -> usize {
        let row_bytes = self.r() * self.ow * std::mem::size_of::<T>();
        let mut rows = (TILE_BYTES / row_bytes.max(1)).clamp(1, self.oh);
        let threads = rayon::current_num_threads();
        let tiles = self.oh.div_ceil(rows);
        if self.n * tiles < 2 * threads {
            let want = (2 * threads).div_ceil(self.n);
            rows = self.oh.div_ceil(want).max(1);
        }
        rows
    }
}

/// Writes the im2col rows (ci, ki, kj) for output rows `oy0..oy1` of image `x` into `col` (R x T, T = rows*OW).
fn im2col<T: Elem>(g: &Geom, x: &[T], oy0: usize, oy1: usize, col: &mut [T]) {
    let t = (oy1 - oy0) * g.ow;
    let mut r = 0;
    for ci in 0..g.c {
        let plane = &x[ci * g.hw()..(ci + 1) * g.hw()];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let dst = &mut col[r * t..(r + 1) * t];
                let dx = (kj * g.dil) as isize - g.pad as isize;
                // Valid output columns: 0 <= ox*s + dx < W.
                let ox_lo = if dx >= 0 {
                    0
                } else {
                    ((-dx) as usize).div_ceil(g.stride)
                };
                let ox_hi = if (g.w as isize) <= dx {
                    0
                } else {
                    ((g.w as isize - dx) as usize).div_ceil(g.stride).min(g.ow)
                };
                for (row, oy) in (oy0..oy1).enumerate() {
                    let d = &mut dst[row * g.ow..(row + 1) * g.ow];
                    let iy = (oy * g.stride + ki * g.dil) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize || ox_lo >= ox_hi {
                        d.fill(T::ZERO);
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    d[..ox_lo].fill(T::ZERO);
                    d[ox_hi..].fill(T::ZERO);
                    if g.stride == 1 {
                        let s0 = (ox_lo as isize + dx) as usize;
                        d[ox_lo..ox_hi].copy_from_slice(&src[s0..s0 + ox_hi - ox_lo]);
                    } else {
                        for ox in ox_lo..ox_hi {
                            d[ox] = src[(ox as isize * g.stride as isize + dx) as usize];
                        }
                    }
                }
                r += 1;
            }
        }
    }
}

/// Scatter-adds the im2col-shaped gradient `dcol` (rows of channels `c0..c1`, all P columns) into `dx` (the planes
/// of those channels of one image).
fn col2im<T: Elem>(g: &Geom, dcol: &[T], c0: usize, c1: usize, dx: &mut [T]) {
    let p = g.p();
    let mut r = 0;
    for ci in c0..c1 {
        let plane = &mut dx[(ci - c0) * g.hw()..(ci - c0 + 1) * g.hw()];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let src = &dcol[r * p..(r + 1) * p];
                let dxo = (kj * g.dil) as isize - g.pad as isize;
                let ox_lo = if dxo >= 0 {
                    0
                } else {
                    ((-dxo) as usize).div_ceil(g.stride)
                };
                let ox_hi = if (g.w as isize) <= dxo {
                    0
                } else {
                    ((g.w as isize - dxo) as usize).div_ceil(g.stride).min(g.ow)
                };
                for oy in 0..g.oh {
                    let iy = (oy * g.stride + ki * g.dil) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize || ox_lo >= ox_hi {
                        continue;
                    }
                    let s = &src[oy * g.ow..(oy + 1) * g.ow];
                    let d = &mut plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    if g.stride == 1 {
                        let d0 = (ox_lo as isize + dxo) as usize;
                        for (a, b) in d[d0..d0 + ox_hi - ox_lo].iter_mut().zip(&s[ox_lo..ox_hi]) {
                            *a += *b;
                        }
                    } else {
                        for ox in ox_lo..ox_hi {
                            d[(ox as isize * g.stride as isize + dxo) as usize] += s[ox];
                        }
                    }
                }
                r += 1;
            }
        }
    }
}

/// y = relu?(conv(x, w) + bias[o] + residual), NCHW, through the `gemm` crate. Each job multiplies its tile of
/// output columns and finishes it (bias, residual, ReLU) while the tile is still in cache: the output is written
/// once, with no bias pre-fill and no separate epilogue pass over the whole activation. The bias is added to the
/// finished dot product; the pre-fill added the partial sums to it, so results differ in rounding when the
/// reduction spans several of the GEMM's blocks.
pub(crate) fn forward_fused<T: Elem>(
    g: &Geom,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    residual: Option<&[T]>,
    relu: bool,
    winograd_u: Option<&[T]>,
) -> Vec<T> {
    if crate::winograd::applies(g) {
        return crate::winograd::forward(g, x, w, winograd_u, bias, residual, relu);
    }
    let (p, o) = (g.p(), g.o);
    // SAFETY: the jobs below cover every (image, column) region of the output, and each job's GEMM writes its
    // region (without reading it) before the epilogue reads it.
    unsafe {
        written_by(g.n * o * p, |y| {
            forward_into(g, x, w, bias, residual, relu, SendPtr(y))
        })
    }
}

/// The im2col / pointwise body of [`forward_fused`], writing every element of the output at `yp`.
fn forward_into<T: Elem>(
    g: &Geom,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    residual: Option<&[T]>,
    relu: bool,
    yp: SendPtr<T>,
) {
    let (r, p, o) = (g.r(), g.p(), g.o);
    // Columns c0..c0+len of image n, every output channel: the region one job owns.
    let finish = |n: usize, c0: usize, len: usize| {
        if bias.is_none() && residual.is_none() && !relu {
            return;
        }
        for oc in 0..o {
            let at = n * o * p + oc * p + c0;
            // SAFETY: only the job that owns (n, c0..c0 + len) touches these elements, and they are in bounds.
            let row = unsafe { std::slice::from_raw_parts_mut(yp.get().add(at), len) };
            if let Some(b) = bias {
                let b = b[oc];
                for v in row.iter_mut() {
                    *v += b;
                }
            }
            if let Some(res) = residual {
                for (v, r) in row.iter_mut().zip(&res[at..at + len]) {
                    *v += *r;
                }
            }
            if relu {
                for v in row.iter_mut() {
                    if (*v).partial_cmp(&T::ZERO) != Some(std::cmp::Ordering::Greater) {
                        *v = T::ZERO;
                    }
                }
            }
        }
    };
    if g.is_pointwise() {
        // Column tiles of each image, plain GEMM on the input.
        let tiles = (2 * rayon::current_num_threads()).div_ceil(g.n).max(1);
        let tcols = p.div_ceil(tiles).max(1);
        let jobs: Vec<(usize, usize)> = (0..g.n)
            .flat_map(|n| (0..p).step_by(tcols).map(move |p0| (n, p0)))
            .collect();
        jobs.par_iter().for_each(|&(n, p0)| {
            let tc = tcols.min(p - p0);
            // SAFETY: job (n, p0) writes columns p0..p0+tc of image n only; all reads are in bounds.
            unsafe {
                gemm(
                    o,
                    tc,
                    r,
                    yp.get().add(n * o * p + p0),
                    p,
                    1,
                    false,
                    w.as_ptr(),
                    r,
                    1,
                    x.as_ptr().add(n * g.c * g.hw() + p0),
                    g.hw(),
                    1,
                    Parallelism::None,
                )
            };
            finish(n, p0, tc);
        });
        return;
    }
    let rows = g.tile_rows::<T>();
    let jobs: Vec<(usize, usize)> = (0..g.n)
        .flat_map(|n| (0..g.oh).step_by(rows).map(move |oy| (n, oy)))
        .collect();
    jobs.par_iter()
        .for_each_init(Vec::new, |col: &mut Vec<T>, &(n, oy0)| {
            let oy1 = (oy0 + rows).min(g.oh);
            let t = (oy1 - oy0) * g.ow;
            col.resize(r * t, T::ZERO);
            im2col(
                g,
                &x[n * g.c * g.hw()..(n + 1) * g.c * g.hw()],
                oy0,
                oy1,
                col,
            );
            // SAFETY: job (n, oy0) writes output columns oy0*OW..oy1*OW of image n only.
            unsafe {
                gemm(
                    o,
                    t,
                    r,
                    yp.get().add(n * o * p + oy0 * g.ow),
                    p,
                    1,
                    false,
                    w.as_ptr(),
                    r,
                    1,
                    col.as_ptr(),
                    t,
                    1,
                    Parallelism::None,
                )
            };
            finish(n, oy0 * g.ow, t);
        });
}

/// The input gradient of a 3x3 stride-1 convolution with padding p <= 2 is itself one: dy convolved with the
/// weight flipped in space and with its channel axes swapped, padding 2 - p, which gives back the input's size.
/// It then takes the Winograd forward; None when that path does not take it.
fn backward_input_winograd<T: Elem>(g: &Geom, dy: &[T], w: &[T]) -> Option<Vec<T>> {
    if !(g.kh == 3 && g.kw == 3 && g.stride == 1 && g.dil == 1 && g.pad <= 2) {
        return None;
    }
    let gt = Geom::new(&[g.n, g.o, g.oh, g.ow], &[g.c, g.o, 3, 3], 1, 2 - g.pad, 1).ok()?;
    if !crate::winograd::applies(&gt) || (gt.oh, gt.ow) != (g.h, g.w) {
        return None;
    }
    let mut wt = vec![T::ZERO; w.len()];
    for oc in 0..g.o {
        for ci in 0..g.c {
            let src = &w[(oc * g.c + ci) * 9..(oc * g.c + ci + 1) * 9];
            let dst = &mut wt[(ci * g.o + oc) * 9..(ci * g.o + oc + 1) * 9];
            for (k, d) in dst.iter_mut().enumerate() {
                *d = src[8 - k];
            }
        }
    }
    Some(crate::winograd::forward(
        &gt, dy, &wt, None, None, None, false,
    ))
}

/// dx = conv^T(dy, w): `dcol = w^T . dy[n]` by channel blocks, then col2im.
pub(crate) fn backward_input<T: Elem>(g: &Geom, dy: &[T], w: &[T]) -> Vec<T> {
    if let Some(dx) = backward_input_winograd(g, dy, w) {
        return dx;
    }
    let (r, p, o, hw) = (g.r(), g.p(), g.o, g.hw());
    let kk = g.kh * g.kw;
    let mut dx = vec![T::ZERO; g.n * g.c * hw];
    let dxp = SendPtr(dx.as_mut_ptr());
    if g.is_pointwise() {
        let tiles = (2 * rayon::current_num_threads()).div_ceil(g.n).max(1);
        let tcols = p.div_ceil(tiles).max(1);
        let jobs: Vec<(usize, usize)> = (0..g.n)
            .flat_map(|n| (0..p).step_by(tcols).map(move |p0| (n, p0)))
            .collect();
        jobs.par_iter().for_each(|&(n, p0)| {
            let tc = tcols.min(p - p0);
            // SAFETY: job (n, p0) writes columns p0..p0+tc of dx[n] only. w^T: rows stride 1, columns stride R.
            unsafe {
                gemm(
                    g.c,
                    tc,
                    o,
                    dxp.get().add(n * g.c * hw + p0),
                    hw,
                    1,
                    false,
                    w.as_ptr(),
                    1,
                    r,
                    dy.as_ptr().add(n * o * p + p0),
                    p,
                    1,
                    Parallelism::None,
                )
            };
        });
        return dx;
    }
    // Channel blocks whose dcol (cb*KK x P) stays around TILE_BYTES, at least 2 jobs per thread.
    let per_c = kk * p * std::mem::size_of::<T>();
    let mut cb = (TILE_BYTES / per_c.max(1)).clamp(1, g.c);
    let threads = rayon::current_num_threads();
    if g.n * g.c.div_ceil(cb) < 2 * threads {
        cb = g.c.div_ceil((2 * threads).div_ceil(g.n)).max(1);
    }
    let jobs: Vec<(usize, usize)> = (0..g.n)
        .flat_map(|n| (0..g.c).step_by(cb).map(move |c0| (n, c0)))
        .collect();
    jobs.par_iter()
        .for_each_init(Vec::new, |dcol: &mut Vec<T>, &(n, c0)| {
            let c1 = (c0 + cb).min(g.c);
            let rr = (c1 - c0) * kk;
            dcol.resize(rr * p, T::ZERO);
            // SAFETY: reads w^T rows c0*KK..c1*KK and dy[n]; writes the job's own buffer.
            unsafe {
                gemm(
                    rr,
                    p,
                    o,
                    dcol.as_mut_ptr(),
                    p,
                    1,
                    false,
                    w.as_ptr().add(c0 * kk),
                    1,
                    r,
                    dy.as_ptr().add(n * o * p),
                    p,
                    1,
                    Parallelism::None,
                )
            };
            // SAFETY: job (n, c0) owns the planes c0..c1 of dx[n].
            let dst = unsafe {
                std::slice::from_raw_parts_mut(dxp.get().add((n * g.c + c0) * hw), (c1 - c0) * hw)
            };
            col2im(g, dcol, c0, c1, dst);
        });
    dx
}

/// dw = sum_n dy[n] . col[n]^T, one accumulator per thread over contiguous (image, tile) jobs.
pub(crate) fn backward_weight<T: Elem>(g: &Geom, x: &[T], dy: &[T]) -> Vec<T> {
    let (r, p, o, hw) = (g.r(), g.p(), g.o, g.hw());
    let (rows, jobs): (usize, Vec<(usize, usize)>) = if g.is_pointwise() {
        (g.oh, (0..g.n).map(|n| (n, 0)).collect())
    } else {
        let rows = g.tile_rows::<T>();
        let jobs = (0..g.n)
            .flat_map(|n| (0..g.oh).step_by(rows).map(move |oy| (n, oy)))
            .collect();
        (rows, jobs)
    };
    let threads = rayon::current_num_threads().max(1).min(jobs.len().max(1));
    let per = jobs.len().div_ceil(threads);
    let partials: Vec<Vec<T>> = jobs
        .par_chunks(per.max(1))
        .map(|chunk| {
            let mut dw = vec![T::ZERO; o * r];
            let mut col: Vec<T> = Vec::new();
            for (i, &(n, oy0)) in chunk.iter().enumerate() {
                let oy1 = (oy0 + rows).min(g.oh);
                let t = (oy1 - oy0) * g.ow;
                let xn = &x[n * g.c * hw..(n + 1) * g.c * hw];
                let (rhs, rhs_stride): (*const T, usize) = if g.is_pointwise() {
                    (xn.as_ptr(), hw)
                } else {
                    col.resize(r * t, T::ZERO);
                    im2col(g, xn, oy0, oy1, &mut col);
                    (col.as_ptr(), t)
                };
                // SAFETY: dw (O x R) += dy[n][:, tile] (O x T) . col^T (T x R); col^T has row stride 1, column
                // stride T.
                unsafe {
                    gemm(
                        o,
                        r,
                        t,
                        dw.as_mut_ptr(),
                        r,
                        1,
                        i > 0,
                        dy.as_ptr().add(n * o * p + oy0 * g.ow),
                        p,
                        1,
                        rhs,
                        1,
                        rhs_stride,
                        Parallelism::None,
                    )
                };
            }
            dw
        })
        .collect();
    let mut it = partials.into_iter();
    let mut dw = it.next().unwrap_or_else(|| vec![T::ZERO; o * r]);
    for part in it {
        for (a, b) in dw.iter_mut().zip(&part) {
            *a += *b;
        }
    }
    dw
}

/// Trainable convolution: CustomOp2(x, w) or CustomOp3(x, w, b).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvOp {
    pub stride: usize,
    pub pad: usize,
    pub dil: usize,
}

impl ConvOp {
    fn geom(&self, x: &Layout, w: &Layout) -> Result<Geom> {
        Geom::new(x.dims(), w.dims(), self.stride, self.pad, self.dil)
    }

    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
        with_bias: bool,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(w, &BwdInput(*self, x.dims4()?))?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(x.apply_op2_no_bwd(&grad, &BwdWeight(*self, w.dims4()?))?)
        } else {
            None
        };
        let db = if with_bias {
            Some(crate::fused::channel_sum(&grad)?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "cxr-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(l1, l2)?;
        dispatch!(s1, |T| {
            let y = forward_fused::<T>(
                &g,
                slice(s1, l1, "conv2d input")?,
                slice(s2, l2, "conv2d weight")?,
                None,
                None,
                false,
                None,
            );
            Ok((storage(y), g.out_shape()))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, w, grad, false)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "cxr-conv2d-bias"
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
        let g = self.geom(l1, l2)?;
        if l3.dims() != [g.o] {
            candle_core::bail!(
                "conv2d: bias {:?} does not match {} output channels",
                l3.dims(),
                g.o
            );
        }
        dispatch!(s1, |T| {
            let y = forward_fused::<T>(
                &g,
                slice(s1, l1, "conv2d input")?,
                slice(s2, l2, "conv2d weight")?,
                Some(slice(s3, l3, "conv2d bias")?),
                None,
                false,
                None,
            );
            Ok((storage(y), g.out_shape()))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.grads(x, w, grad, b.track_op())?;
        Ok((dx, dw, db))
    }
}

/// Frozen convolution: CustomOp1(x) holding the (detached) weight and bias; its backward gives dx only.
pub(crate) struct FrozenConvOp {
    pub op: ConvOp,
    pub w: Tensor,
    pub b: Option<Tensor>,
}

impl CustomOp1 for FrozenConvOp {
    fn name(&self) -> &'static str {
        "cxr-conv2d-frozen"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let (ws, wl) = self.w.storage_and_layout();
        let candle_core::Storage::Cpu(ws) = &*ws else {
            candle_core::bail!("conv2d_frozen: the weight is not on the CPU");
        };
        let g = Geom::new(
            l1.dims(),
            wl.dims(),
            self.op.stride,
            self.op.pad,
            self.op.dil,
        )?;
        let bguard = self.b.as_ref().map(|b| b.storage_and_layout());
        dispatch!(s1, |T| {
            let bias: Option<&[T]> = match &bguard {
                Some((bs, bl)) => {
                    let candle_core::Storage::Cpu(bs) = &**bs else {
                        candle_core::bail!("conv2d_frozen: the bias is not on the CPU");
                    };
                    if bl.dims() != [g.o] {
                        candle_core::bail!(
                            "conv2d_frozen: bias {:?} does not match {} output channels",
                            bl.dims(),
                            g.o
                        );
                    }
                    Some(slice(bs, bl, "conv2d_frozen bias")?)
                }
                None => None,
            };
            let y = forward_fused::<T>(
                &g,
                slice(s1, l1, "conv2d_frozen input")?,
                slice(ws, wl, "conv2d_frozen weight")?,
                bias,
                None,
                false,
                None,
            );
            Ok((storage(y), g.out_shape()))
        })
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(grad.apply_op2_no_bwd(
            &self.w,
            &BwdInput(self.op, x.dims4()?),
        )?))
    }
}

/// dx from (dy, w); carries the input dims (the output size alone does not determine them).
struct BwdInput(ConvOp, (usize, usize, usize, usize));

impl CustomOp2 for BwdInput {
    fn name(&self) -> &'static str {
        "cxr-conv2d-bwd-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = self.1;
        let g = Geom::new(
            &[n, c, h, w],
            l2.dims(),
            self.0.stride,
            self.0.pad,
            self.0.dil,
        )?;
        if l1.dims() != g.out_shape().dims() {
            candle_core::bail!(
                "conv2d backward: gradient {:?} for output {:?}",
                l1.dims(),
                g.out_shape()
            );
        }
        dispatch!(s1, |T| {
            let dx = backward_input::<T>(
                &g,
                slice(s1, l1, "conv2d output gradient")?,
                slice(s2, l2, "conv2d weight")?,
            );
            Ok((storage(dx), Shape::from(self.1)))
        })
    }
}

/// dw from (x, dy); carries the weight dims.
struct BwdWeight(ConvOp, (usize, usize, usize, usize));

impl CustomOp2 for BwdWeight {
    fn name(&self) -> &'static str {
        "cxr-conv2d-bwd-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (o, c, kh, kw) = self.1;
        let g = Geom::new(
            l1.dims(),
            &[o, c, kh, kw],
            self.0.stride,
            self.0.pad,
            self.0.dil,
        )?;
        if l2.dims() != g.out_shape().dims() {
            candle_core::bail!(
                "conv2d backward: gradient {:?} for output {:?}",
                l2.dims(),
                g.out_shape()
            );
        }
        dispatch!(s1, |T| {
            let dw = backward_weight::<T>(
                &g,
                slice(s1, l1, "conv2d input")?,
                slice(s2, l2, "conv2d output gradient")?,
            );
            Ok((storage(dw), Shape::from(self.1)))
        })
    }
}

/// Inference convolution with the fused epilogue: CustomOp1(x) holding the weight, bias and residual; applied
/// without a backward (the public function falls back to tracked ops when a gradient is wanted).
pub(crate) struct FusedInferOp {
    pub op: ConvOp,
    pub w: Tensor,
    pub b: Option<Tensor>,
    pub res: Option<Tensor>,
    pub relu: bool,
    /// The weight transformed for the Winograd path, computed once by the caller ([`crate::InferenceWeight`]).
    pub winograd_u: Option<Tensor>,
}

impl CustomOp1 for FusedInferOp {
    fn name(&self) -> &'static str {
        "cxr-conv2d-bias-act"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let (ws, wl) = self.w.storage_and_layout();
        let candle_core::Storage::Cpu(ws) = &*ws else {
            candle_core::bail!("conv2d_bias_act: the weight is not on the CPU");
        };
        let g = Geom::new(
            l1.dims(),
            wl.dims(),
            self.op.stride,
            self.op.pad,
            self.op.dil,
        )?;
        let bguard = self.b.as_ref().map(|b| b.storage_and_layout());
        let rguard = self.res.as_ref().map(|r| r.storage_and_layout());
        let uguard = self.winograd_u.as_ref().map(|u| u.storage_and_layout());
        dispatch!(s1, |T| {
            let winograd_u: Option<&[T]> = match &uguard {
                Some((us, ul)) => {
                    let candle_core::Storage::Cpu(us) = &**us else {
                        candle_core::bail!(
                            "conv2d_bias_act: the Winograd weight is not on the CPU"
                        );
                    };
                    if ul.dims() != [16, g.o, g.c] {
                        candle_core::bail!(
                            "conv2d_bias_act: Winograd weight {:?} does not match [16, {}, {}]",
                            ul.dims(),
                            g.o,
                            g.c
                        );
                    }
                    Some(slice(us, ul, "conv2d_bias_act Winograd weight")?)
                }
                None => None,
            };
            let bias: Option<&[T]> = match &bguard {
                Some((bs, bl)) => {
                    let candle_core::Storage::Cpu(bs) = &**bs else {
                        candle_core::bail!("conv2d_bias_act: the bias is not on the CPU");
                    };
                    if bl.dims() != [g.o] {
                        candle_core::bail!(
                            "conv2d_bias_act: bias {:?} does not match {} output channels",
                            bl.dims(),
                            g.o
                        );
                    }
                    Some(slice(bs, bl, "conv2d_bias_act bias")?)
                }
                None => None,
            };
            let residual: Option<&[T]> = match &rguard {
                Some((rs, rl)) => {
                    let candle_core::Storage::Cpu(rs) = &**rs else {
                        candle_core::bail!("conv2d_bias_act: the residual is not on the CPU");
                    };
                    if rl.dims() != g.out_shape().dims() {
                        candle_core::bail!(
                            "conv2d_bias_act: residual {:?} does not match the output {:?}",
                            rl.dims(),
                            g.out_shape()
                        );
                    }
                    Some(slice(rs, rl, "conv2d_bias_act residual")?)
                }
                None => None,
            };
            let y = forward_fused::<T>(
                &g,
                slice(s1, l1, "conv2d_bias_act input")?,
                slice(ws, wl, "conv2d_bias_act weight")?,
                bias,
                residual,
                self.relu,
                winograd_u,
            );
            Ok((storage(y), g.out_shape()))
        })
    }
}
