//! Crash safety of batch preprocessing: the test binary re-executes itself as a child that runs
//! `cxr_preprocess::run_batch` (with cxr-ingest's reader), SIGKILLs it at pseudo-random moments several times,
//! then lets a final run finish; the PNG bytes, `manifest.csv` and `rejects.csv` must equal those of an
//! uninterrupted run. Inputs are real files from `$CXR_SHARED_DATA` (copied to a temporary folder at test time).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cxr_core::{ImageFormat, Label, Manifest, ManifestRecord, SourceId};

const CHILD_ENV: &str = "CXR_KILL_RESUME_CHILD";

fn shared_data() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var_os("CXR_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/data"));
    let dir = if dir.is_absolute() {
        dir
    } else {
        root.join(dir)
    };
    dir.join("shenzhen-montgomery-lung-masks")
        .is_dir()
        .then_some(dir)
}

/// The manifest of the inputs folder: every file in it, good or bad, one row each.
fn manifest_of(inputs: &Path) -> Manifest {
    let mut files: Vec<PathBuf> = std::fs::read_dir(inputs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    Manifest::new(
        files
            .iter()
            .enumerate()
            .map(|(i, p)| ManifestRecord {
                id: format!("img{i:03}"),
                source: SourceId::try_from("nih".to_string()).unwrap(),
                label: Label::Pneumonia,
                patient: format!("p{i}"),
                view: "PA".into(),
                path: p.clone(),
                format: ImageFormat::Png,
                sha256: cxr_core::fsutil::sha256_bytes(&std::fs::read(p).unwrap()),
                split: None,
                extra: Default::default(),
            })
            .collect(),
    )
}

fn run(inputs: &Path, out: &Path) {
    let config = cxr_preprocess::PreprocessConfig {
        size: 128,
        ..Default::default()
    };
    let options = cxr_preprocess::BatchOptions {
        augment: true,
        verify_hash: false,
        shard: None,
    };
    cxr_preprocess::run_batch(
        &manifest_of(inputs),
        out,
        &config,
        &options,
        cxr_ingest::read_image,
        &|_| {},
    )
    .unwrap();
}

/// Every output file except the timing summary, by relative path, with its bytes.
fn outputs(out: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, base: &Path, acc: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, base, acc);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().to_string();
                if rel != "summary.json" {
                    acc.push((rel, std::fs::read(&p).unwrap()));
                }
            }
        }
    }
    let mut acc = Vec::new();
    walk(out, out, &mut acc);
    acc.sort();
    acc
}

/// A temporary file a killed write left behind: `cxr_core::fsutil` names them `.<name>.tmp-<pid>-<host hash>-<n>`.
fn is_temporary(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.starts_with('.') && name.contains(".tmp-")
}

#[test]
fn killed_preprocessing_resumes_to_identical_outputs() {
    if let Some(args) = std::env::var_os(CHILD_ENV) {
        // Child mode: `<inputs>\n<out>`.
        let args = args.to_string_lossy().to_string();
        let (inputs, out) = args.split_once('\n').unwrap();
        run(Path::new(inputs), Path::new(out));
        return;
    }
    let Some(data) = shared_data() else {
        println!("skipped: kill_resume: no shared data (set CXR_SHARED_DATA)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    let cxr = data.join("shenzhen-montgomery-lung-masks/cxr_256");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&cxr)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names.iter().take(40) {
        std::fs::copy(p, inputs.join(p.file_name().unwrap())).unwrap();
    }
    // One bad file, so rejects.csv is part of what must come out the same.
    std::fs::write(
        inputs.join("zz-truncated.png"),
        &std::fs::read(&names[0]).unwrap()[..300],
    )
    .unwrap();

    let reference = dir.path().join("reference");
    run(&inputs, &reference);
    let want = outputs(&reference);
    assert!(
        want.len() > 40 * 10,
        "augmented PNGs expected, got {}",
        want.len()
    );

    let out = dir.path().join("killed");
    let exe = std::env::current_exe().unwrap();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut killed = 0;
    for _ in 0..5 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let delay = Duration::from_millis(40 + state % 400);
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "killed_preprocessing_resumes_to_identical_outputs",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_ENV,
                format!("{}\n{}", inputs.display(), out.display()),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL on Unix
            killed += 1;
        }
        child.wait().unwrap();
    }
    println!("kill_resume: {killed} of 5 children killed mid-run");
    // The last run finishes what the killed ones left; stray temporary files must not be taken for outputs.
    run(&inputs, &out);
    let got: Vec<(String, Vec<u8>)> = outputs(&out)
        .into_iter()
        .filter(|(rel, _)| !is_temporary(rel))
        .collect();
    assert_eq!(got.len(), want.len(), "number of output files");
    for ((ra, ba), (rb, bb)) in got.iter().zip(&want) {
        assert_eq!(ra, rb);
        if ra.ends_with("manifest.csv") || ra.ends_with("rejects.csv") {
            // Absolute input paths are the same folder in both runs; output paths are relative.
            assert_eq!(
                String::from_utf8_lossy(ba),
                String::from_utf8_lossy(bb),
                "{ra}"
            );
        } else {
            assert!(ba == bb, "{ra} differs after kill and resume");
        }
    }
}
