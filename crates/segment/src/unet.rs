//! The lung UNet of Rajaraman et al. (PAPER.md, pre-processing step 4), with a width multiplier.
//!
//! Encoder: five levels of two 3x3 ReLU convolutions with `base * {1, 2, 4, 8, 16}` filters (the paper's
//! base is 64: 64-128-256-512-1024), 2x2 max-pooling between levels, dropout 0.5 after the two deepest
//! levels. Decoder: nearest up-sampling x2, a 2x2 ReLU convolution ("same" padding as Keras pads it: one
//! extra row/column at the bottom/right), merged with the skip by **addition**, then two 3x3 ReLU
//! convolutions. Output: a 1x1 convolution; [`UNet::forward`] returns logits, the sigmoid is applied by the
//! caller (the loss works on logits for stability, inference applies `sigmoid`).
//!
//! Why these choices: integer nearest up-sampling has a correct CPU backward in candle (bilinear has none);
//! max-pooling goes through `cxr_ops::max_pool2d` because candle's own pooling backward is wrong. Weights are
//! initialised from a seeded Rust RNG (He normal, like the Keras original) because candle's CPU RNG cannot
//! be seeded. Any input side that is a multiple of 16 works; the model records the side it was trained at.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use cxr_ops::Conv2dCfg;
use rand::Rng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::SegmentError;
use crate::error::TensorContext;

/// Number of resolution levels (the paper's five: 64 → 1024 filters at base 64).
pub const LEVELS: usize = 5;
/// Magic value in the weights' metadata, so a wrong file is refused with a clear message.
const FORMAT: &str = "cxr-segment-unet-v1";

/// Shape of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UNetConfig {
    /// Filters of the first level; level `i` has `base * 2^i`. The paper's value is 64.
    pub base: usize,
    /// Side of the square input the model works at (256 in the paper). A multiple of 16.
    pub size: u32,
}

impl UNetConfig {
    pub fn validate(&self) -> Result<(), SegmentError> {
        if self.base == 0 || self.size == 0 || !self.size.is_multiple_of(1 << (LEVELS - 1)) {
            return Err(SegmentError::Config(format!(
                "UNet base {} / size {}: base must be > 0 and size a positive multiple of 16",
                self.base, self.size
            )));
        }
        Ok(())
    }

    /// Every convolution: (name, in channels, out channels, kernel side).
    pub fn layers(&self) -> Vec<(String, usize, usize, usize)> {
        let c = |i: usize| self.base << i;
        let mut v = Vec::new();
        for i in 0..LEVELS {
            let cin = if i == 0 { 1 } else { c(i - 1) };
            v.push((format!("enc{i}.conv1"), cin, c(i), 3));
            v.push((format!("enc{i}.conv2"), c(i), c(i), 3));
        }
        for i in (0..LEVELS - 1).rev() {
            v.push((format!("up{i}"), c(i + 1), c(i), 2));
            v.push((format!("dec{i}.conv1"), c(i), c(i), 3));
            v.push((format!("dec{i}.conv2"), c(i), c(i), 3));
        }
        v.push(("out".to_string(), c(0), 1, 1));
        v
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        self.layers()
            .iter()
            .map(|(_, i, o, k)| o * i * k * k + o)
            .sum()
    }
}

struct Conv {
    w: Tensor,
    b: Tensor,
}

/// The UNet. Holds its weights as tensors; when built with [`UNet::trainable`] they are the tensors of
/// [`Var`]s, so an optimiser updating the vars updates the model in place.
pub struct UNet {
    config: UNetConfig,
    convs: HashMap<String, Conv>,
    device: Device,
}

/// Dropout rate on the two deepest levels (the paper's 0.5).
pub const DROPOUT: f64 = 0.5;

impl UNet {
    /// A freshly initialised network (He normal weights, zero biases) with its trainable variables, in
    /// the order of [`UNetConfig::layers`] (weight, then bias).
    pub fn trainable(
        config: UNetConfig,
        seed: u64,
        device: &Device,
    ) -> Result<(Self, Vec<(String, Var)>), SegmentError> {
        config.validate()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = HashMap::new();
        for (name, cin, cout, k) in config.layers() {
            let fan_in = (cin * k * k) as f64;
            let normal = Normal::new(0.0f64, (2.0 / fan_in).sqrt())
                .map_err(|e| SegmentError::Config(format!("init {name}: {e}")))?;
            let n = cout * cin * k * k;
            let w: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng) as f32).collect();
            let w =
                Tensor::from_vec(w, (cout, cin, k, k), device).ctx(|| format!("init {name}"))?;
            let b = Tensor::zeros(cout, DType::F32, device).ctx(|| format!("init {name}"))?;
            tensors.insert(format!("{name}.weight"), w);
            tensors.insert(format!("{name}.bias"), b);
        }
        Self::from_tensors_trainable(config, tensors, device)
    }

    /// Builds trainable variables from named tensors (fresh or loaded from a checkpoint).
    pub(crate) fn from_tensors_trainable(
        config: UNetConfig,
        mut tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<(Self, Vec<(String, Var)>), SegmentError> {
        let mut vars = Vec::new();
        let mut as_vars = HashMap::new();
        for (name, ..) in config.layers() {
            for part in ["weight", "bias"] {
                let key = format!("{name}.{part}");
                let t = tensors.remove(&key).ok_or_else(|| SegmentError::Tensor {
                    context: format!("building the UNet: tensor `{key}` missing"),
                    source: candle_core::Error::Msg("missing tensor".into()),
                })?;
                let var = Var::from_tensor(&t).ctx(|| format!("tensor `{key}`"))?;
                as_vars.insert(key.clone(), var.as_tensor().clone());
                vars.push((key, var));
            }
        }
        let model = Self::from_tensors(config, as_vars, device)?;
        Ok((model, vars))
    }

    /// Builds an inference model from named tensors, checking every shape.
    pub(crate) fn from_tensors(
        config: UNetConfig,
        mut tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self, SegmentError> {
        config.validate()?;
        let mut convs = HashMap::new();
        for (name, cin, cout, k) in config.layers() {
            let mut take = |part: &str, dims: &[usize]| -> Result<Tensor, SegmentError> {
                let key = format!("{name}.{part}");
                let t = tensors.remove(&key).ok_or_else(|| SegmentError::Tensor {
                    context: format!("tensor `{key}`"),
                    source: candle_core::Error::Msg("missing from the weights".into()),
                })?;
                if t.dims() != dims {
                    return Err(SegmentError::Tensor {
                        context: format!("tensor `{key}`"),
                        source: candle_core::Error::Msg(format!(
                            "shape {:?}, expected {dims:?}",
                            t.dims()
                        )),
                    });
                }
                t.to_dtype(DType::F32)
                    .and_then(|t| t.to_device(device))
                    .ctx(|| format!("tensor `{key}`"))
            };
            let w = take("weight", &[cout, cin, k, k])?;
            let b = take("bias", &[cout])?;
            convs.insert(name, Conv { w, b });
        }
        Ok(Self {
            config,
            convs,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> UNetConfig {
        self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    fn conv(&self, name: &str, x: &Tensor, padding: usize) -> candle_core::Result<Tensor> {
        let c = self
            .convs
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("no layer `{name}`")))?;
        let cfg = Conv2dCfg {
            stride: 1,
            padding,
            dilation: 1,
            groups: 1,
        };
        cxr_ops::conv2d(x, &c.w, Some(&c.b), cfg)
    }

    /// Logits [N, 1, H, W] for grey inputs [N, 1, H, W] in [0, 1]. `dropout` is `Some(rng)` in training
    /// (masks drawn from the seeded RNG), `None` at inference.
    pub fn forward<R: Rng>(
        &self,
        x: &Tensor,
        mut dropout: Option<&mut R>,
    ) -> candle_core::Result<Tensor> {
        let mut skips = Vec::with_capacity(LEVELS);
        let mut h = x.clone();
        for i in 0..LEVELS {
            if i > 0 {
                h = cxr_ops::max_pool2d(&h, 2, 2, 0)?;
            }
            h = self.conv(&format!("enc{i}.conv1"), &h, 1)?.relu()?;
            h = self.conv(&format!("enc{i}.conv2"), &h, 1)?.relu()?;
            if let (true, Some(rng)) = (i >= LEVELS - 2, dropout.as_deref_mut()) {
                h = apply_dropout(&h, rng)?;
            }
            skips.push(h.clone());
        }
        for i in (0..LEVELS - 1).rev() {
            let (_, _, hh, ww) = h.dims4()?;
            let u = h.upsample_nearest2d(hh * 2, ww * 2)?;
            // Keras "same" for an even kernel pads one row/column after, none before.
            let u = u.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
            let u = self.conv(&format!("up{i}"), &u, 0)?.relu()?;
            h = (&skips[i] + u)?;
            h = self.conv(&format!("dec{i}.conv1"), &h, 1)?.relu()?;
            h = self.conv(&format!("dec{i}.conv2"), &h, 1)?.relu()?;
        }
        self.conv("out", &h, 0)
    }

    /// Probabilities [N, 1, H, W] at inference (no dropout, no gradient graph kept).
    pub fn predict(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let logits = self.forward::<rand_chacha::ChaCha8Rng>(&x.detach(), None)?;
        candle_nn::ops::sigmoid(&logits.detach())
    }

    /// Every weight by name (for saving).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut v = Vec::new();
        for (name, ..) in self.config.layers() {
            if let Some(c) = self.convs.get(&name) {
                v.push((format!("{name}.weight"), c.w.clone()));
                v.push((format!("{name}.bias"), c.b.clone()));
            }
        }
        v
    }

    /// Serialises the weights with the config in the safetensors metadata.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SegmentError> {
        serialize(&self.tensors(), self.config, None)
    }

    /// Writes the weights atomically.
    pub fn save(&self, path: &Path) -> Result<(), SegmentError> {
        cxr_core::fsutil::write_atomic(path, &self.to_bytes()?)?;
        Ok(())
    }

    /// Loads weights written by [`UNet::save`] (or the best weights of a training run).
    pub fn load(path: &Path, device: &Device) -> Result<Self, SegmentError> {
        let bytes = std::fs::read(path).map_err(|e| SegmentError::io(path, e))?;
        Self::from_bytes(&bytes, path, device)
    }

    /// [`UNet::load`] of a weights file held in memory (the embedded default); `name` stands for the file
    /// in errors.
    pub fn from_bytes(bytes: &[u8], name: &Path, device: &Device) -> Result<Self, SegmentError> {
        let (config, tensors, _) = parse_weights(bytes, name, device)?;
        Self::from_tensors(config, tensors, device)
            .map_err(|e| SegmentError::weights(name, e.to_string()))
    }
}

fn apply_dropout<R: Rng>(h: &Tensor, rng: &mut R) -> candle_core::Result<Tensor> {
    let n = h.elem_count();
    let keep = (1.0 / (1.0 - DROPOUT)) as f32;
    let mask: Vec<f32> = (0..n)
        .map(|_| {
            if rng.random::<f64>() < DROPOUT {
                0.0
            } else {
                keep
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, h.shape(), h.device())?;
    h * mask
}

/// What the weights file says about itself, stored as ONE safetensors metadata entry (a JSON object with
/// ordered fields): a metadata map with several keys is serialised in hash order, and the same weights must
/// give the same bytes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Meta {
    format: String,
    base: usize,
    size: u32,
    /// Training state (checkpoints only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    train_state: Option<serde_json::Value>,
}

const META_KEY: &str = "cxr_segment";

/// Serialises named tensors plus the UNet config (and, for checkpoints, the training state).
pub(crate) fn serialize(
    tensors: &[(String, Tensor)],
    config: UNetConfig,
    train_state: Option<serde_json::Value>,
) -> Result<Vec<u8>, SegmentError> {
    let meta = Meta {
        format: FORMAT.into(),
        base: config.base,
        size: config.size,
        train_state,
    };
    let meta = serde_json::to_string(&meta)
        .map_err(|e| SegmentError::Config(format!("serialising weights metadata: {e}")))?;
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| t.to_device(&Device::Cpu).map(|t| (n.clone(), t)))
        .collect::<candle_core::Result<_>>()
        .ctx(|| "copying weights to the CPU".into())?;
    let meta_map = HashMap::from([(META_KEY.to_string(), meta)]);
    safetensors::serialize(cpu.iter().map(|(n, t)| (n.as_str(), t)), Some(meta_map))
        .map_err(|e| SegmentError::Config(format!("serialising weights: {e}")))
}

/// A weights or checkpoint file's content: config, tensors, training state (checkpoints).
type ParsedWeights = (
    UNetConfig,
    HashMap<String, Tensor>,
    Option<serde_json::Value>,
);

/// Reads a weights or checkpoint file: config, tensors, training state (checkpoints).
pub(crate) fn read_weights(path: &Path, device: &Device) -> Result<ParsedWeights, SegmentError> {
    let bytes = std::fs::read(path).map_err(|e| SegmentError::io(path, e))?;
    parse_weights(&bytes, path, device)
}

/// [`read_weights`] of bytes already read; `path` names them in errors.
fn parse_weights(
    bytes: &[u8],
    path: &Path,
    device: &Device,
) -> Result<ParsedWeights, SegmentError> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| SegmentError::weights(path, format!("not a safetensors file: {e}")))?;
    let meta: Meta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .and_then(|m| serde_json::from_str(m).ok())
        .filter(|m: &Meta| m.format == FORMAT)
        .ok_or_else(|| {
            SegmentError::weights(
                path,
                format!("not a cxr-segment UNet (no `{FORMAT}` metadata)"),
            )
        })?;
    let config = UNetConfig {
        base: meta.base,
        size: meta.size,
    };
    let tensors = candle_core::safetensors::load_buffer(bytes, device)
        .map_err(|e| SegmentError::weights(path, e.to_string()))?;
    Ok((config, tensors, meta.train_state))
}

impl SegmentError {
    pub(crate) fn weights(path: &Path, message: impl Into<String>) -> Self {
        Self::Weights {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// The device to run on: the first CUDA GPU when built with the `cuda` feature and one is present, else CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        if let Ok(d) = Device::cuda_if_available(0) {
            return d;
        }
    }
    Device::Cpu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_width_has_the_papers_filters() {
        let c = UNetConfig {
            base: 64,
            size: 256,
        };
        let layers = c.layers();
        assert_eq!(layers[8], ("enc4.conv1".into(), 512, 1024, 3));
        assert_eq!(layers.last().unwrap(), &("out".into(), 64, 1, 1));
        assert!(UNetConfig { base: 8, size: 100 }.validate().is_err());
    }

    #[test]
    fn forward_shapes_save_load_round_trip() {
        let dev = Device::Cpu;
        let cfg = UNetConfig { base: 2, size: 32 };
        let (net, vars) = UNet::trainable(cfg, 7, &dev).unwrap();
        assert_eq!(
            vars.iter().map(|(_, v)| v.elem_count()).sum::<usize>(),
            cfg.parameter_count()
        );
        let x = Tensor::rand(0f32, 1f32, (2, 1, 32, 32), &dev).unwrap();
        let p = net.predict(&x).unwrap();
        assert_eq!(p.dims(), &[2, 1, 32, 32]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let a = net.forward(&x, Some(&mut rng)).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let b = net.forward(&x, Some(&mut rng)).unwrap();
        // Seeded dropout is reproducible.
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        net.save(&path).unwrap();
        let back = UNet::load(&path, &dev).unwrap();
        assert_eq!(back.config(), cfg);
        let q = back.predict(&x).unwrap();
        let d = (p - q).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);

        // Same seed → same weights; a foreign file is refused naming it.
        let (again, _) = UNet::trainable(cfg, 7, &dev).unwrap();
        assert!(again.to_bytes().unwrap() == net.to_bytes().unwrap());
        let bad = dir.path().join("other.safetensors");
        std::fs::write(&bad, b"garbage").unwrap();
        let err = UNet::load(&bad, &dev).err().unwrap().to_string();
        assert!(err.contains("other.safetensors"), "{err}");
    }
}
