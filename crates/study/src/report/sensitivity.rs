//! The audit's sensitivity study (`--sensitivity`): one world per planted confounder group, and whether the
//! confounder test and the audit find that group.

use cxr_explain::Status;

use crate::report::Block;
use crate::report::audit::{shift_with_ci, test_label, verdict_words};
use crate::report::{Section, verdict_of};
use crate::results::seen_unseen;
use crate::sensitivity::{SensitivityRun, own_group_row};

/// group, training pair and input, seen AUC, mean shift [CI], status, audit verdict, the audit tests that
/// flagged.
pub fn row(r: &SensitivityRun) -> Vec<String> {
    let (shift, status) = match own_group_row(r) {
        Some(k) => (shift_with_ci(k), k.status.clone()),
        None => ("–".into(), "not tested".into()),
    };
    let seen = seen_unseen(std::slice::from_ref(&r.result))
        .first()
        .and_then(|a| a.seen.as_ref().map(|v| v.value))
        .map_or("–".into(), |v| format!("{v:.3}"));
    let (overall, flagged) = match verdict_of(&r.result) {
        Some(v) => {
            let flagged: Vec<String> = v
                .tests
                .iter()
                .filter(|t| t.status == Status::Flag)
                .map(|t| test_label(&t.test))
                .collect();
            (
                verdict_words(v.verdict).to_string(),
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

/// The section: what the study does, then one row per world.
pub fn section(runs: &[SensitivityRun]) -> Section {
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
            rows: runs.iter().map(row).collect(),
        },
    ];
    Section {
        id: "sensitivity".into(),
        title: "Audit sensitivity: one planted confounder per world".into(),
        blocks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_reports_the_planted_groups_shift_and_the_audit() {
        let dir = tempfile::tempdir().unwrap();
        let results = crate::report::fixture::results(dir.path());
        let run = &results.sensitivity.as_ref().unwrap()[0];
        let r = row(run);
        assert_eq!(r[0], "grid");
        assert_eq!(r[1], "split1, lung crop 128 px");
        assert_eq!(r[3], "+0.210 [+0.160, +0.260]");
        assert_eq!(r[4], "followed");
        assert_eq!(r[5], "shortcut found");
        assert!(
            r[6].starts_with("planted confounders (counterfactual swaps), lungs-removed"),
            "{}",
            r[6]
        );
        // A group the confounder test did not run on.
        let mut other = run.clone();
        other.group = cxr_synth::ConfounderKind::Blur;
        assert_eq!(row(&other)[3..5], ["–", "not tested"]);
        let Block::Table { rows, .. } = &section(std::slice::from_ref(run)).blocks[1] else {
            unreachable!()
        };
        assert_eq!(rows.len(), 1);
    }
}
