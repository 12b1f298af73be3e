"""The HTML page of one monitored window: verdict, scores against thresholds, TFDV's anomalies,
live accuracy (a chart per version over windows, per-class recall, growing confusions), the
grey-level histogram and the class shares of training against serving. One self-contained file
(charts embedded), like the evaluation report."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from fmnist import features
from monitoring.checks import CheckResult
from monitoring.live import LiveThresholds, VersionFigures, class_name
from monitoring.statistics import Statistics, class_shares, grey_level_histogram
from reports.charts import SHORT_NAMES, plt
from reports.html_report import png_data_uri, write_page

TEMPLATE = "monitoring_page.html.j2"


def grey_level_chart(training: Statistics, serving: Statistics) -> plt.Figure:
    """Share of all pixels per grey-level bucket (TFDV's standard histogram, what the skew
    comparator measures), training against serving."""
    figure, axes = plt.subplots(figsize=(10, 3.6))
    for offset, label, color, statistics in ((-0.2, "training", "#9aa5b1", training),
                                             (0.2, "serving", "#2f6fbd", serving)):
        buckets = grey_level_histogram(statistics, features.IMAGE_KEY)
        axes.bar(np.arange(len(buckets)) + offset, [share for _, _, share in buckets], 0.4, label=label, color=color)
    ticks = grey_level_histogram(serving, features.IMAGE_KEY) or grey_level_histogram(training, features.IMAGE_KEY)
    axes.set_xticks(range(len(ticks)), [f"{low:.0f}-{high:.0f}" for low, high, _ in ticks], rotation=30, ha="right")
    axes.set_xlabel("grey level")
    axes.set_ylabel("share of pixels")
    axes.set_title("pixel intensities, training vs serving")
    axes.legend(fontsize=8, frameon=False)
    axes.grid(axis="y", alpha=0.3)
    return figure


def class_chart(training: Statistics, serving: Statistics) -> plt.Figure:
    """Training label shares against the shares of the classes the model answered."""
    figure, axes = plt.subplots(figsize=(10, 3.6))
    x = np.arange(features.NUM_CLASSES)
    axes.bar(x - 0.2, class_shares(training, features.LABEL_KEY, features.NUM_CLASSES), 0.4,
             label="training labels", color="#9aa5b1")
    axes.bar(x + 0.2, class_shares(serving, features.LABEL_KEY, features.NUM_CLASSES), 0.4,
             label="served predictions", color="#2f6fbd")
    axes.set_xticks(x, SHORT_NAMES, rotation=30, ha="right")
    axes.set_ylabel("share")
    axes.set_title("classes: training labels vs predicted classes served")
    axes.legend(fontsize=8, frameon=False)
    axes.grid(axis="y", alpha=0.3)
    return figure


@dataclass(frozen=True)
class LiveView:
    """What the page shows of live accuracy: this window's figures per version, the accuracy per
    version over windows ([(window end, {version: accuracy})], job.accuracy_history), the
    thresholds, and this run's live alerts (re-judged earlier windows included)."""

    figures: Sequence[VersionFigures]
    history: Sequence[tuple[float, dict[str, float]]]
    thresholds: LiveThresholds
    alerts: Sequence[str] = ()


def accuracy_chart(history: Sequence[tuple[float, dict[str, float]]], floor: float) -> plt.Figure:
    """Live accuracy per version over windows (x: window end), the alert floor dashed. A version
    with too few labels in a window has no point there."""
    figure, axes = plt.subplots(figsize=(10, 3.6))
    versions = sorted({v for _, judged in history for v in judged}, key=lambda v: (len(v), v))
    for version in versions:
        points = [(datetime.datetime.fromtimestamp(end, datetime.UTC), judged[version])
                  for end, judged in history if version in judged]
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"version {version}")
    axes.axhline(floor, color="#c92a2a", linestyle="--", linewidth=1, label=f"alert below {floor:g}")
    axes.set_ylim(min([floor, *(a for _, j in history for a in j.values())]) - 0.05, 1.005)
    axes.set_xlabel("window end (UTC)")
    axes.set_ylabel("accuracy on labelled images")
    axes.set_title("live accuracy per model version" + ("" if versions else " (no window has enough labels yet)"))
    axes.legend(fontsize=8, frameon=False)
    axes.grid(alpha=0.3)
    figure.autofmt_xdate()
    return figure


def render(window: dict[str, Any], result: CheckResult, training: Statistics, serving: Statistics,
           live: LiveView | None = None) -> str:
    """The page's HTML; `window` holds what the job knows of the window (see job.WindowSummary)."""
    live = live or LiveView((), (), LiveThresholds())
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                                     autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.get_template(TEMPLATE).render(
        window=window, result=result,
        grey_level_chart=png_data_uri(grey_level_chart(training, serving)),
        class_chart=png_data_uri(class_chart(training, serving)),
        live=live, class_names=SHORT_NAMES, class_name=class_name,
        accuracy_chart=png_data_uri(accuracy_chart(live.history, live.thresholds.min_live_accuracy)),
        generated=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def write(path: str | Path, window: dict[str, Any], result: CheckResult, training: Statistics,
          serving: Statistics, live: LiveView | None = None) -> Path:
    """Writes the page atomically."""
    return write_page(render(window, result, training, serving, live), path)
