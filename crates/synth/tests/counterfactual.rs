//! The counterfactual renderer: swapping one confounder group changes only what that group draws.

use cxr_synth::{
    ConfounderKind, Pattern, SourceSpec, WorldConfig, generate, paper_sources, planted,
    read_world_json, render_counterfactual, render_sample,
};

fn spec(id: &str) -> SourceSpec {
    paper_sources()
        .into_iter()
        .find(|s| s.id == id)
        .expect("a paper source")
}

const W: usize = 200;
const H: usize = 240;

fn cf(base: &SourceSpec, donor: &SourceSpec, k: ConfounderKind, seed: u64) -> Vec<f32> {
    render_counterfactual(base, donor, k, Pattern::Covid, 1.0, W, H, seed, 60).display
}

/// (x, y) of every pixel that differs by more than `tol`.
fn changed(a: &[f32], b: &[f32], tol: f32) -> Vec<(usize, usize)> {
    a.iter()
        .zip(b)
        .enumerate()
        .filter(|(_, (x, y))| (*x - *y).abs() > tol)
        .map(|(i, _)| (i % W, i / W))
        .collect()
}

#[test]
fn swapping_with_the_base_itself_is_bit_identical() {
    for base in paper_sources() {
        for seed in [1u64, 77] {
            let reference = render_sample(&base, Pattern::Covid, 1.0, W, H, seed, 60);
            for k in ConfounderKind::ALL {
                let c = render_counterfactual(&base, &base, k, Pattern::Covid, 1.0, W, H, seed, 60);
                assert_eq!(c.display, reference.display, "{} {k}", base.id);
                assert_eq!(c.mask, reference.mask, "{} {k}", base.id);
            }
        }
    }
}

#[test]
fn every_group_but_framing_keeps_the_patient_and_pathology() {
    let (nih, chexpert) = (spec("nih"), spec("chexpert"));
    for k in ConfounderKind::ALL {
        // NIH and CheXpert differ in every group, so every swap changes some image (collimation is drawn
        // with a probability, so not every seed has borders).
        assert!(k.differs(&nih, &chexpert), "{k}");
        let mut moved = 0;
        for seed in 0..6u64 {
            let reference = render_sample(&nih, Pattern::Covid, 1.0, W, H, seed, 60);
            let c = render_counterfactual(&nih, &chexpert, k, Pattern::Covid, 1.0, W, H, seed, 60);
            if k == ConfounderKind::Framing {
                // CheXpert's thorax is larger in the frame than NIH's: the lungs grow.
                let area = |m: &[u8]| m.iter().filter(|&&v| v != 0).count();
                assert!(
                    area(&c.mask) > area(&reference.mask),
                    "framing moves the lungs"
                );
            } else {
                assert_eq!(c.mask, reference.mask, "{k}: same lungs");
                assert_eq!(c.pathology, reference.pathology, "{k}: same lesions");
            }
            moved += !changed(&c.display, &reference.display, 1e-6).is_empty() as usize;
        }
        let need = if k == ConfounderKind::Collimation {
            1
        } else {
            6
        };
        assert!(moved >= need, "{k} changed {moved} of 6 images");
    }
}

#[test]
fn a_marker_swap_only_touches_the_top_corners() {
    // NIH's 'R' sits top left (patient's right), CheXpert's 'L' top right.
    let (nih, chexpert) = (spec("nih"), spec("chexpert"));
    for seed in 0..6u64 {
        let base = render_sample(&nih, Pattern::Covid, 1.0, W, H, seed, 60).display;
        let c = cf(&nih, &chexpert, ConfounderKind::Marker, seed);
        let diff = changed(&c, &base, 0.0);
        assert!(!diff.is_empty(), "seed {seed}: the marker changed");
        let (mut left, mut right) = (false, false);
        for &(x, y) in &diff {
            assert!(
                y < H / 4,
                "seed {seed}: change at row {y}, not near the top"
            );
            assert!(
                !(W * 3 / 10..W * 7 / 10).contains(&x),
                "seed {seed}: change at column {x}, not in a corner"
            );
            left |= x < W / 2;
            right |= x >= W / 2;
        }
        assert!(left && right, "seed {seed}: the R went and the L came");
    }
}

#[test]
fn a_grid_swap_adds_stripes_that_depend_on_the_column_only() {
    // NIH has no grid; V2-COV19-NII's lines are vertical.
    let (nih, v2) = (spec("nih"), spec("v2-cov19-nii"));
    let amplitude = v2
        .grid
        .as_ref()
        .expect("V2-COV19-NII has grid lines")
        .amplitude;
    let seed = 3;
    let r = render_sample(&nih, Pattern::Covid, 1.0, W, H, seed, 60);
    let c = cf(&nih, &v2, ConfounderKind::Grid, seed);
    // Inside the lungs nothing clamps, so the difference is the wave alone: the same down every column.
    let mut by_column: Vec<Option<f32>> = vec![None; W];
    let mut n = 0;
    for y in 0..H {
        for (x, col) in by_column.iter_mut().enumerate() {
            let i = y * W + x;
            if r.mask[i] == 0 || r.display[i] < 0.05 || r.display[i] > 0.95 {
                continue;
            }
            let d = c[i] - r.display[i];
            assert!(
                d.abs() <= amplitude * 1.03,
                "({x},{y}): {d} exceeds the amplitude"
            );
            match *col {
                None => *col = Some(d),
                Some(d0) => assert!((d - d0).abs() < 1e-5, "({x},{y}): {d} vs {d0}"),
            }
            n += 1;
        }
    }
    assert!(n > 1000, "enough lung pixels compared");
    let peak = by_column.iter().flatten().fold(0f32, |m, d| m.max(d.abs()));
    assert!(peak > amplitude / 2.0, "the stripes are there: {peak}");
}

#[test]
fn a_noise_swap_changes_the_noise_level_not_the_pattern() {
    // COVID-19-AR's noise is 3-4 times NIH's; same samples scaled up, so the difference is noise-like and
    // zero-mean inside the lungs.
    let (nih, ar) = (spec("nih"), spec("covid19-ar"));
    let seed = 11;
    let r = render_sample(&nih, Pattern::Covid, 1.0, W, H, seed, 60);
    let c = cf(&nih, &ar, ConfounderKind::Noise, seed);
    let d: Vec<f32> = (0..W * H)
        .filter(|&i| r.mask[i] != 0 && r.display[i] > 0.1 && r.display[i] < 0.9)
        .map(|i| c[i] - r.display[i])
        .collect();
    let mean = d.iter().sum::<f32>() / d.len() as f32;
    let sd = (d.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / d.len() as f32).sqrt();
    assert!(mean.abs() < 0.003, "zero-mean: {mean}");
    assert!(sd > 0.01, "noisier: sd {sd}");
}

#[test]
fn planted_groups_follow_the_specs() {
    let nih = spec("nih");
    let p = planted(&nih);
    assert!(p.contains(&ConfounderKind::Marker) && p.contains(&ConfounderKind::Collimation));
    assert!(!p.contains(&ConfounderKind::Grid) && !p.contains(&ConfounderKind::Text));
    let v2 = spec("v2-cov19-nii");
    assert!(!planted(&v2).contains(&ConfounderKind::Marker));
    assert!(planted(&v2).contains(&ConfounderKind::Grid));
    assert!(
        !ConfounderKind::Text.differs(&nih, &spec("padchest")),
        "neither has text"
    );
    assert!(ConfounderKind::Text.differs(&nih, &spec("chexpert")));
    for k in ConfounderKind::ALL {
        assert_eq!(k.as_str().parse::<ConfounderKind>().unwrap(), k);
    }
    assert!("colour".parse::<ConfounderKind>().is_err());
}

#[test]
fn world_json_reads_back_into_the_same_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WorldConfig {
        per_source: 2,
        size: 64,
        lung_mask_count: 1,
        ..Default::default()
    };
    generate(&cfg, dir.path()).unwrap();
    let world = read_world_json(dir.path()).unwrap();
    assert_eq!(world.sources, paper_sources());
    assert_eq!(world.config.size, 64);
    assert_eq!(world.source("padchest").unwrap().folder, "PadChest");
    // A file that is not a world names itself.
    let bad = dir.path().join("truth.csv");
    let e = read_world_json(&bad).unwrap_err().to_string();
    assert!(e.contains("truth.csv"), "{e}");
}
