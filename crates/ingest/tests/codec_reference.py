"""Decode DICOM files with pydicom (+ pylibjpeg / pyjpegls / Pillow) for the Rust codec tests and `bench codecs`.

usage: codec_reference.py OUT_DIR [--reps N] FILE...

Writes OUT_DIR/index.json: one entry per file, in order, with the transfer syntax, rows, cols, and either
"error" or the name of a little-endian float32 file holding frame 0 as the Rust reader returns it (stored
values, no rescale; colour as BT.601 luma of pydicom's RGB), plus "seconds": the median wall time of N reads
(dcmread + pixel_array) when --reps is given. pydicom picks pylibjpeg-libjpeg for JPEG-LS; those files are
also decoded with pyjpegls (CharLS): "charls_identical" says whether the two agree exactly, "charls_seconds"
times CharLS.
"""

import json
import os
import sys
import time

import numpy as np
import pydicom


JPEG_LS = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")


def decode(path):
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    return ds, arr


def decode_charls(path):
    ds = pydicom.dcmread(path)
    ds.pixel_array_options(decoding_plugin="pyjpegls")
    return ds.pixel_array


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
            if entry["transfer_syntax"] in JPEG_LS:
                entry["charls_identical"] = bool(np.array_equal(decode_charls(path), arr))
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
                if "charls_identical" in entry:
                    times = []
                    for _ in range(reps):
                        t = time.perf_counter()
                        decode_charls(path)
                        times.append(time.perf_counter() - t)
                    entry["charls_seconds"] = float(np.median(times))
        except Exception as e:  # the reader's verdict is what the test compares: record it
            entry["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        index.append(entry)
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f, indent=1)


if __name__ == "__main__":
    main()
