"""Warm-start schedule sweep: retrains the loop's newest warm start under other schedules.

Run benchmarks/continuous_training.py first. This reads its ML Metadata for the newest Trainer
execution that had a base model (span 3's warm start) and trains again from that base model on the
same transformed window, once per schedule, in one process; the first schedule is the baseline.
`--cold` adds the full cold schedule (24 epochs, ~3x the time) as a last row.

    .venv/bin/python benchmarks/warm_start_schedule.py [--output-dir /tmp/fmnist-loop]
        [--data-dir ../shared/data/fashion-mnist] [--schedule 7:1:plain 7:0.25:augment ...] [--cold]

A schedule is EPOCHS:LR_SCALE:augment|plain (the settings --warm-start-epochs,
--warm-start-lr-scale, --warm-start-augment). Prints the CPU and one row per schedule: epochs
run, training seconds and images/s, the best epoch's eval (the window's hold-out) and test accuracy, the test
difference to the baseline row, and the process's peak resident memory so far.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import NamedTuple

from fmnist import tf_env

tf_env.configure()  # before TensorFlow loads

from common import cpu_model  # noqa: E402

from fmnist import dataset, features  # noqa: E402
from modules import data, trainer, warm_start  # noqa: E402
from modules import model as model_lib  # noqa: E402
from modules.config import TrainingConfig  # noqa: E402
from tfx_pipeline import metadata  # noqa: E402
from tfx_pipeline.config import TRAINER_ID  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


class Schedule(NamedTuple):
    epochs: int
    lr_scale: float
    augment: bool

    @classmethod
    def parse(cls, text: str) -> Schedule:
        try:
            epochs, scale, augment = text.split(":")
            if augment not in ("augment", "plain"):
                raise ValueError(augment)
            return cls(int(epochs), float(scale), augment == "augment")
        except ValueError:
            raise argparse.ArgumentTypeError(f"schedule {text!r}: expected EPOCHS:LR_SCALE:augment|plain") from None

    def label(self) -> str:
        return f"{self.epochs} epochs, {self.lr_scale:g}x peak rate, {'augmented' if self.augment else 'plain'}"


class WarmRun(NamedTuple):
    """What the loop's Trainer trained on, read back from ML Metadata."""

    train_files: list[str]
    eval_files: list[str]
    transform_graph: str
    base_model: str


def newest_warm_run(metadata_path: str, pipeline_name: str) -> WarmRun:
    from tfx.utils import path_utils

    def files(examples: list, split: str) -> list[str]:  # ML Metadata protos, not TFX Artifacts
        return [f"{artifact.uri}/Split-{split}/*" for artifact in examples]

    for inputs in reversed(metadata.executions_inputs(metadata_path, pipeline_name, TRAINER_ID)):
        if inputs.get("base_model"):
            examples = inputs["examples"]
            return WarmRun(files(examples, dataset.TRAIN), files(examples, dataset.EVAL),
                           inputs["transform_graph"][0].uri, path_utils.serving_model_path(inputs["base_model"][0].uri))
    raise LookupError(f"no Trainer run of {pipeline_name!r} in {metadata_path} had a base model: "
                      "run benchmarks/continuous_training.py first")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("/tmp/fmnist-loop"))
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "fashion-mnist")
    parser.add_argument("--schedule", type=Schedule.parse, nargs="+",
                        default=[Schedule(7, 1.0, False), Schedule(7, 0.25, True), Schedule(7, 1.0, True)])
    parser.add_argument("--cold", action="store_true", help="add the cold schedule as a last row")
    parser.add_argument("--max-steps", type=int, default=None, help="steps per run (smoke runs)")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf
    import tensorflow_transform as tft
    import tf_keras as keras

    metadata_path = str(args.output_dir / "fashion-mnist" / "metadata.sqlite")
    run = newest_warm_run(metadata_path, metadata.only_pipeline_name(metadata_path))
    transform = tft.TFTransformOutput(run.transform_graph)
    train = data.load_transformed(run.train_files, transform)
    evaluation = data.load_transformed(run.eval_files, transform)
    test = dataset.read_split(args.data_dir, dataset.TEST)
    test_images = transform.transform_features_layer()({
        features.IMAGE_KEY: tf.constant(test.images.reshape(len(test.labels), -1).astype(np.int64)),
        features.LABEL_KEY: tf.constant(test.labels.astype(np.int64)),
    })[data.IMAGE_XF]
    print(f"CPU: {cpu_model()}\nfrom {run.base_model}: {len(train.labels):,} train, "
          f"{len(evaluation.labels):,} eval, {len(test.labels):,} test images", flush=True)

    cold = model_lib.resolve_hparams(TrainingConfig())
    settings = lambda s: TrainingConfig(warm_start_epochs=s.epochs, warm_start_lr_scale=s.lr_scale,  # noqa: E731
                                        warm_start_augment=s.augment)
    rows = [(s.label(), dict(base_model=run.base_model, warm_hparams=warm_start.warm_hparams(cold, settings(s))))
            for s in args.schedule]
    if args.cold:
        rows.append((f"cold: {cold.epochs} epochs, augmented", {}))
    header = ("| schedule | epochs run | train s | train img/s | best eval acc | test acc | test vs first | "
              "peak RSS GiB |")
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    first = None
    for label, start in rows:
        keras.backend.clear_session()
        started = time.perf_counter()
        result = trainer.fit(cold, train, evaluation, seed=TrainingConfig().seed, max_steps=args.max_steps, **start)
        seconds = time.perf_counter() - started
        predicted = np.argmax(result.model.predict(test_images, batch_size=1000, verbose=0), axis=1)
        accuracy = float(np.mean(predicted == test.labels))
        first = accuracy if first is None else first
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        history = result.history.history
        lines.append(f"| {label} | {len(history['loss'])} | {seconds:.0f} | "
                     f"{result.epoch_logger.images_per_second:.0f} | {max(history['val_accuracy']):.4f} | "
                     f"{accuracy:.4f} | {100 * (accuracy - first):+.2f} pt | {rss:.1f} |")
        print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
