//! `cxr-preprocess`: decoded images (`cxr_core::RawImage`) → 8-bit grey PNGs, the way a DICOM viewer shows
//! them, plus resizing, network-input helpers and the paper's augmentation.
//!
//! Role: stage 2 of the pipeline (docs/ARCHITECTURE.md). It never decodes files itself: callers hand it
//! `RawImage`s (stored values + `PixelMeta`), or, in batch mode, a reader callback (xtask passes cxr-ingest's).
//!
//! - [`display`]: Modality LUT (rescale or Modality LUT Sequence, PS3.3 C.11.1) → VOI (window with LINEAR /
//!   LINEAR_EXACT / SIGMOID, C.11.2.1.2-3, or the VOI LUT Sequence; first by default, an index on request;
//!   a metadata window for PadChest/BIMCV) → MONOCHROME1 inversion → 8 bits; min-max or percentile for
//!   window-less sources. Returns an [`Applied`] record of every choice.
//! - [`resize`]: fast_image_resize, bilinear convolution by default (anti-aliased, like Pillow's BILINEAR).
//! - [`tensor`]: grey → 3 channels, ImageNet or scalar mean/std normalisation.
//! - [`augment`]: original, flip, each rotated ±2, ±4 degrees (10 images; edge-replicated border).
//! - [`batch`]: a manifest → cached PNGs + manifest columns + `rejects.csv` + `summary.json`, over rayon.
//!
//! Inputs: `RawImage`s, a [`PreprocessConfig`] (TOML), manifests. Outputs: `Grey8` images, PNGs, manifest columns
//! `png8, pre_window, pre_window_source, pre_inverted, pre_min, pre_max, pre_size` (+ `pre_modality`,
//! `pre_voi_function`; `aug_of, aug` with augmentation).
//!
//! Invariants: every output is a pure function of (image values + metadata, config); the batch cache key is the
//! input's SHA-256 plus the hash of the options that apply to it, so a rerun does no work twice. No file is
//! decoded here and no sibling stage is depended on.

pub mod augment;
pub mod batch;
pub mod config;
pub mod display;
mod error;
pub mod pipeline;
pub mod png;
pub mod resize;
pub mod tensor;

use std::fmt::Display;
use std::path::Path;

pub use augment::{AUGMENTATIONS, AugKind, augment};
pub use batch::{
    BatchInput, BatchOptions, BatchSummary, Progress, Reject, Streamed, metadata_override,
    run_batch,
};
pub use config::{PreprocessConfig, SourcePolicy};
pub use cxr_core::{Grey8, RawImage};
pub use display::{
    Applied, DisplayOptions, Fallback, MetadataOverride, ModalityApplied, WindowMode, WindowSource,
    to_grey8,
};
pub use error::{PixelError, PreprocessError};
pub use pipeline::{Geometry, Processed, preprocess};
pub use resize::{Filter, ResizeMode};
pub use tensor::{Normalization, scalar_mean_std, to_chw3};

/// Single-file conversion: reads `input` with `read`, runs the pipeline and writes an 8-bit PNG to `output`
/// atomically. Every error names the file it is about.
pub fn convert_file<F, E>(
    input: &Path,
    output: &Path,
    read: F,
    opts: &DisplayOptions,
    geometry: &Geometry,
) -> Result<Processed, PreprocessError>
where
    F: FnOnce(&Path) -> Result<RawImage, E>,
    E: Display,
{
    let raw = read(input).map_err(|e| PreprocessError::Read {
        file: input.to_path_buf(),
        message: e.to_string(),
    })?;
    let p = preprocess(&raw, &MetadataOverride::default(), opts, geometry)
        .map_err(|e| PreprocessError::pixels(input, e))?;
    cxr_core::png8::write_grey8(output, &p.image)?;
    Ok(p)
}
