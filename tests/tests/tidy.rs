//! Repository-wide checks that keep docs and code honest (rust-analyzer's "tidy" idea).

use std::path::Path;

use cxr_tests::repo_root;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn crate_dirs() -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(repo_root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_crate_has_a_doc_comment_and_is_on_the_map() {
    let architecture = read(&repo_root().join("docs/ARCHITECTURE.md"));
    let crates_readme = read(&repo_root().join("crates/README.md"));
    let dirs = crate_dirs();
    assert!(dirs.len() >= 1);
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let lib = read(&dir.join("src/lib.rs"));
        assert!(
            lib.trim_start().starts_with("//!"),
            "crates/{name}/src/lib.rs lacks a crate doc comment"
        );
        let package = format!("cxr-{name}");
        assert!(
            read(&dir.join("Cargo.toml")).contains(&format!("name = \"{package}\"")),
            "crates/{name}: package must be {package}"
        );
        assert!(
            architecture.contains(&package),
            "docs/ARCHITECTURE.md does not describe {package}"
        );
        assert!(
            crates_readme.contains(&package),
            "crates/README.md does not describe {package}"
        );
    }
}

#[test]
fn stage_crates_never_depend_on_sibling_stages() {
    let stages = [
        "ingest",
        "preprocess",
        "segment",
        "model",
        "eval",
        "explain",
        "synth",
    ];
    for dir in crate_dirs() {
        let toml = read(&dir.join("Cargo.toml"));
        let deps: String = toml
            .split("\n[")
            .filter(|section| {
                section.starts_with("dependencies")
                    || section.starts_with("dev-dependencies")
                    || section.starts_with("build-dependencies")
            })
            .collect();
        for stage in stages {
            let dep = format!("cxr-{stage}");
            let me = format!("name = \"{dep}\"");
            if !toml.contains(&me) {
                assert!(
                    !deps.contains(&dep),
                    "{} depends on sibling stage {dep}: wire stages in xtask",
                    dir.display()
                );
            }
        }
    }
}

#[test]
fn readme_gives_the_two_commands_and_ci_runs_the_test_one() {
    let readme = read(&repo_root().join("README.md"));
    assert!(
        readme.contains("cargo xtask reproduce"),
        "README lacks the main command"
    );
    let test_command = "cargo test --workspace --release";
    assert!(
        readme.contains(test_command),
        "README lacks the test command"
    );
    let ci = read(&repo_root().join(".ci/run"));
    assert!(
        ci.contains(test_command),
        ".ci/run must run the README's test command"
    );
    assert!(
        !ci.contains("--all-features"),
        ".ci/run must never enable --all-features (cuda needs nvcc)"
    );
}

#[test]
fn every_xtask_command_is_documented() {
    let readme = read(&repo_root().join("README.md"));
    let lib = read(&repo_root().join("xtask/src/lib.rs"));
    // Subcommand variants of the top-level enum, kebab-cased the way clap names them.
    let body = lib
        .split("enum Command {")
        .nth(1)
        .unwrap()
        .split("\n}")
        .next()
        .unwrap();
    for line in body.lines() {
        let t = line.trim();
        if t.starts_with("///") || t.starts_with("#[") || t.is_empty() {
            continue;
        }
        let variant: String = t.chars().take_while(|c| c.is_alphanumeric()).collect();
        if variant.is_empty() {
            continue;
        }
        let mut kebab = String::new();
        for (i, c) in variant.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                kebab.push('-');
            }
            kebab.push(c.to_ascii_lowercase());
        }
        assert!(
            readme.contains(&format!("cargo xtask {kebab}")),
            "README does not document `cargo xtask {kebab}`"
        );
    }
}

#[test]
fn shared_data_is_never_tracked() {
    let out = std::process::Command::new("git")
        .arg("ls-files")
        .current_dir(repo_root())
        .output();
    let Ok(out) = out else {
        println!("skipped: git not available");
        return;
    };
    let files = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "cohen-covid-chestxray/images",
        "shenzhen-montgomery",
        "RG1_",
        "CHNCXR",
        "MCUCXR",
    ] {
        assert!(
            !files.contains(needle),
            "a file named like shared data is tracked: {needle}"
        );
    }
}
