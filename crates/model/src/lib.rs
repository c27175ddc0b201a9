//! `cxr-model`: the classifiers of the study — ResNet50 (v1.5) and VGG16 on candle with the paper's head
//! (Table 2: GAP → Dense(64, ReLU) → Dropout(0.5) → BatchNorm → Dense(1), sigmoid in the loss and score).
//!
//! Role: train a classifier on a manifest's `train` split with early stopping on `val` accuracy, score the
//! `test` rows (`predictions.csv`, score = P(Covid-19)), embed images (`features.csv`), and give explain the
//! two inference-mode halves Grad-CAM needs ([`Classifier::feature_map`],
//! [`Classifier::logit_from_feature_map`]).
//!
//! Inputs: a manifest with `split` and an image column (`crop` by default, else `png8`) naming 8-bit grey PNGs;
//! an experiment config ([`TrainConfig`], TOML); optionally backbone weights as torchvision/timm ship them in
//! safetensors (names unchanged; without them the backbone is randomly initialised and that is announced in
//! the log and in `run.json`).
//! Outputs (in the run folder): `predictions.csv`, `training_log.csv`, `model.safetensors`, `run.json`,
//! `checkpoint.safetensors` (every epoch, atomic; `--resume` continues from it).
//!
//! Invariants: CPU by default (CUDA only behind the `cuda` feature); all randomness from seeded ChaCha8
//! streams (candle's CPU RNG cannot be seeded), so a run is deterministic under its seed and a resumed run
//! ends with the same predictions as an uninterrupted one; inference never mutates the model; the modes
//! train exactly what they say ([`Mode`]; Finetune1 on ResNet50 = 184,449 trainable parameters). Convolution
//! and pooling go through `cxr-ops` (exact max-pool backward, frozen convolutions without weight gradients,
//! BatchNorm folded into convolutions for inference).

pub mod data;
pub mod error;
pub mod feature_cache;
pub mod infer;
pub mod net;
pub mod optim;
pub mod params;
pub mod scorer;
pub mod train;

pub use data::{
    IMAGENET_MEAN, IMAGENET_STD, ImageRow, batch_tensor, grey_to_input, load_image,
    rows_from_manifest,
};
pub use error::{ModelError, Result};
pub use infer::{
    EmbedOptions, EmbedReport, embed, embed_inputs, embed_inputs_of_shard, load_classifier,
    predict_manifest, predict_rows,
};
pub use net::{Arch, Classifier, INPUT_NORM, Mode, bce_with_logits};
pub use scorer::ClassifierScorer;
pub use train::{
    FineTunedFrom, LogRow, Provenance, TrainConfig, TrainOptions, TrainReport, build_classifier,
    device_by_name, features_of, train, weights_hint,
};
