"""The Trainer's input pipeline (modules.data): per-image augmentation, shuffling, determinism."""

import numpy as np
import pytest
import tensorflow as tf

from fmnist import features
from modules import data
from modules.model import HParams

SIDE = features.IMAGE_SHAPE[0]
BACKGROUND = -0.5


def _dots(count: int) -> np.ndarray:
    """`count` images of the background with one bright pixel at the centre."""
    images = np.full((count, SIDE, SIDE), BACKGROUND, np.float32)
    images[:, SIDE // 2, SIDE // 2] = 3.0
    return images.reshape(count, features.NUM_PIXELS)


def _dot_positions(images: np.ndarray) -> np.ndarray:
    flat = np.asarray(images).reshape(len(images), -1).argmax(axis=1)
    return np.stack([flat // SIDE, flat % SIDE], axis=1)


def _augment(images: np.ndarray, hparams: HParams, step: int = 0, seed: int = 7) -> np.ndarray:
    return data.augment(tf.constant(images), hparams, tf.constant([seed, step], tf.int64)).numpy()


def test_each_image_gets_its_own_shift_within_max_shift_padded_with_background():
    hparams = HParams(max_shift=2, flip=False)
    out = _augment(_dots(256), hparams)
    offsets = _dot_positions(out) - SIDE // 2
    assert np.abs(offsets).max() <= 2
    # Per image, not per batch: every one of the 25 (dy, dx) offsets turns up in 256 draws.
    assert len({tuple(o) for o in offsets}) == 25
    # Nothing but the moved dot and the background: padding adds no edges.
    assert np.isclose(np.sort(np.unique(out)), [BACKGROUND, 3.0]).all()
    assert out.shape == (256, features.NUM_PIXELS) and out.dtype == np.float32


def test_flips_are_per_image_and_mirror_columns():
    images = np.full((200, SIDE, SIDE), BACKGROUND, np.float32)
    images[:, 3, 1] = 3.0  # off-centre, so a flip moves it to column SIDE - 2
    out = _augment(images.reshape(200, -1), HParams(max_shift=0, flip=True))
    columns = _dot_positions(out)[:, 1]
    assert set(columns) == {1, SIDE - 2}
    assert 60 < (columns == 1).sum() < 140  # about half flipped


def test_same_seed_and_step_give_the_same_batch_and_another_step_does_not():
    hparams = HParams(max_shift=2, flip=True)
    images = _dots(64)
    first, again = _augment(images, hparams, step=3), _augment(images, hparams, step=3)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, _augment(images, hparams, step=4))
    assert not np.array_equal(first, _augment(images, hparams, step=3, seed=8))


def _row_split(count: int) -> data.Split:
    """Labels are the row numbers, so a batch tells which rows it holds."""
    return data.Split(_dots(count), np.arange(count, dtype=np.int64))


def test_training_epochs_cover_every_row_once_in_a_new_order_each_time():
    split, hparams = _row_split(96), HParams(batch_size=32, augment=False)
    batches = list(data.make_dataset(split, hparams, seed=1, training=True).take(6))
    epochs = [np.concatenate([labels.numpy() for _, labels in batches[i:i + 3]]) for i in (0, 3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(96))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], np.arange(96))
    images, labels = batches[0]
    np.testing.assert_array_equal(images.numpy(), split.images[labels.numpy()])


def test_training_batches_are_reproducible_from_the_seed():
    split, hparams = _row_split(64), HParams(batch_size=16, max_shift=2)

    def batches(seed):
        return [(x.numpy(), y.numpy()) for x, y in data.make_dataset(split, hparams, seed, training=True).take(4)]

    first = batches(5)
    for (x, y), (x2, y2) in zip(first, batches(5), strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    assert not all(np.array_equal(y, y2) for (_, y), (_, y2) in zip(first, batches(6), strict=True))
    # Augmented: the dots moved in some images of the batch.
    assert (_dot_positions(first[0][0]) != SIDE // 2).any()


def test_evaluation_is_one_pass_in_order_unaugmented():
    split = _row_split(70)
    batches = list(data.make_dataset(split, HParams(batch_size=32, max_shift=2), seed=1, training=False))
    assert [len(y) for _, y in batches] == [32, 32, 6]
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in batches]), np.arange(70))
    np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in batches]), split.images)


@pytest.mark.parametrize("hparams", [HParams(max_shift=0, flip=False), HParams(augment=False)])
def test_no_augmentation_leaves_images_alone(hparams):
    split = _row_split(32)
    images, labels = next(iter(data.make_dataset(split, hparams.replace(batch_size=32), 3, training=True)))
    np.testing.assert_array_equal(images.numpy(), split.images[labels.numpy()])


def _write_transformed(split: data.Split, directory, shards: int = 3) -> str:
    """`split` as Transform writes it: GZIP TFRecord shards of transformed tf.Examples."""
    directory.mkdir()
    for shard, rows in enumerate(np.array_split(np.arange(split.count), shards)):
        path = str(directory / f"transformed_examples-{shard:05d}-of-{shards:05d}.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for row in rows:
                writer.write(tf.train.Example(features=tf.train.Features(feature={
                    data.IMAGE_XF: tf.train.Feature(float_list=tf.train.FloatList(value=split.images[row])),
                    data.LABEL_XF: tf.train.Feature(int64_list=tf.train.Int64List(value=[split.labels[row]])),
                })).SerializeToString())
    return str(directory / "*")


@pytest.fixture(scope="module")
def transformed_files(transformed_sample, tmp_path_factory):
    import tensorflow_transform as tft

    pattern = _write_transformed(transformed_sample.split, tmp_path_factory.mktemp("xf") / "Split-train")
    return pattern, tft.TFTransformOutput(str(transformed_sample.transform_dir)), transformed_sample.split


def _sorted_rows(images: np.ndarray) -> np.ndarray:
    return images[np.lexsort(images.T[::-1])]


def test_a_split_within_the_budget_is_read_into_memory_in_a_fixed_order(transformed_files):
    pattern, transform, split = transformed_files
    loaded = data.load_transformed([pattern], transform, budget_bytes=split.count * data.BYTES_PER_EXAMPLE)
    assert isinstance(loaded, data.Split) and loaded.count == split.count == 1000
    np.testing.assert_array_equal(_sorted_rows(loaded.images), _sorted_rows(split.images))
    again = data.load_transformed([pattern], transform)
    np.testing.assert_array_equal(again.images, loaded.images)
    by_image = {image.tobytes(): label for image, label in zip(split.images, split.labels, strict=True)}
    assert [by_image[image.tobytes()] for image in loaded.images] == loaded.labels.tolist()


def test_an_in_memory_split_becomes_a_tensor_without_a_copy(transformed_files):
    pattern, transform, _ = transformed_files
    loaded = data.load_transformed([pattern], transform)
    assert loaded.images.ctypes.data % data.TENSOR_ALIGNMENT == 0
    shared = data.as_tensor(loaded.images)
    np.testing.assert_array_equal(shared.numpy(), loaded.images)
    # What TensorFlow cannot share (here: misaligned by 4 bytes) is copied, never refused.
    raw = data.aligned_empty((loaded.images.size + 1,), np.float32)
    misaligned = raw[1:].reshape(loaded.images.shape)
    misaligned[:] = loaded.images
    copied = data.as_tensor(misaligned)
    np.testing.assert_array_equal(copied.numpy(), loaded.images)
    read_only = data.aligned_empty(loaded.images.shape, np.float32)  # aligned, but DLPack refuses read-only
    read_only[:] = loaded.images
    read_only.flags.writeable = False
    np.testing.assert_array_equal(data.as_tensor(read_only).numpy(), loaded.images)
    # Shared means one buffer: a write to the array shows in its tensor, not in the copy's.
    loaded.images[0, 0] = misaligned[0, 0] = 123.0
    assert float(shared[0, 0]) == 123.0 and float(copied[0, 0]) != 123.0
    loaded.images[0, 0] = copied[0, 0].numpy()
    # Training batches gather from the shared tensor: the loaded examples, nothing else.
    batch, labels = next(iter(data.make_dataset(loaded, HParams(batch_size=64, augment=False), seed=3,
                                                training=True)))
    rows = {image.tobytes(): label for image, label in zip(loaded.images, loaded.labels, strict=True)}
    assert [rows[image.tobytes()] for image in batch.numpy()] == labels.numpy().tolist()


@pytest.mark.parametrize("budget", [0, 1000 * data.BYTES_PER_EXAMPLE - 1])
def test_a_split_over_the_budget_streams_every_example_once_per_epoch(transformed_files, budget):
    pattern, transform, split = transformed_files
    streamed = data.load_transformed([pattern], transform, budget_bytes=budget)
    assert isinstance(streamed, data.Streamed) and streamed.count == 1000 and len(streamed.files) == 3
    hparams = HParams(batch_size=100, augment=False)
    batches = [x.numpy() for x, _ in data.make_dataset(streamed, hparams, seed=1, training=True).take(20)]
    epochs = [np.concatenate(batches[:10]), np.concatenate(batches[10:])]
    for epoch in epochs:  # the same examples as in memory, once each, in a shuffled order
        np.testing.assert_array_equal(_sorted_rows(epoch), _sorted_rows(split.images))
    assert not np.array_equal(epochs[0], split.images) and not np.array_equal(epochs[0], epochs[1])
    # One pass, unshuffled: the order load_transformed reads into memory.
    evaluation = list(data.make_dataset(streamed, hparams, seed=1, training=False))
    in_memory = data.load_transformed([pattern], transform)
    np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in evaluation]), in_memory.images)


@pytest.mark.slow
def test_the_trainer_fits_from_a_streamed_split(transformed_files):
    from modules import trainer

    pattern, transform, split = transformed_files
    streamed = data.load_transformed([pattern], transform, budget_bytes=0)
    result = trainer.fit(HParams.tuned({"batch_size": 100}), streamed, split, seed=0, max_steps=3,
                         precision="float32")
    assert result.history.history["loss"] and np.isfinite(result.history.history["loss"][0])
    assert result.epoch_logger.images_per_epoch == 300
