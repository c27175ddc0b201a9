"""The cxr_confounders package end to end: run with `python -m unittest discover crates/python/tests` from the
repository root (tests/tests/python_package.rs runs it with $CXR_PYTHON when the package is installed there).

The world is the one `tests/tests/audit_model_spec.rs` builds for the ONNX cue readers: 48 chest-like 224 px
images over two hospitals that each hold both classes; every Covid-19 image carries a bright square, in the
top-left corner (outside the lungs) or inside the left lung. A model that reads the corner takes a shortcut.
"""

import json
import os
import tempfile
import unittest
from pathlib import Path

import numpy as np

import cxr_confounders as cxr

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "crates" / "onnx" / "tests" / "fixtures"
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

CORNER = (8, 8)  # cue_outside.onnx's rectangle
LUNG = (96, 48)  # cue_inside.onnx's


def in_lung(r, c):
    def e(cc):
        return ((r - 112.0) / 70.0) ** 2 + ((c - cc) / 40.0) ** 2 <= 1.0

    return e(64.0) | e(160.0)


def write_world(folder: Path, cue) -> list:
    """The rows of the world's manifest (also written as manifest.csv), image paths relative to `folder`."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    r, c = np.mgrid[0:224, 0:224]
    lung = in_lung(r, c)
    Image.fromarray(np.where(lung, 255, 0).astype(np.uint8)).save(folder / "mask.png")
    rows = []
    for i in range(48):
        covid = i % 2 == 0
        px = np.where(lung, 70.0, 150.0) + rng.uniform(-25, 25, size=(224, 224))
        px = np.round(px).astype(np.uint8)
        if covid:
            px[cue[0] : cue[0] + 32, cue[1] : cue[1] + 32] = 250
        name = f"im{i}.png"
        Image.fromarray(px).save(folder / name)
        rows.append(
            {
                "id": f"im{i}",
                "source": "hospital_a" if (i // 2) % 2 == 0 else "hospital_b",
                "label": "covid" if covid else "pneumonia",
                "patient": f"p{i}",
                "split": "train" if i < 16 else "test",
                "png8": name,
                "mask": "mask.png",
            }
        )
    with open(folder / "manifest.csv", "w") as f:
        cols = list(rows[0])
        f.write(",".join(cols) + "\n")
        for row in rows:
            f.write(",".join(str(row[k]) for k in cols) + "\n")
    return rows


def cue_reader(corner):
    """The cue readers' function in NumPy: 4 x (mean of channel 0 over a 32 px square - mean over the image)."""
    r0, c0 = corner

    def model(x):
        assert x.dtype == np.float32 and x.shape[1:] == (3, 224, 224), x.shape
        return 4.0 * (x[:, 0, r0 : r0 + 32, c0 : c0 + 32].mean(axis=(1, 2)) - x[:, 0].mean(axis=(1, 2)))

    return model


FAST = dict(saliency_images=2, saliency_grid=8, batch_size=16)
# The least Dice of the shipped lung UNet on each of the 4 demo radiographs (imlab-lung-masks-demo, a set it was
# never trained on): the committed weights score 0.946, 0.967, 0.955, 0.968 there.
DEMO_DICE = 0.90


class AuditFromPython(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.root = Path(cls.tmp.name)
        cls.corner_rows = write_world(cls.root / "corner", CORNER)
        cls.lung_rows = write_world(cls.root / "lung", LUNG)
        cls.cwd = os.getcwd()

    @classmethod
    def tearDownClass(cls):
        os.chdir(cls.cwd)
        cls.tmp.cleanup()

    def test_a_callable_reading_the_corner_is_a_shortcut_and_matches_the_onnx_export(self):
        manifest = self.root / "corner" / "manifest.csv"
        out = self.root / "out-callable"
        ours = cxr.audit(cue_reader(CORNER), manifest, input_size=224, name="corner", out=out, **FAST)
        self.assertEqual(ours.verdict, "shortcut", ours.tests)
        # The same function exported to ONNX, audited through the model spec: the same verdict and figures.
        onnx = cxr.audit(FIXTURES / "cue_outside.toml", manifest, name="corner", **FAST)
        self.assertEqual(onnx.verdict, ours.verdict)
        for a, b in zip(ours.tests, onnx.tests):
            self.assertEqual((a["test"], a["status"]), (b["test"], b["status"]))
            if a["figure"] is not None:
                self.assertAlmostEqual(a["figure"], b["figure"], places=4, msg=a["test"])
        # What was written, and what a notebook shows.
        self.assertTrue(ours.audit_json.is_file() and ours.report_html.is_file())
        self.assertEqual(json.loads(ours.audit_json.read_text()), ours.to_dict())
        self.assertIn("shortcut", ours._repr_html_())
        self.assertIn("lungs_removed[mean]", ours.flagged)
        self.assertIn("lungs_removed[mean]", ours.decided_by)
        self.assertIn(ours.data_risk["risk"], ("high", "low", "unknown"))
        self.assertIn("Data risk", ours._repr_html_())
        self.assertEqual(ours.model, "corner")

    def test_an_onnxruntime_callable_and_the_model_spec_give_the_same_audit(self):
        try:
            import onnxruntime as ort
        except ImportError:
            self.skipTest("onnxruntime is not installed")
        session = ort.InferenceSession(str(FIXTURES / "cue_outside.onnx"), providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name

        def cue_outside(x):
            return session.run(None, {input_name: x})[0]

        manifest = self.root / "corner" / "manifest.csv"
        ours = cxr.audit(cue_outside, manifest, input_size=224, name="corner", **FAST)
        spec = cxr.audit(FIXTURES / "cue_outside.toml", manifest, name="corner", **FAST)
        self.assertEqual(ours.verdict, spec.verdict)
        for a, b in zip(ours.tests, spec.tests):
            self.assertEqual((a["test"], a["status"]), (b["test"], b["status"]))
            for k in ("figure", "ci_low", "ci_high"):
                if a[k] is not None:
                    self.assertAlmostEqual(a[k], b[k], delta=1e-6, msg=f"{a['test']} {k}")

    def test_a_callable_reading_the_lung_is_not_flagged(self):
        result = cxr.audit(cue_reader(LUNG), self.root / "lung" / "manifest.csv", input_size=224, **FAST)
        self.assertNotEqual(result.verdict, "shortcut", result.tests)
        self.assertEqual(result.flagged, [])
        self.assertEqual(result.model, "model")  # a lambda-like closure named `model`

    def test_progress_reaches_the_logger_and_saliency_tolerance_is_passed_on(self):
        import logging

        class Collect(logging.Handler):
            def __init__(self):
                super().__init__()
                self.lines = []

            def emit(self, record):
                self.lines.append((record.levelno, record.getMessage()))

        collect = Collect()
        logger = logging.getLogger("cxr_confounders")
        logger.addHandler(collect)
        try:
            manifest = self.root / "corner" / "manifest.csv"
            exhaustive = cxr.audit(cue_reader(CORNER), manifest, input_size=224, saliency_tolerance=0, **FAST)
            refined = cxr.audit(cue_reader(CORNER), manifest, input_size=224, **FAST)
        finally:
            logger.removeHandler(collect)
        lines = [m for _, m in collect.lines]
        # The step times and the per-map progress the CLI logs, delivered before audit() returned.
        self.assertTrue(any(m.startswith("audit: source probe:") for m in lines), lines)
        self.assertTrue(any("occlusion maps: 2/2 maps" in m for m in lines), lines)
        self.assertTrue(any(m.startswith("audit: verdict and report:") for m in lines), lines)
        self.assertTrue(all(level >= logging.INFO for level, _ in collect.lines))
        # Tolerance 0 is the exhaustive map: every position of the 8x8 grid plus the unoccluded image.
        cost = lambda r: r.to_dict()["evidence"][0]["saliency"]["passes_per_map"]
        self.assertEqual(cost(exhaustive), 8 * 8 + 1)
        self.assertLess(cost(refined), cost(exhaustive))

    def test_rows_and_a_path_give_the_same_audit(self):
        os.chdir(self.root / "corner")  # relative image paths in rows resolve against the working folder
        try:
            from_rows = cxr.audit(cue_reader(CORNER), self.corner_rows, input_size=224, **FAST)
            from_file = cxr.audit(cue_reader(CORNER), "manifest.csv", input_size=224, **FAST)
        finally:
            os.chdir(self.cwd)
        self.assertEqual(from_rows.to_dict()["verdicts"], from_file.to_dict()["verdicts"])

    def test_a_dataframe_is_a_manifest(self):
        try:
            import pandas as pd
        except ImportError:
            self.skipTest("pandas is not installed")
        os.chdir(self.root / "corner")
        try:
            result = cxr.audit(cue_reader(CORNER), pd.DataFrame(self.corner_rows), input_size=224, **FAST)
        finally:
            os.chdir(self.cwd)
        self.assertEqual(result.verdict, "shortcut")

    def test_features_from_the_callable_feed_the_source_probe(self):
        base = cue_reader(CORNER)

        def with_features(x):
            # The image's mean brightness per quadrant: enough for a probe to try.
            q = x[:, 0].reshape(len(x), 2, 112, 2, 112).mean(axis=(2, 4)).reshape(len(x), 4)
            return base(x), q

        result = cxr.audit(
            with_features, self.root / "corner" / "manifest.csv", input_size=224, features="own", **FAST
        )
        probe = next(t for t in result.tests if t["test"] == "source_probe")
        self.assertNotEqual(probe["status"], "not_run", probe)

    def test_bad_models_and_manifests_get_clear_errors(self):
        manifest = self.root / "corner" / "manifest.csv"
        with self.assertRaisesRegex(ValueError, "input_size is required"):
            cxr.audit(cue_reader(CORNER), manifest)
        with self.assertRaisesRegex(RuntimeError, r"shape \[1, 1\] for a batch of"):
            cxr.audit(lambda x: np.zeros((1, 1)), manifest, input_size=224, **FAST)
        with self.assertRaisesRegex(RuntimeError, "the model raised"):
            cxr.audit(lambda x: 1 / 0, manifest, input_size=224, **FAST)
        with self.assertRaisesRegex(ValueError, "mean has 2 values"):
            cxr.audit(cue_reader(CORNER), manifest, input_size=224, mean=[0.5, 0.5])
        # Without split and mask: the split is named (the shipped lung UNet stands in for the masks).
        rows = [{k: v for k, v in r.items() if k not in ("split", "mask")} for r in self.corner_rows]
        with self.assertRaisesRegex(RuntimeError, "missing column `split`"):
            cxr.audit(cue_reader(CORNER), rows, input_size=224)

    def test_an_onnx_file_scores_alike_on_both_engines_and_engine_is_checked(self):
        manifest = self.root / "corner" / "manifest.csv"
        engines = ["tract"]
        try:
            import onnxruntime  # noqa: F401

            engines.append("onnxruntime")
        except ImportError:
            print("skipped: engine='onnxruntime' (onnxruntime is not installed)")
        tables = []
        for engine in engines:
            t = cxr.score(FIXTURES / "cue_outside.onnx", manifest, input_size=224, engine=engine)
            tables.append(t.to_dict("records") if hasattr(t, "to_dict") else t)
        for a, b in zip(tables[0], tables[-1]):
            self.assertEqual(a["id"], b["id"])
            self.assertAlmostEqual(a["score"], b["score"], delta=1e-5, msg=a["id"])
        with self.assertRaisesRegex(ValueError, "engine must be"):
            cxr.score(FIXTURES / "cue_outside.toml", manifest, engine="cuda")

    def test_score_feeds_the_callable_the_documented_input(self):
        from PIL import Image

        folder = self.root / "corner"
        table = cxr.score(cue_reader(CORNER), folder / "manifest.csv", input_size=224, batch_size=7)
        records = table.to_dict("records") if hasattr(table, "to_dict") else table
        self.assertEqual(len(records), 48)
        for r in records[:6]:
            # The images are already 224 px, so the input is (v / 255 - mean) / std, channel 0 for this model.
            v = np.asarray(Image.open(folder / f"{r['id']}.png"), dtype=np.float64)
            x = (v / 255.0 - MEAN[0]) / STD[0]
            logit = 4.0 * (x[8:40, 8:40].mean() - x.mean())
            self.assertAlmostEqual(r["score"], 1.0 / (1.0 + np.exp(-logit)), delta=1e-5, msg=r["id"])
            self.assertEqual(r["model"], "model")

    def test_lint_reports_the_training_splits_association(self):
        balanced = cxr.lint(self.corner_rows)
        self.assertLess(balanced.train_cramers_v, 0.2)
        self.assertFalse(balanced.has_errors)
        # The paper's design: each hospital holds one class in training.
        confounded_rows = [
            dict(r, source="hospital_a" if r["label"] == "covid" else "hospital_b") for r in self.corner_rows
        ]
        confounded = cxr.lint(confounded_rows)
        self.assertAlmostEqual(confounded.train_cramers_v, 1.0, places=6)
        self.assertTrue(confounded.has_errors, confounded.to_dict()["findings"])

    def test_evaluate_gives_each_metric_with_its_interval(self):
        rng = np.random.default_rng(3)
        labels = np.array([i % 2 for i in range(80)])
        scores = np.clip(0.5 + 0.3 * (labels - 0.5) + rng.normal(0, 0.2, 80), 0, 1)
        rows = [
            {"id": f"im{i}", "label": "covid" if labels[i] else "pneumonia", "source": "a" if i < 40 else "b",
             "split": "test", "score": float(scores[i])}
            for i in range(80)
        ]
        table = cxr.evaluate(rows, resamples=200)
        records = table.to_dict("records") if hasattr(table, "to_dict") else table
        auc = next(r for r in records if r["metric"] == "auc" and r["group"] == "all" and r["split"] == "test")
        # The exact AUC by ranks (no ties among continuous scores).
        pos, neg = scores[labels == 1], scores[labels == 0]
        expected = (pos[:, None] > neg[None, :]).mean()
        self.assertAlmostEqual(auc["value"], expected, places=9)
        self.assertLessEqual(auc["lo"], auc["value"])
        self.assertLessEqual(auc["value"], auc["hi"])

    def test_lung_masks_take_paths_and_arrays_alike(self):
        from PIL import Image

        paths = [self.root / "corner" / f"im{i}.png" for i in range(3)]
        arrays = [np.asarray(Image.open(p)) for p in paths]
        from_paths = cxr.lung_masks(paths)
        from_arrays = cxr.lung_masks(arrays)
        from_floats = cxr.lung_masks([a / 255.0 for a in arrays])
        self.assertEqual(len(from_paths), 3)
        for a, b, c in zip(from_paths, from_arrays, from_floats):
            self.assertEqual((a.shape, a.dtype), ((224, 224), np.uint8))
            self.assertTrue(set(np.unique(a)) <= {0, 255})
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)
        # One image in, one mask out; another size comes back at its own size.
        np.testing.assert_array_equal(cxr.lung_masks(str(paths[0])), from_paths[0])
        self.assertEqual(cxr.lung_masks(arrays[1][:200, :150]).shape, (200, 150))
        with self.assertRaisesRegex(ValueError, r"image 1: .*\[2, 3, 4\].*2-D"):
            cxr.lung_masks([arrays[0], np.zeros((2, 3, 4), np.uint8)])
        with self.assertRaisesRegex(ValueError, "image 0: dtype int32"):
            cxr.lung_masks([np.zeros((8, 8), np.int32)])
        with self.assertRaisesRegex(ValueError, "image 0: a float array must hold values in"):
            cxr.lung_masks([np.full((8, 8), 2.0)])
        with self.assertRaisesRegex(ValueError, "no-such.png"):
            cxr.lung_masks([self.root / "no-such.png"])

    def test_lung_masks_find_the_lungs_of_radiographs_never_trained_on(self):
        shared = Path(os.environ.get("CXR_SHARED_DATA", REPO.parent / "shared" / "data"))
        demo = shared / "imlab-lung-masks-demo"
        if not demo.is_dir():
            print(f"skipped: {demo} absent (set CXR_SHARED_DATA)")
            self.skipTest(f"{demo} absent")
        from PIL import Image

        images = [demo / f"{k}.jpg" for k in range(1, 5)]
        for img, mask in zip(images, cxr.lung_masks(images)):
            truth = np.asarray(Image.open(demo / img.name.replace(".jpg", "-mask.png")).convert("L")) >= 128
            pred = mask == 255
            dice = 2.0 * (pred & truth).sum() / (pred.sum() + truth.sum())
            self.assertGreater(dice, DEMO_DICE, img.name)

    def test_a_manifest_without_masks_is_audited_with_the_shipped_unet(self):
        from PIL import Image

        rows = [{k: v for k, v in r.items() if k != "mask"} for r in self.corner_rows]
        out = self.root / "out-no-mask"
        os.chdir(self.root / "corner")
        try:
            result = cxr.audit(cue_reader(CORNER), rows, input_size=224, out=out, **FAST)
        finally:
            os.chdir(self.cwd)
        self.assertTrue(any("shipped default lung UNet" in n for n in result.notes), result.notes)
        # The audit's masks are lung_masks' (the same UNet, the same code), kept in out/lung-masks/.
        for i in (0, 17, 47):
            kept = np.asarray(Image.open(out / "lung-masks" / "masks" / f"im{i}.png"))
            np.testing.assert_array_equal(kept, cxr.lung_masks(self.root / "corner" / f"im{i}.png"))
        self.assertTrue((out / "lung-masks" / "manifest.csv").is_file())
        self.assertNotEqual(result.tests, [])

    def test_a_torch_module_is_audited_in_eval_mode_without_gradients(self):
        try:
            import torch
        except ImportError:
            self.skipTest("torch is not installed")

        class CornerReader(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.scale = torch.nn.Parameter(torch.tensor(4.0))
                self.drop = torch.nn.Dropout(0.9)  # eval mode must switch it off

            def forward(self, x):
                assert not torch.is_grad_enabled()
                corner = x[:, 0, 8:40, 8:40].mean(dim=(1, 2))
                return self.drop(self.scale * (corner - x[:, 0].mean(dim=(1, 2))))

        result = cxr.audit(CornerReader(), self.root / "corner" / "manifest.csv", input_size=224, **FAST)
        self.assertEqual(result.verdict, "shortcut")
        self.assertEqual(result.model, "CornerReader")


if __name__ == "__main__":
    unittest.main()
