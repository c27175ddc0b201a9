#!/usr/bin/env python3
"""Score the images of `cargo xtask audit prepare` with your own PyTorch model.

    python scripts/score_to_score.py --dir DIR --model my_model.pt --size 224 \
        [--channels 3] [--mean 0.485 0.456 0.406] [--std 0.229 0.224 0.225] \
        [--output logit|probability] [--index 0] [--out DIR/scores.csv]

`--model` is a TorchScript file (`torch.jit.save`) or a pickled `nn.Module` (`torch.save(model)`). Each grey
image of DIR/to_score.csv is resized to --size x --size (bilinear with anti-aliasing, as the audit's own
models), scaled to [0, 1], replicated to --channels, normalised with --mean/--std, and scored; column --index
of the output is Covid-19 (a logit goes through the sigmoid). Writes `id,score` with score = P(Covid-19),
which `cargo xtask audit finish --dir DIR --scores DIR/scores.csv` reads.
"""
import argparse
import csv
import os

import numpy as np
import torch
from PIL import Image


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, help="the folder `audit prepare` wrote")
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--channels", type=int, default=3, choices=[1, 3])
    ap.add_argument("--mean", type=float, nargs="+", default=[0.485, 0.456, 0.406])
    ap.add_argument("--std", type=float, nargs="+", default=[0.229, 0.224, 0.225])
    ap.add_argument("--output", choices=["logit", "probability"], default="logit")
    ap.add_argument("--index", type=int, default=0, help="output column that is Covid-19")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", help="default: DIR/scores.csv")
    a = ap.parse_args()

    try:
        model = torch.jit.load(a.model, map_location="cpu")
    except Exception:
        model = torch.load(a.model, map_location="cpu", weights_only=False)
    model.eval()
    mean = torch.tensor(a.mean[: a.channels]).view(1, -1, 1, 1)
    std = torch.tensor(a.std[: a.channels]).view(1, -1, 1, 1)

    with open(os.path.join(a.dir, "to_score.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    out = a.out or os.path.join(a.dir, "scores.csv")
    scores = []
    with torch.no_grad():
        for i in range(0, len(rows), a.batch):
            chunk = rows[i : i + a.batch]
            xs = []
            for r in chunk:
                img = Image.open(os.path.join(a.dir, r["path"])).convert("L")
                if img.size != (a.size, a.size):
                    img = img.resize((a.size, a.size), Image.BILINEAR)
                xs.append(np.asarray(img, dtype=np.float32) / 255.0)
            x = torch.from_numpy(np.stack(xs)).unsqueeze(1).repeat(1, a.channels, 1, 1)
            y = model((x - mean) / std)
            y = y[0] if isinstance(y, (tuple, list)) else y
            y = y.reshape(len(chunk), -1)[:, a.index].double()
            p = torch.sigmoid(y) if a.output == "logit" else y
            scores.extend(p.tolist())
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "score"])
        for r, s in zip(rows, scores):
            w.writerow([r["id"], f"{s:.9f}"])
    print(f"{len(scores)} scores -> {out}")


if __name__ == "__main__":
    main()
