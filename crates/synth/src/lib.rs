//! `cxr-synth`: a synthetic multi-source chest X-ray world with planted confounders.
//!
//! Role: the embedded default dataset of the pipeline and the ground truth of the shortcut audit. It renders
//! procedural frontal chest radiographs (body outline, lungs, heart and mediastinum, spine, ribs, clavicles,
//! diaphragm domes, soft-tissue gradient, patient variability) with an exact lung mask each, adds a tunable
//! class signal inside the lungs only (Covid-19: bilateral peripheral lower-zone ground glass; other
//! pneumonia: denser focal consolidation, usually one-sided), passes each image through one of six source
//! signatures (the confounders), and writes each source **in its real dataset's native format and metadata
//! layout** (`docs/DATASETS.md`), so that `cxr-ingest` reads synthetic and real data through the same adapters.
//!
//! Inputs: a [`WorldConfig`] (world kind, images per source, size, seed, signal). Outputs under the chosen
//! folder: one dataset root per source, `world.json` (every planted confounder), `truth.csv` (per-image ground
//! truth for tests and audits, never for adapters), `lung-masks/{images,masks}/*.png` (a segmentation training
//! set) and optionally a gallery PNG. [`render_counterfactual`] renders an image with one planted confounder
//! group ([`ConfounderKind`]) taken from another source, for the counterfactual confounder test; [`read_world_json`]
//! reads a world's signatures back.
//!
//! Invariants: deterministic — the same config gives byte-identical files on any machine and any thread count
//! (ChaCha8 streams seeded per image from the world seed; rayon only changes the order of work); the pathology
//! is non-zero only inside the lung mask; every file is written atomically; no real patient data anywhere
//! (names and ids are synthetic, some deliberately identifying-looking to test de-identification).

mod acquisition;
mod confounders;
mod font;
mod formats;
mod layouts;
mod pathology;
mod phantom;
mod sources;
mod world;

pub use acquisition::Acquisition;
pub use confounders::{
    ConfounderKind, WorldFile, isolate, planted, read_world_json, render_counterfactual,
};
pub use pathology::{CONSOLIDATION_AMPLITUDE, GGO_AMPLITUDE, Lesion, LesionKind, Pattern};
pub use phantom::{Anatomy, Phantom, bounding_box, render_frontal};
pub use sources::{SourceSpec, generic_source, paper_sources};
pub use world::{
    RenderedSample, SourceSummary, WorldConfig, WorldKind, WorldSummary, generate,
    generate_with_progress, render_sample,
};

use std::path::PathBuf;

/// Errors of the synthetic world; each names the file or the parameter at fault.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Core(#[from] cxr_core::CoreError),
    #[error("encoding {what}: {message}")]
    Encode { what: String, message: String },
    #[error("{path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("invalid world config: {0}")]
    Config(String),
}
