"""Decode DICOM files with pydicom (+ pylibjpeg / pyjpegls / Pillow) for the Rust codec tests and `bench codecs`.

usage: codec_reference.py OUT_DIR [--reps N] FILE...

Writes OUT_DIR/index.json: one entry per file, in order, with the transfer syntax, rows, cols, and either
"error" or the name of a little-endian float32 file holding frame 0 as the Rust reader returns it (stored
values, no rescale; colour as BT.601 luma of pydicom's RGB), plus "seconds": the median wall time of N reads
(dcmread + pixel_array) when --reps is given.
"""

import json
import os
import sys
import time

import numpy as np
import pydicom


def decode(path):
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    return ds, arr


def main():
    out = sys.argv[1]
    args = sys.argv[2:]
    reps = 0
    if args[:1] == ["--reps"]:
        reps = int(args[1])
        args = args[2:]
    os.makedirs(out, exist_ok=True)
    index = []
    for i, path in enumerate(args):
        entry = {"path": path}
        try:
            ds, arr = decode(path)
            entry["transfer_syntax"] = str(ds.file_meta.TransferSyntaxUID)
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            if frames > 1:
                arr = arr[0]
            if arr.ndim == 3:
                arr = 0.299 * arr[..., 0] + 0.587 * arr[..., 1] + 0.114 * arr[..., 2]
            entry["rows"], entry["cols"] = int(arr.shape[0]), int(arr.shape[1])
            name = f"{i}.f32"
            np.ascontiguousarray(arr, dtype="<f4").tofile(os.path.join(out, name))
            entry["pixels"] = name
            if reps:
                times = []
                for _ in range(reps):
                    t = time.perf_counter()
                    decode(path)
                    times.append(time.perf_counter() - t)
                entry["seconds"] = float(np.median(times))
        except Exception as e:  # the reader's verdict is what the test compares: record it
            entry["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        index.append(entry)
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f, indent=1)


if __name__ == "__main__":
    main()
