//! `cargo xtask`: see `xtask::run` and `docs/ARCHITECTURE.md`.

fn main() -> std::process::ExitCode {
    // Activations are allocated per layer; keeping freed memory saves re-faulting it each time.
    cxr_ops::alloc::retain_freed_memory();
    // The same exit statuses as `cxr` (an audit failing `--fail-on` exits with 3).
    cxr_cli::exit_status(xtask::run(std::env::args_os()))
}
