"""Reference values for cxr-ingest's real-data tests, computed with pydicom / nibabel / Pillow.

Run: /work/pyvenv/bin/python crates/ingest/scripts/reference_values.py [SHARED_DATA] > \
        crates/ingest/tests/fixtures/reference_values.json
For every file: width, height, min, max, photometric, and the value at a few fixed (row, col) positions.
DICOM: stored values (pydicom's pixel_array: no Modality LUT, no VOI). Colour: BT.601 luma
0.299 R + 0.587 G + 0.114 B of the RGB decode (palette PNGs through their palette, RGBA ignoring alpha).
NIfTI: nibabel's scaled data (scl_slope/scl_inter applied), image[row, col] = data[col, row] (axis 0 = column);
volumes: slice z = 0 (and t = 0).
"""
import glob, json, os, sys

import numpy as np
import pydicom
import nibabel as nib
from PIL import Image

root = sys.argv[1] if len(sys.argv) > 1 else "../shared/data"


def positions(h, w):
    pts = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (h // 2, w // 2), (h // 3, (2 * w) // 3), ((3 * h) // 4, w // 5)]
    out = []
    for p in pts:
        if p not in out:
            out.append(p)
    return out


def entry(rel, kind, grey, photometric, **extra):
    grey = np.asarray(grey, dtype=np.float64)
    h, w = grey.shape
    d = dict(path=rel, kind=kind, width=int(w), height=int(h), min=float(grey.min()), max=float(grey.max()),
             photometric=photometric,
             pixels=[[int(r), int(c), float(grey[r, c])] for r, c in positions(h, w)])
    d.update(extra)
    return d


def luma(rgb):
    rgb = np.asarray(rgb, dtype=np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


out = []
dicoms = sorted(glob.glob(f"{root}/chest-dicom/*.dcm") + glob.glob(f"{root}/dicom-edge-cases/*.dcm")
                + glob.glob(f"{root}/dicom-edge-cases/dicomdirtests-CR/*.dcm"))
for f in dicoms:
    rel = os.path.relpath(f, root)
    ds = pydicom.dcmread(f)
    try:
        a = ds.pixel_array
    except Exception as e:  # the files that must fail
        out.append(dict(path=rel, kind="dicom", error=f"{type(e).__name__}"))
        continue
    pi = str(ds.PhotometricInterpretation)
    colour = a.ndim == 3
    grey = luma(a) if colour else a
    ts = str(ds.file_meta.TransferSyntaxUID)
    # Pixel Spacing, else Imager Pixel Spacing (what the reader falls back to); zero counts as absent.
    ps = ds.get("PixelSpacing")
    if ps is None or float(ps[0]) <= 0:
        ps = ds.get("ImagerPixelSpacing") or ps
    out.append(entry(rel, "dicom", grey, pi, transfer_syntax=ts, bits_stored=int(ds.BitsStored),
                     signed=int(ds.PixelRepresentation) == 1, colour=bool(colour),
                     pixel_spacing=[float(v) for v in ps] if ps is not None else None))

for f in sorted(glob.glob(f"{root}/nifti/*.nii*") + glob.glob(f"{root}/nifti/from-real-cxr/*.nii*")):
    rel = os.path.relpath(f, root)
    im = nib.load(f)
    data = np.asarray(im.get_fdata(dtype=np.float64))
    shape = list(data.shape)
    while data.ndim > 2:
        data = data[..., 0]
    out.append(entry(rel, "nifti", data.T, "MONOCHROME2", shape=shape,
                     slope=None if im.dataobj.slope is None else float(im.dataobj.slope),
                     inter=None if im.dataobj.inter is None else float(im.dataobj.inter)))

rasters = sorted(glob.glob(f"{root}/chest-png/*.*") + glob.glob(f"{root}/chest-png/tbx11k_test_data/imgs/*/*")
                 + glob.glob(f"{root}/cohen-covid-chestxray/originals_sample/*"))
for f in rasters:
    rel = os.path.relpath(f, root)
    im = Image.open(f)
    fmt, mode = im.format, im.mode
    if mode in ("L", "I;16", "I;16B", "I"):
        grey = np.asarray(im)
        colour = False
    else:
        grey = luma(np.asarray(im.convert("RGB")))
        colour = True
    out.append(entry(rel, fmt.lower(), grey, "MONOCHROME2", mode=mode, colour=colour))

json.dump(out, sys.stdout, indent=1)
print()
