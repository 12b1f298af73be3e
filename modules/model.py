"""The Keras (tf_keras, Keras 2) CNN and its hyperparameters."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fmnist import features

if TYPE_CHECKING:
    from modules.config import TrainingConfig

# Written by a Tuner run (its best_hyperparameters.txt, copied verbatim); see README "Tuning".
# The one source of the tuned values: HParams' defaults for the searched fields are read from it,
# and tests/test_model.py checks that its stored search space is modules/tuner.py's.
TUNED_HPARAMS_FILE = os.path.join(os.path.dirname(__file__), "tuned_hyperparameters.json")


def _tuned_values() -> dict[str, Any]:
    with open(TUNED_HPARAMS_FILE) as stream:
        return json.load(stream)["values"]


_TUNED = _tuned_values()


@dataclass(frozen=True)
class HParams:
    """Model and training hyperparameters. Every value is a scalar so KerasTuner can search it.
    The searched ones default to the tuned values (tuned_hyperparameters.json), so HParams() is
    what the Trainer trains with when nothing overrides them."""

    base_filters: int = _TUNED["base_filters"]  # block i has base_filters * 2**i filters
    num_blocks: int = _TUNED["num_blocks"]
    convs_per_block: int = _TUNED["convs_per_block"]
    dense_units: int = _TUNED["dense_units"]
    conv_dropout: float = _TUNED["conv_dropout"]
    dense_dropout: float = _TUNED["dense_dropout"]
    weight_decay: float = _TUNED["weight_decay"]
    bn_momentum: float = 0.9  # Keras' 0.99 lags behind fast-moving weights on short runs
    learning_rate: float = _TUNED["learning_rate"]
    batch_size: int = 128
    # The training budget, not tuned: 24 epochs keep the full local pipeline under 20 minutes
    # on 2 CPU cores (Tuner trials are short; the winner trains for this full schedule).
    epochs: int = 24
    early_stopping_patience: int = 3
    augment: bool = True
    max_shift: int = _TUNED["max_shift"]
    flip: bool = _TUNED["flip"]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> HParams:
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown hyperparameters {sorted(unknown)}; known: {sorted(known)}")
        types = {f.name: type(getattr(cls(), f.name)) for f in dataclasses.fields(cls)}
        return cls(**{k: types[k](v) for k, v in values.items()})

    @classmethod
    def tuned(cls, overrides: Mapping[str, Any] | None = None) -> HParams:
        """The checked-in tuned values (the defaults), then `overrides` on top."""
        return cls.from_dict(overrides)

    def replace(self, **changes: Any) -> HParams:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def conv_filters(self) -> tuple[int, ...]:
        return tuple(self.base_filters * 2**block for block in range(self.num_blocks))


def resolve_hparams(training_config: TrainingConfig, tuner_output: Mapping[str, Any] | None = None) -> HParams:
    """The hyperparameters a run trains with: the checked-in tuned values, then the Tuner's best
    values (`tuner_output` is its best_hyperparameters dict, {"values": {...}}, when tuning ran),
    then training_config.hparam_overrides() (e.g. --epochs): later sources win."""
    tuner_values = (tuner_output or {}).get("values", {})
    return HParams.tuned({**tuner_values, **training_config.hparam_overrides()})


def autograph_leaves_tf_keras_alone() -> None:
    """Puts tf_keras on AutoGraph's do-not-convert list (idempotent; every model is built through
    build_model, so every fit, predict and export of one is covered).

    AutoGraph rewrites the Python source of each function a tf.function calls, except in the
    libraries its CONVERSION_RULES name. TF 2.16 names `keras`, where Keras 2 lived, but not
    `tf_keras`, where it lives now: every trace of a model (fit's train and test steps, predict,
    the export's signatures) converted Keras's own layer and engine code, 15 s of a 17.5 s
    two-epoch fit of the sample on 2 cores, with identical results. Keras is written to be traced
    as it is (it was never converted while it was `keras`); the project's own functions that a
    model calls (augmentation) are still converted."""
    from tensorflow.python.autograph.core import config

    if not any(isinstance(rule, config.DoNotConvert) and rule.matches("tf_keras") for rule in config.CONVERSION_RULES):
        config.CONVERSION_RULES = (config.DoNotConvert("tf_keras"), *config.CONVERSION_RULES)


def build_model(hparams: HParams, steps_per_epoch: int = 1, policy: str = "float32", compile: bool = True):
    """CNN for 28x28 greyscale: [conv-BN-ReLU] x n + max-pool per block, then a dense head.

    Takes the hyperparameters and the steps of one epoch (the cosine learning-rate decay spans
    steps_per_epoch * hparams.epochs). Returns a tf_keras Model mapping transformed images
    [N, 784] (input named like the transformed image feature) to float32 class probabilities
    [N, 10], compiled unless `compile` is False. `policy` is the Keras dtype policy of every layer
    but the head ("float32" or "mixed_bfloat16", see modules.precision), set per layer: a global
    policy would leak into the other models of the process (Tuner trials, tests). The
    `probabilities` head always computes in float32, so the softmax and the loss do too. Call it
    inside a tf.distribute strategy's scope to distribute the variables."""
    import tf_keras as keras

    autograph_leaves_tf_keras_alone()
    hidden = keras.mixed_precision.Policy(policy)
    regularizer = keras.regularizers.L2(hparams.weight_decay) if hparams.weight_decay else None
    inputs = keras.Input(shape=(features.NUM_PIXELS,), name=features.transformed_name(features.IMAGE_KEY))
    x = keras.layers.Reshape((*features.IMAGE_SHAPE, 1), dtype=hidden)(inputs)
    for filters in hparams.conv_filters:
        for _ in range(hparams.convs_per_block):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                    kernel_regularizer=regularizer, dtype=hidden)(x)
            x = keras.layers.BatchNormalization(momentum=hparams.bn_momentum, dtype=hidden)(x)
            x = keras.layers.ReLU(dtype=hidden)(x)
        x = keras.layers.MaxPool2D(dtype=hidden)(x)
        x = keras.layers.Dropout(hparams.conv_dropout, dtype=hidden)(x)
    x = keras.layers.Flatten(dtype=hidden)(x)
    x = keras.layers.Dense(hparams.dense_units, activation="relu", kernel_regularizer=regularizer, dtype=hidden)(x)
    x = keras.layers.Dropout(hparams.dense_dropout, dtype=hidden)(x)
    outputs = keras.layers.Dense(features.NUM_CLASSES, activation="softmax", name="probabilities",
                                 dtype="float32")(x)
    model = keras.Model(inputs, outputs, name="fmnist_cnn")
    if compile:
        compile_model(model, hparams, steps_per_epoch)
    return model


def compile_model(model, hparams: HParams, steps_per_epoch: int) -> None:
    """Adam with cosine learning-rate decay over the whole run; accuracy as the metric."""
    import tf_keras as keras

    schedule = keras.optimizers.schedules.CosineDecay(
        hparams.learning_rate, decay_steps=max(1, steps_per_epoch * hparams.epochs), alpha=0.01
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
