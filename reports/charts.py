"""Matplotlib figures of an evaluation, as PNG bytes (the HTML report embeds them; the notebook
shows them inline). Headless: the Agg backend, no display needed."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fmnist import explain_render, features
from reports.evaluation import ClassMetrics
from reports.misclassified import Predictions

SHORT_NAMES = features.SHORT_CLASS_NAMES


def to_png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _legend_below(axes: plt.Axes, columns: int) -> None:
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncols=columns, frameon=False)


def confusion_heatmap(confusion: np.ndarray, title: str) -> plt.Figure:
    """Rows: true class, normalised to 1 so classes of any size compare; cells show counts."""
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    figure, axes = plt.subplots(figsize=(7.5, 6.5))
    image = axes.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(confusion):
        if count:
            axes.text(j, i, str(count), ha="center", va="center", fontsize=8,
                      color="white" if share[i, j] > 0.5 else "black")
    axes.set_xticks(range(len(SHORT_NAMES)), SHORT_NAMES, rotation=45, ha="right")
    axes.set_yticks(range(len(SHORT_NAMES)), SHORT_NAMES)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the true class")
    return figure


def per_class_bars(per_class: list[ClassMetrics], title: str, recall_floor: float | None = None) -> plt.Figure:
    figure, axes = plt.subplots(figsize=(10, 4))
    x = np.arange(len(per_class))
    width = 0.27
    for offset, label, values in (
        (-width, "precision", [c.precision for c in per_class]),
        (0.0, "recall", [c.recall for c in per_class]),
        (width, "AUC (one-vs-rest)", [c.auc for c in per_class]),
    ):
        axes.bar(x + offset, values, width, label=label)
    if recall_floor is not None:
        axes.axhline(recall_floor, color="crimson", linestyle="--", linewidth=1, label=f"recall floor {recall_floor:g}")
    low = min([c.precision for c in per_class] + [c.recall for c in per_class] + [recall_floor or 1.0])
    axes.set_ylim(max(0.0, low - 0.05), 1.005)
    axes.set_xticks(x, SHORT_NAMES, rotation=30, ha="right")
    axes.set_title(title)
    _legend_below(axes, columns=4)
    axes.grid(axis="y", alpha=0.3)
    return figure


def baseline_recall_bars(per_class: list[ClassMetrics], title: str) -> plt.Figure:
    figure, axes = plt.subplots(figsize=(10, 3.6))
    x = np.arange(len(per_class))
    candidate = [c.recall for c in per_class]
    baseline = [c.baseline_recall for c in per_class]
    axes.bar(x - 0.2, baseline, 0.4, label="baseline (last blessed)", color="#9aa5b1")
    axes.bar(x + 0.2, candidate, 0.4, label="candidate", color="#2f6fbd")
    axes.set_ylim(max(0.0, min(candidate + baseline) - 0.05), 1.005)
    axes.set_xticks(x, SHORT_NAMES, rotation=30, ha="right")
    axes.set_ylabel("recall")
    axes.set_title(title)
    _legend_below(axes, columns=2)
    axes.grid(axis="y", alpha=0.3)
    return figure


def image_grid(images: np.ndarray, captions: list[str], columns: int = 8) -> plt.Figure:
    rows = max(1, -(-len(images) // columns))
    figure, grid = plt.subplots(rows, columns, figsize=(columns * 1.45, rows * 1.75), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, image, caption in zip(grid.flat, images, captions, strict=False):
        if image.ndim == 3:  # already RGB (attribution overlays): pixels as they are
            axes.imshow(image, interpolation="nearest")
        else:
            axes.imshow(image.reshape(features.IMAGE_SHAPE), cmap="gray_r", vmin=0, vmax=255)
        axes.set_title(caption, fontsize=7)
    figure.tight_layout()
    return figure


def _mistake_captions(predictions: Predictions, indices: list[int]) -> list[str]:
    return [f"{SHORT_NAMES[predictions.labels[i]]} \u2192 {SHORT_NAMES[predictions.predicted[i]]}\n"
            f"p={predictions.probabilities[i, predictions.predicted[i]]:.2f}" for i in indices]


def mistakes_grid(predictions: Predictions, indices: list[int]) -> plt.Figure:
    """The given examples captioned `true -> predicted` with the predicted class's probability."""
    return image_grid(predictions.images[indices], _mistake_captions(predictions, indices))


def attribution_grid(predictions: Predictions, indices: list[int], attributions: np.ndarray) -> plt.Figure:
    """mistakes_grid's examples, light on dark as the model sees them, with the pixels that raised
    the predicted class overlaid (attributions [len(indices), 28, 28]; fmnist.explain_render)."""
    overlays = np.stack([explain_render.overlay(predictions.images[i], a, scale=1)
                         for i, a in zip(indices, attributions, strict=True)])
    return image_grid(overlays, _mistake_captions(predictions, indices))
