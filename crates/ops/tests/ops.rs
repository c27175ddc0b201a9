//! Checks every cxr-ops op against candle's reference op (where that one is right) and against central finite
//! differences in f64, on odd shapes: stride 2, padding, non-square, batch 1, channels not a multiple of 8.

use candle_core::{DType, Device, Tensor, Var};
use cxr_ops::{
    Conv2dCfg, bias_relu, conv2d, conv2d_bias_act, conv2d_frozen, fold_batch_norm, max_pool2d,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn randn(rng: &mut ChaCha8Rng, shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let a = a
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let b = b
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn max_abs(a: &Tensor) -> f64 {
    let a = a
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn cfg(stride: usize, padding: usize, dilation: usize, groups: usize) -> Conv2dCfg {
    Conv2dCfg {
        stride,
        padding,
        dilation,
        groups,
    }
}

/// Reference convolution: candle's own conv2d plus a broadcast bias.
fn conv_ref(x: &Tensor, w: &Tensor, b: Option<&Tensor>, c: Conv2dCfg) -> Tensor {
    let y = x
        .conv2d(w, c.padding, c.stride, c.dilation, c.groups)
        .unwrap();
    match b {
        Some(b) => y
            .broadcast_add(&b.reshape((1, b.dim(0).unwrap(), 1, 1)).unwrap())
            .unwrap(),
        None => y,
    }
}

/// Conv shapes: (n, cin, h, w, cout, k, cfg) covering 1x1 (stride 1 and 2), 3x3, 7x7/2, grouped, dilated.
fn conv_cases() -> Vec<(usize, usize, usize, usize, usize, usize, Conv2dCfg)> {
    vec![
        (2, 5, 7, 6, 3, 1, cfg(1, 0, 1, 1)),
        (1, 6, 9, 7, 5, 1, cfg(2, 0, 1, 1)),
        (2, 3, 8, 9, 5, 3, cfg(1, 1, 1, 1)),
        (1, 5, 9, 7, 4, 3, cfg(2, 1, 1, 1)),
        (2, 3, 11, 10, 6, 7, cfg(2, 3, 1, 1)),
        (1, 6, 7, 8, 4, 3, cfg(1, 1, 1, 2)),
        (1, 3, 9, 8, 2, 3, cfg(1, 2, 2, 1)),
        (2, 9, 6, 5, 11, 3, cfg(1, 0, 1, 1)),
    ]
}

#[test]
fn conv2d_forward_matches_candle() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for dtype in [DType::F32, DType::F64] {
        for (n, cin, h, w, cout, k, c) in conv_cases() {
            let x = randn(&mut rng, &[n, cin, h, w], dtype);
            let wt = randn(&mut rng, &[cout, cin / c.groups, k, k], dtype);
            let b = randn(&mut rng, &[cout], dtype);
            for bias in [None, Some(&b)] {
                let ours = conv2d(&x, &wt, bias, c).unwrap();
                let reference = conv_ref(&x, &wt, bias, c);
                let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
                let d = max_abs_diff(&ours, &reference);
                assert!(
                    d < tol * (1.0 + max_abs(&reference)),
                    "{:?} {c:?} k{k}: diff {d}",
                    x.dims()
                );
                let frozen = conv2d_frozen(&x, &wt, bias, c).unwrap();
                assert!(max_abs_diff(&frozen, &reference) < tol * (1.0 + max_abs(&reference)));
            }
        }
    }
}

/// Central finite differences of `loss(x) = sum(f(x) * r)` at up to `samples` entries of `v`, compared with the
/// analytical gradient `g`.
fn check_fd(v: &Var, g: &Tensor, samples: usize, loss: &dyn Fn() -> f64, what: &str) {
    let base = v
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(base.len(), g.len(), "{what}: gradient size");
    let step = (base.len() / samples).max(1);
    let eps = 1e-6;
    let shape = v.as_tensor().shape().clone();
    let mut checked = 0;
    for i in (0..base.len()).step_by(step).chain([base.len() - 1]) {
        let mut p = base.clone();
        p[i] += eps;
        v.set(&Tensor::from_vec(p.clone(), &shape, &Device::Cpu).unwrap())
            .unwrap();
        let lp = loss();
        p[i] -= 2.0 * eps;
        v.set(&Tensor::from_vec(p, &shape, &Device::Cpu).unwrap())
            .unwrap();
        let lm = loss();
        let fd = (lp - lm) / (2.0 * eps);
        assert!(
            (fd - g[i]).abs() < 1e-6 * (1.0 + fd.abs()),
            "{what}: entry {i}: finite difference {fd}, analytic {}",
            g[i]
        );
        checked += 1;
    }
    v.set(&Tensor::from_vec(base, &shape, &Device::Cpu).unwrap())
        .unwrap();
    assert!(checked > 0);
}

#[test]
fn conv2d_gradients_match_finite_differences_and_candle() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut compared = 0;
    for (n, cin, h, w, cout, k, c) in conv_cases() {
        let x = Var::from_tensor(&randn(&mut rng, &[n, cin, h, w], DType::F64)).unwrap();
        let wt =
            Var::from_tensor(&randn(&mut rng, &[cout, cin / c.groups, k, k], DType::F64)).unwrap();
        let b = Var::from_tensor(&randn(&mut rng, &[cout], DType::F64)).unwrap();
        let y = conv2d(&x, &wt, Some(&b), c).unwrap();
        let r = randn(&mut rng, y.dims(), DType::F64);
        let loss = || -> f64 {
            conv2d(&x, &wt, Some(&b), c)
                .unwrap()
                .mul(&r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let grads = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        let (gx, gw, gb) = (
            grads.get(&x).unwrap(),
            grads.get(&wt).unwrap(),
            grads.get(&b).unwrap(),
        );
        // candle's conv2d gradients are right where its backward runs (it fails when height and width need
        // different output paddings): compare all entries there.
        let yr = conv_ref(&x, &wt, Some(&b), c);
        if let Ok(gr) = yr.mul(&r).unwrap().sum_all().unwrap().backward() {
            for (name, ours, theirs) in [
                ("x", gx, gr.get(&x).unwrap()),
                ("w", gw, gr.get(&wt).unwrap()),
                ("b", gb, gr.get(&b).unwrap()),
            ] {
                let d = max_abs_diff(ours, theirs);
                assert!(
                    d < 1e-9 * (1.0 + max_abs(theirs)),
                    "{:?} {c:?} k{k}: grad {name} differs by {d}",
                    x.dims()
                );
            }
            compared += 1;
        }
        check_fd(&x, gx, 12, &loss, "conv2d dx");
        check_fd(&wt, gw, 12, &loss, "conv2d dw");
        check_fd(&b, gb, 4, &loss, "conv2d db");
    }
    assert!(
        compared >= conv_cases().len() - 1,
        "candle reference ran on {compared} cases only"
    );
}

#[test]
fn conv2d_frozen_gives_no_weight_gradient() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (n, cin, h, w, cout, k, c) in conv_cases() {
        let x = Var::from_tensor(&randn(&mut rng, &[n, cin, h, w], DType::F64)).unwrap();
        let wt =
            Var::from_tensor(&randn(&mut rng, &[cout, cin / c.groups, k, k], DType::F64)).unwrap();
        let b = Var::from_tensor(&randn(&mut rng, &[cout], DType::F64)).unwrap();
        let y = conv2d_frozen(&x, &wt, Some(&b), c).unwrap();
        let r = randn(&mut rng, y.dims(), DType::F64);
        let grads = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&wt).is_none(), "frozen weight got a gradient");
        assert!(grads.get(&b).is_none(), "frozen bias got a gradient");
        let gx = grads.get(&x).unwrap();
        let loss = || -> f64 {
            conv2d_frozen(&x, &wt, Some(&b), c)
                .unwrap()
                .mul(&r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        check_fd(&x, gx, 12, &loss, "conv2d_frozen dx");
    }
}

/// (n, c, h, w, kernel, stride, padding)
fn pool_cases() -> Vec<(usize, usize, usize, usize, usize, usize, usize)> {
    vec![
        (2, 3, 8, 6, 2, 2, 0),
        (1, 5, 11, 9, 3, 2, 1),
        (2, 3, 7, 10, 3, 1, 1),
        (1, 2, 9, 9, 3, 3, 0),
        (1, 3, 10, 7, 2, 1, 0),
        (2, 1, 13, 12, 5, 2, 2),
    ]
}

#[test]
fn max_pool2d_forward_matches_candle_and_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for dtype in [DType::F32, DType::F64] {
        for (n, c, h, w, k, s, p) in pool_cases() {
            let x = randn(&mut rng, &[n, c, h, w], dtype);
            let ours = max_pool2d(&x, k, s, p).unwrap();
            let views = cxr_ops::max_pool2d_views(&x, k, s, p).unwrap();
            assert_eq!(
                max_abs_diff(&ours, &views),
                0.0,
                "{:?} k{k} s{s} p{p}",
                x.dims()
            );
            let oh = (h + 2 * p - k) / s + 1;
            let ow = (w + 2 * p - k) / s + 1;
            assert_eq!(ours.dims(), [n, c, oh, ow]);
            if p == 0 {
                // candle's forward is right (its backward is not).
                let theirs = x.max_pool2d_with_stride(k, s).unwrap();
                assert_eq!(
                    max_abs_diff(&ours, &theirs),
                    0.0,
                    "{:?} k{k} s{s}",
                    x.dims()
                );
            }
        }
    }
}

#[test]
fn max_pool2d_gradient_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (n, c, h, w, k, s, p) in pool_cases() {
        let x = Var::from_tensor(&randn(&mut rng, &[n, c, h, w], DType::F64)).unwrap();
        let y = max_pool2d(&x, k, s, p).unwrap();
        let r = randn(&mut rng, y.dims(), DType::F64);
        let grads = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = grads.get(&x).unwrap();
        // Every output routes its gradient to exactly one input cell.
        let total = gx.sum_all().unwrap().to_scalar::<f64>().unwrap();
        let expected = r.sum_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(
            (total - expected).abs() < 1e-9,
            "gradient mass {total} vs {expected}"
        );
        let loss = || -> f64 {
            max_pool2d(&x, k, s, p)
                .unwrap()
                .mul(&r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        check_fd(&x, gx, 40, &loss, "max_pool2d dx");
    }
}

#[test]
fn fold_batch_norm_matches_conv_then_batch_norm() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let (n, cin, h, w, cout) = (2, 5, 9, 7, 6);
    let x = randn(&mut rng, &[n, cin, h, w], DType::F32);
    let wt = randn(&mut rng, &[cout, cin, 3, 3], DType::F32);
    let b = randn(&mut rng, &[cout], DType::F32);
    let gamma = randn(&mut rng, &[cout], DType::F32);
    let beta = randn(&mut rng, &[cout], DType::F32);
    let mean = randn(&mut rng, &[cout], DType::F32);
    let var = randn(&mut rng, &[cout], DType::F32)
        .abs()
        .unwrap()
        .affine(1.0, 0.1)
        .unwrap();
    let eps = 1e-5;
    let c = cfg(2, 1, 1, 1);
    for bias in [None, Some(&b)] {
        let y = conv_ref(&x, &wt, bias, c);
        let bn = candle_nn::BatchNorm::new(
            cout,
            mean.clone(),
            var.clone(),
            gamma.clone(),
            beta.clone(),
            eps,
        )
        .unwrap();
        let expected = candle_nn::ModuleT::forward_t(&bn, &y, false).unwrap();
        let (wf, bf) = fold_batch_norm(&wt, bias, &gamma, &beta, &mean, &var, eps).unwrap();
        let got = conv2d(&x, &wf, Some(&bf), c).unwrap();
        let d = max_abs_diff(&got, &expected);
        assert!(
            d < 1e-4 * (1.0 + max_abs(&expected)),
            "folded conv differs by {d}"
        );
    }
    let bad = randn(&mut rng, &[cout + 1], DType::F32);
    let err = fold_batch_norm(&wt, None, &bad, &beta, &mean, &var, eps).unwrap_err();
    assert!(err.to_string().contains("gamma"), "{err}");
}

#[test]
fn bias_relu_matches_reference_and_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x = Var::from_tensor(&randn(&mut rng, &[2, 5, 7, 3], DType::F64)).unwrap();
    let b = Var::from_tensor(&randn(&mut rng, &[5], DType::F64)).unwrap();
    let y = bias_relu(&x, &b).unwrap();
    let expected = x
        .broadcast_add(&b.reshape((1, 5, 1, 1)).unwrap())
        .unwrap()
        .relu()
        .unwrap();
    assert_eq!(max_abs_diff(&y, &expected), 0.0);
    let r = randn(&mut rng, y.dims(), DType::F64);
    let grads = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let loss = || -> f64 {
        bias_relu(&x, &b)
            .unwrap()
            .mul(&r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    check_fd(&x, grads.get(&x).unwrap(), 30, &loss, "bias_relu dx");
    check_fd(&b, grads.get(&b).unwrap(), 5, &loss, "bias_relu db");
    // f32 too (the dtype the stages use).
    let x32 = randn(&mut rng, &[1, 9, 4, 6], DType::F32);
    let b32 = randn(&mut rng, &[9], DType::F32);
    let e32 = x32
        .broadcast_add(&b32.reshape((1, 9, 1, 1)).unwrap())
        .unwrap()
        .relu()
        .unwrap();
    assert!(max_abs_diff(&bias_relu(&x32, &b32).unwrap(), &e32) < 1e-6);
}

/// Images large enough that the im2col is split into several row tiles, in f32 against candle; and a layer whose
/// input is not tracked (the first layer) still gets its weight gradient.
#[test]
fn conv2d_tiled_large_image_and_untracked_input() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for (cin, k, c) in [
        (16, 3, cfg(1, 1, 1, 1)),
        (20, 3, cfg(2, 1, 1, 1)),
        (24, 1, cfg(1, 0, 1, 1)),
    ] {
        let x = randn(&mut rng, &[1, cin, 70, 66], DType::F32);
        let wt = Var::from_tensor(&randn(&mut rng, &[10, cin, k, k], DType::F32)).unwrap();
        let y = conv2d(&x, &wt, None, c).unwrap();
        let yr = conv_ref(&x, &wt, None, c);
        let d = max_abs_diff(&y, &yr);
        assert!(d < 1e-4 * (1.0 + max_abs(&yr)), "forward differs by {d}");
        let r = randn(&mut rng, y.dims(), DType::F32);
        let g = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = yr.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        let (gw, gwr) = (g.get(&wt).unwrap(), gr.get(&wt).unwrap());
        let d = max_abs_diff(gw, gwr);
        assert!(
            d < 1e-4 * (1.0 + max_abs(gwr)),
            "weight gradient differs by {d}"
        );
    }
}

#[test]
fn batch_norm_train_matches_candle_and_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for (shape, relu) in [
        ([2, 5, 7, 3], false),
        ([1, 3, 4, 9], true),
        ([3, 9, 5, 5], true),
    ] {
        let x = Var::from_tensor(&randn(&mut rng, &shape, DType::F64)).unwrap();
        let c = shape[1];
        let gamma = Var::from_tensor(&(randn(&mut rng, &[c], DType::F64) + 1.5).unwrap()).unwrap();
        let beta = Var::from_tensor(&randn(&mut rng, &[c], DType::F64)).unwrap();
        let eps = 1e-5;
        let (y, mean, var) = cxr_ops::batch_norm_train(&x, &gamma, &beta, eps, relu).unwrap();
        let (yr, mr, vr) = cxr_ops::batch_norm_train_candle(&x, &gamma, &beta, eps, relu).unwrap();
        assert!(max_abs_diff(&y, &yr) < 1e-10, "forward");
        assert!(
            max_abs_diff(&mean, &mr) < 1e-12 && max_abs_diff(&var, &vr) < 1e-12,
            "statistics"
        );
        assert_eq!(mean.dims(), [c]);
        let r = randn(&mut rng, y.dims(), DType::F64);
        let g = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = yr.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in [("x", &x), ("gamma", &gamma), ("beta", &beta)] {
            let d = max_abs_diff(g.get(v).unwrap(), gr.get(v).unwrap());
            assert!(
                d < 1e-9,
                "{shape:?} relu {relu}: gradient of {name} differs from candle by {d}"
            );
        }
        let loss = || -> f64 {
            let (y, ..) = cxr_ops::batch_norm_train(&x, &gamma, &beta, eps, relu).unwrap();
            y.mul(&r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        check_fd(&x, g.get(&x).unwrap(), 20, &loss, "batch_norm_train dx");
        check_fd(
            &gamma,
            g.get(&gamma).unwrap(),
            5,
            &loss,
            "batch_norm_train dgamma",
        );
        check_fd(
            &beta,
            g.get(&beta).unwrap(),
            5,
            &loss,
            "batch_norm_train dbeta",
        );
    }
    // f32 (the dtype the stages use) against candle.
    let x = randn(&mut rng, &[4, 6, 10, 10], DType::F32);
    let gamma = randn(&mut rng, &[6], DType::F32);
    let beta = randn(&mut rng, &[6], DType::F32);
    let (y, ..) = cxr_ops::batch_norm_train(&x, &gamma, &beta, 1e-5, true).unwrap();
    let (yr, ..) = cxr_ops::batch_norm_train_candle(&x, &gamma, &beta, 1e-5, true).unwrap();
    assert!(max_abs_diff(&y, &yr) < 1e-4);
}

/// In f32 without ReLU (how `cxr-model`'s BatchNorm layers call it): output, batch statistics and all three
/// gradients agree with candle's composition (moved here with the op from `cxr-model`).
#[test]
fn batch_norm_train_f32_matches_the_composed_one() {
    let dev = Device::Cpu;
    let data: Vec<f32> = (0..3 * 4 * 5 * 6)
        .map(|i| ((i as f32) * 0.7).sin() * 3.0 + (i % 4) as f32)
        .collect();
    let x = Var::from_tensor(&Tensor::from_vec(data, (3, 4, 5, 6), &dev).unwrap()).unwrap();
    let gamma = Var::from_tensor(&Tensor::new(&[1.5f32, 0.5, -1.0, 2.0], &dev).unwrap()).unwrap();
    let beta = Var::from_tensor(&Tensor::new(&[0.1f32, -0.2, 0.3, 0.0], &dev).unwrap()).unwrap();
    let coef = Tensor::from_vec(
        (0..360).map(|i| (i as f32 * 0.3).cos()).collect::<Vec<_>>(),
        (3, 4, 5, 6),
        &dev,
    )
    .unwrap();
    let (y1, m1, v1) = cxr_ops::batch_norm_train(&x, &gamma, &beta, 1e-5, false).unwrap();
    let (y2, m2, v2) = cxr_ops::batch_norm_train_candle(&x, &gamma, &beta, 1e-5, false).unwrap();
    assert_eq!((m1.dtype(), m1.dims()), (DType::F32, [4].as_slice()));
    let g1 = (&y1 * &coef)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g2 = (&y2 * &coef)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (a, b, what) in [(&y1, &y2, "output"), (&m1, &m2, "mean"), (&v1, &v2, "var")] {
        let d = max_abs_diff(a, b);
        assert!(d <= 1e-4 * (1.0 + max_abs(b)), "{what} differs by {d}");
    }
    for (v, what) in [(&x, "dx"), (&gamma, "dgamma"), (&beta, "dbeta")] {
        let (a, b) = (g1.get(v).unwrap(), g2.get(v).unwrap());
        let d = max_abs_diff(a, b);
        assert!(d <= 1e-4 * (1.0 + max_abs(b)), "{what} differs by {d}");
    }
}

/// The fused inference convolution (`relu?(conv + bias + residual)`) against candle's conv plus broadcast ops,
/// on odd shapes: output channels not a multiple of 4, long reductions, stride 2, padding, dilation, batch 1,
/// non-square inputs.
#[test]
fn conv2d_bias_act_matches_candle() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let cases = [
        // (n, cin, h, w, cout, k, cfg)
        (3, 30, 5, 5, 7, 3, cfg(1, 1, 1, 1)),
        (1, 13, 9, 11, 5, 1, cfg(1, 0, 1, 1)),
        (2, 9, 10, 7, 6, 1, cfg(2, 0, 1, 1)),
        (2, 5, 13, 12, 9, 3, cfg(2, 1, 1, 1)),
        (1, 3, 23, 21, 10, 7, cfg(2, 3, 1, 1)),
        (2, 4, 9, 8, 3, 3, cfg(1, 2, 2, 1)),
        (4, 300, 3, 3, 260, 1, cfg(1, 0, 1, 1)),
        (2, 40, 4, 4, 270, 3, cfg(1, 1, 1, 1)),
        (8, 64, 7, 7, 36, 1, cfg(1, 0, 1, 1)),
    ];
    for dtype in [DType::F32, DType::F64] {
        for (n, cin, h, w, cout, k, c) in cases {
            let x = randn(&mut rng, &[n, cin, h, w], dtype);
            let wt = randn(&mut rng, &[cout, cin, k, k], dtype);
            let b = randn(&mut rng, &[cout], dtype);
            let conv = conv_ref(&x, &wt, None, c);
            let res = randn(&mut rng, conv.dims(), dtype);
            for (bias, residual, relu) in [
                (None, None, false),
                (Some(&b), None, true),
                (Some(&b), Some(&res), true),
                (None, Some(&res), false),
            ] {
                let ours = conv2d_bias_act(&x, &wt, bias, residual, relu, c).unwrap();
                let mut r = conv_ref(&x, &wt, bias, c);
                if let Some(res) = residual {
                    r = (r + res).unwrap();
                }
                if relu {
                    r = r.relu().unwrap();
                }
                let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
                let d = max_abs_diff(&ours, &r);
                assert!(
                    d < tol * (1.0 + max_abs(&r)),
                    "{:?} -> {cout} {c:?} k{k} bias {} residual {} relu {relu}: diff {d}",
                    x.dims(),
                    bias.is_some(),
                    residual.is_some()
                );
            }
        }
    }
}

/// With a tracked input the fused call is the differentiable composition: same values and the same gradient as
/// `conv2d_frozen` + residual + ReLU.
#[test]
fn conv2d_bias_act_tracked_input_has_gradient() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let x = Var::from_tensor(&randn(&mut rng, &[2, 6, 7, 5], DType::F64)).unwrap();
    let wt = randn(&mut rng, &[5, 6, 3, 3], DType::F64);
    let b = randn(&mut rng, &[5], DType::F64);
    let c = cfg(1, 1, 1, 1);
    let res = randn(&mut rng, &[2, 5, 7, 5], DType::F64);
    let y = conv2d_bias_act(x.as_tensor(), &wt, Some(&b), Some(&res), true, c).unwrap();
    let yr = (conv2d_frozen(x.as_tensor(), &wt, Some(&b), c).unwrap() + &res)
        .unwrap()
        .relu()
        .unwrap();
    assert!(max_abs_diff(&y, &yr) < 1e-12);
    let r = randn(&mut rng, y.dims(), DType::F64);
    let g = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let gr = yr.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let d = max_abs_diff(g.get(&x).unwrap(), gr.get(&x).unwrap());
    assert!(d < 1e-12, "input gradient differs by {d}");
}

/// 3x3 stride-1 convolutions with at least 64 channels in and out take the Winograd F(2x2, 3x3) path. Against
/// candle, and against the im2col path with Winograd switched off: padding 0, 1 and 2, odd output sizes (half
/// tiles), batch 1, channel counts not a multiple of 8, and a shape large enough to span several tile blocks
/// whose boundaries fall inside an image.
#[test]
fn winograd_3x3_matches_candle_and_the_im2col_path() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let cases = [
        // (n, cin, h, w, cout, padding)
        (1, 64, 5, 5, 64, 1),
        (3, 65, 7, 6, 67, 1),
        (2, 73, 9, 8, 64, 0),
        (1, 64, 6, 9, 70, 2),
        (2, 64, 3, 3, 64, 1),
        (3, 64, 40, 40, 64, 1),
    ];
    for dtype in [DType::F32, DType::F64] {
        for (n, cin, h, w, cout, pad) in cases {
            let x = randn(&mut rng, &[n, cin, h, w], dtype);
            let wt = randn(&mut rng, &[cout, cin, 3, 3], dtype);
            let b = randn(&mut rng, &[cout], dtype);
            let c = cfg(1, pad, 1, 1);
            let conv = conv_ref(&x, &wt, Some(&b), c);
            let res = randn(&mut rng, conv.dims(), dtype);
            let reference = (&conv + &res).unwrap().relu().unwrap();
            cxr_ops::set_winograd(true);
            let ours = conv2d_bias_act(&x, &wt, Some(&b), Some(&res), true, c).unwrap();
            let plain = conv2d(&x, &wt, Some(&b), c).unwrap();
            cxr_ops::set_winograd(false);
            let im2col = conv2d_bias_act(&x, &wt, Some(&b), Some(&res), true, c).unwrap();
            cxr_ops::set_winograd(true);
            let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
            for (what, got, want) in [
                ("fused vs candle", &ours, &reference),
                ("conv2d vs candle", &plain, &conv),
                ("fused vs im2col", &ours, &im2col),
            ] {
                let d = max_abs_diff(got, want);
                assert!(
                    d < tol * (1.0 + max_abs(want)),
                    "{what} {:?} -> {cout} pad {pad} {dtype:?}: diff {d}",
                    x.dims()
                );
            }
        }
    }
}

/// A weight prepared once gives the same convolution as the unprepared call, on a Winograd layer (whose
/// transformed weight is then reused) and on layers the Winograd path does not take; a tracked input still gets
/// its gradient through the fallback.
#[test]
fn prepared_inference_weight_matches_the_plain_call() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    for (cin, cout, k, c) in [
        (64, 66, 3, cfg(1, 1, 1, 1)),
        (64, 66, 3, cfg(2, 1, 1, 1)),
        (40, 66, 3, cfg(1, 1, 1, 1)),
        (64, 66, 1, cfg(1, 0, 1, 1)),
    ] {
        let x = randn(&mut rng, &[2, cin, 9, 7], DType::F32);
        let wt = randn(&mut rng, &[cout, cin, k, k], DType::F32);
        let b = randn(&mut rng, &[cout], DType::F32);
        let prepared = cxr_ops::InferenceWeight::new(&wt, c).unwrap();
        let want = conv2d_bias_act(&x, &wt, Some(&b), None, true, c).unwrap();
        for _ in 0..2 {
            let got =
                cxr_ops::conv2d_bias_act_prepared(&x, &prepared, Some(&b), None, true, c).unwrap();
            let d = max_abs_diff(&got, &want);
            assert!(
                d < 1e-5 * (1.0 + max_abs(&want)),
                "{cin}->{cout} k{k} {c:?}: diff {d}"
            );
        }
        let xv = Var::from_tensor(&x).unwrap();
        let y =
            cxr_ops::conv2d_bias_act_prepared(xv.as_tensor(), &prepared, Some(&b), None, true, c)
                .unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(
            grads.get(xv.as_tensor()).is_some(),
            "no input gradient through the prepared call"
        );
    }
}

/// The input gradient of a 3x3 stride-1 convolution with 64+ channels goes through the Winograd forward (the
/// weight flipped and transposed): against the im2col/col2im path and candle's own backward, padding 0 to 2, odd
/// sizes, batch 1, in f32 and f64.
#[test]
fn winograd_input_gradient_matches_col2im_and_candle() {
    let mut rng = ChaCha8Rng::seed_from_u64(29);
    for dtype in [DType::F32, DType::F64] {
        for (n, cin, h, w, cout, pad) in [
            (2, 64, 7, 6, 65, 1),
            (1, 66, 9, 8, 64, 0),
            (2, 64, 5, 7, 68, 2),
            (3, 96, 12, 12, 64, 1),
        ] {
            let x = Var::from_tensor(&randn(&mut rng, &[n, cin, h, w], dtype)).unwrap();
            let wt = randn(&mut rng, &[cout, cin, 3, 3], dtype);
            let c = cfg(1, pad, 1, 1);
            let r = randn(
                &mut rng,
                conv_ref(x.as_tensor(), &wt, None, c).dims(),
                dtype,
            );
            let grad = |y: Tensor| {
                let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                g.get(x.as_tensor()).unwrap().clone()
            };
            cxr_ops::set_winograd(true);
            let ours = grad(conv2d_frozen(x.as_tensor(), &wt, None, c).unwrap());
            cxr_ops::set_winograd(false);
            let col2im = grad(conv2d_frozen(x.as_tensor(), &wt, None, c).unwrap());
            cxr_ops::set_winograd(true);
            let candle = grad(conv_ref(x.as_tensor(), &wt, None, c));
            let tol = if dtype == DType::F32 { 1e-4 } else { 1e-10 };
            for (what, want) in [("col2im", &col2im), ("candle", &candle)] {
                let d = max_abs_diff(&ours, want);
                assert!(
                    d < tol * (1.0 + max_abs(want)),
                    "vs {what}: {:?} -> {cout} pad {pad} {dtype:?}: diff {d}",
                    x.dims()
                );
            }
        }
    }
}
