#!/usr/bin/env python3
"""Generates the prediction files in ../tests/fixtures and the values scikit-learn (and numpy/scipy for
what scikit-learn lacks) computes on them, in expected.json. Run once; the outputs are committed and the
Rust tests read them (CI has no Python):

    /work/pyvenv/bin/python crates/eval/scripts/make_fixtures.py

Conventions checked here are the ones cxr-eval documents:
- predicted positive iff score >= threshold;
- ROC AUC = sklearn.metrics.roc_auc_score; AP = sklearn.metrics.average_precision_score;
- Brier = sklearn.metrics.brier_score_loss;
- confusion metrics from sklearn.metrics.confusion_matrix / precision_score / f1_score;
- validation threshold: Youden's J maximised over sklearn.metrics.roc_curve thresholds (drop_intermediate=False),
  the first maximum in descending threshold order, then the midpoint between that score and the next lower
  distinct validation score (the lowest score itself when there is none);
- ECE: 10 equal-width bins on [0, 1] (bin k holds [k/10, (k+1)/10), the last also holds 1.0), sum over bins of
  n_bin / n * |mean(label) - mean(score)| (numpy; scikit-learn has no ECE);
- DeLong variance: the structural components of DeLong et al. (1988) computed pairwise (O(m n)) in numpy, an
  implementation independent of the Rust midrank algorithm (Sun & Xu 2014); paired test z and p via scipy.
"""
import csv
import json
import os

import numpy as np
from scipy import stats
from sklearn import metrics

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures")
rng = np.random.default_rng(20210208)


def write_preds(name, rows):
    path = os.path.join(OUT, name)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "source", "split", "label", "score", "patient", "model"])
        for r in rows:
            w.writerow(r)
    return path


def psi(x, y):
    return np.where(x > y, 1.0, np.where(x == y, 0.5, 0.0))


def delong_pairwise(scores, y):
    """Returns (auc, V10 (per positive), V01 (per negative)) from the pairwise kernel."""
    x = scores[y == 1]
    z = scores[y == 0]
    k = psi(x[:, None], z[None, :])
    return k.mean(), k.mean(axis=1), k.mean(axis=0)


def delong_var(scores, y):
    auc, v10, v01 = delong_pairwise(scores, y)
    m, n = len(v10), len(v01)
    return auc, np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n


def delong_paired(s1, s2, y):
    a1, v10a, v01a = delong_pairwise(s1, y)
    a2, v10b, v01b = delong_pairwise(s2, y)
    m, n = len(v10a), len(v01a)
    s10 = np.cov(np.vstack([v10a, v10b]), ddof=1)
    s01 = np.cov(np.vstack([v01a, v01b]), ddof=1)
    s = s10 / m + s01 / n
    var_diff = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    z = (a1 - a2) / np.sqrt(var_diff)
    p = 2 * stats.norm.sf(abs(z))
    return dict(auc1=a1, auc2=a2, var1=s[0, 0], var2=s[1, 1], cov=s[0, 1], z=z, p=p)


def ece(scores, y, bins=10):
    idx = np.minimum((scores * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.sum() / len(y) * abs(y[sel].mean() - scores[sel].mean())
    return total


def youden_threshold(scores, y):
    fpr, tpr, thr = metrics.roc_curve(y, scores, drop_intermediate=False)
    j = tpr - fpr
    # roc_curve's first threshold is +inf (nothing positive); skip it like cxr-eval does.
    k = 1 + int(np.argmax(j[1:]))
    t = thr[k]
    lower = np.unique(scores[scores < t])
    return float((t + lower.max()) / 2) if len(lower) else float(t)


def confusion(scores, y, t):
    pred = (scores >= t).astype(int)
    tn, fp, fn, tp = metrics.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return dict(
        threshold=float(t),
        tp=int(tp), fp=int(fp), tn=int(tn), fn=int(fn),
        accuracy=metrics.accuracy_score(y, pred),
        sensitivity=metrics.recall_score(y, pred),
        specificity=tn / (tn + fp),
        precision=metrics.precision_score(y, pred),
        f1=metrics.f1_score(y, pred),
    )


def threshold_free(scores, y):
    auc, var = delong_var(scores, y)
    assert abs(auc - metrics.roc_auc_score(y, scores)) < 1e-12
    return dict(
        n=int(len(y)), n_pos=int(y.sum()),
        auc=metrics.roc_auc_score(y, scores),
        ap=metrics.average_precision_score(y, scores),
        brier=metrics.brier_score_loss(y, scores),
        ece=ece(scores, y),
        delong_var=var,
    )


expected = {}

# 1. Coarse scores (many ties), imbalanced, two splits and three sources, patients with 1-3 images.
rows = []
n = 260
labels = (rng.random(n) < 0.35).astype(int)
raw = np.where(labels == 1, rng.normal(0.62, 0.18, n), rng.normal(0.42, 0.2, n))
scores = np.clip(np.round(raw, 2), 0, 1)
splits = np.where(np.arange(n) < 90, "val", "test")
sources = np.array(["bimcv", "nih", "chexpert"])[rng.integers(0, 3, n)]
patients = [f"p{i // 2 if i % 5 else i}" for i in range(n)]
for i in range(n):
    rows.append([f"t{i:03d}", sources[i], splits[i], "covid" if labels[i] else "pneumonia",
                 repr(float(scores[i])), patients[i], "tied"])
write_preds("ties.csv", rows)
val = splits == "val"
test = ~val
t = youden_threshold(scores[val], labels[val])
expected["ties.csv"] = dict(
    test=threshold_free(scores[test], labels[test]),
    val=threshold_free(scores[val], labels[val]),
    test_at_half=confusion(scores[test], labels[test], 0.5),
    val_threshold=t,
    test_at_val_threshold=confusion(scores[test], labels[test], t),
)

# 2. Two models scoring the same continuous test set (paired DeLong), plus a validation split.
n = 180
labels = (rng.random(n) < 0.45).astype(int)
a = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 1.6 * labels - 0.7)))
b = 1 / (1 + np.exp(-(0.6 * np.log(a / (1 - a)) + rng.normal(0, 1, n) + 0.5 * labels)))
splits = np.where(np.arange(n) < 60, "val", "test")
rows = []
for name, s in (("model-a", a), ("model-b", b)):
    for i in range(n):
        rows.append([f"c{i:03d}", "padchest" if i % 2 else "bimcv", splits[i],
                     "covid" if labels[i] else "pneumonia", repr(float(s[i])), f"q{i}", name])
write_preds("paired.csv", rows)
val = splits == "val"
test = ~val
entry = {}
for name, s in (("model-a", a), ("model-b", b)):
    t = youden_threshold(s[val], labels[val])
    entry[name] = dict(
        test=threshold_free(s[test], labels[test]),
        test_at_half=confusion(s[test], labels[test], 0.5),
        val_threshold=t,
        test_at_val_threshold=confusion(s[test], labels[test], t),
    )
entry["paired_test"] = delong_paired(a[test], b[test], labels[test])
expected["paired.csv"] = entry

# 3. Tiny hand-made set (ties across classes, a score of exactly 0.5 and of 1.0).
scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.5, 1.0, 0.5, 0.05, 0.65])
labels = np.array([0, 0, 1, 1, 1, 0, 1, 1, 0, 0])
rows = [[f"s{i}", "nih", "test", "covid" if labels[i] else "pneumonia", repr(float(scores[i])), "", "tiny"]
        for i in range(len(scores))]
write_preds("tiny.csv", rows)
expected["tiny.csv"] = dict(test=threshold_free(scores, labels), test_at_half=confusion(scores, labels, 0.5))

with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1, sort_keys=True, default=float)
    f.write("\n")
print("wrote", sorted(expected))
