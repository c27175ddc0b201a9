//! `cargo xtask bench preprocess`: batch preprocessing images/s and peak RSS, ours vs pydicom + numpy + Pillow.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use cxr_core::{ImageFormat, Label, Manifest, ManifestRecord, SourceId};
use cxr_preprocess::{BatchOptions, PreprocessConfig, run_batch};

/// Arguments of `cargo xtask bench preprocess`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Real data folder (default `$CXR_SHARED_DATA` or `../shared/data`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Longest side of the outputs.
    #[arg(long, default_value_t = 512)]
    size: u32,
    /// Python interpreter with pydicom, numpy and Pillow (default `$CXR_PYTHON` or `python3`).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Process counts for the Python pipeline, run one after the other (`0`: skip Python).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    python_workers: Vec<usize>,
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_files(&p, out)?;
        } else if let Some(ext) = p.extension().and_then(|e| e.to_str()) {
            if ["dcm", "png", "jpg", "jpeg"].contains(&ext.to_ascii_lowercase().as_str()) {
                out.push(p);
            }
        }
    }
    Ok(())
}

/// CPU seconds (user + system, all threads) this process has used so far, from `/proc/self/stat`.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // Linux reports clock ticks of USER_HZ = 100.
    Some((utime + stime) / 100.0)
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn bench(args: BenchArgs) -> Result<()> {
    let data = args
        .data
        .or_else(|| std::env::var_os("CXR_SHARED_DATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("../shared/data"));
    if !data.join("chest-dicom").is_dir() {
        println!(
            "skipped: bench preprocess: no shared data at {}",
            data.display()
        );
        return Ok(());
    }
    // Real chest X-rays only: the DICOM chest files (RG1/RG3 CRs, SIIM CR, LUT samples), the 16x16 CRs, the
    // NIH/TBX11K test files and the Cohen collection.
    let mut files = Vec::new();
    for sub in [
        "chest-dicom",
        "dicom-edge-cases/dicomdirtests-CR",
        "chest-png",
        "cohen-covid-chestxray/images",
    ] {
        collect_files(&data.join(sub), &mut files)?;
    }
    let dir = std::env::temp_dir().join(format!("cxr-bench-preprocess-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Warm the page cache for both contenders (and keep the file list for Python).
    let mut bytes = 0u64;
    for f in &files {
        bytes += std::fs::read(f)
            .with_context(|| format!("reading {}", f.display()))?
            .len() as u64;
    }
    let abs: Vec<PathBuf> = files
        .iter()
        .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
        .collect();
    let list = dir.join("files.txt");
    std::fs::write(
        &list,
        abs.iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .with_context(|| format!("writing {}", list.display()))?;
    println!(
        "bench preprocess: {} files ({:.0} MB) from {}, longest side {}, {} threads",
        files.len(),
        bytes as f64 / 1e6,
        data.display(),
        args.size,
        rayon::current_num_threads()
    );

    // Ours: batch mode from a manifest, fresh cache, sha256 of every file included.
    let records = abs
        .iter()
        .enumerate()
        .map(|(i, p)| ManifestRecord {
            id: format!("img{i:05}"),
            source: SourceId::new(SourceId::NIH).expect("a known source id"),
            label: Label::Pneumonia,
            patient: format!("p{i}"),
            view: String::new(),
            path: p.clone(),
            format: ImageFormat::Png,
            sha256: String::new(),
            split: None,
            extra: Default::default(),
        })
        .collect();
    let manifest = Manifest::new(records);
    let config = PreprocessConfig {
        size: args.size,
        ..PreprocessConfig::default()
    };
    let rss_before = peak_rss_kib();
    let cpu_before = cpu_seconds();
    let t = Instant::now();
    let s = run_batch(
        &manifest,
        &dir.join("ours"),
        &config,
        &BatchOptions::default(),
        |p: &Path| cxr_ingest::read_image(p),
        &|_| {},
    )
    .context("bench preprocess: our batch run")?;
    let ours_s = t.elapsed().as_secs_f64();
    // Images handled (a duplicate file in the Cohen collection is a cache hit, as it should be).
    let ours_ips = s.rows as f64 / ours_s;
    let ours_rss = peak_rss_kib();
    let ours_cpu = match (cpu_before, cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let ours_cpu_per = ours_cpu / s.rows as f64;
    println!(
        "ours (rust, rayon):      {:4} images in {ours_s:6.2} s = {ours_ips:7.1} images/s, CPU {:.1} ms/image, {} rejected, peak RSS {} MiB (before: {} MiB)",
        s.rows,
        ours_cpu_per * 1e3,
        s.rejected,
        ours_rss.map_or("?".into(), |k| (k / 1024).to_string()),
        rss_before.map_or("?".into(), |k| (k / 1024).to_string()),
    );

    let python = args
        .python
        .or_else(|| std::env::var_os("CXR_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/preprocess/scripts/bench_python.py");
    for workers in args.python_workers.into_iter().filter(|&w| w > 0) {
        let out = dir.join(format!("python{workers}"));
        let output = std::process::Command::new(&python)
            .arg(&script)
            .arg(&list)
            .arg(&out)
            .arg(args.size.to_string())
            .arg(workers.to_string())
            .output()
            .with_context(|| format!("running {} {}", python.display(), script.display()))?;
        if !output.status.success() {
            bail!(
                "{}: the Python pipeline failed: {}",
                script.display(),
                String::from_utf8_lossy(&output.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.lines().last().unwrap_or("");
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}: unexpected output {line:?}", script.display()))?;
        let images = v["images"].as_f64().unwrap_or(0.0);
        let secs = v["seconds"].as_f64().unwrap_or(f64::NAN);
        let ips = images / secs;
        let cpu_per = v["cpu_seconds"].as_f64().unwrap_or(f64::NAN) / images;
        println!(
            "python ({workers} process{}): {:4} images in {secs:6.2} s = {ips:7.1} images/s, CPU {:.1} ms/image, {} failed, peak RSS {} MiB",
            if workers == 1 { ",  " } else { "es" },
            images as u64,
            cpu_per * 1e3,
            v["failed"],
            v["peak_rss_kb"]
                .as_u64()
                .map_or("?".into(), |k| (k / 1024).to_string()),
        );
        println!(
            "  ratio ours/python ({workers}): {:.2}x images/s (wall), {:.2}x CPU per image",
            ours_ips / ips,
            cpu_per / ours_cpu_per
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
