"""The Keras (tf_keras, Keras 2) CNN and its hyperparameters."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modules import features


@dataclass(frozen=True)
class HParams:
    """Model and training hyperparameters. Defaults are the checked-in, tuned values."""

    conv_filters: tuple[int, ...] = (32, 64)
    convs_per_block: int = 2
    dense_units: int = 128
    conv_dropout: float = 0.2
    dense_dropout: float = 0.4
    weight_decay: float = 1e-4
    bn_momentum: float = 0.9  # Keras' 0.99 lags behind fast-moving weights on short runs
    learning_rate: float = 2e-3
    batch_size: int = 128
    epochs: int = 12
    early_stopping_patience: int = 3
    augment: bool = True
    max_shift: int = 2
    flip: bool = True

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> HParams:
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown hyperparameters {sorted(unknown)}; known: {sorted(known)}")
        if "conv_filters" in values:
            values["conv_filters"] = tuple(int(v) for v in values["conv_filters"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def build_model(hparams: HParams, steps_per_epoch: int = 1):
    """CNN for 28x28 greyscale: [conv-BN-ReLU] x n + max-pool per block, then a dense head."""
    import tf_keras as keras

    regularizer = keras.regularizers.L2(hparams.weight_decay) if hparams.weight_decay else None
    inputs = keras.Input(shape=(features.NUM_PIXELS,), name=features.transformed_name(features.IMAGE_KEY))
    x = keras.layers.Reshape((*features.IMAGE_SHAPE, 1))(inputs)
    for filters in hparams.conv_filters:
        for _ in range(hparams.convs_per_block):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                    kernel_regularizer=regularizer)(x)
            x = keras.layers.BatchNormalization(momentum=hparams.bn_momentum)(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPool2D()(x)
        x = keras.layers.Dropout(hparams.conv_dropout)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(hparams.dense_units, activation="relu", kernel_regularizer=regularizer)(x)
    x = keras.layers.Dropout(hparams.dense_dropout)(x)
    outputs = keras.layers.Dense(features.NUM_CLASSES, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="fmnist_cnn")

    schedule = keras.optimizers.schedules.CosineDecay(
        hparams.learning_rate, decay_steps=max(1, steps_per_epoch * hparams.epochs), alpha=0.01
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model
