//! `cxr`: see `cxr_cli::run` and `docs/ARCHITECTURE.md`.

fn main() -> std::process::ExitCode {
    // Activations are allocated per layer; keeping freed memory saves re-faulting it each time.
    cxr_ops::alloc::retain_freed_memory();
    cxr_cli::main_with(std::env::args_os())
}
