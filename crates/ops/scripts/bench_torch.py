"""PyTorch side of `cargo xtask bench ops`: times torch.nn.functional.conv2d on the layer shapes the xtask passes
(JSON file, argv[1]) and torchvision's ResNet50 inference, on the CPU with the machine's threads, and prints one
JSON object on stdout: {"torch": version, "threads": n, "layers": [seconds per forward, in order],
"resnet50_infer_s": seconds per batch, "batch": b}.
"""
import json
import sys
import time

import torch
import torch.nn.functional as F


def median_time(fn, reps):
    fn()
    ts = []
    for _ in range(max(1, reps)):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    spec = json.load(open(sys.argv[1]))
    reps = spec["reps"]
    torch.manual_seed(0)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "layers": []}
    with torch.inference_mode():
        for l in spec["layers"]:
            x = torch.randn(l["n"], l["cin"], l["h"], l["w"])
            w = torch.randn(l["cout"], l["cin"], l["k"], l["k"]) * 0.1
            out["layers"].append(
                median_time(lambda: F.conv2d(x, w, None, l["stride"], l["pad"]), reps)
            )
        if spec.get("resnet50_batch"):
            try:
                import torchvision

                b = spec["resnet50_batch"]
                m = torchvision.models.resnet50(weights=None).eval()
                x = torch.randn(b, 3, 224, 224)
                out["resnet50_infer_s"] = median_time(lambda: m(x), spec.get("net_reps", 2))
                out["batch"] = b
            except ImportError as e:
                out["resnet50_error"] = f"torchvision missing: {e}"
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
