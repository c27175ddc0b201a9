//! Where onnxruntime cannot be found (here: `ORT_DYLIB_PATH` names no file; a process of its own, since the
//! library is looked for once per process): asking for it is a clear error naming why, and `auto` runs tract.

use std::path::Path;

use cxr_core::Scorer;
use cxr_onnx::{Engine, LoadOptions, ModelSpec, OnnxError, OnnxScorer};

#[test]
fn onnxruntime_asked_for_but_missing_is_an_error_and_auto_falls_back_to_tract() {
    // SAFETY: the only test of this binary, before anything reads the environment.
    unsafe { std::env::set_var("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.32.0") };
    let spec = ModelSpec::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small_cnn.toml"),
    )
    .unwrap();
    let e = OnnxScorer::load(spec.clone(), &LoadOptions::engine(Engine::Onnxruntime)).unwrap_err();
    assert!(matches!(e, OnnxError::Engine { .. }), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("small_cnn.onnx")
            && e.contains("engine onnxruntime")
            && e.contains("ORT_DYLIB_PATH"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
    let auto = OnnxScorer::load(spec, &LoadOptions::engine(Engine::Auto)).unwrap();
    assert_eq!(auto.engine(), "tract 0.23.9");
    assert_eq!(Scorer::engine(&auto), Some("tract 0.23.9"));
}
