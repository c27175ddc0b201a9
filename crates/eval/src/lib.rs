//! Evaluation of Covid-19 vs pneumonia predictions with honest uncertainty.
//!
//! Role: the paper (arXiv 2102.04300) reports point estimates only; this crate gives every metric a 95%
//! interval, breaks results down by split, by source and into seen vs unseen sources, tests whether a gap
//! is real, raises alarms, draws the plots and sets our numbers beside the paper's Table 3 and Figure 4.
//!
//! Inputs: rows of `predictions.csv` ([`cxr_core::Prediction`]; score = P(Covid-19), Covid-19 = positive),
//! one or several models told apart by `model`; optionally a training [`cxr_core::Manifest`], which says
//! which sources are "seen" (held by its `train` split) and supplies patients missing from predictions.
//!
//! Outputs ([`write_outputs`]): `metrics.json` (the whole [`EvalReport`]), `metrics.csv` (one row per set and
//! metric), `tables.md` and `plots/*.svg`. The HTML report embeds [`plots::render_plots`]'s SVG strings and
//! the tables' `to_html()`.
//!
//! What is computed, per model, for each split, and for each non-training split also per source and for the
//! seen and unseen sources ([`report::Group`]):
//! - threshold-free: ROC AUC ([`cxr_core::auc::roc_auc`], ties one half like scikit-learn), average
//!   precision (scikit-learn's step sum), Brier score, ECE (10 equal-width bins); see [`metrics`];
//! - at the threshold chosen on the model's own validation split by Youden's J (or max accuracy; then moved
//!   half-way to the next lower validation score) and carried unchanged to every other split, and at 0.5:
//!   accuracy, sensitivity, specificity, precision, F1 (positive iff score >= threshold);
//! - DeLong's variance and Wald CI of the AUC ([`delong`], fast midrank algorithm), the paired DeLong test
//!   between two models on the same images, and the seen-vs-unseen z-test on DeLong variances;
//! - stratified bootstrap percentile intervals for every metric (2,000 resamples by default, ChaCha8 seeded
//!   per set, patients resampled as clusters; see [`bootstrap`]); the bootstrap resamples the evaluated set
//!   with the threshold held fixed (the validation set is not resampled);
//! - alarms: inverted (the AUC's whole 95% interval below 0.5, DeLong's, or the bootstrap's where DeLong is
//!   undefined; an AUC under 0.5 whose interval holds chance raises nothing), and, on sets
//!   holding both classes, scores whose standard deviation is below `constant_sd` (a model emitting a
//!   near-constant output; on a single-class set that is only confidence).
//!
//! - small samples: a set holding fewer than [`MIN_PER_CLASS`] (10) images of a class it contains is marked
//!   `small_sample` in `metrics.json`, `metrics.csv` and beside its figures in the tables (`†`).
//!
//! Invariants: reads predictions and manifests only, never images or models; deterministic for a given
//! seed; every output written atomically; no patient id is written (patients only group resamples).

pub mod bootstrap;
pub mod delong;
pub mod error;
pub mod metrics;
pub mod output;
pub mod permutation;
pub mod plots;
pub mod report;
pub mod tables;

pub use error::EvalError;
pub use metrics::ThresholdRule;
pub use output::{load_predictions, metrics_csv, write_outputs};
pub use report::{
    Alarm, AlarmKind, Estimate, EvalOptions, EvalReport, Group, MIN_PER_CLASS, ModelReport,
    SetReport, evaluate, is_small_sample,
};
pub use tables::{
    Figure4, Figure4Design, Table3, figure4, summary_html, summary_markdown, table3, table3_for,
};
