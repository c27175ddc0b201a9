//! One experiment's section: its notes, split, models, the paper's table or figure beside ours, every
//! evaluated set with its alarms, ROC curves and score histograms, the audit, the confounder test and the
//! Grad-CAM galleries.

use std::path::Path;

use cxr_core::Split;
use cxr_eval::report::Group;

use crate::error::Result;
use crate::experiment::ExperimentResult;
use crate::report::media::thumbnail;
use crate::report::{Block, Section, audit, table4};

/// Galleries previewed inline per experiment; the others are listed as links (the page stays small).
pub const INLINE_GALLERIES: usize = 6;

/// Per-source rows with fewer images than this are pooled into one `other (k sources ...)` row: their metrics
/// mean little (a real collection such as Cohen's has dozens of one-image locations) and they swamp the table.
pub const MIN_SOURCE_ROW: usize = 5;

/// A compact table of one model's evaluated sets (validation and test; the training split's own scores say
/// little), narrow enough for a 1,400 px window: every small per-source set pooled into one row.
pub fn sets_table(m: &cxr_eval::ModelReport) -> Block {
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

/// The evaluation's blocks: the paper's table or figure for the experiment's kind, the sets of every model,
/// ROC curves and score histograms, the alarms.
fn eval_blocks(r: &ExperimentResult, all: &[ExperimentResult]) -> Vec<Block> {
    let report = &r.eval;
    let mut blocks = Vec::new();
    match r.spec.kind.as_str() {
        "table3" => blocks.push(Block::Html(cxr_eval::table3(report, Split::Test).to_html())),
        "figure4" => {
            let design = if r.spec.split.contains('2') {
                cxr_eval::Figure4Design::Split2
            } else {
                cxr_eval::Figure4Design::Split1
            };
            if let Some(m) = r.models.first() {
                let mut fig = cxr_eval::figure4(report, Split::Test, &[(design, m.name.as_str())]);
                fig.rows.retain(|row| row.design == design);
                blocks.push(Block::Html(fig.to_html()));
            }
        }
        "table4" => blocks.push(table4::block(r, all)),
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
        if let Ok(svg) = cxr_eval::plots::histograms_svg(&format!("Scores — {}", m.model), &sets)
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
    blocks
}

/// The Grad-CAM galleries: the first [`INLINE_GALLERIES`] previewed, the others listed.
fn gallery_blocks(r: &ExperimentResult, out: &Path) -> Vec<Block> {
    let mut blocks = Vec::new();
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
            Err(e) => tracing::warn!("report: gallery left out: {}", crate::error::chain(&e)),
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
    blocks
}

/// The section of experiment `r`; `suffix` marks the control's (its id gets `-control`), `all` holds the
/// experiment a `table4` design fine-tunes, `out` is the report's folder.
pub fn section(
    r: &ExperimentResult,
    suffix: &str,
    all: &[ExperimentResult],
    out: &Path,
) -> Result<Section> {
    let mut blocks: Vec<Block> = r.notes.iter().map(|n| Block::Warning(n.clone())).collect();
    blocks.push(Block::Paragraph(format!(
        "Split design `{}`; images per split: {}. Training-split association of label and source (Cramér's V): {}.",
        r.spec.split,
        r.split_counts.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
        r.train_cramers_v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into())
    )));
    let model_rows = r
        .models
        .iter()
        .map(|m| {
            vec![
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
            ]
        })
        .collect();
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
    blocks.extend(eval_blocks(r, all));
    if let Some(a) = &r.audit {
        blocks.extend(audit::blocks(a));
    }
    if let Some(c) = &r.confounders {
        blocks.extend(audit::confounder_blocks(c));
    }
    blocks.extend(gallery_blocks(r, out));
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

    #[test]
    fn the_section_holds_the_figure_sets_alarm_audit_and_gallery() {
        let dir = tempfile::tempdir().unwrap();
        let results = crate::report::fixture::results(dir.path());
        let r = &results.experiments[0];
        let s = section(r, "", &results.experiments, dir.path()).unwrap();
        assert_eq!(s.id, "figure4-split1");
        assert!(matches!(&s.blocks[0], Block::Warning(w) if w.contains("counts capped")));
        assert!(
            matches!(&s.blocks[1], Block::Paragraph(p) if p.contains("images per split: test 72, train 24, val 24")
                && p.ends_with("(Cramér's V): 1.00."))
        );
        let tables: Vec<(&String, &Vec<Vec<String>>)> = s
            .blocks
            .iter()
            .filter_map(|b| match b {
                Block::Table { caption, rows, .. } => Some((caption, rows)),
                _ => None,
            })
            .collect();
        assert_eq!(
            tables[0].1[0][6],
            "random init, fine-tuned from base/model.safetensors"
        );
        // The sets table: the unseen sources' AUC is inverted and says so.
        let (caption, sets) = tables[1];
        assert!(
            caption.starts_with("resnet50-finetune1: AUC with DeLong 95% CI"),
            "{caption}"
        );
        let unseen = sets
            .iter()
            .find(|row| row[0] == "test" && row[1] == "unseen sources")
            .unwrap();
        assert_eq!(unseen[2], "24 (12/12)");
        assert!(
            unseen[8].starts_with("inverted") || unseen[8].starts_with("below 0.5"),
            "{unseen:?}"
        );
        assert!(
            s.blocks
                .iter()
                .any(|b| matches!(b, Block::Html(h) if h.contains("<table")))
        );
        assert!(
            s.blocks.iter().any(
                |b| matches!(b, Block::Svg { caption, .. } if caption.starts_with("ROC curves"))
            )
        );
        assert!(
            s.blocks
                .iter()
                .any(|b| matches!(b, Block::Verdict { flagged: true, .. }))
        );
        assert!(
            s.blocks
                .iter()
                .any(|b| matches!(b, Block::Thumbnail { caption, .. }
            if caption.ends_with(": nih / pneumonia")))
        );
        // The control's section is marked as such.
        let c = section(r, crate::report::CONTROL, &[], dir.path()).unwrap();
        assert_eq!(c.id, "figure4-split1-control");
        assert!(c.title.ends_with("— control: clean world"));
    }

    #[test]
    fn small_per_source_sets_are_pooled() {
        let dir = tempfile::tempdir().unwrap();
        let results = crate::report::fixture::results(dir.path());
        let mut m = results.experiments[0].eval.models[0].clone();
        for s in m
            .sets
            .iter_mut()
            .filter(|s| matches!(s.group, Group::Source(_)))
        {
            s.n = 3;
            s.n_covid = 1;
        }
        let Block::Table { rows, .. } = sets_table(&m) else {
            unreachable!()
        };
        assert!(
            rows.iter()
                .any(|r| r[1] == "other (2 sources of < 5 images each)" && r[2] == "6 (2/4)")
        );
        assert!(!rows.iter().any(|r| r[1] == "nih"));
    }
}
