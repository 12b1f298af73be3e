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
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import add_load_arguments, cpu_model, fmnist_servers, serving_benchmark  # noqa: E402

from fmnist import features  # noqa: E402
from fmnist.dataset import TEST, read_split  # noqa: E402

bench = serving_benchmark()

TRANSPORTS = ("grpc", "rest")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-base-path", type=Path, default=REPO / "outputs" / "fashion-mnist" / "serving_model",
                        help="a directory of numbered versions, or one version directory")
    add_load_arguments(parser)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="request-logging-bench-"))
    base = args.model_base_path
    if base.name.isdigit() and (base / "saved_model.pb").is_file():  # one version: serve it alone
        (work / "models").mkdir()
        (work / "models" / base.name).symlink_to(base.resolve())
        base = work / "models"
    images = read_split(args.data_dir, TEST).images.reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)
    flags = ["--model-base-path", str(base)]
    with fmnist_servers({"logging off": flags, "logging on": [*flags, "--log-requests", str(work / "logs"),
                                                              "--log-sampling", "1.0"]}) as servers:
        table = bench.interleaved(servers, TRANSPORTS, args.concurrency, args.seconds, args.repeats, images)
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
