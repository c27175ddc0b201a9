"""Thumbnail gallery of predicted lung masks (docs/img/segment-cohen.png).

Usage: python gallery.py IMAGES_DIR MASKS_DIR OUT.png [--every N] [--count K] [--thumb PX]

Takes every N-th image (sorted by name) of IMAGES_DIR that has a mask `<stem>.png` in MASKS_DIR (as written by
`cargo xtask segment predict --input IMAGES_DIR --out MASKS_DIR`), draws the mask outline in green and the
paper's crop box (+5% of the mask's box per side) in yellow, or red when the crop rule rejects the image, and
writes a small grid. Images are read by content (Pillow), never by extension. Low-resolution thumbnails only:
the source images are under per-image licences and are not redistributed here.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def crop_box(mask):
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None, True
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    # Rust's f64::round rounds half away from zero; so does this for positive values.
    mx, my = int(np.floor(0.05 * bw + 0.5)), int(np.floor(0.05 * bh + 0.5))
    h, w = mask.shape
    l, t = max(0, x0 - mx), max(0, y0 - my)
    r, b = min(w - 1, x1 + mx), min(h - 1, y1 + my)
    cw, ch = r - l + 1, b - t + 1
    return (l, t, r, b), (2 * cw <= w or 2 * ch <= h)


def main():
    args = sys.argv[1:]
    opts = {"--every": 16, "--count": 24, "--thumb": 112}
    pos = []
    i = 0
    while i < len(args):
        if args[i] in opts:
            opts[args[i]] = int(args[i + 1])
            i += 2
        else:
            pos.append(args[i])
            i += 1
    images, masks, out = Path(pos[0]), Path(pos[1]), Path(pos[2])
    files = [p for p in sorted(images.iterdir()) if (masks / (p.stem + ".png")).is_file()]
    chosen = files[:: opts["--every"]][: opts["--count"]]
    t = opts["--thumb"]
    cols = 8
    rows = (len(chosen) + cols - 1) // cols
    grid = Image.new("RGB", (cols * t, rows * t), (0, 0, 0))
    rejected = 0
    for k, p in enumerate(chosen):
        img = Image.open(p).convert("L")
        mask = np.array(Image.open(masks / (p.stem + ".png")).convert("L")) > 127
        box, reject = crop_box(mask)
        rejected += reject
        scale = t / max(img.size)
        size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
        thumb = img.resize(size, Image.BILINEAR).convert("RGB")
        small = np.array(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.BILINEAR)) > 127
        # Outline: mask pixels with a background 4-neighbour.
        pad = np.pad(small, 1)
        edge = small & ~(pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:])
        arr = np.array(thumb)
        arr[edge] = (0, 255, 0)
        thumb = Image.fromarray(arr)
        if box is not None:
            d = ImageDraw.Draw(thumb)
            l, tt, r, b = (int(v * scale) for v in box)
            d.rectangle([l, tt, r, b], outline=(255, 64, 64) if reject else (255, 220, 0))
        grid.paste(thumb, ((k % cols) * t + (t - size[0]) // 2, (k // cols) * t + (t - size[1]) // 2))
    out.parent.mkdir(parents=True, exist_ok=True)
    grid = grid.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    grid.save(out, optimize=True)
    print(f"{out}: {len(chosen)} images, {rejected} rejected by the crop rule, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
