//! `cargo xtask reproduce --sensitivity` on tiny worlds: in a world where one planted confounder group is the
//! only difference between the sources, the model trained on it follows that group and the audit's
//! counterfactual confounder test says so. Together with the clean-world control of `reproduce_e2e.rs` (where
//! nothing may be flagged), this is issue 10's "flags planted confounders, and not the clean world".
//!
//! Seven of the eight groups are checked here. At this test's 128 px worlds and 64 px model inputs the grid is
//! below what the model can resolve: its lines are 2.6 px apart, beyond the Nyquist limit of a 64 px lung crop.
//! The grid is measured at the quick profile's sizes (256 px worlds, 128 px crops) in docs/PERFORMANCE.md.

#[test]
fn the_confounder_test_finds_each_planted_group_when_it_is_the_only_cue() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sens");
    xtask::run([
        "xtask",
        "reproduce",
        "--out",
        out.to_str().unwrap(),
        "--per-source",
        "30",
        "--world-size",
        "128",
        "--image-size",
        "64",
        "--resamples",
        "200",
        "--experiment",
        "figure4-split1",
        "--no-control",
        "--sensitivity",
        "--sensitivity-groups",
        "framing,intensity,blur,noise,collimation,text,marker",
    ])
    .expect("reproduce --sensitivity on tiny worlds");

    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let runs = results["sensitivity"].as_array().expect("sensitivity runs");
    let groups: Vec<&str> = runs.iter().map(|r| r["group"].as_str().unwrap()).collect();
    assert_eq!(
        groups,
        [
            "framing",
            "intensity",
            "blur",
            "noise",
            "collimation",
            "text",
            "marker"
        ]
    );
    let mut missed = Vec::new();
    for r in runs {
        let group = r["group"].as_str().unwrap();
        // The world planted that group alone: world.json's sources differ in it and in nothing else.
        let world = out.join(format!("data-world-only-{group}/world/world.json"));
        let file = cxr_synth::read_world_json(&world).unwrap();
        for kind in cxr_synth::ConfounderKind::ALL {
            let differs = file
                .sources
                .iter()
                .any(|a| file.sources.iter().any(|b| kind.differs(a, b)));
            assert_eq!(differs, kind.as_str() == group, "{group} world, {kind}");
        }
        let rows = r["result"]["confounders"]["confounders"]
            .as_array()
            .unwrap_or_else(|| panic!("{group}: no confounder test in {r}"));
        let own = rows
            .iter()
            .find(|k| k["kind"] == group)
            .unwrap_or_else(|| panic!("{group}: not tested"));
        if own["status"] != "followed" {
            missed.push(format!("{group}: {own}"));
        }
        // Only the planted group can be label-associated there.
        for k in rows.iter().filter(|k| k["kind"] != group) {
            assert_ne!(k["status"], "followed", "{group} world: {k}");
        }
    }
    assert!(missed.is_empty(), "planted groups not found: {missed:#?}");

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Audit sensitivity: one planted confounder per world"));
}
