"""Generates crates/model/tests/fixtures/parity_{resnet,vgg}.safetensors and parity.json once, with PyTorch + torchvision.

Reduced-width networks built from torchvision's own blocks (`Bottleneck`, `vgg.make_layers`), so the tensor
names are exactly torchvision's (`conv1.weight`, `layer1.0.downsample.1.running_var`, `features.0.bias`, ...,
plus `num_batches_tracked`, which our loader must ignore). Weights are rounded to f16 and stored as f16 (small
file); PyTorch computes in f32 with the same rounded values. The input is a formula both sides evaluate.
Also records the names and shapes of the full torchvision resnet50 and vgg16 state dicts (no weights).

Run: /work/pyvenv/bin/python crates/model/scripts/make_parity_fixture.py
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import Bottleneck
from torchvision.models.vgg import make_layers

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
SIZE = 224
N = 2


class TinyResNet(nn.Module):
    """torchvision's ResNet layout with a configurable stem width (64 for ResNet50) and block counts."""

    def __init__(self, blocks, width):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = width
        for l, n in enumerate(blocks):
            planes = width << l
            stride = 1 if l == 0 else 2
            layers = []
            for i in range(n):
                s = stride if i == 0 else 1
                down = None
                if i == 0 and (s != 1 or inplanes != planes * 4):
                    down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, s, bias=False), nn.BatchNorm2d(planes * 4))
                layers.append(Bottleneck(inplanes, planes, s, down))
                inplanes = planes * 4
            setattr(self, f"layer{l + 1}", nn.Sequential(*layers))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for l in range(4):
            x = getattr(self, f"layer{l + 1}")(x)
        return x.mean(dim=(2, 3))


class TinyVgg(nn.Module):
    def __init__(self, w):
        super().__init__()
        cfg = [w[0], w[0], "M", w[1], w[1], "M", w[2], w[2], w[2], "M", w[3], w[3], w[3], "M", w[4], w[4], w[4], "M"]
        self.features = make_layers(cfg)

    def forward(self, x):
        return self.features(x).mean(dim=(2, 3))


def randomise(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") and p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif p.dim() == 1:  # BN gamma
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
        # Round every float to f16 so that the stored (f16) and computed (f32) weights are the same numbers.
        for t in list(model.parameters()) + [b for n, b in model.named_buffers() if b.is_floating_point()]:
            t.copy_(t.half().float())


def formula_input(n, size):
    """x[i] = 2 sin(0.61803398875 i + 0.5 cos(0.1 i)) over the flat NCHW index i (f64, then f32)."""
    i = np.arange(n * 3 * size * size, dtype=np.float64)
    x = 2.0 * np.sin(0.61803398875 * i + 0.5 * np.cos(0.1 * i))
    return torch.from_numpy(x.astype(np.float32).reshape(n, 3, size, size))


def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        if t.dtype == torch.int64:
            dtype, data = "I64", t.numpy().astype("<i8").tobytes()
        else:
            dtype, data = "F16", t.half().numpy().astype("<f2").tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    resnet = TinyResNet([1, 1, 1, 1], 4)
    vgg = TinyVgg([2, 4, 8, 8, 16])
    randomise(resnet, gen)
    randomise(vgg, gen)
    x = formula_input(N, SIZE)

    resnet.eval()
    vgg.eval()
    with torch.no_grad():
        resnet_eval = resnet(x)
        vgg_eval = vgg(x)

    # Training mode (batch statistics), as Finetune1 runs it: features, the updated running statistics, and
    # the gradient of a fixed linear function of the features with respect to some BatchNorm gammas.
    resnet_sd = {k: v.clone() for k, v in resnet.state_dict().items()}
    vgg_sd = {k: v.clone() for k, v in vgg.state_dict().items()}
    resnet.train()
    resnet.zero_grad()
    feats = resnet(x)
    coef = torch.from_numpy(np.cos(np.arange(feats.numel(), dtype=np.float64)).astype(np.float32)).reshape(feats.shape)
    (feats * coef).sum().backward()
    grads = {k: resnet.get_parameter(k).grad.tolist() for k in ["bn1.weight", "layer1.0.bn2.weight", "layer4.0.bn3.bias"]}
    running = {k: resnet.get_buffer(k).tolist() for k in ["bn1.running_mean", "bn1.running_var", "layer4.0.bn3.running_var"]}

    os.makedirs(OUT, exist_ok=True)
    save_safetensors(os.path.join(OUT, "parity_resnet.safetensors"), resnet_sd)
    save_safetensors(os.path.join(OUT, "parity_vgg.safetensors"), vgg_sd)
    full = {
        "resnet50": {k: list(v.shape) for k, v in torchvision.models.resnet50().state_dict().items()},
        "vgg16": {k: list(v.shape) for k, v in torchvision.models.vgg16().state_dict().items()},
    }
    expected = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "size": SIZE,
        "n": N,
        "resnet_arch": "resnet:1,1,1,1:4",
        "vgg_arch": "vgg:2,4,8,8,16",
        "resnet_eval_gap": resnet_eval.tolist(),
        "vgg_eval_gap": vgg_eval.tolist(),
        "resnet_train_gap": feats.detach().tolist(),
        "resnet_train_grads": grads,
        "resnet_train_running": running,
        "full_shapes": full,
    }
    with open(os.path.join(OUT, "parity.json"), "w") as f:
        json.dump(expected, f)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
