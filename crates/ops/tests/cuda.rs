//! On a CUDA device every cxr-ops entry point falls back to candle's own kernels (or, for max-pooling, to the
//! exact window-views composition): these tests check that the GPU path gives what our CPU kernels give,
//! forward and backward, on the shapes the ResNet and UNet use plus odd ones.
//!
//! They compile only with `--features cuda` (a default build holds no such test, so it cannot count them as
//! passed) and need a GPU (docs/GPU.md); a `cuda` build without one prints `skipped:`.

#![cfg(feature = "cuda")]

use candle_core::{Device, Tensor, Var};
use cxr_ops::{
    Conv2dCfg, batch_norm_train, bias_relu, conv2d, conv2d_bias_act, conv2d_frozen,
    fold_batch_norm, max_pool2d,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "common/gpu.rs"]
mod common;
use common::{gpu, rel_diff};

fn randn(seed: u64, shape: &[usize]) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

const TOL: f32 = 1e-4;

fn cfg(stride: usize, padding: usize) -> Conv2dCfg {
    Conv2dCfg {
        stride,
        padding,
        dilation: 1,
        groups: 1,
    }
}

/// `f` run on the CPU and on the GPU with the same inputs (as Vars): outputs and every input gradient agree.
fn check(
    what: &str,
    gpu: &Device,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
) {
    let run = |dev: &Device| {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(&t.to_device(dev).unwrap()).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&ts).unwrap();
        // A fixed, non-uniform upstream gradient: sum(y * r).
        let r = randn(99, y.dims()).to_device(dev).unwrap();
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<Option<Tensor>> = vars
            .iter()
            .map(|v| grads.get(v.as_tensor()).cloned())
            .collect();
        (y, g)
    };
    let (y_cpu, g_cpu) = run(&Device::Cpu);
    let (y_gpu, g_gpu) = run(gpu);
    let d = rel_diff(&y_cpu, &y_gpu);
    assert!(d < TOL, "{what}: forward differs by {d} (relative)");
    for (i, (a, b)) in g_cpu.iter().zip(&g_gpu).enumerate() {
        match (a, b) {
            (Some(a), Some(b)) => {
                let d = rel_diff(a, b);
                assert!(d < TOL, "{what}: gradient of input {i} differs by {d}");
            }
            (None, None) => {}
            _ => panic!("{what}: input {i} has a gradient on one device only"),
        }
    }
}

#[test]
fn convolutions_on_cuda_match_the_cpu_kernels() {
    let Some(gpu) = gpu() else { return };
    // (N, Cin, H, W, Cout, k, stride, pad): ResNet 1x1 and 3x3, the stem, a UNet level, odd shapes.
    let shapes = [
        (2, 64, 28, 28, 256, 1, 1, 0),
        (2, 64, 28, 28, 64, 3, 1, 1),
        (1, 3, 64, 64, 64, 7, 2, 3),
        (2, 16, 32, 32, 16, 3, 1, 1),
        (1, 5, 13, 13, 7, 3, 2, 1),
    ];
    for (i, &(n, cin, h, w, cout, k, s, p)) in shapes.iter().enumerate() {
        let x = randn(i as u64, &[n, cin, h, w]);
        let wt = randn(100 + i as u64, &[cout, cin, k, k]);
        let b = randn(200 + i as u64, &[cout]);
        let c = cfg(s, p);
        check(
            &format!("conv2d {i}"),
            &gpu,
            &[x.clone(), wt.clone(), b.clone()],
            |t| conv2d(&t[0], &t[1], Some(&t[2]), c),
        );
        check(
            &format!("conv2d_frozen {i}"),
            &gpu,
            std::slice::from_ref(&x),
            |t| conv2d_frozen(&t[0], &wt.to_device(t[0].device())?, None, c),
        );
    }
}

#[test]
fn fused_inference_batch_norm_and_pooling_on_cuda_match_the_cpu_kernels() {
    let Some(gpu) = gpu() else { return };
    // Fused conv + bias + residual + ReLU (inference, no gradient).
    let x = randn(1, &[2, 32, 14, 14]);
    let w = randn(2, &[32, 32, 3, 3]);
    let b = randn(3, &[32]);
    let r = randn(4, &[2, 32, 14, 14]);
    let run = |dev: &Device| {
        let d = |t: &Tensor| t.to_device(dev).unwrap();
        conv2d_bias_act(&d(&x), &d(&w), Some(&d(&b)), Some(&d(&r)), true, cfg(1, 1)).unwrap()
    };
    let dd = rel_diff(&run(&Device::Cpu), &run(&gpu));
    assert!(dd < TOL, "conv2d_bias_act differs by {dd}");

    // BatchNorm folding is plain tensor arithmetic: same on both devices.
    let (gamma, beta, mean) = (randn(5, &[32]), randn(6, &[32]), randn(7, &[32]));
    let var = (randn(8, &[32]).abs().unwrap() + 0.5).unwrap();
    let fold = |dev: &Device| {
        let d = |t: &Tensor| t.to_device(dev).unwrap();
        fold_batch_norm(
            &d(&w),
            Some(&d(&b)),
            &d(&gamma),
            &d(&beta),
            &d(&mean),
            &d(&var),
            1e-5,
        )
        .unwrap()
    };
    let ((w1, b1), (w2, b2)) = (fold(&Device::Cpu), fold(&gpu));
    assert!(rel_diff(&w1, &w2) < TOL && rel_diff(&b1, &b2) < TOL);

    check("bias_relu", &gpu, &[x.clone(), b.clone()], |t| {
        bias_relu(&t[0], &t[1])
    });
    for relu in [false, true] {
        check(
            &format!("batch_norm_train relu={relu}"),
            &gpu,
            &[x.clone(), gamma.clone(), beta.clone()],
            |t| batch_norm_train(&t[0], &t[1], &t[2], 1e-5, relu).map(|(y, _, _)| y),
        );
    }
    // ResNet's 3x3/2 stem pool (no candle backward), 2x2/2 (candle's is 1/4 of the truth), odd sizes.
    for (k, s, p, h) in [(3, 2, 1, 56), (2, 2, 0, 32), (3, 2, 1, 15), (3, 1, 1, 9)] {
        let x = randn(h as u64, &[2, 8, h, h + 1]);
        check(&format!("max_pool2d {k}/{s}/{p} on {h}"), &gpu, &[x], |t| {
            max_pool2d(&t[0], k, s, p)
        });
    }
}
