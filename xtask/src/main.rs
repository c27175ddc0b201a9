//! `cargo xtask`: see `xtask::run` and `docs/ARCHITECTURE.md`.

fn main() -> std::process::ExitCode {
    // Activations are allocated per layer; keeping freed memory saves re-faulting it each time.
    cxr_ops::alloc::retain_freed_memory();
    match xtask::run(std::env::args_os()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", xtask::error_chain(&err));
            std::process::ExitCode::FAILURE
        }
    }
}
