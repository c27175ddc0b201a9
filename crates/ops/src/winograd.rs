//! Winograd F(2x2, 3x3) forward convolution for 3x3, stride-1, undilated layers (Lavin & Gray, 2016).
//!
//! Each 2x2 block of outputs ("tile") comes from a 4x4 input patch. With the input patches transformed
//! (`V = Bᵀ d B`), the weights transformed (`U = G g Gᵀ`) and the products transformed back (`Y = Aᵀ M A`),
//! the 16 elementwise products `M[ξ] = U[ξ] . V[ξ]` over channels are 16 GEMMs (O x C) . (C x tiles). That is
//! 16 multiply-adds per tile and channel pair instead of 36: 2.25x fewer in the GEMMs, which carry the cost,
//! for a few additions per element in the transforms. The rounding differs from a direct convolution by a few
//! ulps of the partial sums (the transforms use only ±1 and ½), far inside the tests' tolerances.
//!
//! Tiles are numbered across images (tile row `q = n * TH + ty`), so the small maps of deep layers still make
//! GEMMs with many columns. Tiles go in blocks sized so their transformed inputs and products stay near the
//! caches; within a block the three phases run in parallel: input transform by channel, GEMMs by ξ, output
//! transform (with bias, residual and ReLU) by output channel.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::conv::Geom;
use crate::elem::{Elem, SendPtr, gemm, written_by};

/// Bytes of transformed inputs plus products a block aims for.
const BLOCK_BYTES: usize = 8 << 20;

/// Whether the Winograd path takes this convolution: 3x3, stride 1, no dilation, and enough channels for the
/// GEMMs to dominate the transforms. Measured on the UNet's layers: with 16 channels it ran 1.3-1.6x slower than
/// im2col, with 32 about as fast, with 64 and more 1.2-1.5x faster.
pub(crate) fn applies(g: &Geom) -> bool {
    takes(g.o, g.c, g.kh, g.kw, g.stride, g.dil) && enabled()
}

/// [`applies`] from the weight's shape and the stride and dilation alone.
pub(crate) fn takes(o: usize, c: usize, kh: usize, kw: usize, stride: usize, dil: usize) -> bool {
    kh == 3 && kw == 3 && stride == 1 && dil == 1 && c >= 64 && o >= 64
}

static DISABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns the Winograd path on (the default) or off, process-wide: for A/B measurements and for tests that compare
/// it with the im2col path. The environment variable `CXR_OPS_NO_WINOGRAD=1` turns it off for good.
pub fn set_winograd(on: bool) {
    DISABLED.store(!on, std::sync::atomic::Ordering::Relaxed);
}

fn enabled() -> bool {
    static ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let env_off =
        *ENV.get_or_init(|| std::env::var_os("CXR_OPS_NO_WINOGRAD").is_some_and(|v| v == "1"));
    !env_off && !DISABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// `U[ξ][o][c]` (16 x O x C) from `w` [O, C, 3, 3]: `G g Gᵀ` with G = [[1,0,0],[½,½,½],[½,-½,½],[0,0,1]].
pub(crate) fn transform_weights<T: Elem>(o: usize, c: usize, w: &[T]) -> Vec<T> {
    let oc = o * c;
    let mut u = vec![T::ZERO; 16 * oc];
    let half = T::from_f64(0.5);
    let up = SendPtr(u.as_mut_ptr());
    // Chunks of (o, c) pairs; each writes its own range of every ξ plane.
    let chunk = oc.div_ceil(4 * rayon::current_num_threads()).max(256);
    (0..oc.div_ceil(chunk)).into_par_iter().for_each(|b| {
        let (i0, i1) = (b * chunk, ((b + 1) * chunk).min(oc));
        for i in i0..i1 {
            let g = &w[i * 9..i * 9 + 9];
            // Rows of G g (4 x 3).
            let mut gg = [[T::ZERO; 3]; 4];
            for j in 0..3 {
                let (a, b, cc) = (g[j], g[3 + j], g[6 + j]);
                gg[0][j] = a;
                gg[1][j] = (a + b + cc) * half;
                gg[2][j] = (a - b + cc) * half;
                gg[3][j] = cc;
            }
            for (r, row) in gg.iter().enumerate() {
                let (a, b, cc) = (row[0], row[1], row[2]);
                let vals = [a, (a + b + cc) * half, (a - b + cc) * half, cc];
                for (j, v) in vals.into_iter().enumerate() {
                    // SAFETY: (4r + j, i) is inside U, and only this chunk writes index i of any plane.
                    unsafe { *up.get().add((4 * r + j) * oc + i) = v };
                }
            }
        }
    });
    u
}

/// y = relu?(conv3x3(x, w) + bias[o] + residual), NCHW, stride 1, padding `g.pad`; the result [N, O, OH, OW].
/// `u` is `transform_weights(w)` when the caller has it.
pub(crate) fn forward<T: Elem>(
    g: &Geom,
    x: &[T],
    w: &[T],
    u: Option<&[T]>,
    bias: Option<&[T]>,
    residual: Option<&[T]>,
    relu: bool,
) -> Vec<T> {
    let (c, o) = (g.c, g.o);
    // The caller's precomputed transform, or one made now (a weight that changes between calls).
    let computed;
    let u = match u {
        Some(u) => u,
        None => {
            computed = transform_weights(o, c, w);
            &computed[..]
        }
    };
    // SAFETY: the blocks cover every tile row of every image, and each block's output transform writes every
    // element of its rows in every output channel before reading them back for the residual and ReLU.
    unsafe {
        written_by(g.n * o * g.oh * g.ow, |y| {
            blocks(g, x, u, bias, residual, relu, SendPtr(y))
        })
    }
}

/// The tile blocks of [`forward`], one after the other, writing the output at `yp`.
fn blocks<T: Elem>(
    g: &Geom,
    x: &[T],
    u: &[T],
    bias: Option<&[T]>,
    residual: Option<&[T]>,
    relu: bool,
    yp: SendPtr<T>,
) {
    let (c, o) = (g.c, g.o);
    let tw = g.ow.div_ceil(2);
    let rows_total = g.n * g.oh.div_ceil(2);
    if rows_total == 0 {
        return;
    }

    // Tile rows per block: about BLOCK_BYTES of V (16 x C x T) and M (16 x O x T).
    let per_tile = 16 * (c + o) * std::mem::size_of::<T>();
    let max_tiles = (BLOCK_BYTES / per_tile).max(tw);
    let rows_per_block = (max_tiles / tw).clamp(1, rows_total);
    let blocks = rows_total.div_ceil(rows_per_block);
    let rows_per_block = rows_total.div_ceil(blocks);

    let mut v: Vec<T> = Vec::new();
    let mut m: Vec<T> = Vec::new();
    for q0 in (0..rows_total).step_by(rows_per_block) {
        let q1 = (q0 + rows_per_block).min(rows_total);
        let t = (q1 - q0) * tw;
        v.resize(16 * c * t, T::ZERO);
        m.resize(16 * o * t, T::ZERO);
        let vp = SendPtr(v.as_mut_ptr());
        (0..c).into_par_iter().for_each_init(
            || vec![T::ZERO; 4 * tw + 4 + 16 * tw],
            |scratch, ci| {
                // SAFETY: channel ci writes V[ξ][ci][0..t] for every ξ, disjoint from other channels.
                unsafe { input_transform(g, x, ci, q0, q1, tw, scratch, vp, c, t) }
            },
        );
        let mp = SendPtr(m.as_mut_ptr());
        let (up, vp) = (SendPtr(u.as_ptr() as *mut T), SendPtr(v.as_ptr() as *mut T));
        (0..16).into_par_iter().for_each(|xi| {
            // SAFETY: plane ξ of M is written by this job only; U and V are read-only here.
            unsafe {
                gemm(
                    o,
                    t,
                    c,
                    mp.get().add(xi * o * t),
                    t,
                    1,
                    false,
                    up.get().add(xi * o * c),
                    c,
                    1,
                    vp.get().add(xi * c * t),
                    t,
                    1,
                    Parallelism::None,
                )
            }
        });
        let m = &m;
        (0..o).into_par_iter().for_each_init(
            || vec![T::ZERO; 4 * t],
            |scratch, oc| {
                // SAFETY: output channel oc writes only y[n][oc] planes of the block's tile rows.
                unsafe {
                    output_transform(g, m, oc, q0, q1, tw, t, bias, residual, relu, scratch, yp)
                }
            },
        );
    }
}

/// Input row `iy` of plane `plane`, transformed along the row for every tile of the row: `rt[j][tx]` (4 x TW)
/// from the patch columns `d_k = row[2tx + k - pad]`: d0 - d2, d1 + d2, d2 - d1, d1 - d3.
fn row_transform<T: Elem>(
    g: &Geom,
    plane: &[T],
    iy: isize,
    tw: usize,
    prow: &mut [T],
    eo: &mut [T],
    rt: &mut [T],
) {
    if iy < 0 || iy >= g.h as isize {
        rt.fill(T::ZERO);
        return;
    }
    // The row shifted by the padding, zero outside the image; 2TW + 2 >= W + 2 * pad by the output size.
    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
    prow[..g.pad].fill(T::ZERO);
    prow[g.pad..g.pad + g.w].copy_from_slice(src);
    prow[g.pad + g.w..].fill(T::ZERO);
    // Even and odd columns apart, so that every term below is a contiguous slice.
    let (ev, od) = eo.split_at_mut(tw + 1);
    for (k, (e, o)) in ev.iter_mut().zip(od.iter_mut()).enumerate() {
        *e = prow[2 * k];
        *o = prow[2 * k + 1];
    }
    let (e0, e1, o0, o1) = (&ev[..tw], &ev[1..tw + 1], &od[..tw], &od[1..tw + 1]);
    let (r0, rest) = rt.split_at_mut(tw);
    let (r1, rest) = rest.split_at_mut(tw);
    let (r2, r3) = rest.split_at_mut(tw);
    for i in 0..tw {
        r0[i] = e0[i] - e1[i];
        r1[i] = o0[i] + e1[i];
        r2[i] = e1[i] - o0[i];
        r3[i] = o0[i] - o1[i];
    }
}

/// Writes `V[ξ][ci][..]` for the tiles of rows q0..q1: `Bᵀ d B` with Bᵀ = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],
/// [0,1,0,-1]], first along each input row (4 values per tile), then down the 4 rows. Consecutive tile rows
/// share two input rows, whose row transforms are kept.
///
/// # Safety
/// `vp` must point to a 16 x C x T buffer; no other thread may write channel `ci` of it.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
unsafe fn input_transform<T: Elem>(
    g: &Geom,
    x: &[T],
    ci: usize,
    q0: usize,
    q1: usize,
    tw: usize,
    scratch: &mut [T],
    vp: SendPtr<T>,
    c: usize,
    t: usize,
) {
    let (prow, rest) = scratch.split_at_mut(2 * tw + 2);
    let (eo, rest) = rest.split_at_mut(2 * tw + 2);
    // Four row-transformed input rows (4 x TW each), as a ring indexed by input row.
    let (ring, _) = rest.split_at_mut(16 * tw);
    let th = g.oh.div_ceil(2);
    let hw = g.h * g.w;
    let mut held: [Option<(usize, isize)>; 4] = [None; 4];
    for q in q0..q1 {
        let (n, ty) = (q / th, q % th);
        let plane = &x[(n * g.c + ci) * hw..(n * g.c + ci + 1) * hw];
        let mut slot = [0usize; 4];
        for (r, sl) in slot.iter_mut().enumerate() {
            let iy = (2 * ty + r) as isize - g.pad as isize;
            let key = Some((n, iy));
            *sl = match held.iter().position(|h| *h == key) {
                Some(k) => k,
                None => {
                    // Reuse a slot that this tile row does not need.
                    let k = (0..4)
                        .find(|&k| {
                            held[k].is_none_or(|(hn, hy)| {
                                hn != n || hy < 2 * ty as isize - g.pad as isize
                            })
                        })
                        .unwrap_or(r);
                    let rt = &mut ring[k * 4 * tw..(k + 1) * 4 * tw];
                    row_transform(g, plane, iy, tw, prow, eo, rt);
                    held[k] = key;
                    k
                }
            };
        }
        let col0 = (q - q0) * tw;
        for j in 0..4 {
            let row = |r: usize| &ring[(slot[r] * 4 + j) * tw..(slot[r] * 4 + j + 1) * tw];
            let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
            // SAFETY: V[ξ][ci][col0..col0 + tw] is inside the buffer and owned by this channel's job.
            let dst = |xi: usize| unsafe {
                std::slice::from_raw_parts_mut(vp.get().add((xi * c + ci) * t + col0), tw)
            };
            let (v0, v1, v2, v3) = (dst(j), dst(4 + j), dst(8 + j), dst(12 + j));
            for i in 0..tw {
                v0[i] = r0[i] - r2[i];
                v1[i] = r1[i] + r2[i];
                v2[i] = r2[i] - r1[i];
                v3[i] = r1[i] - r3[i];
            }
        }
    }
}

/// `Y = Aᵀ M A` with Aᵀ = [[1,1,1,0],[0,1,-1,-1]] for output channel `oc` over the block's T tiles, then bias,
/// residual and ReLU, written into y.
///
/// # Safety
/// `yp` must point to the N x O x OH x OW output; no other thread may write channel `oc` of these rows.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
unsafe fn output_transform<T: Elem>(
    g: &Geom,
    m: &[T],
    oc: usize,
    q0: usize,
    q1: usize,
    tw: usize,
    t: usize,
    bias: Option<&[T]>,
    residual: Option<&[T]>,
    relu: bool,
    scratch: &mut [T],
    yp: SendPtr<T>,
) {
    let th = g.oh.div_ceil(2);
    let ohw = g.oh * g.ow;
    let b = bias.map_or(T::ZERO, |b| b[oc]);
    let p: [&[T]; 16] = std::array::from_fn(|xi| &m[(xi * g.o + oc) * t..(xi * g.o + oc + 1) * t]);
    // The 2x2 outputs of every tile: y[i][k][tile] in four planes of T.
    let (y00, rest) = scratch.split_at_mut(t);
    let (y01, rest) = rest.split_at_mut(t);
    let (y10, rest) = rest.split_at_mut(t);
    let (y11, _) = rest.split_at_mut(t);
    for i in 0..t {
        let a0 = p[0][i] + p[1][i] + p[2][i];
        let b0 = p[1][i] - p[2][i] - p[3][i];
        let a1 = p[4][i] + p[5][i] + p[6][i];
        let b1 = p[5][i] - p[6][i] - p[7][i];
        let a2 = p[8][i] + p[9][i] + p[10][i];
        let b2 = p[9][i] - p[10][i] - p[11][i];
        let a3 = p[12][i] + p[13][i] + p[14][i];
        let b3 = p[13][i] - p[14][i] - p[15][i];
        y00[i] = a0 + a1 + a2;
        y01[i] = b0 + b1 + b2;
        y10[i] = a1 - a2 - a3;
        y11[i] = b1 - b2 - b3;
    }
    let (y00, y01, y10, y11) = (&*y00, &*y01, &*y10, &*y11);
    for q in q0..q1 {
        let (n, ty) = (q / th, q % th);
        let col0 = (q - q0) * tw;
        for (i, (even, odd)) in [(y00, y01), (y10, y11)].into_iter().enumerate() {
            let oy = 2 * ty + i;
            if oy >= g.oh {
                break;
            }
            let (even, odd) = (&even[col0..col0 + tw], &odd[col0..col0 + tw]);
            let at = (n * g.o + oc) * ohw + oy * g.ow;
            // Row oy of y[n][oc], owned by this output channel's job; written through the pointer first, since
            // the output starts uninitialised.
            let dst = unsafe { yp.get().add(at) };
            for tx in 0..g.ow / 2 {
                // SAFETY: 2tx + 1 < OW.
                unsafe {
                    dst.add(2 * tx).write(even[tx] + b);
                    dst.add(2 * tx + 1).write(odd[tx] + b);
                }
            }
            if g.ow % 2 == 1 {
                // SAFETY: the row's last element.
                unsafe { dst.add(g.ow - 1).write(even[tw - 1] + b) };
            }
            // SAFETY: the whole row is written now.
            let row = unsafe { std::slice::from_raw_parts_mut(dst, g.ow) };
            if let Some(res) = residual {
                for (d, r) in row.iter_mut().zip(&res[at..at + g.ow]) {
                    *d += *r;
                }
            }
            if relu {
                for d in row.iter_mut() {
                    if (*d).partial_cmp(&T::ZERO) != Some(std::cmp::Ordering::Greater) {
                        *d = T::ZERO;
                    }
                }
            }
        }
    }
}
