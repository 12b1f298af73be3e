"""Delayed labels at scale (issue #24): 100,000 logged Predict calls (one image each, PredictionLogs
with request ids, as `fmnist serve --log-requests` writes them, in 10,000-record files) and a
labels CSV for all of them; then, medians of --repeats, each in a fresh process:

- `fmnist feedback CSV --requests LOGDIR`: read the log's id index, check every row, store one file;
- the join monitoring uses (monitoring.labelled.join of the logs and the stored labels).

Prints a markdown table: seconds, records/s, peak RSS of the process, with the machine line.

    .venv/bin/python benchmarks/feedback_join.py [--requests 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

REPO = Path(__file__).resolve().parent.parent
# This script's folder (sys.path[0]) holds serving.py and monitoring.py, which would shadow the
# packages of those names: it leaves sys.path once common is imported, the repository takes its place.
sys.path[0] = str(REPO)
PER_FILE = 10_000
JOIN_SCRIPT = """
import sys, time
from fmnist import tf_env
tf_env.configure()
import tensorflow
from fmnist.feedback import read_labels
from monitoring.labelled import join
from serving.server.request_log import read_request_logs
started = time.perf_counter()
found = join(read_request_logs(sys.argv[1]), read_labels(sys.argv[1]))
print(len(found), time.perf_counter() - started)
"""


def write_logs(directory: Path, count: int) -> list[str]:
    """`count` logged one-image Predict calls of the sample's test images; returns their ids."""
    import numpy as np

    from fmnist import dataset, features, request_ids, tf_env
    tf_env.configure()
    from serving.server import request_log

    images = dataset.read_split(REPO / "data" / "sample", dataset.TEST).images.reshape(-1, *features.IMAGE_SHAPE)
    start, ids = time.time() - 86400, []
    for first in range(0, count, PER_FILE):
        batch = []
        for i in range(first, min(first + PER_FILE, count)):
            probabilities = np.full((1, features.NUM_CLASSES), 0.1, np.float32)
            entry = request_log._Entry(request_log.PREDICT, features.MODEL_NAME, 1, features.SERVING_DEFAULT,
                                       {features.IMAGES_INPUT: images[i % len(images)][np.newaxis].astype(np.float32)},
                                       {features.PROBABILITIES_OUTPUT: probabilities,
                                        features.CLASS_ID_OUTPUT: np.array([i % 10], np.int64)}, start + i * 0.5)
            logged = request_log.to_prediction_log(entry)
            ids.append(request_ids.new_id())
            request_ids.set_on_log(logged, ids[-1])
            batch.append(logged)
        request_log.write_log_file(str(directory), batch, opened=start + first * 0.5, sequence=first // PER_FILE + 1)
    return ids


def write_labels(path: Path, ids: list[str]) -> None:
    now = int(time.time())
    with open(path, "w") as out:
        out.write("request_id,label,time\n")
        out.writelines(f"{request_id},{i % 10},{now}\n" for i, request_id in enumerate(ids))


def measured(argv: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of a fresh process."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    out, err = child.stdout.read(), child.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[:4]} failed: {err.strip()[-500:]}")
    return wall, usage.ru_maxrss / 1024, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {common.cpu_model()}")
    work = Path(tempfile.mkdtemp(prefix="feedback-bench-"))
    try:
        logs, labels = work / "requests", work / "labels.csv"
        logs.mkdir()
        started = time.perf_counter()
        ids = write_logs(logs, args.requests)
        write_labels(labels, ids)
        size = sum(p.stat().st_size for p in logs.iterdir())
        print(f"setup: {args.requests:,} logged requests ({size / 2**20:.0f} MiB in {len(os.listdir(logs))} files) "
              f"and their labels written in {time.perf_counter() - started:.0f} s")
        rows = {"`fmnist feedback` (store, fresh process)": [], "join logs x labels (in process, TF loaded)": [],
                "join logs x labels (fresh process)": []}
        for _ in range(args.repeats):
            shutil.rmtree(logs / "feedback", ignore_errors=True)
            wall, rss, out = measured([sys.executable, "-m", "cli.main", "feedback", str(labels),
                                       "--requests", str(logs)])
            assert out.startswith(f"{args.requests:,} labels stored"), out
            rows["`fmnist feedback` (store, fresh process)"].append((wall, rss))
            wall, rss, out = measured([sys.executable, "-c", JOIN_SCRIPT, str(logs)])
            joined, inside = out.split()
            assert int(joined) == args.requests, out
            rows["join logs x labels (fresh process)"].append((wall, rss))
            rows["join logs x labels (in process, TF loaded)"].append((float(inside), rss))
        print(f"\n{args.requests:,} requests, medians of {args.repeats}\n")
        print("| step | seconds | records/s | peak RSS MiB |\n| --- | ---: | ---: | ---: |")
        for name, runs in rows.items():
            seconds = statistics.median(r[0] for r in runs)
            rss = statistics.median(r[1] for r in runs)
            print(f"| {name} | {seconds:.1f} | {args.requests / seconds:,.0f} | {rss:,.0f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
