"""Scoring raw images with an exported SavedModel through its `serving_default` signature: the
path a serving client takes, so it also exercises the preprocessing baked into the model."""

from __future__ import annotations

import os

import numpy as np

from fmnist import dataset, features


def latest_version_dir(serving_model_dir: str) -> str | None:
    """The highest numbered version directory the Pusher wrote, if any."""
    if not os.path.isdir(serving_model_dir):
        return None
    versions = [d for d in os.listdir(serving_model_dir) if d.isdigit()]
    return os.path.join(serving_model_dir, max(versions, key=int)) if versions else None


def predict_probabilities(model_dir: str, images, batch_size: int = 1000) -> np.ndarray:
    """Class probabilities [N, 10] for raw images ([N, 784] or [N, 28, 28] grey levels)."""
    import tensorflow as tf

    serve = tf.saved_model.load(model_dir).signatures[features.SERVING_DEFAULT]
    images = np.asarray(images).reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)
    return np.concatenate([
        serve(**{features.IMAGES_INPUT: tf.constant(images[i:i + batch_size])})["probabilities"].numpy()
        for i in range(0, len(images), batch_size)
    ])


def predict_classes(model_dir: str, raw: dataset.RawSplit, batch_size: int = 1000) -> np.ndarray:
    """Class ids a SavedModel assigns to a RawSplit's images (see predict_probabilities)."""
    return predict_probabilities(model_dir, raw.images, batch_size).argmax(axis=1)


def model_accuracy(model_dir: str, data_root: str, input_format: str, split: str = dataset.TEST) -> float:
    """Accuracy of a SavedModel on an official split of the raw input data."""
    raw = dataset.read_split(data_root, split, input_format)
    return float(np.mean(predict_classes(model_dir, raw) == raw.labels))
