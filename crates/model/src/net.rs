//! The networks: ResNet50 (v1.5, `net/resnet.rs`) and VGG16 (`net/vgg.rs`) backbones under torchvision/timm
//! names, the paper's head (`net/head.rs`), their BatchNorm layer (`net/bn.rs`), and the [`Classifier`] that
//! joins them in one of the fine-tune [`Mode`]s.
//!
//! Inference folds every BatchNorm into its convolution (`cxr_ops::fold_batch_norm`) and fuses bias + ReLU;
//! training-mode BatchNorm uses batch statistics and updates the running ones (momentum 0.1, unbiased running
//! variance, as PyTorch). Frozen convolutions go through `cxr_ops::conv2d_frozen`, which never computes the
//! weight gradient.

use std::fmt;
use std::str::FromStr;

use candle_core::{D, DType, Device, Tensor};
use cxr_ops::Conv2dCfg;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{CandleContext, ModelError, Result};
use crate::params::{Init, ParamRole, ParamStore};

mod bn;
mod head;
mod resnet;
mod vgg;

use head::Head;
use resnet::ResNet;
use vgg::Vgg;

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

/// A dense convolution's config (dilation 1, one group), as both backbones use them.
fn cfg(stride: usize, padding: usize) -> Conv2dCfg {
    Conv2dCfg {
        stride,
        padding,
        dilation: 1,
        groups: 1,
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
