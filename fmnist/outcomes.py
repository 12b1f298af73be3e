"""Served answers x delayed labels (issue #24): the one join the monitor's live accuracy and the
canary analysis's accuracy check share, and the figures drawn from it.

An answer is (image key, model version, predicted class). Keys are the ones labels come back
under (fmnist/feedback.py, image_keys): `ID` for a request of one image, `ID#N` for image N of a request of
several. Pure Python over plain values: the callers read the request log (TensorFlow, cli and
monitoring) or BigQuery, and this package imports neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from fmnist import features

# Fewest labelled images before a version's accuracy is judged. At the 0.886 a 4-epoch model of
# this project tests at (serving/release/canary_analysis.py), 500 labels put the standard error at 0.014,
# so the default floor below (0.85) sits 2.5 standard errors under it: a healthy window alerts
# about once in 160 by chance; at 100 labels (SE 0.032) it would be one in 7.
MIN_LABELLED = 500
MIN_LIVE_ACCURACY = 0.85  # the 4-epoch models test at 0.886-0.908; a label swap of two classes, 0.81
# A confusion pair (true -> predicted) whose share of the labelled images grew by more than this
# against the previous window: the pullover/coat swap of canary_analysis.py's benchmark moves
# coat -> pullover from about 0.01 to 0.09 of all images; sampling noise at 500 labels, ~0.01.
MAX_CONFUSION_GROWTH = 0.03


class Answer(NamedTuple):
    """One served image: the key its label comes back under, who answered, and what."""

    key: str
    version: int | str
    predicted: int


@dataclass(frozen=True)
class LabelledOutcome:
    """A served answer whose true label came back."""

    version: int | str
    predicted: int
    label: int


def label_of(value: Any) -> int:
    """A label as int, from an int or anything with `.label` (fmnist.feedback.Label)."""
    return int(getattr(value, "label", value))


def join(answers: Iterable[Answer], labels: Mapping[str, Any]) -> list[LabelledOutcome]:
    """The answers whose key has a label in `labels` ({key: Label or class id}), in answer order.
    Answers without a key (logged before request ids) never match."""
    return [LabelledOutcome(a.version, int(a.predicted), label_of(labels[a.key]))
            for a in answers if a.key and a.key in labels]


@dataclass(frozen=True)
class Tally:
    """One version's answers in a window: how many, and the confusion matrix of the labelled ones
    (rows: true class, columns: predicted class). JSON-friendly (summary.json keeps it)."""

    images: int = 0
    confusion: list[list[int]] = field(default_factory=lambda: [[0] * features.NUM_CLASSES
                                                                 for _ in range(features.NUM_CLASSES)])

    @property
    def labelled(self) -> int:
        return sum(map(sum, self.confusion))

    @property
    def correct(self) -> int:
        return sum(self.confusion[i][i] for i in range(len(self.confusion)))

    @property
    def labelled_share(self) -> float:
        return self.labelled / self.images if self.images else 0.0

    def accuracy(self, min_labelled: int = 1) -> float | None:
        """Correct over labelled; None below `min_labelled` labels (too few to judge)."""
        return self.correct / self.labelled if self.labelled >= max(1, min_labelled) else None

    def recall(self) -> list[float | None]:
        """Per true class: the share answered right (None for a class with no label)."""
        return [row[i] / sum(row) if sum(row) else None for i, row in enumerate(self.confusion)]

    def pair_shares(self) -> dict[tuple[int, int], float]:
        """{(true, predicted): share of the labelled images} of the mistakes."""
        total = self.labelled
        return {(t, p): n / total for t, row in enumerate(self.confusion) for p, n in enumerate(row)
                if t != p and n and total}


def tally(answers: Iterable[Answer], labels: Mapping[str, Any]) -> dict[str, Tally]:
    """{version (text): Tally} of every version that answered, labelled or not."""
    images: dict[str, int] = {}
    confusion: dict[str, list[list[int]]] = {}
    for answer in answers:
        version = str(answer.version)
        images[version] = images.get(version, 0) + 1
        matrix = confusion.setdefault(version, Tally().confusion)
        if answer.key and answer.key in labels:
            matrix[label_of(labels[answer.key])][int(answer.predicted)] += 1
    return {version: Tally(count, confusion[version]) for version, count in images.items()}


class Growth(NamedTuple):
    """A confusion pair's share of the labelled images now and in the window compared with."""

    true: int
    predicted: int
    share: float
    before: float

    @property
    def growth(self) -> float:
        return self.share - self.before


def confusion_growth(now: Tally, before: Tally, top: int = 3) -> list[Growth]:
    """The `top` confusion pairs whose share grew most from `before` to `now` (growth > 0 only)."""
    shares, earlier = now.pair_shares(), before.pair_shares()
    grown = [Growth(t, p, share, earlier.get((t, p), 0.0)) for (t, p), share in shares.items()]
    return sorted((g for g in grown if g.growth > 0), key=lambda g: -g.growth)[:top]
