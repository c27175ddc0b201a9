//! Development runner of the `cargo xtask bench ops` code (the same module), for when xtask is not buildable.
#[path = "../../../xtask/src/bench_ops.rs"]
mod bench_ops;

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: bench_ops::BenchOpsArgs,
}

fn main() -> anyhow::Result<()> {
    bench_ops::run(Cli::parse().args)
}
