"""The Python bridge's cost, measured against the bare model on the same batches (docs/PERFORMANCE.md).

    python crates/python/bench/bridge_overhead.py [--images 200] [--audit]

Model: torchvision's ResNet18 (random weights, one output), eval mode, CPU. Bare: the images decoded and
normalised in NumPy as docs/PYTHON.md documents, then `model(x)` under `torch.no_grad()` per batch of 16.
Bridged: `cxr_confounders.score` on the same images (the Rust side decodes the PNGs, builds each batch through
`cxr_core::model_input`, hands it to Python as bytes, reads the scores back). The time inside the model is
measured in both; the bridge's overhead is the bridged wall time minus its time inside the model, per batch,
and is reported against one forward pass. `--audit` also times a full default audit.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    import torch
    import torchvision
except ImportError:
    print("skipped: torch and torchvision are not installed")
    sys.exit(0)

import cxr_confounders as cxr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_audit import in_lung  # noqa: E402  (the test world's lung geometry)


def write_images(folder: Path, n: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(11)
    r, c = np.mgrid[0:224, 0:224]
    lung = in_lung(r, c)
    Image.fromarray(np.where(lung, 255, 0).astype(np.uint8)).save(folder / "mask.png")
    lines = ["id,source,label,patient,split,png8,mask"]
    for i in range(n):
        px = np.round(np.where(lung, 70.0, 150.0) + rng.uniform(-25, 25, (224, 224))).astype(np.uint8)
        Image.fromarray(px).save(folder / f"im{i}.png")
        src = ["a", "b", "c", "d"][i % 4]
        lines.append(f"im{i},{src},{'covid' if (i // 4) % 2 else 'pneumonia'},p{i},{'train' if i < n // 4 else 'test'},im{i}.png,mask.png")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder / "manifest.csv"


class Timed:
    def __init__(self, module):
        self.inner = cxr.TorchModel(module)
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, x):
        t = time.perf_counter()
        out = self.inner(x)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--audit", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=1).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; cxr_confounders {cxr.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_images(Path(tmp), args.images)
        from PIL import Image

        mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
        std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
        timed_bare = Timed(model)
        t0 = time.perf_counter()
        for start in range(0, args.images, args.batch):
            planes = [
                np.asarray(Image.open(Path(tmp) / f"im{i}.png"), np.float32) / 255.0
                for i in range(start, min(start + args.batch, args.images))
            ]
            x = ((np.stack(planes)[:, None] - mean) / std).astype(np.float32)
            timed_bare(x)
        bare_wall = time.perf_counter() - t0
        timed = Timed(model)
        t0 = time.perf_counter()
        cxr.score(timed, manifest, input_size=224, batch_size=args.batch, name="resnet18")
        bridged_wall = time.perf_counter() - t0
        forward = timed.seconds / timed.calls
        overhead = (bridged_wall - timed.seconds) / timed.calls
        bare_overhead = (bare_wall - timed_bare.seconds) / timed_bare.calls
        print(f"batches of {args.batch}: {timed.calls}; one forward pass {forward * 1000:.1f} ms")
        print(f"bare (PIL decode + NumPy normalise): {bare_overhead * 1000:.2f} ms per batch outside the model")
        print(
            f"bridged (Rust decode + model_input + bytes): {overhead * 1000:.2f} ms per batch outside the model "
            f"= {100 * overhead / forward:.1f} % of a forward pass; wall {bridged_wall:.1f} s vs bare {bare_wall:.1f} s "
            f"(ratio {bridged_wall / bare_wall:.3f})"
        )
        if args.audit:
            timed_audit = Timed(model)
            t0 = time.perf_counter()
            result = cxr.audit(timed_audit, manifest, input_size=224, batch_size=args.batch, name="resnet18")
            wall = time.perf_counter() - t0
            print(
                f"full default audit of {args.images} images: {wall:.1f} s ({timed_audit.seconds:.1f} s in the model, "
                f"{timed_audit.calls} batches), verdict {result.verdict}"
            )


if __name__ == "__main__":
    main()
