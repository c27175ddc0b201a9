//! `cargo xtask bench <what>`: speed measurements. Speed goals live here, never in timed tests.
//!
//! Each stage adds a variant with its own module; figures are recorded in `docs/PERFORMANCE.md` with the
//! machine and the command.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Subcommand;
use cxr_core::{ImageFormat, Label, Manifest, ManifestRecord, SourceId};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Convolution/pooling ops: per-layer GFLOP/s (ResNet50, UNet) and whole-network speeds, cxr-ops vs candle's
    /// stock ops vs PyTorch.
    Ops(crate::bench_ops::BenchOpsArgs),
    /// Batch preprocessing (images/s, peak RSS) on real files, ours vs a pydicom + numpy + Pillow pipeline.
    Preprocess(crate::bench_preprocess::BenchArgs),
    /// ResNet50 frozen-backbone embedding (images/s) and Finetune1 training steps/s, ours vs PyTorch.
    Model(crate::bench_model::BenchModelArgs),
    /// Manifest CSV write + parse throughput (rows/s) on a generated manifest.
    Manifest {
        /// Rows in the generated manifest.
        #[arg(long, default_value_t = 100_000)]
        rows: usize,
    },
    /// Sharding costs: `manifest merge` time and peak RSS on a generated manifest split in parts, and
    /// preprocess as three shards against one unsharded run.
    Merge(crate::bench_merge::BenchMergeArgs),
    /// Synthetic world rendering + writing throughput (images/s), paper world.
    Synth {
        /// Images per source (the lung-mask set gets as many).
        #[arg(long, default_value_t = 100)]
        per_source: usize,
        /// Image height in pixels.
        #[arg(long, default_value_t = 512)]
        size: u32,
    },
    /// DICOM decode time per transfer syntax (shared DICOMs + codec fixtures), ours vs pydicom (+pylibjpeg,
    /// pyjpegls, openjpeg) with `$CXR_PYTHON` (default /work/pyvenv/bin/python) in the same run.
    Codecs {
        /// Timed reads of each file (the median is reported).
        #[arg(long, default_value_t = 15)]
        reps: usize,
        /// Side of the generated 12-bit JPEG Extended / JPEG-LS images timed with the real files.
        #[arg(long, default_value_t = 2048)]
        large_side: usize,
    },
    /// ONNX scoring images/s (default: torchvision ResNet18 and ResNet50 default exports, batches 8 and 32),
    /// cxr-onnx on onnxruntime and on tract against onnxruntime from Python in the same run.
    Onnx(crate::bench_onnx::BenchOnnxArgs),
    /// A whole default audit (every test, masks included) of torchvision ResNet18/ResNet50 exports on real
    /// radiographs, per engine, with the audit's own time per step.
    Audit(crate::bench_audit::BenchAuditArgs),
    /// Lung UNet inference (images/s) at 256 px for each width (cxr-segment).
    Segment {
        /// Width multipliers to measure (the CPU default 16, the paper's 64).
        #[arg(long, value_delimiter = ',', default_value = "16,64")]
        bases: Vec<usize>,
        /// Images per width.
        #[arg(long, default_value_t = 16)]
        images: usize,
        #[arg(long, default_value_t = 4)]
        batch: usize,
    },
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Ops(args) => crate::bench_ops::run(args),
        BenchCommand::Preprocess(args) => crate::bench_preprocess::bench(args),
        BenchCommand::Model(args) => crate::bench_model::bench(args),
        BenchCommand::Manifest { rows } => bench_manifest(rows),
        BenchCommand::Merge(args) => crate::bench_merge::run(args),
        BenchCommand::Onnx(args) => crate::bench_onnx::run(args),
        BenchCommand::Audit(args) => crate::bench_audit::run(args),
        BenchCommand::Synth { per_source, size } => crate::bench_stages::synth(per_source, size),
        BenchCommand::Codecs { reps, large_side } => bench_codecs(reps.max(1), large_side),
        BenchCommand::Segment {
            bases,
            images,
            batch,
        } => crate::bench_stages::segment(&bases, images, batch),
    }
}

fn bench_manifest(rows: usize) -> Result<()> {
    let source = SourceId::new(SourceId::NIH)?;
    let records = (0..rows)
        .map(|i| {
            let mut r = ManifestRecord {
                id: format!("img-{i:07}"),
                source: source.clone(),
                label: if i % 2 == 0 {
                    Label::Covid
                } else {
                    Label::Pneumonia
                },
                patient: format!("pat-{:016x}", i / 3),
                view: "PA".into(),
                path: format!("images/{i:07}.png").into(),
                format: ImageFormat::Png,
                sha256: format!("{i:064x}"),
                split: None,
                extra: Default::default(),
            };
            r.set("png8", format!("cache/{i:07}.png"));
            r
        })
        .collect();
    let manifest = Manifest::new(records);
    let dir = tempfile_dir()?;
    let path = dir.join("bench-manifest.csv");
    let t = Instant::now();
    manifest.write(&path)?;
    let write_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let back = Manifest::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let read_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        back.records.len() == rows,
        "read {} rows, wrote {rows}",
        back.records.len()
    );
    println!(
        "manifest: {rows} rows; write {:.0} rows/s; parse {:.0} rows/s",
        rows as f64 / write_s,
        rows as f64 / read_s
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("cxr-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The Transfer Syntax UID of a DICOM file's meta group: element (0002,0010), explicit VR little endian.
fn transfer_syntax(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(4096)];
    let at = head
        .windows(6)
        .position(|w| w == [2, 0, 0x10, 0, b'U', b'I'])?;
    let len = u16::from_le_bytes([*head.get(at + 6)?, *head.get(at + 7)?]) as usize;
    let uid = head.get(at + 8..at + 8 + len)?;
    Some(
        String::from_utf8_lossy(uid)
            .trim_end_matches(['\0', ' '])
            .to_string(),
    )
}

/// `bench codecs`: median read time (parse + decode frame 0) per file, summed per transfer syntax, for
/// `cxr_ingest::read_image` and for pydicom's `dcmread(...).pixel_array` (crates/ingest/tests/codec_reference.py).
fn bench_codecs(reps: usize, large_side: usize) -> Result<()> {
    let shared = crate::shared_data();
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let py = std::env::var_os("CXR_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/work/pyvenv/bin/python".into());
    let out = std::env::temp_dir().join(format!("cxr-bench-codecs-{}", std::process::id()));
    // CR-sized 12-bit JPEG Extended and JPEG-LS files, made by the fixture script (needs pydicom + pyjpegls).
    let large = out.join("large");
    let made = std::process::Command::new(&py)
        .arg(here.join("crates/ingest/tests/fixtures/codec/make_fixtures.py"))
        .arg("--large")
        .arg(&large)
        .arg(large_side.to_string())
        .status();
    if !matches!(made, Ok(s) if s.success()) {
        println!(
            "skipped: no large synthetic files ({} cannot run make_fixtures.py)",
            py.display()
        );
    }
    let mut files = Vec::new();
    for dir in [
        shared.join("dicom-edge-cases"),
        shared.join("chest-dicom"),
        here.join("crates/ingest/tests/fixtures/codec"),
        large,
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            println!("skipped: {} absent", dir.display());
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "dcm") && cxr_ingest::read_image(&p).is_ok() {
                files.push(p);
            }
        }
    }
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no decodable DICOM files found");
    // syntax -> (files, pixels, our seconds, pydicom seconds or NaN, largest difference)
    let mut rows = std::collections::BTreeMap::<String, (usize, u64, f64, f64, f64)>::new();
    let mut ours = Vec::new();
    for p in &files {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        let ts = transfer_syntax(&bytes).unwrap_or_else(|| "?".into());
        let mut times = Vec::with_capacity(reps);
        let mut pixels = 0;
        for _ in 0..reps {
            let t = Instant::now();
            let img = cxr_ingest::read_image(p)?;
            times.push(t.elapsed().as_secs_f64());
            pixels = img.width as u64 * img.height as u64;
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let row = rows.entry(ts.clone()).or_insert((0, 0, 0.0, 0.0, 0.0));
        row.0 += 1;
        row.1 += pixels;
        row.2 += median;
        ours.push(ts);
    }
    let run = std::process::Command::new(&py)
        .arg(here.join("crates/ingest/tests/codec_reference.py"))
        .arg(out.join("ref"))
        .args(["--reps", &reps.to_string()])
        .args(&files)
        .output();
    let python_ok = matches!(&run, Ok(o) if o.status.success());
    let mut charls_ms = std::collections::BTreeMap::<String, f64>::new();
    if python_ok {
        let index: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(out.join("ref/index.json"))?)?;
        for ((ts, e), p) in ours.iter().zip(&index).zip(&files) {
            let secs = e["seconds"].as_f64().unwrap_or(f64::NAN);
            // Largest |ours - pydicom| over the whole array: a speed figure is only worth the same output.
            let diff = match e["pixels"].as_str() {
                Some(f) => {
                    let theirs = std::fs::read(out.join("ref").join(f))?;
                    let img = cxr_ingest::read_image(p)?;
                    theirs
                        .chunks_exact(4)
                        .zip(&img.pixels)
                        .map(|(c, a)| (f32::from_le_bytes([c[0], c[1], c[2], c[3]]) - a).abs())
                        .fold(0.0f32, f32::max) as f64
                }
                None => f64::NAN,
            };
            if let Some(row) = rows.get_mut(ts) {
                row.3 += secs;
                row.4 = row.4.max(diff);
            }
            if let Some(charls) = e["charls_seconds"].as_f64() {
                *charls_ms.entry(ts.clone()).or_default() += charls * 1e3;
            }
        }
    } else {
        println!(
            "pydicom: skipped (cannot run {} with pydicom; set CXR_PYTHON)",
            py.display()
        );
        rows.values_mut().for_each(|r| r.3 = f64::NAN);
    }
    let _ = std::fs::remove_dir_all(&out);
    for (ts, ms) in &charls_ms {
        // pydicom decodes JPEG-LS with pylibjpeg-libjpeg; CharLS (pyjpegls) on the same files, for comparison.
        let ours = rows.get(ts).map_or(f64::NAN, |r| r.2 * 1e3);
        println!(
            "{ts}: pydicom + pyjpegls (CharLS) {ms:.2} ms, CharLS/ours {:.2}",
            ms / ours
        );
    }
    println!(
        "median of {reps} reads per file, summed per transfer syntax (parse + decode of frame 0)"
    );
    println!(
        "| transfer syntax | files | Mpixels | ours ms | pydicom ms | pydicom/ours | max abs diff |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (ts, (n, px, o, p, d)) in &rows {
        println!(
            "| {ts} | {n} | {:.2} | {:.2} | {:.2} | {:.2} | {d} |",
            *px as f64 / 1e6,
            o * 1e3,
            p * 1e3,
            p / o
        );
    }
    Ok(())
}
