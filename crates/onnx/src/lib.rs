//! Foreign classifiers as scorers: an ONNX model described by a TOML [`ModelSpec`] behind
//! `cxr_core::Scorer`, so the audit and `cargo xtask score` take a PyTorch/TensorFlow/JAX export exactly as
//! they take our own models.
//!
//! Two engines ([`Engine`]): onnxruntime, a native library found at run time ([`engine`]: `ORT_DYLIB_PATH`,
//! else the `onnxruntime` Python package) and never linked at build time, and
//! [tract](https://github.com/sonos/tract), pure Rust, always there. [`Engine::Auto`] takes onnxruntime
//! where it loads and tract otherwise, and logs which ran; [`OnnxScorer::engine`] names it and its version
//! for what is written beside the scores. Inputs: 8-bit grey images, converted with `cxr_core::model_input`
//! (the same resize our own models use) and the spec's normalisation. Outputs: P(Covid-19) per image
//! (sigmoid of a logit, or a probability output taken as is) and, when the spec names a `features` node,
//! that node's output per image (the source probe; onnxruntime returns graph outputs only, so the node is
//! made one in the model bytes handed to it, in memory).
//!
//! Speed: onnxruntime runs a whole batch in one call of one session with rayon's thread count as its
//! intra-op threads (inter-op 1), never from inside a rayon loop. tract runs one plan on one thread, so a
//! batch is cut into one chunk per rayon thread and the chunks run at once through optimised plans
//! concretised to the chunk's batch size (built once per size and shared by all threads).
//! docs/MODEL_SPEC.md documents the spec and the engines; docs/PERFORMANCE.md the figures.
//!
//! Untrusted files ([`guard`]): the spec and the ONNX file are read with size limits (special files refused
//! by path), the graph's constants and constant shapes are bounded before either engine sees the file, the
//! graph is typed by tract at batch 1 and every tensor of known shape bounded (for both engines), both
//! engines run under a panic guard, and every output's batch axis and values are checked by one function
//! whichever engine produced them.
//!
//! Invariant: loading checks everything the spec claims against the graph (input rank and size, the
//! `features` node, `output_index`), so a wrong spec fails at load with one line naming the file or node,
//! never at the first batch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cxr_core::{Grey8, ScoreError, Scored, Scorer, fsutil, model_input};
use rayon::prelude::*;
use serde::Deserialize;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

pub mod engine;
pub mod guard;
pub use engine::{Engine, Onnxruntime};
pub use guard::Limits;
/// tract's ONNX protobuf types, for building or inspecting model files (tests, the fuzz target).
pub use tract_onnx::pb;

/// Largest model spec read (a spec is a few hundred bytes; this refuses `/dev/zero` and the like).
pub const MAX_SPEC_BYTES: u64 = 1 << 20;

/// Everything that can go wrong loading a spec or a model; each message names the file or node.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{path}: cannot read the model spec: {message}")]
    SpecRead { path: PathBuf, message: String },
    #[error("{path}: invalid model spec: {message}")]
    SpecInvalid { path: PathBuf, message: String },
    #[error("{path}: ONNX file not found")]
    MissingModel { path: PathBuf },
    /// A constant, a constant shape or a planned tensor above [`Limits`], found before it is allocated.
    #[error("{path}: refused: {message}")]
    Limit { path: PathBuf, message: String },
    /// tract panicked on this file (a bug it has on hostile input), caught.
    #[error("{path}: the ONNX parser panicked on this file: {message}")]
    Panic { path: PathBuf, message: String },
    #[error("{path}: unreadable ONNX model: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("{path}: input {message}")]
    InputShape { path: PathBuf, message: String },
    #[error("{path}: no node or output named `{node}` (the spec's `features`)")]
    UnknownNode { path: PathBuf, node: String },
    /// The engine asked for cannot run (onnxruntime not found, too old, or refusing the model).
    #[error("{path}: engine {engine}: {message}")]
    Engine {
        path: PathBuf,
        engine: Engine,
        message: String,
    },
    #[error("{path}: output_index {index} is out of range: the output has {columns} column(s)")]
    OutputIndex {
        path: PathBuf,
        index: usize,
        columns: usize,
    },
}

/// What the model's score output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// A logit; the score is its sigmoid.
    Logit,
    /// A probability in [0, 1], used as the score.
    Probability,
}

/// How to feed and read one ONNX classifier (docs/MODEL_SPEC.md documents every field).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The ONNX file; relative paths are resolved against the spec file's folder by [`ModelSpec::load`].
    pub onnx: PathBuf,
    /// Side of the square input.
    pub input_size: usize,
    /// 1 (grey) or 3 (the grey plane replicated).
    #[serde(default = "default_channels")]
    pub channels: usize,
    /// Per-channel mean, applied to x / 255. Not given: ImageNet's for 3 channels; a 1-channel model must
    /// give its own (there is no standard grey statistic).
    #[serde(default)]
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, each at least [`MIN_STD`].
    #[serde(default)]
    pub std: Vec<f32>,
    #[serde(default = "default_output")]
    pub output: OutputKind,
    /// Which column of the (first) output is Covid-19.
    #[serde(default)]
    pub output_index: usize,
    /// Graph node (or output tensor) whose output is the pooled feature vector.
    #[serde(default)]
    pub features: Option<String>,
}

fn default_channels() -> usize {
    3
}
/// The smallest `std` a spec may give: below it `(x / 255 - mean) / std` leaves f32's useful range (1e-45
/// turns every pixel into an infinity, and every batch would fail as if the model returned NaN).
pub const MIN_STD: f32 = 1e-6;
fn default_output() -> OutputKind {
    OutputKind::Logit
}

impl OutputKind {
    /// The score (P(Covid-19)) of one finite output value: the sigmoid of a logit, a probability as it is.
    /// Every scorer reading a raw model output (ONNX, a Python callable) converts through here.
    pub fn score(self, v: f64) -> Result<f64, String> {
        match self {
            OutputKind::Logit => Ok(1.0 / (1.0 + (-v).exp())),
            OutputKind::Probability if (0.0..=1.0).contains(&v) => Ok(v),
            OutputKind::Probability => Err(format!(
                "probability {v} outside [0, 1] (is the output a logit?)"
            )),
        }
    }

    /// The logit behind a raw output already checked by [`OutputKind::score`]: itself for a logit output,
    /// [`cxr_core::logit`] of a probability.
    pub fn logit(self, v: f64) -> f64 {
        match self {
            OutputKind::Logit => v,
            OutputKind::Probability => cxr_core::logit(v),
        }
    }
}

impl ModelSpec {
    /// Reads and checks a spec file; `onnx` comes back absolute (or as given when already absolute).
    pub fn load(path: &Path) -> Result<Self, OnnxError> {
        let read_err = |message: String| OnnxError::SpecRead {
            path: path.to_path_buf(),
            message,
        };
        let bytes = cxr_core::fsutil::read_bounded(path, MAX_SPEC_BYTES)
            .map_err(|e| read_err(guard::io_message(&e)))?;
        let text = String::from_utf8(bytes).map_err(|_| read_err("not UTF-8 text".into()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|message| OnnxError::SpecInvalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses spec text; relative `onnx` paths are joined to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let mut spec: ModelSpec =
            toml::from_str(text).map_err(|e| e.message().replace('\n', " "))?;
        if spec.onnx.is_relative() {
            spec.onnx = base.join(&spec.onnx);
        }
        spec.check()?;
        Ok(spec)
    }

    fn check(&mut self) -> Result<(), String> {
        if self.input_size == 0 || self.input_size > 4096 {
            return Err(format!("input_size {} is not in 1..=4096", self.input_size));
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(format!("channels must be 1 or 3, not {}", self.channels));
        }
        let imagenet = [
            ("mean", model_input::IMAGENET_MEAN),
            ("std", model_input::IMAGENET_STD),
        ];
        for ((name, default), v) in imagenet.into_iter().zip([&mut self.mean, &mut self.std]) {
            if v.is_empty() {
                if self.channels != 3 {
                    return Err(format!(
                        "channels = {} needs `{name}`: one value, the grey {name} the model was trained with \
                         on x / 255 (e.g. mean = [0.5], std = [0.25]); the default is ImageNet's, for 3 channels",
                        self.channels
                    ));
                }
                *v = default.to_vec();
            }
            // One value for all channels is the usual way to write a grey model's statistics.
            if v.len() == 1 && self.channels == 3 {
                *v = vec![v[0]; 3];
            }
            if v.len() != self.channels {
                return Err(format!(
                    "{name} has {} values; channels = {} takes {}",
                    v.len(),
                    self.channels,
                    if self.channels == 1 {
                        "one value".to_string()
                    } else {
                        format!("{} values (or one for all)", self.channels)
                    }
                ));
            }
            if let Some(x) = v.iter().find(|x| !x.is_finite()) {
                return Err(format!("{name} has a non-finite value ({x})"));
            }
        }
        if let Some(s) = self.std.iter().find(|&&s| s < MIN_STD) {
            return Err(format!(
                "std {s:e} is below the floor of {MIN_STD:e} (MIN_STD): the normalised input would overflow"
            ));
        }
        Ok(())
    }
}

type Plan = Arc<TypedRunnableModel>;

/// How to load a model: the engine, the threads, the limits.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub engine: Engine,
    /// onnxruntime's intra-op threads, tract's batch split; `None`: rayon's thread count.
    pub threads: Option<usize>,
    /// `None`: [`Limits::from_env`].
    pub limits: Option<Limits>,
}

impl LoadOptions {
    /// The defaults with this engine.
    pub fn engine(engine: Engine) -> Self {
        Self {
            engine,
            ..Self::default()
        }
    }
}

/// The engine that runs the checked graph.
enum Runner {
    /// tract's model, and its optimised plans by batch size, built on first use and shared by every thread.
    Tract {
        model: InferenceModel,
        plans: Mutex<HashMap<usize, Plan>>,
    },
    Ort(engine::OrtSession),
}

/// An ONNX classifier behind `cxr_core::Scorer`.
pub struct OnnxScorer {
    spec: ModelSpec,
    name: String,
    runner: Runner,
    /// The engine and its version (`onnxruntime 1.32.0`, `tract 0.23.9`).
    engine: String,
    threads: usize,
    limits: Limits,
    /// SHA-256 over the ONNX file and its external data ([`OnnxScorer::sha256`]).
    sha256: String,
}

impl std::fmt::Debug for OnnxScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxScorer")
            .field("name", &self.name)
            .field("spec", &self.spec)
            .finish()
    }
}

impl OnnxScorer {
    /// Loads the spec at `path` and its model ([`LoadOptions::default`]: [`Engine::Auto`]).
    pub fn from_spec_file(path: &Path) -> Result<Self, OnnxError> {
        Self::load(ModelSpec::load(path)?, &LoadOptions::default())
    }

    /// Loads the model a spec names and checks the spec against its graph ([`LoadOptions::default`]).
    pub fn new(spec: ModelSpec) -> Result<Self, OnnxError> {
        Self::load(spec, &LoadOptions::default())
    }

    /// [`OnnxScorer::new`] within the given limits.
    pub fn with_limits(spec: ModelSpec, limits: Limits) -> Result<Self, OnnxError> {
        Self::load(
            spec,
            &LoadOptions {
                limits: Some(limits),
                ..LoadOptions::default()
            },
        )
    }

    /// Loads the model a spec names on the engine asked for, and checks the spec against its graph.
    pub fn load(spec: ModelSpec, opts: &LoadOptions) -> Result<Self, OnnxError> {
        let path = spec.onnx.clone();
        if std::fs::symlink_metadata(&path).is_err() {
            return Err(OnnxError::MissingModel { path });
        }
        let limits = opts.limits.unwrap_or_else(Limits::from_env);
        let unreadable = |e: TractError| OnnxError::Unreadable {
            path: path.clone(),
            message: root_cause(&e),
        };
        let guard::Checked {
            mut model,
            proto,
            sha256,
        } = guard::load(&path, &limits)?;
        if model.input_outlets().map(|i| i.len()).unwrap_or(0) != 1 {
            return Err(OnnxError::InputShape {
                path,
                message: "count: the model must take exactly one input".into(),
            });
        }
        check_input_fact(&model, &spec, &path)?;
        let score_out = *model
            .output_outlets()
            .ok()
            .and_then(|o| o.first())
            .ok_or_else(|| OnnxError::Unreadable {
                path: path.clone(),
                message: "the model has no output".into(),
            })?;
        let mut outputs = vec![score_out];
        if let Some(node) = &spec.features {
            let mut probe = model.clone();
            probe
                .select_outputs_by_name([node.as_str()])
                .map_err(|_| OnnxError::UnknownNode {
                    path: path.clone(),
                    node: node.clone(),
                })?;
            outputs.push(probe.output_outlets().map_err(unreadable)?[0]);
        }
        model.select_output_outlets(&outputs).map_err(unreadable)?;
        // The tensor names onnxruntime reads: tract labels each outlet with its ONNX tensor name.
        let names: Vec<String> = outputs
            .iter()
            .map(|&o| {
                model
                    .outlet_label(o)
                    .map(str::to_string)
                    .unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "onnx".into());
        let threads = opts
            .threads
            .unwrap_or_else(rayon::current_num_threads)
            .max(1);
        // Typing the graph at batch 1 finds size mismatches the declared input did not show, bounds every
        // tensor of known shape (for both engines: onnxruntime allocates what the graph asks), and tells
        // us how many columns the score output has.
        let input_err = |message| OnnxError::InputShape {
            path: path.clone(),
            message,
        };
        let typed =
            guard::guarded(&path, || typed(&model, &spec, 1, &limits))?.map_err(input_err)?;
        let fact = typed
            .output_fact(0)
            .map_err(unreadable)?
            .shape
            .as_concrete()
            .map(|s| s.to_vec());
        let columns = match fact.as_deref() {
            Some([1]) | Some([]) => 1,
            Some([1, rest @ ..]) => rest.iter().product(),
            _ => 1,
        };
        if spec.output_index >= columns {
            return Err(OnnxError::OutputIndex {
                path,
                index: spec.output_index,
                columns,
            });
        }
        let ort = match opts.engine {
            Engine::Tract => None,
            asked => {
                let dir = path.parent().unwrap_or(Path::new("."));
                let made = guard::guarded(&path, || {
                    engine::OrtSession::new(proto, names, dir, threads)
                })
                .map_err(|e| e.to_string())
                .and_then(|r| r)
                .map(|(session, rt)| (session, format!("onnxruntime {}", rt.version)));
                match (made, asked) {
                    (Ok(made), _) => Some(made),
                    (Err(message), Engine::Onnxruntime) => {
                        return Err(OnnxError::Engine {
                            path,
                            engine: asked,
                            message,
                        });
                    }
                    (Err(message), _) => {
                        tracing::warn!("{}: onnxruntime not used: {message}", path.display());
                        None
                    }
                }
            }
        };
        let (runner, engine) = match ort {
            Some((session, engine)) => (Runner::Ort(session), engine),
            None => {
                let plan =
                    guard::guarded(&path, || optimise(typed, &limits))?.map_err(input_err)?;
                let plans = Mutex::new(HashMap::from([(1, plan)]));
                (Runner::Tract { model, plans }, engine::TRACT.to_string())
            }
        };
        tracing::info!("{}: engine {engine}", path.display());
        Ok(Self {
            spec,
            name,
            runner,
            engine,
            threads,
            limits,
            sha256,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The engine that runs the model and its version: `onnxruntime 1.32.0` or `tract 0.23.9`.
    pub fn engine(&self) -> &str {
        &self.engine
    }

    /// SHA-256 (hex) of the model's content: the ONNX file and every external-data file it reads, so a
    /// model swapped behind the same spec changes it.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// How many chunks tract splits a batch into (default: [`LoadOptions::threads`]). onnxruntime's
    /// intra-op threads are fixed when its session is made, by [`LoadOptions::threads`].
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    fn plan(
        &self,
        model: &InferenceModel,
        plans: &Mutex<HashMap<usize, Plan>>,
        batch: usize,
    ) -> Result<Plan, String> {
        if let Some(p) = plans.lock().ok().and_then(|m| m.get(&batch).cloned()) {
            return Ok(p);
        }
        let plan = optimise(typed(model, &self.spec, batch, &self.limits)?, &self.limits)?;
        if let Ok(mut m) = plans.lock() {
            m.insert(batch, plan.clone());
        }
        Ok(plan)
    }

    /// The batch as the model's input, `[n, channels, size, size]`, normalised.
    fn input(&self, images: &[Grey8]) -> Result<(Vec<f32>, [usize; 4]), String> {
        let (s, c) = (self.spec.input_size, self.spec.channels);
        // Resized and normalised in parallel: onnxruntime waits for the whole batch, and a sequential
        // resize of every occlusion variant left a core idle between its runs.
        let planes: Vec<Vec<f32>> = images
            .par_iter()
            .enumerate()
            .map(|(i, g)| {
                let mut v = Vec::with_capacity(c * s * s);
                model_input::push_model_input(g, s, &self.spec.mean, &self.spec.std, &mut v)
                    .ok_or_else(|| {
                        format!("image {i}: a {}x{} buffer is malformed", g.width, g.height)
                    })?;
                Ok(v)
            })
            .collect::<Result<_, String>>()?;
        Ok((planes.concat(), [images.len(), c, s, s]))
    }

    /// The engine's raw outputs for a batch: [score, features?], each checked by [`OnnxScorer::read`].
    fn run_tract(
        &self,
        model: &InferenceModel,
        plans: &Mutex<HashMap<usize, Plan>>,
        images: &[Grey8],
    ) -> Result<Vec<engine::Output>, String> {
        let (data, shape) = self.input(images)?;
        let input = Tensor::from_shape(&shape, &data).map_err(|e| e.to_string())?;
        let out = fsutil::catch_panic(|| -> Result<_, String> {
            let plan = self.plan(model, plans, shape[0])?;
            plan.run(tvec!(input.into())).map_err(|e| root_cause(&e))
        })
        .map_err(|m| format!("the ONNX runtime panicked: {}", m.replace('\n', " ")))??;
        out.iter()
            .map(|t| {
                Ok(engine::Output {
                    shape: t.shape().to_vec(),
                    values: to_f32(t)?,
                })
            })
            .collect()
    }

    fn run_ort(
        &self,
        session: &engine::OrtSession,
        images: &[Grey8],
    ) -> Result<Vec<engine::Output>, String> {
        let (data, shape) = self.input(images)?;
        fsutil::catch_panic(|| session.run(&data, shape))
            .map_err(|m| format!("onnxruntime panicked: {}", m.replace('\n', " ")))?
    }

    /// Scores, features and raw outputs of one batch from the engine's outputs, whichever engine: the
    /// batch axis, finiteness, `output_index` and the probability range are checked here only.
    fn read(
        &self,
        out: Vec<engine::Output>,
        n: usize,
        features: bool,
    ) -> Result<(Scored, Vec<f64>), String> {
        let mut out = out.into_iter();
        let score = out
            .next()
            .ok_or_else(|| "the model returned no output".to_string())?;
        let raw = batch_output(score, n, "score output")?;
        let cols = raw.len() / n;
        let mut scores = Vec::with_capacity(n);
        let mut outputs = Vec::with_capacity(n);
        for i in 0..n {
            let v = raw[i * cols + self.spec.output_index] as f64;
            outputs.push(v);
            if !v.is_finite() {
                return Err(format!("non-finite output {v} for image {i}"));
            }
            scores.push(
                self.spec
                    .output
                    .score(v)
                    .map_err(|e| format!("{e} for image {i}"))?,
            );
        }
        let features = match out.next() {
            Some(f) if features => {
                let what = format!(
                    "features output `{}`",
                    self.spec.features.as_deref().unwrap_or("")
                );
                let flat = batch_output(f, n, &what)?;
                let d = flat.len() / n;
                Some(flat.chunks(d).map(|c| c.to_vec()).collect())
            }
            _ => None,
        };
        Ok((Scored { scores, features }, outputs))
    }
}

/// The graph typed at `batch`, every tensor of known shape checked against the limits before anything runs.
fn typed(
    model: &InferenceModel,
    spec: &ModelSpec,
    batch: usize,
    limits: &Limits,
) -> Result<TypedModel, String> {
    let s = spec.input_size;
    let fact = f32::fact([batch, spec.channels, s, s]);
    let typed = model
        .clone()
        .with_input_fact(0, fact.into())
        .and_then(|m| m.into_typed())
        .map_err(|e| {
            format!(
                "does not accept [{batch}, {}, {s}, {s}] f32: {}",
                spec.channels,
                root_cause(&e)
            )
        })?;
    guard::check_facts(&typed, limits)?;
    Ok(typed)
}

/// tract's runnable plan of a typed graph; the optimised graph's tensors are bounded too.
fn optimise(typed: TypedModel, limits: &Limits) -> Result<Plan, String> {
    let plan = typed.into_optimized().map_err(|e| root_cause(&e))?;
    guard::check_facts(&plan, limits)?;
    plan.into_runnable().map_err(|e| root_cause(&e))
}

/// An output's values, after checking that its first axis is the batch (an output of `[1, 1]` for a batch of
/// 2, or of `[2N, 1]`, would silently share or shift scores) and that each image gets at least one value.
fn batch_output(t: engine::Output, n: usize, what: &str) -> Result<Vec<f32>, String> {
    if t.shape.first() != Some(&n) || t.values.len() < n {
        return Err(format!(
            "the {what} has shape {:?} for a batch of {n} images: its first axis must be the batch",
            t.shape
        ));
    }
    Ok(t.values)
}

fn to_f32(t: &TValue) -> Result<Vec<f32>, String> {
    let t = t.cast_to::<f32>().map_err(|e| root_cause(&e))?;
    let view = t.to_plain_array_view::<f32>().map_err(|e| root_cause(&e))?;
    Ok(view.iter().copied().collect())
}

fn root_cause(e: &TractError) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn check_input_fact(
    model: &InferenceModel,
    spec: &ModelSpec,
    path: &Path,
) -> Result<(), OnnxError> {
    let err = |message: String| OnnxError::InputShape {
        path: path.to_path_buf(),
        message,
    };
    let fact = model.input_fact(0).map_err(|e| err(root_cause(&e)))?;
    if let Some(rank) = fact.shape.rank().concretize()
        && rank != 4
    {
        return Err(err(format!(
            "rank is {rank}, the spec needs [N, {}, {s}, {s}] (NCHW)",
            spec.channels,
            s = spec.input_size
        )));
    }
    let want = [
        None,
        Some(spec.channels),
        Some(spec.input_size),
        Some(spec.input_size),
    ];
    for (axis, (dim, want)) in fact.shape.dims().zip(want).enumerate() {
        let (Some(want), Some(got)) = (want, dim.concretize().and_then(|d| d.to_i64().ok())) else {
            continue;
        };
        if got != want as i64 {
            let what = if axis == 1 { "channels" } else { "input_size" };
            return Err(err(format!(
                "axis {axis} is {got} but the spec's {what} is {want} (the model takes {:?})",
                fact.shape
                    .dims()
                    .map(|d| d.concretize().map(|x| x.to_string()).unwrap_or("?".into()))
                    .collect::<Vec<_>>()
            )));
        }
    }
    Ok(())
}

impl Scorer for OnnxScorer {
    fn name(&self) -> &str {
        &self.name
    }
    fn input_size(&self) -> usize {
        self.spec.input_size
    }
    fn has_features(&self) -> bool {
        self.spec.features.is_some()
    }
    fn model_sha256(&self) -> Option<&str> {
        Some(&self.sha256)
    }
    fn engine(&self) -> Option<&str> {
        Some(&self.engine)
    }
    fn score(&self, images: &[Grey8], features: bool) -> Result<Scored, ScoreError> {
        Ok(self.score_with_outputs(images, features)?.0)
    }
    /// The graph's own output where it is a logit (no round trip through the sigmoid, so a saturated
    /// model's logits still differ); the logit of the probability otherwise.
    fn logits(&self, images: &[Grey8]) -> Result<Vec<f64>, ScoreError> {
        let (_, raw) = self.score_with_outputs(images, false)?;
        Ok(raw.into_iter().map(|v| self.spec.output.logit(v)).collect())
    }
}

impl OnnxScorer {
    /// Scores (and features) with the graph's raw outputs, in the batch's order.
    fn score_with_outputs(
        &self,
        images: &[Grey8],
        features: bool,
    ) -> Result<(Scored, Vec<f64>), ScoreError> {
        let err = |m: String| ScoreError::new(self.spec.onnx.display().to_string(), m);
        if images.is_empty() {
            return Ok((
                Scored {
                    scores: Vec::new(),
                    features: (features && self.has_features()).then(Vec::new),
                },
                Vec::new(),
            ));
        }
        let parts: Vec<(Scored, Vec<f64>)> = match &self.runner {
            // One call: onnxruntime spreads the batch over its own threads.
            Runner::Ort(session) => vec![
                self.run_ort(session, images)
                    .and_then(|out| self.read(out, images.len(), features))
                    .map_err(err)?,
            ],
            Runner::Tract { model, plans } => images
                .par_chunks(images.len().div_ceil(self.threads))
                .map(|c| {
                    self.run_tract(model, plans, c)
                        .and_then(|out| self.read(out, c.len(), features))
                })
                .collect::<Result<_, _>>()
                .map_err(err)?,
        };
        let mut out = Scored {
            scores: Vec::with_capacity(images.len()),
            features: None,
        };
        let mut raw = Vec::with_capacity(images.len());
        for (p, r) in parts {
            out.scores.extend(p.scores);
            raw.extend(r);
            if let Some(f) = p.features {
                out.features.get_or_insert_with(Vec::new).extend(f);
            }
        }
        Ok((out, raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logit_output_keeps_its_logit_where_the_probability_saturates() {
        // sigmoid(40) rounds to 1 in f64: only the raw logit still ranks two sure images.
        let (a, b) = (40.0, 45.0);
        assert_eq!(OutputKind::Logit.score(a), OutputKind::Logit.score(b));
        assert_eq!(OutputKind::Logit.logit(a), a);
        assert!(OutputKind::Logit.logit(b) > OutputKind::Logit.logit(a));
        let p = OutputKind::Probability.score(0.9).unwrap();
        assert!((OutputKind::Probability.logit(p) - 9f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn relative_onnx_paths_resolve_against_the_spec_folder_and_defaults_apply() {
        let s =
            ModelSpec::parse("onnx = \"m.onnx\"\ninput_size = 224\n", Path::new("/specs")).unwrap();
        assert_eq!(s.onnx, Path::new("/specs/m.onnx"));
        assert_eq!(s.channels, 3);
        assert_eq!(s.mean, model_input::IMAGENET_MEAN.to_vec());
        assert_eq!(s.output, OutputKind::Logit);
        assert_eq!(s.output_index, 0);
        assert!(s.features.is_none());
        let abs = ModelSpec::parse(
            "onnx = \"/x/m.onnx\"\ninput_size = 8\n",
            Path::new("/specs"),
        )
        .unwrap();
        assert_eq!(abs.onnx, Path::new("/x/m.onnx"));
        let grey = ModelSpec::parse(
            "onnx = \"m.onnx\"\ninput_size = 8\nchannels = 3\nmean = [0.5]\nstd = [0.25]\noutput = \"probability\"",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(grey.mean, vec![0.5; 3]);
        assert_eq!(grey.output, OutputKind::Probability);
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        let base = Path::new(".");
        let cases = [
            ("input_size = 8", "onnx"),
            ("onnx = \"m\"\ninput_size = 0", "input_size"),
            ("onnx = \"m\"\ninput_size = 8\nchannels = 2", "channels"),
            (
                "onnx = \"m\"\ninput_size = 8\nchannels = 1\nmean = [0.1, 0.2]",
                "mean",
            ),
            ("onnx = \"m\"\ninput_size = 8\nstd = [0.1, 0.0, 0.2]", "std"),
            (
                "onnx = \"m\"\ninput_size = 8\noutput = \"softmax\"",
                "softmax",
            ),
            ("onnx = \"m\"\ninput_size = 8\ncolour = 1", "colour"),
        ];
        for (text, word) in cases {
            let e = ModelSpec::parse(text, base).unwrap_err();
            assert!(e.contains(word), "{text:?} -> {e}");
            assert!(!e.contains('\n'));
        }
    }

    /// A grey model without its statistics is told what one channel needs; a tiny or non-finite `std` is
    /// refused at load, naming the spec file (not later, per batch, as if the model returned NaN).
    #[test]
    fn grey_specs_and_tiny_stds_get_their_own_messages_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "channels = 1",
                &["channels = 1 needs `mean`", "one value"][..],
            ),
            (
                "channels = 1\nmean = [0.5]",
                &["channels = 1 needs `std`", "one value"],
            ),
            (
                "channels = 1\nmean = [0.5, 0.4, 0.3]\nstd = [0.2]",
                &["mean has 3 values; channels = 1 takes one value"],
            ),
            ("std = [1e-45]", &["std 1e-45 is below the floor of 1e-6"]),
            (
                "channels = 1\nmean = [0.5]\nstd = [0.0]",
                &["below the floor"],
            ),
            ("std = [0.2, -0.1, 0.2]", &["below the floor"]),
            ("std = [nan]", &["std has a non-finite value (NaN)"]),
            ("mean = [inf]", &["mean has a non-finite value (inf)"]),
        ];
        for (i, (extra, words)) in cases.iter().enumerate() {
            let p = dir.path().join(format!("spec{i}.toml"));
            std::fs::write(&p, format!("onnx = \"m.onnx\"\ninput_size = 8\n{extra}\n")).unwrap();
            let e = ModelSpec::load(&p).unwrap_err();
            assert!(matches!(e, OnnxError::SpecInvalid { .. }), "{extra}: {e}");
            let e = e.to_string();
            assert!(e.contains(&format!("spec{i}.toml")), "{e}");
            for w in *words {
                assert!(e.contains(w), "{extra:?}: `{w}` not in: {e}");
            }
            assert!(!e.contains("mean has 3 values for"), "{e}");
        }
        // At the floor, and a grey model with its statistics, load.
        let ok = ModelSpec::parse(
            "onnx = \"m\"\ninput_size = 8\nchannels = 1\nmean = [0.5]\nstd = [1e-6]",
            Path::new("."),
        )
        .unwrap();
        assert_eq!((ok.mean, ok.std), (vec![0.5], vec![MIN_STD]));
    }

    #[test]
    fn spec_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.toml");
        let e = ModelSpec::load(&p).unwrap_err().to_string();
        assert!(e.contains("nope.toml"), "{e}");
        std::fs::write(&p, "onnx = \"gone.onnx\"\ninput_size = 8\n").unwrap();
        let e = OnnxScorer::from_spec_file(&p).unwrap_err();
        assert!(matches!(e, OnnxError::MissingModel { .. }));
        assert!(e.to_string().contains("gone.onnx"), "{e}");
    }
}
