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

mod common;
use common::shared_data;

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
    for sub in [
        "dicom-edge-cases",
        "dicom-edge-cases/dicomdirtests-CR",
        "chest-dicom",
    ] {
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
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            return;
        }
        Err(e) => {
            println!(
                "skipped: no Python at {} ({e}); set CXR_PYTHON",
                python().display()
            );
            return;
        }
    }
    let index: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("index.json")).unwrap())
            .unwrap();
    assert_eq!(index.len(), files.len());
    let mut syntaxes = std::collections::BTreeMap::<String, usize>::new();
    for (file, e) in files.iter().zip(&index) {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let ours = read_image(file);
        let Some(pixels) = e["pixels"].as_str() else {
            // pydicom refuses it: so must we, with a one-line error naming the file.
            let err = ours.expect_err(&format!(
                "{name}: pydicom fails ({}) but we decode it",
                e["error"]
            ));
            let msg = err.to_string();
            assert!(msg.contains(&name) && !msg.contains('\n'), "{msg}");
            println!("{name}: both fail; ours: {msg}");
            continue;
        };
        let ts = e["transfer_syntax"].as_str().unwrap().to_string();
        if let Some(same) = e["charls_identical"].as_bool() {
            // pydicom's JPEG-LS goes through libjpeg; CharLS (pyjpegls) must agree, so we match both.
            assert!(same, "{name}: libjpeg and CharLS disagree");
        }
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

fn read_u16(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as f32)
        .collect()
}

fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

/// The committed fixtures (synthetic images; expected arrays decoded by pydicom + libjpeg / CharLS when they
/// were made): no Python or shared data needed.
#[test]
fn codec_fixtures_decode_as_libjpeg_and_charls() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/codec");
    let index: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let mut decoded = std::collections::BTreeSet::new();
    let mut failed = 0;
    for e in &index {
        let name = e["file"].as_str().unwrap();
        let result = read_image(&dir.join(name));
        if let Some(want) = e["error"].as_str() {
            let err = result.expect_err(&format!("{name} must fail"));
            let msg = err.to_string();
            assert!(
                msg.contains(name) && msg.contains(want) && !msg.contains('\n'),
                "{name}: {msg}"
            );
            assert!(
                !matches!(err, IngestError::Panic { .. }),
                "{name}: decoder panicked: {msg}"
            );
            println!("{name}: fails as it must: {msg}");
            failed += 1;
            continue;
        }
        let img = result.unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(
            (img.height as u64, img.width as u64),
            (e["rows"].as_u64().unwrap(), e["cols"].as_u64().unwrap()),
            "{name}"
        );
        let expected = read_u16(&dir.join(e["expected"].as_str().unwrap()));
        let worst = largest_difference(&img.pixels, &expected);
        let tol = e["tolerance"].as_f64().unwrap() as f32;
        assert!(
            worst <= tol,
            "{name}: largest difference from pydicom {worst} > {tol}"
        );
        if let Some(original) = e["original"].as_str() {
            // Near-lossless: within NEAR of the image before encoding, as the standard promises.
            let near = e["near"].as_f64().unwrap() as f32;
            let err = largest_difference(&img.pixels, &read_u16(&dir.join(original)));
            assert!(
                err <= near && err > 0.0,
                "{name}: error {err} vs NEAR {near}"
            );
        }
        println!("{name}: largest difference from pydicom {worst}");
        decoded.insert(e["transfer_syntax"].as_str().unwrap().to_string());
    }
    assert_eq!(decoded.len(), 3, "{decoded:?}");
    assert_eq!(failed, 2);
}

/// Corrupting the 12-bit JPEG or JPEG-LS stream anywhere gives an image or a clean error, never a panic or a
/// hang.
#[test]
fn corrupt_jpeg12_and_jpegls_streams_never_panic() {
    for name in ["jpeg12_restart.dcm", "jls_near3.dcm"] {
        corrupt_never_panics(name);
    }
}

fn corrupt_never_panics(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/codec")
        .join(name);
    let bytes = std::fs::read(&path).unwrap();
    let start = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xD8])
        .expect("SOI in the fixture");
    let dir = tempfile::tempdir().unwrap();
    let (mut ok, mut errors) = (0, 0);
    for (i, at) in (start..bytes.len()).step_by(7).enumerate() {
        let mut b = bytes.clone();
        b[at] ^= if i % 2 == 0 { 0x55 } else { 0xFF };
        let p = dir.path().join("corrupt.dcm");
        std::fs::write(&p, &b).unwrap();
        match read_image(&p) {
            Ok(_) => ok += 1,
            Err(IngestError::Panic { message, .. }) => {
                panic!("{name}, byte {at}: decoder panicked: {message}")
            }
            Err(e) => {
                assert!(e.to_string().contains("corrupt.dcm"), "{e}");
                errors += 1;
            }
        }
    }
    println!("{name}: {ok} corrupt streams decoded to some image, {errors} refused cleanly");
    assert!(errors > 0);
}

/// A JPEG-LS stream with 0xFF fill bytes before EOI (ITU-T T.81 B.1.1.2, kept by T.87; a real CR writes one)
/// decodes to the same pixels as the stream without them: the committed fixture rewritten with fill bytes
/// in its fragment. With `$CXR_PYTHON` + pydicom/pyjpegls, the rewritten file is also decoded by pydicom
/// (libjpeg and CharLS) and must match; without them the comparison prints `skipped:`.
#[test]
fn jpegls_with_fill_bytes_before_eoi_decodes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/codec");
    let bytes = std::fs::read(dir.join("jls_lossless8.dcm")).unwrap();
    // The fragment item (FFFE,E000) whose data starts with SOI.
    let item = bytes
        .windows(10)
        .position(|w| w[..4] == [0xFE, 0xFF, 0x00, 0xE0] && w[8..] == [0xFF, 0xD8])
        .expect("a JPEG-LS fragment in the fixture");
    let len = u32::from_le_bytes(bytes[item + 4..item + 8].try_into().unwrap()) as usize;
    let data = item + 8;
    let eoi = data
        + bytes[data..data + len]
            .windows(2)
            .rposition(|w| w == [0xFF, 0xD9])
            .expect("EOI in the fragment");
    let fill = [0xFF, 0xFF];
    let mut filled = bytes[..eoi].to_vec();
    filled.extend_from_slice(&fill);
    filled.extend_from_slice(&bytes[eoi..]);
    filled[item + 4..item + 8].copy_from_slice(&((len + fill.len()) as u32).to_le_bytes());
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("jls_fill_before_eoi.dcm");
    std::fs::write(&path, &filled).unwrap();

    let img = read_image(&path).unwrap_or_else(|e| panic!("{e}"));
    let expected = read_u16(&dir.join("jls_lossless8.expected.u16"));
    assert_eq!(img.pixels.len(), expected.len());
    assert_eq!(largest_difference(&img.pixels, &expected), 0.0);
    let plain = read_image(&dir.join("jls_lossless8.dcm")).unwrap();
    assert_eq!(img.pixels, plain.pixels);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/codec_reference.py");
    let out = tmp.path().join("ref");
    std::fs::create_dir_all(&out).unwrap();
    match Command::new(python())
        .arg(&script)
        .arg(&out)
        .arg(&path)
        .output()
    {
        Ok(o) if o.status.success() => {
            let index: Vec<serde_json::Value> =
                serde_json::from_str(&std::fs::read_to_string(out.join("index.json")).unwrap())
                    .unwrap();
            let e = &index[0];
            let pixels = e["pixels"]
                .as_str()
                .unwrap_or_else(|| panic!("pydicom refuses the fill bytes: {}", e["error"]));
            if let Some(same) = e["charls_identical"].as_bool() {
                assert!(same, "libjpeg and CharLS disagree on the fill-byte stream");
            }
            assert_eq!(
                largest_difference(&img.pixels, &read_f32(&out.join(pixels))),
                0.0
            );
            println!("fill bytes before EOI: identical to pydicom (libjpeg, CharLS)");
        }
        Ok(o) => println!(
            "skipped: {} could not run the pydicom reference: {}",
            python().display(),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => println!(
            "skipped: no Python at {} ({e}); set CXR_PYTHON",
            python().display()
        ),
    }
}
