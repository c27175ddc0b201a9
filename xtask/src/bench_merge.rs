//! `cargo xtask bench merge`: what sharding costs.
//!
//! 1. `manifest merge` on a generated manifest of `--rows` rows split into `--parts` parts (and on one of
//!    1,000 rows, to show that memory does not grow with the rows): wall time, rows/s and the merge process's
//!    peak RSS (VmHWM, printed by the merge itself; it runs as a child so the generator's memory does not
//!    count).
//! 2. Per-shard overhead: `preprocess` of `--images` generated PNGs as one process, against three shard
//!    processes run one after the other plus the merge (each shard starts a process, reads and filters the
//!    whole input manifest): total time ratio; and the fixed cost of one shard over the `--rows` manifest.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use cxr_core::shard::{PartMeta, write_part_meta};
use cxr_core::{Grey8, ImageFormat, Label, Manifest, ManifestRecord, Shard, SourceId};
use rand::{Rng, SeedableRng};

/// Arguments of `cargo xtask bench merge`.
#[derive(Debug, Args)]
pub struct BenchMergeArgs {
    /// Rows of the generated manifest to merge.
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Parts it is split into.
    #[arg(long, default_value_t = 8)]
    parts: u32,
    /// Images for the per-shard overhead (0: skip it).
    #[arg(long, default_value_t = 300)]
    images: usize,
    /// Side of the generated images (preprocessed to half of it).
    #[arg(long, default_value_t = 512)]
    image_side: u32,
}

fn exe() -> Result<PathBuf> {
    std::env::current_exe().context("bench merge: locating the xtask binary")
}

/// Runs xtask as a child; returns (seconds, stdout).
fn child(args: &[&str]) -> Result<(f64, String)> {
    let t = Instant::now();
    let out = Command::new(exe()?)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .with_context(|| format!("running xtask {args:?}"))?;
    let s = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "xtask {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok((s, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn record(i: usize, source: &SourceId, path: PathBuf) -> ManifestRecord {
    ManifestRecord {
        id: format!("img-{i:07}"),
        source: source.clone(),
        label: if i.is_multiple_of(2) {
            Label::Covid
        } else {
            Label::Pneumonia
        },
        patient: format!("pat-{:016x}", i / 3),
        view: "PA".into(),
        path,
        format: ImageFormat::Png,
        sha256: String::new(),
        split: None,
        extra: Default::default(),
    }
}

/// Writes `rows` rows, their parts and sidecars into `dir`; returns the merge's (seconds, peak RSS KiB).
fn merge_case(dir: &Path, rows: usize, parts: u32) -> Result<(f64, u64)> {
    let source = SourceId::new(SourceId::NIH)?;
    let records: Vec<ManifestRecord> = (0..rows)
        .map(|i| {
            let mut r = record(i, &source, format!("images/{i:07}.png").into());
            r.sha256 = format!("{i:064x}");
            r.set("png8", format!("png8/{:02x}/{i:062x}.png", i % 256));
            r.set("pre_window", "40/400");
            r
        })
        .collect();
    let input = dir.join("input.csv");
    Manifest::new(records.clone()).write(&input)?;
    let sha = cxr_core::fsutil::sha256_file(&input)?;
    let out = dir.join("parts");
    let m = Manifest::new(records);
    for k in 0..parts {
        let s = Shard::new(k, parts)?;
        let part = s.part_path(&out.join("manifest.csv"));
        let sub = s.filter(&m);
        sub.write(&part)?;
        write_part_meta(
            &part,
            &PartMeta {
                stage: "bench".into(),
                shard: k,
                count: parts,
                input_manifest: input.clone(),
                input_sha256: sha.clone(),
                config_hash: "bench".into(),
                rows: sub.records.len() as u64,
                part_sha256: String::new(),
                inputs: Default::default(),
            },
        )?;
    }
    drop(m);
    let (secs, stdout) = child(&["manifest", "merge", out.to_str().unwrap_or_default()])?;
    let rss = stdout
        .lines()
        .find_map(|l| {
            l.split("peak RSS ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .context("bench merge: no peak RSS in the merge's output")?;
    let want = Manifest::read(&input)?.to_csv()?;
    let got = std::fs::read(out.join("manifest.csv"))?;
    ensure!(
        got == want,
        "bench merge: the merged manifest differs from the input"
    );
    Ok((secs, rss))
}

pub fn run(args: BenchMergeArgs) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("cxr-bench-merge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = bench(&dir, &args);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench(dir: &Path, args: &BenchMergeArgs) -> Result<()> {
    let small_rows = 1000.min(args.rows);
    let (s_small, rss_small) = merge_case(&dir.join("small"), small_rows, args.parts)?;
    let (s_big, rss_big) = merge_case(&dir.join("big"), args.rows, args.parts)?;
    let mb = std::fs::metadata(dir.join("big/input.csv"))?.len() as f64 / 1e6;
    println!(
        "merge: {} rows ({mb:.1} MB) in {} parts: {s_big:.2} s ({:.0} rows/s, process start included), \
         peak RSS {} KiB; {small_rows} rows: {s_small:.2} s, peak RSS {} KiB",
        args.rows,
        args.parts,
        args.rows as f64 / s_big,
        rss_big,
        rss_small
    );
    // The fixed cost of one shard: start, read and filter the whole input manifest, write empty parts. A
    // shard of 2^20 owns (almost surely) none of the rows; any row it owns is a missing file, i.e. a reject.
    let big = dir.join("big/input.csv");
    let (fixed, _) = child(&[
        "preprocess",
        "--manifest",
        big.to_str().unwrap_or_default(),
        "--out",
        dir.join("fixed").to_str().unwrap_or_default(),
        "--shard",
        &format!("0/{}", cxr_core::shard::MAX_SHARDS),
    ])?;
    println!(
        "fixed cost of one preprocess shard over a {}-row input manifest (process start, parse, assign, \
         empty parts + sidecars): {fixed:.2} s",
        args.rows
    );
    if args.images == 0 {
        return Ok(());
    }

    // Per-shard overhead on preprocess.
    let imgs = dir.join("images");
    std::fs::create_dir_all(&imgs)?;
    let source = SourceId::new(SourceId::NIH)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
    let side = args.image_side;
    let mut records = Vec::new();
    for i in 0..args.images {
        let data: Vec<u8> = (0..side * side)
            .map(|p| ((p % side + p / side) / 5) as u8 ^ rng.random_range(0..32u8))
            .collect();
        let path = imgs.join(format!("{i:05}.png"));
        cxr_core::png8::write_grey8(&path, &Grey8::new(side, side, data)?)?;
        records.push(record(i, &source, path));
    }
    let input = dir.join("images.csv");
    Manifest::new(records).write(&input)?;
    let size = (side / 2).to_string();
    let input_s = input.to_str().unwrap_or_default().to_string();
    let pre = |out: &Path, shard: Option<&str>| -> Result<f64> {
        let out = out.to_str().unwrap_or_default().to_string();
        let mut a = vec![
            "preprocess",
            "--manifest",
            &input_s,
            "--out",
            &out,
            "--size",
            &size,
        ];
        if let Some(s) = shard {
            a.extend(["--shard", s]);
        }
        Ok(child(&a)?.0)
    };
    // Unsharded before and after the shards (the first run also warms the page cache): the faster counts.
    let first = pre(&dir.join("whole0"), None)?;
    let shards_dir = dir.join("shards");
    let mut per = Vec::new();
    for k in 0..3 {
        per.push(pre(&shards_dir, Some(&format!("{k}/3")))?);
    }
    let (merge_s, _) = child(&["manifest", "merge", shards_dir.to_str().unwrap_or_default()])?;
    let second = pre(&dir.join("whole"), None)?;
    let whole = first.min(second);
    let same = std::fs::read(dir.join("whole/manifest.csv"))?
        == std::fs::read(shards_dir.join("manifest.csv"))?;
    ensure!(
        same,
        "bench merge: merged preprocess manifest differs from the unsharded one"
    );
    let sharded: f64 = per.iter().sum::<f64>() + merge_s;
    println!(
        "preprocess of {} images ({side}x{side} -> {size}), {} threads: unsharded {whole:.2} s (runs: {first:.2}, \
         {second:.2}); 3 shards one \
         after the other {:.2} + {:.2} + {:.2} s + merge {merge_s:.2} s = {sharded:.2} s; ratio {:.3} \
         (overhead {:+.1} %)",
        args.images,
        rayon::current_num_threads(),
        per[0],
        per[1],
        per[2],
        sharded / whole,
        (sharded / whole - 1.0) * 100.0
    );
    Ok(())
}
