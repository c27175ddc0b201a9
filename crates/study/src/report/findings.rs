//! "What was found": one sentence per experiment (the paper's figure, ours with its CI, the audit's verdict
//! and the test that decided it), led by any uneven lung-crop rejection, which qualifies every result.

use cxr_core::Split;
use cxr_eval::report::Group;

use crate::experiment::ExperimentResult;
use crate::report::{CONTROL, fmt_ci, pct, short_title, table4, verdict_of};
use crate::results::{Results, seen_unseen};

/// The findings in page order.
pub fn findings(results: &Results) -> Vec<String> {
    let mut out: Vec<String> = results
        .segmentation
        .warnings
        .iter()
        .map(|w| format!("Warning: {}", w.message))
        .collect();
    out.extend(
        results
            .experiments
            .iter()
            .map(|r| finding(r, &results.experiments, "")),
    );
    out.extend(
        results
            .control_clean_world
            .iter()
            .flatten()
            .map(|r| finding(r, &results.experiments, CONTROL)),
    );
    out
}

/// One sentence: the paper's figure, ours with its CI, the audit verdict and the test that decided it.
/// `all` holds the experiment a `table4` design fine-tunes; `world` is the title suffix (the control's).
pub fn finding(r: &ExperimentResult, all: &[ExperimentResult], world: &str) -> String {
    let name = format!("{}{world}", short_title(r));
    let auc = seen_unseen(std::slice::from_ref(r));
    let ours = match auc.first() {
        Some(a) if a.unseen.is_some() || a.seen.is_some() => format!(
            "ours {} on seen sources and {} on unseen ones",
            fmt_ci(&a.seen),
            fmt_ci(&a.unseen)
        ),
        _ => "ours: –".into(),
    };
    let body = match r.spec.kind.as_str() {
        "figure4" => match (r.spec.paper_seen_auc, r.spec.paper_unseen_auc) {
            // The paper has no clean world: its figures do not apply to the control.
            (Some(ps), Some(pu)) if world.is_empty() => format!(
                "the paper reports test AUC {ps:.2} on seen and {pu:.2} on unseen sources; {ours}"
            ),
            _ => format!("test AUC: {ours}"),
        },
        "table3" => {
            let ours: Vec<String> = r
                .models
                .iter()
                .filter_map(|m| {
                    let set = r.eval.set(&m.name, Split::Test, &Group::All)?;
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
            let rows = table4::rows(r, table4::base_of(r, all));
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
        Some(v) => format!(" Audit: {}.", super::audit::verdict_headline(v)),
        None => String::new(),
    };
    format!("{name}: {body}.{audit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_lead_with_the_rejection_warning_and_quote_both_aucs() {
        let dir = tempfile::tempdir().unwrap();
        let results = crate::report::fixture::results(dir.path());
        let f = findings(&results);
        // The uneven rejection, then the two main experiments, then the control.
        assert_eq!(f.len(), 4, "{f:#?}");
        assert!(
            f[0].starts_with("Warning: ") && f[0].contains("`cohen`"),
            "{}",
            f[0]
        );
        let seen = results.seen_unseen_auc[0].seen.as_ref().unwrap();
        let figure4 = &f[1];
        assert!(
            figure4.contains("the paper reports test AUC 1.00 on seen and 0.38 on unseen sources")
        );
        assert!(
            figure4.contains(&format!("ours {:.3} (95% CI", seen.value)),
            "{figure4}"
        );
        assert!(figure4.ends_with("Audit: shortcut found (raised by the planted confounders (counterfactual swaps) and the lungs-removed occlusion (mean fill))."), "{figure4}");
        // Table 4: the paper's accuracies beside ours.
        assert!(f[2].contains("bimcv Covid-19 51% → 98%"), "{}", f[2]);
        // The control does not quote the paper.
        assert!(
            f[3].contains("— control: clean world: test AUC: ours"),
            "{}",
            f[3]
        );
        assert!(!f[3].contains("the paper reports"));
    }

    #[test]
    fn no_warning_when_rejections_are_even() {
        let dir = tempfile::tempdir().unwrap();
        let mut results = crate::report::fixture::results(dir.path());
        results.segmentation.warnings.clear();
        assert!(!findings(&results)[0].starts_with("Warning"));
    }
}
