//! What a user sees on stderr when a command fails: each thing said once, no colour codes in a pipe.

use std::process::Command;

fn stderr_of(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("running the xtask binary");
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_argument_says_error_once() {
    let err = stderr_of(&["--no-such-flag"]);
    assert!(err.starts_with("error: unexpected argument"), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
}

#[test]
fn a_missing_file_is_named_once_and_its_cause_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.csv");
    let absent = absent.to_str().unwrap();
    for args in [
        vec!["manifest", "check", absent],
        vec!["evaluate", "--predictions", absent],
    ] {
        let err = stderr_of(&args);
        assert_eq!(
            err.matches("No such file or directory").count(),
            1,
            "{args:?}: {err}"
        );
        assert_eq!(err.matches(absent).count(), 1, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    let dcm = dir.path().join("absent.dcm");
    let out = dir.path().join("out.png");
    let err = stderr_of(&["convert", dcm.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(err.matches(dcm.to_str().unwrap()).count(), 1, "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // An info line is logged before the failure (a world written, then a bad design read).
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["synth", "--out"])
        .arg(dir.path().join("w"))
        .args(["--per-source", "2", "--size", "64"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("INFO"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "ANSI escape in piped stderr: {err:?}"
    );
}
