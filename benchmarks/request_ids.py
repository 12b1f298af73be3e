"""Request id overhead: `fmnist serve` with request ids on (the default) and `--no-request-ids`,
same model, same run: what an id per answer (X-Request-Id header, x-request-id gRPC trailing
metadata, a uuid4 each) costs the clients.

    .venv/bin/python benchmarks/request_ids.py --model-dir outputs/fashion-mnist/serving_model/VERSION

One server per setting runs in its own process, all at once, with the model as version 1 and no
request log (the ids' own cost, not the log's: benchmarks/request_logging.py measures that).
Cells are interleaved (off, on, off, on...) so drift in the machine's load hits both alike; each
is the median of `--repeats`. The load generator and the cell arithmetic are benchmarks/serving.py's;
clients send no id, so every answer's id is made by the server (the costlier case).
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
SETTINGS = {"ids off": "--no-request-ids", "ids on": "--request-ids"}  # off first: the baseline


def answered_id(ports: dict) -> str | None:
    """The X-Request-Id one :predict is answered with: proof of what each server is set to."""
    import httpx

    from fmnist import request_ids

    image = np.zeros((1, *features.IMAGE_SHAPE), np.float32).tolist()
    answer = httpx.post(f"http://127.0.0.1:{ports['rest']}/v1/models/{features.MODEL_NAME}:predict",
                        json={"instances": image}, timeout=30)
    return answer.headers.get(request_ids.HEADER)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="one SavedModel version directory")
    add_load_arguments(parser)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="request-ids-bench-"))
    shutil.copytree(args.model_dir, work / "serving_model" / "1")
    images = read_split(args.data_dir, TEST).images.reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)
    try:
        with fmnist_servers({name: ["--model-base-path", str(work / "serving_model"), flag]
                             for name, flag in SETTINGS.items()}) as servers:
            checks = {name: answered_id(ports) for name, ports in servers.items()}
            if checks["ids off"] is not None or checks["ids on"] is None:
                raise RuntimeError(f"the servers do not answer as set: {checks}")
            table = bench.interleaved(servers, TRANSPORTS, args.concurrency, args.seconds, args.repeats, images)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{cpu_model()}\nmodel {args.model_dir}, concurrency {args.concurrency}, {args.seconds:g} s per cell, "
          f"median of {args.repeats}, one image per request\n")
    print("| transport | request ids | req/s | p50 ms | p99 ms | errors | req/s vs off | p99 vs off |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for transport in TRANSPORTS:
        off = table[(transport, "ids off")]
        for name in SETTINGS:
            cell = table[(transport, name)]
            throughput = cell.requests_per_second / off.requests_per_second
            print(f"| {transport} | {name.split()[1]} | {cell.requests_per_second:.0f} | {cell.p50_ms:.2f} "
                  f"| {cell.p99_ms:.2f} | {cell.errors:.0f} | {throughput:.2f}x | {cell.p99_ms / off.p99_ms:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
