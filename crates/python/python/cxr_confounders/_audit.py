"""The Python side of the binding: model adapters, manifests from DataFrames or rows, the Audit object.

Everything that decides the verdict happens in Rust (`cxr_confounders._native.run_audit`, over the
`cxr-audit` library); this module only converts what a notebook holds.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np

from . import _native

ModelLike = Union[Callable[..., Any], str, os.PathLike]

# The Rust side's log (progress of the audit's steps and maps, their times, warnings) arrives here, on the
# `cxr_confounders` logger. It gets its own handler on stderr (in a notebook: the cell) at INFO, unless the
# user configured that logger first; `logging.getLogger("cxr_confounders").setLevel(logging.WARNING)`
# silences the progress.
logger = logging.getLogger("cxr_confounders")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _log(level: int, message: str) -> None:
    logger.log(level, message)


_native.install_logging(_log)


def _call_model(model, batch: bytes, shape, want_features: bool):
    """Called from Rust with one normalised batch; returns the outputs as bytes with their shapes."""
    x = np.frombuffer(batch, dtype="<f4").reshape(tuple(shape))
    out = model(x)
    feats = None
    if isinstance(out, tuple):
        if len(out) != 2:
            raise ValueError(f"the model returned a tuple of {len(out)}: expected scores or (scores, features)")
        out, feats = out
    scores = np.asarray(out, dtype=np.float64)
    if scores.ndim == 1:
        rows, cols = scores.shape[0], 1
    elif scores.ndim == 2:
        rows, cols = scores.shape
    else:
        raise ValueError(f"scores of shape {list(scores.shape)}: expected [N] or [N, K]")
    packed_features = None
    if want_features and feats is not None:
        f = np.asarray(feats, dtype=np.float32)
        f = f.reshape(f.shape[0], -1) if f.ndim >= 1 and f.size else f.reshape(0, 0)
        packed_features = (np.ascontiguousarray(f, dtype="<f4").tobytes(), f.shape[0], f.shape[1])
    return (np.ascontiguousarray(scores, dtype="<f8").tobytes(), rows, cols, packed_features)


class TorchModel:
    """A `torch.nn.Module` as the audit's callable: eval mode, no gradients, each batch on the module's own
    device (a model on a GPU is audited on that GPU). `features` names a submodule (e.g. `"avgpool"`) whose
    output, flattened, feeds the source probe."""

    def __init__(self, module, features: Optional[str] = None):
        import torch  # only when given a torch model

        self._torch = torch
        self.module = module.eval()
        params = list(module.parameters())
        self.device = params[0].device if params else torch.device("cpu")
        self._captured = None
        self.features = features
        if features is not None:
            modules = dict(module.named_modules())
            if features not in modules:
                raise ValueError(f"features: the module has no submodule named {features!r}")
            modules[features].register_forward_hook(self._capture)

    def _capture(self, _module, _inputs, output):
        self._captured = output

    def __call__(self, x: np.ndarray):
        torch = self._torch
        with torch.no_grad():
            batch = torch.from_numpy(np.array(x, copy=True)).to(self.device)
            self._captured = None
            out = self.module(batch)
            if isinstance(out, (tuple, list)):
                out = out[0]
            scores = out.detach().float().cpu().numpy()
            if self.features is None:
                return scores
            feats = self._captured
            if feats is None:
                raise ValueError(f"features: submodule {self.features!r} did not run in the forward pass")
            return scores, feats.detach().float().flatten(1).cpu().numpy()


def _is_torch_module(obj) -> bool:
    return any(c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in type(obj).__mro__)


def _model_kind(model) -> str:
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        if p.is_dir() or p.suffix == ".safetensors":
            return "run"
        if p.suffix == ".onnx":
            return "onnx"
        if p.suffix == ".toml":
            return "spec"
        raise ValueError(f"{p}: a model path must be an .onnx file, a model spec .toml or a run folder")
    if callable(model):
        return "callable"
    raise TypeError(f"model must be a callable, a torch.nn.Module or a path, not {type(model).__name__}")


def _manifest_csv(manifest) -> tuple[str, Optional[bytes]]:
    """(name, CSV bytes) for a table in memory; (path, None) for a file."""
    if isinstance(manifest, (str, os.PathLike)):
        return os.fspath(manifest), None
    if hasattr(manifest, "to_csv") and hasattr(manifest, "columns"):  # a pandas DataFrame
        return "<DataFrame>", manifest.to_csv(index=False).encode()
    rows = list(manifest)
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise TypeError("manifest must be a CSV path, a pandas DataFrame or a non-empty list of dicts")
    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return "<rows>", buf.getvalue().encode()


class Audit:
    """What the audit found: `.verdict`, `.tests`, `.to_dict()`; `.audit_json` and `.report_html` when the
    audit wrote them (`out=`)."""

    def __init__(self, result: dict):
        self._result = result
        report = result["report"]
        self.report = report
        verdict = report["verdicts"][0]
        self.model = verdict["model"]
        self.verdict = verdict["verdict"]
        self.tests = verdict["tests"]
        # What the training data offered (the split's label x source association), apart from the verdict,
        # which is about the model; and the behavioural (or supporting) tests that decided the verdict.
        self.data_risk = verdict.get("data_risk")
        self.decided_by = verdict.get("decided_by", [])
        self.reason = verdict.get("reason", "")
        self.evidence = report["evidence"][0]
        self.notes = result.get("notes", [])
        files = result.get("files") or {}
        self.audit_json = Path(files["audit_json"]) if files.get("audit_json") else None
        self.report_html = Path(files["report_html"]) if files.get("report_html") else None
        self.out = Path(files["dir"]) if files.get("dir") else None

    @property
    def flagged(self) -> list[str]:
        """The tests that flagged."""
        return [t["test"] for t in self.tests if t["status"] == "flag"]

    def to_dict(self) -> dict:
        """`audit.json`'s content (evidence and verdict) as plain Python values."""
        return json.loads(json.dumps(self.report))

    def __repr__(self) -> str:
        return f"Audit(model={self.model!r}, verdict={self.verdict!r}, decided_by={self.decided_by!r})"

    def _repr_html_(self) -> str:
        def cell(v):
            if v is None:
                return "–"
            if isinstance(v, float):
                return f"{v:.3f}"
            return html.escape(str(v))

        rows = "".join(
            "<tr>"
            + "".join(
                f"<td>{cell(t.get(k))}</td>" for k in ("test", "status", "figure", "ci_low", "ci_high", "threshold")
            )
            + f"<td>{html.escape(t.get('rule', ''))}</td></tr>"
            for t in self.tests
        )
        link = f"<p>Full report: <code>{html.escape(str(self.report_html))}</code></p>" if self.report_html else ""
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        risk = ""
        if self.data_risk:
            risk = (
                f"<p>Data risk ({html.escape(self.data_risk.get('test', ''))}): "
                f"<b>{html.escape(self.data_risk.get('risk', ''))}</b>. "
                f"{html.escape(self.data_risk.get('detail', ''))}</p>"
            )
        return (
            f"<div>{risk}<h3>Shortcut audit of {html.escape(self.model)}: <b>{html.escape(self.verdict)}</b></h3>"
            f"<p>{html.escape(self.reason)}</p>"
            "<table><thead><tr><th>test</th><th>status</th><th>figure</th><th>CI low</th><th>CI high</th>"
            f"<th>threshold</th><th>rule</th></tr></thead><tbody>{rows}</tbody></table>"
            f"{'<ul>' + notes + '</ul>' if notes else ''}{link}</div>"
        )


def _prepare_model(model, name, input_size, channels, mean, std, output, output_index, features, engine="auto"):
    """(kind, the model as the native layer takes it, its name, the input options as JSON, has features)."""
    kind = _model_kind(model)
    if engine not in ("auto", "onnxruntime", "tract"):
        raise ValueError(f'engine must be "auto", "onnxruntime" or "tract", not {engine!r}')
    has_features = False
    if kind == "callable":
        if input_size is None:
            raise ValueError("input_size is required for a callable or torch model (the side of its square input)")
        if name is None:
            name = type(model).__name__ if _is_torch_module(model) else getattr(model, "__name__", type(model).__name__)
        if _is_torch_module(model):
            model = TorchModel(model, features=features)
            has_features = features is not None
        else:
            has_features = features is not None or bool(getattr(model, "has_features", False))
    input_options = {"channels": channels, "output": output, "output_index": output_index, "engine": engine}
    if input_size is not None:
        input_options["input_size"] = input_size
    elif kind == "onnx":
        raise ValueError("input_size is required for an ONNX file (or give a model spec .toml)")
    if mean is not None:
        input_options["mean"] = list(mean)
    if std is not None:
        input_options["std"] = list(std)
    model_arg = model if kind == "callable" else os.fspath(model)
    return kind, model_arg, name, json.dumps(input_options), has_features


def audit(
    model: ModelLike,
    manifest: Union[str, os.PathLike, Iterable[dict], Any],
    *,
    name: Optional[str] = None,
    out: Union[str, os.PathLike, None] = None,
    input_size: Optional[int] = None,
    channels: int = 3,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    output: str = "logit",
    output_index: int = 0,
    features: Optional[str] = None,
    batch_size: int = 8,
    split: str = "test",
    column: Optional[str] = None,
    fills: Sequence[str] = ("mean", "noise"),
    folds: int = 5,
    saliency_images: int = 8,
    saliency_grid: int = 24,
    saliency_tolerance: float = 0.1,
    lung_energy: Union[str, os.PathLike, None] = None,
    features_csv: Union[str, os.PathLike, None] = None,
    engine: str = "auto",
) -> Audit:
    """Audits `model` on `manifest` (columns as `cxr audit`'s: docs/AUDIT.md) and returns an `Audit`.

    A callable or torch module gets batches already resized and normalised as an ONNX model would
    (`input_size` is required; `channels`, `mean`, `std` default to 3 and ImageNet's statistics; with
    `channels=1`, give the model's own one-value `mean` and `std`) and returns
    scores `[N]`/`[N, K]` (a logit by default, `output="probability"` otherwise; column `output_index`).
    A callable returning `(scores, features)`, or a torch module with `features="<submodule>"`, feeds the
    source probe. `out` writes `audit.json`, `report.html` and the maps there. The interpreter is released
    while the audit works; the model is called one batch (`batch_size` images) at a time. An ONNX file or
    model spec runs on `engine`: "auto" (onnxruntime where found, else tract), "onnxruntime" or "tract".
    """
    kind, model_arg, name, input_options, has_features = _prepare_model(
        model, name, input_size, channels, mean, std, output, output_index, features, engine
    )
    config = {
        "split": split,
        "fills": list(fills),
        "folds": folds,
        "saliency_images": saliency_images,
        "saliency_grid": saliency_grid,
        "saliency_tolerance": saliency_tolerance,
        "batch_size": batch_size,
        "name": name,
        "out": os.fspath(out) if out is not None else None,
        "column": column,
        "lung_energy": os.fspath(lung_energy) if lung_energy is not None else None,
        "features": os.fspath(features_csv) if features_csv is not None else None,
    }
    manifest_name, manifest_csv = _manifest_csv(manifest)
    raw = _native.run_audit(
        kind,
        model_arg,
        _call_model,
        manifest_name,
        manifest_csv,
        os.getcwd(),
        json.dumps(config),
        input_options,
        has_features,
    )
    return Audit(json.loads(raw))


def _table(rows: list):
    """A pandas DataFrame when pandas is installed, the list of dicts otherwise."""
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows)


class Lint:
    """The split linter's result: `.findings` (severity, message) and `.splits` as tables, `.train_cramers_v`
    (label x source association of the training split: the data risk the audit reports), `.has_errors`."""

    def __init__(self, report: dict):
        self.report = report
        self.train_cramers_v = report.get("train_cramers_v")
        self.findings = _table(report.get("findings", []))
        self.splits = _table(
            [{k: v for k, v in s.items() if k != "contingency"} for s in report.get("splits", [])]
        )
        self.has_errors = any(f["severity"] == "error" for f in report.get("findings", []))

    def to_dict(self) -> dict:
        return self.report

    def __repr__(self) -> str:
        return f"Lint(train_cramers_v={self.train_cramers_v!r}, findings={len(self.report.get('findings', []))})"


def lint(manifest) -> Lint:
    """The split linter (`cxr manifest lint`) on a CSV path, a DataFrame or rows: label x source association per
    split (Cramér's V), patients and identical files shared across splits, sources held out of training."""
    name, text = _manifest_csv(manifest)
    return Lint(json.loads(_native.lint(name, text, os.getcwd())))


def evaluate(
    predictions,
    *,
    train_manifest: Union[str, os.PathLike, None] = None,
    resamples: int = 2000,
    seed: int = 2021,
    level: float = 0.95,
    out: Union[str, os.PathLike, None] = None,
):
    """`cxr evaluate` on predictions (a `predictions.csv` path, a list of paths, a DataFrame or rows with `id,
    label, source, split, score` and optionally `model, patient`): every metric per model, split and source group
    (all, seen, unseen, each source) with its interval, as a table in `metrics.csv`'s long format. `out` also
    writes the full outputs (metrics.json, plots) there."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(predictions, (str, os.PathLike)):
            paths = [os.fspath(predictions)]
        elif isinstance(predictions, (list, tuple)) and predictions and all(
            isinstance(p, (str, os.PathLike)) for p in predictions
        ):
            paths = [os.fspath(p) for p in predictions]
        else:
            _, text = _manifest_csv(predictions)
            paths = [os.path.join(tmp, "predictions.csv")]
            with open(paths[0], "wb") as f:
                f.write(text)
        options = {"resamples": resamples, "seed": seed, "level": level}
        text = _native.evaluate(
            paths,
            os.fspath(train_manifest) if train_manifest is not None else None,
            json.dumps(options),
            os.fspath(out) if out is not None else None,
        )
    rows = list(csv.DictReader(io.StringIO(text)))
    for r in rows:
        for k in ("value", "lo", "hi", "threshold"):
            if r.get(k) not in (None, ""):
                try:
                    r[k] = float(r[k])
                except ValueError:
                    pass
        for k in ("n", "n_covid", "n_pneumonia"):
            if r.get(k, "").isdigit():
                r[k] = int(r[k])
    return _table(rows)


def score(
    model: ModelLike,
    manifest,
    *,
    out: Union[str, os.PathLike, None] = None,
    name: Optional[str] = None,
    input_size: Optional[int] = None,
    channels: int = 3,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    output: str = "logit",
    output_index: int = 0,
    batch_size: int = 16,
    column: str = "png8",
    engine: str = "auto",
):
    """`cxr score`: the model over every image of the manifest (a CSV path, a DataFrame or rows with `id,
    source, label` and the image column), as a predictions table (`id, source, split, label, score, patient,
    model`); `out` keeps `predictions.csv` (and `rejects.csv` beside it, the images that could not be read).
    An ONNX file or model spec runs on `engine` ("auto", "onnxruntime" or "tract"), as in `audit`."""
    import tempfile

    kind, model_arg, name, input_options, _ = _prepare_model(
        model, name, input_size, channels, mean, std, output, output_index, None, engine
    )
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(manifest, (str, os.PathLike)):
            path = os.fspath(manifest)
        else:
            # A table in memory: its image paths resolve against the working folder, written out absolute.
            _, text = _manifest_csv(manifest)
            rows = list(csv.DictReader(io.StringIO(text.decode())))
            for r in rows:
                if r.get(column):
                    r[column] = os.path.abspath(r[column])
            path = os.path.join(tmp, "manifest.csv")
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
                w.writeheader()
                w.writerows(rows)
        target = os.fspath(out) if out is not None else os.path.join(tmp, "predictions.csv")
        written = _native.score(kind, model_arg, _call_model, name, path, input_options, batch_size, target)
        with open(written, newline="") as f:
            rows = list(csv.DictReader(f))
    for r in rows:
        r["score"] = float(r["score"])
    return _table(rows)


def _grey_pixels(i: int, a) -> tuple:
    """(bytes, width, height) of a 2-D grey array: uint8 as it is, float in [0, 1] scaled to 0-255."""
    a = np.asarray(a)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"image {i}: an array of shape {list(a.shape)}: expected a 2-D grey image [H, W]")
    if a.dtype == np.uint8:
        g = a
    elif a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or a.min() < 0.0 or a.max() > 1.0:
            raise ValueError(f"image {i}: a float array must hold values in [0, 1] (or pass uint8 0-255)")
        g = np.rint(a * 255.0).astype(np.uint8)
    elif a.dtype == np.bool_:
        g = a.astype(np.uint8) * 255
    else:
        raise ValueError(f"image {i}: dtype {a.dtype}: expected uint8 (0-255) or float (0-1)")
    g = np.ascontiguousarray(g)
    return (g.tobytes(), int(g.shape[1]), int(g.shape[0]))


def lung_masks(images, *, weights: Union[str, os.PathLike, None] = None, flip: bool = True) -> list:
    """Lung masks from the lung UNet shipped with the package (or `weights=`, a UNet of `cxr segment train`),
    the masks `audit()` computes for a manifest without a `mask` column and `cxr segment predict` writes.

    `images`: one image or a list, each a file path (PNG or JPEG, format by content) or a 2-D grey NumPy array
    (uint8 0-255, or float 0-1). Returns one uint8 array per image, at the image's own size, 255 inside the
    lungs and 0 elsewhere (a single array for a single image). `flip=False` skips the test-time mirror
    (half the cost). The interpreter is released while the UNet runs."""
    single = isinstance(images, (str, os.PathLike, np.ndarray))
    items = [images] if single else list(images)
    native = [
        os.fspath(im) if isinstance(im, (str, os.PathLike)) else _grey_pixels(i, im) for i, im in enumerate(items)
    ]
    out = _native.lung_masks(native, os.fspath(weights) if weights is not None else None, flip)
    masks = [np.frombuffer(data, dtype=np.uint8).reshape(h, w) for data, w, h in out]
    return masks[0] if single else masks
