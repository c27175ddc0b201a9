#!/bin/sh
# Builds the fuzz targets the way cargo-fuzz does (nightly, sanitizer coverage), without needing cargo-fuzz.
cd "$(dirname "$0")"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
exec cargo +nightly build --release --target x86_64-unknown-linux-gnu --target-dir target "$@"
