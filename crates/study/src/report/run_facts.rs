//! "What was run": the command, profile, data, image counts, weights, seed, resamples, input size, versions and
//! wall time, as label/value pairs.

use crate::results::Results;

/// The run's facts in the order the page lists them.
pub fn run_facts(results: &Results) -> Vec<(String, String)> {
    let run = &results.run;
    let images_after = run
        .images_after_lung_crop
        .map_or_else(|| "?".to_string(), |n| n.to_string());
    [
        ("command", run.command.clone()),
        ("profile", run.profile.clone()),
        ("data", run.data.clone()),
        (
            "images",
            format!(
                "{} selected by the dataset rules; {images_after} after lung cropping",
                run.images_selected
            ),
        ),
        ("backbone weights", run.backbone_weights.description.clone()),
        ("seed", run.seed.to_string()),
        ("bootstrap resamples", run.bootstrap_resamples.to_string()),
        ("model input", format!("{} px", run.model_input_px)),
        (
            "versions",
            format!(
                "cxr-confounders {} (candle {})",
                run.versions.cxr_confounders, run.versions.candle
            ),
        ),
        ("wall time", format!("{:.0} s", run.wall_time_s)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_state_the_counts_weights_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut results = crate::report::fixture::results(dir.path());
        let facts = run_facts(&results);
        let get = |facts: &[(String, String)], k: &str| {
            facts
                .iter()
                .find(|(l, _)| l == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get(&facts, "command"), "cxr reproduce --out r");
        assert_eq!(
            get(&facts, "images"),
            "60 selected by the dataset rules; 40 after lung cropping"
        );
        assert_eq!(
            get(&facts, "backbone weights"),
            "random initialisation — no ImageNet weights supplied"
        );
        assert_eq!(get(&facts, "wall time"), "451 s");
        assert_eq!(get(&facts, "model input"), "128 px");
        assert!(get(&facts, "versions").ends_with("(candle 0.11.1)"));
        results.run.images_after_lung_crop = None;
        assert!(get(&run_facts(&results), "images").contains("; ? after"));
    }
}
