"""Live accuracy of a window (issue #24): per model version that answered, the logged images, the
share whose labels came back, accuracy and per-class recall, and the confusion pairs (true ->
predicted) whose share of the labelled images grew most against the previous window's.

The figures come from fmnist.outcomes (the join the canary analysis uses too); this module
judges them against the thresholds and keeps what a later run needs to judge them again when
late labels arrive: each window's answers (answers.csv: key, version, predicted class).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fmnist import features, outcomes
from fmnist.outcomes import Answer, Tally

ANSWERS_FILE = "answers.csv"


@dataclass(frozen=True)
class LiveThresholds:
    """When live accuracy alerts (the monitor's settings min_live_accuracy, min_labelled,
    max_confusion_growth; defaults in fmnist.outcomes, with why)."""

    min_live_accuracy: float = outcomes.MIN_LIVE_ACCURACY
    min_labelled: int = outcomes.MIN_LABELLED
    max_confusion_growth: float = outcomes.MAX_CONFUSION_GROWTH

    def __post_init__(self) -> None:
        if not 0 <= self.min_live_accuracy <= 1 or not 0 <= self.max_confusion_growth <= 1:
            raise ValueError(f"min_live_accuracy and max_confusion_growth are fractions within 0..1, got "
                             f"{self.min_live_accuracy:g} and {self.max_confusion_growth:g}")
        if self.min_labelled < 1:
            raise ValueError(f"min_labelled must be at least 1, got {self.min_labelled}")


@dataclass(frozen=True)
class VersionFigures:
    """One version's live figures in one window, judged."""

    version: str
    tally: Tally
    accuracy: float | None  # None: fewer than min_labelled labels
    growth: list[outcomes.Growth] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)

    @property
    def accuracy_text(self) -> str:
        return f"{self.accuracy:.4f}" if self.accuracy is not None else f"n/a ({self.tally.labelled} labelled)"

    def recall_texts(self) -> list[str]:
        if self.accuracy is None:
            return ["n/a"] * features.NUM_CLASSES
        return ["-" if r is None else f"{r:.3f}" for r in self.tally.recall()]


def class_name(index: int) -> str:
    return features.CLASS_NAMES[index]


def judge(window: str, tallies: Mapping[str, Tally], previous: Mapping[str, Tally] | None,
          thresholds: LiveThresholds) -> list[VersionFigures]:
    """The figures of each version of a window (most images first). Accuracy under the floor and
    a confusion pair grown past max_confusion_growth against the same version in `previous` alert;
    both need min_labelled labels (in both windows, for growth)."""
    judged = []
    for version, counts in sorted(tallies.items(), key=lambda item: -item[1].images):
        accuracy = counts.accuracy(thresholds.min_labelled)
        alerts, growth = [], []
        if accuracy is not None and accuracy < thresholds.min_live_accuracy:
            alerts.append(f"live accuracy: window {window}, version {version}: {accuracy:.4f} < "
                          f"{thresholds.min_live_accuracy:g} ({counts.correct} of {counts.labelled} labelled)")
        before = (previous or {}).get(version)
        if accuracy is not None and before is not None and before.accuracy(thresholds.min_labelled) is not None:
            growth = outcomes.confusion_growth(counts, before)
            for pair in growth:
                if pair.growth > thresholds.max_confusion_growth:
                    alerts.append(f"confusion: window {window}, version {version}: {class_name(pair.true)} -> "
                                  f"{class_name(pair.predicted)} {pair.share:.4f} of the labelled (previous window "
                                  f"{pair.before:.4f}), grew {pair.growth:.4f} > {thresholds.max_confusion_growth:g}")
        judged.append(VersionFigures(version, counts, accuracy, growth, alerts))
    return judged


def tallies_to_json(tallies: Mapping[str, Tally]) -> dict[str, dict[str, Any]]:
    return {version: asdict(counts) for version, counts in tallies.items()}


def tallies_from_json(stored: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Tally]:
    return {version: Tally(int(row["images"]), [list(map(int, r)) for r in row["confusion"]])
            for version, row in (stored or {}).items()}


def write_answers(path: str | os.PathLike, answers: Iterable[Answer]) -> None:
    """The window's answers, for judging it again when later labels come back."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(Answer._fields)
        writer.writerows(answers)


def read_answers(path: str | os.PathLike) -> list[Answer]:
    """What write_answers wrote ([] when the window has no answers file: recorded before #24)."""
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [Answer(row["key"], row["version"], int(row["predicted"])) for row in csv.DictReader(handle)]
