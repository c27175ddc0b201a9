//! `report.html`, built from a [`Results`] (and the files it links: galleries, overlays), one module per
//! section, so that every number the page shows is in `results.json`.
//!
//! Sections in page order: the findings ([`findings`]), what was run ([`run_facts`]), the overview with the
//! seen/unseen AUC table ([`overview`]), lung segmentation ([`segmentation`]), one section per experiment
//! ([`experiment`], with Table 4 in [`table4`] and the audit's parts in [`audit`]), the sensitivity study
//! ([`sensitivity`]). [`summary`] gives the few lines a front end prints.

pub mod audit;
pub mod experiment;
pub mod findings;
pub mod media;
pub mod overview;
pub mod run_facts;
pub mod segmentation;
pub mod sensitivity;
pub mod summary;
pub mod table4;

use std::path::{Path, PathBuf};

pub use cxr_report::{Block, Report, Section};

use crate::error::{Context as _, Result};
use crate::experiment::ExperimentResult;
use crate::results::{Interval, Results};

/// The page's title.
pub const TITLE: &str = "cxr-confounders: do CXR models learn Covid-19 or the source?";

/// The section title suffix of the clean-world control's experiments.
pub(crate) const CONTROL: &str = " — control: clean world";

/// The whole report of `results`; `out` is the folder it goes to (links are relative to it; a linked file
/// outside it is copied into `out/galleries/`).
pub fn build(results: &Results, out: &Path) -> Result<Report> {
    let mut sections = vec![
        overview::section(results, out)?,
        segmentation::section(&results.segmentation, out),
    ];
    for r in &results.experiments {
        sections.push(experiment::section(r, "", &results.experiments, out)?);
    }
    if let Some(ctl) = &results.control_clean_world {
        for r in ctl {
            sections.push(experiment::section(r, CONTROL, ctl, out)?);
        }
    }
    if let Some(runs) = &results.sensitivity {
        sections.push(sensitivity::section(runs));
    }
    Ok(Report {
        title: TITLE.into(),
        findings: findings::findings(results),
        run_facts: run_facts::run_facts(results),
        sections,
    })
}

/// Writes `report.html` into `out` (atomically) and returns its path.
pub fn write(results: &Results, out: &Path) -> Result<PathBuf> {
    let html = build(results, out)?.to_html();
    let path = out.join("report.html");
    cxr_core::fsutil::write_atomic(&path, html.as_bytes())
        .ctx(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `0.912 [0.871, 0.950]`, with `†` when the set is a small sample.
pub(crate) fn fmt3(t: &Option<Interval>) -> String {
    match t {
        Some(i) => format!(
            "{:.3} [{:.3}, {:.3}]{}",
            i.value,
            i.lo,
            i.hi,
            if i.small_sample { " †" } else { "" }
        ),
        None => "–".into(),
    }
}

/// `0.412 (95% CI 0.100–0.751)`, or `–`.
pub(crate) fn fmt_ci(t: &Option<Interval>) -> String {
    match t {
        Some(i) => format!(
            "{:.3} (95% CI {:.3}–{:.3}){}",
            i.value,
            i.lo,
            i.hi,
            if i.small_sample { ", small sample" } else { "" }
        ),
        None => "–".into(),
    }
}

/// An estimate in percent with its CI (`51% [40%, 62%]`), or `–`.
pub(crate) fn pct(e: &Option<cxr_eval::report::Estimate>) -> String {
    e.as_ref()
        .map(|e| cxr_eval::tables::fmt_estimate(e, true))
        .unwrap_or_else(|| "–".into())
}

/// The verdict of an experiment's audited model, when the audit ran.
pub(crate) fn verdict_of(r: &ExperimentResult) -> Option<&cxr_explain::Verdict> {
    r.audit.as_ref()?.report.verdicts.first()
}

/// The short name of an experiment: its title up to the colon (`Figure 4, split 1`).
pub(crate) fn short_title(r: &ExperimentResult) -> &str {
    r.spec
        .title
        .split_once(':')
        .map_or(r.spec.title.as_str(), |(a, _)| a)
}

#[cfg(test)]
pub(crate) mod fixture;
