//! The audit in words and on a page: the verdict's wording (what stdout and every report print), the report
//! sections of an audit (the audit's own `report.html` and the study's report show the same), and the
//! audit's `report.html`.
//!
//! Order on the page: the verdict and the tests that decided it; every test with its figure, CI, threshold
//! and rule; the evidence behind the figures (occlusion AUCs, the probe per source); the saliency galleries.

use std::path::{Path, PathBuf};

use cxr_explain::{AuditEvidence, AuditReport, Overall, Risk, Status, TestResult, Verdict};
use cxr_report::{Block, Report, Section};

use crate::confounders::ConfounderOutcome;
use crate::error::Result;
use crate::run::{AuditFiles, AuditOutcome};

/// Inline previews are this wide (pixels); the full galleries are linked.
pub const THUMB_WIDTH: u32 = 200;

/// An audit verdict in words, as the report and stdout print it.
pub fn verdict_words(v: Overall) -> &'static str {
    match v {
        Overall::Shortcut => "shortcut found",
        Overall::Suspicious => "suspicious",
        Overall::NoShortcutFound => "no shortcut found",
        Overall::InsufficientEvidence => "insufficient evidence",
    }
}

/// The human name of an audit test (`lungs_removed[mean]` → `lungs-removed occlusion (mean fill)`).
pub fn test_label(test: &str) -> String {
    let (base, fill) = match test.split_once('[') {
        Some((b, f)) => (b, Some(f.trim_end_matches(']'))),
        None => (test, None),
    };
    let name = match base {
        "score_follows_source" => "score follows the source (within a class)",
        "auc_spread" => "per-source AUC spread",
        "planted_confounders" => "planted confounders (counterfactual swaps)",
        "source_probe" => "source probe",
        "split_design" => "split design",
        "lungs_removed" => "lungs-removed occlusion",
        "lungs_only" => "lungs-only occlusion",
        "lung_energy" => "saliency energy in the lungs",
        other => other,
    };
    match fill {
        Some(f) => format!("{name} ({f} fill)"),
        None => name.to_string(),
    }
}

/// An audit rule with its threshold names in words (the names are `cxr_explain::Thresholds`' fields).
pub fn humanise_rule(rule: &str) -> String {
    // Longest names first: `lung_energy_ratio` must go before `lung_energy`.
    const NAMES: [(&str, &str); 11] = [
        ("source_association", "the association threshold"),
        ("source_auc", "the source-separation threshold"),
        ("source_p", "the p-value threshold"),
        ("auc_spread", "the spread threshold"),
        ("lung_energy_ratio", "the energy ratio"),
        ("lungs_removed_auc", "the lungs-removed AUC threshold"),
        ("lungs_removed_p", "the p-value threshold"),
        ("lungs_only_drop", "the lungs-only drop threshold"),
        ("lung_energy", "the energy floor"),
        ("probe_auc", "the probe AUC threshold"),
        ("cramers_v", "the Cramér's V threshold"),
    ];
    let mut out = rule.to_string();
    for (name, words) in NAMES {
        out = out.replace(name, words);
    }
    out
}

/// The tests that decided a verdict: those that flagged for `shortcut`, those that warned for `suspicious`,
/// none otherwise.
pub fn deciding_tests(v: &Verdict) -> Vec<&TestResult> {
    let status = match v.verdict {
        Overall::Shortcut => Status::Flag,
        Overall::Suspicious => Status::Warn,
        _ => return Vec::new(),
    };
    v.with_status(status).collect()
}

/// `shortcut found (raised by the source probe)`: the verdict and what decided it, in words.
pub fn verdict_headline(v: &Verdict) -> String {
    let words = verdict_words(v.verdict);
    let deciding: Vec<String> = deciding_tests(v)
        .iter()
        .map(|t| test_label(&t.test))
        .collect();
    match v.verdict {
        Overall::NoShortcutFound => format!("{words} (no test flagged or warned)"),
        Overall::InsufficientEvidence => format!("{words} (no test could run)"),
        _ if deciding.is_empty() => words.to_string(),
        _ => format!("{words} (raised by the {})", deciding.join(" and the ")),
    }
}

/// The data risk in a sentence (`Data risk: high. Label and source are associated ...`): what the training
/// split offered, shown before the verdict, which is about the model.
pub fn data_risk_words(v: &Verdict) -> String {
    let r = &v.data_risk;
    let level = match r.risk {
        Risk::High => "high",
        Risk::Low => "low",
        Risk::Unknown => "unknown",
    };
    format!(
        "Data risk ({}): {level}. {}. The verdict is about the model: whether it took such a shortcut.",
        test_label(&r.test),
        r.detail
    )
}

fn data_risk_block(v: &Verdict) -> Block {
    match v.data_risk.risk {
        Risk::High => Block::Warning(data_risk_words(v)),
        _ => Block::Paragraph(data_risk_words(v)),
    }
}

/// A test's status as the report and the console print it.
pub fn status_words(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::Warn => "warning",
        Status::Flag => "FLAG",
        Status::NotRun => "not run",
    }
}

fn ci(lo: Option<f64>, hi: Option<f64>) -> String {
    match (lo, hi) {
        (Some(l), Some(h)) => format!("{l:.3}–{h:.3}"),
        _ => "–".into(),
    }
}

/// One test in a sentence: status, name, figure with its CI, threshold, finding, rule.
pub fn describe_test(t: &TestResult) -> String {
    let fig = match (t.figure, t.ci_low, t.ci_high) {
        (Some(v), Some(lo), Some(hi)) => format!("{v:.3} (95% CI {lo:.3}–{hi:.3})"),
        (Some(v), _, _) => format!("{v:.3}"),
        _ => "–".into(),
    };
    let th = t
        .threshold
        .map(|v| format!(", threshold {v:.2}"))
        .unwrap_or_default();
    let by = if t.triggered_by.is_empty() {
        String::new()
    } else {
        format!("; triggered by {}", t.triggered_by.join(", "))
    };
    format!(
        "{} — {}: {fig}{th}. {}{by}. Rule: {}.",
        status_words(t.status),
        test_label(&t.test),
        t.detail,
        humanise_rule(&t.rule)
    )
}

/// What the saliency maps cost, in a sentence (occlusion maps are a batch of forward passes each).
pub fn saliency_cost(e: &AuditEvidence) -> Option<String> {
    let c = e.saliency.as_ref()?;
    let time = match c.seconds_per_map {
        Some(s) => format!("{s:.1} s per map"),
        None => "no time per map (scored outside the audit)".into(),
    };
    Some(format!(
        "Saliency cost: {} maps of {} images, {} forward passes and {time}{}.",
        c.method,
        c.images,
        c.passes_per_map,
        match (c.patch, c.stride) {
            (Some(p), Some(s)) => format!(" (patch {p} px, stride {s} px)"),
            _ => String::new(),
        }
    ))
}

/// Warnings for occlusion tests that rest on fewer than `cxr_eval::MIN_PER_CLASS` images of a class.
pub fn small_sample_warnings(report: &AuditReport) -> Vec<String> {
    let mut out = Vec::new();
    for ev in &report.evidence {
        for occ in &ev.occlusion {
            let (Some(c), Some(p)) = (occ.n_covid, occ.n_pneumonia) else {
                continue;
            };
            if cxr_eval::is_small_sample(c, p, cxr_eval::MIN_PER_CLASS) {
                out.push(format!(
                    "† Small sample: the occlusion tests of {} ({} fill) rest on {c} Covid-19 and {p} pneumonia \
                     images (fewer than {} of a class); read their AUCs with care.",
                    ev.model,
                    occ.fill,
                    cxr_eval::MIN_PER_CLASS
                ));
            }
        }
    }
    out
}

/// The verdict of each audited model as a block (every test described, the saliency cost), preceded by the
/// small-sample warnings: what a study's report shows of an audit beside its other figures.
pub fn verdict_blocks(report: &AuditReport) -> Vec<Block> {
    let mut blocks: Vec<Block> = small_sample_warnings(report)
        .into_iter()
        .map(Block::Warning)
        .collect();
    for (i, v) in report.verdicts.iter().enumerate() {
        let mut evidence: Vec<String> = v.tests.iter().map(describe_test).collect();
        if let Some(c) = report.evidence.get(i).and_then(saliency_cost) {
            evidence.push(c);
        }
        blocks.push(data_risk_block(v));
        blocks.push(verdict_block(v, evidence));
    }
    blocks
}

fn verdict_block(v: &Verdict, evidence: Vec<String>) -> Block {
    Block::Verdict {
        model: v.model.clone(),
        flagged: v.flagged(),
        suspicious: v.verdict == Overall::Suspicious,
        summary: verdict_headline(v),
        evidence,
    }
}

/// A section id from free text (model names may hold anything).
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn fig(f: &cxr_explain::Figure) -> String {
    match (f.ci_low, f.ci_high) {
        (Some(l), Some(h)) => format!("{:.3} [{l:.3}, {h:.3}]", f.value),
        _ => format!("{:.3}", f.value),
    }
}

/// The sections of an audit's page: the verdict and its reason, every test, the evidence behind the
/// figures, and the saliency galleries (`galleries`, linked relative to `report_dir`, the folder of the page
/// that shows them). Section ids carry the model's name, so several audits fit on one page.
pub fn audit_sections(
    report: &AuditReport,
    galleries: &[PathBuf],
    report_dir: &Path,
) -> Vec<Section> {
    let mut sections = Vec::new();
    for (i, v) in report.verdicts.iter().enumerate() {
        let ev = report.evidence.get(i);
        let id = slug(&v.model);

        // 1. The verdict, and the tests that decided it.
        let deciding: Vec<String> = deciding_tests(v).into_iter().map(describe_test).collect();
        let reason = if deciding.is_empty() {
            vec![match v.verdict {
                Overall::InsufficientEvidence => {
                    "No test could run: give the image column, masks, a split and (for the probe) features."
                        .to_string()
                }
                _ => "Every test that ran passed; see each one below.".to_string(),
            }]
        } else {
            deciding
        };
        let mut blocks = vec![data_risk_block(v), verdict_block(v, reason)];
        blocks.push(Block::Paragraph(
            "Verdicts describe the model: shortcut found if a behavioural test flags (the score follows the \
             source within a class the way the training data associated it, the per-source AUC spread, the \
             lungs-removed occlusion, and on a synthetic world the counterfactual swaps of planted \
             confounders); suspicious if \
             supporting evidence warns (the source probe, the lungs-only occlusion, the saliency energy); no \
             shortcut found if at least one test ran and none flagged or warned; insufficient evidence \
             otherwise. The training split's label x source association is the data risk above, never on its \
             own a reason. A model that passes may still use shortcuts these tests do not measure."
                .into(),
        ));
        let single = AuditReport {
            evidence: ev.cloned().into_iter().collect(),
            verdicts: vec![v.clone()],
        };
        blocks.extend(
            small_sample_warnings(&single)
                .into_iter()
                .map(Block::Warning),
        );
        sections.push(Section {
            id: format!("audit-{id}-verdict"),
            title: format!("Verdict: {}", v.model),
            blocks,
        });

        // 2. Every test.
        let rows = v
            .tests
            .iter()
            .map(|t| {
                vec![
                    test_label(&t.test),
                    status_words(t.status).to_string(),
                    t.figure.map_or("–".into(), |f| format!("{f:.3}")),
                    ci(t.ci_low, t.ci_high),
                    t.threshold.map_or("–".into(), |f| format!("{f:.2}")),
                    humanise_rule(&t.rule),
                    if t.detail.is_empty() {
                        "–".into()
                    } else {
                        t.detail.clone()
                    },
                ]
            })
            .collect();
        let mut blocks = vec![Block::Table {
            caption: format!("The audit's tests of {}", v.model),
            header: [
                "test",
                "status",
                "figure",
                "95% CI",
                "threshold",
                "rule",
                "finding",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        }];
        if let Some(ev) = ev {
            if let Some(sf) = ev
                .score_follows_source
                .as_ref()
                .filter(|s| !s.comparisons.is_empty())
            {
                blocks.push(Block::Table {
                    caption: format!(
                        "Does the score follow the source? Within each class, the AUC of the model's score for \
                         the group against the rest (0.5: the score says nothing about the source), its 95% CI, \
                         and the permutation p (source labels shuffled among the class's patients, {} \
                         shuffles), raw and Holm-adjusted. Sources may differ in severity within a class, so \
                         only a large separation flags.",
                        sf.permutations
                    ),
                    header: [
                        "class",
                        "group",
                        "against",
                        "images",
                        "AUC",
                        "p",
                        "Holm p",
                    ]
                    .map(String::from)
                    .to_vec(),
                    rows: sf
                        .comparisons
                        .iter()
                        .map(|c| {
                            vec![
                                c.class.clone(),
                                format!("{} ({})", c.group, c.group_sources.join(", ")),
                                format!("{} ({})", c.against, c.rest_sources.join(", ")),
                                format!("{} + {}", c.n_group, c.n_rest),
                                fig(&c.auc),
                                format!("{:.4}", c.p),
                                format!("{:.4}", c.p_holm),
                            ]
                        })
                        .collect(),
                });
            }
            if let Some(sp) = ev.auc_spread.as_ref().filter(|s| s.not_run.is_none()) {
                blocks.push(Block::Table {
                    caption:
                        "Per-source AUC spread: the model's AUC within each source that holds both \
                              classes, against the pooled AUC over those sources"
                            .into(),
                    header: ["source", "AUC", "images (Covid-19 + pneumonia)"]
                        .map(String::from)
                        .to_vec(),
                    rows: sp
                        .per_source
                        .iter()
                        .map(|a| {
                            vec![
                                a.source.clone(),
                                format!("{:.3}", a.auc),
                                format!("{} + {}", a.n_covid, a.n_pneumonia),
                            ]
                        })
                        .chain([vec![
                            "pooled (stratified)".into(),
                            format!(
                                "{} ({})",
                                sp.pooled.map_or("–".into(), |v| format!("{v:.3}")),
                                sp.stratified.map_or("–".into(), |v| format!("{v:.3}"))
                            ),
                            String::new(),
                        ]])
                        .collect(),
                });
            }
            if !ev.occlusion.is_empty() {
                blocks.push(Block::Table {
                    caption: "Occlusion: the model's AUC (95% CI) on the same images, whole, without the lungs, \
                              and with only the lungs"
                        .into(),
                    header: [
                        "fill",
                        "full image",
                        "lungs removed",
                        "permutation p",
                        "lungs only",
                        "images (Covid-19 + pneumonia)",
                    ]
                    .map(String::from)
                    .to_vec(),
                    rows: ev
                        .occlusion
                        .iter()
                        .map(|o| {
                            vec![
                                o.fill.clone(),
                                fig(&o.full),
                                fig(&o.lungs_removed),
                                o.lungs_removed_p.map_or("–".into(), |p| format!("{p:.4}")),
                                fig(&o.lungs_only),
                                match (o.n_covid, o.n_pneumonia) {
                                    (Some(c), Some(p)) => format!("{c} + {p}"),
                                    _ => "–".into(),
                                },
                            ]
                        })
                        .collect(),
                });
            }
            if !ev.source_probe.is_empty() {
                blocks.push(Block::Table {
                    caption: "Source probe: how well the model's features tell each source from the others \
                              (AUC, 95% CI; patient-grouped cross-validation)"
                        .into(),
                    header: ["source", "AUC"].map(String::from).to_vec(),
                    rows: ev
                        .source_probe
                        .iter()
                        .map(|s| vec![s.source.clone(), fig(&s.auc)])
                        .collect(),
                });
            }
            if let Some(c) = saliency_cost(ev) {
                blocks.push(Block::Paragraph(c));
            }
        }
        sections.push(Section {
            id: format!("audit-{id}-tests"),
            title: format!("Every test: {}", v.model),
            blocks,
        });
    }

    // 3. The saliency galleries.
    let mut blocks = vec![Block::Paragraph(
        "Saliency maps: where the model's Covid-19 score comes from, in colour over each image, with the lung \
         outline in green; one gallery per source and class, most heat outside the lungs first."
            .into(),
    )];
    if galleries.is_empty() {
        blocks.push(Block::Paragraph(
            "No saliency maps were made (no images to map, or saliency maps switched off).".into(),
        ));
    }
    for g in galleries {
        let name = g
            .file_stem()
            .map(|s| s.to_string_lossy().replace("__", " / "))
            .unwrap_or_default();
        // A gallery that cannot be read costs its preview, not the report.
        match cxr_explain::render::thumbnail_png(g, THUMB_WIDTH) {
            Ok(bytes) => blocks.push(Block::Thumbnail {
                caption: name,
                bytes,
                href: cxr_core::path_cell(report_dir, g),
            }),
            Err(e) => tracing::warn!("report: gallery left out: {e}"),
        }
    }
    sections.push(Section {
        id: format!(
            "audit-{}-saliency",
            report
                .verdicts
                .first()
                .map_or(String::new(), |v| slug(&v.model))
        ),
        title: "Saliency galleries".into(),
        blocks,
    });
    sections
}

/// One planted group's row of the confounder table, from whatever holds it: the test's own `KindResult`, or
/// the study's copy read back from `confounders.json`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConfounderLine<'a> {
    pub kind: &'a str,
    pub label_associated: bool,
    pub n: usize,
    pub mean_shift: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub status: &'a str,
}

/// The counterfactual confounder test's blocks: what it does and its flag rule, then one row per group.
pub fn confounder_blocks(
    model: &str,
    verdict: &str,
    rule: &str,
    lines: &[ConfounderLine<'_>],
) -> Vec<Block> {
    let f = |v: Option<f64>| v.map_or("–".into(), |x| format!("{x:+.3}"));
    vec![
        Block::Paragraph(format!(
            "Counterfactual confounder test (synthetic world only): the same rendered patient with one \
             planted confounder group swapped between the training split's Covid-19 and pneumonia sources; \
             the mean score shift towards the donor's class and its 95% CI. Flag rule: {rule}."
        )),
        Block::Table {
            caption: format!("Planted confounders followed by {model}: {verdict}"),
            header: [
                "confounder",
                "label-associated in training",
                "pairs",
                "mean shift",
                "95% CI",
                "status",
            ]
            .map(String::from)
            .to_vec(),
            rows: lines
                .iter()
                .map(|k| {
                    vec![
                        k.kind.to_string(),
                        if k.label_associated { "yes" } else { "no" }.into(),
                        k.n.to_string(),
                        f(k.mean_shift),
                        format!("[{}, {}]", f(k.ci_low), f(k.ci_high)),
                        k.status.to_string(),
                    ]
                })
                .collect(),
        },
    ]
}

/// The counterfactual confounder test as a section (synthetic worlds only).
pub fn confounder_section(c: &ConfounderOutcome) -> Section {
    let verdict = cxr_explain::confounders::verdict_of(&c.results);
    let rule = cxr_explain::confounders::FLAG_RULE;
    let lines: Vec<ConfounderLine<'_>> = c
        .results
        .iter()
        .map(|k| ConfounderLine {
            kind: &k.kind,
            label_associated: k.label_associated,
            n: k.n,
            mean_shift: k.mean_shift,
            ci_low: k.ci_low,
            ci_high: k.ci_high,
            status: k.status,
        })
        .collect();
    Section {
        id: format!("audit-{}-confounders", slug(&c.model)),
        title: "Planted confounders".into(),
        blocks: confounder_blocks(&c.model, verdict, rule, &lines),
    }
}

/// The audit's own page: the verdict first, then the tests, the evidence, the galleries (and the
/// confounder test, when it ran), written atomically as `files.report_html`.
pub fn write_report_html(
    outcome: &AuditOutcome,
    files: &AuditFiles,
    confounders: Option<&ConfounderOutcome>,
) -> Result<()> {
    let report = audit_report(outcome, files, confounders);
    cxr_core::fsutil::write_atomic(&files.report_html, report.to_html().as_bytes())?;
    Ok(())
}

/// The page [`write_report_html`] writes.
pub fn audit_report(
    outcome: &AuditOutcome,
    files: &AuditFiles,
    confounders: Option<&ConfounderOutcome>,
) -> Report {
    let r = &outcome.report;
    let model = r
        .verdicts
        .first()
        .map_or_else(String::new, |v| v.model.clone());
    let mut findings: Vec<String> = r
        .verdicts
        .iter()
        .map(|v| format!("{}: {}.", v.model, verdict_headline(v)))
        .collect();
    if let Some(c) = confounders {
        let flagged = c.flagged();
        findings.push(if flagged.is_empty() {
            "Counterfactual test: no planted confounder followed.".into()
        } else {
            format!(
                "Counterfactual test: the score follows the planted {}.",
                flagged.join(", ")
            )
        });
    }
    // The notes say what did not run and why (`source probe not run: ...`), a sentence each.
    findings.extend(outcome.notes.iter().map(|n| {
        let mut c = n.chars();
        c.next()
            .map(|f| format!("{}{}.", f.to_uppercase(), c.as_str()))
            .unwrap_or_default()
    }));
    let cfg = &outcome.config;
    let opt = |p: &Option<PathBuf>| p.as_ref().map_or("–".into(), |p| p.display().to_string());
    let run_facts = vec![
        ("model".to_string(), model.clone()),
        ("manifest".into(), outcome.manifest.display().to_string()),
        ("image column".into(), cfg.column().to_string()),
        ("occlusion split".into(), cfg.split.to_string()),
        (
            "occlusion fills".into(),
            cfg.fills
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("probe folds".into(), cfg.folds.to_string()),
        ("features".into(), opt(&cfg.features)),
        ("Grad-CAM lung energy".into(), opt(&cfg.lung_energy)),
        (
            "occlusion maps".into(),
            format!(
                "{} images, {} positions per side",
                cfg.saliency_images, cfg.saliency_grid
            ),
        ),
        ("audit.json".into(), "audit.json (beside this page)".into()),
        ("cxr-audit".into(), env!("CARGO_PKG_VERSION").into()),
    ];
    let mut sections = audit_sections(r, &files.galleries, &files.dir);
    if let Some(c) = confounders {
        sections.push(confounder_section(c));
    }
    Report {
        title: format!("Shortcut audit of {model}"),
        findings,
        run_facts,
        sections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxr_explain::{Figure, OcclusionEvidence, SourceFigure, Thresholds};

    fn small_report() -> AuditReport {
        let evidence = AuditEvidence {
            model: "cue reader".into(),
            source_probe: vec![SourceFigure {
                source: "hospital_a".into(),
                auc: Figure::with_ci(0.97, 0.93, 1.0),
            }],
            cramers_v: Some(0.8),
            occlusion: vec![OcclusionEvidence {
                fill: "mean".into(),
                full: Figure::with_ci(0.99, 0.97, 1.0),
                lungs_removed: Figure::with_ci(0.95, 0.9, 1.0),
                lungs_only: Figure::with_ci(0.52, 0.3, 0.7),
                lungs_removed_p: Some(0.0001),
                n_covid: Some(6),
                n_pneumonia: Some(12),
                small_sample: None,
            }],
            ..Default::default()
        };
        let verdict = cxr_explain::verdict(&evidence, &Thresholds::default());
        AuditReport {
            evidence: vec![evidence],
            verdicts: vec![verdict],
        }
    }

    #[test]
    fn the_sections_give_the_verdict_first_then_every_test_then_the_galleries() {
        let report = small_report();
        let dir = tempfile::tempdir().unwrap();
        let gallery = dir.path().join("saliency/gallery/hospital_a__covid.png");
        std::fs::create_dir_all(gallery.parent().unwrap()).unwrap();
        image::RgbImage::new(300, 100).save(&gallery).unwrap();
        let sections = audit_sections(&report, std::slice::from_ref(&gallery), dir.path());
        assert_eq!(sections.len(), 3);
        let ids: Vec<&str> = sections.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "audit-cue-reader-verdict",
                "audit-cue-reader-tests",
                "audit-cue-reader-saliency"
            ]
        );
        // The data risk first (V = 0.8: high), then the verdict and the tests that decided it.
        assert!(
            matches!(&sections[0].blocks[0], Block::Warning(w) if w.starts_with("Data risk (split design): high")),
            "{:?}",
            sections[0].blocks[0]
        );
        let Block::Verdict {
            flagged,
            summary,
            evidence,
            ..
        } = &sections[0].blocks[1]
        else {
            panic!("{:?}", sections[0].blocks[1]);
        };
        assert!(flagged);
        assert!(
            summary.starts_with("shortcut found (raised by the"),
            "{summary}"
        );
        assert!(
            evidence.iter().all(|e| e.starts_with("FLAG")),
            "{evidence:?}"
        );
        // Six Covid-19 images: the small-sample warning.
        assert!(
            sections[0].blocks.iter().any(
                |b| matches!(b, Block::Warning(w) if w.contains("6 Covid-19 and 12 pneumonia"))
            )
        );
        // Every test, with figure, CI, threshold and rule.
        let Block::Table { header, rows, .. } = &sections[1].blocks[0] else {
            panic!();
        };
        assert_eq!(
            header[..5],
            ["test", "status", "figure", "95% CI", "threshold"]
        );
        assert_eq!(rows.len(), report.verdicts[0].tests.len());
        let removed = rows
            .iter()
            .find(|r| r[0] == "lungs-removed occlusion (mean fill)")
            .unwrap();
        assert_eq!(removed[1], "FLAG");
        assert_eq!(removed[2], "0.950");
        assert_eq!(removed[3], "0.900–1.000");
        assert_eq!(removed[4], "0.70");
        assert!(
            removed[5].contains("the lungs-removed AUC threshold"),
            "{}",
            removed[5]
        );
        // The gallery, as a thumbnail linked relative to the page.
        let thumb = sections[2]
            .blocks
            .iter()
            .find_map(|b| match b {
                Block::Thumbnail {
                    href,
                    bytes,
                    caption,
                } => Some((href, bytes, caption)),
                _ => None,
            })
            .unwrap();
        assert_eq!(thumb.0, "saliency/gallery/hospital_a__covid.png");
        assert_eq!(thumb.2, "hospital_a / covid");
        assert!(image::load_from_memory(thumb.1).unwrap().width() <= THUMB_WIDTH);
    }

    #[test]
    fn a_clean_verdict_says_every_test_passed() {
        let evidence = AuditEvidence {
            model: "m".into(),
            cramers_v: Some(0.1),
            occlusion: vec![OcclusionEvidence {
                fill: "mean".into(),
                full: Figure::with_ci(0.9, 0.8, 1.0),
                lungs_removed: Figure::with_ci(0.55, 0.4, 0.7),
                lungs_only: Figure::with_ci(0.88, 0.8, 0.95),
                lungs_removed_p: Some(0.5),
                n_covid: Some(20),
                n_pneumonia: Some(20),
                small_sample: None,
            }],
            ..Default::default()
        };
        let v = cxr_explain::verdict(&evidence, &Thresholds::default());
        assert_eq!(
            verdict_headline(&v),
            "no shortcut found (no test flagged or warned)"
        );
        let report = AuditReport {
            evidence: vec![evidence],
            verdicts: vec![v],
        };
        let sections = audit_sections(&report, &[], Path::new("."));
        assert!(
            matches!(&sections[0].blocks[0], Block::Paragraph(p) if p.starts_with("Data risk (split design): low")),
            "{:?}",
            sections[0].blocks[0]
        );
        let Block::Verdict {
            flagged,
            suspicious,
            evidence,
            ..
        } = &sections[0].blocks[1]
        else {
            panic!();
        };
        assert!(!flagged && !suspicious);
        assert!(evidence[0].contains("passed"), "{evidence:?}");
        assert!(
            sections[2]
                .blocks
                .iter()
                .any(|b| matches!(b, Block::Paragraph(p) if p.starts_with("No saliency maps")))
        );
    }

    #[test]
    fn words_for_tests_and_rules() {
        assert_eq!(
            test_label("lungs_only[noise]"),
            "lungs-only occlusion (noise fill)"
        );
        assert_eq!(
            humanise_rule("warn if x < lung_energy_ratio or lung_energy"),
            "warn if x < the energy ratio or the energy floor"
        );
        assert_eq!(
            test_label("score_follows_source"),
            "score follows the source (within a class)"
        );
        assert_eq!(
            humanise_rule("max(AUC, 1 - AUC) >= source_auc, p < source_p, |d| >= auc_spread"),
            "max(AUC, 1 - AUC) >= the source-separation threshold, p < the p-value threshold, |d| >= the spread threshold"
        );
        let report = small_report();
        let blocks = verdict_blocks(&report);
        // The small-sample warning, the data risk, the verdict.
        assert!(matches!(&blocks[0], Block::Warning(w) if w.starts_with("† Small sample")));
        assert!(matches!(&blocks[1], Block::Warning(w) if w.starts_with("Data risk")));
        let Block::Verdict { evidence, .. } = &blocks[2] else {
            panic!();
        };
        assert_eq!(evidence.len(), report.verdicts[0].tests.len());
    }
}
