"""Serving benchmark: the TF Serving-protocol server over gRPC and REST against a hand-rolled Flask
app that calls `model.predict` per request, at several concurrencies, in the same run.

    .venv/bin/python benchmarks/serving.py                       # the latest pushed model
    .venv/bin/python benchmarks/serving.py --seconds 5 --repeats 3 --concurrency 1 8 32

Each server runs in its own process; the load generator runs here, one thread per concurrent
client, each sending one image per request back to back. Every cell is measured `--repeats`
times (targets interleaved) and the table shows medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import free_port  # noqa: E402

from fmnist import features  # noqa: E402
from fmnist.dataset import TEST, read_split  # noqa: E402
from serving.protocol import protos  # noqa: E402

MODEL = features.MODEL_NAME
TARGETS = ("grpc", "rest", "flask")
NAMES = {"grpc": "gRPC (this server)", "rest": "REST (this server)", "flask": "Flask + model.predict"}




def wait_until_ready(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready ({url})")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s")


def start_servers(model_base_path: Path, version_dir: Path) -> tuple[dict, list[subprocess.Popen]]:
    rest, grpc_port, flask = free_port(), free_port(), free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    serving = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--model-base-path", str(model_base_path),
                                "--host", "127.0.0.1", "--rest-port", str(rest), "--grpc-port", str(grpc_port),
                                "--tf-serving", "no"], cwd=REPO, **quiet)
    baseline = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "flask_baseline.py"),
                                 "--model-dir", str(version_dir), "--port", str(flask)], cwd=REPO, **quiet)
    wait_until_ready(f"http://127.0.0.1:{rest}/v1/models/{MODEL}", serving)
    wait_until_ready(f"http://127.0.0.1:{flask}/health", baseline)
    return {"rest": rest, "grpc": grpc_port, "flask": flask}, [serving, baseline]


def make_sender(target: str, ports: dict, image: np.ndarray):
    """A per-thread callable that sends one request and raises on any error."""
    if target == "grpc":
        import grpc

        pb = protos.load()
        stub = pb.prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}"))
        request = pb.predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        tensor = request.inputs[features.IMAGES_INPUT]
        tensor.dtype = pb.types_pb2.DT_FLOAT
        tensor.tensor_shape.dim.extend([tensor.tensor_shape.Dim(size=s) for s in (1, *features.IMAGE_SHAPE)])
        tensor.tensor_content = image.astype("<f4").tobytes()
        request.output_filter.append("probabilities")
        return lambda: stub.Predict(request, timeout=30)

    import httpx

    client = httpx.Client(timeout=30)
    body = json.dumps({"instances": image[np.newaxis].tolist()}).encode()
    url = (f"http://127.0.0.1:{ports['rest']}/v1/models/{MODEL}:predict" if target == "rest"
           else f"http://127.0.0.1:{ports['flask']}/predict")

    def send():
        response = client.post(url, content=body, headers={"content-type": "application/json"})
        response.raise_for_status()
    return send


@dataclass
class Cell:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def measure(target: str, concurrency: int, seconds: float, ports: dict, images: np.ndarray) -> Cell:
    senders = [make_sender(target, ports, images[i % len(images)]) for i in range(concurrency)]
    for send in senders:  # warm connections and the server's code paths
        send()
    latencies: list[list[float]] = [[] for _ in senders]
    errors = [0] * concurrency
    start = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def run(index: int) -> None:
        send, mine = senders[index], latencies[index]
        start.wait()
        while True:
            began = time.perf_counter()
            if began >= stop_at[0]:
                return
            try:
                send()
            except Exception:
                errors[index] += 1
                continue
            mine.append(time.perf_counter() - began)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    flat = np.concatenate([np.asarray(x) for x in latencies]) if any(latencies) else np.zeros(1)
    return Cell(len(flat) / elapsed, float(np.percentile(flat, 50) * 1000), float(np.percentile(flat, 99) * 1000),
                sum(errors))


def median_cell(cells: list[Cell]) -> Cell:
    return Cell(*(statistics.median(getattr(c, f) for c in cells)
                  for f in ("requests_per_second", "p50_ms", "p99_ms", "errors")))


def interleaved(servers: dict, transports: tuple[str, ...], concurrency: int, seconds: float, repeats: int,
                images: np.ndarray, pause: float = 0.0) -> dict[tuple[str, object], Cell]:
    """{(transport, server key): median Cell} for `servers` ({key: ports}, all running at once),
    measured `repeats` times with the servers interleaved (a, b, a, b...) so that drift in the
    machine's load hits them alike, `pause` seconds after each cell; a progress line per cell."""
    cells: dict[tuple[str, object], list[Cell]] = {}
    for repeat in range(repeats):
        for transport in transports:
            for key, ports in servers.items():
                cell = measure(transport, concurrency, seconds, ports, images)
                cells.setdefault((transport, key), []).append(cell)
                print(f"  [{repeat + 1}/{repeats}] {transport:4s} {key} {cell.requests_per_second:7.0f} req/s  "
                      f"p50 {cell.p50_ms:6.2f} ms", flush=True)
                time.sleep(pause)
    return {key: median_cell(found) for key, found in cells.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-base-path", type=Path, default=REPO / "outputs" / "fashion-mnist" / "serving_model")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "sample",
                        help="where the request images come from")
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args(argv)

    versions = sorted((d for d in args.model_base_path.glob("[0-9]*") if d.is_dir()), key=lambda d: int(d.name))
    if not versions:
        print(f"no pushed model under {args.model_base_path}: run `make run` first", file=sys.stderr)
        return 2
    images = read_split(args.data_dir, TEST).images.reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)
    ports, processes = start_servers(args.model_base_path, versions[-1])
    results: dict[tuple[str, int], list[Cell]] = {}
    try:
        for repeat in range(args.repeats):
            for concurrency in args.concurrency:
                for target in TARGETS:
                    cell = measure(target, concurrency, args.seconds, ports, images)
                    results.setdefault((target, concurrency), []).append(cell)
                    print(f"  [{repeat + 1}/{args.repeats}] {target:5s} c={concurrency:<3d} "
                          f"{cell.requests_per_second:8.0f} req/s  p50 {cell.p50_ms:6.2f} ms", flush=True)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)

    table = {key: median_cell(cells) for key, cells in results.items()}
    print(f"\nmodel {versions[-1]}, {os.cpu_count()} CPUs, {args.seconds:g} s per cell, "
          f"median of {args.repeats}\n")
    print("| server | concurrency | req/s | p50 ms | p99 ms | errors | vs Flask (req/s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for concurrency in args.concurrency:
        flask = table[("flask", concurrency)].requests_per_second
        for target in TARGETS:
            cell = table[(target, concurrency)]
            print(f"| {NAMES[target]} | {concurrency} | {cell.requests_per_second:.0f} | {cell.p50_ms:.2f} "
                  f"| {cell.p99_ms:.2f} | {cell.errors:.0f} | {cell.requests_per_second / flask:.1f}x |")
    if 8 in args.concurrency:
        flask8 = table[("flask", 8)].requests_per_second
        print(f"\nat concurrency 8: gRPC {table[('grpc', 8)].requests_per_second / flask8:.1f}x, "
              f"REST {table[('rest', 8)].requests_per_second / flask8:.1f}x the Flask baseline's throughput "
              "(target: gRPC >= 10x)")
    if 1 in args.concurrency:
        print(f"gRPC p50 at concurrency 1: {table[('grpc', 1)].p50_ms:.2f} ms (target: <= 3 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
