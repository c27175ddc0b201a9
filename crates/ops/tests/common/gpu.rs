//! Helpers of the GPU-vs-CPU tests (`crates/ops/tests/cuda.rs`, and `crates/model/tests/cuda.rs` through
//! `#[path]`).

use candle_core::{DType, Device, Tensor};

/// The first CUDA GPU, or `None` with a `skipped:` line (a build without `cuda`, or no GPU).
pub fn gpu() -> Option<Device> {
    match Device::cuda_if_available(0) {
        Ok(d) if d.is_cuda() => Some(d),
        _ => {
            println!(
                "skipped: no CUDA device (needs `--features cuda` and a GPU, see docs/GPU.md)"
            );
            None
        }
    }
}

/// A tensor's values as f32 on the CPU.
pub fn values(t: &Tensor) -> Vec<f32> {
    t.to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Largest difference relative to the larger of the two tensors' largest magnitudes.
pub fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let (a, b) = (values(a), values(b));
    let scale = a
        .iter()
        .chain(&b)
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(1e-12);
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}
