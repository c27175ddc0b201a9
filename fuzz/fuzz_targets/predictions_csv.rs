//! cxr_core::read_predictions on arbitrary bytes: an error naming the file or predictions, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
#[allow(dead_code)]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch("predictions.csv");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Err(e) = cxr_core::read_predictions(&path) {
        assert!(e.to_string().contains("predictions.csv"), "{e}");
    }
});
