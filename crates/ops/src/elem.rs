//! The element types the CPU kernels run on (f32 for speed, f64 for finite-difference tests).

use candle_core::{CpuStorage, Layout, Result, WithDType};

pub(crate) trait Elem:
    WithDType
    + Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::AddAssign
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INF: Self;
}

impl Elem for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INF: Self = f32::NEG_INFINITY;
}

impl Elem for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INF: Self = f64::NEG_INFINITY;
}

/// The contiguous slice a tensor's storage holds, or an error naming `what` (the kernels only run on contiguous
/// tensors; the public functions make their inputs contiguous first).
pub(crate) fn slice<'a, T: Elem>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("cxr-ops: {what} is not contiguous (layout {l:?})"),
    }
}

/// A raw pointer that may cross threads: every kernel writes disjoint regions through it.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// `dst (m x n) = [dst +] lhs (m x k) . rhs (k x n)` with explicit row/column strides, single-threaded (callers
/// parallelise over images and tiles).
///
/// # Safety
/// The pointers must address matrices of the given shapes and strides; `dst` must not alias `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<T: Elem>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: usize,
    dst_cs: usize,
    accumulate: bool,
    lhs: *const T,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const T,
    rhs_rs: usize,
    rhs_cs: usize,
    par: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: inside the destination matrix.
                    unsafe { *dst.add(i * dst_rs + j * dst_cs) = T::ZERO };
                }
            }
        }
        return;
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            par,
        )
    }
}

/// A vector of `len` elements written by `fill` through the pointer it is given, without zeroing them first (an
/// activation-sized `vec![0; len]` costs a full extra pass over memory: 13 % of a 1x1 convolution with 64 input
/// channels).
///
/// # Safety
/// `fill` must write every one of the `len` elements before it returns, and read none it has not written.
pub(crate) unsafe fn written_by<T>(len: usize, fill: impl FnOnce(*mut T)) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    fill(v.as_mut_ptr());
    // SAFETY: the caller's fill initialised all len elements.
    unsafe { v.set_len(len) };
    v
}

/// Candle storage owning `v`.
pub(crate) fn storage<T: Elem>(v: Vec<T>) -> CpuStorage {
    T::to_cpu_storage_owned(v)
}
