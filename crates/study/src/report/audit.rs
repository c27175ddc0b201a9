//! The audit in the report: `cxr-audit`'s rendering of each verdict (every test's figure, CI, threshold and
//! rule, the small-sample warnings of the occlusion tests), the same as an audit's own page shows, and the
//! counterfactual confounder test's table as the study keeps it (`confounders.json`, typed in
//! [`ConfounderReport`]).

pub use cxr_audit::report::{
    describe_test, humanise_rule, test_label, verdict_headline, verdict_words,
};

use crate::audit::{ConfounderReport, StudyAudit};
use crate::report::Block;

/// The audit's blocks: small-sample warnings, then one verdict per audited model with its evidence.
pub fn blocks(audit: &StudyAudit) -> Vec<Block> {
    cxr_audit::report::verdict_blocks(&audit.report)
}

/// `+0.123`, or `–`.
fn signed(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:+.3}"))
}

/// The counterfactual confounder test: what it does, then one row per planted group (`cxr-audit`'s
/// rendering, the same as an audit's own page).
pub fn confounder_blocks(c: &ConfounderReport) -> Vec<Block> {
    let lines: Vec<cxr_audit::report::ConfounderLine<'_>> = c
        .confounders
        .iter()
        .map(|k| cxr_audit::report::ConfounderLine {
            kind: &k.kind,
            label_associated: k.label_associated,
            n: k.n,
            mean_shift: k.mean_shift,
            ci_low: k.ci_low,
            ci_high: k.ci_high,
            status: &k.status,
        })
        .collect();
    cxr_audit::report::confounder_blocks(&c.model, &c.verdict, &c.flag_rule, &lines)
}

/// The mean shift of a confounder row with its CI, `+0.210 [+0.160, +0.260]`.
pub fn shift_with_ci(k: &crate::audit::ConfounderRow) -> String {
    format!(
        "{} [{}, {}]",
        signed(k.mean_shift),
        signed(k.ci_low),
        signed(k.ci_high)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_shows_each_test_and_warns_on_small_occlusion_samples() {
        let dir = tempfile::tempdir().unwrap();
        let results = crate::report::fixture::results(dir.path());
        // The study flagged the occlusion test on 12 + 4 images as a small sample.
        let audit = results.experiments[0].audit.as_ref().unwrap();
        let blocks = blocks(audit);
        let Block::Warning(w) = &blocks[0] else {
            panic!("{blocks:?}")
        };
        assert!(
            w.contains("rest on 12 Covid-19 and 4 pneumonia images"),
            "{w}"
        );
        let Some(Block::Verdict {
            flagged,
            summary,
            evidence,
            ..
        }) = blocks.last()
        else {
            panic!("{blocks:?}")
        };
        assert!(flagged);
        assert!(
            summary.starts_with(
                "shortcut found (raised by the planted confounders (counterfactual swaps) and the lungs-removed"
            ),
            "{summary}"
        );
        assert!(
            evidence.iter().any(|e| e.starts_with(
                "FLAG — lungs-removed occlusion (mean fill): 0.930 (95% CI 0.880–0.970)"
            )),
            "{evidence:#?}"
        );
        assert!(
            evidence
                .last()
                .unwrap()
                .contains("(patch 16 px, stride 8 px)")
        );
        let mut big = audit.clone();
        big.report.evidence[0].occlusion[0].n_pneumonia = Some(10);
        // Enough images of each class: no small-sample warning; the high data risk still warns.
        let warnings: Vec<String> = super::blocks(&big)
            .into_iter()
            .filter_map(|b| match b {
                Block::Warning(w) => Some(w),
                _ => None,
            })
            .collect();
        assert!(
            warnings.iter().all(|w| !w.contains("rest on")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("Data risk (split design): high")),
            "{warnings:?}"
        );
    }

    #[test]
    fn the_confounder_table_signs_shifts() {
        let dir = tempfile::tempdir().unwrap();
        let results = crate::report::fixture::results(dir.path());
        let c = results.experiments[0].confounders.as_ref().unwrap();
        let blocks = confounder_blocks(c);
        let Block::Table { caption, rows, .. } = &blocks[1] else {
            unreachable!()
        };
        assert_eq!(
            caption,
            "Planted confounders followed by resnet50-finetune1: follows planted confounders"
        );
        assert_eq!(
            rows[0],
            [
                "grid",
                "yes",
                "32",
                "+0.210",
                "[+0.160, +0.260]",
                "followed"
            ]
        );
        assert_eq!(shift_with_ci(&c.confounders[0]), "+0.210 [+0.160, +0.260]");
    }
}
