"""Warmup benchmark: latency of the first requests after a version becomes AVAILABLE, with and
without a TF Serving warmup file (assets.extra/tf_serving_warmup_requests), median of N loads.

    .venv/bin/python benchmarks/warmup.py                        # the latest pushed model
    .venv/bin/python benchmarks/warmup.py --model-dir DIR --loads 5 --warmup-requests 64

Every load is a fresh `fmnist serve --tf-serving no` process (TF keeps per-process state, so an
in-process reload would be warm already), alternating without and with warmup. The "with" copy
gets `--warmup-requests` requests built from real test images (tfx_pipeline.serving_validation.
requests, the writer the pipeline uses), replacing any warmup file the model ships; the "without"
copy has none. Per load: seconds from process start to the version's AVAILABLE status (interpreter
and TF import included, the same for both), the warmup replay time the server reports, the first
REST Predict (one image) and the first REST Classify (one tf.Example), then the median of
`--steady` more of each as the steady-state baseline. Requests reuse the connection that polled
the status, so no TCP set-up is timed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import cpu_model, free_port  # noqa: E402

from fmnist import features, tf_env  # noqa: E402
from fmnist.dataset import TEST, read_split  # noqa: E402

MODEL = features.MODEL_NAME
# The full official files beside the checkout (CI) or where `make run` fetched them, else the sample.
DATA_CANDIDATES = [REPO.parent / "shared" / "data" / "fashion-mnist", REPO / "data" / "raw", REPO / "data" / "sample"]
VARIANTS = ("without", "with")




def default_model_dir() -> Path | None:
    base = REPO / "outputs" / "fashion-mnist" / "serving_model"
    versions = sorted((d for d in base.glob("[0-9]*") if d.is_dir()), key=lambda d: int(d.name))
    return versions[-1] if versions else None


def prepare(model_dir: Path, work: Path, warmup_images: np.ndarray | None, count: int) -> Path:
    """A base path holding the model as version 1, with `count` warmup requests or none."""
    version = work / "1"
    shutil.copytree(model_dir, version)
    (version / features.WARMUP_FILE).unlink(missing_ok=True)
    if warmup_images is not None:
        from tfx_pipeline.serving_validation import requests

        requests.write_warmup_file(str(version), requests.build_requests(warmup_images, count))
    return work


@dataclass
class Load:
    available_s: float
    warmup_ms: float
    first_predict_ms: float
    first_classify_ms: float
    steady_predict_ms: float
    steady_classify_ms: float


def _timed(send) -> float:
    began = time.perf_counter()
    response = send()
    elapsed = (time.perf_counter() - began) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url}: HTTP {response.status_code}: {response.text[:200]}")
    return elapsed


def _warmup_seconds(client, url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(client.get(url).text):
        for sample in family.samples:
            if sample.name == "fmnist_serving_warmup_seconds" and sample.labels.get("model") == MODEL:
                return sample.value
    return 0.0  # a server without warmup metrics


def measure_load(base_path: Path, image: np.ndarray, steady: int, log_path: Path, timeout: float = 300) -> Load:
    import httpx

    rest, grpc_port = free_port(), free_port()
    began = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--tf-serving", "no",
                                    "--host", "127.0.0.1", "--rest-port", str(rest), "--grpc-port", str(grpc_port),
                                    "--model-base-path", str(base_path)],
                                   cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        root = f"http://127.0.0.1:{rest}"
        with httpx.Client(base_url=root, timeout=60) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited with {process.returncode}; its log: {log_path}")
                if time.perf_counter() - began > timeout:
                    raise TimeoutError(f"version 1 not AVAILABLE after {timeout:.0f} s; server log: {log_path}")
                try:
                    status = client.get(f"/v1/models/{MODEL}").json()["model_version_status"]
                    if any(s["state"] == "AVAILABLE" for s in status):
                        break
                except httpx.TransportError:
                    pass  # not listening yet: the first load runs before the ports open
                time.sleep(0.02)
            available = time.perf_counter() - began
            predict = {"instances": image[np.newaxis].tolist()}
            classify = {"examples": [{features.IMAGE_KEY: np.rint(image).astype(int).reshape(-1).tolist()}]}

            def send_predict():
                return client.post(f"/v1/models/{MODEL}:predict", json=predict)

            def send_classify():
                return client.post(f"/v1/models/{MODEL}:classify", json=classify)

            first_predict, first_classify = _timed(send_predict), _timed(send_classify)
            steady_predict = statistics.median(_timed(send_predict) for _ in range(steady))
            steady_classify = statistics.median(_timed(send_classify) for _ in range(steady))
            warmup_ms = _warmup_seconds(client, "/monitoring/prometheus/metrics") * 1000
    finally:
        process.terminate()
        process.wait(timeout=60)
    return Load(available, warmup_ms, first_predict, first_classify, steady_predict, steady_classify)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="a SavedModel version dir (default: the newest under outputs/fashion-mnist/serving_model)")
    parser.add_argument("--data-dir", type=Path, default=next((d for d in DATA_CANDIDATES if d.is_dir()), None),
                        help="the test split the warmup and timed requests come from")
    parser.add_argument("--loads", type=int, default=5, help="fresh server processes per variant")
    parser.add_argument("--warmup-requests", type=int, default=64)
    parser.add_argument("--steady", type=int, default=20, help="requests of each kind after the first ones")
    args = parser.parse_args(argv)

    model_dir = args.model_dir or default_model_dir()
    if model_dir is None or not (model_dir / "saved_model.pb").is_file():
        print(f"no SavedModel at {model_dir or REPO / 'outputs/fashion-mnist/serving_model/<version>'}: run `make run` "
              "to push one, or pass --model-dir", file=sys.stderr)
        return 2
    tf_env.configure()
    test = read_split(args.data_dir, TEST)
    images = test.images.reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)
    timed_image = images[-1]  # the warmup requests take theirs from the start of the split

    print(cpu_model())
    print(f"model {model_dir}, warmup: {args.warmup_requests} requests from {args.data_dir}, {args.loads} loads "
          "per variant, each a fresh server process\n", flush=True)
    results: dict[str, list[Load]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="warmup-bench-") as tmp:
        work = Path(tmp)
        bases = {"without": prepare(model_dir, work / "without", None, 0),
                 "with": prepare(model_dir, work / "with", images, args.warmup_requests)}
        for load in range(args.loads):
            for variant in VARIANTS:
                result = measure_load(bases[variant], timed_image, args.steady, work / f"{variant}-{load}.log")
                results[variant].append(result)
                print(f"  [{load + 1}/{args.loads}] {variant:7s} warmup: AVAILABLE after {result.available_s:5.2f} s "
                      f"(warmup {result.warmup_ms:4.0f} ms), first Predict {result.first_predict_ms:7.2f} ms, "
                      f"first Classify {result.first_classify_ms:7.2f} ms, steady {result.steady_predict_ms:.2f} / "
                      f"{result.steady_classify_ms:.2f} ms", flush=True)

    def median(variant: str, name: str) -> float:
        return statistics.median(getattr(r, name) for r in results[variant])

    print(f"\nmedian of {args.loads} loads; steady state: median of {args.steady} requests after the first; "
          "REST, one image per request\n")
    print("| warmup | process start to AVAILABLE s | warmup replay ms | first Predict ms | first Classify ms "
          "| steady Predict ms | steady Classify ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for variant in VARIANTS:
        label = f"{args.warmup_requests} requests" if variant == "with" else "none"
        print(f"| {label} | {median(variant, 'available_s'):.2f} | {median(variant, 'warmup_ms'):.0f} "
              f"| {median(variant, 'first_predict_ms'):.2f} | {median(variant, 'first_classify_ms'):.2f} "
              f"| {median(variant, 'steady_predict_ms'):.2f} | {median(variant, 'steady_classify_ms'):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
