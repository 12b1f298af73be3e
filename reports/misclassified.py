"""The evaluated model's mistakes on a split, with the images: TFMA keeps aggregates only, so the
report re-scores the split's examples through the model's `serving_default` signature."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from fmnist import features
from modules.inference import read_examples


@dataclass(frozen=True)
class Predictions:
    images: np.ndarray  # uint8 [N, 784]
    labels: np.ndarray  # [N]
    probabilities: np.ndarray  # [N, classes]

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    def confusion(self) -> np.ndarray:
        matrix = np.zeros((features.NUM_CLASSES, features.NUM_CLASSES), dtype=np.int64)
        np.add.at(matrix, (self.labels, self.predicted), 1)
        return matrix

    def worst_mistakes(self, limit: int) -> list[int]:
        """Indices of misclassified examples, most confident mistakes first."""
        wrong = np.flatnonzero(self.predicted != self.labels)
        confidence = self.probabilities[wrong, self.predicted[wrong]]
        return wrong[np.argsort(-confidence, kind="stable")][:limit].tolist()


def _serving_dir(model_uri: str) -> str:
    return os.path.join(model_uri, "Format-Serving")


def predict_split(model_uri: str, examples_uri: str, split: str) -> Predictions:
    from modules.inference import predict_probabilities

    images, labels = read_examples(examples_uri, split)
    return Predictions(images=images, labels=labels,
                       probabilities=predict_probabilities(_serving_dir(model_uri), images))


def explain_examples(model_uri: str, predictions: Predictions, indices: list[int]) -> np.ndarray | None:
    """Attributions [len(indices), 28, 28] of the Model artifact's predicted classes for those
    examples (its `explain` signature); None when the model predates that signature."""
    from modules.inference import explain_images

    return explain_images(_serving_dir(model_uri), predictions.images[indices])
