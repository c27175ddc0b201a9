//! Crash safety of training: the test binary re-executes itself as a child that runs `cxr_model::train`
//! with `resume`, SIGKILLs it at pseudo-random moments (mid-epoch, during a checkpoint write, while the final
//! outputs are written — wherever the clock lands), then lets a last resumed run finish; `model.safetensors`,
//! `predictions.csv`, `run.json` and `training_log.csv` (less its wall-clock `seconds` column) must equal those
//! of an uninterrupted run, byte for byte. The data set is generated at test time: small noisy PNGs where
//! Covid-19 images carry a bright square and pneumonia images a dark one, in train / val / test splits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cxr_core::Split;
use cxr_model::{Arch, Mode, TrainConfig, TrainOptions};

const CHILD_ENV: &str = "CXR_KILL_RESUME_TRAIN_CHILD";
const TEST_NAME: &str = "killed_training_resumes_to_identical_outputs";

/// xorshift64: the kill moments, fixed seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[path = "../../crates/model/tests/common/square_cue.rs"]
mod square_cue;

/// The model tests' square-cue set: 32 + 8 + 8 images per class.
fn dataset(dir: &Path) -> PathBuf {
    square_cue::square_cue_manifest(
        dir,
        &[(Split::Train, 32), (Split::Val, 8), (Split::Test, 8)],
        7,
    )
}

/// Fine-tuning of the BatchNorm layers and the head (Finetune1) of a tiny ResNet: a checkpoint per epoch with
/// weights, BatchNorm running statistics, Adam moments, the best snapshot and dropout-driven training.
fn config(manifest: &Path) -> TrainConfig {
    let mut cfg = TrainConfig::new(manifest);
    cfg.image_column = "png8".into();
    cfg.image_size = 32;
    cfg.batch_size = 8;
    cfg.max_epochs = 20;
    // Early stopping stays possible (so `finished` and the best-snapshot restore are part of the test).
    cfg.patience = 6;
    cfg.learning_rate = 3e-3;
    cfg.seed = 11;
    cfg.backbone = "resnet:1,1,1,1:8".parse::<Arch>().unwrap();
    cfg.mode = Mode::Finetune1;
    cfg
}

fn train(manifest: &Path, out: &Path, resume: bool) -> cxr_model::TrainReport {
    let opts = TrainOptions {
        resume,
        stop_after_epochs: None,
    };
    cxr_model::train(&config(manifest), out, &opts).unwrap()
}

/// The compared outputs, by name. `training_log.csv` loses its `seconds` column (wall-clock time per epoch,
/// the one value that legitimately differs between runs).
fn outputs(out: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let mut acc = Vec::new();
    for name in ["model.safetensors", "predictions.csv", "run.json"] {
        acc.push((name, std::fs::read(out.join(name)).unwrap()));
    }
    let log = std::fs::read_to_string(out.join("training_log.csv")).unwrap();
    let header: Vec<&str> = log.lines().next().unwrap().split(',').collect();
    let secs = header.iter().position(|&c| c == "seconds").unwrap();
    let stripped: String = log
        .lines()
        .map(|l| {
            let mut cells: Vec<&str> = l.split(',').collect();
            assert_eq!(cells.len(), header.len(), "training_log.csv row `{l}`");
            cells.remove(secs);
            cells.join(",") + "\n"
        })
        .collect();
    acc.push(("training_log.csv", stripped.into_bytes()));
    acc
}

/// Epochs recorded in the checkpoint-side log on disk (0 when none yet).
fn epochs_logged(out: &Path) -> usize {
    std::fs::read_to_string(out.join("training_log.csv"))
        .map(|s| s.lines().count().saturating_sub(1))
        .unwrap_or(0)
}

#[test]
fn killed_training_resumes_to_identical_outputs() {
    if let Some(args) = std::env::var_os(CHILD_ENV) {
        // Child mode: `<manifest>\n<out>`; always resumes, as an operator restarting a killed run would.
        let args = args.to_string_lossy().to_string();
        let (manifest, out) = args.split_once('\n').unwrap();
        train(Path::new(manifest), Path::new(out), true);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let manifest = dataset(&dir.path().join("data"));

    let reference = dir.path().join("reference");
    let t0 = Instant::now();
    let want_report = train(&manifest, &reference, false);
    let full = t0.elapsed();
    assert!(want_report.completed);
    assert!(
        want_report.epochs_run >= 4,
        "too short to kill in the middle: {:?}",
        want_report.log
    );
    let want = outputs(&reference);

    // Kill moments: 3-25 % of an uninterrupted run's time after each start, so children die while loading,
    // mid-epoch, around checkpoint writes and, with little left to do, while writing the final outputs; some
    // may finish. Each child resumes from what the previous ones left.
    let out = dir.path().join("killed");
    let exe = std::env::current_exe().unwrap();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut history = Vec::new();
    let mut killed_with_progress = 0;
    for _ in 0..10 {
        let before = epochs_logged(&out);
        let frac = 0.03 + (next(&mut rng) % 220) as f64 / 1000.0;
        let delay = full.mul_f64(frac).max(Duration::from_millis(50));
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(
                CHILD_ENV,
                format!("{}\n{}", manifest.display(), out.display()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let killed = child.try_wait().unwrap().is_none();
        if killed {
            child.kill().unwrap(); // SIGKILL on Unix
        }
        let status = child.wait().unwrap();
        let after = epochs_logged(&out);
        if killed && before > 0 {
            killed_with_progress += 1;
        }
        history.push(format!(
            "{} after {:.0} ms (epochs {before} -> {after})",
            if killed { "killed" } else { "exited" },
            delay.as_secs_f64() * 1e3
        ));
        if !killed {
            assert!(status.success(), "child failed: {status}; {history:?}");
        }
    }
    println!(
        "kill_resume_training: uninterrupted run {full:.2?} ({} epochs, best {}, stopped early: {}); \
         children: {history:?}",
        want_report.epochs_run, want_report.best_epoch, want_report.stopped_early
    );
    // A run that was killed, resumed from a checkpoint and killed again is what this test is about.
    assert!(
        killed_with_progress >= 1,
        "no child was killed after a checkpoint existed (machine too fast or too slow?): {history:?}"
    );

    let leftovers = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().contains(".tmp-")
        })
        .count();
    println!("kill_resume_training: {leftovers} temporary files left by killed writes");

    // The last run finishes what the killed ones left.
    let got_report = train(&manifest, &out, true);
    assert!(got_report.completed);
    assert_eq!(got_report.epochs_run, want_report.epochs_run);
    assert_eq!(got_report.best_epoch, want_report.best_epoch);
    assert_eq!(got_report.predictions, want_report.predictions);
    let got = outputs(&out);
    for ((name, a), (_, b)) in got.iter().zip(&want) {
        if name.ends_with(".csv") || name.ends_with(".json") {
            assert_eq!(
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b),
                "{name} differs after kill and resume; {history:?}"
            );
        } else {
            assert!(a == b, "{name} differs after kill and resume; {history:?}");
        }
    }
}
