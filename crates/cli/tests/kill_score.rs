//! Issue 31: the `cxr` binary itself (cargo builds it for this package's integration tests, with the
//! workspace's features), SIGKILLed mid-`score` and run again, writes an uninterrupted run's bytes.

use std::path::Path;

/// Every file under `dir` but the journal's key (kept on success) and call files, with its bytes.
fn score_outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Issue 31: the real `cxr score` process, SIGKILLed while it scores (after 1, 10 and 25 journaled batches),
/// then run again to the end, writes the bytes of an uninterrupted run, and leaves no temporary file: the
/// journal answers the batches done before the kill, the outputs only appear, whole, at the end.
#[cfg(unix)]
#[test]
fn a_killed_score_process_reruns_to_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut csv = String::from("id,source,label,png8\n");
    // Distinct images, so that every batch is its own journal entry.
    for i in 0..240u32 {
        let data: Vec<u8> = (0..40 * 40u32)
            .map(|k| ((k * (i % 7 + 1) + i * 13) % 251) as u8)
            .collect();
        let name = format!("img{i:03}.png");
        image::GrayImage::from_raw(40, 40, data)
            .unwrap()
            .save(images.join(&name))
            .unwrap();
        let (src, label) = if i % 3 == 0 {
            ("a", "covid")
        } else {
            ("b", "pneumonia")
        };
        csv.push_str(&format!("im{i:03},{src},{label},images/{name}\n"));
        if i == 100 {
            csv.push_str("imbad,a,covid,images/missing.png\n");
        }
    }
    let manifest = dir.path().join("manifest.csv");
    std::fs::write(&manifest, csv).unwrap();
    let exe = env!("CARGO_BIN_EXE_cxr");
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../onnx/tests/fixtures/small_cnn.toml");
    let command = |out: &Path| {
        let mut cmd = std::process::Command::new(exe);
        cmd.args(["score", "--model-spec"])
            .arg(&spec)
            .arg("--manifest")
            .arg(&manifest)
            .arg("--out")
            .arg(out)
            .args(["--batch-size", "2"])
            .env("RAYON_NUM_THREADS", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    };
    let reference = dir.path().join("reference/predictions.csv");
    assert!(command(&reference).status().unwrap().success());
    let want = score_outputs(reference.parent().unwrap());
    let names: Vec<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "predictions.csv",
            "predictions.model.json",
            "predictions.rejects.csv"
        ]
    );

    let out = dir.path().join("killed/predictions.csv");
    let calls = dir.path().join("killed/.predictions.csv.resume/calls");
    let mut killed = 0;
    for k in [1, 10, 25] {
        let mut child = command(&out).spawn().unwrap();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let n = std::fs::read_dir(&calls).map_or(0, |d| d.count());
            if n >= k {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                killed += usize::from(!out.exists());
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    assert!(killed > 0, "no run was killed before it finished");
    assert!(command(&out).status().unwrap().success());
    assert_eq!(score_outputs(out.parent().unwrap()), want);
}
