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


def read_examples(examples_uri: str, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8 [N, 784]) and labels of one split of an ExampleGen `examples` artifact (the
    first `limit` examples, in file order, if given)."""
    import tensorflow as tf

    files = tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*"))
    if not files:
        raise FileNotFoundError(f"no examples for split {split!r} under {examples_uri}")
    spec = {
        features.IMAGE_KEY: tf.io.FixedLenFeature([features.NUM_PIXELS], tf.int64),
        features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }
    images, labels = [], []
    records = tf.data.TFRecordDataset(sorted(files), compression_type="GZIP").take(-1 if limit is None else limit)
    for batch in records.batch(2048):
        parsed = tf.io.parse_example(batch, spec)
        images.append(parsed[features.IMAGE_KEY].numpy().astype(np.uint8))
        labels.append(parsed[features.LABEL_KEY].numpy())
    return np.concatenate(images), np.concatenate(labels)


def predict_probabilities(model_dir: str, images, batch_size: int = 1000) -> np.ndarray:
    """Class probabilities [N, 10] for raw images ([N, 784] or [N, 28, 28] grey levels)."""
    import tensorflow as tf

    serve = tf.saved_model.load(model_dir).signatures[features.SERVING_DEFAULT]
    images = np.asarray(images).reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)
    return np.concatenate([
        serve(**{features.IMAGES_INPUT: tf.constant(images[i:i + batch_size])})["probabilities"].numpy()
        for i in range(0, len(images), batch_size)
    ])


def explain_images(model_dir: str, images, batch_size: int = 128) -> np.ndarray | None:
    """Integrated-gradients attributions [N, 28, 28] of the predicted classes for raw images
    ([N, 784] or [N, 28, 28] grey levels), from the SavedModel's `explain` signature (see
    modules.signatures); None for a model exported before it had one. Smaller batches than
    predict_probabilities: each image goes through the model once per path point."""
    import tensorflow as tf

    signatures = tf.saved_model.load(model_dir).signatures
    if features.EXPLAIN_SIGNATURE not in signatures:
        return None
    explain = signatures[features.EXPLAIN_SIGNATURE]
    images = np.asarray(images).reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)
    return np.concatenate([
        explain(**{features.IMAGES_INPUT: tf.constant(images[i:i + batch_size])})[features.ATTRIBUTIONS_OUTPUT].numpy()
        for i in range(0, len(images), batch_size)
    ] or [np.zeros((0, *features.IMAGE_SHAPE), np.float32)])


def predict_classes(model_dir: str, raw: dataset.RawSplit, batch_size: int = 1000) -> np.ndarray:
    """Class ids a SavedModel assigns to a RawSplit's images (see predict_probabilities)."""
    return predict_probabilities(model_dir, raw.images, batch_size).argmax(axis=1)


def model_accuracy(model_dir: str, data_root: str, input_format: str, split: str = dataset.TEST,
                   rows: np.ndarray | None = None) -> float:
    """Accuracy of a SavedModel on an official split of the raw input data (only `rows` of it, if given)."""
    raw = dataset.read_split(data_root, split, input_format)
    if rows is not None:
        raw = dataset.RawSplit(raw.images[rows], raw.labels[rows], raw.source)
    return float(np.mean(predict_classes(model_dir, raw) == raw.labels))
