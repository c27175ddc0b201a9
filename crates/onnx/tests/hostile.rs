//! Hostile model files, built here as ONNX protobufs: each must give an error naming the file, never a panic,
//! an abort on a huge allocation, or a hang (issue 31). Also: outputs whose first axis is not the batch, and
//! the model content hash that keeps two models behind one spec apart.

use std::path::{Path, PathBuf};

use cxr_core::{Grey8, Scorer};
use cxr_onnx::pb::attribute_proto::AttributeType;
use cxr_onnx::pb::tensor_proto::DataType;
use cxr_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use cxr_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};
use cxr_onnx::{Engine, LoadOptions, ModelSpec, OnnxScorer};
use prost::Message;

/// tract, and onnxruntime where it is found (`skipped: ...` otherwise): the run-time checks are the same
/// code for both.
fn engines() -> Vec<Engine> {
    let mut v = vec![Engine::Tract];
    match cxr_onnx::engine::onnxruntime() {
        Ok(_) => v.push(Engine::Onnxruntime),
        Err(e) => println!("skipped: the onnxruntime engine ({e})"),
    }
    v
}

fn on(spec: &Path, engine: Engine) -> OnnxScorer {
    let opts = LoadOptions {
        threads: Some(1),
        ..LoadOptions::engine(engine)
    };
    OnnxScorer::load(ModelSpec::load(spec).unwrap(), &opts).unwrap()
}

const SIZE: i64 = 8;

fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => dimension::Value::DimValue(*v),
                None => dimension::Value::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                // No dimensions given: no declared shape (the output's), not a scalar.
                shape: (!dims.is_empty()).then_some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: format!("{op}_{output}"),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

fn ints_attr(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn int64s(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: DataType::Int64 as i32,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

/// x [N, 1, 8, 8] → GlobalAveragePool → Flatten → `y` [N, 1], then `extra` nodes (which may replace `y`).
fn model(extra: Vec<NodeProto>, initializer: Vec<TensorProto>, output: &str) -> Vec<u8> {
    let mut nodes = vec![
        node("GlobalAveragePool", &["x"], "pooled", vec![]),
        node("Flatten", &["pooled"], "y", vec![]),
    ];
    nodes.extend(extra);
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(GraphProto {
            name: "hostile".into(),
            node: nodes,
            initializer,
            input: vec![value_info("x", &[None, Some(1), Some(SIZE), Some(SIZE)])],
            output: vec![value_info(output, &[])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Writes `m.onnx` (the given bytes) and its spec into `dir`; returns the spec's path.
fn write_model(dir: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::write(dir.join("m.onnx"), bytes).unwrap();
    let spec = dir.join("m.toml");
    std::fs::write(
        &spec,
        format!(
            "onnx = \"m.onnx\"\ninput_size = {SIZE}\nchannels = 1\nmean = [0.0]\nstd = [1.0]\n"
        ),
    )
    .unwrap();
    spec
}

fn load_err(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_model(dir.path(), bytes);
    let e = OnnxScorer::from_spec_file(&spec).unwrap_err().to_string();
    assert!(e.contains("m.onnx"), "the error must name the file: {e}");
    e
}

fn grey(v: u8) -> Grey8 {
    Grey8::new(SIZE as u32, SIZE as u32, vec![v; (SIZE * SIZE) as usize]).unwrap()
}

#[test]
fn the_plain_model_loads_and_scores_each_image() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_model(dir.path(), &model(vec![], vec![], "y"));
    for engine in engines() {
        let s = on(&spec, engine);
        let out = s.score(&[grey(0), grey(255)], false).unwrap();
        // Mean of x / 255 (mean 0, std 1) through the sigmoid: 0.5 and sigmoid(1).
        assert!(
            (out.scores[0] - 0.5).abs() < 1e-6,
            "{engine}: {:?}",
            out.scores
        );
        assert!((out.scores[1] - 1.0 / (1.0 + (-1f64).exp())).abs() < 1e-6);
    }
}

#[test]
fn a_string_initializer_with_raw_data_is_refused() {
    let bad = TensorProto {
        name: "s".into(),
        dims: vec![2],
        data_type: DataType::String as i32,
        raw_data: b"abcdefgh".to_vec(),
        ..Default::default()
    };
    let e = load_err(&model(vec![], vec![bad], "y"));
    assert!(e.contains("STRING") && e.contains("`s`"), "{e}");
}

#[test]
fn absurd_constant_shapes_are_refused_before_allocation() {
    let huge = [1, 200_000, 200_000, 8];
    let cases: Vec<(&str, Vec<NodeProto>, Vec<TensorProto>)> = vec![
        (
            "ConstantOfShape",
            vec![node("ConstantOfShape", &["shape"], "z", vec![])],
            vec![int64s("shape", &huge)],
        ),
        (
            "Expand",
            vec![node("Expand", &["x", "shape"], "z", vec![])],
            vec![int64s("shape", &huge)],
        ),
        (
            "Tile",
            vec![node("Tile", &["x", "reps"], "z", vec![])],
            vec![int64s("reps", &huge)],
        ),
        (
            "Resize",
            vec![node("Resize", &["x", "", "", "sizes"], "z", vec![])],
            vec![int64s("sizes", &huge)],
        ),
        // An overflowing shape, and a huge initializer declared with no data.
        (
            "ConstantOfShape",
            vec![node("ConstantOfShape", &["shape"], "z", vec![])],
            vec![int64s("shape", &[i64::MAX, i64::MAX])],
        ),
        (
            "initializer",
            vec![],
            vec![TensorProto {
                name: "w".into(),
                dims: vec![1 << 20, 1 << 20],
                data_type: DataType::Float as i32,
                ..Default::default()
            }],
        ),
    ];
    for (op, nodes, init) in cases {
        let e = load_err(&model(nodes, init, "z"));
        assert!(e.contains("refused") && e.contains(op), "{op}: {e}");
        assert!(e.contains("CXR_ONNX_MAX_ELEMENTS"), "{e}");
    }
}

#[test]
fn a_constant_shape_node_is_read_too_and_the_limit_is_overridable() {
    // The shape comes from a Constant node, not an initializer.
    let constant = NodeProto {
        name: "c".into(),
        op_type: "Constant".into(),
        output: vec!["shape".into()],
        attribute: vec![AttributeProto {
            name: "value".into(),
            r#type: AttributeType::Tensor as i32,
            t: Some(int64s("", &[4, 1, SIZE, SIZE])),
            ..Default::default()
        }],
        ..Default::default()
    };
    let bytes = model(
        vec![constant, node("Expand", &["x", "shape"], "z", vec![])],
        vec![],
        "y",
    );
    let dir = tempfile::tempdir().unwrap();
    let spec = ModelSpec::load(&write_model(dir.path(), &bytes)).unwrap();
    // 256 elements: fine by default, refused under a limit of 100.
    assert!(OnnxScorer::new(spec.clone()).is_ok());
    let tight = cxr_onnx::Limits {
        max_tensor_elements: 100,
        ..Default::default()
    };
    let e = OnnxScorer::with_limits(spec, tight)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Expand") && e.contains("100 elements"), "{e}");
}

/// The bound on the typed graph's tensors holds whichever engine runs the model: onnxruntime allocates what
/// the graph asks for, so tract types it first for both.
#[test]
fn a_typed_tensor_over_the_limit_is_refused_at_load_on_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ModelSpec::load(&write_model(dir.path(), &model(vec![], vec![], "y"))).unwrap();
    for engine in engines() {
        let opts = LoadOptions {
            limits: Some(cxr_onnx::Limits {
                max_tensor_elements: 32,
                ..Default::default()
            }),
            ..LoadOptions::engine(engine)
        };
        let e = OnnxScorer::load(spec.clone(), &opts)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m.onnx")
                && e.contains("[1, 1, 8, 8]")
                && e.contains("over the limit of 32"),
            "{engine}: {e}"
        );
    }
}

fn graph_attr(name: &str, node: Vec<NodeProto>, output: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Graph as i32,
        g: Some(GraphProto {
            name: name.into(),
            node,
            output: vec![value_info(output, &[])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `If(cond)` on an initializer `cond` = true: the then-branch is `then` returning `then_out`, the
/// else-branch copies `y`, read from the enclosing graph.
fn if_model(then: Vec<NodeProto>, then_out: &str) -> Vec<u8> {
    let cond = TensorProto {
        name: "cond".into(),
        data_type: DataType::Bool as i32,
        int32_data: vec![1],
        ..Default::default()
    };
    let then_branch = graph_attr("then_branch", then, then_out);
    let else_branch = graph_attr(
        "else_branch",
        vec![node("Identity", &["y"], "e", vec![])],
        "e",
    );
    model(
        vec![node("If", &["cond"], "z", vec![then_branch, else_branch])],
        vec![cond],
        "z",
    )
}

/// tract panics on a graph output naming nothing (and only notes an undefined node input after parsing): the
/// protobuf check refuses both first, naming the node or the output (the 49 crashes of the first
/// `onnx_model` fuzz run).
#[test]
fn values_defined_nowhere_are_refused_before_tract_parses() {
    let cases = [
        (
            model(
                vec![node("Add", &["y", "nowhere"], "z", vec![])],
                vec![],
                "z",
            ),
            "refused: node `Add_z` (Add) reads `nowhere`, which no graph input, initializer or node output defines",
        ),
        (
            model(vec![], vec![], "ghost"),
            "refused: graph output `ghost` names a value that no graph input",
        ),
        // Inside a subgraph: neither the branch nor the enclosing graph defines `nowhere`.
        (
            if_model(vec![node("Neg", &["nowhere"], "t", vec![])], "t"),
            "refused: node `If_z` (If), subgraph `then_branch`: node `Neg_t` (Neg) reads `nowhere`",
        ),
        // A branch returning the enclosing graph's `y` itself: tract panics on that too.
        (
            if_model(vec![], "y"),
            "subgraph `then_branch`: graph output `y` is a value of an enclosing graph",
        ),
    ];
    for (bytes, want) in cases {
        let e = load_err(&bytes);
        assert!(e.contains(want) && !e.contains("panicked"), "{e}");
    }
}

/// What the check must let through: an omitted optional input (`""`) and a subgraph reading a value of the
/// enclosing graph. Both load and score as the graph says.
#[test]
fn omitted_optional_inputs_and_outer_values_in_subgraphs_load() {
    let hi = TensorProto {
        name: "hi".into(),
        data_type: DataType::Float as i32,
        float_data: vec![0.25],
        ..Default::default()
    };
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    for (what, bytes, dark, bright) in [
        // Clip with `min` omitted: y = 0 stays 0, y = 1 is clipped to 0.25.
        (
            "Clip",
            model(
                vec![node("Clip", &["y", "", "hi"], "z", vec![])],
                vec![hi],
                "z",
            ),
            0.5,
            sigmoid(0.25),
        ),
        // The then-branch, taken, negates the enclosing graph's `y`.
        (
            "If",
            if_model(vec![node("Neg", &["y"], "t", vec![])], "t"),
            0.5,
            sigmoid(-1.0),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let spec = write_model(dir.path(), &bytes);
        for engine in engines() {
            let out = on(&spec, engine)
                .score(&[grey(0), grey(255)], false)
                .unwrap();
            assert!(
                (out.scores[0] - dark).abs() < 1e-6 && (out.scores[1] - bright).abs() < 1e-6,
                "{what} {engine}: {:?}",
                out.scores
            );
        }
    }
}

#[test]
fn garbage_and_oversized_files_give_errors_naming_the_file() {
    let e = load_err(b"\xff\xff\xff\xff not a protobuf");
    assert!(e.contains("unreadable ONNX"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let spec = ModelSpec::load(&write_model(dir.path(), &model(vec![], vec![], "y"))).unwrap();
    let tight = cxr_onnx::Limits {
        max_file_bytes: 10,
        ..Default::default()
    };
    let e = OnnxScorer::with_limits(spec, tight)
        .unwrap_err()
        .to_string();
    assert!(e.contains("m.onnx") && e.contains("over the limit"), "{e}");
}

#[test]
fn special_files_are_refused_by_path_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let spec_with = |onnx: &Path| {
        let p = dir.path().join("s.toml");
        std::fs::write(
            &p,
            format!("onnx = {:?}\ninput_size = 8\n", onnx.display().to_string()),
        )
        .unwrap();
        p
    };
    // A directory is not "not found".
    let e = OnnxScorer::from_spec_file(&spec_with(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("a directory") && !e.contains("not found"), "{e}");
    let e = OnnxScorer::from_spec_file(&spec_with(Path::new("/dev/zero")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/dev/zero") && e.contains("a device"), "{e}");
    // The spec itself: a device is refused, not read until memory runs out.
    let e = ModelSpec::load(Path::new("/dev/zero"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/dev/zero") && e.contains("a device"), "{e}");
    let fifo = dir.path().join("fifo");
    if std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        let e = ModelSpec::load(&fifo).unwrap_err().to_string();
        assert!(e.contains("fifo") && e.contains("a FIFO"), "{e}");
        let e = OnnxScorer::from_spec_file(&spec_with(&fifo))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fifo") && e.contains("a FIFO"), "{e}");
    } else {
        println!("skipped: no mkfifo for the FIFO cases");
    }
}

#[test]
fn outputs_whose_first_axis_is_not_the_batch_are_errors() {
    let keepdims = AttributeProto {
        name: "keepdims".into(),
        r#type: AttributeType::Int as i32,
        i: 1,
        ..Default::default()
    };
    let reduce_all = node(
        "ReduceMean",
        &["y"],
        "z",
        vec![ints_attr("axes", &[0, 1]), keepdims],
    );
    let concat = node(
        "Concat",
        &["y", "y"],
        "z",
        vec![AttributeProto {
            name: "axis".into(),
            r#type: AttributeType::Int as i32,
            i: 0,
            ..Default::default()
        }],
    );
    for (what, extra, shape) in [
        ("[1, 1]", reduce_all, "[1, 1]"),
        ("[2N, 1]", concat, "[4, 1]"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let spec = write_model(dir.path(), &model(vec![extra], vec![], "z"));
        for engine in engines() {
            let s = on(&spec, engine);
            let e = s
                .score(&[grey(0), grey(255)], false)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("m.onnx") && e.contains("score output") && e.contains(shape),
                "{engine} {what}: {e}"
            );
        }
    }
}

#[test]
fn the_content_hash_follows_the_onnx_file_not_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_model(dir.path(), &model(vec![], vec![], "y"));
    let a = OnnxScorer::from_spec_file(&spec).unwrap();
    let again = OnnxScorer::from_spec_file(&spec).unwrap();
    assert_eq!(a.sha256(), again.sha256());
    assert_eq!(a.model_sha256(), Some(a.sha256()));
    // Same spec, another ONNX file behind it.
    let neg = node("Neg", &["y"], "z", vec![]);
    std::fs::write(dir.path().join("m.onnx"), model(vec![neg], vec![], "z")).unwrap();
    let b = OnnxScorer::from_spec_file(&spec).unwrap();
    assert_ne!(a.sha256(), b.sha256());
    assert_eq!(b.sha256().len(), 64);
}
