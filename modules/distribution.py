"""Where the Trainer runs: which tf.distribute strategy fits, and which replica owns the model."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator

import tensorflow as tf


def strategy_kind(tf_config: str | None, gpus: int) -> str:
    """Which tf.distribute strategy fits where the Trainer runs: "multi_worker" when Vertex
    Training (or any TF_CONFIG) names several replicas, "mirrored" over several local GPUs,
    "default" otherwise (one device: this machine, or one Vertex replica with one GPU)."""
    cluster = json.loads(tf_config or "{}").get("cluster", {})
    if sum(len(addresses) for addresses in cluster.values()) > 1:
        return "multi_worker"
    return "mirrored" if gpus > 1 else "default"


def is_chief(tf_config: str | None) -> bool:
    """Whether this replica writes the model. Vertex names the chief's pool `workerpool0`; plain
    TF_CONFIG uses `chief`, or worker 0 when the cluster has no chief; no TF_CONFIG: one process."""
    parsed = json.loads(tf_config or "{}")
    task = parsed.get("task", {})
    if "type" not in task:
        return True
    if task["type"] in ("chief", "master", "workerpool0"):
        return True
    return task["type"] == "worker" and task.get("index", 0) == 0 and "chief" not in parsed.get("cluster", {})


def distribution_strategy() -> tf.distribute.Strategy:
    """The strategy strategy_kind picks for this process's TF_CONFIG and visible GPUs."""
    kind = strategy_kind(os.environ.get("TF_CONFIG"), len(tf.config.list_physical_devices("GPU")))
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


@contextlib.contextmanager
def export_dir_for(serving_model_dir: str, chief: bool) -> Iterator[str]:
    """Where this replica saves the model: the chief into serving_model_dir (kept); any other
    replica into a temporary directory, removed on leaving the block, also when the export fails.

    Every multi-worker replica must take part in saving (the save runs collective ops), but only
    the chief's copy is the model; the others' copies would otherwise pile up on the worker's disk."""
    if chief:
        yield serving_model_dir
        return
    with tempfile.TemporaryDirectory(prefix="non-chief-export-") as scratch:
        yield scratch
