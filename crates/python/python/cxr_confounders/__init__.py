"""Audit a chest X-ray classifier for source shortcuts: does its output follow the hospital, not the disease?

    import cxr_confounders as cxr
    result = cxr.audit(model, "manifest.csv", input_size=224, out="audit")
    result.verdict          # 'shortcut', 'suspicious', 'no_shortcut_found' or 'insufficient_evidence'
    result.tests            # one row per test: figure, CI, threshold, rule
    result                  # in a notebook: the verdict and the tests as a table

`model` may be a Python callable taking a float32 NumPy batch [N, C, S, S] and returning scores [N] or [N, K]
(or `(scores, features)`), a `torch.nn.Module`, a path to an ONNX file, a model spec TOML, or a run folder
of `cxr`. The audit itself is the Rust library `cxr-audit`, the same code the `cxr audit` command runs. A
manifest without a `mask` column gets its lung masks from the lung UNet shipped in the package
(`lung_masks(images)` gives them for any images).
"""

from ._audit import Audit, Lint, TorchModel, audit, evaluate, lint, lung_masks, score
from ._native import version as _native_version

__version__ = _native_version()
__all__ = ["audit", "Audit", "TorchModel", "evaluate", "lint", "lung_masks", "score", "Lint", "__version__"]
