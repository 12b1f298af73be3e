"""Request logging overhead: this project's server with `--log-requests` off and on (sampling 1.0,
every call written), same model, same run, gRPC and REST at one concurrency.

    .venv/bin/python benchmarks/request_logging.py --model-base-path /path/to/serving_model

Both servers run at once in their own processes; cells are interleaved (off, on, off, on...) so
drift in the machine's load hits both alike, and each is the median of `--repeats`. The load
generator and the cell arithmetic are benchmarks/serving.py's.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import cpu_model, free_port, serving_benchmark  # noqa: E402

from fmnist import features  # noqa: E402
from fmnist.dataset import TEST, read_split  # noqa: E402

bench = serving_benchmark()

TRANSPORTS = ("grpc", "rest")


def start_server(model_base_path: Path, log_dir: Path | None) -> tuple[dict, subprocess.Popen]:
    ports = {"rest": free_port(), "grpc": free_port()}
    command = [sys.executable, "-m", "cli.main", "serve", "--model-base-path", str(model_base_path),
               "--host", "127.0.0.1", "--rest-port", str(ports["rest"]), "--grpc-port", str(ports["grpc"]),
               "--tf-serving", "no"]
    if log_dir is not None:
        command += ["--log-requests", str(log_dir), "--log-sampling", "1.0"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.wait_until_ready(f"http://127.0.0.1:{ports['rest']}/v1/models/{features.MODEL_NAME}", process)
    return ports, process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-base-path", type=Path, default=REPO / "outputs" / "fashion-mnist" / "serving_model",
                        help="a directory of numbered versions, or one version directory")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "sample")
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="request-logging-bench-"))
    base = args.model_base_path
    if base.name.isdigit() and (base / "saved_model.pb").is_file():  # one version: serve it alone
        (work / "models").mkdir()
        (work / "models" / base.name).symlink_to(base.resolve())
        base = work / "models"
    images = read_split(args.data_dir, TEST).images.reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)
    servers = {"off": start_server(base, None), "on": start_server(base, work / "logs")}
    try:
        table = bench.interleaved({f"logging {state}": ports for state, (ports, _) in servers.items()}, TRANSPORTS,
                                  args.concurrency, args.seconds, args.repeats, images)
    finally:
        for _, process in servers.values():
            process.terminate()
            process.wait(timeout=60)
    logged = sum(1 for _ in (work / "logs").glob("requests-*.tfrecord"))
    size = sum(p.stat().st_size for p in (work / "logs").glob("requests-*"))
    shutil.rmtree(work, ignore_errors=True)

    print(f"\n{cpu_model()}\nmodel {args.model_base_path}, concurrency {args.concurrency}, "
          f"{args.seconds:g} s per cell, median of {args.repeats}; logging on wrote {logged} file(s), "
          f"{size / 1e6:.1f} MB\n")
    print("| transport | request logging | req/s | p50 ms | p99 ms | errors | req/s vs off |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for transport in TRANSPORTS:
        off = table[(transport, "logging off")].requests_per_second
        for logging_state in ("off", "on"):
            cell = table[(transport, f"logging {logging_state}")]
            print(f"| {transport} | {logging_state} | {cell.requests_per_second:.0f} | {cell.p50_ms:.2f} "
                  f"| {cell.p99_ms:.2f} | {cell.errors:.0f} | {cell.requests_per_second / off:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
