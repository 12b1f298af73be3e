"""`fmnist monitor` on real traffic: the time to check a window of 10,000 logged requests (median
of 3, reading the request log files included), and which windows alert: normal windows of the
official test split against synthetic shifts (inverted, darker/brighter, three classes only,
blank images), each scored for skew (image), class prior (label) and drift from the window
before. Predictions come from a pushed model run in this process, logged as `fmnist serve
--log-requests` writes them.

    .venv/bin/python benchmarks/monitoring.py [--model DIR] [--training-statistics FeatureStats.pb]
        [--data-dir DIR] [--windows 10] [--window-size 1000]

Defaults: the newest version under /tmp/fmnist-loop/fashion-mnist/serving_model and the training
statistics ML Metadata records for it (/tmp/fmnist-loop/fashion-mnist/metadata.sqlite).
"""

from __future__ import annotations

import argparse
import statistics as stats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import cpu_model

# This script's folder is sys.path[0] and holds this file, monitoring.py, which would shadow the
# package of that name: the folder leaves sys.path once common is imported.
sys.path.pop(0)
from fmnist import tf_env

LOOP = Path("/tmp/fmnist-loop/fashion-mnist")


def predict(model_dir: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    import tensorflow as tf

    from fmnist import features

    signature = tf.saved_model.load(str(model_dir)).signatures[features.SERVING_DEFAULT]
    outputs = [signature(**{features.IMAGES_INPUT: tf.constant(images[i:i + 500])}) for i in range(0, len(images), 500)]
    return {name: np.concatenate([o[name].numpy() for o in outputs])
            for name in (features.PROBABILITIES_OUTPUT, features.CLASS_ID_OUTPUT)}


def prediction_logs(images: np.ndarray, outputs: dict[str, np.ndarray], version: int, start: float,
                    batch: int = 1) -> list:
    """PredictionLogs of Predict calls of `batch` images each, one second apart from `start`."""
    from fmnist import features
    from serving.server.request_log import PREDICT, _Entry, to_prediction_log

    return [to_prediction_log(_Entry(PREDICT, features.MODEL_NAME, version, features.SERVING_DEFAULT,
                                     {features.IMAGES_INPUT: images[i:i + batch]},
                                     {name: value[i:i + batch] for name, value in outputs.items()}, start + i))
            for i in range(0, len(images), batch)]


def write_logs(directory: Path, logs: list) -> None:
    import tensorflow as tf

    from serving.server.request_log import PREFIX, SUFFIX

    directory.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(directory / f"{PREFIX}19700101T000000.000000Z-000001{SUFFIX}")) as writer:
        for logged in logs:
            writer.write(logged.SerializeToString())


def shifts(images: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Synthetic shifted windows of `size` images (float32 grey levels [N, 28, 28])."""
    pick = rng.choice(len(images), size, replace=False)
    three = rng.choice(np.flatnonzero(np.isin(labels, (0, 1, 2))), size, replace=False)
    base = images[pick]
    return {
        "inverted 255-x": 255 - base,
        "darker x*0.6+60": base * 0.6 + 60,
        "brighter x*1.3": np.clip(base * 1.3, 0, 255),
        "3 classes only": images[three],
        "blank images": np.zeros_like(base),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    versions = sorted((LOOP / "serving_model").glob("[0-9]*")) if (LOOP / "serving_model").is_dir() else []
    parser.add_argument("--model", type=Path, default=versions[-1] if versions else None)
    parser.add_argument("--training-statistics", type=Path, default=None)
    parser.add_argument("--metadata", type=Path, default=LOOP / "metadata.sqlite")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/fashion-mnist"))
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--window-size", type=int, default=1000)
    parser.add_argument("--timed-requests", type=int, default=10_000)
    args = parser.parse_args()
    if args.model is None:
        parser.error("no pushed model found: pass --model")
    tf_env.configure()
    import tensorflow_data_validation as tfdv

    from fmnist import dataset, features
    from monitoring import job
    from monitoring.checks import CLASS_PRIOR, DRIFT, SKEW, check_window
    from monitoring.examples import served_examples
    from monitoring.statistics import window_statistics
    from monitoring.training_stats import training_statistics
    from serving.server.request_log import read_request_logs
    from tfx_pipeline.config import SCHEMA_DIR, SCHEMA_FILE

    version = int(args.model.name) if args.model.name.isdigit() else 1
    schema = tfdv.load_schema_text(f"{SCHEMA_DIR}/{SCHEMA_FILE}")
    training, source = training_statistics(version, str(args.metadata), None, args.training_statistics)
    test = dataset.read_split(str(args.data_dir), dataset.TEST)
    images = test.images.reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)
    rng = np.random.default_rng(0)
    print(cpu_model())
    print(f"model {args.model} (version {version}); training statistics {source}")

    # -- time: one job run over N logged requests (one image each), read from a request log file --
    timed = images[rng.choice(len(images), args.timed_requests, replace=len(images) < args.timed_requests)]
    outputs = predict(args.model, timed)
    seconds = []
    with tempfile.TemporaryDirectory() as work:
        write_logs(Path(work) / "logs", prediction_logs(timed, outputs, version, 1_000_000.0))
        for attempt in range(3):
            began = time.perf_counter()
            job.run_window(read_request_logs(f"{work}/logs"), None, 2e9, f"{work}/state-{attempt}", schema,
                           lambda _: (training, source))
            seconds.append(time.perf_counter() - began)
    print(f"monitoring job, {args.timed_requests:,} logged requests: median {stats.median(seconds):.2f} s "
          f"(runs {', '.join(f'{s:.2f}' for s in seconds)})")

    # -- alert table ----------------------------------------------------------------------------
    def window(batch: np.ndarray):
        logs = prediction_logs(batch, predict(args.model, batch), version, 1_000_000.0, batch=100)
        return window_statistics(served_examples(logs), schema)

    order = rng.permutation(len(images))
    rows, previous = [], None
    for number in range(args.windows):
        current = window(images[order[number * args.window_size:(number + 1) * args.window_size]])
        rows.append((f"normal window {number + 1}", True, check_window(current, training, schema, previous)))
        previous = current
    for name, shifted in shifts(images, test.labels, args.window_size, rng).items():
        rows.append((name, False, check_window(window(shifted.astype(np.float32)), training, schema, previous)))

    def score(result, check, feature):
        found = result.score(check, feature)
        return f"{found.distance.value:.4f}" if found else "-"

    header = f"{'window (' + str(args.window_size) + ' images)':<24} {'skew image':>10} {'class prior':>11} " \
             f"{'drift image':>11} {'drift label':>11}  alert"
    print(header)
    print("-" * len(header))
    for name, _, result in rows:
        print(f"{name:<24} {score(result, SKEW, 'image'):>10} {score(result, CLASS_PRIOR, 'label'):>11} "
              f"{score(result, DRIFT, 'image'):>11} {score(result, DRIFT, 'label'):>11}  "
              f"{'YES' if result.alert else 'no'}")
    thresholds = {f"{s.check} {s.distance.feature}": s.distance.threshold for _, _, r in rows for s in r.scores}
    print("thresholds: " + ", ".join(f"{k} {v:g}" for k, v in sorted(thresholds.items())))
    false_alarms = sum(result.alert for _, normal, result in rows if normal)
    missed = sum(not result.alert for _, normal, result in rows if not normal)
    print(f"false alarms: {false_alarms} of {args.windows} normal windows; missed shifts: {missed} of "
          f"{len(rows) - args.windows}")


if __name__ == "__main__":
    main()
