"""Evaluation end to end on the committed sample: blessing decisions from real LocalDagRunner
runs, the metrics TFMA computed checked against each other and against the serving path, the
HTML report and the review notebook.

One pipeline history, in order: a first good run (no baseline: judged on the floors alone),
a second run of the same pipeline (the first model is now the blessed baseline), then a worse
model that clears every floor but falls behind the baseline. A separate history holds a
deliberately weak model that has nothing to compare with.
"""

import base64
import dataclasses
import io
import os
from html.parser import HTMLParser

import numpy as np
import pytest

import local_runner
from cli import main as cli
from fmnist import features
from reports.evaluation import load_latest
from reports.html_report import default_report_path
from reports.misclassified import predict_split
from tfx_pipeline import span_verdicts
from tfx_pipeline.components.serving_validator import NOT_EVALUATED
from tfx_pipeline.config import BLESSING_SPLIT, GOLDEN_SPLIT, REPORTED_SPLIT, EvaluationThresholds
from tfx_pipeline.serving_validation.server_process import PROJECT_SERVER

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(REPO, "notebooks", "evaluation_review.ipynb")
SAMPLE_SPLIT_SIZES = {BLESSING_SPLIT: 200, GOLDEN_SPLIT: 150, REPORTED_SPLIT: 150}  # the test split's 300, halved


def _config(data_dir, output_dir, *extra):
    return local_runner.config_from_args(["--sample", "--data-dir", str(data_dir), "--output-dir", str(output_dir),
                                          *extra], environ={})


def _pushed_versions(config) -> list[str]:
    if not os.path.isdir(config.serving_model_dir):
        return []
    return sorted(os.listdir(config.serving_model_dir))


@pytest.fixture(scope="module")
def history(first_sample_run):
    """The good pipeline's first run (the session's, shared); later fixtures add runs to the
    same history. Cold starts only: these tests are about the blessing, and a warm-started rerun
    would be a new model."""
    config = first_sample_run()
    return {"config": config, "first": load_latest(config.metadata_path),
            "first_pushed": _pushed_versions(config)}


@pytest.fixture(scope="module")
def second_run(history):
    config = history["config"]
    local_runner.run(config)
    history["second"] = load_latest(config.metadata_path)
    history["second_pushed"] = _pushed_versions(config)
    return history


def test_first_run_is_judged_on_the_floors_alone_and_pushed(history):
    first = history["first"]
    assert first.blessed is True
    assert first.baseline_model_uri is None
    judged = first.judged
    assert judged.validation_ok is True and judged.failures == []
    rules = sorted(check.rule for check in judged.checks)
    assert rules == sorted(["accuracy"] + [f"recall of {name} (class {c})"
                                           for c, name in enumerate(features.CLASS_NAMES)])
    assert all(check.passed for check in judged.checks)
    assert len(history["first_pushed"]) == 1
    served = first.serving_validation  # the serving check ran on it before the push
    assert served["blessed"] is True and served["reason"] == "" and served["server"] == PROJECT_SERVER
    assert served["requests"] > 0 and served["p99_ms"] > 0


def test_metrics_are_computed_on_every_split_and_agree_with_each_other(history):
    first = history["first"]
    assert set(first.splits) == {BLESSING_SPLIT, GOLDEN_SPLIT, REPORTED_SPLIT}
    assert first.splits[REPORTED_SPLIT].judged is False and first.splits[REPORTED_SPLIT].checks == []
    # The first model has no stable one to be compared with: the golden gate judges nothing yet.
    assert first.golden_status == "not judged" and first.splits[GOLDEN_SPLIT].checks == []
    for name, split in first.splits.items():
        size = SAMPLE_SPLIT_SIZES[name]
        assert split.overall["example_count"] == size
        assert split.confusion.sum() == size
        assert [row.examples for row in split.per_class] == [size // features.NUM_CLASSES] * features.NUM_CLASSES
        recalls = np.array([row.recall for row in split.per_class])
        # Three independent TFMA computations of the same facts must agree.
        np.testing.assert_allclose(recalls, np.diag(split.confusion) / split.confusion.sum(axis=1), atol=1e-6)
        np.testing.assert_allclose(split.overall["accuracy"], np.trace(split.confusion) / size, atol=1e-6)
        np.testing.assert_allclose(split.overall["macro_recall"], recalls.mean(), atol=1e-6)
        precisions = np.array([row.precision for row in split.per_class])
        predicted = split.confusion.sum(axis=0)
        np.testing.assert_allclose(precisions[predicted > 0],
                                   (np.diag(split.confusion) / np.maximum(predicted, 1))[predicted > 0], atol=1e-6)
        # TFMA sums AUC over 10,000 thresholds: a perfect class can read 1.0000000000000002.
        aucs = [row.auc for row in split.per_class]
        assert all(0.5 <= auc <= 1.0 + 1e-9 for auc in aucs), aucs
    # On the judged split, the class floors were checked on exactly these recalls.
    judged = first.judged
    by_rule = {check.rule: check.value for check in judged.checks}
    for row in judged.per_class:
        assert by_rule[f"recall of {row.name} (class {row.class_id})"] == pytest.approx(row.recall, abs=1e-6)


def test_tfma_and_the_serving_signature_see_the_same_model(history):
    """TFMA scores serialized tf.Examples; clients send raw pixels to serving_default. Same answers."""
    first = history["first"]
    predictions = predict_split(first.model_uri, first.examples_uris[REPORTED_SPLIT], REPORTED_SPLIT)
    np.testing.assert_array_equal(predictions.confusion(), first.splits[REPORTED_SPLIT].confusion)


def test_second_run_is_compared_with_the_first_as_baseline(second_run):
    first, second = second_run["first"], second_run["second"]
    assert second.baseline_model_uri == first.model_uri
    judged = second.judged
    assert judged.has_baseline
    (comparison,) = [c for c in judged.checks if c.rule == "accuracy, change vs baseline"]
    assert comparison.slice == "overall" and comparison.passed
    # The Trainer was cached, so the candidate is the baseline itself: no change at all.
    assert comparison.value == pytest.approx(0.0, abs=1e-9)
    assert judged.baseline_overall["accuracy"] == pytest.approx(judged.overall["accuracy"])
    assert second.blessed is True
    # The golden gate compared it with the stable model (the first push, the same model): the
    # overall accuracy and each class's recall, every change 0.
    assert second.golden_status == "passed" and second.golden_baseline_uri == first.model_uri
    assert len(second.golden.checks) == 1 + features.NUM_CLASSES
    assert all(check.passed and check.value == pytest.approx(0.0, abs=1e-9) for check in second.golden.checks)


def _fail_rules(evaluation) -> set[str]:
    return {check.rule for check in evaluation.judged.checks if not check.passed}


def test_weak_model_with_no_baseline_is_not_blessed_and_nothing_is_pushed(tmp_path, sample_dir):
    config = _config(sample_dir, tmp_path, "--max-train-steps", "1")
    local_runner.run(config)
    weak = load_latest(config.metadata_path)

    assert weak.blessed is False and weak.baseline_model_uri is None
    assert "accuracy" in _fail_rules(weak)
    assert weak.judged.validation_ok is False and weak.judged.failures
    assert weak.serving_validation["reason"] == NOT_EVALUATED  # never served: no time spent on it
    assert _pushed_versions(config) == []
    # Only floors failed (no baseline to compare with): the model is not served, the span's data
    # is kept for the windows that follow.
    (verdict,) = span_verdicts.span_verdicts(config.metadata_path, config.pipeline_name).values()
    assert verdict.verdict == "accepted" and verdict.by == "pipeline run"
    assert verdict.reason.startswith("kept for training; its model missed the blessing floors (")
    assert "accuracy 0." in verdict.reason and verdict.reason.endswith("), not pushed")
    report = cli.main(["report", "--pipeline-root", config.pipeline_root, "--mistakes", "8"])
    assert report == 0
    page = default_report_path(os.path.dirname(config.pipeline_root)).read_text()
    assert "NOT BLESSED" in page
    assert f"NOT INFRA-BLESSED, not pushed: {NOT_EVALUATED}" in page


class _PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.ids, self.text, self.table_rows, self._table = [], set(), [], {}, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs)
        if tag == "table":
            self._table = attrs.get("id") or attrs.get("class") or f"table{len(self.table_rows)}"
            self.table_rows.setdefault(self._table, [])
        if tag == "tr" and self._table is not None:
            self.table_rows[self._table].append(attrs)

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)


def test_report_shows_the_latest_evaluation_with_baseline(second_run, tmp_path):
    from PIL import Image

    config = second_run["config"]
    out = tmp_path / "report.html"
    assert cli.main(["report", "--pipeline-root", config.pipeline_root, "--out", str(out)]) == 0
    page = _PageParser()
    page.feed(out.read_text())
    text = " ".join(page.text)

    assert {"decision", "checks", "serving-validation", "overall", "per-class-eval", "per-class-test", "mistakes",
            "baseline-eval"} <= page.ids
    assert "BLESSED: every rule passed" in text
    assert f"SERVES: the {PROJECT_SERVER} loaded it" in text and len(page.table_rows["serving"]) == 2
    assert len(page.table_rows["checks"]) == 1 + len(second_run["second"].judged.checks)
    # the per-class tables (eval, then test): a header and one row per class each
    assert len(page.table_rows["per-class"]) == 2 * (1 + features.NUM_CLASSES)
    for name in features.CLASS_NAMES:
        assert f"{features.CLASS_NAMES.index(name)} {name}" in text
    assert len(page.images) >= 6
    for image in page.images:
        assert image["src"].startswith("data:image/png;base64,"), "the page must be self-contained"
        decoded = Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1])))
        assert decoded.format == "PNG" and min(decoded.size) > 100 and image["alt"]
    errors = round((1 - second_run["second"].splits[REPORTED_SPLIT].overall["accuracy"]) * 150)
    assert f"{errors} of 150 test images are misclassified" in text


def test_report_renders_in_a_headless_browser(second_run, tmp_path, screenshot):
    config = second_run["config"]
    out = tmp_path / "report.html"
    cli.main(["report", "--pipeline-root", config.pipeline_root, "--out", str(out)])
    pixels = screenshot(out)
    assert pixels.shape == (3000, 1200)
    # Not a blank page: the decision banner, tables and charts put ink on a good part of it.
    assert (pixels < 200).mean() > 0.02


def test_review_notebook_runs_headless_and_shows_the_per_class_table(second_run, monkeypatch):
    """Run as the README's nbconvert command runs it: the kernel starts in notebooks/, while
    FMNIST_PIPELINE_ROOT is relative to the repository root, where the command is typed."""
    import nbformat
    from nbclient import NotebookClient

    relative_root = os.path.relpath(os.path.abspath(second_run["config"].pipeline_root), REPO)
    assert not os.path.exists(os.path.join(os.path.dirname(NOTEBOOK), relative_root))
    monkeypatch.setenv("FMNIST_PIPELINE_ROOT", relative_root)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"the executed notebook shows stderr output: {stderr}"
    html = [o["data"]["text/html"] for o in outputs if "data" in o and "text/html" in o["data"]]
    per_class = [h for h in html if "Per-class metrics (test split)" in h]
    assert per_class, "the per-class table for the test split is missing"
    assert all(name in per_class[0] for name in features.CLASS_NAMES)
    pngs = [o for o in outputs if "data" in o and "image/png" in o["data"]]
    assert len(pngs) >= 5  # per-class bars and confusion matrices for both splits, mistakes grid


def test_model_worse_than_the_baseline_is_not_blessed(second_run):
    """Runs last: it adds a run to the history. Floors at zero, so only the comparison with the
    blessed baseline can fail."""
    config = second_run["config"].replace(
        training=dataclasses.replace(second_run["config"].training, max_train_steps=3),
        thresholds=EvaluationThresholds(min_accuracy=0.0, min_class_recall=0.0, max_accuracy_drop=0.005),
    )
    local_runner.run(config)
    worse = load_latest(config.metadata_path)

    assert worse.blessed is False
    assert worse.baseline_model_uri == second_run["first"].model_uri
    assert _fail_rules(worse) == {"accuracy, change vs baseline"}
    (failure,) = worse.judged.failures  # TFMA's own validation result names the comparison
    assert failure.startswith("accuracy, change vs baseline on overall")
    diff = worse.judged.overall["accuracy"] - worse.judged.baseline_overall["accuracy"]
    assert diff < -0.005
    assert _pushed_versions(config) == second_run["second_pushed"], "a model that was not blessed was pushed"
