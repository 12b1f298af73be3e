"""Keras callbacks of the Trainer."""

from __future__ import annotations

import logging
import time

import numpy as np
import tf_keras as keras

log = logging.getLogger(__name__)


class EpochLogger(keras.callbacks.Callback):
    """One log line per epoch with throughput, so long training shows progress in pipeline logs."""

    def __init__(self, images_per_epoch: int):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.seconds: list[float] = []
        self._started = 0.0
        self._ended = 0.0
        self._between = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        now = time.perf_counter()
        self._between = now - self._ended if self._ended else 0.0
        self._started = now

    def on_epoch_end(self, epoch, logs=None):
        self._ended = time.perf_counter()
        self.seconds.append(self._ended - self._started)
        metrics = " ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()))
        log.info("epoch %d/%d: %.1fs (+%.1fs before it), %.0f images/s, %s", epoch + 1, self.params["epochs"],
                 self.seconds[-1], self._between, self.images_per_epoch / self.seconds[-1], metrics)

    @property
    def images_per_second(self) -> float:
        """Median over epochs: the first epoch also pays for tracing."""
        return self.images_per_epoch / float(np.median(self.seconds))
