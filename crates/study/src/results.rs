//! `results.json`: the typed [`Results`] *is* its schema. Every number the report shows is in it; the report
//! ([`crate::report`]) is built from a `&Results` and the files it links, never from re-parsed JSON.
//!
//! Field by field: docs/RESULTS.md; machine-readable: docs/results.schema.json, which a test checks against
//! a fully populated `Results` (every schema property is a field, every field validates).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cxr_core::Split;
use cxr_eval::report::{EvalReport, Group};
use serde::Serialize;

use crate::data::Prepared;
use crate::error::{Context as _, Result};
use crate::experiment::ExperimentResult;
use crate::rejections::{self, UnevenRejection};
use crate::sensitivity::SensitivityRun;
use crate::{Profile, StudyConfig};

/// The layout version: 2 (1 was the untyped layout with `"wall time": "451 s"`).
pub const SCHEMA_VERSION: u32 = 2;

/// The candle version the models ran on, as the report states it.
const CANDLE_VERSION: &str = "0.11.1";

/// Everything a study run found (`results.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Results {
    pub schema_version: u32,
    pub run: RunInfo,
    pub profile: Profile,
    /// The data stages of the main run.
    pub data: Prepared,
    pub experiments: Vec<ExperimentResult>,
    pub seen_unseen_auc: Vec<SeenUnseenAuc>,
    /// The clean-world control's experiments (synthetic default only).
    pub control_clean_world: Option<Vec<ExperimentResult>>,
    pub control_seen_unseen_auc: Vec<SeenUnseenAuc>,
    /// `--sensitivity`: one world per planted confounder group.
    pub sensitivity: Option<Vec<SensitivityRun>>,
    /// The lung UNet and the segment stage of the main data.
    pub segmentation: Segmentation,
}

/// How the run was made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    pub command: String,
    pub profile: String,
    /// What data ran (synthetic world or real roots).
    pub data: String,
    pub images_selected: usize,
    pub images_after_lung_crop: Option<usize>,
    pub backbone_weights: BackboneWeights,
    pub seed: u64,
    pub bootstrap_resamples: usize,
    pub model_input_px: usize,
    pub min_per_class: usize,
    pub versions: Versions,
    pub wall_time_s: f64,
}

/// Where the backbones' weights came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackboneWeights {
    /// Some model started from ImageNet weights.
    pub pretrained: bool,
    pub resnet50: Option<String>,
    pub vgg16: Option<String>,
    /// The report's sentence.
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Versions {
    pub cxr_confounders: String,
    pub candle: String,
}

/// A figure with its 95% interval, labelled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interval {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
    /// `delong` (AUC) or `bootstrap`.
    pub method: &'static str,
    pub n_covid: usize,
    pub n_pneumonia: usize,
    /// A class of the set has fewer than `cxr_eval::MIN_PER_CLASS` images.
    pub small_sample: bool,
}

/// Seen and unseen test AUC (DeLong 95% CI) of one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeenUnseenAuc {
    pub experiment: String,
    pub model: String,
    pub seen: Option<Interval>,
    pub unseen: Option<Interval>,
}

/// The segmenter and the segment stage of the main data: held-out Dice per source, the worst held-out crops,
/// the rejections per source and the uneven-rejection warnings (the report's "Lung segmentation" section).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segmentation {
    /// The UNet weights used.
    pub segmenter: PathBuf,
    /// Whether its training report was available (trained here, or `W.report.json` beside given weights).
    pub training_report: bool,
    pub test_dice: Option<f64>,
    pub test_dice_flip: Option<f64>,
    pub dice_by_source: Vec<DiceRow>,
    pub split_by_source: Vec<SplitRow>,
    /// The worst held-out cases, worst first.
    pub worst: Vec<WorstRow>,
    pub rejections_by_source: Vec<RejectionRow>,
    /// The uneven-rejection rule in words.
    pub rejection_rule: String,
    pub warnings: Vec<UnevenRejection>,
}

/// Held-out Dice of one source (`None` where the report holds no number).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiceRow {
    pub source: String,
    pub n: usize,
    pub mean: Option<f64>,
    pub sd: Option<f64>,
    pub median: Option<f64>,
    pub p10: Option<f64>,
    pub min: Option<f64>,
    /// Mean with the test-time horizontal flip.
    pub mean_flip: Option<f64>,
}

/// The UNet's split by patient for one source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitRow {
    pub source: String,
    #[serde(flatten)]
    pub counts: cxr_segment::train::SplitCounts,
}

/// One of the worst held-out cases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorstRow {
    pub source: String,
    /// The mask set's file stem.
    pub name: String,
    pub dice: f64,
    /// Overlay PNG: grey image, true lung outline green, prediction red, crop box yellow.
    pub overlay: PathBuf,
}

/// The segment stage's counts for one source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectionRow {
    pub source: String,
    pub images: usize,
    pub kept: usize,
    /// Rejected images by reason (`empty_mask`, `small_crop`, `unreadable`).
    pub rejected: BTreeMap<String, usize>,
    /// Rejected over images; `None` for no images.
    pub rejection_rate: Option<f64>,
}

/// What a study run trained: the main study, the clean-world control and the sensitivity worlds.
#[derive(Debug, Clone, PartialEq)]
pub struct Runs {
    pub main: Vec<ExperimentResult>,
    pub control: Option<Vec<ExperimentResult>>,
    pub sensitivity: Option<Vec<SensitivityRun>>,
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl Results {
    /// Assembles the results of a run that took `wall_time_s` seconds.
    pub fn build(
        config: &StudyConfig,
        profile: &Profile,
        data: Prepared,
        runs: Runs,
        wall_time_s: f64,
    ) -> Self {
        let Runs {
            main: mut experiments,
            mut control,
            sensitivity,
        } = runs;
        for r in experiments.iter_mut().chain(control.iter_mut().flatten()) {
            flag_small_occlusion(r);
        }
        let pretrained = experiments
            .iter()
            .flat_map(|r| &r.models)
            .any(|m| m.pretrained);
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let description = if pretrained {
            format!(
                "ImageNet weights: ResNet50 {}, VGG16 {}",
                path(&config.weights_resnet50).unwrap_or_else(|| "none".into()),
                path(&config.weights_vgg16).unwrap_or_else(|| "none".into())
            )
        } else {
            "random initialisation — no ImageNet weights supplied".to_string()
        };
        let run = RunInfo {
            command: config.command.clone(),
            profile: profile.name.to_string(),
            data: data.choice_label.clone(),
            images_selected: data.ingest.images,
            images_after_lung_crop: Some(data.segment.kept),
            backbone_weights: BackboneWeights {
                pretrained,
                resnet50: path(&config.weights_resnet50),
                vgg16: path(&config.weights_vgg16),
                description,
            },
            seed: config.seed,
            bootstrap_resamples: config.resamples,
            model_input_px: profile.image_size,
            min_per_class: cxr_eval::MIN_PER_CLASS,
            versions: Versions {
                cxr_confounders: env!("CARGO_PKG_VERSION").to_string(),
                candle: CANDLE_VERSION.to_string(),
            },
            wall_time_s,
        };
        Results {
            schema_version: SCHEMA_VERSION,
            run,
            profile: profile.clone(),
            seen_unseen_auc: seen_unseen(&experiments),
            control_seen_unseen_auc: control.as_deref().map(seen_unseen).unwrap_or_default(),
            segmentation: Segmentation::of(&data),
            data,
            experiments,
            control_clean_world: control,
            sensitivity,
        }
    }

    /// `results.json`'s bytes: pretty-printed, keys sorted at every level (the file's layout since its first
    /// version; a stable order also keeps two runs' files comparable line by line).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        // Through `serde_json::Value`, whose maps are sorted: serialising the structs directly would write
        // their declaration order.
        let value = serde_json::to_value(self).ctx(|| "serialising results.json".into())?;
        serde_json::to_vec_pretty(&value).ctx(|| "serialising results.json".into())
    }

    /// Writes `results.json` into `out` (atomically) and returns its path.
    pub fn write(&self, out: &Path) -> Result<PathBuf> {
        let path = out.join("results.json");
        cxr_core::fsutil::write_atomic(&path, &self.to_json()?)
            .ctx(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// Marks each occlusion test of the audit with `small_sample` when a class it rests on has fewer than
/// `cxr_eval::MIN_PER_CLASS` images (the lungs-removed AUC of a Cohen split can rest on 4 pneumonia images).
fn flag_small_occlusion(r: &mut ExperimentResult) {
    let Some(audit) = r.audit.as_mut() else {
        return;
    };
    for occ in audit
        .report
        .evidence
        .iter_mut()
        .flat_map(|e| &mut e.occlusion)
    {
        if let (Some(c), Some(p)) = (occ.n_covid, occ.n_pneumonia) {
            occ.small_sample = Some(cxr_eval::is_small_sample(c, p, cxr_eval::MIN_PER_CLASS));
        }
    }
}

/// The test-set AUC of `model` on `group` with its DeLong interval.
pub fn auc_interval(report: &EvalReport, model: &str, group: &Group) -> Option<Interval> {
    let set = report.set(model, Split::Test, group)?;
    let d = set.delong.as_ref()?;
    Some(Interval {
        value: d.auc,
        lo: d.lo,
        hi: d.hi,
        method: "delong",
        n_covid: set.n_covid,
        n_pneumonia: set.n_pneumonia,
        small_sample: set.small_sample,
    })
}

/// Seen and unseen test AUC of every model of `results`, in order.
pub fn seen_unseen(results: &[ExperimentResult]) -> Vec<SeenUnseenAuc> {
    results
        .iter()
        .flat_map(|r| {
            r.models.iter().map(|m| SeenUnseenAuc {
                experiment: r.spec.name.clone(),
                model: m.name.clone(),
                seen: auc_interval(&r.eval, &m.name, &Group::Seen),
                unseen: auc_interval(&r.eval, &m.name, &Group::Unseen),
            })
        })
        .collect()
}

impl Segmentation {
    /// The segmentation figures of `data`: its UNet's training report (when there is one) and its segment
    /// stage's counts.
    pub fn of(data: &Prepared) -> Self {
        let report = data.segmenter_report.as_ref();
        let dice = report
            .map(|r| {
                r.test_by_source
                    .iter()
                    .map(|(source, d)| DiceRow {
                        source: source.clone(),
                        n: d.n,
                        mean: finite(d.mean),
                        sd: finite(d.sd),
                        median: finite(d.median),
                        p10: finite(d.p10),
                        min: finite(d.min),
                        mean_flip: r
                            .test_by_source_flip
                            .get(source)
                            .and_then(|f| finite(f.mean)),
                    })
                    .collect()
            })
            .unwrap_or_default();
        // The overlays' paths are relative to the weights' own folder.
        let weights_dir = data.segmenter.parent().unwrap_or_else(|| Path::new(""));
        let rejections = data
            .segment
            .by_source
            .iter()
            .map(|(source, c)| RejectionRow {
                source: source.clone(),
                images: c.images,
                kept: c.kept,
                rejection_rate: (c.images > 0)
                    .then(|| c.rejected.values().sum::<usize>() as f64 / c.images as f64),
                rejected: c.rejected.clone(),
            })
            .collect();
        Self {
            segmenter: data.segmenter.clone(),
            training_report: report.is_some(),
            test_dice: report.and_then(|r| r.test_dice).and_then(finite),
            test_dice_flip: report.and_then(|r| r.test_dice_flip).and_then(finite),
            dice_by_source: dice,
            split_by_source: report
                .map(|r| {
                    r.split
                        .iter()
                        .map(|(source, counts)| SplitRow {
                            source: source.clone(),
                            counts: counts.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            worst: report
                .map(|r| {
                    r.worst
                        .iter()
                        .map(|w| WorstRow {
                            source: w.source.clone(),
                            name: w.name.clone(),
                            dice: w.dice,
                            overlay: weights_dir.join(&w.overlay),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            rejections_by_source: rejections,
            rejection_rule: rejections::rule(),
            warnings: rejections::uneven(&rejections::per_source(&data.segment)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::json_schema;

    fn schema() -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/results.schema.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// Walks the schema and a value together. `want` gets every property the schema declares, `have` those
    /// that hold a non-null value; both as (definition, path inside it), so that a property of
    /// `#/$defs/experiment` counts as filled when any experiment (main, control or sensitivity) fills it.
    fn walk(
        root: &Value,
        schema: &Value,
        v: Option<&Value>,
        at: (&str, &str),
        want: &mut BTreeSet<(String, String)>,
        have: &mut BTreeSet<(String, String)>,
    ) {
        let (def, path) = at;
        if let Some(name) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/$defs/"))
        {
            return walk(root, &root["$defs"][name], v, (name, ""), want, have);
        }
        for alt in schema
            .get("oneOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            walk(root, alt, v, at, want, have);
        }
        for (k, s) in schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let p = format!("{path}.{k}");
            want.insert((def.to_string(), p.clone()));
            let x = v.and_then(|v| v.get(k)).filter(|x| !x.is_null());
            if x.is_some() {
                have.insert((def.to_string(), p.clone()));
            }
            walk(root, s, x, (def, &p), want, have);
        }
        if let Some(items) = schema.get("items") {
            let p = format!("{path}[]");
            match v.and_then(Value::as_array).filter(|a| !a.is_empty()) {
                Some(a) => {
                    for x in a {
                        walk(root, items, Some(x), (def, &p), want, have);
                    }
                }
                None => walk(root, items, None, (def, &p), want, have),
            }
        }
    }

    /// The committed schema and the type agree: a fully populated `Results` validates (no field outside the
    /// schema where it forbids extras, every type as declared), and every property the schema declares is a
    /// field that holds a value somewhere in it.
    #[test]
    fn results_json_follows_the_committed_schema() {
        let dir = tempfile::tempdir().unwrap();
        let results = crate::report::fixture::results(dir.path());
        let json: Value = serde_json::from_slice(&results.to_json().unwrap()).unwrap();
        let schema = schema();
        assert_eq!(json_schema::validate(&schema, &json), Vec::<String>::new());
        let mut style = Vec::new();
        json_schema::style_problems(&json, "$", &mut style);
        assert_eq!(style, Vec::<String>::new());
        let (mut want, mut have) = (BTreeSet::new(), BTreeSet::new());
        walk(
            &schema,
            &schema,
            Some(&json),
            ("$", ""),
            &mut want,
            &mut have,
        );
        assert!(want.len() > 200, "{} properties", want.len());
        let missing: Vec<&(String, String)> = want.difference(&have).collect();
        assert!(
            missing.is_empty(),
            "schema properties the type does not fill: {missing:#?}"
        );
    }

    #[test]
    fn keys_are_sorted_and_numbers_are_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let results = crate::report::fixture::results(dir.path());
        let text = String::from_utf8(results.to_json().unwrap()).unwrap();
        // The file's layout since its first version: keys sorted at every level.
        let top: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("  \"") && !l.starts_with("   "))
            .map(|l| l.trim().split('"').nth(1).unwrap())
            .collect();
        let mut sorted = top.clone();
        sorted.sort();
        assert_eq!(top, sorted);
        assert_eq!(top.first(), Some(&"control_clean_world"));
        assert!(text.contains("\"wall_time_s\": 451.0"), "{}", &text[..200]);
        assert!(text.contains("\"schema_version\": 2"));
    }
}
