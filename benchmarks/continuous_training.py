"""Continuous-training benchmark: the loop on the full data, then a cold retrain to compare with.

The official train split becomes spans 1-3 (20,000 images each, in file order), then span 4 is
span 3 without one class (label drift). Each span runs the local pipeline once, as `fmnist watch`
would; a server on the push directory answers after each. Last, span 3 is retrained cold (no warm
start) on the same window, the baseline for the warm start's time and accuracy.

    .venv/bin/python benchmarks/continuous_training.py [--data-dir ../shared/data/fashion-mnist]
        [--output-dir /tmp/fmnist-loop]

Prints the CPU, one row per span (examples, drift distances vs thresholds, cold/warm, spans
trained on, training seconds, eval and test accuracy, blessed, pushed version, the version the
server answered with afterwards) and the warm/cold comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from fmnist import tf_env

tf_env.configure()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import cpu_model  # noqa: E402

import local_runner  # noqa: E402
from fmnist import dataset, features, landing  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SPANS = 3
MISSING_CLASS = 3  # Dress


def write_source(directory: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    dataset.write_idx_split(directory, dataset.TRAIN, images, labels)
    return directory


def span_sources(data_dir: Path, work: Path) -> list[Path]:
    train = dataset.read_split(data_dir, dataset.TRAIN)
    parts = np.array_split(np.arange(len(train)), SPANS)
    sources = [write_source(work / f"source-{i + 1}", train.images[p], train.labels[p]) for i, p in enumerate(parts)]
    kept = parts[-1][train.labels[parts[-1]] != MISSING_CLASS]
    sources.append(write_source(work / "source-drifted", train.images[kept], train.labels[kept]))
    return sources


def served_version(port: int | None, image: np.ndarray) -> str:
    if port is None:
        return "-"
    from serving.client.clients import GrpcClient

    return str(GrpcClient(f"127.0.0.1:{port}", features.MODEL_NAME).predict(image).version)


def run_span(config, label: str, server_port: int | None, image: np.ndarray) -> dict:
    from reports.spans import span_run

    started = time.perf_counter()
    stopped = local_runner.run_quietly(config, verbose=False)
    summary = span_run(config.metadata_path, config.pipeline_name)
    print(summary.line(stopped), flush=True)
    return {"label": label, "summary": summary, "stopped": stopped, "wall": time.perf_counter() - started,
            "served": served_version(server_port, image)}


def table(rows: list[dict]) -> str:
    header = ("| span | examples | drift (value / threshold) | start | trained on | train s | run s | eval acc | "
              "test acc | blessed | pushed | served after |")
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for row in rows:
        s = row["summary"]
        drift = ("; ".join(f"{d.feature} {d.measure} {d.value:.4f} / {d.threshold:g}" for d in s.distances)
                 or ("first span" if not row["stopped"] else row["stopped"].split(": ", 1)[-1]))
        start = "-" if row["stopped"] else ("warm" if s.warm_start_from else "cold")
        trained = "+".join(map(str, s.trained_spans or [])) or "-"

        def number(value, fmt):
            return format(value, fmt) if value is not None else "-"

        blessed = "stopped" if row["stopped"] else {True: "yes", False: "no", None: "-"}[s.blessed]
        lines.append(f"| {row['label']} | {number(s.examples, ',')} | {drift} | {start} | {trained} | "
                     f"{number(s.train_seconds, '.0f')} | {row['wall']:.0f} | {number(s.eval_accuracy, '.4f')} | "
                     f"{number(s.test_accuracy, '.4f')} | {blessed} | {s.pushed_version or '-'} | {row['served']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "fashion-mnist")
    parser.add_argument("--output-dir", type=Path, default=Path("/tmp/fmnist-loop"))
    args, runner_flags = parser.parse_known_args(argv)  # the rest: local_runner flags (e.g. --sample)
    work = args.output_dir.resolve()
    config = local_runner.config_from_args(["--data-dir", str(args.data_dir), "--output-dir", str(work),
                                            "--landing-dir", str(work / "landing"), *runner_flags], environ={})
    print(f"CPU: {cpu_model()}\nspans of {args.data_dir} under {work}", flush=True)
    image = dataset.read_split(args.data_dir, dataset.TEST).images[:1].reshape(1, *features.IMAGE_SHAPE)
    image = image.astype(np.float32)

    from serving.server.process import RunningServer, ServerOptions

    server = None
    rows = []
    try:
        for number, source in enumerate(span_sources(args.data_dir, work / "sources"), start=1):
            landing.land(source, Path(config.landing_root))
            label = str(number) if number <= SPANS else f"{number} (class {MISSING_CLASS} missing)"
            rows.append(run_span(config.replace(span=number), label, server.grpc_port if server else None, image))
            if server is None and Path(config.serving_model_dir).is_dir():
                server = RunningServer(ServerOptions(base_path=config.serving_model_dir, rest_port=0, grpc_port=0,
                                                     host="127.0.0.1", poll_seconds=0.5)).start()
                time.sleep(2)
                rows[-1]["served"] = served_version(server.grpc_port, image)
            elif server is not None:
                time.sleep(2)  # one poll of the push directory
                rows[-1]["served"] = served_version(server.grpc_port, image)
        cold = config.replace(span=SPANS, training=dataclasses.replace(config.training, warm_start=False))
        # Not asked for its version: the comparison's push is not part of the loop.
        rows.append(run_span(cold, f"{SPANS} cold (comparison)", None, image))
    finally:
        if server is not None:
            server.stop()
    print()
    print(table(rows))
    warm = next(r["summary"] for r in rows if r["label"] == str(SPANS))
    baseline = rows[-1]["summary"]
    if warm.train_seconds and baseline.train_seconds:
        print(f"\nwarm start on spans {'+'.join(map(str, warm.trained_spans))}: {warm.train_seconds:.0f}s "
              f"= {warm.train_seconds / baseline.train_seconds:.2f} of the cold {baseline.train_seconds:.0f}s; "
              f"test accuracy {warm.test_accuracy:.4f} vs cold {baseline.test_accuracy:.4f} "
              f"({100 * (warm.test_accuracy - baseline.test_accuracy):+.2f} pt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
