//! Stratified cluster bootstrap with percentile intervals.
//!
//! Resampling unit: the patient (all images of a patient come and go together, so that images of one
//! person do not pose as independent evidence), or the image when the patient is unknown. Strata: the class
//! of the cluster (Covid-19, pneumonia, or "mixed" for the rare patient with both), each resampled with
//! replacement to its own number of clusters, so every resample keeps both classes and the AUC is always
//! defined. The generator is ChaCha8 seeded from the run's seed and the set's name, so a set's interval does
//! not depend on which other sets were evaluated or on thread scheduling.
//!
//! Percentiles use linear interpolation between order statistics (numpy's default), interval
//! `[q((1−level)/2), q((1+level)/2)]`.
//!
//! The implementation is `cxr_core::stats` (one bootstrap in the workspace; the explain stage's confounder
//! test uses it too); this module re-exports it so eval's API stays.

pub use cxr_core::stats::{
    Clusters, bootstrap_interval, percentile_interval, quantile_sorted, rng_for,
};
