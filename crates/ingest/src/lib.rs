//! cxr-ingest: everything between a dataset on disk and a clean manifest.
//!
//! Role: the pipeline's entry stage.
//! - Readers ([`read_image`], [`detect_format`]): DICOM, NIfTI-1/-2 (`.nii`, `.nii.gz`), PNG and JPEG,
//!   recognised by content, decoded to [`cxr_core::RawImage`] (stored values + [`cxr_core::PixelMeta`]).
//! - Dataset adapters ([`adapters::DatasetAdapter`]): one per dataset, each reading the dataset's official
//!   layout and metadata and applying the paper's selection rules, giving a [`cxr_core::Manifest`].
//! - Split designs ([`split`]), the split linter ([`lint`]) and the authors' four-file export ([`export`]).
//!
//! Inputs: a dataset root, image files, manifests, split-design TOML files. Outputs: `RawImage`s, manifests
//! (`id, source, label, patient, view, path, format, sha256` + dataset columns + `split`), lint reports.
//!
//! Invariants: no patient identifier leaves this crate (patient ids are keyed pseudonyms, names and birth
//! dates are never read into outputs); every failure is an [`IngestError`] naming the file; absurd image
//! dimensions are refused from the header, before any pixel buffer is allocated; decoder panics are caught.

pub mod adapters;
pub mod error;
pub mod export;
pub mod format;
pub mod lint;
pub mod read;
pub mod split;

pub use adapters::{Candidate, DatasetAdapter, ScanOutput, scan, write_manifest};
pub use error::{IngestError, Result};
pub use export::{ExportCounts, export_four};
pub use format::{detect_format, detect_format_reader};
pub use lint::{LintReport, cramers_v, lint};
pub use read::{Limits, ReadOptions, read_image, read_image_with};
pub use split::{SplitDesign, SplitReport, apply as apply_split};
