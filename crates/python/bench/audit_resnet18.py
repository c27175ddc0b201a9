"""Wall time of a full default audit of a torchvision ResNet18 given as a torch module (docs/PERFORMANCE.md).

    python crates/python/bench/audit_resnet18.py --manifest M.csv [--out DIR] [--batch 16]

The model has random weights (`resnet18(weights=None, num_classes=1)`: nothing is downloaded here), so the
verdict says nothing about a real model; the cost is a real model's. The manifest needs `id, source, label,
split, png8` and may lack `mask`: the audit then computes the lung masks with the shipped lung UNet first, and
this script times that step alone too (`lung_masks` on the same images).
"""

import argparse
import csv
import os
import sys
import time

try:
    import torch
    import torchvision
except ImportError:
    print("skipped: torch and torchvision are not installed")
    sys.exit(0)

import cxr_confounders as cxr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bridge_overhead import Timed  # noqa: E402  (the module as the audit wraps it, timed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=1).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; cxr_confounders {cxr.__version__}")
    with open(args.manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    base = os.path.dirname(os.path.abspath(args.manifest))
    t0 = time.perf_counter()
    cxr.lung_masks([os.path.join(base, r["png8"]) for r in rows])
    print(f"lung_masks of {len(rows)} images (shipped UNet): {time.perf_counter() - t0:.1f} s")
    timed = Timed(model)
    t0 = time.perf_counter()
    result = cxr.audit(timed, args.manifest, input_size=224, batch_size=args.batch, name="resnet18", out=args.out)
    wall = time.perf_counter() - t0
    print(
        f"full default audit of {len(rows)} images: {wall:.1f} s wall, {timed.seconds:.1f} s inside the model "
        f"({timed.calls} batches of up to {args.batch}); verdict {result.verdict}"
    )
    for n in result.notes:
        print(f"note: {n}")


if __name__ == "__main__":
    main()
