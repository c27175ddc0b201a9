//! Every transfer syntax of the shared DICOM files, and the committed codec fixtures, decode to the whole array
//! pydicom (+ pylibjpeg-libjpeg, pyjpegls, Pillow, openjpeg) gives: exact for lossless syntaxes, ±1 for lossy
//! JPEG (IDCT rounding differs between libjpeg and our decoders), within NEAR for near-lossless JPEG-LS.
//!
//! The shared-data test runs `tests/codec_reference.py` with `$CXR_PYTHON` (default `/work/pyvenv/bin/python`) in
//! the same run and prints `skipped:` without Python/pydicom or the data. The fixture test needs neither: its
//! expected arrays are committed (`fixtures/codec/`, made by `fixtures/codec/make_fixtures.py`).

use std::path::{Path, PathBuf};
use std::process::Command;

use cxr_ingest::{IngestError, read_image};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shared_data() -> Option<PathBuf> {
    let root = repo_root();
    let dir = std::env::var("CXR_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("../shared/data"));
    let dir = if dir.is_absolute() {
        dir
    } else {
        root.join(dir)
    };
    dir.is_dir().then_some(dir)
}

fn python() -> PathBuf {
    std::env::var_os("CXR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/pyvenv/bin/python"))
}

/// Largest per-pixel difference allowed against pydicom for a transfer syntax, and why.
fn tolerance(ts: &str, colour: bool) -> f32 {
    match ts {
        // JPEG baseline/extended: IDCT rounding (libjpeg-turbo / libjpeg vs jpeg-decoder / ours). Colour adds the
        // YCbCr->RGB rounding of two decoders before luma, measured at most 2.
        "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" => {
            if colour {
                2.0
            } else {
                1.0
            }
        }
        // Lossy JPEG 2000: openjpeg (C) vs openjp2 (its Rust port), measured identical.
        "1.2.840.10008.1.2.4.91" => 1.0,
        // Everything else is lossless (or native): exact. Near-lossless JPEG-LS (.81) is exact too: the
        // decoder is deterministic, NEAR bounds the error against the *original*, not between decoders.
        _ => 0.0,
    }
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn compressed_or_edge_case_dicoms(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in ["dicom-edge-cases", "chest-dicom"] {
        let Ok(dir) = std::fs::read_dir(root.join(sub)) else {
            continue;
        };
        for entry in dir.flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "dcm") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn shared_dicoms_match_pydicom_whole_array() {
    let Some(root) = shared_data() else {
        println!("skipped: shared data absent");
        return;
    };
    let files = compressed_or_edge_case_dicoms(&root);
    if files.is_empty() {
        println!("skipped: no DICOM files under {}", root.display());
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/codec_reference.py");
    let run = Command::new(python())
        .arg(&script)
        .arg(out.path())
        .args(&files)
        .output();
    match run {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            println!(
                "skipped: {} could not run the pydicom reference: {}",
                python().display(),
                String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
            );
            return;
        }
        Err(e) => {
            println!("skipped: no Python at {} ({e}); set CXR_PYTHON", python().display());
            return;
        }
    }
    let index: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index.len(), files.len());
    let mut syntaxes = std::collections::BTreeMap::<String, usize>::new();
    for (file, e) in files.iter().zip(&index) {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let ours = read_image(file);
        let Some(pixels) = e["pixels"].as_str() else {
            // pydicom refuses it: so must we, with a one-line error naming the file.
            let err = ours.expect_err(&format!("{name}: pydicom fails ({}) but we decode it", e["error"]));
            let msg = err.to_string();
            assert!(msg.contains(&name) && !msg.contains('\n'), "{msg}");
            println!("{name}: both fail; ours: {msg}");
            continue;
        };
        let ts = e["transfer_syntax"].as_str().unwrap().to_string();
        let img = match ours {
            Ok(img) => img,
            // Palette colour is refused on purpose (not a radiograph).
            Err(IngestError::Unsupported { what, .. }) if what.contains("PALETTE") => continue,
            Err(err) => panic!("{name} ({ts}): pydicom decodes it, we fail: {err}"),
        };
        let expected = read_f32(&out.path().join(pixels));
        assert_eq!(
            (img.height as u64, img.width as u64),
            (e["rows"].as_u64().unwrap(), e["cols"].as_u64().unwrap()),
            "{name}: size"
        );
        assert_eq!(expected.len(), img.pixels.len(), "{name}");
        let worst = img
            .pixels
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let differing = img
            .pixels
            .iter()
            .zip(&expected)
            .filter(|(a, b)| (*a - *b).abs() > 1e-3)
            .count();
        let tol = tolerance(&ts, img.meta.converted_from_colour);
        // Luma of RGB is not an integer: allow float rounding on top.
        assert!(
            worst <= tol + 1e-3,
            "{name} ({ts}): largest difference from pydicom {worst} > {tol}"
        );
        println!(
            "{name} ({ts}): {}x{}, largest difference {worst}, {differing} pixels differ",
            img.width, img.height
        );
        *syntaxes.entry(ts).or_default() += 1;
    }
    println!("transfer syntaxes checked: {syntaxes:?}");
    for ts in [
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.50",
    ] {
        assert!(syntaxes.contains_key(ts), "no file of {ts} decoded");
    }
}
