"""Warm start: a retrain begins from the latest blessed model's weights with a shorter schedule.

The Trainer's `base_model` is that model's exported SavedModel. Its `variables/` directory is a
TF checkpoint of the Keras model's object graph, so the layers are restored by name, without
Keras metadata. They are restored into a scratch copy and only the layer weights are copied:
the checkpoint also holds the old optimizer, whose step counter would start the new cosine
schedule at its end.
"""

from __future__ import annotations

import logging
import os

import tensorflow as tf

from modules import model as model_lib
from modules.config import TrainingConfig

log = logging.getLogger(__name__)


def warm_hparams(hparams: model_lib.HParams, config: TrainingConfig) -> model_lib.HParams:
    """The shorter schedule: config.warm_start_epochs at config.warm_start_lr_scale of the peak
    learning rate, with augmentation only if config.warm_start_augment.

    The defaults (7 epochs, the full peak rate, no augmentation) were chosen on the full data:
    warm-starting span 3's window from span 2's model, 7 epochs at 0.25x / 0.5x / 1.0x the peak
    rate reached test accuracy 0.9319 (in the loop) / 0.9344 / 0.9347 with augmentation, and
    0.9350 (0.5x) / 0.9376 (1.0x) without; the cold 24-epoch retrain reached 0.9377
    (benchmarks/README.md, "The continuous-training loop on the full data"). Our reading: the base
    model has learnt the shift invariance already, so a short run does better on the images as they
    are. Retraining on unchanged data (a re-run of the same span) at the full rate can end a little
    below the base model, and then the blessing keeps the base model."""
    return hparams.replace(epochs=config.warm_start_epochs,
                           learning_rate=hparams.learning_rate * config.warm_start_lr_scale,
                           augment=hparams.augment and config.warm_start_augment)


def restore_weights(model, hparams: model_lib.HParams, base_model_dir: str) -> bool:
    """Copies the layer weights of the SavedModel in `base_model_dir` into `model` (built from
    `hparams`). Returns False, leaving `model` untouched, when the base model has another
    architecture (e.g. the Tuner changed it): the run then trains cold.

    The scratch copy is float32 and uncompiled: only the layers are read, and a base model that
    trained in bfloat16 was exported as its float32 copy, without an optimizer (modules.signatures).
    The weights' values do not depend on the policy (variables are float32 either way)."""
    scratch = model_lib.build_model(hparams, compile=False)
    try:
        # expect_partial: the checkpoint also holds the signatures' Transform layer and metrics.
        status = tf.train.Checkpoint(root=scratch).read(os.path.join(base_model_dir, "variables", "variables"))
        status.expect_partial().assert_existing_objects_matched()
        model.set_weights(scratch.get_weights())
    except (AssertionError, ValueError) as mismatch:
        log.warning("not warm-starting: the base model %s does not fit this architecture (%s)",
                    base_model_dir, str(mismatch).splitlines()[0])
        return False
    return True
