"""Shadow traffic overhead: `fmnist serve` with `--shadow-traffic` off and on, same model, same
run: what clients of `stable` pay while a share of their requests runs again on the canary.

    .venv/bin/python benchmarks/shadow_traffic.py --model-dir outputs/fashion-mnist/serving_model/VERSION

The model is copied as versions 1 (stable) and 2 (canary) under one release config; one server
per `--shadow` share (default 0 and 100 %) runs in its own process, all at once. Cells are
interleaved (0, 100, 0, 100...) with a second's pause between them, so the shadow thread's
backlog from one cell does not fall into the next one's; each is the median of `--repeats`.
The load generator and the cell arithmetic are benchmarks/serving.py's. The last columns are the
on-server's own counters: shadow requests run on the canary and dropped (queue full).
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


def shadow_counts(ports: dict) -> tuple[int, int]:
    """(shadow requests run, shadow requests dropped) the server counted since it started."""
    from serving.protocol import names
    from serving.release.canary_analysis import read_metrics

    snapshot = read_metrics(f"127.0.0.1:{ports['rest']}")
    return int(snapshot.total(names.SHADOW_REQUESTS)), int(snapshot.total(names.SHADOW_DROPPED))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="one SavedModel version directory")
    parser.add_argument("--shadow", type=float, nargs="+", default=[0.0, 100.0], help="percent, one server each")
    add_load_arguments(parser)
    args = parser.parse_args(argv)

    from serving.release.labels import FileRelease

    work = Path(tempfile.mkdtemp(prefix="shadow-bench-"))
    for version in ("1", "2"):
        shutil.copytree(args.model_dir, work / "serving_model" / version)
        FileRelease(str(work / "models.config")).start_canary(version)
    images = read_split(args.data_dir, TEST).images.reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)
    try:
        with fmnist_servers({f"shadow {share:g} %": ["--model-config-file", str(work / "models.config"),
                                                     "--shadow-traffic", f"{share:g}"] for share in args.shadow},
                            ready_path="/labels/canary") as servers:
            # A second's pause after each cell: the shadow thread's backlog must not fall into the next.
            table = bench.interleaved(servers, TRANSPORTS, args.concurrency, args.seconds, args.repeats, images,
                                      pause=1.0)
            counts = {share: shadow_counts(servers[f"shadow {share:g} %"]) for share in args.shadow}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{cpu_model()}\nmodel {args.model_dir}, concurrency {args.concurrency}, {args.seconds:g} s per cell, "
          f"median of {args.repeats}; stable 1 and canary 2 are copies of it\n")
    print("| transport | shadow traffic | req/s | p50 ms | p99 ms | errors | req/s vs off | shadow run | dropped |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for transport in TRANSPORTS:
        off = table[(transport, f"shadow {args.shadow[0]:g} %")].requests_per_second
        for share in args.shadow:
            cell, (run, dropped) = table[(transport, f"shadow {share:g} %")], counts[share]
            print(f"| {transport} | {share:g} % | {cell.requests_per_second:.0f} | {cell.p50_ms:.2f} "
                  f"| {cell.p99_ms:.2f} | {cell.errors:.0f} | {cell.requests_per_second / off:.2f}x "
                  f"| {run} (all cells) | {dropped} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
