"""What the benchmarks share: the machine line every one prints with its figures (machines differ:
compare only ratios measured in the same run), free ports, and `fmnist serve` processes to measure.
Benchmarks run as scripts (their directory is on sys.path), so they import it as `common`."""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import logging
import socket
import subprocess
import sys
import types
from collections.abc import Hashable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    """`lscpu`'s model name, CPU count and the flags that decide training and serving speed."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "lscpu: not available"
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    flags = fields.get("Flags", "").split()
    wanted = [f for f in flags if f.startswith(("avx512_bf16", "amx", "avx512f", "avx2"))]
    model, cpus = fields.get("Model name", "?").strip(), fields.get("CPU(s)", "?").strip()
    return f"{model}, {cpus} CPUs, flags {' '.join(wanted)}"


REPO = Path(__file__).resolve().parent.parent


@functools.cache
def serving_benchmark() -> types.ModuleType:
    """benchmarks/serving.py (its load generator and cells), loaded by path: imported as `serving`
    it would shadow the project's serving package."""
    spec = importlib.util.spec_from_file_location("serving_benchmark", Path(__file__).parent / "serving.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A localhost port nothing listens on now (a server started right after can take it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The load generator's flags (benchmarks/serving.py's cells), as every serving benchmark takes them."""
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "sample")
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)


@contextlib.contextmanager
def fmnist_servers(flags: Mapping[Hashable, Sequence[str]], ready_path: str = "") -> Iterator[dict]:
    """One `fmnist serve FLAGS` per entry of `flags` (this project's server on localhost, free ports,
    output discarded), all at once, each in its own process. Yields {key: {"rest": port, "grpc":
    port}} once every REST port answers `/v1/models/<model><ready_path>`; stops them on the way out."""
    from fmnist import features

    started: dict = {}
    try:
        for key, server_flags in flags.items():
            ports = {"rest": free_port(), "grpc": free_port()}
            command = [sys.executable, "-m", "cli.main", "serve", *server_flags, "--host", "127.0.0.1",
                       "--rest-port", str(ports["rest"]), "--grpc-port", str(ports["grpc"]), "--tf-serving", "no"]
            started[key] = ports, subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL)
        for ports, process in started.values():
            serving_benchmark().wait_until_ready(
                f"http://127.0.0.1:{ports['rest']}/v1/models/{features.MODEL_NAME}{ready_path}", process)
        yield {key: ports for key, (ports, _) in started.items()}
    finally:
        for _, process in started.values():
            process.terminate()
            process.wait(timeout=60)


TRANSFORM_ID = "Transform"  # the component id the pipeline gives Transform


def run_splits(output_dir: Path, data_dir: Path) -> tuple[dict, str]:
    """A finished local run's training data, as the Trainer sees it: {train, eval, test} Splits of
    transformed images (train and eval from the run's latest Transform output, test the official
    test split through the same Transform graph; the pipeline evaluates it raw) and where they
    came from."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from fmnist import dataset, features
    from modules import data
    from tfx_pipeline import metadata

    metadata_path = str(output_dir / "metadata.sqlite")
    pipeline = metadata.only_pipeline_name(metadata_path)
    (graph,) = metadata.latest_outputs(metadata_path, pipeline, TRANSFORM_ID, "transform_graph")
    (examples,) = metadata.latest_outputs(metadata_path, pipeline, TRANSFORM_ID, "transformed_examples")
    transform = tft.TFTransformOutput(graph.uri)
    splits = {name: data.load_transformed([f"{examples.uri}/Split-{name}/*"], transform)
              for name in (dataset.TRAIN, dataset.EVAL)}
    raw = dataset.read_split(str(data_dir), dataset.TEST)
    layer = transform.transform_features_layer()
    images = layer({features.IMAGE_KEY: tf.constant(raw.images, tf.int64),
                    features.LABEL_KEY: tf.constant(raw.labels, tf.int64)})[data.IMAGE_XF]
    splits[dataset.TEST] = data.Split(images.numpy(), raw.labels)
    return splits, examples.uri


def accuracy(model, split) -> tuple[float, np.ndarray]:
    """Top-1 accuracy of a Keras model on a Split, and its probabilities."""
    probabilities = model.predict(split.images, batch_size=1024, verbose=0)
    return float(np.mean(probabilities.argmax(axis=1) == split.labels)), probabilities


@contextlib.contextmanager
def project_lines_only(log_file: Path) -> Iterator[None]:
    """While measuring in this process: library output (TensorFlow's C++ lines, warnings, other
    loggers) goes to `log_file`; the console keeps the benchmark's prints and the project's own log
    lines (the Trainer's epoch lines, modules.callbacks)."""
    from tfx_pipeline import progress

    log_file.parent.mkdir(parents=True, exist_ok=True)
    print(f"library output: {log_file}", flush=True)
    with progress.quiet_console(log_file):
        handler = logging.StreamHandler(sys.stdout)  # the console, inside quiet_console
        handler.setFormatter(logging.Formatter("  %(message)s"))
        own = logging.getLogger("modules")
        own.addHandler(handler)
        own.setLevel(logging.INFO)
        try:
            yield
        finally:
            own.removeHandler(handler)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(f"| {' | '.join(line)} |" for line in (header, ["---"] * len(header), *rows))
