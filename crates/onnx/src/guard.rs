//! The ONNX file as untrusted input: read with a size limit (special files refused by path), its graph
//! checked for tensors and constant shapes above [`Limits::max_tensor_elements`] *before* tract parses or
//! folds anything, and tract itself run under a panic guard. An adversarial file gets an error naming it,
//! never a panic, an abort on a 16 GiB allocation, or a hang on a FIFO (docs/RELIABILITY.md).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use cxr_core::fsutil;
use tract_onnx::pb::{GraphProto, ModelProto, TensorProto, tensor_proto::DataType};
use tract_onnx::prelude::*;

use crate::OnnxError;

/// Bounds on what a model file may make us read or allocate; `Default` is [`Limits::from_env`]'s fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `.onnx` file, and largest external-data file (protobuf itself stops at 2 GiB).
    pub max_file_bytes: u64,
    /// Largest tensor a constant (initializer, `Constant` node) or a constant shape (`Expand`, `Tile`,
    /// `ConstantOfShape`, `Resize`) may describe, and largest tensor in the typed plan, in elements.
    pub max_tensor_elements: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // 2^28 elements is 1 GiB of f32: above any weight or activation of a chest X-ray classifier at
        // batch 64 and 512 px, far below the 16-32 GiB a hostile shape asks for.
        Self {
            max_file_bytes: 2 << 30,
            max_tensor_elements: 1 << 28,
        }
    }
}

impl Limits {
    /// The defaults, overridden by `CXR_ONNX_MAX_BYTES` and `CXR_ONNX_MAX_ELEMENTS` where set (an unparsable
    /// value is ignored with a warning).
    pub fn from_env() -> Self {
        let d = Self::default();
        let var = |name: &str, default: u64| match std::env::var(name) {
            Ok(v) => v.trim().parse().unwrap_or_else(|_| {
                tracing::warn!("{name}={v:?} is not a number; using {default}");
                default
            }),
            Err(_) => default,
        };
        Self {
            max_file_bytes: var("CXR_ONNX_MAX_BYTES", d.max_file_bytes),
            max_tensor_elements: var("CXR_ONNX_MAX_ELEMENTS", d.max_tensor_elements),
        }
    }
}

/// A model file read and checked: tract's model, the checked protobuf (what onnxruntime is given: never a
/// second read of the file) and the content hash of the file and its external data.
pub struct Checked {
    pub model: InferenceModel,
    pub proto: ModelProto,
    pub sha256: String,
}

/// Reads, checks and parses the ONNX file at `path`.
pub fn load(path: &Path, limits: &Limits) -> Result<Checked, OnnxError> {
    let bytes =
        fsutil::read_bounded(path, limits.max_file_bytes).map_err(|e| OnnxError::Unreadable {
            path: path.to_path_buf(),
            message: io_message(&e),
        })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let (proto, model, external) = parse_checked(&bytes, path, dir, limits)?;
    let mut key = format!("onnx={}", fsutil::sha256_bytes(&bytes));
    for file in external {
        let h = fsutil::sha256_file(&file).map_err(|e| OnnxError::Unreadable {
            path: path.to_path_buf(),
            message: format!("external data: {e}"),
        })?;
        key.push_str(&format!(" {}={h}", file.display()));
    }
    Ok(Checked {
        model,
        proto,
        sha256: fsutil::sha256_bytes(key.as_bytes()),
    })
}

/// Checks and parses ONNX bytes (`path` names them in errors, `dir` holds their external data); returns the
/// model and the external-data files it read, sorted. The fuzz target's entry point.
pub fn parse_bytes(
    bytes: &[u8],
    path: &Path,
    dir: &Path,
    limits: &Limits,
) -> Result<(InferenceModel, Vec<PathBuf>), OnnxError> {
    parse_checked(bytes, path, dir, limits).map(|(_, model, external)| (model, external))
}

/// [`parse_bytes`], with the checked protobuf.
fn parse_checked(
    bytes: &[u8],
    path: &Path,
    dir: &Path,
    limits: &Limits,
) -> Result<(ModelProto, InferenceModel, Vec<PathBuf>), OnnxError> {
    let unreadable = |message: String| OnnxError::Unreadable {
        path: path.to_path_buf(),
        message,
    };
    let proto = guarded(path, || {
        tract_onnx::onnx()
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| crate::root_cause(&e))
    })?
    .map_err(unreadable)?;
    let external = check_model(&proto, dir, limits).map_err(|message| OnnxError::Limit {
        path: path.to_path_buf(),
        message,
    })?;
    let dir_str = dir.to_str();
    // The graph is typed per batch size from the input we set; the exporter's `value_info` shapes (PyTorch's
    // dynamo exporter writes one for every tensor, with a symbolic batch) would fight the concrete batch
    // ("Impossible to unify Sym(batch) with Val(1)"), so they are left out and tract infers them.
    let parsed = guarded(path, || {
        tract_onnx::onnx()
            .with_ignore_value_info(true)
            .parse(&proto, dir_str)
            .map_err(|e| crate::root_cause(&e))
    })?
    .map_err(unreadable)?;
    if !parsed.unresolved_inputs.is_empty() {
        return Err(unreadable(format!(
            "unresolved inputs {:?}",
            parsed.unresolved_inputs
        )));
    }
    Ok((proto, parsed.model, external))
}

/// Runs tract on an untrusted model, turning a panic into an error naming the file.
pub fn guarded<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T, OnnxError> {
    fsutil::catch_panic(f).map_err(|message| OnnxError::Panic {
        path: path.to_path_buf(),
        message: message.replace('\n', " "),
    })
}

/// Checks a typed plan's facts: no tensor of a known shape above the limit, before anything runs.
pub fn check_facts(model: &TypedModel, limits: &Limits) -> Result<(), String> {
    for node in model.nodes() {
        for out in &node.outputs {
            if let Some(shape) = out.fact.shape.as_concrete() {
                let n = volume(shape.iter().map(|&d| d as i64));
                if n.is_none_or(|n| n > limits.max_tensor_elements) {
                    return Err(format!(
                        "node `{}` would make a tensor of shape {shape:?}, over the limit of {} elements \
                         (CXR_ONNX_MAX_ELEMENTS)",
                        node.name, limits.max_tensor_elements
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Elements of a shape; `None` for a negative dimension or an overflow.
fn volume(dims: impl IntoIterator<Item = i64>) -> Option<u64> {
    dims.into_iter()
        .try_fold(1u64, |acc, d| acc.checked_mul(u64::try_from(d).ok()?))
}

fn check_model(proto: &ModelProto, dir: &Path, limits: &Limits) -> Result<Vec<PathBuf>, String> {
    let mut external = BTreeSet::new();
    if let Some(g) = &proto.graph {
        check_graph(g, dir, limits, &mut external)?;
        check_names(g, &HashSet::new())?;
    }
    Ok(external.into_iter().collect())
}

/// Refuses a node input or a graph output that names a value defined nowhere: tract 0.23.9 panics on an
/// undefined graph output (`model.rs:187`, "no entry found for key"), and an undefined node input in the main
/// graph only becomes an "unresolved input" after parsing. `outer` holds the names of the enclosing scopes,
/// which a subgraph (If, Loop, Scan body) may read. Only existence counts: tract wires the edges after
/// creating every node, so the order of the nodes does not matter to it. Returns the names the graph reads
/// from its enclosing scopes.
fn check_names<'a>(
    g: &'a GraphProto,
    outer: &HashSet<&'a str>,
) -> Result<HashSet<&'a str>, String> {
    // What tract defines in a scope (its `outlets_by_name`): inputs, initializers and non-empty node
    // outputs. It reads no `sparse_initializer`, so neither does this.
    let local: HashSet<&str> = g
        .input
        .iter()
        .map(|v| v.name.as_str())
        .chain(g.initializer.iter().map(|t| t.name.as_str()))
        .chain(g.node.iter().flat_map(|n| &n.output).map(String::as_str))
        .filter(|s| !s.is_empty())
        .collect();
    let visible: HashSet<&str> = outer.union(&local).copied().collect();
    // What tract wires in this scope: the nodes' inputs and the outer names read by the bodies it parses
    // (If, Scan); a graph output may name any of these.
    let mut read: HashSet<&str> = HashSet::new();
    for node in &g.node {
        let what = format!("node `{}` ({})", node.name, node.op_type);
        // An empty name is ONNX's "optional input omitted".
        for input in node.input.iter().filter(|s| !s.is_empty()) {
            if !visible.contains(input.as_str()) {
                let sparse = g
                    .sparse_initializer
                    .iter()
                    .any(|s| s.values.as_ref().is_some_and(|v| v.name == *input));
                return Err(format!(
                    "{what} reads `{input}`, which no graph input, initializer or node output defines{}",
                    if sparse {
                        " (a sparse initializer: not supported)"
                    } else {
                        ""
                    }
                ));
            }
            read.insert(input);
        }
        for a in &node.attribute {
            for sub in a.g.iter().chain(&a.graphs) {
                let free = check_names(sub, &visible)
                    .map_err(|e| format!("{what}, subgraph `{}`: {e}", a.name))?;
                if matches!(node.op_type.as_str(), "If" | "Scan") {
                    read.extend(free);
                }
            }
        }
    }
    for out in &g.output {
        let name = out.name.as_str();
        if !local.contains(name) && !read.contains(name) {
            // A subgraph output naming an enclosing graph's value directly panics tract too.
            return Err(if outer.contains(name) {
                format!(
                    "graph output `{name}` is a value of an enclosing graph, which tract cannot return \
                     from a subgraph (an Identity node in the subgraph can)"
                )
            } else {
                format!(
                    "graph output `{name}` names a value that no graph input, initializer or node \
                     output defines"
                )
            });
        }
    }
    Ok(read.difference(&local).copied().collect())
}

fn check_graph(
    g: &GraphProto,
    dir: &Path,
    limits: &Limits,
    external: &mut BTreeSet<PathBuf>,
) -> Result<(), String> {
    // Integer and float constants by name, to read the shape inputs of the ops below.
    let mut consts: HashMap<&str, &TensorProto> = HashMap::new();
    for t in &g.initializer {
        check_tensor(
            t,
            &format!("initializer `{}`", t.name),
            dir,
            limits,
            external,
        )?;
        consts.insert(t.name.as_str(), t);
    }
    for node in &g.node {
        let what = format!("node `{}` ({})", node.name, node.op_type);
        for a in &node.attribute {
            if let Some(t) = &a.t {
                check_tensor(t, &what, dir, limits, external)?;
            }
            for t in &a.tensors {
                check_tensor(t, &what, dir, limits, external)?;
            }
            if let Some(sub) = &a.g {
                check_graph(sub, dir, limits, external)?;
            }
            for sub in &a.graphs {
                check_graph(sub, dir, limits, external)?;
            }
        }
        if node.op_type == "Constant"
            && let (Some(out), Some(t)) = (
                node.output.first(),
                node.attribute
                    .iter()
                    .find(|a| a.name == "value")
                    .and_then(|a| a.t.as_ref()),
            )
        {
            consts.insert(out.as_str(), t);
        }
        let shape_input = match node.op_type.as_str() {
            "ConstantOfShape" => Some(0),
            "Expand" | "Tile" => Some(1),
            "Resize" => Some(3),
            _ => None,
        };
        let ints = shape_input
            .and_then(|i| node.input.get(i))
            .and_then(|name| consts.get(name.as_str()))
            .and_then(|t| int_values(t));
        if let Some(ints) = ints {
            let n = volume(ints.iter().copied());
            if n.is_none_or(|n| n > limits.max_tensor_elements) {
                return Err(format!(
                    "{what}: shape {ints:?} is over the limit of {} elements (CXR_ONNX_MAX_ELEMENTS)",
                    limits.max_tensor_elements
                ));
            }
        }
        // Resize by scales: their product bounds the growth of whatever the input is.
        if node.op_type == "Resize"
            && let Some(scales) = node
                .input
                .get(2)
                .and_then(|name| consts.get(name.as_str()))
                .and_then(|t| float_values(t))
        {
            let growth = scales.iter().map(|&s| s as f64).product::<f64>();
            if !growth.is_finite() || growth > limits.max_tensor_elements as f64 {
                return Err(format!(
                    "{what}: scales {scales:?} grow a tensor over the limit of {} elements \
                     (CXR_ONNX_MAX_ELEMENTS)",
                    limits.max_tensor_elements
                ));
            }
        }
    }
    Ok(())
}

fn check_tensor(
    t: &TensorProto,
    what: &str,
    dir: &Path,
    limits: &Limits,
    external: &mut BTreeSet<PathBuf>,
) -> Result<(), String> {
    if t.data_type == DataType::String as i32 && !t.raw_data.is_empty() {
        return Err(format!(
            "{what}: a STRING tensor with raw data (ONNX stores strings in string_data)"
        ));
    }
    let n = volume(t.dims.iter().copied());
    if n.is_none_or(|n| n > limits.max_tensor_elements) {
        return Err(format!(
            "{what}: dimensions {:?} are over the limit of {} elements (CXR_ONNX_MAX_ELEMENTS)",
            t.dims, limits.max_tensor_elements
        ));
    }
    if let Some(loc) = t.external_data.iter().find(|e| e.key == "location") {
        // tract maps the file; a FIFO or device there would hang or never end.
        let file = dir.join(&loc.value);
        let meta =
            fsutil::open_regular(&file).map_err(|e| format!("{what}: external data: {e}"))?;
        let len = meta.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        if len > limits.max_file_bytes {
            return Err(format!(
                "{what}: external data {} is {len} bytes, over the limit of {} (CXR_ONNX_MAX_BYTES)",
                file.display(),
                limits.max_file_bytes
            ));
        }
        external.insert(file);
    }
    Ok(())
}

/// The values of a small integer constant (a shape), from `int64_data`/`int32_data` or raw little-endian.
fn int_values(t: &TensorProto) -> Option<Vec<i64>> {
    if t.data_type == DataType::Int64 as i32 {
        if !t.int64_data.is_empty() {
            return Some(t.int64_data.clone());
        }
        return Some(
            t.raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        );
    }
    if t.data_type == DataType::Int32 as i32 {
        if !t.int32_data.is_empty() {
            return Some(t.int32_data.iter().map(|&v| v as i64).collect());
        }
        return Some(
            t.raw_data
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64)
                .collect(),
        );
    }
    None
}

fn float_values(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type != DataType::Float as i32 {
        return None;
    }
    if !t.float_data.is_empty() {
        return Some(t.float_data.clone());
    }
    Some(
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
            .collect(),
    )
}

/// An I/O error's message with the path left out (the caller's error names it).
pub(crate) fn io_message(e: &cxr_core::CoreError) -> String {
    match e {
        cxr_core::CoreError::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}
