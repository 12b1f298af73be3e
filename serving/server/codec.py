"""TF Serving's wire formats to and from numpy: the REST JSON API (row `instances` / columnar
`inputs`, `{"b64": ...}` bytes) and the gRPC protos (TensorProto, tf.Example inputs)."""

from __future__ import annotations

import base64
import math

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from fmnist import features
from serving.protocol.errors import bad_request
from serving.protocol.predict_body import decode_b64, parse_predict_request  # noqa: F401 (serving.server.rest parses through codec)

# The tf.Example features' trained value ranges (servables.INPUT_RANGES checks the image tensor
# input); kept here, where Examples are decoded, so the codec never imports the servable.
EXAMPLE_FEATURE_RANGES = {features.IMAGE_KEY: (features.PIXEL_MIN, features.PIXEL_MAX)}


# -- REST --------------------------------------------------------------------------------------
def _jsonable(array: np.ndarray):
    if array.dtype.kind in "SO":
        def text(value):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(value).decode("ascii")}
        return np.vectorize(text, otypes=[object])(array).tolist() if array.size else []
    return array.tolist()


def predict_response(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    if not row_format:
        if len(outputs) == 1:
            return {"outputs": _jsonable(next(iter(outputs.values())))}
        return {"outputs": {k: _jsonable(v) for k, v in outputs.items()}}
    columns = {k: _jsonable(v) for k, v in outputs.items()}
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    rows = len(next(iter(columns.values())))
    return {"predictions": [{k: v[i] for k, v in columns.items()} for i in range(rows)]}


def _feature(name: str, value) -> tf.train.Feature:
    values = value if isinstance(value, list) else [value]
    if all(isinstance(v, bool) for v in values) and values:
        raise bad_request(f"feature '{name}': booleans are not a tf.Example type")
    if all(isinstance(v, int) for v in values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    if all(isinstance(v, int | float) for v in values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    if all(isinstance(v, str | bytes) for v in values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[v.encode() if isinstance(v, str) else v for v in values]))
    raise bad_request(f"feature '{name}': values must be all integers, all numbers or all strings")


def examples_from_json(body) -> list[tf.train.Example]:
    """The tf.Examples of a `:classify` / `:regress` JSON body (`examples` + optional `context`)."""
    if not isinstance(body, dict) or not isinstance(body.get("examples"), list) or not body["examples"]:
        raise bad_request("a classify request needs \"examples\": a non-empty list of feature objects")
    context = body.get("context", {})
    if not isinstance(context, dict):
        raise bad_request("\"context\" must be an object of features")
    examples = []
    for i, raw in enumerate(body["examples"]):
        if not isinstance(raw, dict):
            raise bad_request(f"example {i} must be an object of features")
        merged = {**context, **raw}
        example = tf.train.Example()
        for name, value in merged.items():
            example.features.feature[name].CopyFrom(_feature(name, decode_b64(value)))
        examples.append(example)
    return examples


def classify_response_json(classes: np.ndarray, scores: np.ndarray) -> dict:
    labels = _jsonable(classes)
    return {"results": [[[label, float(score)] for label, score in zip(row_labels, row_scores, strict=True)]
                        for row_labels, row_scores in zip(labels, scores.tolist(), strict=True)]}


def serialize_examples(examples: list[tf.train.Example]) -> np.ndarray:
    for i, example in enumerate(examples):
        for name, (low, high) in EXAMPLE_FEATURE_RANGES.items():
            feature = example.features.feature.get(name)
            values = feature.int64_list.value if feature is not None else []
            if values and (min(values) < low or max(values) > high):
                raise bad_request(f"example {i}, feature '{name}': values must be within [{low}, {high}]")
    return np.array([e.SerializeToString() for e in examples], dtype=object)


# -- gRPC --------------------------------------------------------------------------------------
# The most elements one TensorProto may declare: as many float32 as a 16 MiB message (the default
# gRPC limit) carries, far above a full request (1024 images of 784). tf.make_ndarray fills the
# declared shape from however few values were sent, so without it a 20-byte request could make
# the server allocate terabytes.
MAX_TENSOR_ELEMENTS = 1 << 22
# Handles, not values: tf.make_ndarray has no numpy type for them (a KeyError).
_UNSENDABLE = {types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT, types_pb2.DT_RESOURCE_REF, types_pb2.DT_VARIANT_REF}


def _check_tensor(tensor) -> None:
    if tensor.dtype in _UNSENDABLE:
        raise bad_request(f"malformed TensorProto: dtype {types_pb2.DataType.Name(tensor.dtype)} cannot be sent "
                          "as a value")
    dims = [d.size for d in tensor.tensor_shape.dim]
    elements = math.prod(dims)  # Python ints: no overflow however large the dims
    if elements > MAX_TENSOR_ELEMENTS:
        raise bad_request(f"malformed TensorProto: shape {dims} has {elements} elements; at most "
                          f"{MAX_TENSOR_ELEMENTS} are accepted")


def arrays_from_protos(protos) -> dict[str, np.ndarray]:
    """{input name: array} of a request's TensorProtos; a malformed or oversized one raises a 400."""
    for tensor in protos.values():
        _check_tensor(tensor)
    try:
        return {k: tf.make_ndarray(v) for k, v in protos.items()}
    except (TypeError, ValueError) as err:
        raise bad_request(f"malformed TensorProto: {err}") from None


def protos_from_arrays(arrays: dict[str, np.ndarray], target) -> None:
    for name, array in arrays.items():
        target[name].CopyFrom(tf.make_tensor_proto(array))


def classification_results(classes: np.ndarray, scores: np.ndarray, target) -> None:
    """Fills a ClassificationResult (`target`) from a classifier's classes [N, K] (bytes) and scores."""
    for labels, row_scores in zip(classes, scores, strict=True):
        result = target.classifications.add()
        for label, score in zip(labels, row_scores, strict=True):
            result.classes.add(label=label.decode(), score=float(score))
