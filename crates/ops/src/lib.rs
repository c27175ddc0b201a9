//! `cxr-ops`: fast and correct CPU convolution and pooling ops for candle, a shared layer below the neural stages
//! (`cxr-model`, `cxr-segment`), like `cxr-core`.
//!
//! Inputs and outputs are NCHW candle tensors. Every op has an exact gradient (checked against candle's own op
//! where that one is right, and against finite differences in f64). On non-CPU devices every function falls back
//! to candle's own ops (cuDNN on CUDA).
//!
//! Also the fused training-mode BatchNorm ([`batch_norm_train`]) that `cxr-model`'s BatchNorm layers train with,
//! and the optimiser both trainings use ([`Adam`], [`AdamConfig`]).
//!
//! Invariants: knows nothing about images, datasets or models; the public API below is the contract the model and
//! segment stages code against (docs/ARCHITECTURE.md): signatures never change, functions may be added.

use candle_core::{DType, Result, Tensor};

/// Runs `$body` with `$t` bound to the storage's element type (f32 or f64).
macro_rules! dispatch {
    ($s:expr, |$t:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                type $t = f32;
                $body
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                $body
            }
            other => candle_core::bail!(
                "cxr-ops: unsupported dtype {:?}",
                candle_core::backend::BackendStorage::dtype(other)
            ),
        }
    };
}

pub mod alloc;
mod bn;
mod conv;
mod elem;
mod fused;
mod optim;
mod pool;
mod winograd;

pub use optim::{Adam, AdamConfig};
pub use winograd::set_winograd;

pub mod bench;

/// Convolution hyper-parameters (PyTorch's meaning; `groups` = 1 for a dense convolution).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dCfg {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl Default for Conv2dCfg {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
}

/// `x` [N, Cin, H, W] convolved with `w` [Cout, Cin/groups, KH, KW], plus `bias` [Cout]. Gradients reach `x`,
/// `w` and `bias` when they are tracked.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, cfg: Conv2dCfg) -> Result<Tensor> {
    if !fast_path(x, w, cfg) {
        return conv2d_candle(x, w, bias, cfg);
    }
    let op = conv_op(cfg);
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match bias {
        None => x.apply_op2(&w, op),
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
    }
}

/// candle's own convolution plus a broadcast bias: the reference, and the path on non-CPU devices and for grouped
/// convolutions. Note: candle 0.11's conv2d backward fails when height and width need different output paddings
/// (e.g. stride 2 on a non-square input with one odd side).
pub fn conv2d_candle(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: Conv2dCfg,
) -> Result<Tensor> {
    let y = x.conv2d(w, cfg.padding, cfg.stride, cfg.dilation, cfg.groups)?;
    add_bias(&y, bias)
}

fn conv_op(cfg: Conv2dCfg) -> conv::ConvOp {
    conv::ConvOp {
        stride: cfg.stride,
        pad: cfg.padding,
        dil: cfg.dilation,
    }
}

/// Our kernels run on CPU, f32/f64, dense (groups = 1) convolutions.
fn fast_path(x: &Tensor, w: &Tensor, cfg: Conv2dCfg) -> bool {
    x.device().is_cpu()
        && cfg.groups == 1
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && w.dtype() == x.dtype()
}

/// Like [`conv2d`] but the weight and bias are frozen: the gradient flows to `x` only and the weight gradient is
/// never computed.
pub fn conv2d_frozen(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: Conv2dCfg,
) -> Result<Tensor> {
    let w = w.detach();
    let b = bias.map(|b| b.detach());
    if !fast_path(x, &w, cfg) {
        return conv2d_candle(x, &w, b.as_ref(), cfg);
    }
    let b = match b {
        Some(b) => Some(b.contiguous()?),
        None => None,
    };
    let op = conv::FrozenConvOp {
        op: conv_op(cfg),
        w: w.contiguous()?,
        b,
    };
    x.contiguous()?.apply_op1(op)
}

/// Inference convolution with a fused epilogue: `relu?(conv(x, w) + bias[o] + residual)`, in one pass over the
/// output (ResNet's folded conv + BatchNorm bias + identity + ReLU). `residual` has the output's shape. When `x`,
/// `w`, `bias` or `residual` carries a gradient (or off the CPU), it is the same composition of [`conv2d`] (or
/// [`conv2d_frozen`] for an untracked weight), `+` and ReLU, with gradients; otherwise the result has none.
pub fn conv2d_bias_act(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    relu: bool,
    cfg: Conv2dCfg,
) -> Result<Tensor> {
    fused_infer(x, w, None, bias, residual, relu, cfg)
}

/// [`conv2d_bias_act`], with the weight's Winograd transform when the caller has it.
fn fused_infer(
    x: &Tensor,
    w: &Tensor,
    winograd_u: Option<&Tensor>,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    relu: bool,
    cfg: Conv2dCfg,
) -> Result<Tensor> {
    let tracked = x.track_op()
        || w.track_op()
        || bias.is_some_and(|b| b.track_op())
        || residual.is_some_and(|r| r.track_op());
    let same_dtype = bias.is_none_or(|b| b.dtype() == x.dtype())
        && residual.is_none_or(|r| r.dtype() == x.dtype() && r.device().is_cpu());
    if tracked || !fast_path(x, w, cfg) || !same_dtype {
        let y = if w.track_op() {
            conv2d(x, w, bias, cfg)?
        } else {
            conv2d_frozen(x, w, bias, cfg)?
        };
        let y = match residual {
            Some(r) => (y + r)?,
            None => y,
        };
        return if relu { y.relu() } else { Ok(y) };
    }
    let op = conv::FusedInferOp {
        op: conv_op(cfg),
        w: w.contiguous()?,
        b: bias.map(|b| b.contiguous()).transpose()?,
        res: residual.map(|r| r.contiguous()).transpose()?,
        relu,
        winograd_u: winograd_u.cloned(),
    };
    x.contiguous()?.apply_op1_no_bwd(&op)
}

/// A frozen convolution weight prepared for repeated inference with [`conv2d_bias_act_prepared`]: the weight and,
/// where the Winograd path takes the layer (3x3, stride 1, at least 64 channels in and out, CPU), its transformed
/// copy `[16, O, C]`, computed once here instead of in every call. Build it where the weight is cached, beside the
/// folded BatchNorm, and build it again when the weight changes.
#[derive(Debug, Clone)]
pub struct InferenceWeight {
    w: Tensor,
    winograd_u: Option<Tensor>,
}

impl InferenceWeight {
    /// Prepares `w` [O, C, KH, KW] for convolutions with `cfg`.
    pub fn new(w: &Tensor, cfg: Conv2dCfg) -> Result<Self> {
        let w = w.detach().contiguous()?;
        let winograd_u = match w.dims() {
            &[o, c, kh, kw]
                if fast_path(&w, &w, cfg)
                    && winograd::takes(o, c, kh, kw, cfg.stride, cfg.dilation) =>
            {
                fn transform<T: elem::Elem>(w: &Tensor, o: usize, c: usize) -> Result<Tensor> {
                    let v = w.flatten_all()?.to_vec1::<T>()?;
                    Tensor::from_vec(
                        winograd::transform_weights(o, c, &v),
                        (16, o, c),
                        w.device(),
                    )
                }
                Some(match w.dtype() {
                    DType::F64 => transform::<f64>(&w, o, c)?,
                    _ => transform::<f32>(&w, o, c)?,
                })
            }
            _ => None,
        };
        Ok(Self { w, winograd_u })
    }
}

/// [`conv2d_bias_act`] with a weight prepared once by [`InferenceWeight::new`]; the same results.
pub fn conv2d_bias_act_prepared(
    x: &Tensor,
    w: &InferenceWeight,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    relu: bool,
    cfg: Conv2dCfg,
) -> Result<Tensor> {
    fused_infer(x, &w.w, w.winograd_u.as_ref(), bias, residual, relu, cfg)
}

/// Max-pooling over `kernel` x `kernel` windows with the given stride and padding (padded cells are -inf, as in
/// PyTorch); output size `(H + 2p - k) / s + 1`. The backward routes each output gradient to the arg-max cell.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    if !(x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)) {
        return max_pool2d_views(x, kernel, stride, padding);
    }
    x.contiguous()?.apply_op1(pool::MaxPool {
        k: kernel,
        s: stride,
        p: padding,
    })
}

/// Folds an inference-mode BatchNorm (`gamma`, `beta`, running `mean`, `var`, `eps`) into the preceding
/// convolution's weight `w` [Cout, ...] and optional bias `b` [Cout]: returns `(w', b')` with
/// `conv(x, w') + b' == bn(conv(x, w) + b)`.
pub fn fold_batch_norm(
    w: &Tensor,
    b: Option<&Tensor>,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let cout = w.dim(0)?;
    for (name, t) in [
        ("gamma", gamma),
        ("beta", beta),
        ("mean", mean),
        ("var", var),
    ] {
        if t.dims() != [cout] {
            candle_core::bail!(
                "fold_batch_norm: {name} has shape {:?}, expected [{cout}] (weight {:?})",
                t.dims(),
                w.dims()
            );
        }
    }
    let scale = (gamma / (var + eps)?.sqrt()?)?;
    let mut wshape = vec![cout];
    wshape.extend(std::iter::repeat_n(1, w.rank() - 1));
    let w2 = w.broadcast_mul(&scale.reshape(wshape)?)?;
    let b0 = match b {
        Some(b) => b.clone(),
        None => Tensor::zeros(cout, w.dtype(), w.device())?,
    };
    let b2 = ((b0 - mean)? * scale)?.add(beta)?;
    Ok((w2, b2))
}

/// Training-mode BatchNorm of `x` [N, C, H, W] with the batch statistics, optionally followed by ReLU:
/// `y = [relu](gamma * (x - mean) / sqrt(var + eps) + beta)`. Returns `(y, mean, var)` where `mean` and `var` [C]
/// are the batch mean and the biased batch variance (detached, for the caller's running-statistics update; PyTorch
/// updates the running variance with the unbiased one, `var * M / (M - 1)`, M = N*H*W). Gradients reach `x`, `gamma`
/// and `beta` (exact, including the statistics' dependence on `x`).
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let c = x.dim(1)?;
    if x.rank() != 4 {
        candle_core::bail!("batch_norm_train: input {:?} must be 4-d (NCHW)", x.dims());
    }
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        if t.dims() != [c] {
            candle_core::bail!(
                "batch_norm_train: {name} {:?} does not match {c} channels of {:?}",
                t.dims(),
                x.dims()
            );
        }
    }
    let fast = x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && gamma.dtype() == x.dtype()
        && beta.dtype() == x.dtype();
    if !fast {
        return batch_norm_train_candle(x, gamma, beta, eps, relu);
    }
    let x = x.contiguous()?;
    // The statistics in f64 (the forward normalises with them unrounded), handed back in x's dtype.
    let st = x.apply_op1_no_bwd(&bn::ChannelStats)?;
    let v = st.to_vec2::<f64>()?;
    let st = st.to_dtype(x.dtype())?;
    let op = bn::BnTrain {
        mean: v[0].clone(),
        var: v[1].clone(),
        eps,
        relu,
    };
    let y = x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    Ok((y, st.get(0)?, st.get(1)?))
}

/// [`batch_norm_train`] in candle's own ops (the reference, and the path on other devices).
pub fn batch_norm_train_candle(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let c = x.dim(1)?;
    let mean = x.mean_keepdim((0, 2, 3))?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim((0, 2, 3))?;
    let scale = (&var + eps)?
        .sqrt()?
        .recip()?
        .broadcast_mul(&gamma.reshape((1, c, 1, 1))?)?;
    let y = xc
        .broadcast_mul(&scale)?
        .broadcast_add(&beta.reshape((1, c, 1, 1))?)?;
    let y = if relu { y.relu()? } else { y };
    Ok((y, mean.flatten_all()?.detach(), var.flatten_all()?.detach()))
}

/// `relu(x + bias[c])` for `x` [N, C, H, W] and `bias` [C].
pub fn bias_relu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if !(x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && bias.dtype() == x.dtype())
    {
        return add_bias(x, Some(bias))?.relu();
    }
    x.contiguous()?
        .apply_op2(&bias.contiguous()?, fused::BiasRelu)
}

fn add_bias(y: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        None => Ok(y.clone()),
        Some(b) => {
            let c = y.dim(1)?;
            if b.dims() != [c] {
                candle_core::bail!(
                    "bias has shape {:?}, expected [{c}] for a tensor of shape {:?}",
                    b.dims(),
                    y.dims()
                );
            }
            y.broadcast_add(&b.reshape((1, c, 1, 1))?)
        }
    }
}

/// Max-pool as the elementwise maximum over the k*k strided window views of the -inf padded input: exact forward
/// and backward using only candle ops (slow, used on non-CPU devices and as the reference in tests).
pub fn max_pool2d_views(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if kernel == 0 || stride == 0 {
        candle_core::bail!("max_pool2d: kernel {kernel} and stride {stride} must be positive");
    }
    if 2 * padding > kernel {
        candle_core::bail!("max_pool2d: padding {padding} exceeds half the kernel {kernel}");
    }
    let hp = h + 2 * padding;
    let wp = w + 2 * padding;
    if hp < kernel || wp < kernel {
        candle_core::bail!(
            "max_pool2d: input {:?} smaller than the kernel {kernel}",
            x.dims()
        );
    }
    let oh = (hp - kernel) / stride + 1;
    let ow = (wp - kernel) / stride + 1;
    // Pad to (k-1) + o*s on the bottom/right so that every strided view can be taken with a reshape.
    let he = kernel - 1 + oh * stride;
    let we = kernel - 1 + ow * stride;
    let xp = pad_neg_inf(x, padding, he - h - padding, padding, we - w - padding)?;
    let mut acc: Option<Tensor> = None;
    for ki in 0..kernel {
        for kj in 0..kernel {
            let v = xp
                .narrow(2, ki, oh * stride)?
                .narrow(3, kj, ow * stride)?
                .contiguous()?
                .reshape((n, c, oh, stride, ow, stride))?
                .narrow(3, 0, 1)?
                .narrow(5, 0, 1)?
                .reshape((n, c, oh, ow))?;
            acc = Some(match acc {
                None => v,
                Some(a) => a.maximum(&v)?,
            });
        }
    }
    acc.ok_or_else(|| candle_core::Error::Msg("max_pool2d: empty kernel".into()))
}

fn pad_neg_inf(x: &Tensor, top: usize, bottom: usize, left: usize, right: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let fill = |hh: usize, ww: usize| -> Result<Tensor> {
        Tensor::full(f32::NEG_INFINITY, (n, c, hh, ww), x.device())?.to_dtype(x.dtype())
    };
    let mut rows = Vec::new();
    if top > 0 {
        rows.push(fill(top, w)?);
    }
    rows.push(x.clone());
    if bottom > 0 {
        rows.push(fill(bottom, w)?);
    }
    let x = if rows.len() > 1 {
        Tensor::cat(&rows, 2)?
    } else {
        x.clone()
    };
    let hh = h + top + bottom;
    let mut cols = Vec::new();
    if left > 0 {
        cols.push(fill(hh, left)?);
    }
    cols.push(x.clone());
    if right > 0 {
        cols.push(fill(hh, right)?);
    }
    if cols.len() > 1 {
        Tensor::cat(&cols, 3)
    } else {
        Ok(x)
    }
}
