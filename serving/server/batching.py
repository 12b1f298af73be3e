"""Server-side batching: concurrent requests for the same model version and signature run as one
TF call. A worker takes the oldest request, then whatever else is queued for the same servable
(waiting up to `timeout_ms` for more, 0 = never wait) until `max_batch_size` rows; so a lone
request pays no batching delay and a burst shares one call."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from serving.protocol.errors import ServingError


@dataclass
class _Task:
    servable: object
    signature: str
    inputs: dict[str, np.ndarray]
    rows: int
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple:
        return id(self.servable), self.signature


class Batcher:
    def __init__(self, max_batch_size: int = 64, timeout_ms: float = 0.0, workers: int = 1,
                 on_batch=None):
        self.max_batch_size = max_batch_size
        self.timeout = timeout_ms / 1000
        self._queue: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._on_batch = on_batch  # callback(batch_rows) for metrics
        self._workers = [threading.Thread(target=self._work, name=f"batcher-{i}", daemon=True)
                         for i in range(workers)]
        for worker in self._workers:
            worker.start()

    def submit(self, servable, signature: str, inputs: dict[str, np.ndarray]) -> Future:
        rows = min((a.shape[0] for a in inputs.values() if a.ndim), default=1)
        task = _Task(servable, signature, inputs, rows)
        self._queue.put(task)
        return task.future

    def close(self) -> None:
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout=10)

    def _work(self) -> None:
        held: deque[_Task] = deque()  # taken from the queue for another servable: next batch
        while True:
            first = held.popleft() if held else self._queue.get()
            if first is None:
                return
            batch, rows = [first], first.rows
            deadline = time.monotonic() + self.timeout
            while rows < self.max_batch_size:
                try:
                    wait = deadline - time.monotonic()
                    task = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if task is None:
                    self._queue.put(None)  # let the loop end after this batch
                    break
                if task.key == first.key and rows + task.rows <= self.max_batch_size:
                    batch.append(task)
                    rows += task.rows
                else:
                    held.append(task)
                    break
            self._run(batch, rows)

    def _run(self, batch: list[_Task], rows: int) -> None:
        first = batch[0]
        if self._on_batch:
            self._on_batch(rows)
        if len(batch) == 1:
            self._settle(first, lambda: first.servable.run(first.signature, first.inputs))
            return
        merged = {k: np.concatenate([t.inputs[k] for t in batch]) for k in first.inputs}
        try:
            outputs = first.servable.run(first.signature, merged)
        except ServingError:
            for task in batch:  # one bad request must not fail the others: run each alone
                self._settle(task, lambda task=task: task.servable.run(task.signature, task.inputs))
            return
        except Exception as err:
            for task in batch:
                task.future.set_exception(err)
            return
        offset = 0
        for task in batch:
            task.future.set_result({k: v[offset:offset + task.rows] for k, v in outputs.items()})
            offset += task.rows

    @staticmethod
    def _settle(task: _Task, call) -> None:
        try:
            task.future.set_result(call())
        except Exception as err:
            task.future.set_exception(err)
