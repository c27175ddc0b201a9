//! The audit's sensitivity study (`reproduce --sensitivity`): can the audit catch each kind of planted
//! confounder when a model uses it?
//!
//! In the paper world a model follows the strongest cues it can see (in-lung texture) and ignores weaker ones
//! (burned-in text, markers), so that world cannot show whether the audit would catch the weaker kinds. Here
//! each group gets a world of its own where it is the only difference between sources
//! ([`cxr_synth::isolate`]), and a model is trained, evaluated, audited and put through the counterfactual
//! confounder test as in the main study, in the pipeline that lets that group reach it ([`experiment_for`]).

use std::path::{Path, PathBuf};

use cxr_synth::ConfounderKind;
use serde::Serialize;

use crate::audit::ConfounderRow;
use crate::data::{self, DataChoice};
use crate::error::{Context as _, Result, StudyError};
use crate::experiment::{self, ExperimentResult, Study};
use crate::{Env, Profile};

/// The paper's pipeline (lung crops) and the whole-image one.
const CROP: &str = "figure4-split1";
const WHOLE: &str = "whole-image-split1";

/// One group's world and what the study found in it (`results.json` `sensitivity[]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SensitivityRun {
    pub group: ConfounderKind,
    /// Split design of the training pair.
    pub split: String,
    /// The model's input: `crop` (lung crops) or `png8` (whole images), and its size in pixels.
    pub image_column: String,
    pub image_size: usize,
    pub result: ExperimentResult,
}

/// The experiment (base definition, split design) that tests `group`.
///
/// Groups drawn over the whole image (intensity, blur, noise, grid) run in the paper's pipeline, on lung crops:
/// there they reach the model at the crop's higher resolution (grid lines about 5 px apart in a 256 px image are
/// at the Nyquist limit of a 128 px whole-image input, but not of a 128 px lung crop). Groups that live outside
/// the lungs (framing, collimation, text, marker) run on whole images, since the crop removes them.
///
/// The split is split 1 except for framing: split 1's sources (V2-COV19-NII vs NIH) frame the thorax almost
/// alike (zoom 0.90-1.00 vs 0.88-0.98), while split 2's (BIMCV 0.95-1.05 vs PadChest 0.85-0.95, shifted in
/// opposite directions) is the paper world's clearest framing contrast.
pub fn experiment_for(group: ConfounderKind) -> (&'static str, &'static str) {
    match group {
        ConfounderKind::Framing => (WHOLE, "split2"),
        ConfounderKind::Collimation | ConfounderKind::Text | ConfounderKind::Marker => {
            (WHOLE, "split1")
        }
        ConfounderKind::Intensity
        | ConfounderKind::Blur
        | ConfounderKind::Noise
        | ConfounderKind::Grid => (CROP, "split1"),
    }
}

/// The model input size for `group`'s world. Burned-in text is one row of 7 px glyphs in the quick profile's
/// 256 px worlds, 3.5 px tall at its 128 px input, which a frozen backbone's pooled features barely keep; its
/// world runs at twice the profile's input size (at most the world's size), where the glyphs keep their height.
pub fn input_size_for(group: ConfounderKind, profile: &Profile) -> usize {
    match group {
        ConfounderKind::Text => (2 * profile.image_size)
            .min(profile.world_size as usize)
            .max(profile.image_size),
        _ => profile.image_size,
    }
}

/// Runs the study for `groups` (all eight when empty), reusing the main run's UNet.
pub fn run(
    env: Env<'_>,
    groups: &[ConfounderKind],
    segmenter: PathBuf,
    out: &Path,
) -> Result<Vec<SensitivityRun>> {
    let defs = env.config.definitions();
    let bases = experiment::load_specs(&defs, &[CROP.into(), WHOLE.into()])?;
    let groups: Vec<ConfounderKind> = if groups.is_empty() {
        ConfounderKind::ALL.to_vec()
    } else {
        groups.to_vec()
    };
    let mut runs = Vec::new();
    for group in groups {
        let (base, split) = experiment_for(group);
        let mut spec = bases
            .iter()
            .find(|s| s.name == base)
            .ok_or_else(|| {
                StudyError::Invalid(format!(
                    "sensitivity: experiment `{base}` not found in {}",
                    defs.experiments_origin()
                ))
            })?
            .clone();
        spec.name = base.replace("split1", split);
        spec.split = split.to_string();
        let input = if spec.image_column == "png8" {
            "whole images"
        } else {
            "lung crops"
        };
        spec.title = format!("Sensitivity: {group} planted alone, {input}, {split} training pair");
        tracing::info!(%group, split = spec.split, "sensitivity world");
        let data = data::prepare(
            env,
            DataChoice::Isolated(group),
            out,
            Some(segmenter.clone()),
        )
        .ctx(|| format!("sensitivity world `{group}`"))?;
        let dir = out.join("sensitivity").join(group.as_str());
        let mut group_profile = env.profile.clone();
        group_profile.image_size = input_size_for(group, env.profile);
        let group_env = Env {
            profile: &group_profile,
            ..env
        };
        let result = Study::new(group_env)
            .run_all(&data, std::slice::from_ref(&spec), &dir)
            .ctx(|| format!("sensitivity world `{group}`"))?
            .into_iter()
            .next()
            .ok_or_else(|| {
                StudyError::Invalid(format!(
                    "sensitivity world `{group}`: the experiment did not run"
                ))
            })?;
        runs.push(SensitivityRun {
            group,
            split: spec.split.clone(),
            image_column: spec.image_column.clone(),
            image_size: group_profile.image_size,
            result,
        });
    }
    Ok(runs)
}

/// The confounder test's row for the run's own group.
pub fn own_group_row(run: &SensitivityRun) -> Option<&ConfounderRow> {
    run.result
        .confounders
        .as_ref()?
        .confounders
        .iter()
        .find(|k| k.kind == run.group.as_str())
}
