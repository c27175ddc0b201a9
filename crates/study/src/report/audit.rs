//! The audit in the report: the verdict of each audited model with every test's figure, CI, threshold and
//! rule, the small-sample warnings of the occlusion tests, and the counterfactual confounder test's table.
//! The words for verdicts and tests are here too, shared with the `cxr` command's printed summary.

use cxr_explain::{Overall, Status, TestResult, Verdict};

use crate::audit::{ConfounderReport, StudyAudit};
use crate::report::Block;

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
    // `lung_energy_ratio` must be replaced before `lung_energy`, which it contains.
    const NAMES: [(&str, &str); 7] = [
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
    let deciding: Vec<String> = deciding_tests(v).iter().map(|t| test_label(&t.test)).collect();
    match v.verdict {
        Overall::NoShortcutFound => format!("{words} (no test flagged or warned)"),
        Overall::InsufficientEvidence => format!("{words} (no test could run)"),
        _ if deciding.is_empty() => words.to_string(),
        _ => format!("{words} (raised by the {})", deciding.join(" and the ")),
    }
}

/// One test in a sentence: status, figure with CI, threshold, detail, trigger and rule.
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
    let status = match t.status {
        Status::Pass => "pass",
        Status::Warn => "warning",
        Status::Flag => "FLAG",
        Status::NotRun => "not run",
    };
    format!(
        "{status} — {}: {fig}{th}. {}{by}. Rule: {}.",
        test_label(&t.test),
        t.detail,
        humanise_rule(&t.rule)
    )
}

/// Warnings for the occlusion tests that rest on a small sample (`small_sample`, set by the study).
pub fn small_occlusion_warnings(audit: &StudyAudit) -> Vec<String> {
    audit
        .report
        .evidence
        .iter()
        .flat_map(|ev| ev.occlusion.iter().map(move |occ| (ev, occ)))
        .filter(|(_, occ)| occ.small_sample == Some(true))
        .map(|(ev, occ)| {
            let n = |v: Option<usize>| v.map_or_else(|| "null".to_string(), |v| v.to_string());
            format!(
                "† Small sample: the occlusion tests of {} ({} fill) rest on {} Covid-19 and {} pneumonia \
                 images (fewer than {} of a class); read their AUCs with care.",
                ev.model,
                occ.fill,
                n(occ.n_covid),
                n(occ.n_pneumonia),
                cxr_eval::MIN_PER_CLASS
            )
        })
        .collect()
}

/// The audit's blocks: small-sample warnings, then one verdict per audited model with its evidence.
pub fn blocks(audit: &StudyAudit) -> Vec<Block> {
    let mut blocks: Vec<Block> = small_occlusion_warnings(audit).into_iter().map(Block::Warning).collect();
    let report = &audit.report;
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
            suspicious: v.verdict == Overall::Suspicious,
            summary: verdict_headline(v),
            evidence,
        });
    }
    blocks
}

/// `+0.123`, or `–`.
fn signed(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:+.3}"))
}

/// The counterfactual confounder test: what it does, then one row per planted group.
pub fn confounder_blocks(c: &ConfounderReport) -> Vec<Block> {
    let rows = c
        .confounders
        .iter()
        .map(|k| {
            vec![
                k.kind.clone(),
                if k.label_associated { "yes" } else { "no" }.into(),
                k.n.to_string(),
                signed(k.mean_shift),
                format!("[{}, {}]", signed(k.ci_low), signed(k.ci_high)),
                k.status.clone(),
            ]
        })
        .collect();
    vec![
        Block::Paragraph(format!(
            "Counterfactual confounder test (synthetic world only): the same rendered patient with one planted \
             confounder group swapped between the training split's Covid-19 and pneumonia sources; the mean \
             score shift towards the donor's class and its 95% CI. {}",
            c.flag_rule
        )),
        Block::Table {
            caption: format!("Planted confounders followed by {}: {}", c.model, c.verdict),
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
        },
    ]
}

/// The mean shift of a confounder row with its CI, `+0.210 [+0.160, +0.260]`.
pub fn shift_with_ci(k: &crate::audit::ConfounderRow) -> String {
    format!("{} [{}, {}]", signed(k.mean_shift), signed(k.ci_low), signed(k.ci_high))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_and_rules_in_words() {
        assert_eq!(test_label("lungs_removed[noise]"), "lungs-removed occlusion (noise fill)");
        assert_eq!(
            humanise_rule("mean < lung_energy_ratio x area, else < lung_energy"),
            "mean < the energy ratio x area, else < the energy floor"
        );
    }

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
        assert!(w.contains("rest on 12 Covid-19 and 4 pneumonia images"), "{w}");
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
        assert!(summary.starts_with("shortcut found (raised by the source probe"), "{summary}");
        assert!(
            evidence.iter().any(|e| e.starts_with("FLAG — lungs-removed occlusion (mean fill): 0.930 (95% CI 0.880–0.970)")),
            "{evidence:#?}"
        );
        assert!(evidence.last().unwrap().contains("(patch 16 px, stride 8 px)"));
        // Enough images of each class: no warning.
        let mut big = audit.clone();
        big.report.evidence[0].occlusion[0].small_sample = Some(false);
        assert!(!matches!(super::blocks(&big)[0], Block::Warning(_)));
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
        assert_eq!(caption, "Planted confounders followed by resnet50-finetune1: follows planted confounders");
        assert_eq!(rows[0], ["grid", "yes", "32", "+0.210", "[+0.160, +0.260]", "followed"]);
        assert_eq!(shift_with_ci(&c.confounders[0]), "+0.210 [+0.160, +0.260]");
    }
}
