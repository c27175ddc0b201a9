//! Table 4 of the paper: fine-tuning the split-1 model on the unseen sources, the accuracy on each before
//! and after, the paper's beside ours.

use cxr_core::{SourceId, Split};
use cxr_eval::report::{Estimate, Group};

use crate::experiment::ExperimentResult;
use crate::report::{Block, pct};

/// The sources of the paper's Table 4: the class each holds, and the paper's accuracy before and after
/// (`../shared/docs/PAPER.md`).
pub const PAPER_TABLE4: [(&str, &str, f64, f64); 2] = [
    (SourceId::BIMCV, "Covid-19", 0.51, 0.98),
    (SourceId::CHEXPERT, "pneumonia", 0.12, 0.94),
];

/// One row: source, class, paper before and after, ours before (the base model) and after.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub source: &'static str,
    pub class: &'static str,
    pub paper: (f64, f64),
    pub before: Option<Estimate>,
    pub after: Option<Estimate>,
}

/// The experiment `r` fine-tunes, among `all`.
pub fn base_of<'a>(
    r: &ExperimentResult,
    all: &'a [ExperimentResult],
) -> Option<&'a ExperimentResult> {
    let base = r.spec.base.as_ref()?;
    all.iter().find(|x| &x.spec.name == base)
}

/// The first model's accuracy at 0.5 on `source`'s test images.
fn accuracy_on(r: &ExperimentResult, source: &str) -> Option<Estimate> {
    let model = r.models.first()?;
    let group = Group::Source(SourceId::new(source).ok()?);
    Some(
        r.eval
            .set(&model.name, Split::Test, &group)?
            .at_half
            .accuracy,
    )
}

/// The table's rows for the fine-tuned experiment `r` and its base.
pub fn rows(r: &ExperimentResult, base: Option<&ExperimentResult>) -> Vec<Row> {
    PAPER_TABLE4
        .iter()
        .map(|&(source, class, before, after)| Row {
            source,
            class,
            paper: (before, after),
            before: base.and_then(|b| accuracy_on(b, source)),
            after: accuracy_on(r, source),
        })
        .collect()
}

/// The table as a report block.
pub fn block(r: &ExperimentResult, all: &[ExperimentResult]) -> Block {
    let rows = rows(r, base_of(r, all))
        .into_iter()
        .map(|t| {
            vec![
                format!("{} ({})", t.source, t.class),
                format!("{:.0}%", t.paper.0 * 100.0),
                pct(&t.before),
                format!("{:.0}%", t.paper.1 * 100.0),
                pct(&t.after),
            ]
        })
        .collect();
    Block::Table {
        caption: "Table 4: accuracy at 0.5 on the unseen sources' test images before (the split-1 \
                  model) and after local fine-tuning, the paper's beside ours (bootstrap 95% CI)"
            .into(),
        header: [
            "test source",
            "before (paper)",
            "before (ours)",
            "after (paper)",
            "after (ours)",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_put_the_paper_beside_ours_before_and_after() {
        let dir = tempfile::tempdir().unwrap();
        let results = crate::report::fixture::results(dir.path());
        let table4 = &results.experiments[1];
        let rows = rows(table4, base_of(table4, &results.experiments));
        assert_eq!(rows.len(), 2);
        // The unseen Covid-19 source scores low (0.2 to 0.475): at 0.5 every image is called pneumonia.
        let bimcv = &rows[0];
        assert_eq!((bimcv.source, bimcv.paper), (SourceId::BIMCV, (0.51, 0.98)));
        assert_eq!(bimcv.before.unwrap().value, Some(0.0));
        assert_eq!(bimcv.after.unwrap().value, Some(0.0));
        let Block::Table { rows: cells, .. } = block(table4, &results.experiments) else {
            unreachable!()
        };
        assert_eq!(cells[0][0], "bimcv (Covid-19)");
        assert_eq!(cells[0][1], "51%");
        assert_eq!(cells[0][2], "0.0% [0.0%, 0.0%]");
        // Without its base experiment, "before" is unknown.
        assert_eq!(super::rows(table4, None)[1].before, None);
        let Block::Table { rows: cells, .. } = block(table4, &[]) else {
            unreachable!()
        };
        assert_eq!(cells[1][2], "–");
    }
}
