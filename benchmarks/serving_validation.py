"""Serving validation benchmark: the pipeline's ServingValidator step on a pushed model, timed.

    .venv/bin/python benchmarks/serving_validation.py                       # the newest pushed model
    .venv/bin/python benchmarks/serving_validation.py --model-dir DIR --runs 3

Runs the component's executor exactly as the pipeline does (copy of the model, warmup file
written, a model server process started on it, Predict and Classify over gRPC and REST compared
with the model in-process, p99 budget) on the official test split, `--runs` times, and prints
one row per run and the medians: seconds to AVAILABLE (process start, TF import, load and warmup
replay), request latencies and the step's total wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import cpu_model  # noqa: E402

from fmnist import dataset, tf_env  # noqa: E402

# The full official files beside the checkout (CI) or where `make run` fetched them, else the sample.
DATA_CANDIDATES = [REPO.parent / "shared" / "data" / "fashion-mnist", REPO / "data" / "raw", REPO / "data" / "sample"]


def test_examples(data_dir: Path, work: Path):
    """An `examples` artifact holding the official test split as gzipped tf.Examples (what
    TestExampleGen writes)."""
    import tensorflow as tf
    from tfx.types import standard_artifacts

    from tfx_pipeline.components.raw_example_gen import to_tf_example

    artifact = standard_artifacts.Examples()
    artifact.uri = str(work / "examples")
    split_dir = work / "examples" / f"Split-{dataset.TEST}"
    split_dir.mkdir(parents=True)
    raw = dataset.read_split(data_dir, dataset.TEST)
    with tf.io.TFRecordWriter(str(split_dir / "data.gz"), "GZIP") as writer:
        for image, label in zip(raw.images, raw.labels, strict=True):
            writer.write(to_tf_example(image, int(label)).SerializeToString())
    return artifact, len(raw.labels)


def validate_once(model_dir: Path, examples, work: Path, settings) -> dict:
    from tfx.types import standard_artifacts

    from tfx_pipeline.components import serving_validator
    from tfx_pipeline.config import REPORTED_SPLIT

    model, evaluated, infra = (standard_artifacts.Model(), standard_artifacts.ModelBlessing(),
                               standard_artifacts.InfraBlessing())
    model.uri, evaluated.uri, infra.uri = str(work / "model"), str(work / "model_blessing"), str(work / "infra")
    os.makedirs(model.uri)
    os.symlink(model_dir.resolve(), os.path.join(model.uri, "Format-Serving"))
    os.makedirs(infra.uri)
    evaluated.set_int_custom_property("blessed", 1)
    serving_validator.ServingValidator.EXECUTOR_SPEC.executor_class().Do(
        {"model": [model], "model_blessing": [evaluated], "examples": [examples]}, {"blessing": [infra]},
        dict(split=REPORTED_SPLIT, num_requests=settings.validation_requests, warmup_requests=settings.warmup_requests,
             p99_budget_ms=settings.validation_p99_ms, load_timeout_s=settings.validation_load_timeout,
             tolerance=settings.validation_tolerance))
    return json.loads((work / "infra" / serving_validator.RESULT_FILE).read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="a SavedModel (default: the newest version under outputs/fashion-mnist/serving_model)")
    parser.add_argument("--data-dir", type=Path, default=None, help="official files (default: ../shared, data/raw)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tf_env.configure(verbose=False)
    from modules.inference import latest_version_dir
    from tfx_pipeline.config import ServingValidationConfig

    newest = latest_version_dir(str(REPO / "outputs" / "fashion-mnist" / "serving_model"))
    model_dir = args.model_dir or (Path(newest) if newest else None)
    if model_dir is None or not (model_dir / "saved_model.pb").exists():
        print("no model to validate: run `make run` first, or pass --model-dir DIR", file=sys.stderr)
        return 2
    data_dir = args.data_dir or next(d for d in DATA_CANDIDATES if (d / "t10k-images-idx3-ubyte.gz").exists())
    settings = ServingValidationConfig()
    print(f"CPU: {cpu_model()}\nmodel {model_dir}; test split of {data_dir}; {settings.validation_requests} requests "
          f"per transport, {settings.warmup_requests} warmup requests", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="serving-validation-bench-") as scratch:
        examples, count = test_examples(data_dir, Path(scratch))
        for run in range(args.runs):
            work = Path(scratch) / f"run-{run}"
            result = validate_once(model_dir, examples, work, settings)
            if not result["blessed"]:
                print(f"run {run + 1}: not blessed: {result['reason']}", file=sys.stderr)
                return 1
            rows.append(result)
            print(f"run {run + 1}/{args.runs}: {result['seconds']:.1f} s", flush=True)
    print(f"\n{count:,} test images read; server: {rows[0]['server']}\n")
    columns = ("load_seconds", "requests", "p50_ms", "p99_ms", "grpc_p50_ms", "rest_p50_ms", "seconds")
    print("| run | to AVAILABLE s | requests | p50 ms | p99 ms | gRPC p50 ms | REST p50 ms | step total s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for index, row in enumerate(rows, 1):
        print(f"| {index} | " + " | ".join(f"{row[c]:g}" for c in columns) + " |")
    print("| **median** | " + " | ".join(f"{statistics.median(r[c] for r in rows):g}" for c in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
