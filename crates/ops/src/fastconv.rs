//! f32 convolution forward on AVX2/FMA with our own packed GEMM and a fused epilogue (bias, residual, ReLU).
//!
//! Why: the `gemm` crate reaches 50-70 GFLOP/s per core on convolution shapes but re-packs the weight for every
//! call, is inefficient at few columns (a 7x7 map has 49), and leaves bias, residual add and ReLU to separate passes
//! over memory. Here the weight is packed once per call (shared by all jobs), the columns of all images form one
//! column space (a tile may span images, so small maps fill whole tiles), and the epilogue is applied to each
//! 4 x 24 register tile as it is stored, straight into the NCHW output.
//!
//! Layout: y[n, o, p] = sum_r w[o, r] * col[r, (n, p)] with R = C*KH*KW, P = OH*OW. Work is split into jobs of
//! (column range, output-channel range); each job builds its im2col block K-slice by K-slice (`KC` rows) directly
//! in the micro-kernel's packed layout (24-column panels), so the block and each panel stay in L2 and L1.

#[cfg(target_arch = "x86_64")]
use rayon::prelude::*;

use crate::conv::Geom;
#[cfg(target_arch = "x86_64")]
use crate::elem::SendPtr;

/// Rows of the micro-tile (output channels) and its columns (output pixels, 3 AVX vectors).
const MR: usize = 4;
const NR: usize = 24;
/// K-slice: a 24-column panel of it (24 KiB) stays in L1, a 4-row weight panel (4 KiB) streams from L2.
const KC: usize = 256;
/// Output-channel block per pass over a job's panels: its packed weight (MC x KC, 128 KiB) stays in L2.
const MC: usize = 128;
/// Most panels a job holds: its packed K-slice (10 x KC x 24 floats, 240 KiB) stays in L2.
const MAX_PANELS: usize = 10;

/// What the epilogue adds to each output value, in order: bias[o], residual[n, o, p], then ReLU.
#[derive(Clone, Copy, Default)]
pub(crate) struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

/// True when the CPU runs the AVX2/FMA kernel.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// y = epilogue(conv(x, w)), NCHW; `None` when the CPU lacks AVX2/FMA (the caller uses the generic path).
/// The caller has checked the shapes of `x`, `w`, the bias [O] and the residual (y's shape).
pub(crate) fn forward(g: &Geom, x: &[f32], w: &[f32], epi: Epilogue) -> Option<Vec<f32>> {
    if !available() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: AVX2 and FMA were detected above.
        Some(unsafe { forward_avx(g, x, w, epi) })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (g, x, w, epi);
        None
    }
}

/// The packed weight: for each K-slice `kb` (rows kb*KC.., `kc` of them) and 4-row panel `op`, `kc` groups of 4
/// values w[op*4 + i, kb*KC + kk] (zero past O), at offset kb*KC*Opad + op*4*kc.
fn pack_weight(w: &[f32], o: usize, r: usize) -> (Vec<f32>, usize) {
    let opad = o.div_ceil(MR) * MR;
    let mut ap = AP
        .with(|c| c.try_borrow_mut().map(|mut v| std::mem::take(&mut *v)))
        .unwrap_or_default();
    ap.clear();
    ap.resize(r * opad, 0.0);
    for kb in 0..r.div_ceil(KC) {
        let k0 = kb * KC;
        let kc = KC.min(r - k0);
        for op in 0..opad / MR {
            let base = k0 * opad + op * MR * kc;
            for i in 0..MR {
                let oc = op * MR + i;
                if oc >= o {
                    continue;
                }
                let src = &w[oc * r + k0..oc * r + k0 + kc];
                for (kk, &v) in src.iter().enumerate() {
                    ap[base + kk * MR + i] = v;
                }
            }
        }
    }
    (ap, opad)
}

/// Where row `kk` of a K-slice goes in the packed panels: column j at (j / 24) * kc * 24 + kk * 24 + j % 24.
struct PanelRow<'a> {
    bp: &'a mut [f32],
    kc: usize,
    kk: usize,
}

impl PanelRow<'_> {
    /// Writes `src` (or zeros when None, `len` of them) at columns j0.. of the row, split at panel boundaries.
    #[inline]
    fn put(&mut self, mut j: usize, src: Option<&[f32]>, len: usize) {
        let mut done = 0;
        while done < len {
            let (jp, off) = (j / NR, j % NR);
            let n = (NR - off).min(len - done);
            let at = jp * self.kc * NR + self.kk * NR + off;
            let dst = &mut self.bp[at..at + n];
            match src {
                Some(s) => dst.copy_from_slice(&s[done..done + n]),
                None => dst.fill(0.0),
            }
            done += n;
            j += n;
        }
    }
}

/// Row `r` (= ci, ki, kj) of the im2col matrix for the global columns g0..g0+len (column (n, p) is n*P + p),
/// written into the packed panels (columns len..npan*24 zeroed). `gather` is scratch for strided rows.
fn col_row(
    g: &Geom,
    x: &[f32],
    r: usize,
    g0: usize,
    len: usize,
    dst: &mut PanelRow,
    gather: &mut Vec<f32>,
) {
    let kk = g.kh * g.kw;
    let (ci, ki, kj) = (r / kk, (r % kk) / g.kw, r % g.kw);
    let (p, hw) = (g.oh * g.ow, g.h * g.w);
    let pointwise = g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0;
    let g1 = g0 + len;
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
    let mut col = g0;
    while col < g1 {
        let (n, pix) = (col / p, col % p);
        let plane = &x[(n * g.c + ci) * hw..(n * g.c + ci + 1) * hw];
        let j = col - g0;
        if pointwise {
            // The input plane is the row itself.
            let run = (p - pix).min(g1 - col);
            dst.put(j, Some(&plane[pix..pix + run]), run);
            col += run;
            continue;
        }
        let (oy, ox0) = (pix / g.ow, pix % g.ow);
        let run = (g.ow - ox0).min(g1 - col);
        let ox1 = ox0 + run;
        let iy = (oy * g.stride + ki * g.dil) as isize - g.pad as isize;
        let (lo, hi) = (ox_lo.clamp(ox0, ox1), ox_hi.clamp(ox0, ox1));
        if iy < 0 || iy >= g.h as isize || lo >= hi {
            dst.put(j, None, run);
        } else {
            let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
            dst.put(j, None, lo - ox0);
            let s0 = (lo as isize * g.stride as isize + dx) as usize;
            if g.stride == 1 {
                dst.put(j + lo - ox0, Some(&src[s0..s0 + hi - lo]), hi - lo);
            } else {
                gather.clear();
                gather.extend((0..hi - lo).map(|t| src[s0 + t * g.stride]));
                dst.put(j + lo - ox0, Some(gather), hi - lo);
            }
            dst.put(j + hi - ox0, None, ox1 - hi);
        }
        col += run;
    }
    let pad = len.div_ceil(NR) * NR - len;
    dst.put(len, None, pad);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_avx(g: &Geom, x: &[f32], w: &[f32], epi: Epilogue) -> Vec<f32> {
    let (o, r, p) = (g.o, g.c * g.kh * g.kw, g.oh * g.ow);
    let np = g.n * p;
    let mut y = vec![0.0f32; np * o];
    if np == 0 || o == 0 {
        return y;
    }
    let (ap, opad) = pack_weight(w, o, r);
    // Jobs: columns in runs of whole panels, split by output channels when the columns alone give too few jobs.
    let threads = rayon::current_num_threads().max(1);
    let panels = np.div_ceil(NR);
    let want = 4 * threads;
    // Narrower column jobs (down to 2 panels) before output-channel splits, which re-pack the same im2col per job.
    let col_jobs = panels
        .div_ceil(MAX_PANELS)
        .max(want.min(panels.div_ceil(2)))
        .max(1);
    let per_job = panels.div_ceil(col_jobs);
    let col_jobs = panels.div_ceil(per_job);
    let o_split = if col_jobs >= want {
        1
    } else {
        want.div_ceil(col_jobs).min((opad / 128).max(1))
    };
    let o_chunk = opad.div_ceil(o_split).div_ceil(MR) * MR;
    let jobs: Vec<(usize, usize)> = (0..col_jobs)
        .flat_map(|cj| (0..opad).step_by(o_chunk).map(move |o0| (cj, o0)))
        .collect();
    let yp = SendPtr(y.as_mut_ptr());
    let ctx = Ctx {
        g,
        x,
        ap: &ap,
        opad,
        o,
        r,
        p,
        epi,
    };
    jobs.par_iter().for_each(|&(cj, o0)| {
        let g0 = cj * per_job * NR;
        let g1 = ((cj + 1) * per_job * NR).min(np);
        let o1 = (o0 + o_chunk).min(opad);
        with_scratch(|(bp, row, base)| {
            // SAFETY: AVX2/FMA are enabled in this function; job (cj, o0) writes the outputs of its own columns
            // and channels only.
            unsafe { ctx.job(yp, g0, g1, o0, o1, bp, row, base) };
        });
    });
    AP.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            *c = ap;
        }
    });
    y
}

type Scratch = (Vec<f32>, Vec<f32>, Vec<usize>);

thread_local! {
    /// Per-thread job buffers (packed K-slice, gather row, column offsets) and the caller's packed weight, kept
    /// between calls: fresh allocations of this size are fresh mmap pages, and their page faults cost ~10% of a
    /// ResNet50 forward.
    static SCRATCH: std::cell::RefCell<Scratch> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new()))
    };
    static AP: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn with_scratch(f: impl FnOnce(&mut Scratch)) {
    SCRATCH.with(|c| match c.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut (Vec::new(), Vec::new(), Vec::new())),
    });
}

#[cfg(target_arch = "x86_64")]
struct Ctx<'a> {
    g: &'a Geom,
    x: &'a [f32],
    ap: &'a [f32],
    opad: usize,
    o: usize,
    r: usize,
    p: usize,
    epi: Epilogue<'a>,
}

#[cfg(target_arch = "x86_64")]
impl Ctx<'_> {
    /// Computes y for columns g0..g1 and output channels o0..o1 (a multiple of MR apart, o1 <= Opad).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn job(
        &self,
        y: SendPtr<f32>,
        g0: usize,
        g1: usize,
        o0: usize,
        o1: usize,
        bp: &mut Vec<f32>,
        row: &mut Vec<f32>,
        base: &mut Vec<usize>,
    ) {
        // SAFETY: AVX2/FMA are enabled (the callers checked); pointers stay inside the buffers sized above.
        unsafe {
            let len = g1 - g0;
            let npan = len.div_ceil(NR);
            bp.resize(npan * KC * NR, 0.0);
            // Offset in y of column j of this job for channel 0.
            base.clear();
            base.extend((g0..g1).map(|c| (c / self.p) * self.o * self.p + c % self.p));
            let nkb = self.r.div_ceil(KC);
            for kb in 0..nkb {
                let k0 = kb * KC;
                let kc = KC.min(self.r - k0);
                // Pack the K-slice: panel jp holds kc rows of 24 columns (zero past the job's columns).
                for kk in 0..kc {
                    let mut dst = PanelRow {
                        bp: &mut bp[..npan * kc * NR],
                        kc,
                        kk,
                    };
                    col_row(self.g, self.x, k0 + kk, g0, len, &mut dst, row);
                }
                let (first, last) = (kb == 0, kb + 1 == nkb);
                for ob in (o0..o1).step_by(MC) {
                    let ob1 = (ob + MC).min(o1);
                    for jp in 0..npan {
                        let b = bp.as_ptr().add(jp * kc * NR);
                        let j0 = jp * NR;
                        let cols = NR.min(len - j0);
                        let mut acc = [0.0f32; MR * NR];
                        for oc in (ob..ob1).step_by(MR) {
                            let a = self.ap.as_ptr().add(k0 * self.opad + oc * kc);
                            let rows = MR.min(self.o.saturating_sub(oc));
                            if rows == 0 {
                                continue;
                            }
                            kernel(kc, a, b, &mut acc);
                            let contiguous = cols == NR && base[j0 + NR - 1] == base[j0] + NR - 1;
                            if rows == MR && contiguous {
                                self.store_full(
                                    &acc,
                                    y.get(),
                                    base[j0] + oc * self.p,
                                    oc,
                                    first,
                                    last,
                                );
                            } else {
                                self.store_partial(
                                    &acc,
                                    y.get(),
                                    &base[j0..j0 + cols],
                                    oc,
                                    rows,
                                    first,
                                    last,
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Stores a full 4 x 24 tile at `off` (row stride P), adding the earlier K-slices' sum unless `first` and
    /// applying the epilogue when `last`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_full(
        &self,
        acc: &[f32; MR * NR],
        y: *mut f32,
        off: usize,
        oc: usize,
        first: bool,
        last: bool,
    ) {
        // SAFETY: AVX2/FMA are enabled (the callers checked); pointers stay inside the buffers sized above.
        unsafe {
            use std::arch::x86_64::*;
            let zero = _mm256_setzero_ps();
            for i in 0..MR {
                let at = off + i * self.p;
                let c = y.add(at);
                let bias = match (last, self.epi.bias) {
                    (true, Some(b)) => Some(_mm256_set1_ps(b[oc + i])),
                    _ => None,
                };
                for j in 0..3 {
                    let mut v = _mm256_loadu_ps(acc.as_ptr().add(i * NR + 8 * j));
                    if !first {
                        v = _mm256_add_ps(v, _mm256_loadu_ps(c.add(8 * j)));
                    }
                    if last {
                        if let Some(bv) = bias {
                            v = _mm256_add_ps(v, bv);
                        }
                        if let Some(res) = self.epi.residual {
                            v = _mm256_add_ps(v, _mm256_loadu_ps(res.as_ptr().add(at + 8 * j)));
                        }
                        if self.epi.relu {
                            v = _mm256_max_ps(v, zero);
                        }
                    }
                    _mm256_storeu_ps(c.add(8 * j), v);
                }
            }
        }
    }

    /// Stores the valid `rows` x `base.len()` part of a tile whose columns may span images.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_partial(
        &self,
        acc: &[f32; MR * NR],
        y: *mut f32,
        base: &[usize],
        oc: usize,
        rows: usize,
        first: bool,
        last: bool,
    ) {
        // SAFETY: AVX2/FMA are enabled (the callers checked); pointers stay inside the buffers sized above.
        unsafe {
            let t = acc;
            for i in 0..rows {
                let bias = match (last, self.epi.bias) {
                    (true, Some(b)) => b[oc + i],
                    _ => 0.0,
                };
                for (j, &bj) in base.iter().enumerate() {
                    let at = bj + (oc + i) * self.p;
                    let c = y.add(at);
                    let mut v = t[i * NR + j];
                    if !first {
                        v += *c;
                    }
                    if last {
                        v += bias;
                        if let Some(res) = self.epi.residual {
                            v += res[at];
                        }
                        if self.epi.relu && v < 0.0 {
                            v = 0.0;
                        }
                    }
                    *c = v;
                }
            }
        }
    }
}

/// t[i*24 + j] = sum_k a[k*4 + i] * b[k*24 + j]: 12 accumulators in ymm0-11, the 3 B vectors in ymm12-14 and the
/// A broadcast in ymm15. Inline assembly because LLVM's allocator spilled an accumulator (a store-to-load chain
/// through the stack on every k, halving the rate).
#[cfg(target_arch = "x86_64")]
#[inline(never)]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, t: &mut [f32; MR * NR]) {
    use std::arch::x86_64::*;
    let z = _mm256_setzero_ps();
    let (mut c00, mut c01, mut c02, mut c10, mut c11, mut c12) = (z, z, z, z, z, z);
    let (mut c20, mut c21, mut c22, mut c30, mut c31, mut c32) = (z, z, z, z, z, z);
    if kc > 0 {
        // SAFETY: a holds kc*4 and b kc*24 floats; AVX2/FMA are enabled; only the named registers are touched.
        unsafe {
            std::arch::asm!(
            "2:",
            "vmovups ymm12, ymmword ptr [{b}]",
            "vmovups ymm13, ymmword ptr [{b} + 32]",
            "vmovups ymm14, ymmword ptr [{b} + 64]",
            "vbroadcastss ymm15, dword ptr [{a} + 0]",
            "vfmadd231ps ymm0, ymm15, ymm12",
            "vfmadd231ps ymm1, ymm15, ymm13",
            "vfmadd231ps ymm2, ymm15, ymm14",
            "vbroadcastss ymm15, dword ptr [{a} + 4]",
            "vfmadd231ps ymm3, ymm15, ymm12",
            "vfmadd231ps ymm4, ymm15, ymm13",
            "vfmadd231ps ymm5, ymm15, ymm14",
            "vbroadcastss ymm15, dword ptr [{a} + 8]",
            "vfmadd231ps ymm6, ymm15, ymm12",
            "vfmadd231ps ymm7, ymm15, ymm13",
            "vfmadd231ps ymm8, ymm15, ymm14",
            "vbroadcastss ymm15, dword ptr [{a} + 12]",
            "vfmadd231ps ymm9, ymm15, ymm12",
            "vfmadd231ps ymm10, ymm15, ymm13",
            "vfmadd231ps ymm11, ymm15, ymm14",
            "add {a}, 16",
            "add {b}, 96",
            "dec {k}",
            "jnz 2b",
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            k = inout(reg) kc => _,
            inout("ymm0") c00, inout("ymm1") c01, inout("ymm2") c02,
            inout("ymm3") c10, inout("ymm4") c11, inout("ymm5") c12,
            inout("ymm6") c20, inout("ymm7") c21, inout("ymm8") c22,
            inout("ymm9") c30, inout("ymm10") c31, inout("ymm11") c32,
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
            options(nostack, readonly),
            );
        }
    }
    let tp = t.as_mut_ptr();
    for (i, v) in [c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32]
        .into_iter()
        .enumerate()
    {
        // SAFETY: t holds 12 vectors.
        unsafe { _mm256_storeu_ps(tp.add(8 * i), v) };
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Development: the micro-kernel's rate on L1-resident panels (run with --ignored --nocapture).
    #[test]
    #[ignore]
    fn kernel_rate() {
        if !available() {
            return;
        }
        let a = vec![0.5f32; KC * MR];
        let b = vec![0.25f32; KC * NR];
        let mut t = [0.0f32; MR * NR];
        let reps = 200_000;
        let cpu = || -> f64 {
            let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
                * 1e-9
        };
        let c0 = cpu();
        let s = std::time::Instant::now();
        for _ in 0..reps {
            // SAFETY: AVX2/FMA available; a and b hold KC*4 and KC*24 floats.
            unsafe { kernel(KC, a.as_ptr(), b.as_ptr(), &mut t) };
        }
        let e = s.elapsed().as_secs_f64();
        let f = 2.0 * (KC * MR * NR * reps) as f64;
        println!(
            "kernel: {:.1} GFLOP/s wall, {:.1} per CPU-s",
            f / e / 1e9,
            f / (cpu() - c0) / 1e9
        );
        assert_eq!(t[0], KC as f32 * 0.125);
    }
}
