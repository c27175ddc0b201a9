//! "Lung segmentation": the UNet's held-out Dice per source and its worst held-out cases (when its training
//! report is known), then the segment stage's rejections per source with the uneven-rejection warnings.

use std::collections::BTreeSet;
use std::path::Path;

use crate::report::media::{jpeg_preview, linked};
use crate::report::{Block, Section};
use crate::results::{DiceRow, Segmentation};

/// Overlays of the worst held-out crops are this wide: the outlines must stay visible.
pub const WORST_WIDTH: u32 = 240;

fn f3(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.3}"))
}

/// The Dice table: one row per source of the UNet's data, with its patients per part of the split.
fn dice_table(seg: &Segmentation) -> Block {
    let sources: BTreeSet<&str> = seg
        .dice_by_source
        .iter()
        .map(|d| d.source.as_str())
        .chain(seg.split_by_source.iter().map(|s| s.source.as_str()))
        .collect();
    let rows = sources
        .into_iter()
        .map(|source| {
            let d = seg.dice_by_source.iter().find(|d| d.source == source);
            let g = |f: fn(&DiceRow) -> Option<f64>| f3(d.and_then(f));
            let patients = seg
                .split_by_source
                .iter()
                .find(|s| s.source == source)
                .map_or("–".into(), |s| {
                    let c = &s.counts;
                    format!(
                        "{} / {} / {}",
                        c.train_patients, c.val_patients, c.test_patients
                    )
                });
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
    Block::Table {
        caption:
            "Held-out Dice of the lung UNet per source (per-image Dice over the test patients; \
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
    }
}

/// The rejections table: the paper's reasons first, then any other the stage recorded; flagged sources
/// marked; a total row.
fn rejections_table(seg: &Segmentation) -> Block {
    let mut reasons: Vec<String> = [
        cxr_segment::RejectReason::EmptyMask.as_str(),
        cxr_segment::RejectReason::SmallCrop.as_str(),
        cxr_segment::infer::UNREADABLE,
    ]
    .map(String::from)
    .to_vec();
    for r in &seg.rejections_by_source {
        for k in r.rejected.keys() {
            if !reasons.contains(k) {
                reasons.push(k.clone());
            }
        }
    }
    let flagged = |s: &str| seg.warnings.iter().any(|w| w.source == s);
    let mut rows: Vec<Vec<String>> = seg
        .rejections_by_source
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
    let images: usize = seg.rejections_by_source.iter().map(|r| r.images).sum();
    let kept: usize = seg.rejections_by_source.iter().map(|r| r.kept).sum();
    let mut all = vec!["all".to_string(), images.to_string(), kept.to_string()];
    all.extend(reasons.iter().map(|k| {
        seg.rejections_by_source
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
    Block::Table {
        caption: format!(
            "Lung-crop rejections per source (segment stage; ⚠ = uneven: {})",
            seg.rejection_rule
        ),
        header,
        rows,
    }
}

/// The section; `out` is the report's folder (the worst cases' overlays are linked from it).
pub fn section(seg: &Segmentation, out: &Path) -> Section {
    let mut blocks: Vec<Block> = seg
        .warnings
        .iter()
        .map(|w| Block::Warning(w.message.clone()))
        .collect();
    if !seg.training_report {
        blocks.push(Block::Paragraph(format!(
            "Lung UNet {} was given without its training report (`W.report.json` beside it): its held-out \
             Dice and worst cases are not shown.",
            seg.segmenter.display()
        )));
    } else {
        blocks.push(Block::Paragraph(format!(
            "Lung UNet {}: mean held-out Dice {} ({} with the test-time horizontal flip), on test patients \
             never seen in training or validation, full pipeline at each image's own resolution.",
            seg.segmenter.display(),
            f3(seg.test_dice),
            f3(seg.test_dice_flip)
        )));
        blocks.push(dice_table(seg));
        if seg.worst.is_empty() {
            blocks.push(Block::Paragraph(
                "The training report lists no worst held-out cases (a report written before it kept them)."
                    .into(),
            ));
        }
        for w in &seg.worst {
            let caption = format!(
                "{} · {} · Dice {:.3} (truth green, prediction red, crop box yellow)",
                w.source, w.name, w.dice
            );
            // A missing overlay costs its preview, not the report.
            match jpeg_preview(&w.overlay, WORST_WIDTH)
                .and_then(|bytes| linked(&caption, &w.overlay, out, bytes))
            {
                Ok(b) => blocks.push(b),
                Err(e) => tracing::warn!(
                    "report: segmenter overlay left out: {}",
                    crate::error::chain(&e)
                ),
            }
        }
    }
    if seg.rejections_by_source.is_empty() {
        blocks.push(Block::Paragraph(
            "The segment stage's summary has no per-source counts (written by an older version)."
                .into(),
        ));
    } else {
        blocks.push(rejections_table(seg));
    }
    Section {
        id: "segmentation".into(),
        title: "Lung segmentation".into(),
        blocks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    fn tables(section: &Section) -> Vec<&Vec<Vec<String>>> {
        section
            .blocks
            .iter()
            .filter_map(|b| match b {
                Block::Table { rows, .. } => Some(rows),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_section_shows_dice_worst_cases_and_uneven_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segmentation::of(&fixture::prepared(dir.path()));
        // cohen loses 60 % against 20 % of the others: flagged; nih is not.
        assert_eq!(seg.warnings.len(), 1);
        assert_eq!(seg.warnings[0].source, "cohen");
        let section = section(&seg, dir.path());
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
        let tables = tables(&section);
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

        // The same figures in results.json.
        let j = serde_json::to_value(&seg).unwrap();
        assert_eq!(j["dice_by_source"][0]["mean_flip"], 0.72);
        assert_eq!(j["dice_by_source"][1]["mean_flip"], serde_json::Value::Null);
        assert_eq!(j["rejections_by_source"][0]["rejected"]["small_crop"], 10);
        assert_eq!(j["split_by_source"][0]["test_patients"], 4);
        assert_eq!(j["warnings"][0]["source"], "cohen");
        let overlay = dir.path().join("unet/unet.worst/01-cohen-a.png");
        assert_eq!(
            j["worst"][0]["overlay"],
            overlay.display().to_string().as_str()
        );
    }

    #[test]
    fn weights_without_a_training_report_leave_the_dice_part_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = fixture::prepared(dir.path());
        data.segmenter_report = None;
        // Even rejections: no warning.
        for c in data.segment.by_source.values_mut() {
            c.rejected = [("small_crop".to_string(), 1)].into();
        }
        let seg = Segmentation::of(&data);
        assert!(seg.warnings.is_empty());
        let section = section(&seg, dir.path());
        assert!(
            !section
                .blocks
                .iter()
                .any(|b| matches!(b, Block::Thumbnail { .. } | Block::Warning(_)))
        );
        assert!(section.blocks.iter().any(
            |b| matches!(b, Block::Paragraph(p) if p.contains("without its training report"))
        ));
        // The rejections are the segment stage's: still shown.
        assert_eq!(tables(&section).len(), 1);
        assert!(!seg.training_report && seg.dice_by_source.is_empty() && seg.worst.is_empty());
    }
}
