//! End-to-end: `reproduce` with a relative `--out`, as the README's main command has it (`target/reproduce`),
//! run from the repository root and from another directory. Manifest paths must be relative to the manifest's
//! own folder (or absolute), never to the working directory: a path written relative to the working directory
//! and resolved against the manifest's folder once stopped the README's first command at the training stage.
//!
//! This binary holds one test because it changes the process's working directory (`xtask::run` runs in it).

use std::path::{Path, PathBuf};

fn run_tiny(out: &str) {
    xtask::run([
        "xtask",
        "reproduce",
        "--out",
        out,
        "--per-source",
        "24",
        "--world-size",
        "128",
        "--image-size",
        "64",
        "--resamples",
        "200",
        "--experiment",
        "figure4-split1",
        // The clean-world control runs the same code paths a second time; one world is enough here.
        "--no-control",
    ])
    .unwrap_or_else(|e| {
        panic!(
            "reproduce --out {out} from {:?}: {e:#}",
            std::env::current_dir()
        )
    });
}

/// The run trained and evaluated its model and wrote the report, and every path cell of every manifest it
/// wrote names an existing file when resolved against that manifest's folder.
fn check_outputs(out: &Path) {
    assert!(
        out.join("report.html").is_file(),
        "no report in {}",
        out.display()
    );
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let exp = &results["experiments"][0];
    assert_eq!(exp["spec"]["name"], "figure4-split1", "{exp}");
    let mut manifests = Vec::new();
    collect_manifests(out, &mut manifests);
    assert!(
        manifests
            .iter()
            .any(|m| m.ends_with("experiments/figure4-split1/manifest.csv")),
        "no experiment manifest among {manifests:?}"
    );
    for path in &manifests {
        let m = cxr_core::Manifest::read(path).unwrap();
        for r in &m.records {
            for col in cxr_core::PATH_COLUMNS {
                let cell = r.get(col).unwrap_or_default();
                if cell.is_empty() {
                    continue;
                }
                assert!(
                    m.resolve_cell(&cell).is_file(),
                    "{}: `{col}` = {cell} names no file",
                    path.display()
                );
            }
        }
    }
}

fn collect_manifests(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_manifests(&p, out);
        } else if p.extension().is_some_and(|x| x == "csv") {
            // Manifests are the CSVs with the manifest's required header.
            let head = std::fs::read_to_string(&p).unwrap_or_default();
            if head
                .lines()
                .next()
                .is_some_and(|h| h.starts_with("id,source,label,patient"))
            {
                out.push(p);
            }
        }
    }
}

#[test]
fn reproduce_with_a_relative_out_from_the_repo_root_and_from_elsewhere() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap();
    let before = std::env::current_dir().unwrap();

    // 1. From the repository root, as the README says (under target/, which git ignores).
    std::env::set_current_dir(&repo).unwrap();
    let rel = format!("target/relative-out-test-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&rel);
    run_tiny(&rel);
    check_outputs(&repo.join(&rel));
    std::fs::remove_dir_all(repo.join(&rel)).unwrap();

    // 2. From another directory, with `..` in the path too.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("work")).unwrap();
    std::env::set_current_dir(dir.path().join("work")).unwrap();
    run_tiny("../elsewhere/./out");
    std::env::set_current_dir(&before).unwrap();
    check_outputs(&dir.path().join("elsewhere/out"));
}
