//! `results.json` and `report.html` of `reproduce`, built from the same data so that every number the report
//! shows is in the JSON.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cxr_core::{SourceId, Split};
use cxr_eval::report::{EvalReport, Group};
use serde_json::json;

use super::data::Prepared;
use super::experiment::ExperimentResult;
use super::rejections;
use super::sensitivity::{self, SensitivityRun};
use super::{Profile, ReproduceArgs};
use crate::report::{Block, Report, Section};

/// A figure with its 95% interval, labelled (`results.json`; see docs/RESULTS.md).
#[derive(Debug, Clone, serde::Serialize)]
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
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeenUnseenAuc {
    pub experiment: String,
    pub model: String,
    pub seen: Option<Interval>,
    pub unseen: Option<Interval>,
}

fn auc_interval(report: &EvalReport, model: &str, group: &Group) -> Option<Interval> {
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

fn seen_unseen(results: &[ExperimentResult]) -> Vec<SeenUnseenAuc> {
    let mut out = Vec::new();
    for r in results {
        let Ok(report) = serde_json::from_value::<EvalReport>(r.eval.clone()) else {
            continue;
        };
        for m in &r.models {
            out.push(SeenUnseenAuc {
                experiment: r.spec.name.clone(),
                model: m.name.clone(),
                seen: auc_interval(&report, &m.name, &Group::Seen),
                unseen: auc_interval(&report, &m.name, &Group::Unseen),
            });
        }
    }
    out
}

/// `0.912 [0.871, 0.950]`, with `†` when the set is a small sample.
fn fmt3(t: &Option<Interval>) -> String {
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
fn fmt_ci(t: &Option<Interval>) -> String {
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

fn eval_of(r: &ExperimentResult) -> Option<EvalReport> {
    serde_json::from_value(r.eval.clone()).ok()
}

fn verdict_of(r: &ExperimentResult) -> Option<cxr_explain::Verdict> {
    let audit = r.audit.as_ref()?;
    serde_json::from_value::<cxr_explain::AuditReport>(audit.clone())
        .ok()?
        .verdicts
        .into_iter()
        .next()
}

/// The short name of an experiment: its title up to the colon (`Figure 4, split 1`).
fn short_title(r: &ExperimentResult) -> &str {
    r.spec
        .title
        .split_once(':')
        .map_or(r.spec.title.as_str(), |(a, _)| a)
}

/// The sources of the paper's Table 4 (fine-tuning the split-1 model on unseen sources): the class each
/// holds, and the paper's accuracy before and after (`../shared/docs/PAPER.md`).
const PAPER_TABLE4: [(&str, &str, f64, f64); 2] = [
    (SourceId::BIMCV, "Covid-19", 0.51, 0.98),
    (SourceId::CHEXPERT, "pneumonia", 0.12, 0.94),
];

/// One row of Table 4: source, class, paper before, paper after, ours before (the base model), ours after.
struct Table4Row {
    source: &'static str,
    class: &'static str,
    paper: (f64, f64),
    before: Option<cxr_eval::report::Estimate>,
    after: Option<cxr_eval::report::Estimate>,
}

fn accuracy_on(r: &ExperimentResult, source: &str) -> Option<cxr_eval::report::Estimate> {
    let report = eval_of(r)?;
    let model = r.models.first()?;
    let group = Group::Source(SourceId::new(source).ok()?);
    Some(
        report
            .set(&model.name, Split::Test, &group)?
            .at_half
            .accuracy,
    )
}

fn table4_rows(r: &ExperimentResult, base: Option<&ExperimentResult>) -> Vec<Table4Row> {
    PAPER_TABLE4
        .iter()
        .map(|&(source, class, before, after)| Table4Row {
            source,
            class,
            paper: (before, after),
            before: base.and_then(|b| accuracy_on(b, source)),
            after: accuracy_on(r, source),
        })
        .collect()
}

fn pct(e: &Option<cxr_eval::report::Estimate>) -> String {
    e.as_ref()
        .map(|e| cxr_eval::tables::fmt_estimate(e, true))
        .unwrap_or_else(|| "–".into())
}

/// One sentence: the paper's figure, ours with its CI, the audit verdict and the test that decided it.
fn finding(r: &ExperimentResult, all: &[ExperimentResult], world: &str) -> String {
    let name = format!("{}{world}", short_title(r));
    let auc = seen_unseen(std::slice::from_ref(r));
    let first = auc.first();
    let ours = match first {
        Some(a) if a.unseen.is_some() || a.seen.is_some() => format!(
            "ours {} on seen sources and {} on unseen ones",
            fmt_ci(&a.seen),
            fmt_ci(&a.unseen)
        ),
        _ => "ours: –".into(),
    };
    let body = match r.spec.kind.as_str() {
        "figure4" => match (r.spec.paper_seen_auc, r.spec.paper_unseen_auc) {
            (Some(ps), Some(pu)) if world.is_empty() => format!(
                "the paper reports test AUC {ps:.2} on seen and {pu:.2} on unseen sources; {ours}"
            ),
            _ => format!("test AUC: {ours}"),
        },
        "table3" => {
            let report = eval_of(r);
            let ours: Vec<String> = r
                .models
                .iter()
                .filter_map(|m| {
                    let set = report.as_ref()?.set(&m.name, Split::Test, &Group::All)?;
                    let d = set.delong.as_ref()?;
                    Some(format!(
                        "{} {:.3} (95% CI {:.3}–{:.3})",
                        m.name, d.auc, d.lo, d.hi
                    ))
                })
                .collect();
            let paper: Vec<String> = cxr_eval::tables::PAPER_TABLE3
                .iter()
                .map(|p| format!("{} {:.3}", p.model, p.auc))
                .collect();
            format!(
                "the paper reports test AUC {} on mixed sources; ours {}",
                paper.join(", "),
                if ours.is_empty() {
                    "–".into()
                } else {
                    ours.join(", ")
                }
            )
        }
        "table4" => {
            let base = r
                .spec
                .base
                .as_ref()
                .and_then(|b| all.iter().find(|x| &x.spec.name == b));
            let rows = table4_rows(r, base);
            let paper: Vec<String> = rows
                .iter()
                .map(|t| {
                    format!(
                        "{} {} {:.0}% → {:.0}%",
                        t.source,
                        t.class,
                        t.paper.0 * 100.0,
                        t.paper.1 * 100.0
                    )
                })
                .collect();
            let ours: Vec<String> = rows
                .iter()
                .map(|t| format!("{} {} → {}", t.source, pct(&t.before), pct(&t.after)))
                .collect();
            format!(
                "fine-tuning the split-1 model on the unseen sources, the paper's accuracy goes {}; ours {}",
                paper.join(", "),
                ours.join(", ")
            )
        }
        _ => format!("test AUC: {ours} (the paper has no figure for this design)"),
    };
    let audit = match verdict_of(r) {
        Some(v) => format!(" Audit: {}.", crate::report::verdict_headline(&v)),
        None => String::new(),
    };
    format!("{name}: {body}.{audit}")
}

/// What a `reproduce` run trained: the main study, the clean-world control and the sensitivity worlds.
pub struct Runs {
    pub main: Vec<ExperimentResult>,
    pub control: Option<Vec<ExperimentResult>>,
    pub sensitivity: Option<Vec<SensitivityRun>>,
}

pub fn write(
    args: &ReproduceArgs,
    profile: &Profile,
    main: &Prepared,
    runs: Runs,
    elapsed_s: f64,
    out: &Path,
) -> Result<PathBuf> {
    let Runs {
        main: mut results,
        mut control,
        sensitivity,
    } = runs;
    for r in results.iter_mut().chain(control.iter_mut().flatten()) {
        flag_small_occlusion(r);
    }
    let pretrained = results.iter().flat_map(|r| &r.models).any(|m| m.pretrained);
    let weights = if pretrained {
        format!(
            "ImageNet weights: ResNet50 {}, VGG16 {}",
            args.weights_resnet50
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".into()),
            args.weights_vgg16
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".into())
        )
    } else {
        "random initialisation — no ImageNet weights supplied".to_string()
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let run_facts = vec![
        ("command".to_string(), command.clone()),
        ("profile".to_string(), profile.name.to_string()),
        ("data".to_string(), main.choice_label.clone()),
        (
            "images".to_string(),
            format!(
                "{} selected by the dataset rules; {} after lung cropping",
                main.ingest.images,
                count_kept(&main.segment)
            ),
        ),
        ("backbone weights".to_string(), weights.clone()),
        ("seed".to_string(), args.seed.to_string()),
        (
            "bootstrap resamples".to_string(),
            args.resamples.to_string(),
        ),
        (
            "model input".to_string(),
            format!("{} px", profile.image_size),
        ),
        (
            "versions".to_string(),
            format!(
                "cxr-confounders {} (candle 0.11.1)",
                env!("CARGO_PKG_VERSION")
            ),
        ),
        ("wall time".to_string(), format!("{elapsed_s:.0} s")),
    ];
    let main_auc = seen_unseen(&results);
    let control_auc = control.as_deref().map(seen_unseen).unwrap_or_default();
    let seg = Segmentation::of(main);

    // results.json: everything, numbers as numbers, keys without spaces (docs/RESULTS.md,
    // docs/results.schema.json).
    let run_json = json!({
        "command": command,
        "profile": profile.name,
        "data": main.choice_label,
        "images_selected": main.ingest.images,
        "images_after_lung_crop": main.segment.get("kept").and_then(|v| v.as_u64()),
        "backbone_weights": {
            "pretrained": pretrained,
            "resnet50": args.weights_resnet50.as_ref().map(|p| p.display().to_string()),
            "vgg16": args.weights_vgg16.as_ref().map(|p| p.display().to_string()),
            "description": weights,
        },
        "seed": args.seed,
        "bootstrap_resamples": args.resamples,
        "model_input_px": profile.image_size,
        "min_per_class": cxr_eval::MIN_PER_CLASS,
        "versions": {
            "cxr_confounders": env!("CARGO_PKG_VERSION"),
            "candle": "0.11.1",
        },
        "wall_time_s": elapsed_s,
    });
    let results_json = json!({
        "schema_version": 2,
        "run": run_json,
        "profile": profile,
        "data": main,
        "experiments": results,
        "seen_unseen_auc": main_auc,
        "control_clean_world": control,
        "control_seen_unseen_auc": control_auc,
        "sensitivity": sensitivity,
        "segmentation": seg.to_json(),
    });
    let results_path = out.join("results.json");
    cxr_core::fsutil::write_atomic(&results_path, &serde_json::to_vec_pretty(&results_json)?)?;

    // report.html
    let mut sections = Vec::new();
    let mut overview = vec![Block::Paragraph(
        "Does a Covid-19 vs pneumonia classifier learn the disease or the data source? This report reruns the study of \
         Ben Ahmed et al. (arXiv 2102.04300) and audits each model for the source shortcut. Positive class: Covid-19; \
         a score is the model's probability of Covid-19. Intervals are 95% (DeLong for AUC, stratified bootstrap \
         for the other metrics)."
            .into(),
    )];
    if !pretrained {
        overview.push(Block::Warning(
            "Backbone: random initialisation — no ImageNet weights supplied (pass --weights-resnet50 / \
             --weights-vgg16 with torchvision or timm safetensors files)."
                .into(),
        ));
    }
    for n in profile.notes.iter().chain(&main.notes) {
        overview.push(Block::Warning(n.clone()));
    }
    let mut rows = Vec::new();
    let paper_of = |name: &str, world_clean: bool| -> (String, String) {
        let spec = results
            .iter()
            .find(|r| r.spec.name == name)
            .map(|r| &r.spec);
        let f = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.2}"));
        match spec {
            // The paper has no clean world: its figures do not apply to the control.
            Some(s) if !world_clean => (f(s.paper_seen_auc), f(s.paper_unseen_auc)),
            _ => ("–".into(), "–".into()),
        }
    };
    for (auc, data, clean) in [
        (&main_auc, main.tag.as_str(), false),
        (&control_auc, "world-clean (control)", true),
    ] {
        for a in auc {
            let (ps, pu) = paper_of(&a.experiment, clean);
            rows.push(vec![
                a.experiment.clone(),
                a.model.clone(),
                data.to_string(),
                ps,
                fmt3(&a.seen),
                pu,
                fmt3(&a.unseen),
            ]);
        }
    }
    overview.push(Block::Table {
        caption: format!(
            "Test AUC on seen vs unseen sources: the paper's beside ours (DeLong 95% CI); † = small sample \
             (fewer than {} images of a class the set holds)",
            cxr_eval::MIN_PER_CLASS
        ),
        header: [
            "experiment",
            "model",
            "data",
            "seen (paper)",
            "seen (ours)",
            "unseen (paper)",
            "unseen (ours)",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
    if let Some(gallery) = main
        .world_root
        .as_ref()
        .map(|w| w.join("gallery.png"))
        .filter(|p| p.exists())
    {
        overview.push(thumbnail(
            "The synthetic world: a few images per source (each source has its own acquisition signature)",
            &gallery,
            out,
        )?);
    }
    sections.push(Section {
        id: "overview".into(),
        title: "Overview".into(),
        blocks: overview,
    });
    sections.push(seg.section(out));

    // An uneven rejection rule qualifies every result below, so it leads the findings.
    let mut findings: Vec<String> = seg
        .warnings
        .iter()
        .map(|w| format!("Warning: {}", w.message))
        .collect();
    findings.extend(results.iter().map(|r| finding(r, &results, "")));
    findings.extend(
        control
            .iter()
            .flatten()
            .map(|r| finding(r, &results, " — control: clean world")),
    );
    for r in &results {
        sections.push(experiment_section(r, "", &results, out)?);
    }
    if let Some(ctl) = &control {
        for r in ctl {
            sections.push(experiment_section(r, " — control: clean world", ctl, out)?);
        }
    }
    if let Some(runs) = &sensitivity {
        sections.push(sensitivity_section(runs));
    }
    let report = Report {
        title: "cxr-confounders: do CXR models learn Covid-19 or the source?".into(),
        findings,
        run_facts,
        sections,
    };
    let html_path = out.join("report.html");
    cxr_core::fsutil::write_atomic(&html_path, report.to_html().as_bytes())?;
    println!("report: {}", html_path.display());
    println!("results: {}", results_path.display());
    let labelled = main_auc
        .iter()
        .map(|a| (a, ""))
        .chain(control_auc.iter().map(|a| (a, " (clean world)")));
    let verdicts: Vec<(String, String)> = results
        .iter()
        .chain(control.iter().flatten())
        .filter_map(|r| Some((r.spec.name.clone(), verdict_of(r)?)))
        .map(|(n, v)| (n, crate::report::verdict_words(v.verdict).to_string()))
        .collect();
    for (a, world) in labelled {
        let audit = verdicts
            .iter()
            .find(|(n, _)| n == &a.experiment)
            .filter(|_| world.is_empty())
            .map(|(_, v)| format!("  audit: {v}"))
            .unwrap_or_default();
        println!(
            "  {:<24} {:<32} seen AUC {}  unseen AUC {}{world}{audit}",
            a.experiment,
            a.model,
            fmt3(&a.seen),
            fmt3(&a.unseen)
        );
    }
    for r in sensitivity.iter().flatten() {
        let row = sensitivity_row(r);
        println!(
            "  sensitivity {:<12} {:<27} seen AUC {:<6} shift {} {:<12} audit {} ({})",
            row[0], row[1], row[2], row[3], row[4], row[5], row[6]
        );
    }
    Ok(html_path)
}

/// Marks each occlusion test of the audit (`evidence[].occlusion[]`) with `small_sample` when a class it
/// rests on has fewer than `cxr_eval::MIN_PER_CLASS` images (the lungs-removed AUC of a Cohen split can rest
/// on 4 pneumonia images).
fn flag_small_occlusion(r: &mut ExperimentResult) {
    let Some(audit) = r.audit.as_mut() else {
        return;
    };
    for ev in audit["evidence"].as_array_mut().into_iter().flatten() {
        for occ in ev["occlusion"].as_array_mut().into_iter().flatten() {
            let n = |k: &str| occ[k].as_u64().map(|v| v as usize);
            if let (Some(c), Some(p)) = (n("n_covid"), n("n_pneumonia")) {
                occ["small_sample"] =
                    json!(cxr_eval::is_small_sample(c, p, cxr_eval::MIN_PER_CLASS));
            }
        }
    }
}

/// Warnings for the occlusion tests flagged by [`flag_small_occlusion`].
fn small_occlusion_warnings(audit: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for ev in audit["evidence"].as_array().into_iter().flatten() {
        for occ in ev["occlusion"].as_array().into_iter().flatten() {
            if occ["small_sample"] == true {
                out.push(format!(
                    "† Small sample: the occlusion tests of {} ({} fill) rest on {} Covid-19 and {} pneumonia \
                     images (fewer than {} of a class); read their AUCs with care.",
                    ev["model"].as_str().unwrap_or(""),
                    occ["fill"].as_str().unwrap_or(""),
                    occ["n_covid"],
                    occ["n_pneumonia"],
                    cxr_eval::MIN_PER_CLASS
                ));
            }
        }
    }
    out
}

/// group, split, seen AUC, mean shift [CI], status, audit verdict, the audit tests that flagged.
fn sensitivity_row(r: &SensitivityRun) -> Vec<String> {
    let f = |v: &serde_json::Value| v.as_f64().map_or("–".into(), |x| format!("{x:+.3}"));
    let (shift, status) = match sensitivity::own_group_row(r) {
        Some(k) => (
            format!(
                "{} [{}, {}]",
                f(&k["mean_shift"]),
                f(&k["ci_low"]),
                f(&k["ci_high"])
            ),
            k["status"].as_str().unwrap_or("").to_string(),
        ),
        None => ("–".into(), "not tested".into()),
    };
    let seen = seen_unseen(std::slice::from_ref(&r.result))
        .first()
        .and_then(|a| a.seen.as_ref().map(|v| v.value))
        .map_or("–".into(), |v| format!("{v:.3}"));
    let verdict = r
        .result
        .audit
        .as_ref()
        .and_then(|a| serde_json::from_value::<cxr_explain::AuditReport>(a.clone()).ok())
        .and_then(|a| a.verdicts.into_iter().next());
    let (overall, flagged) = match verdict {
        Some(v) => {
            let flagged: Vec<String> = v
                .tests
                .iter()
                .filter(|t| t.status == cxr_explain::Status::Flag)
                .map(|t| crate::report::test_label(&t.test))
                .collect();
            (
                crate::report::verdict_words(v.verdict).to_string(),
                if flagged.is_empty() {
                    "none".into()
                } else {
                    flagged.join(", ")
                },
            )
        }
        None => ("–".into(), "–".into()),
    };
    vec![
        r.group.to_string(),
        format!(
            "{}, {} {} px",
            r.split,
            if r.image_column == "png8" {
                "whole image"
            } else {
                "lung crop"
            },
            r.image_size
        ),
        seen,
        shift,
        status,
        overall,
        flagged,
    ]
}

fn sensitivity_section(runs: &[SensitivityRun]) -> Section {
    let blocks = vec![
        Block::Paragraph(
            "Can the audit catch each kind of confounder? In the paper world a model follows the strongest cues it \
             can see and ignores weaker ones, so that world cannot show it. Here every planted group gets a world of \
             its own in which it is the only difference between the sources (every other group is drawn from one \
             broad, source-free signature, `cxr_synth::isolate`). A model is trained on the split whose training \
             pair differs in that group, on lung crops for the groups drawn over the whole image (intensity, blur, \
             noise, grid) and on whole images for those that live outside the lungs (framing, collimation, text, \
             marker; text at twice the input size, where its 7 px glyphs keep their height), and put through the \
             audit and the counterfactual confounder test. A sensitive audit finds the planted group followed (the other groups are the same \
             in every source there, so they are not tested)."
                .into(),
        ),
        Block::Table {
            caption: "One planted confounder per world: does the confounder test find it?".into(),
            header: [
                "planted group",
                "training pair, input",
                "seen AUC",
                "mean shift [95% CI]",
                "status",
                "audit verdict",
                "audit tests flagged",
            ]
            .map(String::from)
            .to_vec(),
            rows: runs.iter().map(sensitivity_row).collect(),
        },
    ];
    Section {
        id: "sensitivity".into(),
        title: "Audit sensitivity: one planted confounder per world".into(),
        blocks,
    }
}

fn describe_test(t: &cxr_explain::TestResult) -> String {
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
    let status = match t.status {
        cxr_explain::Status::Pass => "pass",
        cxr_explain::Status::Warn => "warning",
        cxr_explain::Status::Flag => "FLAG",
        cxr_explain::Status::NotRun => "not run",
    };
    format!(
        "{status} — {}: {fig}{th}. {}{by}. Rule: {}.",
        crate::report::test_label(&t.test),
        t.detail,
        crate::report::humanise_rule(&t.rule)
    )
}

/// A gallery as an inline thumbnail linking to the full file, which stays where the stage wrote it (inside
/// the output folder, so the link is relative and survives moving the folder); a file elsewhere is copied
/// into `galleries/` beside the report first.
fn thumbnail(caption: &str, file: &Path, out: &Path) -> Result<Block> {
    let bytes = cxr_explain::render::thumbnail_png(file, THUMB_WIDTH)
        .with_context(|| format!("making a thumbnail of {}", file.display()))?;
    linked(caption, file, out, bytes)
}

/// A JPEG preview at most `width` pixels wide: a grey radiograph with its noise costs ~120 kB as a 240-px
/// PNG and ~20 kB as a JPEG, and twelve of them must fit the report's 3 MiB beside the Grad-CAM galleries.
fn jpeg_preview(file: &Path, width: u32) -> Result<Vec<u8>> {
    let img = image::open(file)
        .with_context(|| format!("reading {}", file.display()))?
        .to_rgb8();
    let small = if img.width() > width {
        let h = ((img.height() as f64 * width as f64 / img.width() as f64).round() as u32).max(1);
        image::imageops::resize(&img, width, h, image::imageops::FilterType::Triangle)
    } else {
        img
    };
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85)
        .encode_image(&small)
        .with_context(|| format!("encoding a preview of {}", file.display()))?;
    Ok(bytes)
}

/// A preview (`bytes`) linking to `file`, as [`thumbnail`] describes.
fn linked(caption: &str, file: &Path, out: &Path, bytes: Vec<u8>) -> Result<Block> {
    let href = match file.strip_prefix(out) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) => {
            let name = file.file_name().unwrap_or_default();
            let rel = Path::new("galleries").join(name);
            std::fs::create_dir_all(out.join("galleries"))
                .with_context(|| format!("creating {}", out.join("galleries").display()))?;
            std::fs::copy(file, out.join(&rel))
                .with_context(|| format!("copying {} beside the report", file.display()))?;
            rel
        }
    };
    Ok(Block::Thumbnail {
        caption: caption.to_string(),
        bytes,
        // URLs use `/` on every platform.
        href: href
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"),
    })
}

/// Inline previews are this wide (pixels); the full galleries are linked.
const THUMB_WIDTH: u32 = 200;

/// Galleries previewed inline per experiment; the others are listed as links (the page stays small).
const INLINE_GALLERIES: usize = 6;

/// Per-source rows with fewer images than this are pooled into one `other (k sources ...)` row: their metrics
/// mean little (a real collection such as Cohen's has dozens of one-image locations) and they swamp the table.
pub const MIN_SOURCE_ROW: usize = 5;

/// A compact table of one model's evaluated sets (validation and test; the training split's own scores say
/// little), narrow enough for a 1,400 px window: every small per-source set pooled into one row.
fn sets_table(m: &cxr_eval::ModelReport) -> Block {
    let thr = format!("{:.2}", m.threshold.value);
    let mut rows = Vec::new();
    for split in [Split::Val, Split::Test] {
        let sets: Vec<&cxr_eval::SetReport> = m.sets.iter().filter(|s| s.split == split).collect();
        let (small, shown): (Vec<&cxr_eval::SetReport>, Vec<&cxr_eval::SetReport>) = sets
            .into_iter()
            .partition(|s| matches!(s.group, Group::Source(_)) && s.n < MIN_SOURCE_ROW);
        for s in shown {
            let alarms: Vec<&str> = s
                .alarms
                .iter()
                .map(|a| match a.kind {
                    cxr_eval::AlarmKind::Inverted if a.significant => "inverted (CI below 0.5)",
                    cxr_eval::AlarmKind::Inverted => "below 0.5 (CI includes chance)",
                    cxr_eval::AlarmKind::ConstantScores => "constant scores",
                })
                .collect();
            let group = match &s.group {
                Group::Source(src) => src.to_string(),
                g => format!("{} sources", g.label()).replace("all sources", "all"),
            };
            rows.push(vec![
                split.to_string(),
                group,
                format!("{} ({}/{})", s.n, s.n_covid, s.n_pneumonia),
                match &s.delong {
                    Some(d) => format!("{:.3} [{:.3}, {:.3}]", d.auc, d.lo, d.hi),
                    None => "–".into(),
                },
                cxr_eval::tables::fmt_estimate(&s.at_val_threshold.accuracy, true),
                cxr_eval::tables::fmt_estimate(&s.at_val_threshold.sensitivity, true),
                cxr_eval::tables::fmt_estimate(&s.at_val_threshold.specificity, true),
                cxr_eval::tables::fmt_estimate(&s.at_half.accuracy, true),
                alarms.join("; "),
            ]);
        }
        if !small.is_empty() {
            let n: usize = small.iter().map(|s| s.n).sum();
            let c: usize = small.iter().map(|s| s.n_covid).sum();
            rows.push(
                [
                    split.to_string(),
                    format!(
                        "other ({} sources of < {MIN_SOURCE_ROW} images each)",
                        small.len()
                    ),
                    format!("{n} ({c}/{})", n - c),
                ]
                .into_iter()
                .chain(std::iter::repeat_n("–".to_string(), 6))
                .collect(),
            );
        }
    }
    Block::Table {
        caption: format!(
            "{}: AUC with DeLong 95% CI; accuracy, sensitivity and specificity at the operating threshold {thr} \
             (chosen on the {}), with bootstrap 95% CIs",
            m.model,
            if m.threshold.from == "val" {
                "validation split"
            } else {
                "default: the validation split lacks a class"
            }
        ),
        header: [
            "split",
            "sources",
            "n (covid/pneu)",
            "AUC [95% CI]",
            "accuracy",
            "sensitivity",
            "specificity",
            "accuracy at 0.5",
            "alarms",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    }
}

/// The segmenter and the segment stage of the main data: held-out Dice per source, the worst held-out crops,
/// the rejections per source and the uneven-rejection warnings (`results.json` `segmentation`; the report's
/// "Lung segmentation" section).
struct Segmentation {
    segmenter: PathBuf,
    /// Whether a training report was available (trained here, or `W.report.json` beside given weights).
    has_report: bool,
    test_dice: Option<f64>,
    test_dice_flip: Option<f64>,
    dice: Vec<DiceRow>,
    split: Vec<(String, cxr_segment::train::SplitCounts)>,
    worst: Vec<cxr_segment::train::WorstCase>,
    rejections: Vec<RejectionRow>,
    warnings: Vec<rejections::UnevenRejection>,
}

/// Held-out Dice of one source (`None` where the report holds no number: NaN is written as null).
#[derive(serde::Serialize)]
struct DiceRow {
    source: String,
    n: usize,
    mean: Option<f64>,
    sd: Option<f64>,
    median: Option<f64>,
    p10: Option<f64>,
    min: Option<f64>,
    /// Mean with the test-time horizontal flip.
    mean_flip: Option<f64>,
}

/// The segment stage's counts for one source.
#[derive(serde::Serialize)]
struct RejectionRow {
    source: String,
    images: usize,
    kept: usize,
    rejected: std::collections::BTreeMap<String, usize>,
    rejection_rate: Option<f64>,
}

impl Segmentation {
    fn of(main: &Prepared) -> Self {
        let report = main.segmenter_report.as_ref();
        let field = |k: &str| report.map(|r| &r[k]).filter(|v| !v.is_null());
        let num = |v: &serde_json::Value| v.as_f64();
        let plain = field("test_by_source").and_then(|v| v.as_object());
        let flip = field("test_by_source_flip").and_then(|v| v.as_object());
        let dice = plain
            .into_iter()
            .flatten()
            .map(|(source, d)| DiceRow {
                source: source.clone(),
                n: d["n"].as_u64().unwrap_or(0) as usize,
                mean: num(&d["mean"]),
                sd: num(&d["sd"]),
                median: num(&d["median"]),
                p10: num(&d["p10"]),
                min: num(&d["min"]),
                mean_flip: flip
                    .and_then(|f| f.get(source))
                    .and_then(|f| num(&f["mean"])),
            })
            .collect();
        // Typed where the shapes are the segment crate's; a report that predates a field leaves it empty.
        let split = field("split")
            .and_then(|v| {
                serde_json::from_value::<
                    std::collections::BTreeMap<String, cxr_segment::train::SplitCounts>,
                >(v.clone())
                .ok()
            })
            .unwrap_or_default()
            .into_iter()
            .collect();
        let worst = field("worst")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as usize;
        let rejections = main.segment["by_source"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(source, c)| {
                let rejected: std::collections::BTreeMap<String, usize> = c["rejected"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), n(v)))
                    .collect();
                let images = n(&c["images"]);
                RejectionRow {
                    source: source.clone(),
                    images,
                    kept: n(&c["kept"]),
                    rejection_rate: (images > 0)
                        .then(|| rejected.values().sum::<usize>() as f64 / images as f64),
                    rejected,
                }
            })
            .collect();
        Self {
            segmenter: main.segmenter.clone(),
            has_report: report.is_some(),
            test_dice: field("test_dice").and_then(num),
            test_dice_flip: field("test_dice_flip").and_then(num),
            dice,
            split,
            worst,
            rejections,
            warnings: rejections::uneven(&rejections::from_summary(&main.segment)),
        }
    }

    /// The folder the report's overlay paths are relative to: the weights' own.
    fn overlay_path(&self, rel: &str) -> PathBuf {
        self.segmenter
            .parent()
            .unwrap_or_else(|| Path::new(""))
            .join(rel)
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "segmenter": self.segmenter.display().to_string(),
            "training_report": self.has_report,
            "test_dice": self.test_dice,
            "test_dice_flip": self.test_dice_flip,
            "dice_by_source": self.dice,
            "split_by_source": self.split.iter().map(|(source, c)| json!({
                "source": source,
                "train": c.train,
                "val": c.val,
                "test": c.test,
                "train_patients": c.train_patients,
                "val_patients": c.val_patients,
                "test_patients": c.test_patients,
            })).collect::<Vec<_>>(),
            "worst": self.worst.iter().map(|w| json!({
                "source": w.source,
                "name": w.name,
                "dice": w.dice,
                "overlay": self.overlay_path(&w.overlay).display().to_string(),
            })).collect::<Vec<_>>(),
            "rejections_by_source": self.rejections,
            "rejection_rule": rejections::rule(),
            "warnings": self.warnings,
        })
    }

    fn section(&self, out: &Path) -> Section {
        let f3 = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.3}"));
        let mut blocks = Vec::new();
        for w in &self.warnings {
            blocks.push(Block::Warning(w.message.clone()));
        }
        if !self.has_report {
            blocks.push(Block::Paragraph(format!(
                "Lung UNet {} was given without its training report (`W.report.json` beside it): its held-out \
                 Dice and worst cases are not shown.",
                self.segmenter.display()
            )));
        } else {
            blocks.push(Block::Paragraph(format!(
                "Lung UNet {}: mean held-out Dice {} ({} with the test-time horizontal flip), on test patients \
                 never seen in training or validation, full pipeline at each image's own resolution.",
                self.segmenter.display(),
                f3(self.test_dice),
                f3(self.test_dice_flip)
            )));
            let sources: std::collections::BTreeSet<&str> = self
                .dice
                .iter()
                .map(|d| d.source.as_str())
                .chain(self.split.iter().map(|(s, _)| s.as_str()))
                .collect();
            let rows = sources
                .into_iter()
                .map(|source| {
                    let d = self.dice.iter().find(|d| d.source == source);
                    let g = |f: fn(&DiceRow) -> Option<f64>| f3(d.and_then(f));
                    let patients = self.split.iter().find(|(s, _)| s == source).map_or(
                        "–".into(),
                        |(_, c)| {
                            format!(
                                "{} / {} / {}",
                                c.train_patients, c.val_patients, c.test_patients
                            )
                        },
                    );
                    vec![
                        source.to_string(),
                        patients,
                        d.map_or("0".into(), |d| d.n.to_string()),
                        g(|d| d.mean),
                        g(|d| d.sd),
                        g(|d| d.median),
                        g(|d| d.p10),
                        g(|d| d.min),
                        g(|d| d.mean_flip),
                    ]
                })
                .collect();
            blocks.push(Block::Table {
                caption: "Held-out Dice of the lung UNet per source (per-image Dice over the test patients; \
                          10th percentile by nearest rank)"
                    .into(),
                header: [
                    "source",
                    "patients train / val / test",
                    "test images",
                    "mean",
                    "sd",
                    "median",
                    "10th percentile",
                    "min",
                    "mean with flip",
                ]
                .map(String::from)
                .to_vec(),
                rows,
            });
            if self.worst.is_empty() {
                blocks.push(Block::Paragraph(
                    "The training report lists no worst held-out cases (a report written before it kept them)."
                        .into(),
                ));
            }
            for w in &self.worst {
                let file = self.overlay_path(&w.overlay);
                // A missing overlay costs its preview, not the report.
                let caption = format!(
                    "{} · {} · Dice {:.3} (truth green, prediction red, crop box yellow)",
                    w.source, w.name, w.dice
                );
                match jpeg_preview(&file, WORST_WIDTH)
                    .and_then(|bytes| linked(&caption, &file, out, bytes))
                {
                    Ok(b) => blocks.push(b),
                    Err(e) => tracing::warn!("report: segmenter overlay left out: {e:#}"),
                }
            }
        }
        if self.rejections.is_empty() {
            blocks.push(Block::Paragraph(
                "The segment stage's summary has no per-source counts (written by an older version).".into(),
            ));
        } else {
            // The paper's rules first, then any other reason the stage recorded.
            let mut reasons: Vec<String> = [
                cxr_segment::RejectReason::EmptyMask.as_str(),
                cxr_segment::RejectReason::SmallCrop.as_str(),
                cxr_segment::infer::UNREADABLE,
            ]
            .map(String::from)
            .to_vec();
            for r in &self.rejections {
                for k in r.rejected.keys() {
                    if !reasons.contains(k) {
                        reasons.push(k.clone());
                    }
                }
            }
            let flagged = |s: &str| self.warnings.iter().any(|w| w.source == s);
            let mut rows: Vec<Vec<String>> = self
                .rejections
                .iter()
                .map(|r| {
                    let mut row = vec![
                        if flagged(&r.source) {
                            format!("{} ⚠", r.source)
                        } else {
                            r.source.clone()
                        },
                        r.images.to_string(),
                        r.kept.to_string(),
                    ];
                    row.extend(
                        reasons
                            .iter()
                            .map(|k| r.rejected.get(k).copied().unwrap_or(0).to_string()),
                    );
                    row.push(
                        r.rejection_rate
                            .map_or("–".into(), |v| format!("{:.1}%", v * 100.0)),
                    );
                    row
                })
                .collect();
            let images: usize = self.rejections.iter().map(|r| r.images).sum();
            let kept: usize = self.rejections.iter().map(|r| r.kept).sum();
            let mut all = vec!["all".to_string(), images.to_string(), kept.to_string()];
            all.extend(reasons.iter().map(|k| {
                self.rejections
                    .iter()
                    .filter_map(|r| r.rejected.get(k))
                    .sum::<usize>()
                    .to_string()
            }));
            all.push(if images > 0 {
                format!("{:.1}%", (images - kept) as f64 * 100.0 / images as f64)
            } else {
                "–".into()
            });
            rows.push(all);
            let mut header: Vec<String> = ["source", "images", "kept"].map(String::from).to_vec();
            header.extend(reasons.iter().cloned());
            header.push("rejection rate".into());
            blocks.push(Block::Table {
                caption: format!(
                    "Lung-crop rejections per source (segment stage; ⚠ = uneven: {})",
                    rejections::rule()
                ),
                header,
                rows,
            });
        }
        Section {
            id: "segmentation".into(),
            title: "Lung segmentation".into(),
            blocks,
        }
    }
}

/// Overlays of the worst held-out crops are this wide: the outlines must stay visible.
const WORST_WIDTH: u32 = 240;

fn count_kept(segment: &serde_json::Value) -> String {
    segment
        .get("kept")
        .map(|v| v.to_string())
        .unwrap_or_else(|| "?".into())
}

fn experiment_section(
    r: &ExperimentResult,
    suffix: &str,
    all: &[ExperimentResult],
    out: &Path,
) -> Result<Section> {
    let mut blocks = Vec::new();
    for n in &r.notes {
        blocks.push(Block::Warning(n.clone()));
    }
    blocks.push(Block::Paragraph(format!(
        "Split design `{}`; images per split: {}. Training-split association of label and source (Cramér's V): {}.",
        r.spec.split,
        r.split_counts.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
        r.train_cramers_v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into())
    )));
    let mut model_rows = Vec::new();
    for m in &r.models {
        model_rows.push(vec![
            m.name.clone(),
            m.mode_run.clone(),
            m.trainable_parameters.to_string(),
            m.epochs_run.to_string(),
            m.best_epoch.to_string(),
            format!("{:.3}", m.best_val_accuracy),
            match &m.provenance {
                Some(p) => p.describe(),
                None if m.pretrained => "ImageNet".into(),
                None => "random init".into(),
            },
        ]);
    }
    blocks.push(Block::Table {
        caption: "Models".into(),
        header: [
            "model",
            "mode run",
            "trainable parameters",
            "epochs",
            "best epoch",
            "best val accuracy",
            "backbone",
        ]
        .map(String::from)
        .to_vec(),
        rows: model_rows,
    });
    if let Ok(report) = serde_json::from_value::<EvalReport>(r.eval.clone()) {
        match r.spec.kind.as_str() {
            "table3" => blocks.push(Block::Html(
                cxr_eval::table3(&report, Split::Test).to_html(),
            )),
            "figure4" => {
                let design = if r.spec.split.contains('2') {
                    cxr_eval::Figure4Design::Split2
                } else {
                    cxr_eval::Figure4Design::Split1
                };
                if let Some(m) = r.models.first() {
                    let mut fig =
                        cxr_eval::figure4(&report, Split::Test, &[(design, m.name.as_str())]);
                    fig.rows.retain(|row| row.design == design);
                    blocks.push(Block::Html(fig.to_html()));
                }
            }
            "table4" => {
                let base = r
                    .spec
                    .base
                    .as_ref()
                    .and_then(|b| all.iter().find(|x| &x.spec.name == b));
                let rows = table4_rows(r, base)
                    .into_iter()
                    .map(|t| {
                        vec![
                            format!("{} ({})", t.source, t.class),
                            format!("{:.0}%", t.paper.0 * 100.0),
                            pct(&t.before),
                            format!("{:.0}%", t.paper.1 * 100.0),
                            pct(&t.after),
                        ]
                    })
                    .collect();
                blocks.push(Block::Table {
                    caption: "Table 4: accuracy at 0.5 on the unseen sources' test images before (the split-1 \
                              model) and after local fine-tuning, the paper's beside ours (bootstrap 95% CI)"
                        .into(),
                    header: [
                        "test source",
                        "before (paper)",
                        "before (ours)",
                        "after (paper)",
                        "after (ours)",
                    ]
                    .map(String::from)
                    .to_vec(),
                    rows,
                });
            }
            _ => {}
        }
        for m in &report.models {
            blocks.push(sets_table(m));
        }
        for m in &report.models {
            let sets = cxr_eval::plots::summary_sets(m);
            if let Ok(svg) = cxr_eval::plots::roc_svg(&format!("ROC — {}", m.model), &sets) {
                blocks.push(Block::Svg {
                    caption: format!("ROC curves of {} with 95% bands", m.model),
                    svg,
                });
            }
            if let Ok(svg) =
                cxr_eval::plots::histograms_svg(&format!("Scores — {}", m.model), &sets)
            {
                blocks.push(Block::Svg {
                    caption: format!("Score histograms of {}", m.model),
                    svg,
                });
            }
        }
        for alarm in &report.alarms {
            blocks.push(Block::Warning(alarm.message.clone()));
        }
    }
    if let Some(audit) = &r.audit {
        for w in small_occlusion_warnings(audit) {
            blocks.push(Block::Warning(w));
        }
    }
    if let Some(audit) = &r.audit
        && let Ok(report) = serde_json::from_value::<cxr_explain::AuditReport>(audit.clone())
    {
        for (i, v) in report.verdicts.iter().enumerate() {
            let mut evidence: Vec<String> = v.tests.iter().map(describe_test).collect();
            // Occlusion maps are a batch of forward passes each: say what they cost.
            if let Some(c) = report.evidence.get(i).and_then(|e| e.saliency.as_ref()) {
                evidence.push(format!(
                    "Saliency cost: {} maps of {} images, {} forward passes and {:.1} s per map{}.",
                    c.method,
                    c.images,
                    c.passes_per_map,
                    c.seconds_per_map,
                    match (c.patch, c.stride) {
                        (Some(p), Some(s)) => format!(" (patch {p} px, stride {s} px)"),
                        _ => String::new(),
                    }
                ));
            }
            blocks.push(Block::Verdict {
                model: v.model.clone(),
                flagged: v.flagged(),
                suspicious: v.verdict == cxr_explain::Overall::Suspicious,
                summary: crate::report::verdict_headline(v),
                evidence,
            });
        }
    }
    if let Some(c) = &r.confounders {
        blocks.push(Block::Paragraph(format!(
            "Counterfactual confounder test (synthetic world only): the same rendered patient with one planted \
             confounder group swapped between the training split's Covid-19 and pneumonia sources; the mean \
             score shift towards the donor's class and its 95% CI. {}",
            c["flag_rule"].as_str().unwrap_or("")
        )));
        let f = |v: &serde_json::Value| v.as_f64().map_or("–".into(), |x| format!("{x:+.3}"));
        let rows = c["confounders"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|k| {
                        vec![
                            k["kind"].as_str().unwrap_or("").to_string(),
                            if k["label_associated"].as_bool() == Some(true) {
                                "yes".into()
                            } else {
                                "no".into()
                            },
                            k["n"].to_string(),
                            f(&k["mean_shift"]),
                            format!("[{}, {}]", f(&k["ci_low"]), f(&k["ci_high"])),
                            k["status"].as_str().unwrap_or("").to_string(),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        blocks.push(Block::Table {
            caption: format!(
                "Planted confounders followed by {}: {}",
                c["model"].as_str().unwrap_or(""),
                c["verdict"].as_str().unwrap_or("")
            ),
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
            rows,
        });
    }
    for g in r.galleries.iter().take(INLINE_GALLERIES) {
        let name = g
            .file_stem()
            .map(|s| s.to_string_lossy().replace("__", " / "))
            .unwrap_or_default();
        // A gallery that cannot be read costs its preview, not the report.
        match thumbnail(
            &format!("Grad-CAM (Covid-19 logit), lung outline in green: {name}"),
            g,
            out,
        ) {
            Ok(b) => blocks.push(b),
            Err(e) => tracing::warn!("report: gallery left out: {e:#}"),
        }
    }
    let rest: Vec<String> = r
        .galleries
        .iter()
        .skip(INLINE_GALLERIES)
        .filter_map(|g| g.strip_prefix(out).ok())
        .map(|g| g.display().to_string())
        .collect();
    if !rest.is_empty() {
        blocks.push(Block::Paragraph(format!(
            "{} more Grad-CAM galleries beside this report: {}.",
            rest.len(),
            rest.join(", ")
        )));
    }
    Ok(Section {
        id: format!(
            "{}{}",
            r.spec.name,
            if suffix.is_empty() { "" } else { "-control" }
        ),
        title: format!("{}{suffix}", r.spec.title),
        blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Block;

    fn prepared(dir: &Path, report: Option<serde_json::Value>) -> Prepared {
        Prepared {
            choice_label: "test".into(),
            tag: "t".into(),
            dir: dir.to_path_buf(),
            world_root: None,
            world_summary: None,
            ingest: Default::default(),
            preprocess: json!({}),
            manifest: dir.join("manifest.csv"),
            segment: json!({"images": 60, "kept": 40, "by_source": {
                "cohen": {"images": 20, "kept": 8, "rejected": {"small_crop": 10, "empty_mask": 2}},
                "nih": {"images": 40, "kept": 32, "rejected": {"small_crop": 2, "odd_reason": 6}}}}),
            segmenter: dir.join("unet/unet.safetensors"),
            segmenter_report: report,
            notes: Vec::new(),
        }
    }

    #[test]
    fn the_segmentation_section_shows_dice_worst_cases_and_uneven_rejections() {
        let dir = tempfile::tempdir().unwrap();
        // One overlay beside the weights; the second worst case's file is missing.
        let grey = cxr_core::Grey8 {
            width: 300,
            height: 200,
            data: vec![100; 60_000],
        };
        let overlay = dir.path().join("unet/unet.worst/01-cohen-a.png");
        cxr_segment::gallery::write_overlay(&overlay, &grey, &grey, &grey).unwrap();
        let stats = |mean: f64| json!({"n": 5, "mean": mean, "sd": 0.1, "median": mean, "p10": 0.5, "min": 0.4});
        let report = json!({
            "test_dice": 0.8, "test_dice_flip": 0.81,
            "test_by_source": {"cohen": stats(0.7), "shenzhen": stats(0.95)},
            "test_by_source_flip": {"cohen": stats(0.72)},
            "split": {"cohen": {"train": 30, "val": 4, "test": 5, "train_patients": 20,
                                "val_patients": 3, "test_patients": 4}},
            "worst": [{"name": "a", "source": "cohen", "dice": 0.4,
                       "overlay": "unet.worst/01-cohen-a.png"},
                      {"name": "b", "source": "cohen", "dice": 0.5,
                       "overlay": "unet.worst/02-cohen-b.png"}],
        });
        let seg = Segmentation::of(&prepared(dir.path(), Some(report)));
        // cohen loses 60 % against 20 % of the others: flagged; nih is not.
        assert_eq!(seg.warnings.len(), 1);
        assert_eq!(seg.warnings[0].source, "cohen");
        let section = seg.section(dir.path());
        let thumbs: Vec<&Block> = section
            .blocks
            .iter()
            .filter(|b| matches!(b, Block::Thumbnail { .. }))
            .collect();
        assert_eq!(thumbs.len(), 1, "the missing overlay is skipped");
        let Block::Thumbnail {
            caption,
            bytes,
            href,
        } = thumbs[0]
        else {
            unreachable!()
        };
        assert!(caption.starts_with("cohen · a · Dice 0.400"), "{caption}");
        assert!(bytes.starts_with(&[0xFF, 0xD8, 0xFF]), "a JPEG preview");
        let preview = image::load_from_memory(bytes).unwrap();
        assert_eq!((preview.width(), preview.height()), (WORST_WIDTH, 160));
        assert_eq!(href, "unet/unet.worst/01-cohen-a.png");
        assert!(matches!(&section.blocks[0], Block::Warning(w) if w.contains("`cohen`")));
        let tables: Vec<&Vec<Vec<String>>> = section
            .blocks
            .iter()
            .filter_map(|b| match b {
                Block::Table { rows, .. } => Some(rows),
                _ => None,
            })
            .collect();
        assert_eq!(tables.len(), 2);
        // Dice: cohen with its patients and flip mean; shenzhen with no split entry and no flip.
        assert_eq!(
            tables[0][0],
            [
                "cohen",
                "20 / 3 / 4",
                "5",
                "0.700",
                "0.100",
                "0.700",
                "0.500",
                "0.400",
                "0.720"
            ]
        );
        assert_eq!(tables[0][1][0], "shenzhen");
        assert_eq!(tables[0][1][8], "–");
        // Rejections: the paper's reasons, then the others; the flagged source marked; a total row.
        assert_eq!(
            tables[1][0],
            ["cohen ⚠", "20", "8", "2", "10", "0", "0", "60.0%"]
        );
        assert_eq!(
            tables[1][1],
            ["nih", "40", "32", "0", "2", "0", "6", "20.0%"]
        );
        assert_eq!(
            tables[1][2],
            ["all", "60", "40", "2", "12", "0", "6", "33.3%"]
        );

        let j = seg.to_json();
        assert_eq!(j["dice_by_source"][0]["mean_flip"], 0.72);
        assert_eq!(j["dice_by_source"][1]["mean_flip"], serde_json::Value::Null);
        assert_eq!(j["rejections_by_source"][0]["rejected"]["small_crop"], 10);
        assert_eq!(j["warnings"][0]["source"], "cohen");
        assert_eq!(
            j["worst"][0]["overlay"],
            overlay.display().to_string().as_str()
        );
    }

    #[test]
    fn weights_without_a_training_report_leave_the_dice_part_out() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segmentation::of(&prepared(dir.path(), None));
        let section = seg.section(dir.path());
        assert!(
            !section
                .blocks
                .iter()
                .any(|b| matches!(b, Block::Thumbnail { .. }))
        );
        assert!(section.blocks.iter().any(
            |b| matches!(b, Block::Paragraph(p) if p.contains("without its training report"))
        ));
        // The rejections are the segment stage's: still shown.
        assert!(
            section
                .blocks
                .iter()
                .any(|b| matches!(b, Block::Table { rows, .. } if rows.len() == 3))
        );
        let j = seg.to_json();
        assert_eq!(j["training_report"], false);
        assert!(j["dice_by_source"].as_array().unwrap().is_empty());
        assert!(j["worst"].as_array().unwrap().is_empty());
    }
}
