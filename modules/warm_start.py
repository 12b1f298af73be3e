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
    """The shorter schedule: config.warm_start_epochs at a scaled-down peak learning rate."""
    return hparams.replace(epochs=config.warm_start_epochs,
                           learning_rate=hparams.learning_rate * config.warm_start_lr_scale)


def restore_weights(model, hparams: model_lib.HParams, base_model_dir: str) -> bool:
    """Copies the layer weights of the SavedModel in `base_model_dir` into `model` (built from
    `hparams`). Returns False, leaving `model` untouched, when the base model has another
    architecture (e.g. the Tuner changed it): the run then trains cold."""
    scratch = model_lib.build_model(hparams)
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
