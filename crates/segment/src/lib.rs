//! `cxr-segment`: the lung UNet, its training, inference, and the paper's lung-box crop.
//!
//! Role: stage 3 of the pipeline (PAPER.md, pre-processing steps 3-4). No pretrained lung UNet can be had
//! here, so this crate trains its own (Rajaraman et al.'s architecture, [`unet`]) on real lung masks (the
//! Shenzhen/Montgomery pairs and the Cohen masks) or on the synthetic world's masks, and applies it. One
//! such UNet ships with the crate, embedded ([`Segmenter::default_lung`], `weights/README.md`): masks for an
//! audit need no training step.
//!
//! Inputs: a training folder (`cxr_256/` + `masks_256/` + `manifest.csv`, or `lung-masks/{images,masks}`);
//! UNet weights (`.safetensors`, config in the metadata; the shipped default embedded); a manifest with a `png8` column or a folder of
//! images. Outputs: weights + a resumable checkpoint + a JSON training report; masks (PNG {0,255}, input
//! size); crops (8-bit PNG); the manifest with `mask, crop, crop_x, crop_y, crop_w, crop_h, mask_area,
//! reject_reason`; `rejects.csv` (`id, file, reason`).
//!
//! Invariants: every output is written atomically; training is deterministic for a seed (all randomness
//! comes from seeded Rust RNGs, not candle's unseedable CPU RNG) and a resumed run continues the same
//! sequence; a batch run records bad or rejected images and carries on. Depends on `cxr-core` and `cxr-ops`
//! only among the workspace crates.

pub mod appearance;
pub mod crop;
pub mod data;
pub mod error;
pub mod gallery;
pub mod imageio;
pub mod infer;
pub mod postprocess;
pub mod train;
pub mod unet;

pub use crop::{CropBox, CropDecision, RejectReason, lung_box};
pub use error::SegmentError;
pub use infer::{
    COLUMNS, DEFAULT_LUNG_UNET, DEFAULT_LUNG_UNET_NAME, SegmentOptions, SegmentSummary, Segmenter,
    crop_manifest, predict_folder, segment_manifest, segment_records,
};
pub use train::{LrSchedule, TrainConfig, TrainEvent, TrainReport, train, train_with_progress};
pub use unet::{UNet, UNetConfig, default_device};
