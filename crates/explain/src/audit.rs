//! The shortcut audit's verdict: figures computed elsewhere (probe AUCs here, occlusion AUCs and CIs in
//! `cxr-eval`, Cramér's V in the ingest split linter) in, one verdict per model out, with every test's
//! figure, CI, threshold and the rule that fired. Plain data in, JSON out.
//!
//! # Tests and thresholds ([`Thresholds::default`])
//!
//! | test | figure | status when triggered | rule |
//! |---|---|---|---|
//! | `source_probe` | highest per-source probe AUC | **flag** | some source AUC >= `probe_auc` (0.90) *and* Cramér's V >= `cramers_v` (0.50): the source is predictable from the model's features and the training label follows it, so a shortcut is available. With V below the threshold: pass (noted); V unknown: warn. |
//! | `split_design` | Cramér's V of label x source in the training split | **flag** | V >= `cramers_v` (0.50): the training data confound label and source (the paper's one-source-per-class splits give V = 1). |
//! | `lungs_removed[<fill>]` | AUC with the lungs occluded | **flag** | max(AUC, 1 - AUC) >= `lungs_removed_auc` (0.70) and chance is ruled out: the permutation p-value < `lungs_removed_p` (0.05), or, where no p is given, the CI excludes 0.5. The model separates the classes without the lungs (an inverted AUC counts too: the output still follows the class). The permutation test holds on a handful of images, where DeLong's CI does not (it collapses to a point under perfect separation). |
//! | `lungs_only[<fill>]` | full-image AUC - lungs-only AUC | warn | drop >= `lungs_only_drop` (0.20) and the lungs-only AUC's CI lies below the full-image AUC (without a CI: the drop alone): the lungs alone do not carry the model's performance. Supporting evidence only: occlusion is also a distribution shift. The CI condition keeps a handful of test images from warning by chance: the default `reproduce`'s clean control of split 2 fell from 1.000 to 0.778 on 8 + 9 images, CI [0.53, 1.00]. |
//! | `lung_energy` | mean lung energy fraction of the saliency map (Grad-CAM or occlusion) | warn | mean < `lung_energy_ratio` (1.0) x the mean share of the image that is lung (what an evenly spread map scores), or < `lung_energy` (0.50) when that share is unknown: the heat is no more on the lungs than chance. **Abstains** (`not_run`) when the map has fewer than `min_lung_cells` (8) native cells across one lung. Supporting evidence only. |
//!
//! # Why the saliency rule abstains on coarse maps
//!
//! A lung energy fraction asks whether heat lies inside or outside the lungs, so the map must resolve a
//! lung. Grad-CAM's map is the backbone's last feature map: 7x7 for ResNet50 at 224 px, 4x4 at 128, 2x2 at
//! 64; its bilinear up-sampling smears each cell over its neighbours, so about one cell on each side of
//! every lung edge is neither inside nor outside. With `k` cells across one lung (half the lung field's
//! bounding-box width, in map cells: `energy::lung_cells`), only `k - 2` are interior; at k = 8 three
//! quarters of the lung is, below it the fraction mostly measures the up-sampling. The default
//! `reproduce`'s clean-world control shows the failure this prevents: 35 % of the Grad-CAM energy inside
//! lungs covering 43 % of a 128 px crop, 4x4 map (about 1.8 cells per lung), warned as `suspicious` on a
//! world with no shortcut. Calibration on the synthetic worlds, whose confounders are known: the paper
//! world stays `shortcut` (split design, source probe, lungs-removed AUC), the clean world and every
//! experiment of its control give `no_shortcut_found` (`tests/tests/reproduce_e2e.rs`). Occlusion maps
//! (`saliency`) choose their stride, so they can be fine enough: 8 cells per lung needs a stride of at
//! most 1/16 of the lung field's width.
//!
//! Overall: `shortcut` if any test flags; else `suspicious` if any warns; else `no_shortcut_found` if at
//! least one test ran; else `insufficient_evidence`. Figures are point estimates; CIs are reported beside them
//! and only the occlusion rule uses one.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::probe::ProbeResult;

/// A point estimate with an optional confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub value: f64,
    #[serde(default)]
    pub ci_low: Option<f64>,
    #[serde(default)]
    pub ci_high: Option<f64>,
}

impl Figure {
    pub fn point(value: f64) -> Self {
        Self {
            value,
            ci_low: None,
            ci_high: None,
        }
    }

    pub fn with_ci(value: f64, low: f64, high: f64) -> Self {
        Self {
            value,
            ci_low: Some(low),
            ci_high: Some(high),
        }
    }
}

/// The probe's AUC for one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceFigure {
    pub source: String,
    pub auc: Figure,
}

/// One occlusion experiment (one fill): the model's AUC on the same images three ways.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OcclusionEvidence {
    /// `mean`, `noise`, ... ([`crate::occlusion::Fill::name`]).
    pub fill: String,
    pub full: Figure,
    pub lungs_removed: Figure,
    pub lungs_only: Figure,
    /// Two-sided permutation p-value of the lungs-removed AUC's distance from 0.5 (`None` in older
    /// `audit.json` files: then the CI decides).
    #[serde(default)]
    pub lungs_removed_p: Option<f64>,
    /// Images per class the AUCs rest on (Covid-19, other pneumonia).
    #[serde(default)]
    pub n_covid: Option<usize>,
    #[serde(default)]
    pub n_pneumonia: Option<usize>,
    /// A class has fewer images than `cxr_eval::MIN_PER_CLASS`: set by the study for its report (absent
    /// from a plain audit's `audit.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub small_sample: Option<bool>,
}

/// Everything known about one model. Missing pieces are simply not run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditEvidence {
    pub model: String,
    /// SHA-256 of the model's content (ONNX file and external data) where known: which model this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    #[serde(default)]
    pub source_probe: Vec<SourceFigure>,
    /// Cramér's V of label x source in the model's training split.
    #[serde(default)]
    pub cramers_v: Option<f64>,
    #[serde(default)]
    pub occlusion: Vec<OcclusionEvidence>,
    /// Mean lung energy fraction over the explained images.
    #[serde(default)]
    pub lung_energy: Option<Figure>,
    /// Mean share of the image that is lung (what an evenly spread map would score), for context.
    #[serde(default)]
    pub mean_mask_area: Option<f64>,
    /// Mean native saliency-map cells across one lung (`energy::lung_cells`); unknown in older files.
    #[serde(default)]
    pub lung_cells: Option<f64>,
    /// Which saliency map the lung energy comes from (`grad_cam`, `occlusion`) and what it cost.
    #[serde(default)]
    pub saliency: Option<SaliencyCost>,
}

/// How a saliency map was made and what it cost (occlusion maps are a batch of forward passes each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaliencyCost {
    /// `grad_cam` or `occlusion`.
    pub method: String,
    /// Images mapped.
    pub images: usize,
    /// Forward passes per map (1 for Grad-CAM: one forward and one backward).
    pub passes_per_map: usize,
    /// Wall-clock seconds per map.
    pub seconds_per_map: f64,
    /// Occlusion patch and stride in pixels of the model's input image (absent for Grad-CAM).
    #[serde(default)]
    pub patch: Option<usize>,
    #[serde(default)]
    pub stride: Option<usize>,
}

impl AuditEvidence {
    /// Fills `source_probe` from a probe result (point AUCs; sources with an undefined AUC are left out).
    pub fn with_probe(mut self, probe: &ProbeResult) -> Self {
        self.source_probe = probe
            .per_source
            .iter()
            .filter_map(|s| {
                s.auc.map(|a| SourceFigure {
                    source: s.source.clone(),
                    auc: Figure::point(a),
                })
            })
            .collect();
        self
    }
}

/// Decision thresholds (see the module documentation for the rules).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub probe_auc: f64,
    pub cramers_v: f64,
    pub lungs_removed_auc: f64,
    pub lungs_only_drop: f64,
    /// Absolute floor of the mean lung energy fraction, used when the lungs' share of the image is unknown.
    pub lung_energy: f64,
    /// Floor of the mean lung energy fraction as a multiple of the lungs' share of the image.
    pub lung_energy_ratio: f64,
    /// Largest permutation p-value of the lungs-removed AUC that may flag.
    #[serde(default = "default_lungs_removed_p")]
    pub lungs_removed_p: f64,
    /// Fewest native saliency-map cells across one lung for the lung energy rule to judge (it abstains
    /// below; see the module documentation).
    #[serde(default = "default_min_lung_cells")]
    pub min_lung_cells: f64,
}

fn default_lungs_removed_p() -> f64 {
    0.05
}

fn default_min_lung_cells() -> f64 {
    8.0
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            probe_auc: 0.90,
            cramers_v: 0.50,
            lungs_removed_auc: 0.70,
            lungs_only_drop: 0.20,
            lung_energy: 0.50,
            lung_energy_ratio: 1.0,
            lungs_removed_p: default_lungs_removed_p(),
            min_lung_cells: default_min_lung_cells(),
        }
    }
}

/// Outcome of one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Warn,
    Flag,
    NotRun,
}

/// One test's evidence and outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    pub test: String,
    pub status: Status,
    pub figure: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// The threshold the figure was compared with.
    pub threshold: Option<f64>,
    /// The rule, in words.
    pub rule: String,
    /// What triggered it (e.g. the sources the probe identifies).
    pub triggered_by: Vec<String>,
    pub detail: String,
}

/// Overall finding for a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overall {
    Shortcut,
    Suspicious,
    NoShortcutFound,
    InsufficientEvidence,
}

/// The verdict for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub model: String,
    pub verdict: Overall,
    pub tests: Vec<TestResult>,
    pub thresholds: Thresholds,
}

impl Verdict {
    /// The tests with the given status.
    pub fn with_status(&self, status: Status) -> impl Iterator<Item = &TestResult> {
        self.tests.iter().filter(move |t| t.status == status)
    }

    /// Whether any test flagged.
    pub fn flagged(&self) -> bool {
        self.with_status(Status::Flag).next().is_some()
    }
}

fn test(name: &str, rule: &str) -> TestResult {
    TestResult {
        test: name.into(),
        status: Status::NotRun,
        figure: None,
        ci_low: None,
        ci_high: None,
        threshold: None,
        rule: rule.into(),
        triggered_by: Vec::new(),
        detail: String::new(),
    }
}

fn set_figure(t: &mut TestResult, f: Figure, threshold: f64) {
    t.figure = Some(f.value);
    t.ci_low = f.ci_low;
    t.ci_high = f.ci_high;
    t.threshold = Some(threshold);
}

/// `" on 6 + 7 images"` when the class counts are known.
fn counts(occ: &OcclusionEvidence) -> String {
    match (occ.n_covid, occ.n_pneumonia) {
        (Some(c), Some(p)) => format!(", {c} Covid-19 + {p} pneumonia images"),
        _ => String::new(),
    }
}

/// Applies the rules to one model's evidence.
pub fn verdict(evidence: &AuditEvidence, th: &Thresholds) -> Verdict {
    let mut tests = Vec::new();

    // 1. Source probe.
    let mut t = test(
        "source_probe",
        "flag if some source's probe AUC >= probe_auc and Cramér's V >= cramers_v",
    );
    if let Some(best) = evidence
        .source_probe
        .iter()
        .max_by(|a, b| a.auc.value.total_cmp(&b.auc.value))
    {
        set_figure(&mut t, best.auc, th.probe_auc);
        t.triggered_by = evidence
            .source_probe
            .iter()
            .filter(|s| s.auc.value >= th.probe_auc)
            .map(|s| s.source.clone())
            .collect();
        (t.status, t.detail) = if t.triggered_by.is_empty() {
            (
                Status::Pass,
                format!(
                    "no source is identifiable (best: {} at {:.3})",
                    best.source, best.auc.value
                ),
            )
        } else {
            let ids = t.triggered_by.join(", ");
            match evidence.cramers_v {
                Some(v) if v >= th.cramers_v => (
                    Status::Flag,
                    format!(
                        "sources identifiable from the features ({ids}) and the label follows the source (V = {v:.3}): a shortcut is available"
                    ),
                ),
                Some(v) => (
                    Status::Pass,
                    format!(
                        "sources identifiable ({ids}) but the training label does not follow the source (V = {v:.3})"
                    ),
                ),
                None => (
                    Status::Warn,
                    format!(
                        "sources identifiable ({ids}); the label-source association is unknown"
                    ),
                ),
            }
        };
    }
    tests.push(t);

    // 2. Split design.
    let mut t = test(
        "split_design",
        "flag if Cramér's V (label x source, training split) >= cramers_v",
    );
    if let Some(v) = evidence.cramers_v {
        set_figure(&mut t, Figure::point(v), th.cramers_v);
        (t.status, t.detail) = if v >= th.cramers_v {
            (
                Status::Flag,
                format!("label and source are associated in the training split (V = {v:.3})"),
            )
        } else {
            (
                Status::Pass,
                format!(
                    "label and source are nearly independent in the training split (V = {v:.3})"
                ),
            )
        };
    }
    tests.push(t);

    // 3. Occlusion, one pair of tests per fill.
    for occ in &evidence.occlusion {
        let mut t = test(
            &format!("lungs_removed[{}]", occ.fill),
            "flag if max(AUC, 1 - AUC) with the lungs removed >= lungs_removed_auc and chance is ruled out \
             (permutation p < lungs_removed_p; without a p, the CI excludes 0.5)",
        );
        let r = occ.lungs_removed;
        set_figure(&mut t, r, th.lungs_removed_auc);
        let separation = r.value.max(1.0 - r.value);
        let ci_excludes_chance = match (occ.lungs_removed_p, r.ci_low, r.ci_high) {
            (Some(p), _, _) => p < th.lungs_removed_p,
            (None, Some(lo), Some(hi)) => lo > 0.5 || hi < 0.5,
            _ => true,
        };
        let evidence_of_chance = match occ.lungs_removed_p {
            Some(p) => format!("permutation p = {p:.3}{}", counts(occ)),
            None => "its CI includes chance".into(),
        };
        (t.status, t.detail) = if separation >= th.lungs_removed_auc && ci_excludes_chance {
            (
                Status::Flag,
                format!(
                    "the model still separates the classes with the lungs removed (AUC {:.3}; full image {:.3}{})",
                    r.value,
                    occ.full.value,
                    occ.lungs_removed_p
                        .map(|p| format!("; permutation p = {p:.4}{}", counts(occ)))
                        .unwrap_or_default()
                ),
            )
        } else if separation >= th.lungs_removed_auc {
            (
                Status::Pass,
                format!(
                    "AUC {:.3} with the lungs removed, but chance is not ruled out ({evidence_of_chance})",
                    r.value
                ),
            )
        } else {
            (
                Status::Pass,
                format!(
                    "AUC {:.3} with the lungs removed (full image {:.3})",
                    r.value, occ.full.value
                ),
            )
        };
        tests.push(t);

        let mut t = test(
            &format!("lungs_only[{}]", occ.fill),
            "warn if full-image AUC - lungs-only AUC >= lungs_only_drop and the lungs-only AUC's CI lies below \
             the full-image AUC",
        );
        let drop = occ.full.value - occ.lungs_only.value;
        set_figure(&mut t, Figure::point(drop), th.lungs_only_drop);
        // A drop the lungs-only AUC's own sampling error covers is no evidence (few test images).
        let beyond_chance = occ.lungs_only.ci_high.is_none_or(|hi| hi < occ.full.value);
        (t.status, t.detail) = if drop >= th.lungs_only_drop && !beyond_chance {
            (
                Status::Pass,
                format!(
                    "AUC {:.3} on the lungs alone (full image {:.3}), but its CI [{:.3}, {:.3}] reaches the full-image AUC",
                    occ.lungs_only.value,
                    occ.full.value,
                    occ.lungs_only.ci_low.unwrap_or(f64::NAN),
                    occ.lungs_only.ci_high.unwrap_or(f64::NAN)
                ),
            )
        } else if drop >= th.lungs_only_drop {
            (
                Status::Warn,
                format!(
                    "AUC falls from {:.3} to {:.3} on the lungs alone",
                    occ.full.value, occ.lungs_only.value
                ),
            )
        } else {
            (
                Status::Pass,
                format!(
                    "AUC {:.3} on the lungs alone (full image {:.3})",
                    occ.lungs_only.value, occ.full.value
                ),
            )
        };
        tests.push(t);
    }

    // 4. Grad-CAM lung energy, against what an evenly spread map would score when the lung area is known.
    let mut t = test(
        "lung_energy",
        "warn if the mean lung energy fraction < lung_energy_ratio x the lungs' share of the image \
         (lung_energy when that share is unknown)",
    );
    let coarse = evidence.lung_cells.filter(|&c| c < th.min_lung_cells);
    if let (Some(e), Some(cells)) = (evidence.lung_energy, coarse) {
        t.figure = Some(e.value);
        t.threshold = Some(th.min_lung_cells);
        t.detail = format!(
            "abstains: the saliency map has {cells:.1} cells across a lung (< {}), too coarse to tell heat inside \
             the lungs from heat outside ({:.0}% of the energy inside)",
            th.min_lung_cells,
            e.value * 100.0
        );
    } else if let Some(e) = evidence.lung_energy {
        let floor = evidence
            .mean_mask_area
            .map_or(th.lung_energy, |a| th.lung_energy_ratio * a);
        set_figure(&mut t, e, floor);
        let area = evidence
            .mean_mask_area
            .map(|a| format!(" (lungs cover {:.0}% of the image on average)", a * 100.0))
            .unwrap_or_default();
        let map = match evidence.saliency.as_ref().map(|s| s.method.as_str()) {
            Some("occlusion") => "occlusion-map",
            _ => "Grad-CAM",
        };
        let what = format!(
            "{:.0}% of the {map} energy lies inside the lungs{area}",
            e.value * 100.0
        );
        (t.status, t.detail) = if e.value < floor {
            (Status::Warn, what)
        } else {
            (Status::Pass, what)
        };
    }
    tests.push(t);

    let any = |s: Status| tests.iter().any(|t| t.status == s);
    let overall = if any(Status::Flag) {
        Overall::Shortcut
    } else if any(Status::Warn) {
        Overall::Suspicious
    } else if any(Status::Pass) {
        Overall::NoShortcutFound
    } else {
        Overall::InsufficientEvidence
    };
    Verdict {
        model: evidence.model.clone(),
        verdict: overall,
        tests,
        thresholds: *th,
    }
}

/// `audit.json`: the evidence and the verdict of every audited model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub evidence: Vec<AuditEvidence>,
    pub verdicts: Vec<Verdict>,
}

/// Writes `audit.json` atomically (pretty-printed).
pub fn write_audit_json(path: &Path, report: &AuditReport) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(report).map_err(|e| crate::ExplainError::Invalid {
        what: path.display().to_string(),
        message: e.to_string(),
    })?;
    cxr_core::fsutil::write_atomic(path, &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confounded() -> AuditEvidence {
        AuditEvidence {
            model: "paper-world".into(),
            model_sha256: None,
            source_probe: vec![
                SourceFigure {
                    source: "bimcv".into(),
                    auc: Figure::point(0.99),
                },
                SourceFigure {
                    source: "nih".into(),
                    auc: Figure::point(0.97),
                },
                SourceFigure {
                    source: "chexpert".into(),
                    auc: Figure::point(0.71),
                },
            ],
            cramers_v: Some(1.0),
            occlusion: vec![OcclusionEvidence {
                fill: "mean".into(),
                full: Figure::with_ci(0.99, 0.97, 1.0),
                lungs_removed: Figure::with_ci(0.93, 0.88, 0.97),
                lungs_only: Figure::with_ci(0.62, 0.52, 0.71),
                lungs_removed_p: Some(0.0001),
                n_covid: Some(40),
                n_pneumonia: Some(40),
                small_sample: None,
            }],
            lung_energy: Some(Figure::point(0.31)),
            mean_mask_area: Some(0.35),
            lung_cells: None,
            saliency: None,
        }
    }

    fn clean() -> AuditEvidence {
        AuditEvidence {
            model: "clean-world".into(),
            model_sha256: None,
            source_probe: vec![
                SourceFigure {
                    source: "bimcv".into(),
                    auc: Figure::point(0.95),
                },
                SourceFigure {
                    source: "nih".into(),
                    auc: Figure::point(0.62),
                },
            ],
            cramers_v: Some(0.04),
            occlusion: vec![OcclusionEvidence {
                fill: "mean".into(),
                full: Figure::with_ci(0.91, 0.86, 0.95),
                lungs_removed: Figure::with_ci(0.53, 0.45, 0.61),
                lungs_only: Figure::with_ci(0.88, 0.82, 0.93),
                lungs_removed_p: Some(0.6),
                n_covid: Some(40),
                n_pneumonia: Some(40),
                small_sample: None,
            }],
            lung_energy: Some(Figure::point(0.78)),
            mean_mask_area: Some(0.35),
            lung_cells: None,
            saliency: None,
        }
    }

    #[test]
    fn confounded_evidence_is_flagged_with_its_triggers() {
        let v = verdict(&confounded(), &Thresholds::default());
        assert_eq!(v.verdict, Overall::Shortcut);
        let by = |name: &str| v.tests.iter().find(|t| t.test == name).unwrap();
        let probe = by("source_probe");
        assert_eq!(probe.status, Status::Flag);
        assert_eq!(probe.triggered_by, vec!["bimcv", "nih"]);
        assert_eq!((probe.figure, probe.threshold), (Some(0.99), Some(0.90)));
        assert_eq!(by("split_design").status, Status::Flag);
        let removed = by("lungs_removed[mean]");
        assert_eq!(removed.status, Status::Flag);
        assert_eq!((removed.ci_low, removed.ci_high), (Some(0.88), Some(0.97)));
        assert_eq!(by("lungs_only[mean]").status, Status::Warn);
        assert_eq!(by("lung_energy").status, Status::Warn);
        // JSON round trip keeps everything.
        let report = AuditReport {
            evidence: vec![confounded()],
            verdicts: vec![v.clone()],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.json");
        write_audit_json(&path, &report).unwrap();
        let back: AuditReport = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, report);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("\"verdict\": \"shortcut\"")
        );
    }

    #[test]
    fn clean_evidence_passes_even_with_an_identifiable_source() {
        let v = verdict(&clean(), &Thresholds::default());
        assert_eq!(v.verdict, Overall::NoShortcutFound, "{:#?}", v.tests);
        assert!(!v.flagged());
        assert!(v.tests.iter().all(|t| t.status == Status::Pass));
        let probe = v.tests.iter().find(|t| t.test == "source_probe").unwrap();
        assert_eq!(probe.triggered_by, vec!["bimcv"]);
    }

    #[test]
    fn each_rule_fires_alone_and_respects_its_ci() {
        let th = Thresholds::default();
        // Occlusion alone: an inverted AUC still flags; a CI that includes chance does not.
        let mut e = AuditEvidence {
            model: "m".into(),
            ..Default::default()
        };
        e.occlusion.push(OcclusionEvidence {
            fill: "noise".into(),
            full: Figure::point(0.9),
            lungs_removed: Figure::with_ci(0.2, 0.1, 0.3),
            lungs_only: Figure::point(0.85),
            lungs_removed_p: None,
            n_covid: None,
            n_pneumonia: None,
            small_sample: None,
        });
        assert_eq!(verdict(&e, &th).verdict, Overall::Shortcut);
        // A perfect separation on 3 + 3 images: DeLong's CI collapses to [1, 1], the permutation p (0.1) says
        // chance; the p decides.
        e.occlusion[0].lungs_removed = Figure::with_ci(1.0, 1.0, 1.0);
        e.occlusion[0].lungs_removed_p = Some(0.1);
        (e.occlusion[0].n_covid, e.occlusion[0].n_pneumonia) = (Some(3), Some(3));
        let v = verdict(&e, &th);
        assert_eq!(v.verdict, Overall::NoShortcutFound, "{v:?}");
        assert!(
            v.tests[2]
                .detail
                .contains("p = 0.100, 3 Covid-19 + 3 pneumonia"),
            "{}",
            v.tests[2].detail
        );
        e.occlusion[0].lungs_removed_p = Some(0.001);
        assert_eq!(verdict(&e, &th).verdict, Overall::Shortcut);
        e.occlusion[0].lungs_removed_p = None;
        e.occlusion[0].lungs_removed = Figure::with_ci(0.75, 0.45, 0.95);
        assert_eq!(verdict(&e, &th).verdict, Overall::NoShortcutFound);
        // Probe without V: warn, not flag.
        let e = AuditEvidence {
            model: "m".into(),
            source_probe: vec![SourceFigure {
                source: "nih".into(),
                auc: Figure::point(0.96),
            }],
            ..Default::default()
        };
        let v = verdict(&e, &th);
        assert_eq!(v.verdict, Overall::Suspicious);
        // Lung energy is judged against the lung area when it is known, else against the absolute floor.
        let mut e = AuditEvidence {
            model: "m".into(),
            lung_energy: Some(Figure::point(0.45)),
            mean_mask_area: Some(0.6),
            ..Default::default()
        };
        let v = verdict(&e, &th);
        assert_eq!(v.verdict, Overall::Suspicious);
        assert_eq!(v.tests.last().unwrap().threshold, Some(0.6));
        e.mean_mask_area = Some(0.3);
        assert_eq!(verdict(&e, &th).verdict, Overall::NoShortcutFound);
        e.mean_mask_area = None;
        assert_eq!(verdict(&e, &th).verdict, Overall::Suspicious);
        // Nothing at all.
        let v = verdict(&AuditEvidence::default(), &th);
        assert_eq!(v.verdict, Overall::InsufficientEvidence);
        assert!(v.tests.iter().all(|t| t.status == Status::NotRun));
        // Thresholds are honoured, not hard-coded.
        let strict = Thresholds {
            cramers_v: 0.01,
            ..th
        };
        let v = verdict(&clean(), &strict);
        assert_eq!(v.verdict, Overall::Shortcut);
    }

    #[test]
    fn the_lung_energy_rule_abstains_on_a_map_too_coarse_for_a_lung() {
        let th = Thresholds::default();
        // The default reproduce's clean control: 35 % of the energy inside lungs covering 43 %, 4x4 map.
        let mut e = AuditEvidence {
            model: "clean-control".into(),
            cramers_v: Some(0.0),
            lung_energy: Some(Figure::point(0.35)),
            mean_mask_area: Some(0.43),
            lung_cells: Some(1.8),
            ..Default::default()
        };
        let v = verdict(&e, &th);
        assert_eq!(v.verdict, Overall::NoShortcutFound, "{:#?}", v.tests);
        let t = v.tests.iter().find(|t| t.test == "lung_energy").unwrap();
        assert_eq!(t.status, Status::NotRun);
        assert!(t.detail.starts_with("abstains"), "{}", t.detail);
        assert_eq!(t.threshold, Some(8.0));
        // A map fine enough judges again, and warns on the same figures.
        e.lung_cells = Some(12.0);
        assert_eq!(verdict(&e, &th).verdict, Overall::Suspicious);
        // The threshold is a setting, not a constant.
        e.lung_cells = Some(1.8);
        let lax = Thresholds {
            min_lung_cells: 1.0,
            ..th
        };
        assert_eq!(verdict(&e, &lax).verdict, Overall::Suspicious);
    }

    /// The default `reproduce`'s audits (2026-12-03, quick profile, 128 px crops, 4x4 Grad-CAM maps), as
    /// recorded in their `audit.json` (split design, occlusion and lung energy figures): every paper-world
    /// model is flagged, every clean-world control passes.
    #[test]
    fn recorded_evidence_of_the_default_reproduce_paper_flagged_clean_controls_pass() {
        let th = Thresholds::default();
        let occ = |full: Figure, only: Figure, removed: Figure, p: f64, n: (usize, usize)| {
            vec![OcclusionEvidence {
                fill: "mean".into(),
                full,
                lungs_removed: removed,
                lungs_only: only,
                lungs_removed_p: Some(p),
                n_covid: Some(n.0),
                n_pneumonia: Some(n.1),
                small_sample: None,
            }]
        };
        let world = |v: f64, occlusion: Vec<OcclusionEvidence>, energy: f64| AuditEvidence {
            model: "resnet50-finetune1".into(),
            cramers_v: Some(v),
            occlusion,
            lung_energy: Some(Figure::point(energy)),
            mean_mask_area: Some(0.43),
            lung_cells: Some(1.8),
            ..Default::default()
        };
        // Clean control, split 2: the lungs-only AUC falls to 0.778 on 8 + 9 images, CI [0.532, 1.0].
        let split2 = world(
            0.042,
            occ(
                Figure::with_ci(1.0, 1.0, 1.0),
                Figure::with_ci(0.778, 0.532, 1.0),
                Figure::with_ci(0.694, 0.410, 0.979),
                0.207,
                (8, 9),
            ),
            0.333,
        );
        let v = verdict(&split2, &th);
        assert_eq!(v.verdict, Overall::NoShortcutFound, "{:#?}", v.tests);
        // Clean control, split 1.
        let split1 = world(
            0.089,
            occ(
                Figure::with_ci(1.0, 1.0, 1.0),
                Figure::with_ci(0.905, 0.736, 1.0),
                Figure::with_ci(0.357, 0.019, 0.696),
                0.451,
                (7, 6),
            ),
            0.338,
        );
        assert_eq!(verdict(&split1, &th).verdict, Overall::NoShortcutFound);
        // Paper world, split 1: fully confounded split, lungs-only AUC at chance.
        let paper = world(
            1.0,
            occ(
                Figure::with_ci(1.0, 1.0, 1.0),
                Figure::with_ci(0.5, 0.5, 0.5),
                Figure::with_ci(1.0, 1.0, 1.0),
                0.001,
                (6, 7),
            ),
            0.417,
        );
        let v = verdict(&paper, &th);
        assert_eq!(v.verdict, Overall::Shortcut);
        let only = v
            .tests
            .iter()
            .find(|t| t.test == "lungs_only[mean]")
            .unwrap();
        assert_eq!(only.status, Status::Warn, "{}", only.detail);
    }
}
