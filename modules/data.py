"""The Trainer's input pipeline: transformed splits read into memory, then fed through tf.data."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from fmnist import features
from modules import model as model_lib

IMAGE_XF = features.transformed_name(features.IMAGE_KEY)
LABEL_XF = features.transformed_name(features.LABEL_KEY)


class Split(NamedTuple):
    images: np.ndarray  # [N, 784] float32, transformed
    labels: np.ndarray  # [N] int64


def load_transformed(file_patterns: list[str], tf_transform_output: tft.TFTransformOutput) -> Split:
    """Reads a whole transformed split into memory.

    Takes the glob patterns of Transform's GZIP TFRecord files for one split (e.g. FnArgs.train_files)
    and the Transform output whose feature spec parses them; returns the images [N, 784] and labels
    [N] in file order (files sorted by name). Raises FileNotFoundError when no file matches.

    Fashion-MNIST fits in memory many times over, and parsing once instead of every epoch is
    what makes CPU epochs fast."""
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {file_patterns}")
    spec = tf_transform_output.transformed_feature_spec()
    dataset = (
        tf.data.TFRecordDataset(files, compression_type="GZIP", num_parallel_reads=tf.data.AUTOTUNE)
        .batch(4096)
        .map(lambda records: tf.io.parse_example(records, spec), num_parallel_calls=tf.data.AUTOTUNE)
    )
    images, labels = [], []
    for batch in dataset:
        images.append(batch[IMAGE_XF].numpy())
        labels.append(batch[LABEL_XF].numpy())
    return Split(np.concatenate(images), np.concatenate(labels))


def augment(images: tf.Tensor, hparams: model_lib.HParams, seed: int) -> tf.Tensor:
    """Random shifts of up to max_shift pixels and left-right flips, on a batch [B, 784]."""
    batch = tf.reshape(images, [-1, *features.IMAGE_SHAPE, 1])
    if hparams.flip:
        batch = tf.image.random_flip_left_right(batch, seed=seed)
    if hparams.max_shift:
        pad = hparams.max_shift
        # Pad with the background value (the darkest pixel) so shifts add no artificial edges.
        background = tf.reduce_min(batch)
        padded = tf.pad(batch - background, [[0, 0], [pad, pad], [pad, pad], [0, 0]]) + background
        batch = tf.image.random_crop(padded, tf.shape(batch), seed=seed)
    return tf.reshape(batch, [-1, features.NUM_PIXELS])


def make_dataset(split: Split, hparams: model_lib.HParams, seed: int, training: bool) -> tf.data.Dataset:
    """(images, labels) batches of hparams.batch_size from an in-memory split.

    training=True: shuffled with `seed`, repeated without end (the caller sets steps_per_epoch)
    and augmented when hparams.augment; training=False: one pass in order, no augmentation."""
    dataset = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
    if training:
        # repeat(): one iterator for the whole fit. Re-creating it each epoch (what Keras does
        # with a finite dataset) stalled ~18 s per epoch on the full split inside the pipeline.
        dataset = dataset.shuffle(len(split.labels), seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.batch(hparams.batch_size)
    if training and hparams.augment:
        dataset = dataset.map(lambda x, y: (augment(x, hparams, seed), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
