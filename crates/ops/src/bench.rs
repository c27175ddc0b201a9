//! Measurement helpers behind `cargo xtask bench ops` (the command prints; this module only computes).
//!
//! Layer tables for ResNet50 (b = 8, 224x224) and the segment stage's UNet (base 16, 256x256), per-layer forward
//! timings of our convolution against candle's stock one, and whole-network figures built from the same ops:
//! ResNet50 inference (BatchNorm folded, bias + identity + ReLU fused into the convolution), a Finetune1 training step (frozen convolutions,
//! training-mode BatchNorm, trainable head) and a UNet training step, each with our ops and with candle's stock
//! ops. Weights are random (speed does not depend on them); PyTorch is timed by the xtask's Python script.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};

use crate::{Conv2dCfg, conv2d, conv2d_candle, conv2d_frozen, max_pool2d, max_pool2d_views};

/// One convolution layer shape; `count` is how often it occurs in the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvLayer {
    pub net: &'static str,
    pub name: String,
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub count: usize,
}

impl ConvLayer {
    pub fn out_hw(&self) -> (usize, usize) {
        (
            (self.h + 2 * self.pad - self.k) / self.stride + 1,
            (self.w + 2 * self.pad - self.k) / self.stride + 1,
        )
    }
    /// Floating-point operations of one forward (2 per multiply-add).
    pub fn flops(&self) -> f64 {
        let (oh, ow) = self.out_hw();
        2.0 * (self.n * self.cout * oh * ow * self.cin * self.k * self.k) as f64
    }
    fn cfg(&self) -> Conv2dCfg {
        Conv2dCfg {
            stride: self.stride,
            padding: self.pad,
            dilation: 1,
            groups: 1,
        }
    }
}

fn layer(
    net: &'static str,
    name: &str,
    n: usize,
    (cin, h, w): (usize, usize, usize),
    (cout, k, stride, pad): (usize, usize, usize, usize),
    count: usize,
) -> ConvLayer {
    ConvLayer {
        net,
        name: name.into(),
        n,
        cin,
        h,
        w,
        cout,
        k,
        stride,
        pad,
        count,
    }
}

/// The distinct convolutions of torchvision's ResNet50 (v1.5: stride in the 3x3) at batch `n`, 224x224.
pub fn resnet50_layers(n: usize) -> Vec<ConvLayer> {
    let r = "resnet50";
    let mut v = vec![layer(r, "conv1 7x7/2", n, (3, 224, 224), (64, 7, 2, 3), 1)];
    // (stage, blocks, width, input side, input channels)
    let stages = [
        (1, 3, 64, 56, 64),
        (2, 4, 128, 56, 256),
        (3, 6, 256, 28, 512),
        (4, 3, 512, 14, 1024),
    ];
    for (s, blocks, wd, side, cin) in stages {
        let stride = if s == 1 { 1 } else { 2 };
        let out_side = side / stride;
        let out = 4 * wd;
        v.push(layer(
            r,
            &format!("l{s}.0 conv1 1x1"),
            n,
            (cin, side, side),
            (wd, 1, 1, 0),
            1,
        ));
        v.push(layer(
            r,
            &format!("l{s}.0 conv2 3x3/{stride}"),
            n,
            (wd, side, side),
            (wd, 3, stride, 1),
            1,
        ));
        v.push(layer(
            r,
            &format!("l{s}.0 conv3 1x1"),
            n,
            (wd, out_side, out_side),
            (out, 1, 1, 0),
            1,
        ));
        v.push(layer(
            r,
            &format!("l{s}.0 downsample 1x1/{stride}"),
            n,
            (cin, side, side),
            (out, 1, stride, 0),
            1,
        ));
        let rest = blocks - 1;
        v.push(layer(
            r,
            &format!("l{s}.x conv1 1x1"),
            n,
            (out, out_side, out_side),
            (wd, 1, 1, 0),
            rest,
        ));
        v.push(layer(
            r,
            &format!("l{s}.x conv2 3x3"),
            n,
            (wd, out_side, out_side),
            (wd, 3, 1, 1),
            rest,
        ));
        v.push(layer(
            r,
            &format!("l{s}.x conv3 1x1"),
            n,
            (wd, out_side, out_side),
            (out, 1, 1, 0),
            rest,
        ));
    }
    v
}

/// The convolutions of `cxr-segment`'s UNet (five levels, base filters `base`, side `size`, 3x3 "same" convs,
/// 2x2 up-convolutions on the bottom/right padded up-sampled map, 1x1 output).
pub fn unet_layers(n: usize, base: usize, size: usize) -> Vec<ConvLayer> {
    let u = "unet";
    let mut v = Vec::new();
    let mut cin = 1;
    for i in 0..5 {
        let (c, s) = (base << i, size >> i);
        v.push(layer(
            u,
            &format!("enc{i}.conv1"),
            n,
            (cin, s, s),
            (c, 3, 1, 1),
            1,
        ));
        v.push(layer(
            u,
            &format!("enc{i}.conv2"),
            n,
            (c, s, s),
            (c, 3, 1, 1),
            1,
        ));
        cin = c;
    }
    for i in (0..4).rev() {
        let (c, s) = (base << i, size >> i);
        v.push(layer(
            u,
            &format!("up{i} 2x2"),
            n,
            (2 * c, s + 1, s + 1),
            (c, 2, 1, 0),
            1,
        ));
        v.push(layer(
            u,
            &format!("dec{i}.conv1+2"),
            n,
            (c, s, s),
            (c, 3, 1, 1),
            2,
        ));
    }
    v.push(layer(u, "out 1x1", n, (base, size, size), (1, 1, 1, 0), 1));
    v
}

/// Seconds per call of `f`: one warm-up call, then `reps` timed calls (median).
pub fn time_median<F: FnMut() -> Result<()>>(reps: usize, mut f: F) -> Result<f64> {
    f()?;
    let mut t = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// Deterministic uniform(-a, a) tensor (a small xorshift: the bench needs no statistical quality).
pub fn uniform(shape: &[usize], a: f32, seed: u64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// Forward seconds of one layer with our op and with candle's stock conv2d.
#[derive(Debug, Clone)]
pub struct LayerTiming {
    pub layer: ConvLayer,
    pub ours_s: f64,
    pub stock_s: f64,
}

pub fn time_layer(l: &ConvLayer, reps: usize) -> Result<LayerTiming> {
    let x = uniform(&[l.n, l.cin, l.h, l.w], 1.0, 1)?;
    let w = uniform(&[l.cout, l.cin, l.k, l.k], 0.1, 2)?;
    let cfg = l.cfg();
    let ours_s = time_median(reps, || conv2d_frozen(&x, &w, None, cfg).map(|_| ()))?;
    let stock_s = time_median(reps, || conv2d_candle(&x, &w, None, cfg).map(|_| ()))?;
    Ok(LayerTiming {
        layer: l.clone(),
        ours_s,
        stock_s,
    })
}

/// Which implementation a network runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ops {
    /// cxr-ops.
    Ours,
    /// candle's own ops (with the exact views max-pool where candle's pool has no backward).
    Stock,
}

struct ConvBn {
    w: Tensor,
    cfg: Conv2dCfg,
    gamma: Var,
    beta: Var,
    mean: Tensor,
    var: Tensor,
    /// Inference: the BatchNorm folded into the convolution, the weight prepared once.
    folded: (crate::InferenceWeight, Tensor),
}

const BN_EPS: f64 = 1e-5;

impl ConvBn {
    fn new(cin: usize, cout: usize, k: usize, stride: usize, seed: u64) -> Result<Self> {
        let a = (6.0 / (cin * k * k) as f32).sqrt();
        let w = uniform(&[cout, cin, k, k], a, seed)?;
        let gamma = Var::from_tensor(&(uniform(&[cout], 0.1, seed + 1)? + 1.0)?)?;
        let beta = Var::from_tensor(&uniform(&[cout], 0.1, seed + 2)?)?;
        let mean = uniform(&[cout], 0.1, seed + 3)?;
        let var = (uniform(&[cout], 0.1, seed + 4)? + 1.0)?;
        let folded = crate::fold_batch_norm(
            &w,
            None,
            gamma.as_tensor(),
            beta.as_tensor(),
            &mean,
            &var,
            BN_EPS,
        )?;
        let cfg = Conv2dCfg {
            stride,
            padding: k / 2,
            dilation: 1,
            groups: 1,
        };
        let folded = (crate::InferenceWeight::new(&folded.0, cfg)?, folded.1);
        Ok(Self {
            w,
            cfg,
            gamma,
            beta,
            mean,
            var,
            folded,
        })
    }

    /// Inference: ours = folded conv + fused bias(+ReLU); stock = candle conv + BatchNorm (running stats) + ReLU.
    fn infer(&self, x: &Tensor, ops: Ops, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        match ops {
            // One pass: conv + folded bias [+ identity] [+ ReLU] in the convolution's epilogue.
            Ops::Ours => crate::conv2d_bias_act_prepared(
                x,
                &self.folded.0,
                Some(&self.folded.1),
                residual,
                relu,
                self.cfg,
            ),
            Ops::Stock => {
                let y = conv2d_candle(x, &self.w, None, self.cfg)?;
                let c = y.dim(1)?;
                let s = (self.gamma.as_tensor() / (&self.var + BN_EPS)?.sqrt()?)?;
                let y = y
                    .broadcast_sub(&self.mean.reshape((1, c, 1, 1))?)?
                    .broadcast_mul(&s.reshape((1, c, 1, 1))?)?
                    .broadcast_add(&self.beta.as_tensor().reshape((1, c, 1, 1))?)?;
                let y = match residual {
                    Some(r) => (y + r)?,
                    None => y,
                };
                if relu { y.relu() } else { Ok(y) }
            }
        }
    }

    /// Finetune1 training: frozen convolution, training-mode BatchNorm with trainable gamma/beta (ours: the fused
    /// `batch_norm_train`; stock: the same formula in candle ops).
    fn train(&self, x: &Tensor, ops: Ops, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        let fuse_relu = relu && residual.is_none();
        let (g, b) = (self.gamma.as_tensor(), self.beta.as_tensor());
        let (y, ..) = match ops {
            Ops::Ours => crate::batch_norm_train(
                &conv2d_frozen(x, &self.w, None, self.cfg)?,
                g,
                b,
                BN_EPS,
                fuse_relu,
            )?,
            Ops::Stock => crate::batch_norm_train_candle(
                &conv2d_candle(x, &self.w, None, self.cfg)?,
                g,
                b,
                BN_EPS,
                fuse_relu,
            )?,
        };
        match residual {
            Some(r) => {
                let y = (y + r)?;
                if relu { y.relu() } else { Ok(y) }
            }
            None => Ok(y),
        }
    }

    fn vars(&self) -> [&Var; 2] {
        [&self.gamma, &self.beta]
    }
}

struct Bottleneck {
    c1: ConvBn,
    c2: ConvBn,
    c3: ConvBn,
    down: Option<ConvBn>,
}

/// torchvision's ResNet50 (v1.5) with random weights, on cxr-ops or on candle's stock ops.
pub struct ResNet50 {
    stem: ConvBn,
    blocks: Vec<Bottleneck>,
    fc_w: Var,
}

impl ResNet50 {
    pub fn new() -> Result<Self> {
        let stem = ConvBn::new(3, 64, 7, 2, 10)?;
        let mut blocks = Vec::new();
        let mut cin = 64;
        let mut seed = 100;
        for (s, nb, wd) in [(1, 3, 64), (2, 4, 128), (3, 6, 256), (4, 3, 512)] {
            for b in 0..nb {
                let stride = if b == 0 && s > 1 { 2 } else { 1 };
                let out = 4 * wd;
                seed += 10;
                blocks.push(Bottleneck {
                    c1: ConvBn::new(cin, wd, 1, 1, seed)?,
                    c2: ConvBn::new(wd, wd, 3, stride, seed + 5)?,
                    c3: ConvBn::new(wd, out, 1, 1, seed + 7)?,
                    down: if b == 0 {
                        Some(ConvBn::new(cin, out, 1, stride, seed + 9)?)
                    } else {
                        None
                    },
                });
                cin = out;
            }
        }
        let fc_w = Var::from_tensor(&uniform(&[2048, 1], 0.05, 7)?)?;
        Ok(Self { stem, blocks, fc_w })
    }

    fn pool(x: &Tensor, ops: Ops) -> Result<Tensor> {
        match ops {
            Ops::Ours => max_pool2d(x, 3, 2, 1),
            // candle's max_pool2d has no padding and no backward for kernel != stride: the exact views version.
            Ops::Stock => max_pool2d_views(x, 3, 2, 1),
        }
    }

    /// Logits [N, 1] in inference mode.
    pub fn infer(&self, x: &Tensor, ops: Ops) -> Result<Tensor> {
        let mut h = Self::pool(&self.stem.infer(x, ops, None, true)?, ops)?;
        for b in &self.blocks {
            let id = match &b.down {
                Some(d) => d.infer(&h, ops, None, false)?,
                None => h.clone(),
            };
            let y = b.c1.infer(&h, ops, None, true)?;
            let y = b.c2.infer(&y, ops, None, true)?;
            h = b.c3.infer(&y, ops, Some(&id), true)?;
        }
        h.mean((2, 3))?.matmul(self.fc_w.as_tensor())
    }

    /// One Finetune1 step's forward and backward (gradients of every BatchNorm's gamma/beta and the head); fails
    /// if a trainable parameter got no gradient.
    pub fn finetune1_step(&self, x: &Tensor, ops: Ops) -> Result<()> {
        let mut h = Self::pool(&self.stem.train(x, ops, None, true)?, ops)?;
        for b in &self.blocks {
            let id = match &b.down {
                Some(d) => d.train(&h, ops, None, false)?,
                None => h.clone(),
            };
            let y = b.c1.train(&h, ops, None, true)?;
            let y = b.c2.train(&y, ops, None, true)?;
            h = b.c3.train(&y, ops, Some(&id), true)?;
        }
        let loss = h.mean((2, 3))?.matmul(self.fc_w.as_tensor())?.mean_all()?;
        let grads = loss.backward()?;
        let mut got = usize::from(grads.get(&self.fc_w).is_some());
        for v in self.stem.vars() {
            got += usize::from(grads.get(v).is_some());
        }
        for b in &self.blocks {
            for v in
                b.c1.vars()
                    .into_iter()
                    .chain(b.c2.vars())
                    .chain(b.c3.vars())
            {
                got += usize::from(grads.get(v).is_some());
            }
        }
        let expected = 3 + 6 * self.blocks.len();
        if got != expected {
            candle_core::bail!(
                "Finetune1 step: {got} parameters got a gradient, expected {expected}"
            );
        }
        Ok(())
    }
}

/// `cxr-segment`'s UNet (five levels, no BatchNorm, nearest up-sampling + 2x2 conv, additive skips) with random
/// weights, on cxr-ops or on candle's stock ops.
pub struct UNet {
    convs: Vec<(Var, Var)>,
}

impl UNet {
    pub fn new(base: usize) -> Result<Self> {
        let mut convs = Vec::new();
        for (i, l) in unet_layers(1, base, 256).iter().enumerate() {
            for _ in 0..l.count {
                let a = (6.0 / (l.cin * l.k * l.k) as f32).sqrt();
                convs.push((
                    Var::from_tensor(&uniform(&[l.cout, l.cin, l.k, l.k], a, 1000 + i as u64)?)?,
                    Var::from_tensor(&Tensor::zeros(l.cout, DType::F32, &Device::Cpu)?)?,
                ));
            }
        }
        Ok(Self { convs })
    }

    fn conv(&self, i: usize, x: &Tensor, pad: usize, ops: Ops) -> Result<Tensor> {
        let (w, b) = &self.convs[i];
        let cfg = Conv2dCfg {
            stride: 1,
            padding: pad,
            dilation: 1,
            groups: 1,
        };
        match ops {
            Ops::Ours => conv2d(x, w.as_tensor(), Some(b.as_tensor()), cfg),
            Ops::Stock => conv2d_candle(x, w.as_tensor(), Some(b.as_tensor()), cfg),
        }
    }

    /// Forward + backward of a mean-of-logits loss; fails if a weight got no gradient.
    pub fn train_step(&self, x: &Tensor, ops: Ops) -> Result<()> {
        let pool = |h: &Tensor| match ops {
            Ops::Ours => max_pool2d(h, 2, 2, 0),
            // candle's pool: runs, but its backward is 1/4 of the true gradient (CRATE_NOTES).
            Ops::Stock => h.max_pool2d(2),
        };
        let mut skips = Vec::new();
        let mut h = x.clone();
        let mut i = 0;
        for lvl in 0..5 {
            if lvl > 0 {
                h = pool(&h)?;
            }
            h = self.conv(i, &h, 1, ops)?.relu()?;
            h = self.conv(i + 1, &h, 1, ops)?.relu()?;
            i += 2;
            skips.push(h.clone());
        }
        for lvl in (0..4).rev() {
            let (_, _, hh, ww) = h.dims4()?;
            let u = h
                .upsample_nearest2d(hh * 2, ww * 2)?
                .pad_with_zeros(2, 0, 1)?
                .pad_with_zeros(3, 0, 1)?;
            let u = self.conv(i, &u, 0, ops)?.relu()?;
            h = (&skips[lvl] + u)?;
            h = self.conv(i + 1, &h, 1, ops)?.relu()?;
            h = self.conv(i + 2, &h, 1, ops)?.relu()?;
            i += 3;
        }
        let loss = self.conv(i, &h, 0, ops)?.mean_all()?;
        let grads = loss.backward()?;
        let got = self
            .convs
            .iter()
            .filter(|(w, _)| grads.get(w).is_some())
            .count();
        if got != self.convs.len() {
            candle_core::bail!(
                "UNet step: {got} of {} weights got a gradient",
                self.convs.len()
            );
        }
        Ok(())
    }
}
