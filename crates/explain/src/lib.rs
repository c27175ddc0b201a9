//! `cxr-explain`: does the model look at the lungs, or at the source?
//!
//! Role: the explain and audit stage. It answers the question the paper's Grad-CAM left open
//! ("inconclusive"), with figures rather than pictures alone:
//!
//! - [`gradcam`]: Grad-CAM of the **Covid-19 logit** (the positive class, `Label::target() == 1`) on the
//!   last convolutional block, BatchNorm in inference mode, through the [`CamModel`] trait that `cxr-model`'s
//!   classifier satisfies (xtask wraps it). Explaining never changes the model: [`grad_cam_guarded`] proves it
//!   with bit-level fingerprints of every variable and running statistic.
//! - [`energy`]: the lung energy fraction (share of Grad-CAM energy inside the segment stage's lung mask)
//!   per image, and its summary per source and class.
//! - [`render`]: overlays (heat on the grey image, lung outline) and galleries per source and class sorted by
//!   the share of heat outside the lungs; [`ExplainWriter`] streams them to disk.
//! - [`probe`]: the source probe — logistic regression on frozen features (`features.csv`), grouped
//!   (by patient) k-fold, source AUC per source and per pair of sources.
//! - [`occlusion`]: lungs-removed and lungs-only images from a grey image and its mask.
//! - [`saliency`]: occlusion sensitivity maps (a sliding patch, as MONAI's `OcclusionSensitivity`) for
//!   scorers without gradients, batched through [`cxr_core::Scorer`], into the same energy and galleries.
//! - [`behaviour`]: does the model's score follow the source? Within each class, the AUC of the score for
//!   the source (permutation p within class, Holm over the comparisons), and the per-source AUC spread.
//! - [`audit`]: the verdict per model from the evidence, with figures, CIs, thresholds and triggers; the
//!   training split's label x source association is reported apart, as the data risk.
//! - [`confounders`]: the counterfactual confounder test (synthetic worlds: does the score follow one planted
//!   confounder group swapped in from another source?), through [`cxr_core::Scorer`] and a renderer trait.
//!
//! Inputs: a model implementing [`CamModel`], 8-bit images and their masks (manifest columns `png8`/`crop`
//! and `mask`), `features.csv`, AUCs with CIs from `cxr-eval`, Cramér's V from the ingest linter.
//! Outputs: `overlays/*.png`, `gallery/*.png|csv`, `lung_energy.csv`, `lung_energy_summary.csv`,
//! `audit.json`, all written atomically.
//!
//! Invariants: never mutates a model (no training-mode forward, no optimiser); depends on no sibling stage
//! (only `cxr-core`); every error names the file, tensor or column; masks are lung where >= 128.

pub mod audit;
pub mod behaviour;
pub mod confounders;
pub mod energy;
pub mod error;
pub mod gradcam;
pub mod occlusion;
pub mod probe;
pub mod render;
pub mod saliency;

pub use audit::{
    AuditEvidence, AuditReport, DataRisk, Figure, OcclusionEvidence, Overall, PlantedConfounders,
    Risk, Role, SaliencyCost, SourceFigure, Status, TestResult, Thresholds, Verdict, verdict,
    write_audit_json,
};
pub use behaviour::{
    AucSpread, BehaviourConfig, ScoreTable, SourceComparison, SourceFollowing, TrainingMix,
    auc_spread, score_follows_source,
};
pub use confounders::{
    ConfounderPlan, Counterfactuals, KindResult, PairPattern, PairRow, confounder_test, logit_all,
    score_all,
};
pub use energy::{
    EnergyRow, EnergySummary, lung_energy_fraction, mean_lung_energy, read_energy_csv,
};
pub use error::{ExplainError, Result};
pub use gradcam::{
    CamModel, CamTarget, GradCamOutput, Heatmap, ModelSnapshot, grad_cam, grad_cam_for,
    grad_cam_guarded,
};
pub use occlusion::{Fill, lungs_only, remove_lungs};
pub use probe::{ProbeConfig, ProbeResult, read_features, source_probe};
pub use render::{CamItem, ExplainConfig, ExplainOutputs, ExplainWriter, energy_row, read_grey8};
pub use saliency::{OcclusionConfig, OcclusionMap, SaliencyPlan, occlusion_map};
