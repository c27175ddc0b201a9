//! `cxr-python`: the shortcut audit from Python (`import cxr_confounders`), a thin PyO3 binding over
//! `cxr-audit`.
//!
//! Role: turn what a notebook holds into what the audit library takes, and nothing more: a model (a Python
//! callable, wrapped by the package's Python layer when it is a `torch.nn.Module`; an ONNX file; a model spec;
//! a run folder of ours) becomes a [`cxr_core::Scorer`], a manifest (a CSV path, or CSV text the Python layer
//! made from a DataFrame or a list of rows) a [`cxr_core::Manifest`], the keyword options an
//! [`cxr_audit::AuditConfig`] (serde, so the CLI's defaults and names). The audit is
//! [`cxr_audit::run_audit_on`], the same call `cxr audit` makes: there is no third copy of it here.
//!
//! A callable is fed what the ONNX scorer feeds its graph: `cxr_core::model_input` (the one resize and
//! normalisation) with the same input description (`ModelSpec`'s fields and checks), and its raw output is
//! read through the same `OutputKind::score`. The interpreter is released while Rust works and taken again
//! only to call the model, one batch at a time.

mod log;

use std::path::{Path, PathBuf};

use cxr_audit::{AuditConfig, ModelOptions, ModelSource};
use cxr_core::{Grey8, ScoreError, Scored, Scorer};
use cxr_onnx::ModelSpec;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

/// A Python callable as a [`Scorer`]. The package's `_call_model` adapter turns the f32 batch into a NumPy
/// array, calls the model, and hands back its outputs as bytes with their shapes.
struct CallableScorer {
    model: Py<PyAny>,
    adapter: Py<PyAny>,
    name: String,
    input: ModelSpec,
    features: bool,
}

/// What `_call_model` returns: scores (f64, `n x k`) and optional features (f32, `n x d`).
type AdapterOut = (Vec<u8>, usize, usize, Option<(Vec<u8>, usize, usize)>);

impl CallableScorer {
    fn fail(&self, message: impl Into<String>) -> ScoreError {
        ScoreError::new(&self.name, message)
    }
}

impl Scorer for CallableScorer {
    fn name(&self) -> &str {
        &self.name
    }
    fn input_size(&self) -> usize {
        self.input.input_size
    }
    fn has_features(&self) -> bool {
        self.features
    }
    fn score(&self, images: &[Grey8], features: bool) -> Result<Scored, ScoreError> {
        Ok(self.call(images, features)?.0)
    }
    /// The callable's own logit where its output is one: occlusion maps of a sure model stay informative.
    fn logits(&self, images: &[Grey8]) -> Result<Vec<f64>, ScoreError> {
        let (_, raw) = self.call(images, false)?;
        Ok(raw
            .into_iter()
            .map(|v| self.input.output.logit(v))
            .collect())
    }
}

impl CallableScorer {
    /// Calls the model on one batch: the scores (and features), with the raw output column they came from.
    fn call(&self, images: &[Grey8], features: bool) -> Result<(Scored, Vec<f64>), ScoreError> {
        let (s, c, n) = (self.input.input_size, self.input.channels, images.len());
        let mut data = Vec::with_capacity(n * c * s * s);
        for (i, g) in images.iter().enumerate() {
            cxr_core::model_input::push_model_input(
                g,
                s,
                &self.input.mean,
                &self.input.std,
                &mut data,
            )
            .ok_or_else(|| {
                self.fail(format!(
                    "image {i}: a {}x{} buffer is malformed",
                    g.width, g.height
                ))
            })?;
        }
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let out: AdapterOut = Python::attach(|py| {
            let batch = PyBytes::new(py, &bytes);
            let shape = PyTuple::new(py, [n, c, s, s])?;
            self.adapter
                .call1(
                    py,
                    (
                        self.model.clone_ref(py),
                        batch,
                        shape,
                        features && self.features,
                    ),
                )?
                .extract(py)
        })
        .map_err(|e: PyErr| self.fail(format!("the model raised {e}")))?;
        let (raw, rows, cols, feats) = out;
        if rows != n || cols == 0 || raw.len() != rows * cols * 8 {
            return Err(self.fail(format!(
                "returned scores of shape [{rows}, {cols}] for a batch of {n}: expected [{n}] or [{n}, K]"
            )));
        }
        let index = self.input.output_index;
        if index >= cols {
            return Err(self.fail(format!(
                "output_index {index} is out of range: the output has {cols} column(s)"
            )));
        }
        let values: Vec<f64> = raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect();
        let mut scores = Vec::with_capacity(n);
        let mut raw_outputs = Vec::with_capacity(n);
        for i in 0..n {
            let v = values[i * cols + index];
            raw_outputs.push(v);
            if !v.is_finite() {
                return Err(self.fail(format!("non-finite output {v} for image {i}")));
            }
            scores.push(
                self.input
                    .output
                    .score(v)
                    .map_err(|e| self.fail(format!("{e} for image {i}")))?,
            );
        }
        let features = match feats {
            Some((raw, rows, dim)) => {
                if rows != n || dim == 0 || raw.len() != rows * dim * 4 {
                    return Err(self.fail(format!(
                        "returned features of shape [{rows}, {dim}] for a batch of {n}: expected [{n}, D]"
                    )));
                }
                let flat: Vec<f32> = raw
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
                    .collect();
                Some(flat.chunks(dim).map(<[f32]>::to_vec).collect())
            }
            None => None,
        };
        Ok((Scored { scores, features }, raw_outputs))
    }
}

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// The model's input description from the keyword options (a spec without its `onnx`), checked by the
/// same rules as a spec file.
fn input_spec(onnx: &Path, input: &str) -> PyResult<ModelSpec> {
    let mut table = input_table(input)?;
    table.remove("engine");
    table.insert(
        "onnx".into(),
        toml::Value::String(onnx.to_string_lossy().into_owned()),
    );
    ModelSpec::parse(&table.to_string(), Path::new("."))
        .map_err(|e| value_error(format!("model input options: {e}")))
}

fn input_table(input: &str) -> PyResult<toml::Table> {
    serde_json::from_str(input).map_err(|e| value_error(format!("model input options: {e}")))
}

/// The `engine` of the input options (`auto` when absent), for an ONNX file or a spec.
fn engine_of(input: &str) -> PyResult<cxr_onnx::Engine> {
    match input_table(input)?.get("engine") {
        None => Ok(cxr_onnx::Engine::Auto),
        Some(toml::Value::String(s)) => s.parse().map_err(value_error),
        Some(other) => Err(value_error(format!(
            "engine must be \"auto\", \"onnxruntime\" or \"tract\", not {other}"
        ))),
    }
}

/// The model as a scorer, and the image column it reads: `kind` is `callable`, `onnx`, `spec` or `run`;
/// `model` the callable or the path; `input` the input description as JSON (callable and onnx).
fn scorer_of(
    py: Python<'_>,
    kind: &str,
    model: Bound<'_, PyAny>,
    adapter: Bound<'_, PyAny>,
    name: Option<&str>,
    input: &str,
    features: bool,
) -> PyResult<(Box<dyn Scorer>, String)> {
    Ok(match kind {
        "callable" => {
            let spec = input_spec(Path::new("<python callable>"), input)?;
            let scorer = CallableScorer {
                model: model.unbind(),
                adapter: adapter.unbind(),
                name: name.unwrap_or("model").to_string(),
                input: spec,
                features,
            };
            (Box::new(scorer), "png8".into())
        }
        "onnx" => {
            let path: PathBuf = model.extract()?;
            let spec = input_spec(&path, input)?;
            let opts = cxr_onnx::LoadOptions::engine(engine_of(input)?);
            let scorer = py
                .detach(|| cxr_onnx::OnnxScorer::load(spec, &opts))
                .map_err(value_error)?;
            (Box::new(scorer), "png8".into())
        }
        "spec" | "run" => {
            let path: PathBuf = model.extract()?;
            let source = if kind == "spec" {
                ModelSource::Spec(path)
            } else {
                ModelSource::Run(path)
            };
            let opts = ModelOptions {
                engine: engine_of(input)?,
                ..ModelOptions::default()
            };
            let loaded = py
                .detach(|| cxr_audit::load_scorer(&source, &opts))
                .map_err(value_error)?;
            (loaded.scorer, loaded.column)
        }
        other => return Err(value_error(format!("unknown model kind `{other}`"))),
    })
}

/// `cxr score`: the model over every row of the manifest file, into `predictions.csv` (and the rejects
/// beside it). Returns the predictions file's path.
#[pyfunction]
#[pyo3(signature = (kind, model, adapter, name, manifest, input, batch_size, out))]
#[allow(clippy::too_many_arguments)]
fn score(
    py: Python<'_>,
    kind: &str,
    model: Bound<'_, PyAny>,
    adapter: Bound<'_, PyAny>,
    name: Option<&str>,
    manifest: PathBuf,
    input: &str,
    batch_size: usize,
    out: PathBuf,
) -> PyResult<PathBuf> {
    let (scorer, column) = scorer_of(py, kind, model, adapter, name, input, false)?;
    let cfg = cxr_audit::ScoreConfig {
        column: Some(column),
        out,
        batch_size,
        ..Default::default()
    };
    let outcome =
        py.detach(|| cxr_audit::score_manifest(scorer.as_ref(), &manifest, &cfg, &|_| {}));
    log::flush(py);
    let outcome = outcome.map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    Ok(outcome.predictions)
}

/// Runs the audit. `kind` is `callable`, `onnx`, `spec` or `run`; `model` the callable or the path;
/// `manifest_csv` CSV text (with `manifest_name` and `base_dir`) or `None` to read `manifest_name` as a file;
/// `config` an `AuditConfig` as JSON; `input` the model's input description as JSON (callable and onnx).
/// Returns `{report, notes, files}` as JSON.
#[pyfunction]
#[pyo3(signature = (kind, model, adapter, manifest_name, manifest_csv, base_dir, config, input, features))]
#[allow(clippy::too_many_arguments)]
fn run_audit(
    py: Python<'_>,
    kind: &str,
    model: Bound<'_, PyAny>,
    adapter: Bound<'_, PyAny>,
    manifest_name: PathBuf,
    manifest_csv: Option<Vec<u8>>,
    base_dir: PathBuf,
    config: &str,
    input: &str,
    features: bool,
) -> PyResult<String> {
    let cfg: AuditConfig =
        serde_json::from_str(config).map_err(|e| value_error(format!("audit options: {e}")))?;
    let (scorer, column) = scorer_of(
        py,
        kind,
        model,
        adapter,
        cfg.name.as_deref(),
        input,
        features,
    )?;
    let cfg = AuditConfig {
        column: Some(cfg.column.clone().unwrap_or(column)),
        ..cfg
    };
    let outcome = py.detach(|| {
        let manifest = match &manifest_csv {
            Some(csv) => {
                cxr_audit::read_manifest_from(csv, &manifest_name, &base_dir, cfg.column())?
            }
            None => cxr_audit::read_manifest(&manifest_name, cfg.column())?,
        };
        cxr_audit::run_audit_on(scorer.as_ref(), &manifest, &manifest_name, &cfg, &|_| {})
    });
    log::flush(py);
    let outcome = outcome.map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let files = outcome.files.as_ref().map(|f| {
        serde_json::json!({
            "dir": f.dir,
            "audit_json": f.audit_json,
            "report_html": f.report_html,
            "probe_json": f.probe_json,
            "galleries": f.galleries,
        })
    });
    let json = serde_json::json!({
        "report": outcome.report,
        "notes": outcome.notes,
        "files": files,
    });
    Ok(json.to_string())
}

/// The split linter (`cxr manifest lint`) on a manifest (CSV text, or a file when `csv` is `None`): the
/// `LintReport` as JSON.
#[pyfunction]
#[pyo3(signature = (name, csv, base_dir))]
fn lint(
    py: Python<'_>,
    name: PathBuf,
    csv: Option<Vec<u8>>,
    base_dir: PathBuf,
) -> PyResult<String> {
    let report = py.detach(|| {
        let needs = ["split"];
        let manifest = match &csv {
            Some(text) => {
                cxr_core::Manifest::read_lenient_from(text.as_slice(), &name, &base_dir, &needs)
            }
            None => cxr_core::Manifest::read_lenient(&name, &needs),
        }?;
        Ok::<_, cxr_core::CoreError>(cxr_ingest::lint::lint(&manifest))
    });
    let report = report.map_err(value_error)?;
    serde_json::to_string(&report).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// `cxr evaluate` on predictions files: `metrics.csv`'s text (the long format: one row per set and metric,
/// with its interval), and the outputs written under `out` when given. `options` is an `EvalOptions` as JSON
/// (fields left out keep their defaults).
#[pyfunction]
#[pyo3(signature = (predictions, train_manifest, options, out))]
fn evaluate(
    py: Python<'_>,
    predictions: Vec<PathBuf>,
    train_manifest: Option<PathBuf>,
    options: &str,
    out: Option<PathBuf>,
) -> PyResult<String> {
    let mut merged = serde_json::to_value(cxr_eval::EvalOptions::default())
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let given: serde_json::Value =
        serde_json::from_str(options).map_err(|e| value_error(format!("evaluate options: {e}")))?;
    if let (Some(m), Some(g)) = (merged.as_object_mut(), given.as_object()) {
        m.extend(g.clone());
    }
    let mut opts: cxr_eval::EvalOptions = serde_json::from_value(merged)
        .map_err(|e| value_error(format!("evaluate options: {e}")))?;
    py.detach(|| {
        if let Some(path) = &train_manifest {
            let manifest = cxr_core::Manifest::read(path).map_err(|e| e.to_string())?;
            opts = opts.clone().with_train_manifest(&manifest);
        }
        let preds = cxr_eval::load_predictions(&predictions).map_err(|e| e.to_string())?;
        let report = cxr_eval::evaluate(&preds, &opts).map_err(|e| e.to_string())?;
        if let Some(dir) = &out {
            cxr_eval::write_outputs(&report, dir).map_err(|e| e.to_string())?;
        }
        cxr_eval::metrics_csv(&report).map_err(|e| e.to_string())
    })
    .map_err(PyRuntimeError::new_err)
}

/// One image for [`lung_masks`]: a file (read by the segment stage's own reader, format by content) or a grey
/// buffer `(pixels, width, height)` the Python layer made from an array.
#[derive(FromPyObject)]
enum ImageIn {
    Path(PathBuf),
    Pixels(Vec<u8>, u32, u32),
}

/// Lung masks ({0, 255}, each image's own size) from the shipped default lung UNet, or from `weights`:
/// `cxr_segment::Segmenter::predict_masks`, what `cxr segment predict` and the audit run. Returns
/// `(pixels, width, height)` per image, in order.
#[pyfunction]
#[pyo3(signature = (images, weights, flip))]
fn lung_masks(
    py: Python<'_>,
    images: Vec<ImageIn>,
    weights: Option<PathBuf>,
    flip: bool,
) -> PyResult<Vec<(Py<PyBytes>, u32, u32)>> {
    let masks = py.detach(|| {
        let mut seg = cxr_segment::Segmenter::load_or_default(weights.as_deref())
            .map_err(|e| e.to_string())?;
        seg.flip_tta = flip;
        let mut out = Vec::with_capacity(images.len());
        // A chunk at a time, so that memory does not grow with the number of images.
        for chunk in images.chunks(32) {
            let first = out.len();
            let grey: Vec<Grey8> = chunk
                .iter()
                .enumerate()
                .map(|(i, im)| match im {
                    ImageIn::Path(p) => cxr_core::png8::read_grey8(p).map_err(|e| e.to_string()),
                    ImageIn::Pixels(data, w, h) => Grey8::new(*w, *h, data.clone())
                        .map_err(|e| format!("image {}: {e}", first + i)),
                })
                .collect::<Result<_, String>>()?;
            out.extend(seg.predict_masks(&grey).map_err(|e| e.to_string())?);
        }
        Ok::<_, String>(out)
    });
    let masks = masks.map_err(value_error)?;
    Ok(masks
        .into_iter()
        .map(|m| (PyBytes::new(py, &m.data).unbind(), m.width, m.height))
        .collect())
}

/// The package version (the workspace's).
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_audit, m)?)?;
    m.add_function(wrap_pyfunction!(lint, m)?)?;
    m.add_function(wrap_pyfunction!(score, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(lung_masks, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(log::install_logging, m)?)?;
    Ok(())
}
