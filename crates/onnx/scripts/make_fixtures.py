#!/usr/bin/env python3
"""Writes the ONNX test fixtures of cxr-onnx (see docs/MODEL_SPEC.md, "Fixtures").

  make_fixtures.py                 committed fixtures -> crates/onnx/tests/fixtures/
  make_fixtures.py --no-torch      only the graphs built with onnx.helper (cue, lung and noise readers)
  make_fixtures.py --large DIR     ResNet50 + DenseNet121 (random weights, opset 17) -> DIR (not committed)
  make_fixtures.py --default-export DIR [--arch resnet18,resnet50]
                                   torchvision models (random weights) through torch.onnx.export's *default*
                                   exporter (dynamo from torch 2.9, opset 18), a dynamic batch axis, and a spec
                                   whose `features` is the tensor feeding the classifier (not a graph output)

Committed: small_cnn.onnx (conv+bn+relu+pool+linear, random weights, a `features` node) with four test images
and onnxruntime's outputs on them (small_cnn_reference.csv); the cue readers cue_outside.onnx / cue_inside.onnx,
built node by node with onnx.helper; the audit's behavioural controls lung_reader.onnx (the mean of a square
inside the left lung, nothing else) and noise_reader.onnx (the image's high-frequency energy, a source
signature spread over the whole image), also built with onnx.helper. Each model has its spec TOML beside it.
Deterministic (fixed seeds).
"""
import argparse
import csv
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
SMALL = 64  # small CNN input side
CUE = 224  # cue readers' input side
OPSET = 17


def normalise(grey):
    """grey uint8 [H, W] -> [3, H, W] float32, the spec's ImageNet normalisation of x / 255."""
    x = grey.astype(np.float32) / np.float32(255.0)
    return np.stack([(x - np.float32(m)) / np.float32(s) for m, s in zip(MEAN, STD)]).astype(np.float32)


def test_images():
    """Four 64x64 grey images with different content (already at input size: no resize in the reference)."""
    rng = np.random.default_rng(20)
    yy, xx = np.mgrid[0:SMALL, 0:SMALL]
    imgs = {
        "gradient.png": (xx * 4).clip(0, 255),
        "noise.png": rng.integers(0, 256, (SMALL, SMALL)),
        "disc.png": np.where((yy - 30) ** 2 + (xx - 36) ** 2 < 300, 220, 30),
        "bars.png": np.where((yy // 8) % 2 == 0, 200, 60) + (xx // 16) * 10,
    }
    return {k: v.astype(np.uint8) for k, v in imgs.items()}


def spec(path, onnx_name, size, output, features=None, index=0):
    lines = [
        f'onnx = "{onnx_name}"',
        f"input_size = {size}",
        "channels = 3",
        f"mean = {MEAN}",
        f"std = {STD}",
        f'output = "{output}"',
        f"output_index = {index}",
    ]
    if features:
        lines.append(f'features = "{features}"')
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def rename_features(model_path, gemm_input_producer_op):
    """Names the tensor feeding the final Gemm (and its node) `features`, so a spec can point at it."""
    m = onnx.load(model_path)
    g = m.graph
    gemm = [n for n in g.node if n.op_type == "Gemm"][-1]
    old = gemm.input[0]
    producer = [n for n in g.node if old in n.output][0]
    assert producer.op_type == gemm_input_producer_op, producer.op_type
    producer.name = "features"
    for n in g.node:
        n.input[:] = ["features" if i == old else i for i in n.input]
        n.output[:] = ["features" if o == old else o for o in n.output]
    onnx.checker.check_model(m)
    onnx.save(m, model_path)


def small_cnn():
    import torch
    from torch import nn

    torch.manual_seed(20)

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            )
            self.fc = nn.Linear(16, 1)

        def forward(self, x):
            return self.fc(self.body(x))

    net = Small()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a wrong BN shows
        for bn in (net.body[1], net.body[5]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
        net.fc.weight.mul_(40.0)  # logits of several units, so scores are not all ~0.5 and a wrong net shows
    net.eval()
    path = os.path.join(FIXTURES, "small_cnn.onnx")
    torch.onnx.export(
        net, torch.zeros(2, 3, SMALL, SMALL), path, input_names=["input"], output_names=["logit"],
        dynamic_axes={"input": {0: "N"}, "logit": {0: "N"}}, opset_version=OPSET, dynamo=False,
        do_constant_folding=False,
    )
    rename_features(path, "Flatten")
    spec(os.path.join(FIXTURES, "small_cnn.toml"), "small_cnn.onnx", SMALL, "logit", "features")
    return path


def small_cnn_reference(path):
    """onnxruntime's logit, score and features on the committed test images."""
    import onnxruntime as ort
    from PIL import Image

    m = onnx.load(path)
    m.graph.output.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = []
    for name, img in test_images().items():
        Image.fromarray(img, mode="L").save(os.path.join(FIXTURES, name))
        back = np.asarray(Image.open(os.path.join(FIXTURES, name)))
        assert (back == img).all()
        logit, feats = sess.run(["logit", "features"], {"input": normalise(img)[None]})
        lg = float(logit[0, 0])
        rows.append([name, f"{lg:.9g}", f"{1 / (1 + np.exp(-lg)):.9g}"] + [f"{v:.9g}" for v in feats[0]])
    with open(os.path.join(FIXTURES, "small_cnn_reference.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image", "logit", "score"] + [f"f{i}" for i in range(len(rows[0]) - 3)])
        w.writerows(rows)


def cue_reader(name, r0, r1, c0, c1):
    """logit [N,1] = 4 * (mean of channel 0 over rows r0..r1, cols c0..c1 - mean of channel 0 overall)."""
    init = [
        numpy_helper.from_array(np.array([0, r0, c0], np.int64), "starts_rect"),
        numpy_helper.from_array(np.array([1, r1, c1], np.int64), "ends_rect"),
        numpy_helper.from_array(np.array([0], np.int64), "starts_c"),
        numpy_helper.from_array(np.array([1], np.int64), "ends_c"),
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes_rect"),
        numpy_helper.from_array(np.array([1], np.int64), "axes_c"),
        # Gain 4, not more: a bright square then gives a logit near 10, a score of 0.99995 that f64 still tells
        # from 1, so occlusion maps (differences of scores) see the square. A gain of 40 saturates to exactly 1.
        numpy_helper.from_array(np.array(4.0, np.float32), "gain"),
    ]
    nodes = [
        helper.make_node("Slice", ["input", "starts_c", "ends_c", "axes_c"], ["chan0"], name="chan0"),
        helper.make_node("Slice", ["input", "starts_rect", "ends_rect", "axes_rect"], ["rect"], name="rect"),
        helper.make_node("ReduceMean", ["rect"], ["rect_mean"], axes=[2, 3], keepdims=1, name="rect_mean"),
        helper.make_node("ReduceMean", ["chan0"], ["all_mean"], axes=[2, 3], keepdims=1, name="all_mean"),
        helper.make_node("Sub", ["rect_mean", "all_mean"], ["diff"], name="diff"),
        helper.make_node("Mul", ["diff", "gain"], ["scaled"], name="scaled"),
        helper.make_node("Flatten", ["scaled"], ["logit"], axis=1, name="logit"),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, CUE, CUE])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", 1])],
        init,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cxr-onnx fixtures")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    path = os.path.join(FIXTURES, f"{name}.onnx")
    onnx.save(m, path)
    spec(os.path.join(FIXTURES, f"{name}.toml"), f"{name}.onnx", CUE, "logit")
    # Self-check with onnxruntime: a bright square in the rectangle raises the logit.
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    flat = np.full((CUE, CUE), 90, np.uint8)
    square = flat.copy()
    square[r0:r1, c0:c1] = 255
    lo, hi = (float(sess.run(None, {"input": normalise(i)[None]})[0][0, 0]) for i in (flat, square))
    assert abs(lo) < 1e-2 and hi > 10  # f32 means of 50k values, (lo, hi)


def save_checked(m, name):
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    path = os.path.join(FIXTURES, f"{name}.onnx")
    onnx.save(m, path)
    spec(os.path.join(FIXTURES, f"{name}.toml"), f"{name}.onnx", CUE, "logit")
    import onnxruntime as ort
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def lung_reader():
    """logit [N,1] = 4 * (mean of channel 0 over rows 96..128, cols 48..80 - 0.62): the square inside the left
    lung where the audit tests' Covid-19 images carry their lesion, and nothing else (no global mean, so a
    source signature elsewhere in the image cannot move it). 0.62 sits halfway between a lung at grey 70 and
    a lesion at 250 in the spec's normalisation."""
    init = [
        numpy_helper.from_array(np.array([0, 96, 48], np.int64), "starts"),
        numpy_helper.from_array(np.array([1, 128, 80], np.int64), "ends"),
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
        numpy_helper.from_array(np.array(0.62, np.float32), "offset"),
        numpy_helper.from_array(np.array(4.0, np.float32), "gain"),
    ]
    nodes = [
        helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["rect"], name="rect"),
        helper.make_node("ReduceMean", ["rect"], ["rect_mean"], axes=[1, 2, 3], keepdims=0, name="rect_mean"),
        helper.make_node("Sub", ["rect_mean", "offset"], ["centred"], name="centred"),
        helper.make_node("Mul", ["centred", "gain"], ["scaled"], name="scaled"),
        helper.make_node("Unsqueeze", ["scaled", "one"], ["logit"], name="logit"),
    ]
    init.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    graph = helper.make_graph(
        nodes, "lung_reader",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, CUE, CUE])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", 1])],
        init,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cxr-onnx fixtures")
    sess = save_checked(m, "lung_reader")
    lung = np.full((CUE, CUE), 70, np.uint8)
    lesion = lung.copy()
    lesion[96:128, 48:80] = 250
    corner = lung.copy()
    corner[8:40, 8:40] = 255
    out = sess.run(None, {"input": np.stack([normalise(i) for i in (lung, lesion, corner)])})[0]
    assert out.shape == (3, 1), out.shape  # one logit per image of a batch
    lo, hi, mark = (float(v) for v in out[:, 0])
    assert lo < -5 and hi > 5 and abs(mark - lo) < 1e-5, (lo, hi, mark)


def noise_reader():
    """logit [N,1] = 4 * (mean over the image of the squared 3x3 Laplacian of channel 0 - 0.98): the image's
    high-frequency energy, i.e. its noise level. Uniform grey noise of +-10 gives about -3, of +-30 about +3;
    edges (lungs, a lesion) add little. A source signature spread over the whole image, not a mark."""
    lap = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float32).reshape(1, 1, 3, 3)
    init = [
        numpy_helper.from_array(np.array([0], np.int64), "starts_c"),
        numpy_helper.from_array(np.array([1], np.int64), "ends_c"),
        numpy_helper.from_array(np.array([1], np.int64), "axes_c"),
        numpy_helper.from_array(lap, "laplacian"),
        numpy_helper.from_array(np.array(0.98, np.float32), "offset"),
        numpy_helper.from_array(np.array(4.0, np.float32), "gain"),
    ]
    nodes = [
        helper.make_node("Slice", ["input", "starts_c", "ends_c", "axes_c"], ["chan0"], name="chan0"),
        helper.make_node("Conv", ["chan0", "laplacian"], ["high"], kernel_shape=[3, 3], name="high"),
        helper.make_node("Mul", ["high", "high"], ["energy"], name="energy"),
        helper.make_node("ReduceMean", ["energy"], ["mean_energy"], axes=[2, 3], keepdims=1, name="mean_energy"),
        helper.make_node("Sub", ["mean_energy", "offset"], ["centred"], name="centred"),
        helper.make_node("Mul", ["centred", "gain"], ["scaled"], name="scaled"),
        helper.make_node("Flatten", ["scaled"], ["logit"], axis=1, name="logit"),
    ]
    graph = helper.make_graph(
        nodes, "noise_reader",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, CUE, CUE])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", 1])],
        init,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cxr-onnx fixtures")
    sess = save_checked(m, "noise_reader")
    rng = np.random.default_rng(3)
    base = np.full((CUE, CUE), 110.0)
    quiet, loud = ((base + rng.uniform(-a, a, base.shape)).round().clip(0, 255).astype(np.uint8) for a in (10, 30))
    out = sess.run(None, {"input": np.stack([normalise(i) for i in (quiet, loud)])})[0]
    assert out.shape == (2, 1), out.shape
    lo, hi = (float(v) for v in out[:, 0])
    assert lo < -2 and hi > 2, (lo, hi)


def large(out_dir):
    import torch
    import torchvision

    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(20)
    for name, ctor in [("resnet50", torchvision.models.resnet50), ("densenet121", torchvision.models.densenet121)]:
        net = ctor(weights=None).eval()
        path = os.path.join(out_dir, f"{name}.onnx")
        torch.onnx.export(
            net, torch.zeros(1, 3, 224, 224), path, input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=OPSET, dynamo=False,
        )
        rename_features(path, "Flatten")
        # 1000 ImageNet logits; column 0 stands in for Covid-19 (random weights: only speed and loading matter).
        spec(os.path.join(out_dir, f"{name}.toml"), f"{name}.onnx", 224, "logit", "features")
        print(f"wrote {path}")


def default_export(out_dir, archs):
    """What a user exporting today gets: `torch.onnx.export` with no exporter options but the batch axis."""
    import torch
    import torchvision

    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(20)
    for name in archs:
        net = getattr(torchvision.models, name)(weights=None).eval()
        path = os.path.join(out_dir, f"{name}_default.onnx")
        torch.onnx.export(
            net, (torch.zeros(1, 3, 224, 224),), path, input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
        m = onnx.load(path)
        gemm = [n for n in m.graph.node if n.op_type == "Gemm"][-1]
        spec(os.path.join(out_dir, f"{name}_default.toml"), f"{name}_default.onnx", 224, "logit", gemm.input[0])
        print(f"wrote {path} (opset {m.opset_import[0].version}, features `{gemm.input[0]}`)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", metavar="DIR", help="write ResNet50 and DenseNet121 exports into DIR instead")
    ap.add_argument("--default-export", metavar="DIR", help="write default-exporter torchvision exports into DIR")
    ap.add_argument("--arch", default="resnet18", help="with --default-export: comma-separated torchvision models")
    ap.add_argument("--no-torch", action="store_true", help="only the graphs built with onnx.helper")
    args = ap.parse_args()
    if args.large:
        large(args.large)
        return
    if args.default_export:
        default_export(args.default_export, args.arch.split(","))
        return
    os.makedirs(FIXTURES, exist_ok=True)
    if args.no_torch:
        cue_reader("cue_outside", 8, 40, 8, 40)
        cue_reader("cue_inside", 96, 128, 48, 80)
        lung_reader()
        noise_reader()
        print(f"wrote the onnx.helper fixtures into {os.path.normpath(FIXTURES)}")
        return
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("torch is needed for small_cnn.onnx (the cue readers need only onnx)")
    small_cnn_reference(small_cnn())
    cue_reader("cue_outside", 8, 40, 8, 40)
    cue_reader("cue_inside", 96, 128, 48, 80)
    lung_reader()
    noise_reader()
    print(f"wrote fixtures into {os.path.normpath(FIXTURES)}")


if __name__ == "__main__":
    main()
