//! The split linter: is a split design confounded, or does it leak?
//!
//! For a manifest with a `split` column: the label × source contingency table of each split and its Cramér's V
//! (0 = label independent of source, 1 = the source determines the label: a classifier can score perfectly by
//! recognising the hospital), sources holding a single class, patients present in more than one split, and
//! identical files (same SHA-256) in more than one split. The paper's split 1 (train: Covid = V2-COV19-NII,
//! pneumonia = NIH) has V = 1 in its training split.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cxr_core::{Label, Manifest, Split};
use serde::Serialize;

/// Cramér's V at or above which a split is reported as fully confounded.
pub const FULLY_CONFOUNDED: f64 = 0.999;
/// Cramér's V at or above which a split is reported as strongly confounded.
pub const STRONGLY_CONFOUNDED: f64 = 0.5;

/// One split's contingency table and association.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitLint {
    pub split: String,
    pub images: usize,
    pub patients: usize,
    /// source → label → images.
    pub contingency: BTreeMap<String, BTreeMap<String, usize>>,
    /// Cramér's V of label × source; `None` when there is a single label or a single source.
    pub cramers_v: Option<f64>,
    /// Sources that hold only one class in this split: `(source, label)`.
    pub single_class_sources: Vec<(String, String)>,
}

/// A severity-tagged finding for humans.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// `error` (a leak or a full confound) or `warning`.
    pub severity: &'static str,
    pub message: String,
}

/// The linter's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LintReport {
    pub splits: Vec<SplitLint>,
    /// Cramér's V of the training split (what the audit's verdict takes), `None` without a train split.
    pub train_cramers_v: Option<f64>,
    /// `(split a, split b, patients in both)`.
    pub patient_overlap: Vec<(String, String, usize)>,
    /// Files with identical bytes in different splits: `(sha256, [(id, split)])`.
    pub duplicate_hashes: Vec<(String, Vec<(String, String)>)>,
    /// Rows without a split (ignored by the per-split checks).
    pub unsplit: usize,
    /// Test sources absent from training (held-out sources, as a fair test wants).
    pub unseen_test_sources: Vec<String>,
    pub findings: Vec<Finding>,
}

impl LintReport {
    /// True when a split is fully confounded or when patients or files leak across splits.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == "error")
    }

    /// A plain-text rendering for a terminal: each split's label × source table cut to its `rows` largest
    /// sources (largest first, then by name, "… k more sources" for the rest), the unsplit rows, the unseen
    /// test sources and the findings. `usize::MAX` shows every source.
    pub fn render(&self, rows: usize) -> String {
        let mut out = String::new();
        for s in &self.splits {
            let v = s.cramers_v.map_or("n/a".into(), |v| format!("{v:.3}"));
            out.push_str(&format!(
                "split {}: {} images, {} patients, Cramér's V (label × source) = {v}\n",
                s.split, s.images, s.patients
            ));
            let labels: BTreeSet<&String> = s.contingency.values().flat_map(|m| m.keys()).collect();
            out.push_str(&format!("  {:<44}", "source"));
            for l in &labels {
                out.push_str(&format!(" {l:>10}"));
            }
            out.push('\n');
            let mut sources: Vec<(&String, usize)> = s
                .contingency
                .iter()
                .map(|(src, m)| (src, m.values().sum()))
                .collect();
            sources.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            for (src, _) in sources.iter().take(rows) {
                out.push_str(&format!("  {src:<44}"));
                for l in &labels {
                    let n = s.contingency[*src].get(*l).copied().unwrap_or(0);
                    out.push_str(&format!(" {n:>10}"));
                }
                out.push('\n');
            }
            if sources.len() > rows {
                let rest: usize = sources[rows..].iter().map(|(_, n)| n).sum();
                out.push_str(&format!(
                    "  … {} more sources ({rest} images; every row in --json)\n",
                    sources.len() - rows
                ));
            }
        }
        if self.unsplit > 0 {
            out.push_str(&format!("{} rows without a split\n", self.unsplit));
        }
        if !self.unseen_test_sources.is_empty() {
            out.push_str(&format!(
                "unseen test sources: {}\n",
                self.unseen_test_sources.join(", ")
            ));
        }
        for f in &self.findings {
            out.push_str(&format!("{}: {}\n", f.severity, f.message));
        }
        if self.findings.is_empty() {
            out.push_str("no findings\n");
        }
        out
    }
}

/// Cramér's V of a contingency table: the workspace's one implementation, in `cxr-core`.
pub use cxr_core::stats::cramers_v;

/// Lints a manifest that has a `split` column.
pub fn lint(manifest: &Manifest) -> LintReport {
    let mut by_split: BTreeMap<Split, Vec<usize>> = BTreeMap::new();
    let mut unsplit = 0;
    for (i, r) in manifest.records.iter().enumerate() {
        match r.split {
            Some(s) => by_split.entry(s).or_default().push(i),
            None => unsplit += 1,
        }
    }
    let mut findings = Vec::new();
    let mut splits = Vec::new();
    for (split, rows) in &by_split {
        let mut contingency: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        let mut patients = BTreeSet::new();
        for &i in rows {
            let r = &manifest.records[i];
            *contingency
                .entry(r.source.to_string())
                .or_default()
                .entry(r.label.to_string())
                .or_default() += 1;
            patients.insert((r.source.to_string(), r.patient.clone()));
        }
        let table: Vec<Vec<usize>> = contingency
            .values()
            .map(|m| {
                Label::ALL
                    .iter()
                    .map(|l| m.get(l.as_str()).copied().unwrap_or(0))
                    .collect()
            })
            .collect();
        let v = cramers_v(&table);
        let labels_present: BTreeSet<&String> =
            contingency.values().flat_map(|m| m.keys()).collect();
        let single: Vec<(String, String)> = if labels_present.len() > 1 {
            contingency
                .iter()
                .filter(|(_, m)| m.len() == 1)
                .map(|(s, m)| (s.clone(), m.keys().next().cloned().unwrap_or_default()))
                .collect()
        } else {
            Vec::new()
        };
        if let Some(v) = v {
            if v >= FULLY_CONFOUNDED {
                findings.push(Finding {
                    severity: "error",
                    message: format!(
                        "split {split} is fully confounded: Cramér's V = {v:.3}, the source determines the label"
                    ),
                });
            } else if v >= STRONGLY_CONFOUNDED {
                findings.push(Finding {
                    severity: "warning",
                    message: format!("split {split} is strongly confounded: Cramér's V = {v:.3}"),
                });
            }
        }
        if !single.is_empty() {
            findings.push(Finding {
                severity: "warning",
                message: format!(
                    "split {split}: {} of {} sources hold a single class ({})",
                    single.len(),
                    contingency.len(),
                    single
                        .iter()
                        .map(|(s, l)| format!("{s}={l}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        splits.push(SplitLint {
            split: split.to_string(),
            images: rows.len(),
            patients: patients.len(),
            contingency,
            cramers_v: v,
            single_class_sources: single,
        });
    }

    // Patient overlap between splits (patients are keyed per source: pseudonyms are per dataset).
    let mut patient_splits: HashMap<(String, String), BTreeSet<Split>> = HashMap::new();
    let mut hash_rows: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, r) in manifest.records.iter().enumerate() {
        if let Some(s) = r.split {
            patient_splits
                .entry((r.source.to_string(), r.patient.clone()))
                .or_default()
                .insert(s);
            if !r.sha256.is_empty() {
                hash_rows.entry(r.sha256.as_str()).or_default().push(i);
            }
        }
    }
    let mut overlap: BTreeMap<(Split, Split), usize> = BTreeMap::new();
    for splits_of in patient_splits.values() {
        let v: Vec<Split> = splits_of.iter().copied().collect();
        for a in 0..v.len() {
            for b in a + 1..v.len() {
                *overlap.entry((v[a], v[b])).or_default() += 1;
            }
        }
    }
    let patient_overlap: Vec<(String, String, usize)> = overlap
        .into_iter()
        .map(|((a, b), n)| (a.to_string(), b.to_string(), n))
        .collect();
    for (a, b, n) in &patient_overlap {
        findings.push(Finding {
            severity: "error",
            message: format!(
                "{n} patients are in both {a} and {b}: split by patient, never by image"
            ),
        });
    }
    let mut duplicate_hashes: Vec<(String, Vec<(String, String)>)> = hash_rows
        .into_iter()
        .filter_map(|(h, rows)| {
            let splits: BTreeSet<Split> = rows
                .iter()
                .filter_map(|&i| manifest.records[i].split)
                .collect();
            (splits.len() > 1).then(|| {
                (
                    h.to_string(),
                    rows.iter()
                        .map(|&i| {
                            let r = &manifest.records[i];
                            (
                                r.id.clone(),
                                r.split.map(|s| s.to_string()).unwrap_or_default(),
                            )
                        })
                        .collect(),
                )
            })
        })
        .collect();
    duplicate_hashes.sort();
    if !duplicate_hashes.is_empty() {
        findings.push(Finding {
            severity: "error",
            message: format!(
                "{} files have identical bytes in different splits (first: {})",
                duplicate_hashes.len(),
                duplicate_hashes[0]
                    .1
                    .iter()
                    .map(|(id, s)| format!("{id}@{s}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let train_sources: BTreeSet<&String> = splits
        .iter()
        .filter(|s| s.split == "train")
        .flat_map(|s| s.contingency.keys())
        .collect();
    let unseen_test_sources: Vec<String> = splits
        .iter()
        .filter(|s| s.split == "test")
        .flat_map(|s| s.contingency.keys())
        .filter(|s| !train_sources.contains(s))
        .cloned()
        .collect();
    let train_cramers_v = splits
        .iter()
        .find(|s| s.split == "train")
        .and_then(|s| s.cramers_v);
    LintReport {
        splits,
        train_cramers_v,
        patient_overlap,
        duplicate_hashes,
        unsplit,
        unseen_test_sources,
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::tests::rec;
    use cxr_core::Label::{Covid, Pneumonia};

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn cramers_v_known_values() {
        assert!(close(cramers_v(&[vec![10, 0], vec![0, 7]]), 1.0));
        assert!(close(cramers_v(&[vec![5, 5], vec![5, 5]]), 0.0));
        // 2x2 [[20,10],[10,20]]: phi = (400-100)/sqrt(30*30*30*30) = 1/3
        assert!((cramers_v(&[vec![20, 10], vec![10, 20]]).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(cramers_v(&[vec![3, 0]]), None);
        assert_eq!(cramers_v(&[vec![3, 0], vec![4, 0]]), None);
        // empty rows and columns do not count
        assert!(close(
            cramers_v(&[vec![10, 0, 0], vec![0, 0, 0], vec![0, 7, 0]]),
            1.0
        ));
        // 3 sources x 2 labels, one source mixed: chi2 = 20 -> V = sqrt(20 / 30)
        assert!(close(
            cramers_v(&[vec![10, 0], vec![0, 10], vec![5, 5]]),
            (20.0f64 / 30.0).sqrt()
        ));
    }

    #[test]
    fn split1_is_fully_confounded_and_leaks_are_found() {
        let mut v = Vec::new();
        for p in 0..10 {
            let mut a = rec(&format!("v{p}"), "v2-cov19-nii", Covid, &format!("v{p}"));
            a.split = Some(if p < 8 { Split::Train } else { Split::Test });
            let mut b = rec(&format!("n{p}"), "nih", Pneumonia, &format!("n{p}"));
            b.split = Some(if p < 8 { Split::Train } else { Split::Test });
            v.push(a);
            v.push(b);
        }
        let mut u = rec("b0", "bimcv", Covid, "b0");
        u.split = Some(Split::Test);
        v.push(u);
        let report = lint(&Manifest::new(v.clone()));
        assert!(close(report.train_cramers_v, 1.0));
        assert!(report.has_errors());
        assert!(
            report.findings[0].message.contains("fully confounded"),
            "{:?}",
            report.findings
        );
        assert_eq!(report.unseen_test_sources, vec!["bimcv".to_string()]);
        assert!(report.patient_overlap.is_empty() && report.duplicate_hashes.is_empty());
        let train = &report.splits.iter().find(|s| s.split == "train").unwrap();
        assert_eq!(train.contingency["nih"]["pneumonia"], 8);
        assert_eq!(train.single_class_sources.len(), 2);

        // Leaks: the same patient in train and test, and a copied file in val.
        v[0].patient = "v9".into();
        let mut dup = v[2].clone();
        dup.id = "copy".into();
        dup.patient = "other".into();
        dup.split = Some(Split::Val);
        v.push(dup);
        let report = lint(&Manifest::new(v));
        assert_eq!(
            report.patient_overlap,
            vec![("train".into(), "test".into(), 1)]
        );
        assert_eq!(report.duplicate_hashes.len(), 1);
        assert!(report.render(usize::MAX).contains("identical bytes"));
    }

    #[test]
    fn a_balanced_design_is_clean() {
        let mut v = Vec::new();
        for (i, (src, lab)) in [
            ("a", Covid),
            ("a", Pneumonia),
            ("b", Covid),
            ("b", Pneumonia),
        ]
        .iter()
        .enumerate()
        {
            for k in 0..5 {
                let mut r = rec(&format!("{i}-{k}"), src, *lab, &format!("{i}-{k}"));
                r.split = Some(Split::Train);
                v.push(r);
            }
        }
        let report = lint(&Manifest::new(v));
        assert!(close(report.train_cramers_v, 0.0));
        assert!(
            !report.has_errors() && report.findings.is_empty(),
            "{:?}",
            report.findings
        );
    }
}
