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
    // The crates whose role is to wire stages together: the `cxr` command, the audit and study libraries and the
    // Python binding.
    let wiring = ["cli", "audit", "study", "python"];
    for dir in crate_dirs() {
        if wiring.iter().any(|w| dir.ends_with(w)) {
            continue;
        }
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
                    "{} depends on sibling stage {dep}: wire stages in cxr-cli, cxr-audit, cxr-study or cxr-python",
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

/// The variants of `enum <name> {` in a clap source file, kebab-cased the way clap names subcommands.
fn subcommands(source: &str, enum_name: &str) -> Vec<String> {
    let body = source
        .split(&format!("enum {enum_name} {{"))
        .nth(1)
        .unwrap_or_else(|| panic!("no enum {enum_name}"))
        .split("\n}")
        .next()
        .unwrap();
    let mut names = Vec::new();
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
        names.push(kebab);
    }
    assert!(!names.is_empty(), "enum {enum_name} has no variants");
    names
}

#[test]
fn every_cxr_command_is_documented() {
    let readme = read(&repo_root().join("README.md"));
    let lib = read(&repo_root().join("crates/cli/src/lib.rs"));
    for name in subcommands(&lib, "Command") {
        assert!(
            readme.contains(&format!("`cxr {name}")),
            "README does not document `cxr {name}`"
        );
    }
}

#[test]
fn every_developer_task_is_documented() {
    let readme = read(&repo_root().join("README.md"));
    let lib = read(&repo_root().join("xtask/src/lib.rs"));
    for name in subcommands(&lib, "DevCommand") {
        assert!(
            readme.contains(&format!("cargo xtask {name}")),
            "README does not document `cargo xtask {name}`"
        );
    }
}

/// Non-test lines of a Rust file: everything before its `#[cfg(test)]` module.
fn non_test_lines(source: &str) -> usize {
    source
        .split("\n#[cfg(test)]")
        .next()
        .unwrap_or("")
        .lines()
        .count()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// rust-analyzer's rule: xtask holds developer tasks (benches, fuzzing), not the product's logic.
#[test]
fn xtask_holds_developer_tasks_only() {
    let mut files = Vec::new();
    rust_files(&repo_root().join("xtask/src"), &mut files);
    let lines: usize = files.iter().map(|f| non_test_lines(&read(f))).sum();
    assert!(
        lines < 2000,
        "xtask/src has {lines} non-test lines; user commands and algorithms belong in crates/"
    );
}

/// Between the command line and the libraries travel typed configurations, never argv: the only parse of
/// arguments outside tests is each binary's own top-level one.
#[test]
fn no_command_line_is_built_to_call_our_own_code() {
    let mut files = Vec::new();
    rust_files(&repo_root().join("crates"), &mut files);
    rust_files(&repo_root().join("xtask/src"), &mut files);
    let top_level = [
        repo_root().join("crates/cli/src/lib.rs"),
        repo_root().join("xtask/src/lib.rs"),
    ];
    for f in files {
        if top_level.contains(&f) || f.components().any(|c| c.as_os_str() == "tests") {
            continue;
        }
        let source = read(&f);
        let code = source.split("\n#[cfg(test)]").next().unwrap_or("");
        for needle in ["try_parse_from", "parse_from("] {
            assert!(
                !code.contains(needle),
                "{} calls `{needle}` outside tests: pass a typed config instead",
                f.display()
            );
        }
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

/// Reports are built from typed results: an untyped `serde_json::Value` lets a renamed field vanish from the
/// page without a compile error.
#[test]
fn report_code_reads_typed_results() {
    let mut files = Vec::new();
    rust_files(&repo_root().join("crates/study/src/report"), &mut files);
    rust_files(&repo_root().join("crates/report/src"), &mut files);
    files.push(repo_root().join("crates/audit/src/report.rs"));
    assert!(files.len() > 3, "the report code moved: update this test");
    // `fixture.rs` builds the sections' test inputs and is compiled only under `cfg(test)`.
    for f in files.into_iter().filter(|f| !f.ends_with("fixture.rs")) {
        let source = read(&f);
        let code = source.split("\n#[cfg(test)]").next().unwrap_or("");
        for needle in ["serde_json::Value", "Value::", "json!("] {
            assert!(
                !code.contains(needle),
                "{} uses `{needle}` outside tests: read the typed Results instead",
                f.display()
            );
        }
    }
}
