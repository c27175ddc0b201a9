#!/usr/bin/env python3
"""Reference Python pipeline for `cargo xtask bench preprocess` (pydicom + numpy + Pillow).

Does what cxr-preprocess does with its default config: DICOM -> Modality LUT -> first VOI (VOI LUT Sequence or
window, pydicom's apply_voi_lut) -> 8 bits -> MONOCHROME1 inversion; PNG/JPEG -> grey (Pillow "L", BT.601) ->
min-max to 8 bits; then resize so the longest side is SIZE (Pillow BILINEAR, which like fast_image_resize's
bilinear convolution anti-aliases) and write an 8-bit PNG (zlib level 1, like our fast PNG setting).

Usage: bench_python.py LIST.txt OUT_DIR SIZE WORKERS
-> prints one JSON line: images, failed, seconds (wall, processing only), cpu_seconds, peak_rss_kb.
"""
import json
import resource
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut

SIZE = 512
OUT = Path(".")


def to8_dicom(path):
    ds = pydicom.dcmread(path)
    px = ds.pixel_array
    m = apply_modality_lut(px, ds)
    if "VOILUTSequence" in ds:
        y = apply_voi_lut(m, ds).astype(np.float64)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        g = y / (2**bits - 1) * 255.0
    elif "WindowCenter" in ds:
        y = apply_voi_lut(m, ds).astype(np.float64)
        bits = int(ds.BitsStored)
        if ds.PixelRepresentation == 0:
            lo, hi = 0.0, 2.0**bits - 1
        else:
            lo, hi = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            lo = lo * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            hi = hi * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        g = (y - lo) / (hi - lo) * 255.0
    else:
        m = m.astype(np.float64)
        lo, hi = m.min(), m.max()
        g = (m - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(m)
    g = np.clip(np.rint(g), 0, 255).astype(np.uint8)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        g = 255 - g
    return g


def to8_picture(path):
    im = Image.open(path)
    if im.mode not in ("I;16", "I;16B", "I", "F"):
        im = im.convert("L")  # colour -> BT.601 luma, as cxr-ingest does
    a = np.asarray(im).astype(np.float64)
    lo, hi = a.min(), a.max()
    g = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
    return np.clip(np.rint(g), 0, 255).astype(np.uint8)


def process(args):
    i, path = args
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        g = to8_dicom(path) if head[128:132] == b"DICM" else to8_picture(path)
        h, w = g.shape[:2]
        s = SIZE / max(w, h)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        img = Image.fromarray(g).resize(size, Image.BILINEAR)
        img.save(OUT / f"{i:06}.png", compress_level=1)
        return True
    except Exception as e:  # a reject, like ours
        print(f"{path}: {e}", file=sys.stderr)
        return False


def init(size, out):
    global SIZE, OUT
    SIZE, OUT = size, out


def main():
    lst, out, size, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    out.mkdir(parents=True, exist_ok=True)
    files = [l for l in lst.read_text().splitlines() if l.strip()]
    init(size, out)
    t = time.perf_counter()
    if workers > 1:
        with Pool(workers, initializer=init, initargs=(size, out)) as pool:
            ok = pool.map(process, list(enumerate(files)), chunksize=4)
    else:
        ok = [process(a) for a in enumerate(files)]
    seconds = time.perf_counter() - t
    ru = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu_seconds = sum(r.ru_utime + r.ru_stime for r in ru)
    peak_kb = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    print(json.dumps({"images": sum(ok), "failed": len(ok) - sum(ok), "seconds": seconds, "cpu_seconds": cpu_seconds,
                      "peak_rss_kb": peak_kb}))


if __name__ == "__main__":
    main()
