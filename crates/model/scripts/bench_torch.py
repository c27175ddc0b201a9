"""PyTorch peer of `cargo xtask bench model`: torchvision ResNet50 (random weights), f32, CPU or CUDA.

Prints one JSON object per line: {"what": "embed", "batch": B, "images_per_s": X} for the frozen-backbone
embedding (eval mode, no grad, GAP features), and {"what": "finetune1_step", "batch": B, "steps_per_s": X} for a
Finetune1 training step (convolutions frozen, BatchNorm + head trainable, Adam). Same protocol as ours: one
warm-up, then the mean over `iters` timed runs.

Usage: python bench_torch.py --batches 8,32 --size 224 --iters 3 [--device cuda]
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-iters", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    # GPU kernels run asynchronously: wait for them before reading the clock (a no-op on CPU).
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    # Same arithmetic as ours (candle has no TF32 path): full f32 matrix products.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    info = {"what": "info", "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(dev)}
    print(json.dumps(info), flush=True)
    model = torchvision.models.resnet50().to(dev)
    model.fc = nn.Identity()
    model.eval()
    for b in [int(v) for v in a.batches.split(",")]:
        x = torch.randn(b, 3, a.size, a.size, device=dev)
        with torch.no_grad():
            model(x)
            sync()
            t = time.perf_counter()
            for _ in range(a.iters):
                model(x)
            sync()
            dt = (time.perf_counter() - t) / a.iters
        print(json.dumps({"what": "embed", "batch": b, "images_per_s": b / dt}), flush=True)

    # Finetune1: convs frozen, BN trainable in train mode, the paper's head.
    head = nn.Sequential(nn.Linear(2048, 64), nn.ReLU(), nn.Dropout(0.5), nn.BatchNorm1d(64), nn.Linear(64, 1)).to(dev)
    for n, p in model.named_parameters():
        p.requires_grad = "bn" in n or "downsample.1" in n
    model.train()
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-4)
    b = a.train_batch
    x = torch.randn(b, 3, a.size, a.size, device=dev)
    y = (torch.arange(b, device=dev) % 2).float()
    loss_fn = nn.BCEWithLogitsLoss()

    def step():
        opt.zero_grad()
        loss = loss_fn(head(model(x)).squeeze(1), y)
        loss.backward()
        opt.step()

    step()
    sync()
    t = time.perf_counter()
    for _ in range(a.train_iters):
        step()
    sync()
    dt = (time.perf_counter() - t) / a.train_iters
    n = sum(p.numel() for p in params)
    print(json.dumps({"what": "finetune1_step", "batch": b, "steps_per_s": 1 / dt, "trainable": n}), flush=True)


if __name__ == "__main__":
    main()
