"""A self-contained HTML page for the latest evaluation: every chart is an embedded PNG, so the
file can be mailed, attached to a review or archived next to the model it judged."""

from __future__ import annotations

import base64
import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np

from fmnist import features
from fmnist.files import replaced_atomically
from reports import charts
from reports.evaluation import OVERALL_METRICS, Evaluation, SplitEvaluation
from reports.misclassified import Predictions, explain_examples, predict_split
from tfx_pipeline.config import BLESSING_SPLIT, REPORTED_SPLIT

TEMPLATE = "evaluation_report.html.j2"
REPORT_FILE = os.path.join("reports", "evaluation_report.html")  # under a local run's output dir
METRIC_LABELS = {
    "example_count": "examples",
    "accuracy": "accuracy",
    "macro_precision": "macro precision",
    "macro_recall": "macro recall",
    "sparse_categorical_crossentropy": "cross-entropy",
}


@dataclass(frozen=True)
class ConfusedPair:
    true_name: str
    predicted_name: str
    count: int
    share_of_true: float


def most_confused(confusion: np.ndarray, limit: int = 10) -> list[ConfusedPair]:
    """Off-diagonal cells, largest first: which class is taken for which."""
    off_diagonal = confusion.astype(float)
    np.fill_diagonal(off_diagonal, 0)
    order = np.argsort(-off_diagonal, axis=None, kind="stable")[:limit]
    pairs = []
    for flat in order:
        i, j = np.unravel_index(flat, confusion.shape)
        if confusion[i, j] == 0:
            break
        pairs.append(ConfusedPair(features.CLASS_NAMES[i], features.CLASS_NAMES[j], int(confusion[i, j]),
                                  float(confusion[i, j] / max(1, confusion[i].sum()))))
    return pairs


def png_data_uri(figure) -> str:
    """A figure as an embeddable `data:` URI (the page stays one self-contained file)."""
    return "data:image/png;base64," + base64.b64encode(charts.to_png(figure)).decode("ascii")


def _split_view(split: SplitEvaluation) -> dict:
    return {
        "evaluation": split,
        "per_class_chart": png_data_uri(charts.per_class_bars(
            split.per_class, f"per-class metrics, {split.split} split", split.recall_floor)),
        "confusion_chart": png_data_uri(charts.confusion_heatmap(
            split.confusion, f"confusion matrix, {split.split} split")),
        "confused_pairs": most_confused(split.confusion),
        "baseline_chart": png_data_uri(charts.baseline_recall_bars(
            split.per_class, f"per-class recall vs the last blessed model, {split.split} split"))
        if split.has_baseline else None,
    }


def _mistakes_view(predictions: Predictions, limit: int, attributions: np.ndarray | None = None) -> dict:
    """The mistakes section; attributions, when given, are those of worst_mistakes(limit) in order."""
    worst = predictions.worst_mistakes(limit)
    errors = int((predictions.predicted != predictions.labels).sum())
    return {
        "grid": png_data_uri(charts.mistakes_grid(predictions, worst)) if worst else None,
        "attribution_grid": png_data_uri(charts.attribution_grid(predictions, worst, attributions))
        if worst and attributions is not None else None,
        "shown": len(worst),
        "errors": errors,
        "total": len(predictions.labels),
    }


def render(evaluation: Evaluation, predictions: Predictions | None, mistakes_split: str, limit: int,
           attributions: np.ndarray | None = None) -> str:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined,
    )
    split_order = [s for s in (BLESSING_SPLIT, REPORTED_SPLIT) if s in evaluation.splits]
    return environment.get_template(TEMPLATE).render(
        evaluation=evaluation,
        judged=evaluation.judged,
        splits=[_split_view(evaluation.splits[s]) for s in split_order],
        overall_metrics=OVERALL_METRICS,
        metric_labels=METRIC_LABELS,
        mistakes=_mistakes_view(predictions, limit, attributions) if predictions is not None else None,
        mistakes_split=mistakes_split,
        generated=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def default_report_path(output_dir: str | os.PathLike) -> Path:
    """Where a local run's report goes: next to its pipeline root, metadata and serving models."""
    return Path(output_dir) / REPORT_FILE


def write_report(evaluation: Evaluation, out_path: str | os.PathLike, mistakes: int = 32) -> Path:
    """Writes the page for an evaluation (see reports.evaluation.load_latest), atomically."""
    mistakes_split = REPORTED_SPLIT if REPORTED_SPLIT in evaluation.splits else BLESSING_SPLIT
    predictions = (predict_split(evaluation.model_uri, evaluation.examples_uris[mistakes_split], mistakes_split)
                   if mistakes else None)
    # Only the mistakes shown are explained: each costs explain_steps + 1 passes through the model.
    attributions = (explain_examples(evaluation.model_uri, predictions, predictions.worst_mistakes(mistakes))
                    if predictions is not None else None)
    return write_page(render(evaluation, predictions, mistakes_split, mistakes, attributions), out_path)


def write_page(text: str, out_path: str | os.PathLike) -> Path:
    """Writes `text` to `out_path` atomically (fmnist.files.replaced_atomically)."""
    with replaced_atomically(out_path) as stream:
        stream.write(text)
    return Path(out_path)
