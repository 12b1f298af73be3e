"""The process settings TensorFlow must see before it loads, in one place, and how such a process
ends quickly.

TFX 1.16, TFT and TFMA are Keras 2 code: with TF 2.16 that means `tf_keras`, selected by
TF_USE_LEGACY_KERAS=1 before the first `import tensorflow`. Every entry point (runners, CLI,
tests, benchmarks, notebook) calls `configure()` first; the Dockerfile sets the same variable
for the containers Vertex starts (tests check that the two agree).
"""

from __future__ import annotations

import atexit
import gc
import os

LEGACY_KERAS_VARIABLE = "TF_USE_LEGACY_KERAS"
LEGACY_KERAS_VALUE = "1"


def configure(verbose: bool = False) -> None:
    """Selects Keras 2 and, unless verbose, turns TensorFlow's C++ INFO/WARNING lines off."""
    os.environ.setdefault(LEGACY_KERAS_VARIABLE, LEGACY_KERAS_VALUE)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")


def freeze_heap_at_exit() -> None:
    """For programs (runners, the CLI), called as they start: at exit, after every other exit
    handler, the heap is frozen, so the interpreter's last garbage collections do not walk it. With
    TensorFlow, TFX and Beam loaded those took ~2 s of every command's exit (`fmnist spans`: 2.2 s
    after its last line, 0.16 s with this). Exit handlers, flushes and closes all still run."""
    atexit.register(gc.freeze)  # handlers run last-registered first: registered at start, it runs last
