//! `cxr-audit`: the shortcut audit as a library — manifests in, a model loaded as a scorer, `audit.json`
//! and a `report.html` a person can read out.
//!
//! Role: the orchestration of the audit over `cxr-explain`'s algorithms. `cxr-explain` stays the pure
//! algorithms (the probe, occlusion, saliency maps, the verdict's rules, the counterfactual test against a
//! renderer trait) and depends on no sibling stage; this crate wires them to the stages an audit needs:
//! manifests and their input contract (`cxr-core`), scorers loaded from a run folder (`cxr-model`) or a model
//! spec (`cxr-onnx`), DeLong CIs and permutation p-values (`cxr-eval`), the split linter's Cramér's V
//! (`cxr-ingest`), the synthetic world's renderer and the pipeline's input path for the counterfactual test
//! (`cxr-synth`, `cxr-preprocess`, `cxr-segment`), and the report's page (`cxr-report`). Every front end (the
//! `cxr` command, the study, a test, a future Python binding) calls the same functions with the same typed
//! configurations; none builds a command line.
//!
//! - [`run_audit`]: the whole audit of any [`cxr_core::Scorer`] with an [`AuditConfig`] (every option of
//!   `cxr audit`, `Default` = its defaults) → [`AuditOutcome`] (`audit.json`'s [`AuditReport`], the probe,
//!   what could not run), writing `audit.json`, `report.html`, `probe.json`, occlusion images and saliency
//!   maps when [`AuditConfig::out`] is set.
//! - [`load_scorer`] / [`load_classifier`]: a [`ModelSource`] (`Run` or `Spec`) → a scorer and the column
//!   its model reads.
//! - [`run_grad_cam`]: Grad-CAM of our own classifiers (`cxr explain`), the saliency evidence with gradients.
//! - [`score_manifest`]: any scorer over a manifest → `predictions.csv` + `rejects.csv` (`cxr score`).
//! - [`run_confounder_test`]: the counterfactual confounder test on a synthetic world ([`ConfounderConfig`]).
//! - [`protocol`]: `audit prepare` / `audit finish` for a model that cannot be exported: a recording and a
//!   replaying scorer, and a typed `prepare.json` ([`Prepared`]).
//! - [`report`]: the verdict in words, the report sections of an audit (the study's report shows the same),
//!   the audit's `report.html`.
//! - [`input`]: the input contract (which manifest columns the audit needs; docs/AUDIT.md).
//!
//! Inputs: a manifest (`id, source, label, split`, the image column, `mask`; [`input`]), a scorer, optional
//! `features.csv` and `lung_energy.csv`, a world for the counterfactual test. Outputs: under the configured
//! folder, written atomically. Invariants: nothing printed (progress through a callback, messages through
//! `tracing`); what is asked of a scorer never depends on its answers (so prepare and finish ask the same);
//! every error names the file, column or step ([`AuditError`]).

pub mod config;
pub mod confounders;
pub mod error;
pub mod gradcam;
pub mod input;
pub mod load;
pub mod progress;
pub mod protocol;
pub mod report;
pub mod resume;
pub mod run;
pub mod score;
#[cfg(test)]
mod test_support;

pub use config::{AuditConfig, FailOn, FillKind, ModelOptions, ModelSource};
pub use confounders::{ConfounderConfig, ConfounderOutcome, run_confounder_test};
pub use cxr_explain::{AuditReport, Overall, Verdict};
pub use error::{AuditError, Result};
pub use gradcam::{GradCamConfig, GradCamOutcome, run_grad_cam};
pub use input::{read_manifest, read_manifest_from, required_columns};
pub use load::{LoadedScorer, OurModel, load_classifier, load_scorer, run_column};
pub use progress::{OnProgress, Progress};
pub use protocol::{FinishOptions, FinishOutcome, PrepareOutcome, Prepared, finish, prepare};
pub use run::{AuditFiles, AuditOutcome, galleries_in, run_audit, run_audit_on, run_audit_with};
pub use score::{ScoreConfig, ScoreOutcome, model_key, rejects_path, score_manifest};
