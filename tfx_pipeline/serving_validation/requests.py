"""TF Serving requests built from real images: what serving validation sends and what a pushed
model's warmup file (features.WARMUP_FILE) replays.

Two kinds, as the serving contract (fmnist.features) defines them: Predict on `serving_default`
(float32 grey levels [N, 28, 28]) and Classify on `classification` (tf.Examples with the raw
`image` feature). TF Serving replays a warmup file record by record, so each record is one
request; batch sizes cycle so that the shapes a server will see are all exercised.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2

from fmnist import features

Request = predict_pb2.PredictRequest | classification_pb2.ClassificationRequest
BATCH_SIZES = (1, 8, 32)


def _as_images(images: np.ndarray) -> np.ndarray:
    array = np.asarray(images)
    if array.ndim < 2 or array.size % features.NUM_PIXELS:
        raise ValueError(f"expected images of {features.NUM_PIXELS} pixels, got an array of shape {list(array.shape)}")
    return array.reshape(-1, *features.IMAGE_SHAPE)


def predict_request(images: np.ndarray, model_name: str = features.MODEL_NAME) -> predict_pb2.PredictRequest:
    """Predict on serving_default for [N, 28, 28] (or [N, 784]) grey levels."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = features.SERVING_DEFAULT
    request.inputs[features.IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(_as_images(images).astype(np.float32)))
    return request


def classify_request(images: np.ndarray, model_name: str = features.MODEL_NAME
                     ) -> classification_pb2.ClassificationRequest:
    """Classify on the classification signature: one tf.Example (raw `image` feature) per image."""
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = features.CLASSIFY_SIGNATURE
    for image in _as_images(images).reshape(-1, features.NUM_PIXELS):
        example = request.input.example_list.examples.add()
        example.features.feature[features.IMAGE_KEY].int64_list.value.extend(np.rint(image).astype(np.int64).tolist())
    return request


def build_requests(images: np.ndarray, count: int, model_name: str = features.MODEL_NAME,
                   batch_sizes: Sequence[int] = BATCH_SIZES) -> list[Request]:
    """`count` requests, alternating Predict and Classify, batch sizes cycling through
    `batch_sizes`, taking consecutive images (wrapping around) so every request is real data."""
    images = _as_images(images)
    if not len(images):
        raise ValueError("no images to build requests from")
    built: list[Request] = []
    start = 0
    for index in range(count):
        size = batch_sizes[(index // 2) % len(batch_sizes)]
        rows = np.take(images, np.arange(start, start + size), axis=0, mode="wrap")
        start = (start + size) % len(images)
        built.append(predict_request(rows, model_name) if index % 2 == 0 else classify_request(rows, model_name))
    return built


def prediction_log(request: Request) -> prediction_log_pb2.PredictionLog:
    if isinstance(request, classification_pb2.ClassificationRequest):
        return prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=request))
    if isinstance(request, predict_pb2.PredictRequest):
        return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    raise TypeError(f"no PredictionLog for a {type(request).__name__}")


def write_warmup_file(model_dir: str, requests: Iterable[Request]) -> str:
    """Writes `requests` as model_dir/assets.extra/tf_serving_warmup_requests (TFRecords of
    PredictionLog, the format TF Serving replays at load); returns the file's path. Raises
    ValueError for none or more than TF Serving's limit of features.MAX_WARMUP_RECORDS."""
    logs = [prediction_log(r) for r in requests]
    if not 0 < len(logs) <= features.MAX_WARMUP_RECORDS:
        raise ValueError(f"a warmup file takes 1 to {features.MAX_WARMUP_RECORDS} requests, got {len(logs)}")
    path = os.path.join(model_dir, features.WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path
