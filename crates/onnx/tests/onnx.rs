//! cxr-onnx against onnxruntime (committed reference, and live when /work/pyvenv has it), the spec's refusals,
//! the cue readers the audit's end-to-end test relies on, and the large torchvision exports when present.

use std::path::{Path, PathBuf};
use std::process::Command;

use cxr_core::{Grey8, Scorer, model_input};
use cxr_onnx::{ModelSpec, OnnxError, OnnxScorer};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load_png(path: &Path) -> Grey8 {
    let img = image::open(path).unwrap().to_luma8();
    Grey8::new(img.width(), img.height(), img.into_raw()).unwrap()
}

fn python() -> Option<PathBuf> {
    let p = std::env::var_os("CXR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/pyvenv/bin/python"));
    let ok = p.exists()
        && Command::new(&p)
            .args(["-c", "import onnxruntime, PIL, numpy"])
            .status()
            .is_ok_and(|s| s.success());
    ok.then_some(p)
}

struct Reference {
    image: String,
    logit: f64,
    score: f64,
    features: Vec<f32>,
}

fn reference() -> Vec<Reference> {
    let mut r = csv::Reader::from_path(fixtures().join("small_cnn_reference.csv")).unwrap();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            Reference {
                image: rec[0].to_string(),
                logit: rec[1].parse().unwrap(),
                score: rec[2].parse().unwrap(),
                features: (3..rec.len()).map(|i| rec[i].parse().unwrap()).collect(),
            }
        })
        .collect()
}

#[test]
fn small_cnn_matches_onnxruntime_scores_and_features() {
    let scorer = OnnxScorer::from_spec_file(&fixtures().join("small_cnn.toml")).unwrap();
    assert!(scorer.has_features());
    assert_eq!(scorer.input_size(), 64);
    let refs = reference();
    assert_eq!(refs.len(), 4);
    let images: Vec<Grey8> = refs
        .iter()
        .map(|r| load_png(&fixtures().join(&r.image)))
        .collect();
    let scored = scorer.score(&images, true).unwrap();
    let feats = scored.features.unwrap();
    // The references differ from each other, so agreeing with all of them is not an accident.
    assert!(refs.iter().any(|r| (r.score - refs[0].score).abs() > 0.05));
    for ((r, s), f) in refs.iter().zip(&scored.scores).zip(&feats) {
        assert!(
            (r.score - s).abs() < 1e-4,
            "{}: {s} vs onnxruntime {}",
            r.image,
            r.score
        );
        assert_eq!(f.len(), 16, "{}", r.image);
        assert_eq!(f.len(), r.features.len());
        for (a, b) in f.iter().zip(&r.features) {
            assert!((a - b).abs() < 1e-4, "{}: feature {a} vs {b}", r.image);
        }
    }
    // The logits are the graph's own output, not recomputed from the scores.
    let logits = scorer.logits(&images).unwrap();
    for (r, l) in refs.iter().zip(&logits) {
        assert!(
            (r.logit - l).abs() < 1e-3,
            "{}: logit {l} vs onnxruntime {}",
            r.image,
            r.logit
        );
    }
    // Scored one at a time (other plan, other chunking) gives the same numbers.
    let single = scorer.with_threads(1).score(&images[1..2], false).unwrap();
    assert!((single.scores[0] - scored.scores[1]).abs() < 1e-6);
    assert!(single.features.is_none());

    let Some(py) = python() else {
        println!(
            "skipped: live onnxruntime comparison (no python with onnxruntime; set CXR_PYTHON)"
        );
        return;
    };
    let script = r#"
import sys, numpy as np, onnxruntime as ort
from PIL import Image
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
for p in sys.argv[2:]:
    x = np.asarray(Image.open(p).convert("L"), np.float32) / np.float32(255)
    x = ((x[None] - mean) / std).astype(np.float32)[None]
    lg = float(sess.run(None, {"input": x})[0][0, 0])
    print(1 / (1 + np.exp(-lg)))
"#;
    let mut cmd = Command::new(py);
    cmd.arg("-c")
        .arg(script)
        .arg(fixtures().join("small_cnn.onnx"));
    for r in &refs {
        cmd.arg(fixtures().join(&r.image));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live: Vec<f64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(live.len(), scored.scores.len());
    for (l, s) in live.iter().zip(&scored.scores) {
        assert!((l - s).abs() < 1e-4, "{s} vs live onnxruntime {l}");
    }
}

#[test]
fn images_of_another_size_go_through_the_shared_resize() {
    let scorer = OnnxScorer::from_spec_file(&fixtures().join("small_cnn.toml")).unwrap();
    let big = Grey8::new(
        150,
        97,
        (0..150 * 97).map(|i| ((i * 13) % 256) as u8).collect(),
    )
    .unwrap();
    let plane = model_input::resize_square(150, 97, &big.data, 64).unwrap();
    let small = Grey8::new(64, 64, plane.into_owned()).unwrap();
    let a = scorer
        .score(std::slice::from_ref(&big), false)
        .unwrap()
        .scores[0];
    let b = scorer.score(&[small], false).unwrap().scores[0];
    assert_eq!(a, b);
}

fn spec_with(dir: &Path, model: &str, extra: &str) -> PathBuf {
    let base = std::fs::read_to_string(fixtures().join(format!("{model}.toml"))).unwrap();
    let mut text: String = base
        .lines()
        .filter(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            !extra
                .lines()
                .any(|e| e.split('=').next().unwrap_or("").trim() == key)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    text = text.replace(
        &format!("\"{model}.onnx\""),
        &format!("{:?}", fixtures().join(format!("{model}.onnx"))),
    );
    text.push_str(extra);
    let p = dir.join("spec.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn load_err(spec: &Path) -> OnnxError {
    OnnxScorer::from_spec_file(spec).unwrap_err()
}

#[test]
fn wrong_specs_and_models_fail_at_load_with_one_line_naming_file_or_node() {
    let dir = tempfile::tempdir().unwrap();
    let one_line = |e: &OnnxError, word: &str| {
        let m = e.to_string();
        assert!(!m.contains('\n'), "{m}");
        assert!(m.contains(word), "{m} lacks {word}");
    };

    let e = load_err(&spec_with(dir.path(), "small_cnn", "input_size = 100\n"));
    assert!(matches!(e, OnnxError::InputShape { .. }), "{e}");
    one_line(&e, "small_cnn.onnx");
    one_line(&e, "100");

    let e = load_err(&spec_with(
        dir.path(),
        "small_cnn",
        "channels = 1\nmean = [0.5]\nstd = [0.5]\n",
    ));
    assert!(matches!(e, OnnxError::InputShape { .. }), "{e}");
    one_line(&e, "channels");

    let e = load_err(&spec_with(
        dir.path(),
        "small_cnn",
        "features = \"no_such_node\"\n",
    ));
    assert!(matches!(e, OnnxError::UnknownNode { .. }), "{e}");
    one_line(&e, "no_such_node");

    let e = load_err(&spec_with(dir.path(), "small_cnn", "output_index = 1\n"));
    assert!(
        matches!(
            e,
            OnnxError::OutputIndex {
                index: 1,
                columns: 1,
                ..
            }
        ),
        "{e}"
    );
    one_line(&e, "small_cnn.onnx");

    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"this is not a protobuf at all \xff\xff\xff").unwrap();
    let spec = dir.path().join("g.toml");
    std::fs::write(&spec, "onnx = \"garbage.onnx\"\ninput_size = 8\n").unwrap();
    let e = load_err(&spec);
    assert!(matches!(e, OnnxError::Unreadable { .. }), "{e}");
    one_line(&e, "garbage.onnx");

    std::fs::write(&spec, "onnx = \"missing.onnx\"\ninput_size = 8\n").unwrap();
    let e = load_err(&spec);
    assert!(matches!(e, OnnxError::MissingModel { .. }), "{e}");
    one_line(&e, "missing.onnx");
}

#[test]
fn bad_outputs_fail_the_batch_naming_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let img = chest(None);
    // A logit read as a probability: the cue reader's 4x logits leave [0, 1] on a bright square.
    let spec = spec_with(dir.path(), "cue_outside", "output = \"probability\"\n");
    let scorer = OnnxScorer::from_spec_file(&spec).unwrap();
    let e = scorer
        .score(&[chest(Some(OUTSIDE))], false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cue_outside.onnx") && e.contains("outside [0, 1]"),
        "{e}"
    );
    // A std below the floor is refused when the spec is loaded, naming the spec file.
    let spec = spec_with(
        dir.path(),
        "cue_outside",
        "mean = [3e38, 3e38, 3e38]\nstd = [1e-38, 1e-38, 1e-38]\n",
    );
    let e = OnnxScorer::from_spec_file(&spec).unwrap_err().to_string();
    assert!(
        e.contains(&spec.display().to_string()) && e.contains("MIN_STD"),
        "{e}"
    );
    // Statistics that still overflow f32 turn the input into infinities, so the model outputs NaN.
    let spec = spec_with(
        dir.path(),
        "cue_outside",
        "mean = [3e38, 3e38, 3e38]\nstd = [1e-6, 1e-6, 1e-6]\n",
    );
    let scorer = OnnxScorer::from_spec_file(&spec).unwrap();
    let e = scorer.score(&[img], false).unwrap_err().to_string();
    assert!(
        e.contains("cue_outside.onnx") && e.contains("non-finite"),
        "{e}"
    );
}

const OUTSIDE: (usize, usize) = (8, 8);
const INSIDE: (usize, usize) = (96, 48);

/// A 224 px "chest": dark background, two brighter lung ellipses (left one centred at row 112, col 64,
/// radii 70 x 40, as docs/MODEL_SPEC.md says), optionally a bright 32 px square at `square` (row, col).
fn chest(square: Option<(usize, usize)>) -> Grey8 {
    let n = 224usize;
    let mut data = vec![40u8; n * n];
    for r in 0..n {
        for c in 0..n {
            for cc in [64.0, 160.0] {
                let (dy, dx) = ((r as f64 - 112.0) / 70.0, (c as f64 - cc) / 40.0);
                if dy * dy + dx * dx <= 1.0 {
                    data[r * n + c] = 110 + ((r * 7 + c * 3) % 20) as u8;
                }
            }
        }
    }
    if let Some((r0, c0)) = square {
        for r in r0..r0 + 32 {
            for c in c0..c0 + 32 {
                data[r * n + c] = 250;
            }
        }
    }
    Grey8::new(n as u32, n as u32, data).unwrap()
}

fn flat(square: Option<(usize, usize)>) -> Grey8 {
    let mut g = Grey8::new(224, 224, vec![90; 224 * 224]).unwrap();
    if let Some((r0, c0)) = square {
        for r in r0..r0 + 32 {
            g.data[r * 224 + c0..r * 224 + c0 + 32].fill(250);
        }
    }
    g
}

#[test]
fn cue_readers_follow_their_square_only() {
    let outside = OnnxScorer::from_spec_file(&fixtures().join("cue_outside.toml")).unwrap();
    let inside = OnnxScorer::from_spec_file(&fixtures().join("cue_inside.toml")).unwrap();
    assert!(!outside.has_features());
    // On a flat image the logit is 0; a square in the reader's rectangle raises it, one elsewhere lowers it
    // (it raises the whole-image mean only).
    let imgs = [flat(None), flat(Some(OUTSIDE)), flat(Some(INSIDE))];
    let o = outside.score(&imgs, false).unwrap().scores;
    let i = inside.score(&imgs, false).unwrap().scores;
    assert!(
        (o[0] - 0.5).abs() < 0.01 && o[1] > 0.99 && o[2] < 0.45,
        "{o:?}"
    );
    assert!(
        (i[0] - 0.5).abs() < 0.01 && i[2] > 0.99 && i[1] < 0.45,
        "{i:?}"
    );
    // On a chest, the outside reader still follows its corner square and nothing else.
    let c = outside
        .score(
            &[chest(None), chest(Some(OUTSIDE)), chest(Some(INSIDE))],
            false,
        )
        .unwrap()
        .scores;
    assert!(c[1] > 0.99 && c[0] < 0.5 && c[2] < c[0], "{c:?}");
}

#[test]
fn large_torchvision_exports_load_and_score() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/onnx-fixtures");
    for name in ["resnet50", "densenet121"] {
        let spec = dir.join(format!("{name}.toml"));
        if !spec.exists() {
            println!(
                "skipped: {} absent (crates/onnx/scripts/make_fixtures.py --large target/onnx-fixtures)",
                spec.display()
            );
            continue;
        }
        let scorer = OnnxScorer::from_spec_file(&spec).unwrap();
        let imgs = [chest(None), chest(Some(INSIDE)), chest(Some(OUTSIDE))];
        let s = scorer.score(&imgs, true).unwrap();
        assert_eq!(s.scores.len(), 3);
        assert!(s.scores.iter().all(|v| (0.0..=1.0).contains(v)));
        let f = s.features.unwrap();
        assert_eq!(f[0].len(), if name == "resnet50" { 2048 } else { 1024 });
        let _ = ModelSpec::load(&spec).unwrap();
    }
}
