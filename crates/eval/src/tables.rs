//! The paper's Table 3 and Figure 4 with its numbers beside ours, as data and as Markdown/HTML.
//!
//! Our confusion metrics here are at threshold 0.5, as the paper's; AUCs carry DeLong intervals and the
//! accuracies bootstrap intervals. Our models are matched to the paper's rows by name (lower-case letters
//! and digits only, e.g. `resnet50-finetune1` or `ResNet50_Finetune1-mixed` match "ResNet50-Finetune1"), and
//! to Figure 4's designs by an explicit assignment or, failing that, a name containing `split1` / `split2`.

use serde::{Deserialize, Serialize};

use crate::report::{Estimate, EvalReport, Group, SetReport};
use cxr_core::{SourceId, Split};

/// One row of the paper's Table 3 (mixed sources, test set).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PaperTable3 {
    pub model: &'static str,
    pub accuracy: f64,
    pub sensitivity: f64,
    pub specificity: f64,
    pub auc: f64,
}

/// Table 3 of arXiv 2102.04300 (`../shared/docs/PAPER.md`).
pub const PAPER_TABLE3: [PaperTable3; 4] = [
    PaperTable3 {
        model: "ResNet50-Finetune1",
        accuracy: 0.981,
        sensitivity: 0.962,
        specificity: 0.987,
        auc: 0.997,
    },
    PaperTable3 {
        model: "ResNet50-Finetune2",
        accuracy: 0.970,
        sensitivity: 0.950,
        specificity: 0.977,
        auc: 0.995,
    },
    PaperTable3 {
        model: "VGG16-Finetune1",
        accuracy: 0.882,
        sensitivity: 0.873,
        specificity: 0.884,
        auc: 0.96,
    },
    PaperTable3 {
        model: "VGG16-Finetune2",
        accuracy: 0.955,
        sensitivity: 0.937,
        specificity: 0.960,
        auc: 0.98,
    },
];

/// The split designs of the paper's Figure 4 (ResNet50-Finetune1, one source per class).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Figure4Design {
    /// Train Covid = V2-COV19-NII, pneumonia = NIH.
    Split1,
    /// Train Covid = BIMCV, pneumonia = PadChest.
    Split2,
}

impl Figure4Design {
    pub const ALL: [Figure4Design; 2] = [Figure4Design::Split1, Figure4Design::Split2];

    pub fn description(self) -> &'static str {
        match self {
            Figure4Design::Split1 => "split 1: train v2-cov19-nii (covid) + nih (pneumonia)",
            Figure4Design::Split2 => "split 2: train bimcv (covid) + padchest (pneumonia)",
        }
    }
    /// The paper's AUC on held-out images of seen and of unseen sources.
    pub fn paper_auc(self) -> (f64, f64) {
        match self {
            Figure4Design::Split1 => (1.00, 0.38),
            Figure4Design::Split2 => (0.96, 0.63),
        }
    }
    /// The paper's cross-source accuracy: (tested on, accuracy).
    pub fn paper_cross_accuracy(self) -> (&'static str, f64) {
        match self {
            Figure4Design::Split1 => (SourceId::COVID19_AR, 0.68),
            Figure4Design::Split2 => (SourceId::COVID19_AR, 0.88),
        }
    }
    fn tag(self) -> &'static str {
        match self {
            Figure4Design::Split1 => "split1",
            Figure4Design::Split2 => "split2",
        }
    }
}

fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Our side of a Table 3 row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table3Ours {
    pub model: String,
    pub n: usize,
    pub accuracy: Estimate,
    pub sensitivity: Estimate,
    pub specificity: Estimate,
    /// Bootstrap interval; `auc_delong` below has DeLong's.
    pub auc: Estimate,
    pub auc_delong: Option<[f64; 2]>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table3Row {
    pub paper: Option<PaperTable3>,
    pub ours: Option<Table3Ours>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table3 {
    pub split: Split,
    pub rows: Vec<Table3Row>,
}

fn ours3(s: &SetReport) -> Table3Ours {
    Table3Ours {
        model: s.model.clone(),
        n: s.n,
        accuracy: s.at_half.accuracy,
        sensitivity: s.at_half.sensitivity,
        specificity: s.at_half.specificity,
        auc: s.auc,
        auc_delong: s.delong.as_ref().map(|d| [d.lo, d.hi]),
    }
}

/// Table 3 from the whole `split` set (normally `test`) of every model except those named for a Figure 4
/// design (containing `split1` / `split2`); see [`table3_for`].
pub fn table3(report: &EvalReport, split: Split) -> Table3 {
    table3_for(report, split, None)
}

/// Table 3 from the whole `split` set of each model in `models` (`None`: as [`table3`]): the paper's four
/// rows, each with the first of those models whose name contains the row's model name, then the unmatched
/// ones.
pub fn table3_for(report: &EvalReport, split: Split, models: Option<&[&str]>) -> Table3 {
    let candidates: Vec<&str> = report
        .models
        .iter()
        .map(|m| m.model.as_str())
        .filter(|m| match models {
            Some(list) => list.contains(m),
            None => !Figure4Design::ALL.iter().any(|d| norm(m).contains(d.tag())),
        })
        .collect();
    let mut used = vec![false; candidates.len()];
    let mut rows = Vec::new();
    for paper in PAPER_TABLE3 {
        let key = norm(paper.model);
        let found = candidates
            .iter()
            .enumerate()
            .find(|(i, m)| !used[*i] && norm(m).contains(&key));
        let ours = found.and_then(|(i, m)| {
            used[i] = true;
            report.set(m, split, &Group::All).map(ours3)
        });
        rows.push(Table3Row {
            paper: Some(paper),
            ours,
        });
    }
    for (i, m) in candidates.iter().enumerate() {
        if !used[i]
            && let Some(s) = report.set(m, split, &Group::All)
        {
            rows.push(Table3Row {
                paper: None,
                ours: Some(ours3(s)),
            });
        }
    }
    Table3 { split, rows }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure4Row {
    pub design: Figure4Design,
    pub description: String,
    pub paper_seen: f64,
    pub paper_unseen: f64,
    pub model: Option<String>,
    pub seen: Option<Estimate>,
    pub unseen: Option<Estimate>,
    pub seen_delong: Option<[f64; 2]>,
    pub unseen_delong: Option<[f64; 2]>,
    /// Two-sided p of seen = unseen (z-test on DeLong variances).
    pub p_value: Option<f64>,
    /// Cross-source accuracy at 0.5: the source tested, the paper's accuracy, ours.
    pub cross_source: String,
    pub paper_cross_accuracy: f64,
    pub cross_accuracy: Option<Estimate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure4 {
    pub split: Split,
    pub rows: Vec<Figure4Row>,
}

/// Figure 4 from the seen/unseen sets of `split` (normally `test`). `assign` maps a design to our model;
/// a design left out is matched to a model whose name contains `split1` / `split2`.
pub fn figure4(report: &EvalReport, split: Split, assign: &[(Figure4Design, &str)]) -> Figure4 {
    let rows = Figure4Design::ALL
        .iter()
        .map(|&design| {
            let model = assign
                .iter()
                .find(|(d, _)| *d == design)
                .map(|(_, m)| m.to_string())
                .or_else(|| {
                    report
                        .models
                        .iter()
                        .find(|m| norm(&m.model).contains(design.tag()))
                        .map(|m| m.model.clone())
                });
            let get = |g: Group| model.as_ref().and_then(|m| report.set(m, split, &g));
            let (seen, unseen) = (get(Group::Seen), get(Group::Unseen));
            let (paper_seen, paper_unseen) = design.paper_auc();
            let (cross, paper_cross) = design.paper_cross_accuracy();
            let cross_set = SourceId::new(cross)
                .ok()
                .and_then(|s| get(Group::Source(s)));
            let p_value = model.as_ref().and_then(|m| {
                report
                    .models
                    .iter()
                    .find(|r| &r.model == m)?
                    .seen_vs_unseen
                    .iter()
                    .find(|t| t.split == split)?
                    .test
                    .p_value
            });
            Figure4Row {
                design,
                description: design.description().to_string(),
                paper_seen,
                paper_unseen,
                seen: seen.map(|s| s.auc),
                unseen: unseen.map(|s| s.auc),
                seen_delong: seen.and_then(|s| s.delong.as_ref().map(|d| [d.lo, d.hi])),
                unseen_delong: unseen.and_then(|s| s.delong.as_ref().map(|d| [d.lo, d.hi])),
                p_value,
                cross_source: cross.to_string(),
                paper_cross_accuracy: paper_cross,
                cross_accuracy: cross_set.map(|s| s.at_half.accuracy),
                model,
            }
        })
        .collect();
    Figure4 { split, rows }
}

/// `0.912 [0.871, 0.950]`, or `–` when undefined.
pub fn fmt_estimate(e: &Estimate, percent: bool) -> String {
    let f = |v: f64| {
        if percent {
            format!("{:.1}%", v * 100.0)
        } else {
            format!("{v:.3}")
        }
    };
    match (e.value, e.lo, e.hi) {
        (Some(v), Some(lo), Some(hi)) => format!("{} [{}, {}]", f(v), f(lo), f(hi)),
        (Some(v), _, _) => f(v),
        _ => "–".into(),
    }
}

fn fmt_opt(v: Option<f64>, percent: bool) -> String {
    fmt_estimate(
        &Estimate {
            value: v,
            ..Estimate::default()
        },
        percent,
    )
}

fn fmt_ci(ci: Option<[f64; 2]>) -> String {
    ci.map(|[a, b]| format!("[{a:.3}, {b:.3}]"))
        .unwrap_or_else(|| "–".into())
}

/// A table as a header and rows of cells, rendered to Markdown or HTML by the same code.
struct Grid {
    caption: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Grid {
    fn markdown(&self) -> String {
        let mut s = format!("{}\n\n| {} |\n|", self.caption, self.header.join(" | "));
        s.push_str(&"---|".repeat(self.header.len()));
        s.push('\n');
        for r in &self.rows {
            s.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        s
    }
    fn html(&self) -> String {
        let esc = |t: &str| {
            t.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let mut s = format!(
            "<table class=\"metrics\">\n<caption>{}</caption>\n<thead><tr>",
            esc(&self.caption)
        );
        for h in &self.header {
            s.push_str(&format!("<th>{}</th>", esc(h)));
        }
        s.push_str("</tr></thead>\n<tbody>\n");
        for r in &self.rows {
            s.push_str("<tr>");
            for c in r {
                s.push_str(&format!("<td>{}</td>", esc(c)));
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</tbody>\n</table>\n");
        s
    }
}

impl Table3 {
    fn grid(&self) -> Grid {
        let header = [
            "model (paper)",
            "accuracy (paper)",
            "sensitivity (paper)",
            "specificity (paper)",
            "AUC (paper)",
            "our model",
            "n",
            "accuracy",
            "sensitivity",
            "specificity",
            "AUC [bootstrap]",
            "AUC [DeLong]",
        ];
        let rows = self
            .rows
            .iter()
            .map(|r| {
                let mut cells = match &r.paper {
                    Some(p) => vec![
                        p.model.to_string(),
                        fmt_opt(Some(p.accuracy), true),
                        fmt_opt(Some(p.sensitivity), true),
                        fmt_opt(Some(p.specificity), true),
                        fmt_opt(Some(p.auc), false),
                    ],
                    None => vec!["–".into(); 5],
                };
                match &r.ours {
                    Some(o) => cells.extend([
                        o.model.clone(),
                        o.n.to_string(),
                        fmt_estimate(&o.accuracy, true),
                        fmt_estimate(&o.sensitivity, true),
                        fmt_estimate(&o.specificity, true),
                        fmt_estimate(&o.auc, false),
                        fmt_ci(o.auc_delong),
                    ]),
                    None => cells.extend(
                        ["(not run)".to_string()]
                            .into_iter()
                            .chain(std::iter::repeat_n("–".to_string(), 6)),
                    ),
                }
                cells
            })
            .collect();
        Grid {
            caption: format!(
                "Table 3 (mixed sources), {} split: the paper's point estimates beside ours at threshold 0.5, \
                 95% intervals in brackets",
                self.split
            ),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows,
        }
    }
    pub fn to_markdown(&self) -> String {
        self.grid().markdown()
    }
    pub fn to_html(&self) -> String {
        self.grid().html()
    }
}

impl Figure4 {
    fn grid(&self) -> Grid {
        let header = [
            "design",
            "our model",
            "AUC seen (paper)",
            "AUC seen [bootstrap]",
            "[DeLong]",
            "AUC unseen (paper)",
            "AUC unseen [bootstrap]",
            "[DeLong]",
            "p (seen = unseen)",
            "accuracy on",
            "(paper)",
            "ours at 0.5",
        ];
        let rows = self
            .rows
            .iter()
            .map(|r| {
                let est = |e: &Option<Estimate>| {
                    e.as_ref()
                        .map(|e| fmt_estimate(e, false))
                        .unwrap_or_else(|| "–".into())
                };
                vec![
                    r.description.clone(),
                    r.model.clone().unwrap_or_else(|| "(not run)".into()),
                    format!("{:.2}", r.paper_seen),
                    est(&r.seen),
                    fmt_ci(r.seen_delong),
                    format!("{:.2}", r.paper_unseen),
                    est(&r.unseen),
                    fmt_ci(r.unseen_delong),
                    r.p_value
                        .map(|p| format!("{p:.2e}"))
                        .unwrap_or_else(|| "–".into()),
                    r.cross_source.clone(),
                    fmt_opt(Some(r.paper_cross_accuracy), true),
                    r.cross_accuracy
                        .as_ref()
                        .map(|e| fmt_estimate(e, true))
                        .unwrap_or_else(|| "–".into()),
                ]
            })
            .collect();
        Grid {
            caption: format!(
                "Figure 4 (one source per class), {} split: AUC on held-out images of seen and unseen sources, \
                 the paper's beside ours with 95% intervals",
                self.split
            ),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows,
        }
    }
    pub fn to_markdown(&self) -> String {
        self.grid().markdown()
    }
    pub fn to_html(&self) -> String {
        self.grid().html()
    }
}

/// Every set of a report in one table (the per-source / per-split / seen-unseen breakdown).
fn summary_grid(report: &EvalReport) -> Grid {
    let header = [
        "set",
        "n (covid/pneu)",
        "AUC [bootstrap]",
        "AUC [DeLong]",
        "AP",
        "accuracy @val-thr",
        "sensitivity @val-thr",
        "specificity @val-thr",
        "accuracy @0.5",
        "Brier",
        "ECE",
        "alarms",
    ];
    let rows = report
        .models
        .iter()
        .flat_map(|m| m.sets.iter())
        .map(|s| {
            vec![
                s.key.clone(),
                format!(
                    "{} ({}/{}){}",
                    s.n,
                    s.n_covid,
                    s.n_pneumonia,
                    if s.small_sample { " †" } else { "" }
                ),
                fmt_estimate(&s.auc, false),
                fmt_ci(s.delong.as_ref().map(|d| [d.lo, d.hi])),
                fmt_estimate(&s.average_precision, false),
                fmt_estimate(&s.at_val_threshold.accuracy, true),
                fmt_estimate(&s.at_val_threshold.sensitivity, true),
                fmt_estimate(&s.at_val_threshold.specificity, true),
                fmt_estimate(&s.at_half.accuracy, true),
                fmt_estimate(&s.brier, false),
                fmt_estimate(&s.ece, false),
                s.alarms
                    .iter()
                    .map(|a| match a.kind {
                        crate::report::AlarmKind::Inverted => "INVERTED (CI < 0.5)",
                        crate::report::AlarmKind::ConstantScores => "CONSTANT scores",
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            ]
        })
        .collect();
    Grid {
        caption: format!(
            "All sets: 95% bootstrap intervals in brackets; val-thr = threshold chosen on the validation split; \
             † = small sample (fewer than {} images of a class the set holds)",
            report.options.min_per_class
        ),
        header: header.iter().map(|h| h.to_string()).collect(),
        rows,
    }
}

pub fn summary_markdown(report: &EvalReport) -> String {
    let mut out = summary_grid(report).markdown();
    for note in report
        .models
        .iter()
        .filter_map(|m| m.probability_metrics_skipped.as_ref())
    {
        out.push_str(&format!("\nNote: {note}.\n"));
    }
    out
}

pub fn summary_html(report: &EvalReport) -> String {
    summary_grid(report).html()
}
