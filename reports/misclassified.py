"""The evaluated model's mistakes on a split, with the images: TFMA keeps aggregates only, so the
report re-scores the split's examples through the model's `serving_default` signature."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from fmnist import features


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


def read_examples(examples_uri: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8 [N, 784]) and labels of one split of an ExampleGen `examples` artifact."""
    import tensorflow as tf

    files = tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*"))
    if not files:
        raise FileNotFoundError(f"no examples for split {split!r} under {examples_uri}")
    spec = {
        features.IMAGE_KEY: tf.io.FixedLenFeature([features.NUM_PIXELS], tf.int64),
        features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }
    images, labels = [], []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(2048):
        parsed = tf.io.parse_example(batch, spec)
        images.append(parsed[features.IMAGE_KEY].numpy().astype(np.uint8))
        labels.append(parsed[features.LABEL_KEY].numpy())
    return np.concatenate(images), np.concatenate(labels)


def predict_split(model_uri: str, examples_uri: str, split: str) -> Predictions:
    from modules.inference import predict_probabilities

    images, labels = read_examples(examples_uri, split)
    serving_dir = os.path.join(model_uri, "Format-Serving")
    return Predictions(images=images, labels=labels,
                       probabilities=predict_probabilities(serving_dir, images))
