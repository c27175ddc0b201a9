//! Sharded stages: three shards of `preprocess`, `segment predict` and `embed`, run as three concurrent
//! processes into one folder, then `cargo xtask manifest merge`, equal the unsharded run byte for byte
//! (manifest, rejects, features and every output image). One shard takes its index from the `--shard` flag,
//! one from a Slurm array's environment, one from a Kubernetes Indexed Job's. Then merge must refuse a
//! missing part, a part made from another input manifest, a part of a run with another `--size`, a part cut
//! inside its last field and one with a flipped label.
//!
//! The children are this test binary re-executed (`CHILD_ENV` holds the xtask arguments), so the xtask
//! binary need not be built.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cxr_core::{Manifest, ManifestRecord};

const CHILD_ENV: &str = "CXR_SHARD_TEST_CHILD";
const TEST_NAME: &str = "three_concurrent_shards_merge_to_the_unsharded_outputs";
const CLUSTER_VARS: [&str; 7] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
    "SLURM_ARRAY_TASK_COUNT",
    "JOB_COMPLETION_INDEX",
    "CXR_SHARD_COUNT",
];

fn xtask(args: &[&str]) {
    let mut v = vec!["xtask"];
    v.extend_from_slice(args);
    xtask::run(v).unwrap_or_else(|e| panic!("xtask {args:?}: {e:#}"));
}

fn xtask_err(args: &[&str]) -> String {
    let mut v = vec!["xtask"];
    v.extend_from_slice(args);
    match xtask::run(v) {
        Ok(()) => panic!("xtask {args:?} should have failed"),
        Err(e) => format!("{e:#}"),
    }
}

/// Shard `k` of 3 as a child process: `how` = "flag", "slurm" (an array 1-3, so not 0-based) or "k8s".
fn spawn_shard(args: &[&str], k: u32, how: &str) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"]);
    for v in CLUSTER_VARS {
        cmd.env_remove(v);
    }
    let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    match how {
        "flag" => a.extend(["--shard".to_string(), format!("{k}/3")]),
        "slurm" => {
            cmd.env("SLURM_ARRAY_TASK_ID", (k + 1).to_string())
                .env("SLURM_ARRAY_TASK_MIN", "1")
                .env("SLURM_ARRAY_TASK_MAX", "3")
                .env("SLURM_ARRAY_TASK_COUNT", "3");
        }
        _ => {
            cmd.env("JOB_COMPLETION_INDEX", k.to_string())
                .env("CXR_SHARD_COUNT", "3");
        }
    }
    // One rayon thread per child: three children share the machine.
    cmd.env(CHILD_ENV, a.join("\u{1f}"))
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

/// Runs the three shards concurrently (flag, Slurm, Kubernetes) and checks each succeeded and logged its
/// source.
fn run_three(args: &[&str]) {
    let children: Vec<(u32, &str, Child)> = [(0, "flag"), (1, "slurm"), (2, "k8s")]
        .into_iter()
        .map(|(k, how)| (k, how, spawn_shard(args, k, how)))
        .collect();
    for (k, how, child) in children {
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "shard {k} ({how}) of {args:?}:\n{text}"
        );
        let want = match how {
            "flag" => "--shard flag",
            "slurm" => "Slurm array",
            _ => "Kubernetes Indexed Job",
        };
        assert!(
            text.contains(&format!("shard {k}/3")) && text.contains(want),
            "shard {k} ({how}) does not log where its shard came from:\n{text}"
        );
    }
}

/// Every file under `dir`, by relative path, except the parts, their sidecars, `summary.json` (timings) and
/// the training outputs.
fn outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(d: &Path, base: &Path, acc: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, base, acc);
                continue;
            }
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains(".part-") || name == "summary.json" || name.starts_with('.') {
                continue;
            }
            acc.push((rel, std::fs::read(&p).unwrap()));
        }
    }
    let mut acc = Vec::new();
    walk(dir, dir, &mut acc);
    acc.sort();
    acc
}

fn assert_same_outputs(whole: &Path, merged: &Path, at_least: usize, what: &str) {
    let (a, b) = (outputs(whole), outputs(merged));
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "{what}: the same files");
    assert!(a.len() >= at_least, "{what}: {} files", a.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            x == y,
            "{what}: {name} differs between the unsharded and the merged run"
        );
    }
}

/// A manifest of a synthetic world (four of its datasets, through their ingest adapters) plus one truncated
/// file, so that rejects are part of the comparison, and one file listed twice.
/// Copies `manifest.part-1-of-3.{csv,json}` from `from` into `to`.
fn take_part_1(from: &Path, to: &Path) {
    for ext in ["csv", "json"] {
        let name = format!("manifest.part-1-of-3.{ext}");
        std::fs::copy(from.join(&name), to.join(&name)).unwrap();
    }
}

/// `manifest merge dir` fails naming `manifest.part-1-of-3.csv`, with `why` in the message.
fn merge_refuses_part_1(dir: &Path, why: &str) {
    let msg = xtask_err(&["manifest", "merge", dir.to_str().unwrap()]);
    assert!(
        msg.contains("manifest.part-1-of-3.csv") && msg.contains(why),
        "{msg}"
    );
}

/// Shard 1 of 3 of an augmented preprocess run of `manifest` into `out` at `size` px.
fn preprocess_shard_1(manifest: &Path, out: &Path, size: &str) {
    let (m, o) = (manifest.to_str().unwrap(), out.to_str().unwrap());
    let args = ["preprocess", "--manifest", m, "--out", o, "--size", size];
    let mut v = args.to_vec();
    v.extend(["--augment", "--shard", "1/3"]);
    xtask(&v);
}

fn world_manifest(dir: &Path) -> PathBuf {
    let world = dir.join("world");
    let w = world.to_str().unwrap();
    xtask(&[
        "synth",
        "--out",
        w,
        "--per-source",
        "6",
        "--size",
        "96",
        "--lung-masks",
        "16",
    ]);
    let mut records: Vec<ManifestRecord> = Vec::new();
    let mut extra: Vec<String> = Vec::new();
    for (name, folder) in [
        ("bimcv", "BIMCV-COVID19+"),
        ("nih", "ChestX-ray14"),
        ("padchest", "PadChest"),
        ("v2-cov19-nii", "V2-COV19-NII"),
    ] {
        let out = dir.join(format!("ingest-{name}.csv"));
        xtask(&[
            "manifest",
            "--dataset",
            name,
            "--root",
            world.join(folder).to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let m = Manifest::read(&out).unwrap();
        for c in &m.extra_columns {
            if !extra.contains(c) {
                extra.push(c.clone());
            }
        }
        for mut r in m.records.clone() {
            r.path = m.resolve(&r);
            records.push(r);
        }
    }
    let mut bad = records[0].clone();
    bad.id = "truncated-file".into();
    let bad_path = dir.join("truncated.dcm");
    let bytes = std::fs::read(&records[0].path).unwrap();
    std::fs::write(&bad_path, &bytes[..bytes.len().min(400)]).unwrap();
    bad.path = bad_path;
    bad.sha256 = String::new();
    records.push(bad);
    // The same file under another id: one cache entry that two shards may write at the same time.
    let mut twin = records[1].clone();
    twin.id = "duplicate-file".into();
    records.push(twin);
    let mut m = Manifest::new(records);
    m.extra_columns = extra;
    let path = dir.join("input.csv");
    m.write(&path).unwrap();
    path
}

#[test]
fn three_concurrent_shards_merge_to_the_unsharded_outputs() {
    if let Some(args) = std::env::var_os(CHILD_ENV) {
        let args = args.to_string_lossy().into_owned();
        xtask(&args.split('\u{1f}').collect::<Vec<_>>());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = world_manifest(d);
    let inp = input.to_str().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // Preprocess, with augmentation: the ten rows of an image stay in its shard.
    let (pre_whole, pre_shards) = (d.join("pre-whole"), d.join("pre-shards"));
    let pre = |out: &Path| {
        vec![
            "preprocess".to_string(),
            "--manifest".into(),
            inp.into(),
            "--out".into(),
            s(out),
            "--size".into(),
            "64".into(),
            "--augment".into(),
        ]
    };
    xtask(
        &pre(&pre_whole)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    run_three(
        &pre(&pre_shards)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        !pre_shards.join("manifest.csv").exists(),
        "no shard may write manifest.csv"
    );
    xtask(&["manifest", "merge", &s(&pre_shards)]);
    assert_same_outputs(&pre_whole, &pre_shards, 24 * 10, "preprocess");
    let rejects = std::fs::read_to_string(pre_whole.join("rejects.csv")).unwrap();
    assert!(rejects.contains("truncated-file"), "{rejects}");

    // Merge refuses a missing part, and a part made from another input manifest.
    let broken = d.join("pre-broken");
    std::fs::create_dir_all(&broken).unwrap();
    for e in std::fs::read_dir(&pre_shards).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() && p.to_string_lossy().contains(".part-") {
            std::fs::copy(&p, broken.join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::remove_file(broken.join("manifest.part-1-of-3.csv")).unwrap();
    let msg = xtask_err(&["manifest", "merge", &s(&broken)]);
    assert!(
        msg.contains("missing part(s) manifest.part-1-of-3.csv"),
        "{msg}"
    );
    let mut other = Manifest::read(&input).unwrap();
    other.records.truncate(10);
    let other_path = d.join("other.csv");
    other.write(&other_path).unwrap();
    let other_out = d.join("pre-other");
    preprocess_shard_1(&other_path, &other_out, "64");
    take_part_1(&other_out, &broken);
    merge_refuses_part_1(&broken, "another input manifest");
    // A part of the same input from a run with another --size: its sidecar's config hash differs.
    let size_out = d.join("pre-size48");
    preprocess_shard_1(&input, &size_out, "48");
    take_part_1(&size_out, &broken);
    merge_refuses_part_1(&broken, "another config");
    // The right part back, then one cut inside its last field and one with a flipped label: same row
    // counts, refused by the content hash in their sidecars.
    take_part_1(&pre_shards, &broken);
    let part = broken.join("manifest.part-1-of-3.csv");
    let good = std::fs::read(&part).unwrap();
    std::fs::write(&part, &good[..good.len() - 2]).unwrap();
    merge_refuses_part_1(&broken, "differ from the sha256");
    let text = String::from_utf8(good.clone()).unwrap();
    let flipped = if text.contains(",covid,") {
        text.replacen(",covid,", ",pneumonia,", 1)
    } else {
        text.replacen(",pneumonia,", ",covid,", 1)
    };
    assert_ne!(flipped, text);
    std::fs::write(&part, flipped).unwrap();
    merge_refuses_part_1(&broken, "differ from the sha256");
    assert!(!broken.join("manifest.csv").exists());

    // Segment predict on the (identical) preprocessed manifest, into sibling folders so relative paths match.
    let weights = d.join("unet.safetensors");
    xtask(&[
        "segment",
        "train",
        "--data",
        &s(&d.join("world")),
        "--out",
        &s(&weights),
        "--preset",
        "quick",
        "--base",
        "4",
        "--size",
        "32",
        "--epochs",
        "1",
    ]);
    let pre_manifest = s(&pre_whole.join("manifest.csv"));
    let (seg_whole, seg_shards) = (d.join("seg-whole"), d.join("seg-shards"));
    let seg = |out: &Path| {
        vec![
            "segment".to_string(),
            "predict".into(),
            "--weights".into(),
            s(&weights),
            "--input".into(),
            pre_manifest.clone(),
            "--out".into(),
            s(out),
        ]
    };
    xtask(
        &seg(&seg_whole)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    run_three(
        &seg(&seg_shards)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    xtask(&["manifest", "merge", &s(&seg_shards)]);
    assert_same_outputs(&seg_whole, &seg_shards, 24 * 10, "segment predict");

    // Embed (a tiny ResNet on the png8 column: every row has one).
    let (emb_whole, emb_shards) = (d.join("emb-whole"), d.join("emb-shards"));
    let emb = |out: &Path| {
        vec![
            "embed".to_string(),
            "--backbone".into(),
            "resnet:1,1,1,1:4".into(),
            "--input".into(),
            s(&seg_whole.join("manifest.csv")),
            "--column".into(),
            "png8".into(),
            "--image-size".into(),
            "32".into(),
            "--batch-size".into(),
            "4".into(),
            "--out".into(),
            s(&out.join("features.csv")),
        ]
    };
    xtask(
        &emb(&emb_whole)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    run_three(
        &emb(&emb_shards)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    xtask(&["manifest", "merge", &s(&emb_shards)]);
    assert_same_outputs(&emb_whole, &emb_shards, 1, "embed");
    let features = std::fs::read_to_string(emb_whole.join("features.csv")).unwrap();
    assert!(
        features.lines().count() > 24 * 10,
        "{} feature rows",
        features.lines().count()
    );
}
