"""Readable progress for LocalDagRunner runs.

TFX logs through absl at INFO, thousands of lines per run. The full log goes to a file; the
console gets one line when each component starts and finishes, with its wall time.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import TextIO

_OWN_LOGGERS = ("modules", "fmnist", "tfx_pipeline")
_EVENT = re.compile(r"^Component (?P<node>\S+) is (?P<state>running|finished)\.$")


# Warnings that every run prints and that say nothing actionable about it.
_KNOWN_NOISE = ("ArtifactQuery.property_predicate is not supported",
                "does not have payload_format custom property",
                "is deprecated and will be removed",
                "SavedModel saved prior to TF 2.5 detected",
                # Beam then uses crcmod's C extension, which the lock installs.
                "Couldn't find python-snappy")


def _worth_showing(record: logging.LogRecord) -> bool:
    if record.name.startswith(_OWN_LOGGERS):
        return True
    return record.levelno >= logging.WARNING and not any(n in record.getMessage() for n in _KNOWN_NOISE)


class ComponentProgress(logging.Handler):
    def __init__(self, total: int, stream: TextIO = sys.stdout):
        super().__init__(level=logging.INFO)
        self.total = total
        self.stream = stream
        self.started: dict[str, float] = {}
        self.durations: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        match = _EVENT.match(record.getMessage())
        if not match:
            return
        node, now = match["node"], time.perf_counter()
        if match["state"] == "running":
            self.started[node] = now
            self._print(f"[{len(self.started)}/{self.total}] {node} ...")
        else:
            self.durations[node] = now - self.started.get(node, now)
            self._print(f"[{len(self.durations)}/{self.total}] {node} finished in "
                        f"{self.durations[node]:.1f}s")

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


def attach(total: int, log_file: str | None = None) -> ComponentProgress:
    """Routes absl/TFX INFO logs to `log_file` and component progress to stdout."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    # Replace console handlers that libraries installed at import (basicConfig) with ours.
    for handler in list(root.handlers):
        if isinstance(handler, ComponentProgress) or type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    if log_file:
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(file_handler)
    progress = ComponentProgress(total)
    root.addHandler(progress)
    # The project's own INFO lines (training epochs) and everyone's warnings reach the console.
    console = logging.StreamHandler(sys.stderr)
    console.addFilter(_worth_showing)
    root.addHandler(console)
    absl_logger = logging.getLogger("absl")
    absl_logger.setLevel(logging.INFO)
    # Some components turn absl down to WARNING mid-run, which would silence the
    # "Component X is finished." lines that progress is built on: keep it at INFO.
    absl_logger.setLevel = lambda level: None  # type: ignore[method-assign]
    # TensorFlow's logger prints through its own handler; send it to the file like the rest.
    tf_logger = logging.getLogger("tensorflow")
    for handler in list(tf_logger.handlers):
        tf_logger.removeHandler(handler)
    tf_logger.propagate = True
    return progress
