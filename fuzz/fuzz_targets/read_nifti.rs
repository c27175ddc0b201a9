//! cxr_ingest::read_image on arbitrary bytes, seeded with the shared nifti files (format detected by content).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::read_bytes("input.nii", data);
});
