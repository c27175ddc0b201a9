//! `docs/results.schema.json` is valid JSON, and the checker the end-to-end test validates `results.json` with
//! (`support/json_schema.rs`) accepts a conforming fragment and rejects what the schema forbids: a number as a
//! string, a key outside the schema, an unlabelled interval triple.

#[path = "support/json_schema.rs"]
mod json_schema;

use serde_json::json;

fn schema() -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/results.schema.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
fn the_schema_checker_accepts_and_rejects() {
    let schema = schema();
    let seen_unseen = json!({"$ref": "#/$defs/seen_unseen"});
    let sub = |s: &serde_json::Value| {
        let mut s = s.clone();
        s["$defs"] = schema["$defs"].clone();
        s
    };
    let good = json!({"experiment": "figure4-split1", "model": "m",
        "seen": {"value": 0.9, "lo": 0.8, "hi": 1.0, "method": "delong", "n_covid": 12, "n_pneumonia": 4,
                 "small_sample": true},
        "unseen": null});
    assert_eq!(
        json_schema::validate(&sub(&seen_unseen), &good),
        Vec::<String>::new()
    );
    let triple = json!({"experiment": "e", "model": "m", "seen": [0.9, 0.8, 1.0], "unseen": null});
    assert!(!json_schema::validate(&sub(&seen_unseen), &triple).is_empty());
    let mut extra = good.clone();
    extra["seen AUC"] = json!(1);
    assert!(!json_schema::validate(&sub(&seen_unseen), &extra).is_empty());

    // The run block: a wall time as "451 s" fails both the schema and the style check.
    let run = json!({"wall time": "451 s", "seed": "2021"});
    let mut problems = Vec::new();
    json_schema::style_problems(&run, "$", &mut problems);
    assert_eq!(problems.len(), 3, "{problems:?}");
    let mut whole = json!({});
    whole["run"] = run;
    let errors = json_schema::validate(&schema, &whole);
    assert!(errors.iter().any(|e| e.contains("wall time")), "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("missing required `experiments`")),
        "{errors:?}"
    );
}

#[test]
fn the_segmentation_block_follows_the_schema() {
    let schema = schema();
    let mut sub = json!({"$ref": "#/$defs/segmentation"});
    sub["$defs"] = schema["$defs"].clone();
    let good = json!({
        "segmenter": "out/unet-default-sets/unet.safetensors",
        "training_report": true,
        "test_dice": 0.95, "test_dice_flip": 0.951,
        "dice_by_source": [{"source": "cohen", "n": 12, "mean": 0.91, "sd": 0.05, "median": 0.92,
                            "p10": 0.84, "min": 0.7, "mean_flip": 0.915},
                           {"source": "montgomery", "n": 0, "mean": null, "sd": null, "median": null,
                            "p10": null, "min": null, "mean_flip": null}],
        "split_by_source": [{"source": "cohen", "train": 40, "val": 6, "test": 12, "train_patients": 30,
                             "val_patients": 4, "test_patients": 9}],
        "worst": [{"source": "cohen", "name": "img-1", "dice": 0.7,
                   "overlay": "out/unet-default-sets/unet.worst/01-cohen-img-1.png"}],
        "rejections_by_source": [{"source": "cohen", "images": 50, "kept": 30,
                                  "rejected": {"small_crop": 18, "empty_mask": 2}, "rejection_rate": 0.4}],
        "rejection_rule": "a source is flagged when ...",
        "warnings": [{"source": "cohen", "images": 50, "rejected": 20, "rate": 0.4, "others_rate": 0.05,
                      "message": "..."}]
    });
    assert_eq!(json_schema::validate(&sub, &good), Vec::<String>::new());
    // A count written as a string, or a rate missing from a warning, is refused.
    let mut bad = good.clone();
    bad["rejections_by_source"][0]["rejected"]["small_crop"] = json!("18");
    assert!(!json_schema::validate(&sub, &bad).is_empty());
    let mut bad = good.clone();
    bad["warnings"][0]
        .as_object_mut()
        .unwrap()
        .remove("others_rate");
    let errors = json_schema::validate(&sub, &bad);
    assert!(
        errors.iter().any(|e| e.contains("others_rate")),
        "{errors:?}"
    );
}
