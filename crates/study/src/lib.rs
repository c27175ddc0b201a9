//! The study of Ben Ahmed et al. (arXiv 2102.04300) as a library: do Covid-19 vs pneumonia classifiers learn
//! the disease or the data source?
//!
//! Role: [`run`] takes a typed [`StudyConfig`] (the resolved settings of `cxr reproduce`) and chains the
//! stage libraries: data (the synthetic world of `cxr-synth`, or real datasets) → ingest → preprocess →
//! segment (lung UNet, crops, rejections; [`data`]) → per experiment definition: split → train → evaluate →
//! audit ([`experiment`], [`audit`]) → the clean-world control and the sensitivity worlds
//! ([`sensitivity`]) → `results.json` ([`Results`]) and `report.html` ([`report`], built from the
//! `Results`).
//!
//! Inputs: the config, the experiment definitions and split designs (built in, [`designs`], or folders the
//! config names), the data. Outputs, under `config.out`: one folder per stage, each with a `stage.json`
//! ([`stage`]), `results.json` and `report.html`.
//!
//! Invariants: every stage is cached by the hash of its config and inputs, so a rerun or a resumed run
//! redoes only what changed; nothing here prints or parses a command line (progress goes through
//! [`Progress`], logs through `tracing`); every number of the report is in `results.json`.

pub mod audit;
pub mod config;
pub mod data;
pub mod designs;
mod error;
pub mod experiment;
pub mod profile;
pub mod progress;
pub mod rejections;
pub mod report;
pub mod results;
pub mod sensitivity;
pub mod stage;

/// The schema checker the end-to-end tests validate `results.json` with (one copy, in `tests/`).
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../../tests/tests/support/json_schema.rs"]
mod json_schema;

use std::path::PathBuf;
use std::time::Instant;

pub use config::{ProfileName, StudyConfig, World};
pub use error::{Result, StudyError, chain as error_chain};
pub use experiment::{ExperimentResult, ExperimentSpec, Study};
pub use profile::Profile;
pub use progress::{Progress, Silent};
pub use results::Results;

use crate::data::DataChoice;
use crate::error::Context as _;

/// What every step of a run shares: the settings, the profile they resolve to, and the progress display.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub config: &'a StudyConfig,
    pub profile: &'a Profile,
    pub progress: &'a dyn Progress,
}

/// What a run wrote.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub results: Results,
    pub results_json: PathBuf,
    pub report_html: PathBuf,
}

/// Runs the whole study into `config.out` (created), reusing every stage whose inputs did not change.
/// `progress` receives the long stages' advance (`&Silent` for none).
pub fn run(config: &StudyConfig, progress: &dyn Progress) -> Result<Outcome> {
    let started = Instant::now();
    let profile = Profile::of(config);
    let out = &config.out;
    std::fs::create_dir_all(out).map_err(|e| StudyError::io(out, e))?;
    // Frozen backbones embed the same images in every experiment and in the audit: compute each vector once.
    cxr_model::feature_cache::set_cache_dir(Some(out.join("feature-cache")));
    let defs = config.definitions();
    let specs = experiment::load_specs(&defs, &config.experiments)?;
    if specs.is_empty() {
        return Err(StudyError::Invalid(format!(
            "no experiment selected in {}",
            defs.experiments_origin()
        )));
    }
    let env = Env {
        config,
        profile: &profile,
        progress,
    };
    let mut study = Study::new(env);
    // The main world (or the real data).
    let main = data::prepare(env, DataChoice::main(config), out, None)?;
    // Count what will actually run: the designs that fit this data, and the clean-world control's.
    let fitting = specs.iter().filter(|s| experiment::fits(s, &main)).count();
    let control_specs: Vec<ExperimentSpec> = if config.runs_control() {
        specs
            .iter()
            .filter(|s| s.kind == "figure4")
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    study.planned = fitting + control_specs.len();
    tracing::info!(
        profile = profile.name,
        out = %out.display(),
        "reproduce: {} experiments ({fitting} on {}{})",
        study.planned,
        main.tag,
        if control_specs.is_empty() {
            String::new()
        } else {
            format!(", {} on the clean-world control", control_specs.len())
        }
    );
    let seg_weights = main.segmenter.clone();
    let results_main = study.run_all(&main, &specs, &out.join("experiments"))?;
    // The control: the same split, same pipeline, on the clean world (synthetic default only).
    let control = if control_specs.is_empty() {
        None
    } else {
        let ctl = data::prepare(
            env,
            DataChoice::Synthetic(World::Clean),
            out,
            Some(seg_weights.clone()),
        )?;
        Some(study.run_all(&ctl, &control_specs, &out.join("control-clean"))?)
    };
    let sensitivity = if config.sensitivity && config.data_root.is_none() {
        Some(sensitivity::run(
            env,
            &config.sensitivity_groups,
            seg_weights,
            out,
        )?)
    } else {
        if config.sensitivity {
            tracing::warn!("--sensitivity needs a synthetic world: skipped with --data-root");
        }
        None
    };
    let runs = results::Runs {
        main: results_main,
        control,
        sensitivity,
    };
    let results = Results::build(
        config,
        &profile,
        main,
        runs,
        started.elapsed().as_secs_f64(),
    );
    let results_json = results.write(out)?;
    let report_html = report::write(&results, out).ctx(|| "writing the report".into())?;
    Ok(Outcome {
        results,
        results_json,
        report_html,
    })
}
