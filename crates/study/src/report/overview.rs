//! The overview: what the study asks, the warnings that qualify every result (random weights, the profile's
//! shortcuts), the seen/unseen AUC table with the paper's figures beside ours, the synthetic world's gallery.

use std::path::Path;

use crate::error::Result;
use crate::report::media::thumbnail;
use crate::report::{Block, Section, fmt3};
use crate::results::Results;

/// The paper's seen and unseen AUC of `experiment`, formatted; `–` for the control (the paper has no clean
/// world) and for designs the paper gives no figure for.
fn paper_auc(results: &Results, experiment: &str, control: bool) -> (String, String) {
    let f = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.2}"));
    match results
        .experiments
        .iter()
        .find(|r| r.spec.name == experiment)
    {
        Some(r) if !control => (f(r.spec.paper_seen_auc), f(r.spec.paper_unseen_auc)),
        _ => ("–".into(), "–".into()),
    }
}

/// The AUC table: one row per experiment and model, main data then the control.
pub fn auc_table(results: &Results) -> Block {
    let mut rows = Vec::new();
    for (auc, data, control) in [
        (&results.seen_unseen_auc, results.data.tag.as_str(), false),
        (
            &results.control_seen_unseen_auc,
            "world-clean (control)",
            true,
        ),
    ] {
        for a in auc {
            let (ps, pu) = paper_auc(results, &a.experiment, control);
            rows.push(vec![
                a.experiment.clone(),
                a.model.clone(),
                data.to_string(),
                ps,
                fmt3(&a.seen),
                pu,
                fmt3(&a.unseen),
            ]);
        }
    }
    Block::Table {
        caption: format!(
            "Test AUC on seen vs unseen sources: the paper's beside ours (DeLong 95% CI); † = small sample \
             (fewer than {} images of a class the set holds)",
            results.run.min_per_class
        ),
        header: [
            "experiment",
            "model",
            "data",
            "seen (paper)",
            "seen (ours)",
            "unseen (paper)",
            "unseen (ours)",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    }
}

/// The overview section; `out` is the report's folder (the world's gallery is linked from it).
pub fn section(results: &Results, out: &Path) -> Result<Section> {
    let mut blocks = vec![Block::Paragraph(
        "Does a Covid-19 vs pneumonia classifier learn the disease or the data source? This report reruns the study of \
         Ben Ahmed et al. (arXiv 2102.04300) and audits each model for the source shortcut. Positive class: Covid-19; \
         a score is the model's probability of Covid-19. Intervals are 95% (DeLong for AUC, stratified bootstrap \
         for the other metrics)."
            .into(),
    )];
    if !results.run.backbone_weights.pretrained {
        blocks.push(Block::Warning(
            "Backbone: random initialisation — no ImageNet weights supplied (pass --weights-resnet50 / \
             --weights-vgg16 with torchvision or timm safetensors files)."
                .into(),
        ));
    }
    for n in results.profile.notes.iter().chain(&results.data.notes) {
        blocks.push(Block::Warning(n.clone()));
    }
    blocks.push(auc_table(results));
    if let Some(gallery) = results
        .data
        .world_root
        .as_ref()
        .map(|w| w.join("gallery.png"))
        .filter(|p| p.exists())
    {
        blocks.push(thumbnail(
            "The synthetic world: a few images per source (each source has its own acquisition signature)",
            &gallery,
            out,
        )?);
    }
    Ok(Section {
        id: "overview".into(),
        title: "Overview".into(),
        blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auc_table_quotes_the_paper_for_the_main_data_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut results = crate::report::fixture::results(dir.path());
        let Block::Table { rows, caption, .. } = auc_table(&results) else {
            unreachable!()
        };
        assert!(caption.contains("fewer than 10 images"));
        // Two main experiments, one control row.
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0][..4],
            [
                "figure4-split1",
                "resnet50-finetune1",
                "world-paper",
                "1.00"
            ]
        );
        let seen = results.seen_unseen_auc[0].seen.as_ref().unwrap();
        assert!(
            rows[0][4].starts_with(&format!("{:.3} [", seen.value)),
            "{:?}",
            rows[0]
        );
        assert_eq!(rows[2][2..4], ["world-clean (control)", "–"]);
        // Random weights are said before anything else; the world's gallery is shown when it exists.
        let section = section(&results, dir.path()).unwrap();
        assert!(
            matches!(&section.blocks[1], Block::Warning(w) if w.starts_with("Backbone: random"))
        );
        assert!(
            !section
                .blocks
                .iter()
                .any(|b| matches!(b, Block::Thumbnail { .. }))
        );
        crate::report::fixture::png(&results.data.world_root.clone().unwrap().join("gallery.png"));
        results.run.backbone_weights.pretrained = true;
        let section = super::section(&results, dir.path()).unwrap();
        assert!(!matches!(&section.blocks[1], Block::Warning(w) if w.starts_with("Backbone")));
        let Some(Block::Thumbnail { href, .. }) = section.blocks.last() else {
            panic!("no gallery")
        };
        assert_eq!(href, "data-world-paper/world/gallery.png");
    }
}
