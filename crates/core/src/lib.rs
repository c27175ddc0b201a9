//! Shared types of the cxr-confounders pipeline.
//!
//! Role: the vocabulary every stage speaks. Stages never depend on each other; they exchange files plus a
//! manifest (CSV), and this crate defines what is in them:
//!
//! - [`Label`], [`Split`], [`SourceId`]: what an image is, where it is used, where it came from;
//! - [`Manifest`] / [`ManifestRecord`]: the CSV every stage reads and extends with its own columns;
//! - [`Prediction`]: one row of `predictions.csv` (model → eval/explain);
//! - [`RawImage`] / [`PixelMeta`]: a decoded grey image with the stored values and every piece of pixel
//!   metadata preprocessing needs (ingest → preprocess); [`Grey8`]: an 8-bit grey image;
//! - [`fsutil`]: atomic writes and content hashes (every output in the pipeline goes through them);
//! - [`outname`]: the one way to name a per-image output after an untrusted id (never outside `--out`, never
//!   two ids on one file);
//! - [`shard`]: the stable row → shard rule, the Slurm/Kubernetes environment mapping, and the streaming
//!   merge of `*.part-K-of-N.csv` parts;
//! - [`privacy`]: keyed pseudonyms, so patient identifiers never reach an output;
//! - [`Scorer`]: a classifier as the audit sees it (8-bit images in, Covid-19 scores out), implemented by
//!   `cxr-model`'s classifier and the ONNX scorer, consumed by the explain stage;
//! - [`model_input`]: the one resize + normalisation every scorer applies to an 8-bit image;
//! - [`png8`]: the one reader and writer of the 8-bit grey PNGs stages hand each other;
//! - [`auc::roc_auc`]: the exact ROC AUC, shared by eval and the explain audit so both agree to the bit;
//! - [`stats`]: the one bootstrap (stratified, clustered, percentile intervals) and the one Cramér's V,
//!   shared by eval, the ingest linter and the explain stage's audits.
//!
//! Inputs: none (no I/O beyond the helpers that callers invoke). Outputs: types and CSV/JSON (de)serialisation.
//!
//! Architecture invariant: no decoding of datasets' image formats (resizing a decoded image is fine:
//! [`model_input`]; so is the pipeline's own 8-bit grey PNG, [`png8`], which every stage reads and writes), no
//! neural-network code, no dataset knowledge here. A type lands in this crate only when two stages must
//! agree on it.

pub mod auc;
pub mod error;
pub mod fsutil;
pub mod image;
pub mod label;
pub mod manifest;
pub mod model_input;
pub mod outname;
pub mod png8;
pub mod prediction;
pub mod privacy;
pub mod scorer;
pub mod shard;
pub mod stats;

pub use error::CoreError;
pub use image::{
    Grey8, ImageFormat, Lut, Photometric, PixelMeta, RawImage, Rescale, VoiLutFunction, Window,
};
pub use label::{Label, SourceId, Split};
pub use manifest::{
    Manifest, ManifestRecord, ManifestRows, ManifestWriter, PATH_COLUMNS, absolute_path,
    key_digest, path_cell,
};
pub use prediction::{Prediction, PredictionWriter, read_predictions, write_predictions};
pub use scorer::{ScoreError, Scored, Scorer, logit};
pub use shard::Shard;

/// Result type of this crate.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
