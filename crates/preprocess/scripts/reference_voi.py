#!/usr/bin/env python3
"""Independent reference values for cxr-preprocess's display pipeline, computed with pydicom.

For each file it evaluates pydicom's own Modality LUT + VOI (``apply_modality_lut`` / ``apply_voi_lut``) on the
*transfer function*, i.e. on every possible stored value, then scales to 8 bits and inverts MONOCHROME1. The
result is a monotone step function, written compactly as breakpoints: ``steps`` = list of ``[stored_value,
grey]`` where the grey level changes. No image data leaves ``../shared/data``: only these function tables, the
SHA-256 of pydicom's full 8-bit rendering, and a pixel histogram.

8-bit scaling (pydicom stops at its own output range): windows -> ``round((y - y_min) / (y_max - y_min) * 255)``
with pydicom's ``y_min``/``y_max`` (the stored range after rescale); VOI LUT -> ``round(y / (2**bits - 1) * 255)``;
no VOI (Modality LUT only) -> min-max of the pixels. Then ``255 - g`` for MONOCHROME1.

Usage: reference_voi.py DATA_DIR OUT.json
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

FILES = [
    "chest-dicom/RG1_UNCR.dcm",
    "dicom-edge-cases/dicomdirtests-CR/CR1_6154.dcm",
    "dicom-edge-cases/dicomdirtests-CR/CR2_6247.dcm",
    "dicom-edge-cases/dicomdirtests-CR/CR3_6278.dcm",
    "chest-dicom/mlut_18.dcm",
    "chest-dicom/vlut_04.dcm",
]


def round_half_away(x):
    return np.floor(np.abs(x) + 0.5) * np.sign(x)


def to8(ds, values, pixels_for_minmax):
    """The reference display of `values` (stored values) as 8-bit grey."""
    m = apply_modality_lut(values, ds)
    has_voi = "WindowCenter" in ds or "VOILUTSequence" in ds
    if "VOILUTSequence" in ds:
        y = apply_voi_lut(m, ds).astype(np.float64)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        g = round_half_away(y / (2**bits - 1) * 255)
    elif has_voi:
        y = apply_voi_lut(m, ds).astype(np.float64)
        bits = int(ds.BitsStored)
        if ds.PixelRepresentation == 0:
            y_min, y_max = 0.0, 2.0**bits - 1
        else:
            y_min, y_max = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            y_min = y_min * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            y_max = y_max * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        g = round_half_away((y - y_min) / (y_max - y_min) * 255)
    else:
        pm = apply_modality_lut(pixels_for_minmax, ds).astype(np.float64)
        lo, hi = pm.min(), pm.max()
        g = round_half_away((np.clip(m.astype(np.float64), lo, hi) - lo) / (hi - lo) * 255)
    g = np.clip(g, 0, 255).astype(np.uint8)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        g = 255 - g
    return g


def main():
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    result = {}
    for rel in FILES:
        ds = pydicom.dcmread(data / rel)
        px = ds.pixel_array  # stored values, no Modality LUT
        bits = int(ds.BitsStored)
        if ds.PixelRepresentation == 0:
            domain = np.arange(0, 2**bits, dtype=np.int64)
        else:
            domain = np.arange(-(2 ** (bits - 1)), 2 ** (bits - 1), dtype=np.int64)
        domain = domain.astype(px.dtype)
        table = to8(ds, domain, px)
        change = np.flatnonzero(np.diff(table.astype(np.int16))) + 1
        starts = np.concatenate([[0], change])
        steps = [[int(domain[i]), int(table[i])] for i in starts]
        image8 = to8(ds, px, px)
        modality = apply_modality_lut(px, ds).astype(np.float64)
        result[rel] = {
            "photometric": str(ds.PhotometricInterpretation),
            "rows": int(ds.Rows),
            "columns": int(ds.Columns),
            "steps": steps,
            "image_sha256": hashlib.sha256(image8.tobytes()).hexdigest(),
            "histogram": np.bincount(image8.ravel(), minlength=256).tolist(),
            "modality_sum": float(modality.sum()),
            "modality_min": float(modality.min()),
            "modality_max": float(modality.max()),
        }
        print(rel, "steps:", len(steps), "sha:", result[rel]["image_sha256"][:16])
    lines = ",\n".join(f" {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in result.items())
    out.write_text("{\n" + lines + "\n}\n")


if __name__ == "__main__":
    main()
