"""Readable progress for LocalDagRunner runs.

TFX logs through absl at INFO, thousands of lines per run. The full log goes to a file; the
console gets one line when each component starts and finishes, with its wall time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import TextIO

_OWN_LOGGERS = ("modules", "fmnist", "tfx_pipeline", "reports")
_EVENT = re.compile(r"^Component (?P<node>\S+) is (?P<state>running|finished)\.$")


# Warnings that every run prints and that say nothing actionable about it.
_KNOWN_NOISE = ("ArtifactQuery.property_predicate is not supported",
                "does not have payload_format custom property",
                "is deprecated and will be removed",
                "SavedModel saved prior to TF 2.5 detected",
                # Beam then uses crcmod's C extension, which the lock installs.
                "Couldn't find python-snappy")


def _own(record: logging.LogRecord) -> bool:
    return record.name.startswith(_OWN_LOGGERS)


def _worth_showing(record: logging.LogRecord) -> bool:
    if _own(record):
        return True
    return record.levelno >= logging.WARNING and not any(n in record.getMessage() for n in _KNOWN_NOISE)


class ComponentProgress(logging.Handler):
    """Prints `[i/n] Component ...` when TFX logs that a component starts or finishes."""

    def __init__(self, total: int, stream: TextIO):
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


@contextlib.contextmanager
def attach(total: int, log_file: str | None = None, verbose: bool = True) -> Iterator[ComponentProgress]:
    """For the duration of a run: TFX/absl INFO logs to `log_file`, component progress and the
    project's own lines to stdout (with `verbose`, everyone's warnings too). On exit every
    handler, level and patch it made is undone, so runs in one process never share a log."""
    root = logging.getLogger()
    absl_logger = logging.getLogger("absl")
    tf_logger = logging.getLogger("tensorflow")
    saved = dict(root_level=root.level, root_handlers=list(root.handlers), absl_level=absl_logger.level,
                 tf_handlers=list(tf_logger.handlers), tf_propagate=tf_logger.propagate)
    root.setLevel(logging.INFO)
    # Console handlers that libraries installed at import (basicConfig) would print everything.
    for handler in saved["root_handlers"]:
        if type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    added: list[logging.Handler] = []
    if log_file:
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        added.append(file_handler)
    progress = ComponentProgress(total, sys.stdout)
    console = logging.StreamHandler(sys.stdout)
    console.addFilter(_worth_showing if verbose else _own)
    added += [progress, console]
    for handler in added:
        root.addHandler(handler)
    absl_logger.setLevel(logging.INFO)
    # Some components turn absl down to WARNING mid-run, which would silence the
    # "Component X is finished." lines that progress is built on: keep it at INFO meanwhile.
    absl_logger.setLevel = lambda level: None  # type: ignore[method-assign]
    # TensorFlow's logger prints through its own handler; send it to the file like the rest.
    for handler in saved["tf_handlers"]:
        tf_logger.removeHandler(handler)
    tf_logger.propagate = True
    try:
        yield progress
    finally:
        for handler in added:
            root.removeHandler(handler)
            handler.close()
        for handler in saved["root_handlers"]:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(saved["root_level"])
        del absl_logger.setLevel  # the instance attribute hid the class method
        absl_logger.setLevel(saved["absl_level"])
        for handler in saved["tf_handlers"]:
            tf_logger.addHandler(handler)
        tf_logger.propagate = saved["tf_propagate"]


@contextlib.contextmanager
def quiet_console(log_file: str | os.PathLike, enabled: bool = True) -> Iterator[None]:
    """Sends everything written to file descriptors 1 and 2 (TensorFlow's C++ logs, library
    prints and warnings) to `log_file`, while Python's sys.stdout keeps writing to the console:
    only the project's own lines (which go through sys.stdout) stay visible."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = os.dup(1), os.dup(2)
    saved_streams = sys.stdout, sys.stderr
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    console = os.fdopen(os.dup(saved_fds[0]), "w", buffering=1)
    log_stream = os.fdopen(os.dup(log_fd), "a", buffering=1)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stdout, sys.stderr = console, log_stream
    warnings_captured = logging.captureWarnings  # warnings -> the py.warnings logger -> the file
    warnings_captured(True)
    try:
        yield
    finally:
        warnings_captured(False)
        console.flush()
        log_stream.flush()
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in saved_fds:
            os.close(fd)
        sys.stdout, sys.stderr = saved_streams
        # Handlers created meanwhile (absl's, TensorFlow's) hold these streams; hand them the
        # process's own, which outlive any stand-in (pytest's capture), so a later run in this
        # process (fmnist watch) does not log to closed files.
        _repoint_handlers({id(console): sys.__stdout__, id(log_stream): sys.__stderr__})
        console.close()
        log_stream.close()


@contextlib.contextmanager
def stderr_to(log_file: str | os.PathLike) -> Iterator[None]:
    """Sends file descriptor 2 (TensorFlow's C++ lines) and Python warnings to `log_file`, for a
    command whose own lines go to stdout (fmnist monitor). Unlike quiet_console, fd 1 and
    sys.stdout are left alone, so output captured in-process (tests, callers) keeps working."""
    os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    sys.stderr.flush()
    saved_fd, saved_stream = os.dup(2), sys.stderr
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    if sys.stderr is sys.__stderr__:  # the process's own stream writes to fd 2, now the log
        sys.stderr = os.fdopen(os.dup(2), "a", buffering=1)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        if sys.stderr is not saved_stream:
            sys.stderr.flush()
            _repoint_handlers({id(sys.stderr): sys.__stderr__})
            sys.stderr.close()
            sys.stderr = saved_stream
        os.dup2(saved_fd, 2)
        os.close(saved_fd)


def _repoint_handlers(replacements: dict[int, object]) -> None:
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in replacements:
                handler.setStream(replacements[id(handler.stream)])
