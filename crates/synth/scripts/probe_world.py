"""Design check of a synthetic world against the integrator's goal (not a test; needs torch).

Mimics `cargo xtask reproduce` on the ground truth: decode each selected image the way the pipeline does
(window from metadata where the file or its metadata has one, else min-max; MONOCHROME1 inverted), crop the
ground-truth lung box enlarged by 5% per side, resize, ImageNet-normalise, embed with a *random-weight*
torchvision ResNet50 (eval mode, initial BatchNorm statistics, GAP 2048-d), and fit a logistic head on
split 1 (train: V2-COV19-NII vs NIH). Prints seen-source and unseen-source AUCs.

usage: python probe_world.py WORLD_DIR [--px 128] [--no-crop]
"""
import argparse, csv, json, os, sys
import numpy as np

def load(root, row):
    p = os.path.join(root, row["path"])
    if p.endswith(".dcm"):
        import pydicom
        ds = pydicom.dcmread(p)
        a = ds.pixel_array.astype(np.float32)
        c, w = float(ds.WindowCenter), float(ds.WindowWidth)
        a = np.clip((a - (c - w / 2)) / w, 0, 1)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            a = 1 - a
        return a
    if p.endswith(".nii.gz"):
        import nibabel as nib
        a = np.asarray(nib.load(p).dataobj).astype(np.float32).T  # (x, y) -> rows, cols
    else:
        from PIL import Image
        a = np.array(Image.open(p)).astype(np.float32)
    if row["window_center"]:
        c, w = float(row["window_center"]), float(row["window_width"])
        a = np.clip((a - (c - w / 2)) / w, 0, 1)
    else:
        a = (a - a.min()) / max(a.max() - a.min(), 1e-6)
    if row["photometric"] == "MONOCHROME1":
        a = 1 - a
    return a

def crop(a, row, enabled):
    if not enabled:
        return a
    x, y, w, h = (int(row[k]) for k in ("lung_x", "lung_y", "lung_w", "lung_h"))
    mx, my = int(0.05 * w), int(0.05 * h)
    return a[max(0, y - my): y + h + my, max(0, x - mx): x + w + mx]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("world")
    ap.add_argument("--px", type=int, default=128)
    ap.add_argument("--no-crop", action="store_true")
    args = ap.parse_args()
    import torch, torchvision
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.metrics import roc_auc_score
    torch.manual_seed(0)
    torch.set_num_threads(2)
    rows = [r for r in csv.DictReader(open(os.path.join(args.world, "truth.csv"))) if r["selected"] == "true"]
    imgs = []
    for r in rows:
        a = crop(load(args.world, r), r, not args.no_crop)
        a = np.array(Image.fromarray((a * 255).astype(np.uint8)).resize((args.px, args.px), Image.BILINEAR)) / 255.0
        imgs.append(a)
    x = torch.tensor(np.stack(imgs), dtype=torch.float32)[:, None].repeat(1, 3, 1, 1)
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    x = (x - mean) / std
    net = torchvision.models.resnet50(weights=None).eval()
    net.fc = torch.nn.Identity()
    with torch.no_grad():
        f = torch.cat([net(x[i:i + 32]) for i in range(0, len(x), 32)]).numpy()
    src = np.array([r["source"] for r in rows])
    y = np.array([r["label"] == "covid" for r in rows])
    train_src = {"v2-cov19-nii", "nih"}
    rng = np.random.default_rng(0)
    seen = np.isin(src, list(train_src))
    idx = np.where(seen)[0]
    rng.shuffle(idx)
    cut = int(0.7 * len(idx))
    tr, te_seen = idx[:cut], idx[cut:]
    te_unseen = np.where(~seen)[0]
    sc = StandardScaler().fit(f[tr])
    clf = LogisticRegression(C=0.1, max_iter=5000).fit(sc.transform(f[tr]), y[tr])
    s = clf.decision_function(sc.transform(f))
    out = {"seen_auc": roc_auc_score(y[te_seen], s[te_seen]) if len(set(y[te_seen])) > 1 else None,
           "unseen_auc": roc_auc_score(y[te_unseen], s[te_unseen]) if len(set(y[te_unseen])) > 1 else None}
    print(json.dumps(out))

if __name__ == "__main__":
    main()
