//! The networks: ResNet50 (v1.5) and VGG16 backbones under torchvision/timm names, the paper's head, and the
//! [`Classifier`] that joins them in one of the fine-tune [`Mode`]s.
//!
//! Inference folds every BatchNorm into its convolution (`cxr_ops::fold_batch_norm`) and fuses bias + ReLU;
//! training-mode BatchNorm uses batch statistics and updates the running ones (momentum 0.1, unbiased running
//! variance, as PyTorch). Frozen convolutions go through `cxr_ops::conv2d_frozen`, which never computes the
//! weight gradient.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use candle_core::{D, DType, Device, Tensor, Var};
use cxr_ops::Conv2dCfg;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{CandleContext, ModelError, Result};
use crate::params::{Init, ParamRole, ParamStore};

/// BatchNorm epsilon and momentum (PyTorch's; torchvision's weights were trained with them).
pub const BN_EPS: f64 = 1e-5;
pub const BN_MOMENTUM: f64 = 0.1;
/// Width of the head's hidden dense layer (Table 2).
pub const HEAD_HIDDEN: usize = 64;
/// Dropout rate of the head (Table 2).
pub const DROPOUT: f64 = 0.5;

/// A backbone architecture. `resnet50` and `vgg16` are the paper's; the parametrised forms (same names, fewer
/// blocks or channels) exist for fast tests and fixtures: `resnet:B1,B2,B3,B4:WIDTH`, `vgg:C1,C2,C3,C4,C5`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Arch {
    /// Bottleneck ResNet v1.5 (stride in the 3x3 conv); `width` is the stem width (64 for ResNet50).
    ResNet { blocks: [usize; 4], width: usize },
    /// VGG with the 2-2-3-3-3 conv layout of VGG16 and the given widths per block.
    Vgg { widths: [usize; 5] },
}

impl Arch {
    pub fn resnet50() -> Self {
        Arch::ResNet {
            blocks: [3, 4, 6, 3],
            width: 64,
        }
    }

    pub fn vgg16() -> Self {
        Arch::Vgg {
            widths: [64, 128, 256, 512, 512],
        }
    }

    /// Length of the pooled feature vector (2048 for ResNet50, 512 for VGG16).
    pub fn feature_dim(&self) -> usize {
        match self {
            Arch::ResNet { width, .. } => width * 8 * 4,
            Arch::Vgg { widths } => widths[4],
        }
    }

    /// Which tensor names of a weights file belong to the backbone (everything but the head).
    pub fn is_backbone_param(name: &str) -> bool {
        !name.starts_with("head.")
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Arch::resnet50() {
            return f.write_str("resnet50");
        }
        if *self == Arch::vgg16() {
            return f.write_str("vgg16");
        }
        match self {
            Arch::ResNet { blocks, width } => {
                let b: Vec<String> = blocks.iter().map(|x| x.to_string()).collect();
                write!(f, "resnet:{}:{width}", b.join(","))
            }
            Arch::Vgg { widths } => {
                let w: Vec<String> = widths.iter().map(|x| x.to_string()).collect();
                write!(f, "vgg:{}", w.join(","))
            }
        }
    }
}

impl FromStr for Arch {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            ModelError::Invalid(format!(
                "backbone `{s}`: expected resnet50, vgg16, resnet:B1,B2,B3,B4:WIDTH or vgg:C1,C2,C3,C4,C5"
            ))
        };
        let nums = |t: &str| -> Result<Vec<usize>> {
            t.split(',')
                .map(|x| {
                    x.trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|&v| v > 0)
                        .ok_or_else(bad)
                })
                .collect()
        };
        match s.trim().to_ascii_lowercase().as_str() {
            "resnet50" => Ok(Arch::resnet50()),
            "vgg16" => Ok(Arch::vgg16()),
            other => {
                if let Some(rest) = other.strip_prefix("resnet:") {
                    let (b, w) = rest.split_once(':').ok_or_else(bad)?;
                    let b = nums(b)?;
                    let w = nums(w)?;
                    if b.len() != 4 || w.len() != 1 {
                        return Err(bad());
                    }
                    Ok(Arch::ResNet {
                        blocks: [b[0], b[1], b[2], b[3]],
                        width: w[0],
                    })
                } else if let Some(rest) = other.strip_prefix("vgg:") {
                    let w = nums(rest)?;
                    if w.len() != 5 {
                        return Err(bad());
                    }
                    Ok(Arch::Vgg {
                        widths: [w[0], w[1], w[2], w[3], w[4]],
                    })
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl TryFrom<String> for Arch {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Arch> for String {
    fn from(a: Arch) -> String {
        a.to_string()
    }
}

/// What training updates (the paper's Finetune1/Finetune2, plus a frozen-backbone fast path and full training).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Convolutions frozen; every BatchNorm trainable (batch statistics in training, running ones updated); head.
    #[default]
    Finetune1,
    /// Finetune1 plus the last two convolution layers of the backbone.
    Finetune2,
    /// The backbone in inference mode (features computed once and cached); only the head trains.
    Frozen,
    /// Everything trains.
    Full,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Finetune1 => "finetune1",
            Mode::Finetune2 => "finetune2",
            Mode::Frozen => "frozen",
            Mode::Full => "full",
        })
    }
}

impl FromStr for Mode {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "finetune1" => Ok(Mode::Finetune1),
            "finetune2" => Ok(Mode::Finetune2),
            "frozen" => Ok(Mode::Frozen),
            "full" => Ok(Mode::Full),
            _ => Err(ModelError::Invalid(format!(
                "mode `{s}`: expected finetune1, finetune2, frozen or full"
            ))),
        }
    }
}

fn cfg(stride: usize, padding: usize) -> Conv2dCfg {
    Conv2dCfg {
        stride,
        padding,
        dilation: 1,
        groups: 1,
    }
}

fn channel_shape(rank: usize, c: usize) -> Vec<usize> {
    let mut s = vec![1; rank];
    s[1] = c;
    s
}

/// BatchNorm over dim 1 of an [N, C] or [N, C, H, W] tensor.
#[derive(Debug, Clone)]
struct Bn {
    gamma: Var,
    beta: Var,
    mean: Var,
    var: Var,
}

impl Bn {
    fn new<R: Rng>(
        store: &mut ParamStore,
        init: &mut Init<'_, R>,
        name: &str,
        c: usize,
    ) -> Result<Self> {
        Ok(Self {
            gamma: store.add(
                &format!("{name}.weight"),
                init.constant(1.0, c)?,
                ParamRole::BnAffine,
            )?,
            beta: store.add(
                &format!("{name}.bias"),
                init.constant(0.0, c)?,
                ParamRole::BnAffine,
            )?,
            mean: store.add(
                &format!("{name}.running_mean"),
                init.constant(0.0, c)?,
                ParamRole::BnRunning,
            )?,
            var: store.add(
                &format!("{name}.running_var"),
                init.constant(1.0, c)?,
                ParamRole::BnRunning,
            )?,
        })
    }

    /// Training mode: normalise with the batch statistics (biased variance), update the running ones.
    fn forward_train(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() && x.rank() == 4 && x.dtype() == candle_core::DType::F32 {
            return self.forward_train_fused(x);
        }
        let c = x.dim(1)?;
        let shape = channel_shape(x.rank(), c);
        let dims: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
        let n = x.elem_count() / c;
        let mean = x.mean_keepdim(dims.as_slice())?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(dims.as_slice())?;
        let inv = (var.clone() + BN_EPS)?.sqrt()?.recip()?;
        let scale = inv.broadcast_mul(&self.gamma.as_tensor().reshape(shape.as_slice())?)?;
        let y = xc
            .broadcast_mul(&scale)?
            .broadcast_add(&self.beta.as_tensor().reshape(shape.as_slice())?)?;
        let m = mean.detach().flatten_all()?;
        let unbiased = if n > 1 {
            n as f64 / (n as f64 - 1.0)
        } else {
            1.0
        };
        let v = (var.detach().flatten_all()? * unbiased)?;
        let rm = ((self.mean.as_tensor().detach() * (1.0 - BN_MOMENTUM))? + (m * BN_MOMENTUM)?)?;
        let rv = ((self.var.as_tensor().detach() * (1.0 - BN_MOMENTUM))? + (v * BN_MOMENTUM)?)?;
        self.mean.set(&rm)?;
        self.var.set(&rv)?;
        crate::params::bump_generation();
        Ok(y)
    }

    /// CPU NCHW path: `cxr-ops`' fused training-mode BatchNorm (two passes forward, two backward, instead of
    /// candle's ~8 and ~16 broadcast passes), then the same running update.
    fn forward_train_fused(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (y, mean, var) = cxr_ops::batch_norm_train(
            x,
            self.gamma.as_tensor(),
            self.beta.as_tensor(),
            BN_EPS,
            false,
        )?;
        let n = x.elem_count() / x.dim(1)?;
        let unbiased = if n > 1 {
            n as f64 / (n as f64 - 1.0)
        } else {
            1.0
        };
        let m = mean;
        let v = (var * unbiased)?;
        let rm = ((self.mean.as_tensor().detach() * (1.0 - BN_MOMENTUM))? + (m * BN_MOMENTUM)?)?;
        let rv = ((self.var.as_tensor().detach() * (1.0 - BN_MOMENTUM))? + (v * BN_MOMENTUM)?)?;
        self.mean.set(&rm)?;
        self.var.set(&rv)?;
        crate::params::bump_generation();
        Ok(y)
    }

    /// Inference mode with the running statistics, for [N, C] inputs (the head; convs fold instead).
    fn forward_eval(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let shape = channel_shape(x.rank(), x.dim(1)?);
        let scale = (self.gamma.as_tensor().detach()
            / (self.var.as_tensor().detach() + BN_EPS)?.sqrt()?)?;
        let shift = (self.beta.as_tensor().detach() - (self.mean.as_tensor().detach() * &scale)?)?;
        x.broadcast_mul(&scale.reshape(shape.as_slice())?)?
            .broadcast_add(&shift.reshape(shape.as_slice())?)
    }
}

/// A bias-free convolution followed by BatchNorm (ResNet).
#[derive(Debug, Clone)]
struct ConvBn {
    w: Var,
    bn: Bn,
    cfg: Conv2dCfg,
    trainable: bool,
    /// The folded (weight, bias) of inference and the parameter generation they were computed at: folding
    /// rewrites the whole weight tensor (and the Winograd layers transform it), which every inference pass would
    /// otherwise repeat.
    folded: Arc<Mutex<Option<(u64, cxr_ops::InferenceWeight, Tensor)>>>,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new<R: Rng>(
        store: &mut ParamStore,
        init: &mut Init<'_, R>,
        conv: &str,
        bn: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let w = store.add(
            &format!("{conv}.weight"),
            init.kaiming_out(&[cout, cin, k, k])?,
            ParamRole::ConvWeight,
        )?;
        Ok(Self {
            w,
            bn: Bn::new(store, init, bn, cout)?,
            cfg: cfg(stride, pad),
            trainable: false,
            folded: Arc::default(),
        })
    }

    fn forward_train(&self, x: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
        let y = if self.trainable {
            cxr_ops::conv2d(x, self.w.as_tensor(), None, self.cfg)?
        } else {
            cxr_ops::conv2d_frozen(x, self.w.as_tensor(), None, self.cfg)?
        };
        let y = self.bn.forward_train(&y)?;
        if relu { y.relu() } else { Ok(y) }
    }

    /// Inference: relu?(conv(x, folded weight) + folded bias [+ residual]), fused into the convolution's epilogue.
    fn forward_eval_fused(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> candle_core::Result<Tensor> {
        let (w, b) = self.folded()?;
        cxr_ops::conv2d_bias_act_prepared(x, &w, Some(&b), residual, relu, self.cfg)
    }

    /// The BatchNorm folded into the weight, recomputed only when a parameter changed since the last fold.
    fn folded(&self) -> candle_core::Result<(cxr_ops::InferenceWeight, Tensor)> {
        let generation = crate::params::generation();
        let mut cache = self
            .folded
            .lock()
            .map_err(|_| candle_core::Error::Msg("folded BatchNorm cache poisoned".into()))?;
        if let Some((g, w, b)) = cache.as_ref()
            && *g == generation
        {
            return Ok((w.clone(), b.clone()));
        }
        let (w, b) = cxr_ops::fold_batch_norm(
            &self.w.as_tensor().detach(),
            None,
            &self.bn.gamma.as_tensor().detach(),
            &self.bn.beta.as_tensor().detach(),
            &self.bn.mean.as_tensor().detach(),
            &self.bn.var.as_tensor().detach(),
            BN_EPS,
        )?;
        let w = cxr_ops::InferenceWeight::new(&w, self.cfg)?;
        *cache = Some((generation, w.clone(), b.clone()));
        Ok((w, b))
    }

    fn forward_eval(&self, x: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
        self.forward_eval_fused(x, None, relu)
    }

    fn forward(&self, x: &Tensor, train: bool, relu: bool) -> candle_core::Result<Tensor> {
        if train {
            self.forward_train(x, relu)
        } else {
            self.forward_eval(x, relu)
        }
    }
}

#[derive(Debug, Clone)]
struct Bottleneck {
    c1: ConvBn,
    c2: ConvBn,
    c3: ConvBn,
    down: Option<ConvBn>,
}

impl Bottleneck {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = self.c1.forward(x, train, true)?;
        let y = self.c2.forward(&y, train, true)?;
        let identity = match &self.down {
            Some(d) => d.forward(x, train, false)?,
            None => x.clone(),
        };
        if train {
            let y = self.c3.forward_train(&y, false)?;
            (y + identity)?.relu()
        } else {
            // relu(conv3 + folded bias + identity) in the convolution's epilogue.
            self.c3.forward_eval_fused(&y, Some(&identity), true)
        }
    }
}

#[derive(Debug, Clone)]
struct ResNet {
    stem: ConvBn,
    layers: Vec<Vec<Bottleneck>>,
}

impl ResNet {
    fn new<R: Rng>(
        store: &mut ParamStore,
        init: &mut Init<'_, R>,
        blocks: [usize; 4],
        width: usize,
    ) -> Result<Self> {
        let stem = ConvBn::new(store, init, "conv1", "bn1", 3, width, 7, 2, 3)?;
        let mut inplanes = width;
        let mut layers = Vec::new();
        for (l, &n) in blocks.iter().enumerate() {
            let planes = width << l;
            let out = planes * 4;
            let stride = if l == 0 { 1 } else { 2 };
            let mut layer = Vec::new();
            for i in 0..n {
                let p = format!("layer{}.{i}", l + 1);
                let s = if i == 0 { stride } else { 1 };
                let cin = if i == 0 { inplanes } else { out };
                let down = if i == 0 && (s != 1 || cin != out) {
                    Some(ConvBn::new(
                        store,
                        init,
                        &format!("{p}.downsample.0"),
                        &format!("{p}.downsample.1"),
                        cin,
                        out,
                        1,
                        s,
                        0,
                    )?)
                } else {
                    None
                };
                layer.push(Bottleneck {
                    c1: ConvBn::new(
                        store,
                        init,
                        &format!("{p}.conv1"),
                        &format!("{p}.bn1"),
                        cin,
                        planes,
                        1,
                        1,
                        0,
                    )?,
                    c2: ConvBn::new(
                        store,
                        init,
                        &format!("{p}.conv2"),
                        &format!("{p}.bn2"),
                        planes,
                        planes,
                        3,
                        s,
                        1,
                    )?,
                    c3: ConvBn::new(
                        store,
                        init,
                        &format!("{p}.conv3"),
                        &format!("{p}.bn3"),
                        planes,
                        out,
                        1,
                        1,
                        0,
                    )?,
                    down,
                });
            }
            inplanes = out;
            layers.push(layer);
        }
        Ok(Self { stem, layers })
    }

    fn convs_mut(&mut self) -> Vec<(String, &mut ConvBn)> {
        let mut v: Vec<(String, &mut ConvBn)> = vec![("conv1".into(), &mut self.stem)];
        for (l, layer) in self.layers.iter_mut().enumerate() {
            for (i, b) in layer.iter_mut().enumerate() {
                let p = format!("layer{}.{i}", l + 1);
                // Forward order: conv1, conv2, (downsample), conv3 -- the last two are conv2/conv3 of the last
                // block only when it has no downsample, which holds for every block but the first of a layer.
                v.push((format!("{p}.conv1"), &mut b.c1));
                v.push((format!("{p}.conv2"), &mut b.c2));
                if let Some(d) = b.down.as_mut() {
                    v.push((format!("{p}.downsample.0"), d));
                }
                v.push((format!("{p}.conv3"), &mut b.c3));
            }
        }
        v
    }

    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut y = self.stem.forward(x, train, true)?;
        y = cxr_ops::max_pool2d(&y, 3, 2, 1)?;
        for layer in &self.layers {
            for b in layer {
                y = b.forward(&y, train)?;
            }
        }
        Ok(y)
    }
}

/// VGG conv (with bias) + ReLU.
#[derive(Debug, Clone)]
struct VggConv {
    w: Var,
    b: Var,
    trainable: bool,
    pool_after: bool,
}

#[derive(Debug, Clone)]
struct Vgg {
    convs: Vec<VggConv>,
}

impl Vgg {
    fn new<R: Rng>(
        store: &mut ParamStore,
        init: &mut Init<'_, R>,
        widths: [usize; 5],
    ) -> Result<Self> {
        let per_block = [2, 2, 3, 3, 3];
        let mut idx = 0;
        let mut cin = 3;
        let mut convs = Vec::new();
        for (blk, &n) in per_block.iter().enumerate() {
            let cout = widths[blk];
            for i in 0..n {
                let w = store.add(
                    &format!("features.{idx}.weight"),
                    init.kaiming_out(&[cout, cin, 3, 3])?,
                    ParamRole::ConvWeight,
                )?;
                let b = store.add(
                    &format!("features.{idx}.bias"),
                    init.constant(0.0, cout)?,
                    ParamRole::ConvBias,
                )?;
                idx += 2; // conv, relu
                let pool_after = i + 1 == n;
                if pool_after {
                    idx += 1;
                }
                convs.push(VggConv {
                    w,
                    b,
                    trainable: false,
                    pool_after,
                });
                cin = cout;
            }
        }
        Ok(Self { convs })
    }

    fn conv_names(&self) -> Vec<String> {
        let mut idx = 0;
        self.convs
            .iter()
            .map(|c| {
                let name = format!("features.{idx}");
                idx += if c.pool_after { 3 } else { 2 };
                name
            })
            .collect()
    }

    /// Output of the last conv + ReLU (before the last max-pool): the Grad-CAM feature map.
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        let last = self.convs.len() - 1;
        for (i, c) in self.convs.iter().enumerate() {
            y = if train && c.trainable {
                cxr_ops::conv2d(&y, c.w.as_tensor(), Some(c.b.as_tensor()), cfg(1, 1))?.relu()?
            } else {
                let z = cxr_ops::conv2d_frozen(&y, &c.w.as_tensor().detach(), None, cfg(1, 1))?;
                cxr_ops::bias_relu(&z, &c.b.as_tensor().detach())?
            };
            if c.pool_after && i != last {
                y = cxr_ops::max_pool2d(&y, 2, 2, 0)?;
            }
        }
        Ok(y)
    }
}

#[derive(Debug, Clone)]
enum Backbone {
    ResNet(ResNet),
    Vgg(Vgg),
}

impl Backbone {
    fn feature_map(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Backbone::ResNet(r) => r.forward(x, train),
            Backbone::Vgg(v) => v.forward(x, train),
        }
    }

    /// Feature map → [N, C] pooled features (VGG16 keeps its last max-pool before the average, as Keras'
    /// `include_top=False` + GAP does).
    fn pool(&self, fmap: &Tensor) -> candle_core::Result<Tensor> {
        let f = match self {
            Backbone::ResNet(_) => fmap.clone(),
            Backbone::Vgg(_) => cxr_ops::max_pool2d(fmap, 2, 2, 0)?,
        };
        f.mean(D::Minus1)?.mean(D::Minus1)
    }
}

/// The paper's head (Table 2): GAP → Dense(64, ReLU) → Dropout(0.5) → BatchNorm → Dense(1); sigmoid lives in
/// the loss and the score. One addition: a fixed per-feature standardisation in front of Dense(64)
/// (`head.norm.mean`, `head.norm.scale`; identity until [`Classifier::set_feature_norm`]), because pooled
/// features of a randomly initialised backbone sit at arbitrary scales per channel and the head then fails
/// to learn from a few dozen images.
#[derive(Debug, Clone)]
struct Head {
    /// 1 when every input image is standardised on its own before the backbone
    /// ([`Classifier::set_per_image_norm`]), else 0. A model property, saved with it, so that every consumer
    /// (prediction, Grad-CAM, the audits) feeds the backbone what training did.
    input_norm: Var,
    norm_mean: Var,
    norm_scale: Var,
    w1: Var,
    b1: Var,
    bn: Bn,
    w2: Var,
    b2: Var,
}

impl Head {
    fn new<R: Rng>(store: &mut ParamStore, init: &mut Init<'_, R>, inp: usize) -> Result<Self> {
        Ok(Self {
            input_norm: store.add(INPUT_NORM, init.constant(0.0, 1)?, ParamRole::FeatureNorm)?,
            norm_mean: store.add(
                "head.norm.mean",
                init.constant(0.0, inp)?,
                ParamRole::FeatureNorm,
            )?,
            norm_scale: store.add(
                "head.norm.scale",
                init.constant(1.0, inp)?,
                ParamRole::FeatureNorm,
            )?,
            w1: store.add(
                "head.fc1.weight",
                init.glorot(HEAD_HIDDEN, inp)?,
                ParamRole::Head,
            )?,
            b1: store.add(
                "head.fc1.bias",
                init.constant(0.0, HEAD_HIDDEN)?,
                ParamRole::Head,
            )?,
            bn: Bn::new(store, init, "head.bn", HEAD_HIDDEN)?,
            w2: store.add(
                "head.fc2.weight",
                init.glorot(1, HEAD_HIDDEN)?,
                ParamRole::Head,
            )?,
            b2: store.add("head.fc2.bias", init.constant(0.0, 1)?, ParamRole::Head)?,
        })
    }

    fn dense(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&w.t()?)?.broadcast_add(b)
    }

    /// `dropout_mask` (already scaled by 1/(1-p)) switches training mode on; `None` is inference.
    fn forward(&self, f: &Tensor, dropout_mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let f = f
            .broadcast_sub(&self.norm_mean.as_tensor().detach())?
            .broadcast_mul(&self.norm_scale.as_tensor().detach())?;
        let f = &f;
        match dropout_mask {
            Some(mask) => {
                let h = Self::dense(f, self.w1.as_tensor(), self.b1.as_tensor())?.relu()?;
                let h = (h * mask)?;
                let h = self.bn.forward_train(&h)?;
                Self::dense(&h, self.w2.as_tensor(), self.b2.as_tensor())?.squeeze(1)
            }
            None => {
                let d = |v: &Var| v.as_tensor().detach();
                let h = Self::dense(f, &d(&self.w1), &d(&self.b1))?.relu()?;
                let h = self.bn.forward_eval(&h)?;
                Self::dense(&h, &d(&self.w2), &d(&self.b2))?.squeeze(1)
            }
        }
    }
}

/// Name of the per-image input standardisation flag in `model.safetensors` (absent in older files: off).
pub const INPUT_NORM: &str = "head.input_norm";

/// A backbone plus the paper's head, in a fine-tune mode.
#[derive(Debug, Clone)]
pub struct Classifier {
    arch: Arch,
    mode: Mode,
    store: ParamStore,
    backbone: Backbone,
    head: Head,
    device: Device,
    pretrained: bool,
}

impl Classifier {
    /// A randomly initialised classifier (He-normal convolutions, Glorot dense layers) from a seeded RNG.
    pub fn new(arch: &Arch, mode: Mode, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut init = Init {
            rng: &mut rng,
            device,
        };
        let mut store = ParamStore::default();
        let mut backbone = match arch {
            Arch::ResNet { blocks, width } => {
                Backbone::ResNet(ResNet::new(&mut store, &mut init, *blocks, *width)?)
            }
            Arch::Vgg { widths } => Backbone::Vgg(Vgg::new(&mut store, &mut init, *widths)?),
        };
        let head = Head::new(&mut store, &mut init, arch.feature_dim())?;

        // Which convolutions train in this mode.
        let conv_names: Vec<String> = match &mut backbone {
            Backbone::ResNet(r) => r.convs_mut().into_iter().map(|(n, _)| n).collect(),
            Backbone::Vgg(v) => v.conv_names(),
        };
        let last_two: Vec<String> = conv_names.iter().rev().take(2).cloned().collect();
        let conv_trains = |name: &str| match mode {
            Mode::Full => true,
            Mode::Finetune2 => last_two.iter().any(|n| n == name),
            Mode::Finetune1 | Mode::Frozen => false,
        };
        match &mut backbone {
            Backbone::ResNet(r) => {
                for (name, c) in r.convs_mut() {
                    c.trainable = conv_trains(&name);
                }
            }
            Backbone::Vgg(v) => {
                let names = v.conv_names();
                for (c, name) in v.convs.iter_mut().zip(names) {
                    c.trainable = conv_trains(&name);
                }
            }
        }
        let names: Vec<(String, ParamRole)> =
            store.iter().map(|(n, p)| (n.clone(), p.role)).collect();
        for (name, role) in names {
            let layer = name.rsplit_once('.').map(|(l, _)| l).unwrap_or(&name);
            let trainable = match role {
                ParamRole::Head => true,
                ParamRole::BnRunning | ParamRole::FeatureNorm => false,
                ParamRole::BnAffine if name.starts_with("head.") => true,
                ParamRole::BnAffine => mode != Mode::Frozen,
                ParamRole::ConvWeight | ParamRole::ConvBias => conv_trains(layer),
            };
            store.set_trainable(&name, trainable);
        }
        Ok(Self {
            arch: arch.clone(),
            mode,
            store,
            backbone,
            head,
            device: device.clone(),
            pretrained: false,
        })
    }

    /// Loads backbone weights from a torchvision/timm safetensors file, names unchanged (`conv1.weight`,
    /// `layer1.0.bn1.running_mean`, `features.0.weight`, ...). Extra tensors (`fc.*`, `classifier.*`,
    /// `num_batches_tracked`) are ignored; a missing or mis-shaped tensor is an error naming it.
    pub fn load_backbone(&mut self, path: &std::path::Path) -> Result<()> {
        let n = self.store.load_safetensors(path, Arch::is_backbone_param)?;
        tracing::info!(file = %path.display(), tensors = n, "loaded backbone weights");
        self.pretrained = true;
        Ok(())
    }

    /// Loads a whole classifier saved by [`Classifier::save`] (`model.safetensors`: backbone and head).
    pub fn load_all(&mut self, path: &std::path::Path) -> Result<()> {
        let tensors = crate::params::read_safetensors(path)?;
        let has_flag = tensors.contains_key(INPUT_NORM);
        self.store
            .load_map(&tensors, path, |n| has_flag || n != INPUT_NORM)?;
        if !has_flag {
            self.set_per_image_norm(false)?;
        }
        self.pretrained = true;
        Ok(())
    }

    /// Saves every tensor (backbone names as torchvision's, head under `head.`) atomically.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        self.store.save(path)
    }

    pub fn arch(&self) -> &Arch {
        &self.arch
    }
    pub fn mode(&self) -> Mode {
        self.mode
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    /// Whether backbone weights were loaded from a file (false: random initialisation).
    pub fn pretrained(&self) -> bool {
        self.pretrained
    }
    pub fn params(&self) -> &ParamStore {
        &self.store
    }

    /// Scalars the optimiser updates in this mode (184,449 for ResNet50 in Finetune1).
    pub fn trainable_parameter_count(&self) -> usize {
        self.store.trainable_count()
    }

    /// Switches the per-image input standardisation on or off: each image's channels are shifted and scaled
    /// to mean 0 and standard deviation 1 over its own pixels before the backbone. It removes a source's
    /// global brightness and contrast (black and white levels, exposure), one lever against acquisition
    /// shortcuts (`../shared/docs/SYNTH_NOTES.md`); texture, sharpness and the shape of the grey curve stay.
    pub fn set_per_image_norm(&self, on: bool) -> Result<()> {
        let v =
            Tensor::new(&[if on { 1f32 } else { 0.0 }], &self.device).ctx(|| INPUT_NORM.into())?;
        self.head.input_norm.set(&v).ctx(|| INPUT_NORM.into())
    }

    /// Whether inputs are standardised per image ([`Classifier::set_per_image_norm`]).
    pub fn per_image_norm(&self) -> bool {
        self.head
            .input_norm
            .as_tensor()
            .to_vec1::<f32>()
            .is_ok_and(|v| v.first().is_some_and(|&f| f > 0.5))
    }

    /// The backbone's feature map of `x`, after the per-image standardisation when it is on (the one entry
    /// point to the backbone, so no path can skip it).
    fn backbone_map(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !self.per_image_norm() {
            return self.backbone.feature_map(x, train);
        }
        let (n, c, h, w) = x.dims4()?;
        let flat = x.reshape((n, c, h * w))?;
        let mean = flat.mean_keepdim(D::Minus1)?;
        let centered = flat.broadcast_sub(&mean)?;
        let std = (centered.sqr()?.mean_keepdim(D::Minus1)? + 1e-6)?.sqrt()?;
        let x = centered.broadcast_div(&std)?.reshape((n, c, h, w))?;
        self.backbone.feature_map(&x, train)
    }

    /// Output of the last convolutional block (NCHW), inference mode (BatchNorm with running statistics,
    /// folded); mutates nothing. Gradients flow to `x` only.
    pub fn feature_map(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.backbone_map(x, false)
    }

    /// Pooling plus head in inference mode: the Covid-19 logits, shape [N]. Mutates nothing; differentiable
    /// with respect to `fmap` (Grad-CAM).
    pub fn logit_from_feature_map(&self, fmap: &Tensor) -> candle_core::Result<Tensor> {
        self.head.forward(&self.backbone.pool(fmap)?, None)
    }

    /// The feature map minus the head's standardisation mean per channel ([`Classifier::set_feature_norm`]):
    /// Grad-CAM's activations measured from the training images' average instead of from zero. With a
    /// standardised head the logit follows `GAP(A) - mean`, so the map of raw activations can be negative
    /// everywhere (an empty CAM) for a confident positive. Identity while the standardisation is unset.
    pub fn centered_feature_map(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.feature_map(x)?.broadcast_sub(&self.norm_mean_4d()?)
    }

    /// Inverse of [`Classifier::centered_feature_map`] then [`Classifier::logit_from_feature_map`]; the
    /// gradient with respect to the centered map equals the one with respect to the raw map.
    pub fn logit_from_centered_feature_map(&self, fmap: &Tensor) -> candle_core::Result<Tensor> {
        self.logit_from_feature_map(&fmap.broadcast_add(&self.norm_mean_4d()?)?)
    }

    fn norm_mean_4d(&self) -> candle_core::Result<Tensor> {
        let mean = self.head.norm_mean.as_tensor().detach();
        let c = mean.dim(0)?;
        mean.reshape((1, c, 1, 1))
    }

    /// Pooled backbone features [N, F] in inference mode (embeddings; the frozen-mode cache).
    pub fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.backbone.pool(&self.feature_map(x)?)
    }

    /// Pooled backbone features [N, F] in training mode (batch statistics; updates the BatchNorm running
    /// statistics): what Finetune1 trains through.
    pub fn features_train(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.backbone.pool(&self.backbone_map(x, true)?)
    }

    /// Pooled features [N, F] and logits [N] in inference mode from one backbone pass (the scorer's source
    /// probe needs both).
    pub fn features_and_logits(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let pooled = self.backbone.pool(&self.feature_map(x)?)?;
        let logits = self.head.forward(&pooled, None)?;
        Ok((pooled, logits))
    }

    /// Logits [N] in inference mode.
    pub fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.logit_from_feature_map(&self.feature_map(x)?)
    }

    /// Sets the head's input standardisation from pooled features [N, F] of the training images: mean and
    /// 1/sqrt(var + eps) per feature, where eps (1 % of the median variance) keeps dead channels (variance 0
    /// on the training images) from blowing up on other images.
    pub fn set_feature_norm(&self, features: &Tensor) -> Result<()> {
        let stats = || -> candle_core::Result<(Tensor, Tensor)> {
            let f = features.to_dtype(DType::F32)?;
            let mean = f.mean(0)?;
            let var = f.broadcast_sub(&mean)?.sqr()?.mean(0)?;
            let mut sorted = var.to_vec1::<f32>()?;
            sorted.sort_by(f32::total_cmp);
            let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0) as f64;
            let eps = (median * 1e-2).max(1e-12);
            let scale = (var + eps)?.sqrt()?.recip()?;
            Ok((mean, scale))
        };
        let (mean, scale) = stats().ctx(|| "feature standardisation".into())?;
        self.head
            .norm_mean
            .set(&mean)
            .ctx(|| "setting head.norm.mean".into())?;
        self.head
            .norm_scale
            .set(&scale)
            .ctx(|| "setting head.norm.scale".into())
    }

    /// Head logits from pooled features, inference mode.
    pub fn head_logits(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        self.head.forward(features, None)
    }

    /// Training-mode head on pooled features; the dropout mask is drawn from `rng`.
    pub fn head_train<R: Rng>(
        &self,
        features: &Tensor,
        rng: &mut R,
    ) -> candle_core::Result<Tensor> {
        let n = features.dim(0)?;
        let keep = 1.0 - DROPOUT;
        let mask: Vec<f32> = (0..n * HEAD_HIDDEN)
            .map(|_| {
                if rng.random::<f64>() < keep {
                    (1.0 / keep) as f32
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (n, HEAD_HIDDEN), features.device())?;
        self.head.forward(features, Some(&mask))
    }

    /// Training-mode forward of images (backbone BatchNorm in batch-statistics mode unless the mode is
    /// `frozen`), logits [N]. Updates BatchNorm running statistics.
    pub fn forward_train<R: Rng>(&self, x: &Tensor, rng: &mut R) -> candle_core::Result<Tensor> {
        let train_backbone = self.mode != Mode::Frozen;
        let fmap = self.backbone_map(x, train_backbone)?;
        let f = self.backbone.pool(&fmap)?;
        self.head_train(&f, rng)
    }
}

/// Numerically stable mean binary cross-entropy on logits: `relu(x) - x*y + log(1 + exp(-|x|))` (candle's own
/// overflows at |x| ~ 40).
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let a = logits.relu()?;
    let b = (logits * targets)?;
    let c = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    ((a - b)? + c)?.mean_all()
}
