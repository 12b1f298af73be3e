"""The Trainer's input pipeline: transformed splits read into memory (or streamed from their files
when larger than the memory budget), then fed through tf.data."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from fmnist import features
from modules import model as model_lib

IMAGE_XF = features.transformed_name(features.IMAGE_KEY)
LABEL_XF = features.transformed_name(features.LABEL_KEY)


class Split(NamedTuple):
    """A transformed split held in memory."""

    images: np.ndarray  # [N, 784] float32, transformed
    labels: np.ndarray  # [N] int64

    @property
    def count(self) -> int:
        return len(self.labels)


class Streamed(NamedTuple):
    """A transformed split too large for the memory budget: read from its files every epoch."""

    files: list[str]  # Transform's GZIP TFRecords
    spec: dict[str, Any]  # their transformed feature spec
    count: int  # examples in them


# Examples between which a streamed epoch's order is shuffled: 16,384 x ~3 KB serialized = ~50 MB.
STREAM_SHUFFLE_BUFFER = 16_384
PARSE_BATCH = 4096
BYTES_PER_EXAMPLE = features.NUM_PIXELS * 4 + 8  # float32 image + int64 label, in memory


# TensorFlow's CPU tensors must start on this boundary (Eigen's widest, AVX-512) to share memory.
TENSOR_ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a TENSOR_ALIGNMENT boundary."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(size + TENSOR_ALIGNMENT, np.uint8)
    offset = -raw.ctypes.data % TENSOR_ALIGNMENT
    return raw[offset:offset + size].view(dtype).reshape(shape)


def as_tensor(array: np.ndarray) -> tf.Tensor:
    """The array as a tensor, sharing its memory where TensorFlow allows it (C-contiguous, aligned
    and writeable, as load_transformed's arrays are: the tensor then sees later writes to the
    array), else a copy. tf.constant of a 523 MiB array added 1,084 MiB of RSS (two copies),
    which made an in-memory split cost 3x its size."""
    flags = array.flags
    if flags.c_contiguous and flags.writeable and array.ctypes.data % TENSOR_ALIGNMENT == 0:
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    return tf.constant(array)


def _files(file_patterns: list[str]) -> list[str]:
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {file_patterns}")
    return files


def _records(files: list[str]) -> tf.data.Dataset:
    return tf.data.TFRecordDataset(files, compression_type="GZIP", num_parallel_reads=min(len(files), 2))


def _parse(records: tf.Tensor, spec: dict[str, Any]) -> tuple[tf.Tensor, tf.Tensor]:
    parsed = tf.io.parse_example(records, spec)
    return parsed[IMAGE_XF], parsed[LABEL_XF]


def load_transformed(file_patterns: list[str], tf_transform_output: tft.TFTransformOutput,
                     budget_bytes: int | None = None) -> Split | Streamed:
    """Reads a transformed split into memory, or, past `budget_bytes`, describes it for streaming.

    Takes the glob patterns of Transform's GZIP TFRecord files for one split (e.g.
    FnArgs.train_files) and the Transform output whose feature spec parses them. Returns a Split,
    images [N, 784] and labels [N] in a fixed order (the files sorted by name, read two at a
    time, interleaved), when N examples take at
    most `budget_bytes` in memory (None: no limit; 0: always stream), else a Streamed that
    make_dataset reads from the files. Raises FileNotFoundError when no file matches.

    Fashion-MNIST fits in memory many times over, and parsing once instead of every epoch is
    what makes CPU epochs fast; streaming keeps memory flat when the data is 10x larger."""
    files = _files(file_patterns)
    spec = tf_transform_output.transformed_feature_spec()
    # Count first (reading without parsing: ~1 s per 55,000 examples) so that the arrays are
    # allocated once at their size, instead of concatenating chunks at twice the memory.
    count = int(_records(files).batch(PARSE_BATCH).reduce(np.int64(0), lambda n, batch: n + tf.size(batch,
                                                                                                 tf.int64)))
    if budget_bytes is not None and count * BYTES_PER_EXAMPLE > budget_bytes:
        return Streamed(files, spec, count)
    images = aligned_empty((count, features.NUM_PIXELS), np.float32)  # shared with the tensor, not copied
    labels = np.empty(count, np.int64)
    filled = 0
    for batch_images, batch_labels in _records(files).batch(PARSE_BATCH).map(lambda r: _parse(r, spec)):
        size = len(batch_labels)
        images[filled:filled + size], labels[filled:filled + size] = batch_images.numpy(), batch_labels.numpy()
        filled += size
    return Split(images, labels)


def augment(images: tf.Tensor, hparams: model_lib.HParams, seed: tf.Tensor) -> tf.Tensor:
    """Per-image random shifts of up to max_shift pixels and left-right flips of a batch [B, 784].

    Vectorised over the batch (no per-example Python, no per-example ops), drawn with stateless
    RNG from `seed` (an int [2] tensor), so the same seed gives the same batch. Each image gets its
    own shift and flip. (tf.image.random_crop on the 4-D batch, used before, drew one shift for
    the whole batch.)"""
    batch = tf.reshape(images, [-1, *features.IMAGE_SHAPE])
    size = tf.shape(batch)[0]
    flip_seed, row_seed, col_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    if hparams.flip:
        flipped = tf.random.stateless_uniform([size], flip_seed) < 0.5
        batch = tf.where(flipped[:, None, None], tf.reverse(batch, axis=[2]), batch)
    if hparams.max_shift:
        pad = hparams.max_shift
        # Pad with the background value (the darkest pixel) so shifts add no artificial edges.
        background = tf.reduce_min(batch)
        padded = tf.pad(batch - background, [[0, 0], [pad, pad], [pad, pad]]) + background
        # A shift is a crop of the padded image at a per-image offset in [0, 2 * pad]: gather its
        # 28 rows, then its 28 columns.
        window = tf.range(features.IMAGE_SHAPE[0])
        rows = tf.random.stateless_uniform([size, 1], row_seed, 0, 2 * pad + 1, tf.int32) + window
        cols = tf.random.stateless_uniform([size, 1], col_seed, 0, 2 * pad + 1, tf.int32) + window
        batch = tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    return tf.reshape(batch, [-1, features.NUM_PIXELS])


def _in_memory_batches(split: Split, hparams: model_lib.HParams, seed: int, training: bool) -> tf.data.Dataset:
    images, labels = as_tensor(split.images), tf.constant(split.labels)
    if not training:
        return tf.data.Dataset.from_tensor_slices((images, labels)).batch(hparams.batch_size)
    # Shuffle row numbers, not examples: the buffer holds int64 scalars instead of 3 KB images,
    # and a batch is one gather from the array.
    rows = (tf.data.Dataset.range(split.count)
            .shuffle(split.count, seed=seed, reshuffle_each_iteration=True)
            .repeat()
            .batch(hparams.batch_size))
    return rows.map(lambda batch_rows: (tf.gather(images, batch_rows), tf.gather(labels, batch_rows)))


def _streamed_batches(split: Streamed, hparams: model_lib.HParams, seed: int, training: bool) -> tf.data.Dataset:
    if not training:
        records = _records(split.files)
    else:
        # Shuffled twice: the files' order each epoch, then examples within a 16,384 buffer.
        # Transform writes examples in ExampleGen's order, which is already shuffled.
        files = tf.data.Dataset.from_tensor_slices(split.files).shuffle(len(split.files), seed=seed)
        records = (files.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"), cycle_length=2,
                                    deterministic=True)
                   .shuffle(STREAM_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
                   .repeat())
    return records.batch(hparams.batch_size).map(lambda r: _parse(r, split.spec))


def make_dataset(split: Split | Streamed, hparams: model_lib.HParams, seed: int, training: bool) -> tf.data.Dataset:
    """(images, labels) batches of hparams.batch_size from an in-memory or a streamed split.

    training=True: shuffled with `seed` (a new order every epoch), repeated without end (the
    caller sets steps_per_epoch) and augmented when hparams.augment, batch i with the stateless
    seed (seed, i); training=False: one pass in order, no augmentation."""
    batches = (_streamed_batches if isinstance(split, Streamed) else _in_memory_batches)(split, hparams, seed,
                                                                                          training)
    if training and hparams.augment:
        # Per batch, numbered: the same seed gives the same augmented batches.
        batches = batches.enumerate().map(
            lambda step, batch: (augment(batch[0], hparams, tf.stack([tf.constant(seed, tf.int64), step])),
                                 batch[1]))
    options = tf.data.Options()
    # One thread makes the next batch while the model trains on this one; more would only take
    # the 2 cores' time from the training step. repeat() above keeps one iterator for the whole
    # fit: re-creating it each epoch (what Keras does with a finite dataset) stalled ~18 s an epoch.
    options.threading.private_threadpool_size = 1
    if not isinstance(split, Streamed):
        # tf.data's default graph rewrites serialize the pipeline, and with it the split that the
        # gather captures: a copy of the whole split (+593 MiB for 175,000 images). Nothing they
        # would fuse or parallelise matters here: one thread, gathers, an explicit prefetch.
        options.experimental_optimization.apply_default_optimizations = False
    return batches.with_options(options).prefetch(2)
