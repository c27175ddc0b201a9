//! cxr_onnx on arbitrary model bytes: loading (read, graph checks, tract's parse and typing) and, when it
//! loads, one batch scored. Any error must name the file; a panic, an abort or an out-of-memory is a finding
//! (tract's own panics are caught by the loader's guard and come back as errors).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
#[allow(dead_code)]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch("m.onnx");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let spec = cxr_onnx::ModelSpec {
        onnx: path,
        input_size: 8,
        channels: 1,
        mean: vec![0.0],
        std: vec![1.0],
        output: cxr_onnx::OutputKind::Logit,
        output_index: 0,
        features: None,
    };
    // Tighter than the defaults, so that libFuzzer's malloc limit sees the loader's checks, not tract's.
    let limits = cxr_onnx::Limits {
        max_file_bytes: 1 << 20,
        max_tensor_elements: 1 << 20,
    };
    // tract: the fuzzer exercises our loader and the Rust engine, not onnxruntime's C++ (found or not).
    let opts = cxr_onnx::LoadOptions {
        limits: Some(limits),
        ..cxr_onnx::LoadOptions::engine(cxr_onnx::Engine::Tract)
    };
    match cxr_onnx::OnnxScorer::load(spec, &opts) {
        Ok(s) => {
            let img = cxr_core::Grey8::new(8, 8, vec![128; 64]).unwrap();
            if let Err(e) = cxr_core::Scorer::score(&s, &[img.clone(), img], false) {
                assert!(e.to_string().contains("m.onnx"), "{e}");
            }
        }
        Err(e) => assert!(e.to_string().contains("m.onnx"), "{e}"),
    }
});
