"""Canary release under load: `fmnist release` moves the version labels of a running `fmnist serve`
while client threads send it requests without version or label, and nothing may fail.

    .venv/bin/python benchmarks/release_under_load.py                  # the latest pushed model
    .venv/bin/python benchmarks/release_under_load.py --model-dir DIR --threads 4 --seconds 4

The model (the newest version under outputs/fashion-mnist/serving_model, or --model-dir) is copied
as versions 1, 2 and 3 into a temporary base path; `fmnist release canary 1` writes the config
(stable 1). The server runs in its own process with --canary-traffic (default 25 %). Then, one
phase each, `--seconds` apart: canary 2 -> promote -> canary 3 -> rollback, each through the
`fmnist release` code path. Half the threads use REST, half gRPC, one image per request back to
back. A request belongs to the phase during which it started; "switched" is how long after the
command the server answered the new labels (REST status by label, polled every 20 ms), and the
canary share counts the requests that started after that.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import cpu_model, free_port  # noqa: E402

from fmnist import features  # noqa: E402
from fmnist.dataset import TEST, read_split  # noqa: E402

MODEL = features.MODEL_NAME
PUSHED = REPO / "outputs" / "fashion-mnist" / "serving_model"
STABLE, CANARY = features.STABLE_LABEL, features.CANARY_LABEL
# (phase, `fmnist release` arguments, the labels the server serves once it has switched)
PHASES = [("stable 1", None, {STABLE: 1, CANARY: None}),
          ("canary 2", ["canary", "2"], {STABLE: 1, CANARY: 2}),
          ("promote 2", ["promote"], {STABLE: 2, CANARY: None}),
          ("canary 3", ["canary", "3"], {STABLE: 2, CANARY: 3}),
          ("rollback 3", ["rollback"], {STABLE: 2, CANARY: None})]




def newest_version(base: Path) -> Path | None:
    versions = [d for d in base.glob("[0-9]*") if d.is_dir() and (d / "saved_model.pb").is_file()]
    return max(versions, key=lambda d: int(d.name), default=None)


def release(config: Path, *argv: str) -> None:
    """`fmnist release ARGV --model-config-file CONFIG`, in this process, quiet unless it fails."""
    from cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["release", *argv, "--model-config-file", str(config)])
    if code != 0:
        raise RuntimeError(f"fmnist release {' '.join(argv)}: {err.getvalue().strip()}")


class Load:
    """`threads` client threads (odd ones gRPC, even ones REST) sending one image per request,
    without version or label, back to back from `with` until its end. `records` holds (start,
    latency s, the version that answered or None for any failure) per request."""

    def __init__(self, rest_port: int, grpc_port: int, images: np.ndarray, threads: int = 4):
        self.rest_port, self.grpc_port, self.images = rest_port, grpc_port, images
        self.records: list[tuple[float, float, int | None]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(i, threads), daemon=True) for i in range(threads)]

    def _send(self, index: int, stride: int) -> None:
        from serving.client.clients import GrpcClient, RestClient

        client = (GrpcClient(f"127.0.0.1:{self.grpc_port}", MODEL) if index % 2
                  else RestClient(f"127.0.0.1:{self.rest_port}", MODEL))
        i = index
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                version = client.predict(self.images[i % len(self.images)][None]).version
            except Exception as err:  # any failure counts: that is what the load is for
                version = None
                self.errors.append(repr(err))
            self.records.append((began, time.monotonic() - began, version))
            i += stride

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


@contextlib.contextmanager
def running_server(config: Path, canary_traffic: float, *serve_args: str) -> Iterator[tuple[int, int]]:
    """start_server for the `with` block: (REST port, gRPC port); terminated at its end."""
    process, rest, grpc_port = start_server(config, canary_traffic, *serve_args)
    try:
        yield rest, grpc_port
    finally:
        process.terminate()
        process.wait(timeout=30)


def start_server(config: Path, canary_traffic: float, *serve_args: str) -> tuple[subprocess.Popen, int, int]:
    """`fmnist serve` on `config` in its own process (more flags in serve_args), once it answers:
    (the process, its REST port, its gRPC port)."""
    from serving.client.clients import ClientError, RestClient

    rest, grpc_port = free_port(), free_port()
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--model-config-file", str(config),
                                "--canary-traffic", str(canary_traffic), "--host", "127.0.0.1",
                                "--rest-port", str(rest), "--grpc-port", str(grpc_port), "--poll-seconds", "0.5",
                                "--tf-serving", "no", *serve_args], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    client, deadline = RestClient(f"127.0.0.1:{rest}", MODEL, timeout=2), time.monotonic() + 180
    while True:
        try:
            client.status()
            return process, rest, grpc_port
        except ClientError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the server did not come up") from None
            time.sleep(0.3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=None,
                        help=f"a SavedModel version directory (default: the newest under {PUSHED})")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "sample", help="request images")
    parser.add_argument("--threads", type=int, default=4, help="client threads, half REST, half gRPC")
    parser.add_argument("--seconds", type=float, default=4.0, help="per phase")
    parser.add_argument("--canary-traffic", type=float, default=25.0, help="fmnist serve --canary-traffic")
    args = parser.parse_args(argv)

    from serving.release.labels import served_labels

    model_dir = args.model_dir or newest_version(PUSHED)
    if model_dir is None or not (model_dir / "saved_model.pb").is_file():
        print(f"no SavedModel at {model_dir or PUSHED}: run `make run` first, or pass --model-dir", file=sys.stderr)
        return 2
    images = read_split(args.data_dir, TEST).images.reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)
    work = Path(tempfile.mkdtemp(prefix="release-bench-"))
    config = work / "models.config"
    for version in (1, 2, 3):
        shutil.copytree(model_dir, work / "serving_model" / str(version))
    release(config, "canary", "1")  # no stable yet: 1 becomes stable
    marks: list[tuple[str, float, float]] = []  # (phase, command time, seconds until the server switched)
    try:
        with (running_server(config, args.canary_traffic) as (rest, grpc_port),
              Load(rest, grpc_port, images, args.threads) as load):
            time.sleep(1.0)  # connections warm before the first phase counts
            for name, command, labels in PHASES:
                began = time.monotonic()
                if command:
                    release(config, *command)
                while served_labels(f"127.0.0.1:{rest}") != labels:
                    if time.monotonic() - began > 60:
                        raise RuntimeError(f"{name}: the server did not switch to {labels} in 60 s")
                    time.sleep(0.02)
                marks.append((name, began, time.monotonic() - began))
                time.sleep(max(0.0, args.seconds - (time.monotonic() - began)))
            end = time.monotonic()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    records = load.records

    print(f"\nmodel {model_dir}, {args.threads} client threads (REST + gRPC), {args.seconds:g} s per phase, "
          f"--canary-traffic {args.canary_traffic:g}\n{cpu_model()}\n")
    print("| phase | switched after s | requests | errors | versions seen | canary share once switched "
          "| p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    bounds = [began for _, began, _ in marks] + [end]
    for (name, began, switched), until, (_, _, labels) in zip(marks, bounds[1:], PHASES, strict=True):
        mine = [(latency, version) for start, latency, version in records if began <= start < until]
        switched_at = began + switched
        after = [version for start, _, version in records if switched_at <= start < until]
        share = (f"{after.count(labels[CANARY]) / len(after):.1%}" if labels[CANARY] is not None and after
                 else "-")
        latencies = np.asarray([latency for latency, _ in mine]) * 1000
        versions = Counter(version for _, version in mine if version is not None)
        seen = ", ".join(f"v{v}: {n}" for v, n in sorted(versions.items()))
        errors = sum(version is None for _, version in mine)
        print(f"| {name} | {switched:.2f} | {len(mine)} | {errors} | {seen} | {share} "
              f"| {np.percentile(latencies, 50):.2f} | {np.percentile(latencies, 99):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
