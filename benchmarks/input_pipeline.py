"""Input pipeline vs bare fit: the Trainer's tf.data pipeline against a model.fit that pays
nothing for its input, same model, same precision, in one run.

    .venv/bin/python benchmarks/input_pipeline.py [--steps 150] [--repeats 3] [--precision float32 bfloat16]

Rows, per precision (every variant trains the tuned CNN, batch 128, on 55,000 images in memory,
random like the issue's probe; shapes are what matter for speed):
- bare, one batch repeated: `Dataset.from_tensors(batch).repeat()`, no input cost at all (the
  ceiling the target is measured against);
- bare, numpy arrays: `model.fit(x, y, batch_size=128)`, Keras slicing its own arrays;
- the project pipeline (modules.data.make_dataset), with and without augmentation;
- the pipeline before issue #14 (kept below for comparison): example shuffle buffer, batch-level
  random_crop (one shift per batch), AUTOTUNE map.

Every variant runs a warm-up fit first, then the repeats interleave the variants so drift in
the machine's speed hits them alike. Throughput is timed inside fit, from the end of step 10 to
the last step. "input only" iterates the dataset without a model.
"""

from __future__ import annotations

import argparse
import statistics
import time

from fmnist import tf_env

tf_env.configure()  # before TensorFlow loads

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from common import cpu_model  # noqa: E402

from fmnist import features  # noqa: E402
from modules import data, precision  # noqa: E402
from modules import model as model_lib  # noqa: E402

SKIP_STEPS = 10  # steps before the clock starts: tracing, the first batches' allocation


class StepClock(keras.callbacks.Callback):
    """Images/s from the end of step SKIP_STEPS to the last step of a fit."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size, self.start, self.end, self.steps = batch_size, None, None, 0

    def on_train_batch_end(self, batch, logs=None):
        if batch == SKIP_STEPS - 1:
            self.start = time.perf_counter()
        self.end, self.steps = time.perf_counter(), batch + 1

    def images_per_second(self) -> float:
        return (self.steps - SKIP_STEPS) * self.batch_size / (self.end - self.start)


def old_make_dataset(split: data.Split, hparams: model_lib.HParams, seed: int) -> tf.data.Dataset:
    """The training pipeline as it was before issue #14, for comparison."""

    def augment(images):
        batch = tf.reshape(images, [-1, *features.IMAGE_SHAPE, 1])
        batch = tf.image.random_flip_left_right(batch, seed=seed)
        pad = hparams.max_shift
        background = tf.reduce_min(batch)
        padded = tf.pad(batch - background, [[0, 0], [pad, pad], [pad, pad], [0, 0]]) + background
        batch = tf.image.random_crop(padded, tf.shape(batch), seed=seed)
        return tf.reshape(batch, [-1, features.NUM_PIXELS])

    dataset = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
    dataset = dataset.shuffle(len(split.labels), seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.batch(hparams.batch_size).map(lambda x, y: (augment(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def variants(split: data.Split, hparams: model_lib.HParams) -> dict[str, tuple[str, object]]:
    """name -> (augment column, fit input: a dataset, or the numpy split)."""
    one_batch = (split.images[:hparams.batch_size], split.labels[:hparams.batch_size])
    return {
        "bare: one batch repeated": ("-", tf.data.Dataset.from_tensors(one_batch).repeat()),
        "bare: numpy arrays": ("-", split),
        "make_dataset": ("yes", data.make_dataset(split, hparams, seed=1, training=True)),
        "make_dataset, augment off": ("no", data.make_dataset(split, hparams.replace(augment=False), 1, True)),
        "before #14": ("yes (per batch)", old_make_dataset(split, hparams, seed=1)),
    }


def fit_rate(model, source, steps: int, batch_size: int) -> float:
    clock = StepClock(batch_size)
    if isinstance(source, data.Split):
        count = steps * batch_size
        model.fit(source.images[:count], source.labels[:count], batch_size=batch_size, epochs=1,
                  shuffle=True, verbose=0, callbacks=[clock])
    else:
        model.fit(source, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[clock])
    return clock.images_per_second()


def input_rate(source, steps: int, batch_size: int) -> float | None:
    if isinstance(source, data.Split):
        return None
    iterator = iter(source)
    for _ in range(SKIP_STEPS):
        next(iterator)
    started = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * batch_size / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150, help="training steps per timed fit")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--examples", type=int, default=55_000)
    parser.add_argument("--precision", nargs="+", default=[precision.FLOAT32, precision.BFLOAT16],
                        choices=[precision.FLOAT32, precision.BFLOAT16])
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    split = data.Split(rng.standard_normal((args.examples, features.NUM_PIXELS), dtype=np.float32),
                       rng.integers(0, features.NUM_CLASSES, args.examples))
    hparams = model_lib.HParams.tuned()
    steps = args.steps + SKIP_STEPS
    print(f"CPU: {cpu_model()}")
    print(f"TensorFlow {tf.__version__}; batch {hparams.batch_size}; {args.steps} timed steps per fit, "
          f"median of {args.repeats}; {args.examples:,} images in memory")
    rows = []
    for requested in args.precision:
        resolved = precision.resolve_here(requested)
        sources = variants(split, hparams)
        models = {name: model_lib.build_model(hparams, steps, policy=resolved.policy) for name in sources}
        for name, (_, source) in sources.items():  # warm-up: tracing, oneDNN primitive caches
            fit_rate(models[name], source, steps, hparams.batch_size)
        rates: dict[str, list[float]] = {name: [] for name in sources}
        for _ in range(args.repeats):
            for name, (_, source) in sources.items():
                rates[name].append(fit_rate(models[name], source, steps, hparams.batch_size))
        bare = statistics.median(rates["bare: one batch repeated"])
        for name, (augment, source) in sources.items():
            only = input_rate(source, args.steps, hparams.batch_size)
            rows.append((resolved.policy, name, augment, statistics.median(rates[name]), min(rates[name]),
                         max(rates[name]), statistics.median(rates[name]) / bare, only))
    print()
    print("| precision | input | augment | img/s median | min | max | vs bare (one batch) | input only img/s |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for policy, name, augment, median, low, high, ratio, only in rows:
        print(f"| {policy} | {name} | {augment} | {median:,.0f} | {low:,.0f} | {high:,.0f} | {ratio:.1%} | "
              f"{f'{only:,.0f}' if only else '-'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
