"""Shadow traffic: a share of the requests `stable` answers runs again on the `canary`, off the
request path, and the two answers are compared (Seldon's mirror, measured the way a canary
analysis needs it: serving/release/canary_analysis.py reads the counters).

The client always gets stable's answer, and its latency never includes the canary: once stable's
call has succeeded, its inputs and its predicted classes go on a bounded queue, and one daemon
thread runs them on the canary, what is queued for the same canary and signature as one TF call
(up to MAX_BATCH_ROWS rows: one-image requests run one by one cost several times their rows).
When the queue is full the shadow request is dropped and counted, never waited for. Whatever goes
wrong on the shadow side (a signature the canary lacks, inputs it refuses, a TF error) is counted
as a shadow error and logged, and never reaches the client.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from fmnist.errors import one_line
from serving.server.prometheus import ServingMetrics, predicted_classes

log = logging.getLogger(__name__)
DEFAULT_QUEUE_SIZE = 256  # shadow requests waiting for the canary; beyond, they are dropped
MAX_BATCH_ROWS = 64  # the server's default --max-batch-size


@dataclass(frozen=True)
class _Shadow:
    model: str
    stable_version: int
    canary: object  # the canary's Servable (serving.server.servables; not imported: it loads TensorFlow)
    signature: str
    inputs: dict[str, np.ndarray]
    stable_classes: np.ndarray


class ShadowMirror:
    """Runs stable's answered requests again on the canary and records the comparison in
    `metrics` (ServingMetrics.record_shadow, shadow_errors, shadow_dropped). Thread-safe:
    mirror() is called on request threads and only attaches a callback. close() stops the thread
    after what is queued; nothing is mirrored after it."""

    def __init__(self, metrics: ServingMetrics, queue_size: int = DEFAULT_QUEUE_SIZE):
        if queue_size < 1:
            raise ValueError(f"the shadow queue holds at least 1 request, got {queue_size}")
        self.metrics = metrics
        self._queue: queue.Queue[_Shadow | None] = queue.Queue(maxsize=queue_size)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self._thread.start()

    def mirror(self, stable, canary, signature: str, inputs: dict[str, np.ndarray], answer: Future) -> None:
        """Once `answer` (stable's {output: array} for `inputs`) succeeds, queues the same inputs
        for `canary` (a Servable of the same model). A failed answer is not mirrored: there is
        nothing to compare with, and the client's error is counted by the request metrics."""
        answer.add_done_callback(lambda done: self._enqueue(stable, canary, signature, inputs, done))

    def _enqueue(self, stable, canary, signature: str, inputs: dict[str, np.ndarray], answer: Future) -> None:
        # On the batcher's thread: it must stay cheap and must never raise into it.
        if self._closed or answer.exception() is not None:
            return
        key = (stable.model_name, str(stable.version), str(canary.version))
        try:
            classes = predicted_classes(answer.result())
            if classes is None:  # an answer without classes (no probabilities): nothing to compare
                return
            self._queue.put_nowait(_Shadow(stable.model_name, stable.version, canary, signature, inputs, classes))
        except queue.Full:
            self.metrics.shadow_dropped.labels(*key).inc()
        except Exception:
            log.exception("shadow request for %s version %s not queued", *key[:2])
            self.metrics.shadow_errors.labels(*key).inc()

    def _run(self) -> None:
        held: _Shadow | None = None  # taken from the queue for another canary/signature: next batch
        while True:
            first = held or self._queue.get()
            held = None
            if first is None:
                return
            batch, rows = [first], len(first.stable_classes)
            while rows < MAX_BATCH_ROWS:
                try:
                    shadow = self._queue.get_nowait()
                except queue.Empty:
                    break
                if shadow is None:
                    self._queue.put(None)  # close(): stop after this batch
                    break
                if (shadow.canary is not first.canary or shadow.signature != first.signature
                        or rows + len(shadow.stable_classes) > MAX_BATCH_ROWS):
                    held = shadow
                    break
                batch.append(shadow)
                rows += len(shadow.stable_classes)
            self._compare(batch)

    def _compare(self, batch: list[_Shadow]) -> None:
        """Runs the batch on its canary as one call; if that fails, each alone, so that one input
        the canary refuses is one error, not the batch's."""
        if len(batch) > 1:
            try:
                prepared = [self._prepare(shadow) for shadow in batch]
                merged = {name: np.concatenate([inputs[name] for inputs in prepared]) for name in prepared[0]}
                classes = self._classes(batch[0], merged, sum(len(s.stable_classes) for s in batch))
            except Exception:
                pass  # each alone below tells which one failed, and why
            else:
                offset = 0
                for shadow in batch:
                    rows = len(shadow.stable_classes)
                    self._record(shadow, classes[offset:offset + rows])
                    offset += rows
                return
        for shadow in batch:
            try:
                classes = self._classes(shadow, self._prepare(shadow), len(shadow.stable_classes))
            except Exception as err:  # any failure is the canary's, counted; the client has its answer
                log.warning("shadow request on %s version %d failed: %s", shadow.model, shadow.canary.version,
                            one_line(err))
                key = (shadow.model, str(shadow.stable_version), str(shadow.canary.version))
                self.metrics.shadow_requests.labels(*key).inc()
                self.metrics.shadow_errors.labels(*key).inc()
            else:
                self._record(shadow, classes)

    @staticmethod
    def _prepare(shadow: _Shadow) -> dict[str, np.ndarray]:
        return shadow.canary.prepare(shadow.canary.signature(shadow.signature), shadow.inputs)

    @staticmethod
    def _classes(shadow: _Shadow, inputs: dict[str, np.ndarray], rows: int) -> np.ndarray:
        classes = predicted_classes(shadow.canary.run(shadow.signature, inputs))
        if classes is None or classes.shape != (rows,):
            raise ValueError(f"the canary's {shadow.signature} answer has no class per instance")
        return classes

    def _record(self, shadow: _Shadow, classes: np.ndarray) -> None:
        self.metrics.record_shadow(shadow.model, shadow.stable_version, shadow.canary.version,
                                   shadow.stable_classes, classes)

    def close(self) -> None:
        """Runs what is queued (waiting up to 30 s), then stops the thread."""
        self._closed = True
        self._queue.put(None)  # blocks while the queue is full: the thread is draining it
        self._thread.join(timeout=30)
