//! The audit verdict in the words the report and stdout use (the page itself is built by `cxr_report`).

pub use cxr_report::{Block, Report, Section};

/// An audit verdict in words, as the report and stdout print it.
pub fn verdict_words(v: cxr_explain::Overall) -> &'static str {
    match v {
        cxr_explain::Overall::Shortcut => "shortcut found",
        cxr_explain::Overall::Suspicious => "suspicious",
        cxr_explain::Overall::NoShortcutFound => "no shortcut found",
        cxr_explain::Overall::InsufficientEvidence => "insufficient evidence",
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
    // Longest names first: `lungs_removed_auc` before `lung_energy` would not matter, but `lung_energy_ratio`
    // must go before `lung_energy`.
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
pub fn deciding_tests(v: &cxr_explain::Verdict) -> Vec<&cxr_explain::TestResult> {
    let status = match v.verdict {
        cxr_explain::Overall::Shortcut => cxr_explain::Status::Flag,
        cxr_explain::Overall::Suspicious => cxr_explain::Status::Warn,
        _ => return Vec::new(),
    };
    v.with_status(status).collect()
}

/// `shortcut found (raised by the source probe)`: the verdict and what decided it, in words.
pub fn verdict_headline(v: &cxr_explain::Verdict) -> String {
    let words = verdict_words(v.verdict);
    let deciding: Vec<String> = deciding_tests(v)
        .iter()
        .map(|t| test_label(&t.test))
        .collect();
    match v.verdict {
        cxr_explain::Overall::NoShortcutFound => format!("{words} (no test flagged or warned)"),
        cxr_explain::Overall::InsufficientEvidence => format!("{words} (no test could run)"),
        _ if deciding.is_empty() => words.to_string(),
        _ => format!("{words} (raised by the {})", deciding.join(" and the ")),
    }
}
