"""TFX Trainer entry point, referenced by the pipeline as `modules.trainer.run_fn`: trains the CNN
on Transform's output and exports it with its serving signatures."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any, NamedTuple

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx.components.trainer.fn_args_utils import FnArgs

from modules import model as model_lib
from modules import precision as precision_lib
from modules import signatures, warm_start
from modules.callbacks import EpochLogger
from modules.config import TrainingConfig
from modules.data import Split, Streamed, load_transformed, make_dataset
from modules.distribution import distribution_strategy, export_dir_for, is_chief

log = logging.getLogger(__name__)

TRAINING_SUMMARY_FILE = "training_summary.json"


def seed_everything(seed: int) -> None:
    # Without tf.random.Generator, a fixed global seed makes tf_keras Dropout draw poorly
    # randomised masks (measured: 0.62 vs 0.76 train accuracy after one epoch).
    keras.backend.experimental.enable_tf_random_generator()
    keras.utils.set_random_seed(seed)


class FitResult(NamedTuple):
    model: Any
    history: Any  # keras History
    epoch_logger: EpochLogger
    hparams: model_lib.HParams  # what it trained with (the warm schedule when it warm-started)
    warm: bool  # the weights came from base_model
    precision: precision_lib.Resolved  # the dtype policy it computed in, and why


def fit(hparams: model_lib.HParams, train: Split | Streamed, evaluation: Split | Streamed, seed: int,
        log_dir: str | None = None, max_steps: int | None = None, base_model: str | None = None,
        warm_hparams: model_lib.HParams | None = None, precision: str = precision_lib.FLOAT32) -> FitResult:
    """Builds and trains the CNN under the distribution strategy that fits this process.

    Takes the hyperparameters, the train and validation splits (in memory or streamed) and the seed of every
    random choice; `max_steps` caps the run at one epoch of at most that many steps (smoke runs);
    `log_dir`, when given, receives TensorBoard logs. `base_model`, a SavedModel this module
    exported, gives the starting weights when they fit the architecture (modules.warm_start);
    training then follows `warm_hparams`' schedule (epochs, learning rate) instead. Early
    stopping on the validation loss restores the best epoch's weights. `precision` (auto, float32
    or bfloat16) is resolved here, in the process that trains (modules.precision)."""
    resolved = precision_lib.resolve_here(precision)
    seed_everything(seed)
    steps_per_epoch = math.ceil(train.count / hparams.batch_size)
    short = max_steps is not None and max_steps > 0  # a deliberately short run (smoke, weak-model tests)
    if short:
        steps_per_epoch = min(steps_per_epoch, max_steps)
        hparams = hparams.replace(epochs=1)
    strategy = distribution_strategy()
    with strategy.scope():  # batch_size stays the global batch, split across replicas
        model = model_lib.build_model(hparams, steps_per_epoch, policy=resolved.policy)
        warm = bool(base_model) and warm_start.restore_weights(model, hparams, base_model)
        if warm and warm_hparams is not None:
            hparams = warm_hparams.replace(epochs=1) if short else warm_hparams
            model_lib.compile_model(model, hparams, steps_per_epoch)  # the warm schedule
    log.info("training on %d images, validating on %d, %s, %s; %s", train.count, evaluation.count,
             f"warm from {base_model}" if warm else "cold", resolved, hparams)
    if strategy.num_replicas_in_sync > 1:
        log.info("training with %s over %d replicas", type(strategy).__name__, strategy.num_replicas_in_sync)
    epoch_logger = EpochLogger(min(train.count, steps_per_epoch * hparams.batch_size))
    callbacks = [
        epoch_logger,
        # Watch the validation loss, not accuracy: on 5,000 images accuracy moves in noisy 0.02-point
        # steps and stopped a full run at epoch 20 of 24 (restoring epoch 17, test 0.933), cutting
        # off the low-learning-rate end of the cosine schedule where the loss still falls. Never
        # stop in the first half either, while BatchNorm statistics settle.
        keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", restore_best_weights=True,
                                      patience=hparams.early_stopping_patience,
                                      start_from_epoch=hparams.epochs // 2),
    ]
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir))
    history = model.fit(
        make_dataset(train, hparams, seed, training=True),
        steps_per_epoch=steps_per_epoch,
        epochs=hparams.epochs,
        validation_data=make_dataset(evaluation, hparams, seed, training=False),
        callbacks=callbacks,
        verbose=0,
    )
    return FitResult(model, history, epoch_logger, hparams, warm, resolved)


def write_training_summary(path: str, model, hparams: model_lib.HParams, history, epoch_logger: EpochLogger,
                           seconds: float, warm_start_from: str | None = None,
                           precision: precision_lib.Resolved | None = None) -> None:
    """What benchmarks and reviewers want to know about a training run, next to its logs;
    `precision` is recorded as {"requested", "policy", "reason"}."""
    summary = {
        "parameters": int(model.count_params()),
        "epochs_run": len(history.history["loss"]),
        "train_images_per_second": epoch_logger.images_per_second,
        "train_seconds": seconds,
        "best_val_accuracy": float(max(history.history["val_accuracy"])),
        "warm_start_from": warm_start_from,
        "precision": precision.to_dict() if precision is not None else None,
        "hparams": hparams.to_dict(),
    }
    with tf.io.gfile.GFile(path, "w") as stream:
        stream.write(json.dumps(summary, indent=2))


def run_fn(fn_args: FnArgs) -> None:
    """TFX Trainer entry point.

    Takes FnArgs whose custom_config is a TrainingConfig.to_custom_config() dict (other keys are
    ignored) and whose hyperparameters, when a Tuner ran, are its best values. Reads the train and
    eval splits from fn_args.train_files / eval_files, trains (see fit), and writes the SavedModel
    with its serving signatures to fn_args.serving_model_dir, TensorBoard logs under
    fn_args.model_run_dir/tensorboard and TRAINING_SUMMARY_FILE in fn_args.model_run_dir. In a
    multi-worker run every replica trains and saves, but only the chief writes those outputs."""
    training_config = TrainingConfig.from_custom_config(fn_args.custom_config)
    hparams = model_lib.resolve_hparams(training_config, fn_args.hyperparameters)
    base_model = fn_args.base_model if training_config.warm_start else None
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    train = load_transformed(fn_args.train_files, tf_transform_output,
                             budget_bytes=training_config.memory_budget_mb * 2**20)
    if isinstance(train, Streamed):
        log.info("streaming %d training examples from %d files: over the %d MiB memory budget", train.count,
                 len(train.files), training_config.memory_budget_mb)
    evaluation = load_transformed(fn_args.eval_files, tf_transform_output)  # small: a hold-out
    started = time.perf_counter()
    result = fit(
        hparams, train, evaluation,
        seed=training_config.seed,
        log_dir=os.path.join(fn_args.model_run_dir, "tensorboard"),
        max_steps=training_config.max_train_steps,
        base_model=base_model,
        warm_hparams=warm_start.warm_hparams(hparams, training_config) if base_model else None,
        precision=training_config.precision,
    )
    seconds = time.perf_counter() - started
    chief = is_chief(os.environ.get("TF_CONFIG"))
    with export_dir_for(fn_args.serving_model_dir, chief) as export_dir:
        signatures.export_saved_model(result.model, tf_transform_output, export_dir,
                                      explain_steps=training_config.explain_steps)
    if not chief:
        return
    write_training_summary(os.path.join(fn_args.model_run_dir, TRAINING_SUMMARY_FILE),
                           result.model, result.hparams, result.history, result.epoch_logger, seconds,
                           base_model if result.warm else None, result.precision)
