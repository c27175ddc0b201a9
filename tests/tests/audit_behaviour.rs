//! The audit's verdict describes the model, not the data: three controls on ONNX models built with
//! `onnx.helper` (`crates/onnx/scripts/make_fixtures.py`), audited through the library API on small
//! chest-like worlds of two hospitals.
//!
//! 1. A model that reads the lungs only (`lung_reader`: the mean of a square in the left lung), trained on a
//!    fully confounded split (every Covid-19 training image from one hospital, every pneumonia one from the
//!    other: Cramér's V = 1), whose hospitals differ by a corner mark it never reads: no `shortcut`; the
//!    data risk is still reported as high.
//! 2. A model that reads a source signature spread over the whole image (`noise_reader`: the noise level,
//!    which differs by hospital), on a test set where both hospitals hold both classes: `shortcut`, from the
//!    score-follows-source test (the occlusion tests cannot see it: removing the lungs leaves the noise, and
//!    the label does not follow the hospital in the test set).
//! 3. The corner reader (`cue_outside`) on balanced hospitals: still `shortcut`, from the lungs-removed
//!    occlusion.

#[path = "support/chest.rs"]
mod chest;
use chest::in_lung;

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};

/// How a world's two hospitals differ and how its split is drawn.
struct World {
    /// Every Covid-19 training image from this hospital, every pneumonia one from the other (V = 1);
    /// `None`: both hospitals hold both classes in training too.
    confounded_train: Option<&'static str>,
    /// Grey noise amplitude (uniform +-a) of hospital a and hospital b.
    noise: [f64; 2],
    /// A bright 32 px mark in hospital b's top-left corner.
    mark_on_b: bool,
    /// Where every Covid-19 image carries a bright 32 px square (top-left row, column).
    cue: (u32, u32),
}

const HOSPITALS: [&str; 2] = ["hospital_a", "hospital_b"];

/// 16 training images and 48 test images (12 per hospital and class), 224 px, with one lung mask.
fn write_world(dir: &Path, w: &World) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut csv = String::from("id,source,label,patient,split,png8,mask\n");
    chest::write_lung_mask(dir);
    let mut rows = Vec::new();
    for k in 0..16usize {
        let covid = k % 2 == 0;
        let h = match w.confounded_train {
            Some(covid_source) => {
                let c = HOSPITALS.iter().position(|s| *s == covid_source).unwrap();
                if covid { c } else { 1 - c }
            }
            None => (k / 2) % 2,
        };
        rows.push((h, covid, "train"));
    }
    for k in 0..48usize {
        rows.push(((k / 2) % 2, k % 2 == 0, "test"));
    }
    for (i, &(h, covid, split)) in rows.iter().enumerate() {
        let amp = w.noise[h];
        let mut px: Vec<u8> = (0..224 * 224u32)
            .map(|k| {
                let base = if in_lung(k / 224, k % 224) {
                    70.0
                } else {
                    150.0
                };
                (base + rng.random_range(-amp..amp))
                    .round()
                    .clamp(0.0, 255.0) as u8
            })
            .collect();
        let mut square = |(r0, c0): (u32, u32), v: u8| {
            for r in r0..r0 + 32 {
                for c in c0..c0 + 32 {
                    px[(r * 224 + c) as usize] = v;
                }
            }
        };
        if covid {
            square(w.cue, 250);
        }
        if w.mark_on_b && h == 1 {
            square((8, 8), 255);
        }
        let name = chest::save_image(dir, i, px);
        let label = if covid { "covid" } else { "pneumonia" };
        csv.push_str(&format!(
            "im{i},{},{label},p{i},{split},{name},mask.png\n",
            HOSPITALS[h]
        ));
    }
    let m = dir.join("manifest.csv");
    std::fs::write(&m, csv).unwrap();
    m
}

fn audit(model: &str, world: &World, dir: &Path) -> cxr_explain::AuditReport {
    audit_with(
        model,
        world,
        dir,
        cxr_onnx::Engine::Auto,
        &cxr_audit::AuditConfig::default(),
    )
    .report
}

/// [`audit`] on one engine.
fn audit_on(
    model: &str,
    world: &World,
    dir: &Path,
    engine: cxr_onnx::Engine,
) -> cxr_explain::AuditReport {
    audit_with(
        model,
        world,
        dir,
        engine,
        &cxr_audit::AuditConfig::default(),
    )
    .report
}

/// The audit of fixture `model` on `world` on `engine`, with `base`'s saliency settings.
fn audit_with(
    model: &str,
    world: &World,
    dir: &Path,
    engine: cxr_onnx::Engine,
    base: &cxr_audit::AuditConfig,
) -> cxr_audit::AuditOutcome {
    let manifest = dir.join(format!("{model}-world/manifest.csv"));
    if !manifest.is_file() {
        write_world(&dir.join(format!("{model}-world")), world);
    }
    let spec = cxr_tests::repo_root().join(format!("crates/onnx/tests/fixtures/{model}.toml"));
    let spec = cxr_onnx::ModelSpec::load(&spec).unwrap();
    let scorer = cxr_onnx::OnnxScorer::load(spec, &cxr_onnx::LoadOptions::engine(engine)).unwrap();
    let cfg = cxr_audit::AuditConfig {
        column: Some("png8".into()),
        saliency_images: 4,
        out: Some(dir.join(format!(
            "{model}-audit-{engine}-{}",
            base.saliency_tolerance
        ))),
        ..base.clone()
    };
    cxr_audit::run_audit(&scorer, &manifest, &cfg)
        .unwrap_or_else(|e| panic!("audit of {model}: {e}"))
}

fn test<'a>(r: &'a cxr_explain::AuditReport, name: &str) -> &'a cxr_explain::TestResult {
    r.verdicts[0]
        .tests
        .iter()
        .find(|t| t.test == name)
        .unwrap_or_else(|| panic!("no {name} in {:#?}", r.verdicts[0].tests))
}

#[test]
fn a_lung_reader_trained_on_a_confounded_split_is_not_a_shortcut() {
    use cxr_explain::{Overall, Risk, Status};
    let dir = tempfile::tempdir().unwrap();
    let r = audit(
        "lung_reader",
        &World {
            confounded_train: Some("hospital_a"),
            noise: [20.0, 20.0],
            mark_on_b: true,
            cue: (96, 48),
        },
        dir.path(),
    );
    let v = &r.verdicts[0];
    // The data offered a shortcut (V = 1), reported apart ...
    assert_eq!(v.data_risk.risk, Risk::High, "{:#?}", v.data_risk);
    assert!(v.data_risk.figure.unwrap() > 0.99, "{:#?}", v.data_risk);
    // ... and the model did not take it.
    assert_eq!(v.verdict, Overall::NoShortcutFound, "{:#?}", v.tests);
    let follows = test(&r, "score_follows_source");
    assert_eq!(follows.status, Status::Pass, "{follows:#?}");
    // Within each class, hospital a against hospital b: two comparisons, both near chance.
    let sf = r.evidence[0].score_follows_source.as_ref().unwrap();
    assert_eq!(sf.comparisons.len(), 2, "{sf:#?}");
    assert!(
        sf.comparisons.iter().all(|c| c.separation() < 0.8),
        "{sf:#?}"
    );
    assert_eq!(test(&r, "lungs_removed[mean]").status, Status::Pass);
    // The saliency maps rest on every map, and the heat is on the lung square.
    let e = &r.evidence[0];
    assert_eq!(
        (e.saliency_maps, e.saliency_maps_usable),
        (Some(4), Some(4))
    );
    assert_eq!(test(&r, "lung_energy").status, Status::Pass);
}

#[test]
fn a_model_that_reads_the_noise_level_follows_the_source_on_a_balanced_test_set() {
    use cxr_explain::{Overall, Status};
    let dir = tempfile::tempdir().unwrap();
    let r = audit(
        "noise_reader",
        &World {
            // Trained where the label was the hospital: the noisy hospital held the Covid-19 images.
            confounded_train: Some("hospital_b"),
            noise: [10.0, 30.0],
            mark_on_b: false,
            cue: (96, 48),
        },
        dir.path(),
    );
    let v = &r.verdicts[0];
    assert_eq!(v.verdict, Overall::Shortcut, "{:#?}", v.tests);
    let follows = test(&r, "score_follows_source");
    assert_eq!(follows.status, Status::Flag, "{follows:#?}");
    assert!(v.decided_by.contains(&"score_follows_source".to_string()));
    // Within each class the score tells the hospitals apart perfectly, the way training associated them (the
    // quiet hospital held pneumonia only, and scores lower).
    let sf = r.evidence[0].score_follows_source.as_ref().unwrap();
    assert!(
        sf.comparisons.iter().all(|c| c.separation() == 1.0
            && c.p_holm < 0.01
            && c.follows_training_association(0.25)),
        "{sf:#?}"
    );
    // The occlusion tests cannot see it: without the lungs the noise stays, but in this test set the label
    // does not follow the hospital.
    for fill in ["mean", "noise"] {
        let t = test(&r, &format!("lungs_removed[{fill}]"));
        assert_eq!(t.status, Status::Pass, "{t:#?}");
    }
}

#[test]
fn the_corner_reader_on_balanced_sources_is_still_a_shortcut() {
    use cxr_explain::{Overall, Risk, Status};
    let dir = tempfile::tempdir().unwrap();
    let r = audit(
        "cue_outside",
        &World {
            confounded_train: None,
            noise: [25.0, 25.0],
            mark_on_b: false,
            cue: (8, 8),
        },
        dir.path(),
    );
    let v = &r.verdicts[0];
    assert_eq!(v.data_risk.risk, Risk::Low, "{:#?}", v.data_risk);
    assert_eq!(v.verdict, Overall::Shortcut, "{:#?}", v.tests);
    assert_eq!(test(&r, "lungs_removed[mean]").status, Status::Flag);
    // Its score follows the cue, which both hospitals' Covid-19 images carry alike, not the hospital.
    assert_eq!(test(&r, "score_follows_source").status, Status::Pass);
    assert!(
        v.decided_by.iter().all(|t| t.starts_with("lungs_removed")),
        "{:?}",
        v.decided_by
    );
}

/// One control through both engines: the same verdict, the same status for every test, and `audit.json`
/// names the engine each ran on (onnxruntime only where it is found: `skipped: ...` otherwise).
#[test]
fn the_noise_reader_gets_one_verdict_on_both_engines() {
    use cxr_onnx::Engine;
    if let Err(e) = cxr_onnx::engine::onnxruntime() {
        println!("skipped: the audit on onnxruntime ({e})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let world = World {
        confounded_train: Some("hospital_b"),
        noise: [10.0, 30.0],
        mark_on_b: false,
        cue: (96, 48),
    };
    let tract = audit_on("noise_reader", &world, dir.path(), Engine::Tract);
    let ort = audit_on("noise_reader", &world, dir.path(), Engine::Onnxruntime);
    let (a, b) = (&tract.verdicts[0], &ort.verdicts[0]);
    assert_eq!(a.verdict, cxr_explain::Overall::Shortcut, "{:#?}", a.tests);
    assert_eq!(a.verdict, b.verdict);
    assert_eq!(a.decided_by, b.decided_by);
    let status = |v: &cxr_explain::Verdict| -> Vec<(String, cxr_explain::Status)> {
        v.tests.iter().map(|t| (t.test.clone(), t.status)).collect()
    };
    assert_eq!(status(a), status(b));
    assert_eq!(tract.evidence[0].engine.as_deref(), Some("tract 0.23.9"));
    let recorded = ort.evidence[0].engine.as_deref().unwrap_or_default();
    assert!(recorded.starts_with("onnxruntime 1."), "{recorded}");
    // audit.json carries it.
    let json = std::fs::read_to_string(dir.path().join(format!(
        "noise_reader-audit-onnxruntime-{}/audit.json",
        cxr_audit::AuditConfig::default().saliency_tolerance
    )))
    .unwrap();
    assert!(
        json.contains(&format!("\"engine\": \"{recorded}\"")),
        "{json}"
    );
}

/// The refined occlusion maps (the default) against the exhaustive reference on the four fixture models:
/// the mean lung energy moves by less than 0.05, every test keeps its status, for fewer forward passes.
#[test]
fn refined_saliency_maps_keep_the_exhaustive_lung_energy_and_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let worlds = [
        (
            "lung_reader",
            Some("hospital_a"),
            [20.0, 20.0],
            true,
            (96, 48),
        ),
        ("cue_inside", None, [25.0, 25.0], false, (96, 48)),
        ("cue_outside", None, [25.0, 25.0], false, (8, 8)),
        (
            "noise_reader",
            Some("hospital_b"),
            [10.0, 30.0],
            false,
            (96, 48),
        ),
    ];
    for (model, confounded_train, noise, mark_on_b, cue) in worlds {
        let world = World {
            confounded_train,
            noise,
            mark_on_b,
            cue,
        };
        let run = |tolerance: f64| {
            let cfg = cxr_audit::AuditConfig {
                saliency_tolerance: tolerance,
                ..Default::default()
            };
            audit_with(model, &world, dir.path(), cxr_onnx::Engine::Auto, &cfg)
        };
        let (full, cheap) = (run(0.0), run(cxr_explain::SaliencyPlan::DEFAULT_TOLERANCE));
        let (ef, ec) = (&full.report.evidence[0], &cheap.report.evidence[0]);
        let (a, b) = (ef.lung_energy.unwrap().value, ec.lung_energy.unwrap().value);
        let (sf, sc) = (ef.saliency.as_ref().unwrap(), ec.saliency.as_ref().unwrap());
        eprintln!(
            "{model}: lung energy exhaustive {a:.4}, refined {b:.4}; passes per map {} -> {}",
            sf.passes_per_map, sc.passes_per_map
        );
        assert!((a - b).abs() < 0.05, "{model}: {a} vs {b}");
        // And map by map (saliency/lung_energy.csv).
        let rows = |o: &cxr_audit::AuditOutcome| {
            let dir = &o.files.as_ref().unwrap().dir;
            cxr_explain::read_energy_csv(&dir.join("saliency/lung_energy.csv")).unwrap()
        };
        let (rf, rc) = (rows(&full), rows(&cheap));
        assert_eq!(rf.len(), 4, "{model}");
        for (x, y) in rf.iter().zip(&rc) {
            assert_eq!(x.id, y.id);
            let (x, y) = (x.lung_energy.unwrap(), y.lung_energy.unwrap());
            assert!((x - y).abs() < 0.05, "{model}: {x} vs {y}");
        }
        assert_eq!(sf.passes_per_map, 530, "{model}");
        assert!(sc.passes_per_map < sf.passes_per_map, "{model}: {sc:?}");
        let (vf, vc) = (&full.report.verdicts[0], &cheap.report.verdicts[0]);
        assert_eq!(vf.verdict, vc.verdict, "{model}");
        for (t, u) in vf.tests.iter().zip(&vc.tests) {
            assert_eq!((&t.test, t.status), (&u.test, u.status), "{model}");
        }
        // Everything but the saliency evidence is the same audit.
        let strip = |e: &cxr_explain::AuditEvidence| cxr_explain::AuditEvidence {
            lung_energy: None,
            saliency: None,
            ..e.clone()
        };
        assert_eq!(strip(ef), strip(ec), "{model}");
    }
}
