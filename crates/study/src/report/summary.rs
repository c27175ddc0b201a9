//! The few lines a front end prints after a run: each model's seen and unseen AUC with its audit verdict,
//! then each sensitivity world.

use crate::report::audit::verdict_words;
use crate::report::{fmt3, sensitivity, verdict_of};
use crate::results::Results;

/// One line per model of the main run and the control, then one per sensitivity world.
pub fn lines(results: &Results) -> Vec<String> {
    let verdicts: Vec<(&str, &str)> = results
        .experiments
        .iter()
        .filter_map(|r| Some((r.spec.name.as_str(), verdict_words(verdict_of(r)?.verdict))))
        .collect();
    let labelled = results.seen_unseen_auc.iter().map(|a| (a, "")).chain(
        results
            .control_seen_unseen_auc
            .iter()
            .map(|a| (a, " (clean world)")),
    );
    let mut out = Vec::new();
    for (a, world) in labelled {
        // The control's verdicts are in its section; the line names the main run's.
        let audit = verdicts
            .iter()
            .find(|(n, _)| *n == a.experiment)
            .filter(|_| world.is_empty())
            .map(|(_, v)| format!("  audit: {v}"))
            .unwrap_or_default();
        out.push(format!(
            "  {:<24} {:<32} seen AUC {}  unseen AUC {}{world}{audit}",
            a.experiment,
            a.model,
            fmt3(&a.seen),
            fmt3(&a.unseen)
        ));
    }
    for r in results.sensitivity.iter().flatten() {
        let row = sensitivity::row(r);
        out.push(format!(
            "  sensitivity {:<12} {:<27} seen AUC {:<6} shift {} {:<12} audit {} ({})",
            row[0], row[1], row[2], row[3], row[4], row[5], row[6]
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_model_with_its_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let results = crate::report::fixture::results(dir.path());
        let lines = lines(&results);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0].trim_start().starts_with("figure4-split1"));
        assert!(lines[0].ends_with("audit: shortcut found"), "{}", lines[0]);
        assert!(
            lines[2].contains("(clean world)") && !lines[2].contains("audit:"),
            "{}",
            lines[2]
        );
        assert!(lines[3].starts_with("  sensitivity grid"), "{}", lines[3]);
    }
}
