//! Corrupt-input suite, generated at test time from the real files in `$CXR_SHARED_DATA` (never committed):
//! truncations at many offsets, flipped bytes, headers claiming huge or zero dimensions, NaN/Inf voxels in
//! NIfTI, wrong magic, empty files, directories and unreadable paths given as files. Every case must give a
//! clean error naming the file (or, for a harmless flip, a self-consistent image), never an uncaught panic and
//! never a large allocation: a counting global allocator records the largest single request per thread.
//! Then batch preprocessing (cxr-ingest's reader + cxr-preprocess's `run_batch`) over a manifest mixing good
//! and bad files completes, with every bad file in `rejects.csv`.
//!
//! Complements `crates/ingest/tests/robustness.rs` (bombs, lying DICOM lengths, random multi-byte corruption).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use cxr_core::{ImageFormat, Label, Manifest, ManifestRecord, SourceId};
use cxr_ingest::{IngestError, read_image};

/// The system allocator, recording the largest single request made on each thread.
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to `System`; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|c| c.set(c.get().max(layout.size())));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|c| c.set(c.get().max(layout.size())));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|c| c.set(c.get().max(new_size)));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Largest single allocation a corrupt case may make. The source files are small (< 2000 px a side), so a
/// correct reader never needs more; a header-trusting one asks for gigabytes.
const ALLOC_CAP: usize = 64 << 20;

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
    dir.join("dicom-edge-cases").is_dir().then_some(dir)
}

/// Real files of every format the readers take (all small enough to decode hundreds of variants quickly).
const SOURCES: [&str; 9] = [
    "dicom-edge-cases/MR_small.dcm",
    "dicom-edge-cases/MR_small_bigendian.dcm",
    "dicom-edge-cases/MR_small_jp2klossless.dcm",
    "dicom-edge-cases/dicomdirtests-CR/CR1_6154.dcm",
    "nifti/from-real-cxr/RG1_half_mono2_int16_scaled_xyz1.nii",
    "nifti/from-real-cxr/MCUCXR_0001_0_256_uint8_nifti2.nii.gz",
    "nifti/from-real-cxr/RG1_half_mono2_uint16_2d.nii.gz",
    "imlab-lung-masks-demo/1.jpg",
    "imlab-lung-masks-demo/1-mask.png",
];

#[derive(Default, Debug)]
struct Tally {
    decoded: usize,
    errors: usize,
    caught_panics: usize,
}

/// Reads one case; asserts the contract; returns the outcome kind.
fn check(path: &Path, tally: &mut Tally, what: &str) {
    LARGEST.with(|c| c.set(0));
    let result = read_image(path);
    let largest = LARGEST.with(Cell::get);
    assert!(
        largest <= ALLOC_CAP,
        "{what}: {} asked for one allocation of {largest} bytes",
        path.display()
    );
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    match result {
        Ok(img) => {
            assert!(img.width > 0 && img.height > 0, "{what}: zero-size image");
            assert_eq!(
                img.pixels.len(),
                img.width as usize * img.height as usize,
                "{what}"
            );
            tally.decoded += 1;
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&name),
                "{what}: error does not name the file: {msg}"
            );
            if matches!(e, IngestError::Panic { .. }) {
                tally.caught_panics += 1;
            } else {
                tally.errors += 1;
            }
        }
    }
}

fn must_fail(path: &Path, what: &str) -> String {
    LARGEST.with(|c| c.set(0));
    let e = match read_image(path) {
        Ok(img) => panic!(
            "{what}: {} decoded as {}x{}",
            path.display(),
            img.width,
            img.height
        ),
        Err(e) => e,
    };
    let largest = LARGEST.with(Cell::get);
    assert!(
        largest <= ALLOC_CAP,
        "{what}: one allocation of {largest} bytes"
    );
    let msg = e.to_string();
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        msg.contains(&name),
        "{what}: error does not name the file: {msg}"
    );
    assert!(
        !matches!(e, IngestError::Panic { .. }),
        "{what}: the reader panicked: {msg}"
    );
    msg
}

#[test]
fn truncations_and_flipped_bytes_fail_cleanly() {
    let Some(data) = shared_data() else {
        println!("skipped: corrupt_inputs: no shared data (set CXR_SHARED_DATA)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut tally = Tally::default();
    for (n, f) in SOURCES.iter().enumerate() {
        let bytes = std::fs::read(data.join(f)).unwrap();
        let len = bytes.len();
        // Truncations: every header boundary that matters (DICOM preamble, NIfTI-1/-2 header sizes, PNG/JPEG
        // chunk starts) and 24 evenly spaced offsets through the file.
        let mut cuts: Vec<usize> = vec![
            0, 1, 2, 4, 8, 16, 33, 64, 128, 132, 140, 200, 348, 352, 540, 544,
        ];
        cuts.extend((1..24).map(|k| len * k / 24));
        cuts.extend([len.saturating_sub(2), len.saturating_sub(1)]);
        cuts.retain(|&c| c < len);
        cuts.sort_unstable();
        cuts.dedup();
        for c in cuts {
            let p = dir.path().join(format!("trunc{n}-{c}.bin"));
            std::fs::write(&p, &bytes[..c]).unwrap();
            if c == 0 {
                must_fail(&p, "empty file");
            } else {
                check(&p, &mut tally, "truncated");
            }
        }
        // Single flipped bytes through the header region and a few through the data.
        let mut positions: Vec<usize> = (0..len.min(600)).step_by(7).collect();
        positions.extend((1..12).map(|k| len * k / 12));
        for at in positions {
            let mut v = bytes.clone();
            v[at] ^= 0xFF;
            let p = dir.path().join(format!("flip{n}-{at}.bin"));
            std::fs::write(&p, &v).unwrap();
            check(&p, &mut tally, "flipped byte");
        }
    }
    println!("corrupt_inputs: {tally:?}");
    assert!(tally.errors > 0 && tally.decoded > 0);
    // The readers' own code paths never panic; a caught panic comes from a dependency's decoder and is
    // reported by name (counted above), so it must stay the exception.
    assert!(
        tally.caught_panics * 20 <= tally.errors,
        "too many decoder panics: {tally:?}"
    );
}

/// Offset of the value of DICOM element (group, elem) with VR US in an explicit-VR little-endian file.
fn dicom_us(bytes: &[u8], group: u16, elem: u16) -> usize {
    let mut tag = group.to_le_bytes().to_vec();
    tag.extend_from_slice(&elem.to_le_bytes());
    tag.extend_from_slice(b"US");
    let at = bytes
        .windows(6)
        .position(|w| w == tag.as_slice())
        .expect("element present");
    at + 8
}

fn crc32(bytes: &[u8]) -> u32 {
    // Bitwise CRC-32 (PNG chunks); tiny inputs only.
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG with its IHDR width/height replaced (CRC fixed, so only the dimensions are wrong).
fn png_with_size(png: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut v = png.to_vec();
    assert_eq!(&v[12..16], b"IHDR");
    v[16..20].copy_from_slice(&w.to_be_bytes());
    v[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&v[12..29]);
    v[29..33].copy_from_slice(&crc.to_be_bytes());
    v
}

/// A JPEG with its SOF height/width replaced.
fn jpeg_with_size(jpg: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut v = jpg.to_vec();
    let mut i = 2;
    while i + 9 < v.len() {
        assert_eq!(v[i], 0xFF, "marker expected");
        let m = v[i + 1];
        let seg = u16::from_be_bytes([v[i + 2], v[i + 3]]) as usize;
        if (0xC0..=0xCF).contains(&m) && ![0xC4, 0xC8, 0xCC].contains(&m) {
            v[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
            v[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
            return v;
        }
        i += 2 + seg;
    }
    panic!("no SOF marker");
}

#[test]
fn absurd_headers_are_refused_before_allocation() {
    let Some(data) = shared_data() else {
        println!("skipped: corrupt_inputs: no shared data (set CXR_SHARED_DATA)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };

    // DICOM: Rows/Columns (0028,0010)/(0028,0011).
    let dcm = std::fs::read(data.join("dicom-edge-cases/MR_small.dcm")).unwrap();
    let (rows, cols) = (
        dicom_us(&dcm, 0x0028, 0x0010),
        dicom_us(&dcm, 0x0028, 0x0011),
    );
    for (name, r, c) in [
        ("dcm-huge.dcm", 65535u16, 65535u16),
        ("dcm-wide.dcm", 1, 65535),
        ("dcm-zero-rows.dcm", 0, 64),
        ("dcm-zero-both.dcm", 0, 0),
        ("dcm-bigger.dcm", 4000, 4000),
    ] {
        let mut v = dcm.clone();
        v[rows..rows + 2].copy_from_slice(&r.to_le_bytes());
        v[cols..cols + 2].copy_from_slice(&c.to_le_bytes());
        must_fail(&write(name, &v), name);
    }
    // Wrong magic: `DICM` → `DICX` (and the preamble kept) is not a DICOM any more by content.
    let mut v = dcm.clone();
    v[131] = b'X';
    must_fail(&write("dcm-magic.dcm", &v), "dicom wrong magic");

    // NIfTI-1 (little-endian, int16, 1 slice): dim[1], dim[2] at 42, 44; magic at 344.
    let nii = std::fs::read(data.join("nifti/from-real-cxr/RG1_half_mono2_int16_scaled_xyz1.nii"))
        .unwrap();
    assert_eq!(i32::from_le_bytes(nii[0..4].try_into().unwrap()), 348);
    for (name, x, y) in [
        ("nii-huge.nii", 32767i16, 32767i16),
        ("nii-tall.nii", 1, 32767),
        ("nii-zero.nii", 0, 100),
        ("nii-negative.nii", -5, 100),
        ("nii-bigger.nii", 3000, 3000),
    ] {
        let mut v = nii.clone();
        v[42..44].copy_from_slice(&x.to_le_bytes());
        v[44..46].copy_from_slice(&y.to_le_bytes());
        must_fail(&write(name, &v), name);
    }
    let mut v = nii.clone();
    v[344..348].copy_from_slice(b"n+9\0");
    must_fail(&write("nii-magic.nii", &v), "nifti wrong magic");
    let mut v = nii.clone();
    v[0..4].copy_from_slice(&349i32.to_le_bytes());
    must_fail(&write("nii-sizeof.nii", &v), "nifti wrong sizeof_hdr");

    // PNG / JPEG: dimensions in IHDR / SOF.
    let png = std::fs::read(data.join("imlab-lung-masks-demo/1-mask.png")).unwrap();
    for (name, w, h) in [
        ("png-huge.png", 0x7FFF_FFFFu32, 0x7FFF_FFFFu32),
        ("png-wide.png", 1_000_000, 1),
        ("png-zero.png", 0, 512),
        ("png-bigger.png", 6000, 6000),
    ] {
        must_fail(&write(name, &png_with_size(&png, w, h)), name);
    }
    let mut v = png.clone();
    v[1] = b'Q';
    must_fail(&write("png-magic.png", &v), "png wrong magic");
    let jpg = std::fs::read(data.join("imlab-lung-masks-demo/1.jpg")).unwrap();
    for (name, w, h) in [
        ("jpg-huge.jpg", 65535u16, 65535u16),
        ("jpg-zero.jpg", 0, 512),
        ("jpg-zero-h.jpg", 512, 0),
    ] {
        must_fail(&write(name, &jpeg_with_size(&jpg, w, h)), name);
    }
    let mut v = jpg.clone();
    v[1] = 0xD9;
    must_fail(&write("jpg-magic.jpg", &v), "jpeg wrong magic");
}

/// NIfTI-1 float32 built from a real int16 chest NIfTI, with one voxel replaced by `bad`.
fn nifti_f32_with(nii: &[u8], bad: Option<f32>) -> Vec<u8> {
    let vox = f32::from_le_bytes(nii[108..112].try_into().unwrap()) as usize;
    let mut head = nii[..vox].to_vec();
    head[70..72].copy_from_slice(&16i16.to_le_bytes()); // datatype FLOAT32
    head[72..74].copy_from_slice(&32i16.to_le_bytes()); // bitpix
    head[112..116].copy_from_slice(&1f32.to_le_bytes()); // scl_slope
    head[116..120].copy_from_slice(&0f32.to_le_bytes()); // scl_inter
    let mut body: Vec<f32> = nii[vox..]
        .chunks_exact(2)
        .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])))
        .collect();
    if let Some(b) = bad {
        let n = body.len();
        body[n / 2 + 17] = b;
    }
    head.extend(body.iter().flat_map(|v| v.to_le_bytes()));
    head
}

#[test]
fn nan_and_inf_in_nifti_are_refused() {
    let Some(data) = shared_data() else {
        println!("skipped: corrupt_inputs: no shared data (set CXR_SHARED_DATA)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nii = std::fs::read(data.join("nifti/from-real-cxr/RG1_half_mono2_int16_scaled_xyz1.nii"))
        .unwrap();
    // The clean float version decodes, to the int16 values (so the corrupt cases below fail for the NaN).
    let p = dir.path().join("float-ok.nii");
    std::fs::write(&p, nifti_f32_with(&nii, None)).unwrap();
    let ok = read_image(&p).unwrap();
    assert!(ok.pixels.iter().all(|v| v.is_finite()));
    for (name, bad) in [
        ("float-nan.nii", f32::NAN),
        ("float-inf.nii", f32::INFINITY),
        ("float-neginf.nii", f32::NEG_INFINITY),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, nifti_f32_with(&nii, Some(bad))).unwrap();
        let msg = must_fail(&p, name);
        assert!(msg.contains("non-finite"), "{msg}");
    }
    // A scale that overflows f32 turns finite stored values into infinities.
    let mut v = nii.clone();
    v[112..116].copy_from_slice(&f32::MAX.to_le_bytes());
    let p = dir.path().join("overflow-slope.nii");
    std::fs::write(&p, &v).unwrap();
    must_fail(&p, "overflowing scl_slope");
}

#[test]
fn non_files_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("a-directory.dcm");
    std::fs::create_dir(&d).unwrap();
    must_fail(&d, "directory");
    must_fail(&dir.path().join("missing.png"), "missing file");
    let f = dir.path().join("plain-file");
    std::fs::write(&f, b"x").unwrap();
    must_fail(&f.join("child.nii"), "path through a file");
    #[cfg(unix)]
    {
        let link = dir.path().join("dangling.dcm");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        must_fail(&link, "dangling symlink");
        let looped = dir.path().join("loop.dcm");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        must_fail(&looped, "symlink loop");
        use std::os::unix::fs::PermissionsExt;
        let locked = dir.path().join("locked.png");
        std::fs::write(&locked, b"\x89PNG\r\n\x1a\n").unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        // Root reads anything; the case still must fail (8 bytes are no PNG), naming the file.
        must_fail(&locked, "unreadable file");
        let empty = dir.path().join("empty.nii.gz");
        std::fs::write(&empty, b"").unwrap();
        must_fail(&empty, "empty file");
    }
}

#[test]
fn batch_over_good_and_bad_files_rejects_every_bad_one() {
    let Some(data) = shared_data() else {
        println!("skipped: corrupt_inputs: no shared data (set CXR_SHARED_DATA)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    let mut files: Vec<(String, PathBuf, bool)> = Vec::new();
    for (i, f) in SOURCES.iter().enumerate() {
        let bytes = std::fs::read(data.join(f)).unwrap();
        let good = inputs.join(format!(
            "good{i}-{}",
            Path::new(f).file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&good, &bytes).unwrap();
        files.push((format!("good{i}"), good, true));
        // A cut through the data that leaves the header intact (deflated / gzipped files may be cut anywhere).
        let bad = inputs.join(format!("bad{i}-trunc"));
        std::fs::write(&bad, &bytes[..bytes.len() * 2 / 3]).unwrap();
        files.push((format!("bad{i}"), bad, false));
    }
    let empty = inputs.join("empty.dcm");
    std::fs::write(&empty, b"").unwrap();
    files.push(("empty".into(), empty, false));
    let subdir = inputs.join("a-dir.png");
    std::fs::create_dir_all(&subdir).unwrap();
    files.push(("dir".into(), subdir, false));
    files.push(("missing".into(), inputs.join("missing.nii"), false));
    let nii = std::fs::read(data.join("nifti/from-real-cxr/RG1_half_mono2_int16_scaled_xyz1.nii"))
        .unwrap();
    let nan = inputs.join("nan.nii");
    std::fs::write(&nan, nifti_f32_with(&nii, Some(f32::NAN))).unwrap();
    files.push(("nan".into(), nan, false));

    let records = files
        .iter()
        .map(|(id, path, _)| ManifestRecord {
            id: id.clone(),
            source: SourceId::try_from("cohen:test".to_string()).unwrap(),
            label: Label::Covid,
            patient: format!("p-{id}"),
            view: "PA".into(),
            path: path.clone(),
            format: ImageFormat::Dicom,
            sha256: cxr_core::fsutil::sha256_bytes(id.as_bytes()),
            split: None,
            extra: Default::default(),
        })
        .collect();
    let manifest = Manifest::new(records);
    let out = dir.path().join("out");
    let config = cxr_preprocess::PreprocessConfig {
        size: 64,
        ..Default::default()
    };
    let summary = cxr_preprocess::batch::run_batch(
        &manifest,
        &out,
        &config,
        &Default::default(),
        read_image,
        &|_| {},
    )
    .unwrap();
    let rejects = std::fs::read_to_string(out.join("rejects.csv")).unwrap();
    let written = Manifest::read(&out.join("manifest.csv")).unwrap();
    let kept: Vec<&str> = written.records.iter().map(|r| r.id.as_str()).collect();
    // Every cut is through the pixel data (or the compressed stream), so each bad file must be refused.
    for (id, path, good) in &files {
        let listed = rejects.lines().any(|l| l.starts_with(&format!("{id},")));
        if *good {
            assert!(
                kept.contains(&id.as_str()),
                "{id} ({}) not processed; rejects:\n{rejects}",
                path.display()
            );
            assert!(!listed);
        } else {
            assert!(
                listed,
                "{id} ({}) not in rejects.csv:\n{rejects}",
                path.display()
            );
            assert!(!kept.contains(&id.as_str()));
        }
    }
    let bad = files.iter().filter(|f| !f.2).count();
    assert_eq!(summary.rejected, bad);
    assert_eq!(summary.total, files.len());
    println!("batch: {} kept, {} rejected", kept.len(), summary.rejected);
}
