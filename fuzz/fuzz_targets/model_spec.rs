//! cxr_onnx::ModelSpec::load on arbitrary bytes: a spec or an error naming the file, never a panic; a spec
//! that loads satisfies its documented bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
#[allow(dead_code)]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch("spec.toml");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    match cxr_onnx::ModelSpec::load(&path) {
        Ok(s) => {
            assert!((1..=4096).contains(&s.input_size));
            assert!(s.channels == 1 || s.channels == 3);
            assert_eq!(s.mean.len(), s.channels);
            assert!(s.std.iter().all(|&v| v >= cxr_onnx::MIN_STD && v.is_finite()));
        }
        Err(e) => assert!(e.to_string().contains("spec.toml"), "{e}"),
    }
});
