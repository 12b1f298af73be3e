"""What a served candidate must answer: the serving contract's outputs (names, dtypes, shapes), the
same values as the SavedModel run in this process, over gRPC and REST, within a latency budget.

check_served() sends each request over both transports, compares every answer with the in-process
reference, and raises ServingCheckError with one line naming the transport, API, request and
what was wrong at the first difference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import grpc
import httpx
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_service_pb2_grpc

from fmnist import features
from tfx_pipeline.serving_validation.requests import Request
from tfx_pipeline.serving_validation.server_process import Endpoints

# serving_default's outputs as the contract (modules/signatures.py, fmnist.features) states them:
# name -> (dtype, shape after the batch dimension).
PREDICT_OUTPUTS = {
    "probabilities": (np.dtype(np.float32), (features.NUM_CLASSES,)),
    "class_id": (np.dtype(np.int64), ()),
    "class_name": (np.dtype(object), ()),
}


class ServingCheckError(RuntimeError):
    """The served candidate broke the contract, disagreed with the model, or was too slow."""


@dataclass
class Timings:
    """Request latencies in milliseconds, per transport."""

    grpc: list[float] = field(default_factory=list)
    rest: list[float] = field(default_factory=list)

    def p99(self) -> float:
        return float(np.percentile(self.grpc + self.rest, 99))

    def summary(self) -> dict[str, float]:
        every = self.grpc + self.rest
        return {"requests": len(every), "p50_ms": float(np.median(every)), "p99_ms": self.p99(),
                "grpc_p50_ms": float(np.median(self.grpc)), "rest_p50_ms": float(np.median(self.rest))}


class Reference:
    """The candidate SavedModel in this process: what the server must answer."""

    def __init__(self, model_dir: str):
        loaded = tf.saved_model.load(model_dir)
        self._predict = loaded.signatures[features.SERVING_DEFAULT]
        self._classify = loaded.signatures[features.CLASSIFY_SIGNATURE]

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self._predict(**{features.IMAGES_INPUT: tf.constant(images)}).items()}

    def scores(self, serialized: list[bytes]) -> np.ndarray:
        (name,) = self._classify.structured_input_signature[1]
        return self._classify(**{name: tf.constant(serialized)})["scores"].numpy()


def _compare(where: str, name: str, got: np.ndarray, want: np.ndarray, tolerance: float) -> None:
    if got.shape != want.shape:
        raise ServingCheckError(f"{where}: output '{name}' has shape {list(got.shape)}, expected {list(want.shape)}")
    if want.dtype.kind == "f":
        worst = float(np.max(np.abs(got.astype(np.float64) - want))) if got.size else 0.0
        if not worst <= tolerance:
            raise ServingCheckError(f"{where}: output '{name}' differs from the model run in-process by "
                                    f"{worst:.2e} (tolerance {tolerance:.0e})")
    elif not np.array_equal(got, want):
        raise ServingCheckError(f"{where}: output '{name}' differs from the model run in-process")


def _check_contract(where: str, outputs: dict[str, np.ndarray], batch: int) -> None:
    missing = sorted(set(PREDICT_OUTPUTS) - set(outputs))
    if missing:
        raise ServingCheckError(f"{where}: outputs {sorted(outputs)} lack {missing}")
    for name, (dtype, shape) in PREDICT_OUTPUTS.items():
        got = outputs[name]
        if got.shape != (batch, *shape):
            raise ServingCheckError(f"{where}: output '{name}' has shape {list(got.shape)}, "
                                    f"expected {[batch, *shape]}")
        if got.dtype != dtype and not (dtype.kind == "O" and got.dtype.kind in "SO"):
            raise ServingCheckError(f"{where}: output '{name}' has dtype {got.dtype}, expected {dtype}")


def _reference(where: str, call, *args):
    try:
        return call(*args)
    except Exception as err:  # a model that fails in-process too: say so, in one line
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ServingCheckError(f"{where}: the model fails in-process too: {type(err).__name__}: {message}") from None


def _grpc_predict(stub, request: predict_pb2.PredictRequest, where: str) -> dict[str, np.ndarray]:
    try:
        response = stub.Predict(request, timeout=30)
    except grpc.RpcError as err:
        raise ServingCheckError(f"{where}: {err.code().name}: {err.details()}") from None
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def _rest_post(http: httpx.Client, url: str, body: dict, where: str) -> dict:
    try:
        response = http.post(url, json=body)
    except httpx.HTTPError as err:
        raise ServingCheckError(f"{where}: {type(err).__name__}: {err}") from None
    if response.status_code != 200:
        raise ServingCheckError(f"{where}: HTTP {response.status_code}: {response.text[:200]}")
    return response.json()


def _rest_predict(http, url, images: np.ndarray, expected, tolerance, where) -> None:
    body = _rest_post(http, f"{url}:predict", {"signature_name": features.SERVING_DEFAULT,
                                               "inputs": {features.IMAGES_INPUT: images.tolist()}}, where)
    outputs = body.get("outputs")
    if not isinstance(outputs, dict):
        raise ServingCheckError(f"{where}: the answer has no columnar \"outputs\" object")
    arrays = {k: np.asarray(v) for k, v in outputs.items()}
    missing = sorted(set(PREDICT_OUTPUTS) - set(arrays))
    if missing:
        raise ServingCheckError(f"{where}: outputs {sorted(arrays)} lack {missing}")
    if arrays["class_name"].dtype.kind == "U":  # JSON has text, the tensor has bytes
        arrays["class_name"] = np.char.encode(arrays["class_name"]).astype(object)
    for name in PREDICT_OUTPUTS:
        _compare(where, name, arrays[name], expected[name], tolerance)


def _check_classes(where: str, labels: list[list[str]], scores: np.ndarray, want: np.ndarray, tolerance: float):
    if any(list(row) != list(features.CLASS_NAMES) for row in labels):
        raise ServingCheckError(f"{where}: classes are not the {features.NUM_CLASSES} class names in order")
    _compare(where, "scores", scores, want, tolerance)


def _grpc_classify(stub, request: classification_pb2.ClassificationRequest, want, tolerance, where) -> None:
    try:
        response = stub.Classify(request, timeout=30)
    except grpc.RpcError as err:
        raise ServingCheckError(f"{where}: {err.code().name}: {err.details()}") from None
    results = response.result.classifications
    labels = [[c.label for c in r.classes] for r in results]
    scores = np.asarray([[c.score for c in r.classes] for r in results], dtype=np.float32).reshape(len(results), -1)
    _check_classes(where, labels, scores, want, tolerance)


def _rest_classify(http, url, request: classification_pb2.ClassificationRequest, want, tolerance, where) -> None:
    examples = [{features.IMAGE_KEY: list(e.features.feature[features.IMAGE_KEY].int64_list.value)}
                for e in request.input.example_list.examples]
    body = _rest_post(http, f"{url}:classify", {"signature_name": features.CLASSIFY_SIGNATURE,
                                                "examples": examples}, where)
    results = body.get("results")
    if not isinstance(results, list):
        raise ServingCheckError(f"{where}: the answer has no \"results\" list")
    labels = [[pair[0] for pair in row] for row in results]
    scores = np.asarray([[pair[1] for pair in row] for row in results], dtype=np.float32).reshape(len(results), -1)
    _check_classes(where, labels, scores, want, tolerance)


def _timed(timings: list[float], call, *args):
    started = time.perf_counter()
    answer = call(*args)
    timings.append((time.perf_counter() - started) * 1000)
    return answer


def check_served(endpoints: Endpoints, reference: Reference, requests: list[Request], tolerance: float,
                 p99_budget_ms: float) -> Timings:
    """Sends every request over gRPC and over REST; returns the latencies. Raises
    ServingCheckError (one line) at the first wrong answer, or when the p99 latency of all of them
    exceeds `p99_budget_ms`."""
    timings = Timings()
    url = f"{endpoints.rest_url}/v1/models/{endpoints.model_name}"
    with grpc.insecure_channel(endpoints.grpc_target) as channel, httpx.Client(timeout=30) as http:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for index, request in enumerate(requests):
            if isinstance(request, predict_pb2.PredictRequest):
                images = tf.make_ndarray(request.inputs[features.IMAGES_INPUT])
                where = f"request {index} (Predict, {len(images)} images)"
                served = _timed(timings.grpc, _grpc_predict, stub, request, f"gRPC {where}")
                _check_contract(f"gRPC {where}", served, len(images))
                expected = _reference(where, reference.predict, images)
                for name in PREDICT_OUTPUTS:
                    _compare(f"gRPC {where}", name, served[name], expected[name], tolerance)
                _timed(timings.rest, _rest_predict, http, url, images, expected, tolerance, f"REST {where}")
            else:
                examples = request.input.example_list.examples
                where = f"request {index} (Classify, {len(examples)} examples)"
                want = _reference(where, reference.scores, [e.SerializeToString() for e in examples])
                _timed(timings.grpc, _grpc_classify, stub, request, want, tolerance, f"gRPC {where}")
                _timed(timings.rest, _rest_classify, http, url, request, want, tolerance, f"REST {where}")
    if timings.p99() > p99_budget_ms:
        raise ServingCheckError(f"p99 latency {timings.p99():.0f} ms over the budget of {p99_budget_ms:.0f} ms "
                                f"({len(timings.grpc) + len(timings.rest)} requests)")
    return timings
