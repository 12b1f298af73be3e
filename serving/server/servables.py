"""One loaded model version: its SignatureDefs (read from saved_model.pb, as TF Serving does), the
callable signatures, and the input checks every request goes through before it reaches TF."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from fmnist import features
from serving.protocol.errors import bad_request

# Value ranges the model was trained on; TF would happily run on anything else (serialized
# tf.Examples are checked by serving.server.codec, which decodes them).
INPUT_RANGES = {features.IMAGES_INPUT: (features.PIXEL_MIN, features.PIXEL_MAX)}


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: tf.DType
    shape: tuple[int | None, ...] | None  # None: unknown rank

    @classmethod
    def from_tensor_info(cls, name: str, info: meta_graph_pb2.TensorInfo) -> InputSpec:
        shape = None if info.tensor_shape.unknown_rank else tuple(
            None if d.size < 0 else d.size for d in info.tensor_shape.dim)
        return cls(name=name, dtype=tf.dtypes.as_dtype(info.dtype), shape=shape)

    def describe(self) -> str:
        dims = "?" if self.shape is None else ", ".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.dtype.name} [{dims}]"


def _convert(name: str, spec: InputSpec, value) -> np.ndarray:
    """JSON/proto values -> an array of the signature's dtype, or a 400 saying what is wrong."""
    if spec.dtype == tf.string:
        return _convert_strings(name, value)
    try:
        array = np.asarray(value)
    except ValueError as err:  # ragged nested lists
        raise bad_request(f"input '{name}': not a rectangular array ({err})") from None
    if array.dtype == object:
        raise bad_request(f"input '{name}': not a rectangular array of {spec.dtype.name} values")
    if array.dtype.kind not in "biuf" or array.dtype.kind == "b":
        raise bad_request(f"input '{name}' expects {spec.dtype.name} numbers, got {array.dtype} values")
    if spec.dtype.is_integer and array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise bad_request(f"input '{name}' expects integers ({spec.dtype.name}), got non-integer values")
    if spec.dtype.is_floating and not np.all(np.isfinite(array)):
        raise bad_request(f"input '{name}' contains NaN or infinite values")
    return array.astype(spec.dtype.as_numpy_dtype)


def _convert_strings(name: str, value) -> np.ndarray:
    # dtype=object, never numpy's fixed-width bytes: those drop trailing NUL bytes.
    try:
        array = np.array(value, dtype=object)
    except ValueError as err:
        raise bad_request(f"input '{name}': not a rectangular array ({err})") from None
    flat = array.reshape(-1)
    if not all(isinstance(v, bytes | str) for v in flat):
        raise bad_request(f"input '{name}' expects strings (bytes as {{\"b64\": ...}})")
    return np.array([v.encode() if isinstance(v, str) else v for v in flat], dtype=object).reshape(array.shape)


def _check_shape(name: str, spec: InputSpec, array: np.ndarray) -> None:
    if spec.shape is None:
        return
    expected = spec.describe()
    if array.ndim != len(spec.shape):
        raise bad_request(f"input '{name}' must have shape {expected}, got {list(array.shape)}")
    for got, want in zip(array.shape, spec.shape, strict=True):
        if want is not None and got != want:
            raise bad_request(f"input '{name}' must have shape {expected}, got {list(array.shape)}")
    if array.ndim and array.shape[0] == 0:
        raise bad_request(f"input '{name}' is empty: send at least one instance")


def _check_range(name: str, array: np.ndarray, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if array.size and (array.min() < low or array.max() > high):
        bad = np.argwhere((array < low) | (array > high))[0]
        raise bad_request(f"input '{name}' must be within [{low}, {high}]; value {array[tuple(bad)]} "
                          f"at index {bad.tolist()}")


def tf_error_line(err: tf.errors.OpError) -> str:
    """The line of a TF error that says what went wrong: graph-mode errors open with "Graph execution
    error:" and a traceback of the op's definition, and name the cause (an assertion's message, a
    missing feature) on the first line of their own after that."""
    lines = [line for line in err.message.splitlines() if line.strip()]
    causes = [line.strip() for line in lines
              if not line[0].isspace()
              and not line.startswith(("Graph execution error", "Detected at node", "<stack traces unavailable>"))]
    return (causes or [line.strip() for line in lines] or [type(err).__name__])[0]


class Servable:
    """A SavedModel version loaded for serving.

    Construction loads it (seconds; raises whatever TF raises for a bad SavedModel); the server
    loads through serving.server.warmup.loader, which also replays the version's warmup file before the
    manager marks it AVAILABLE. After that it is read-only and thread-safe: prepare() raises a 400
    ServingError naming what is wrong with an input, run() calls TF and is safe to call from
    several threads at once.
    """

    def __init__(self, model_name: str, version: int, path: str):
        self.model_name = model_name
        self.version = version
        self.path = path
        with open(os.path.join(path, "saved_model.pb"), "rb") as stream:
            saved_model = saved_model_pb2.SavedModel.FromString(stream.read())
        self.signature_defs = {k: v for k, v in saved_model.meta_graphs[0].signature_def.items()
                               if not k.startswith("__")}
        self._loaded = tf.saved_model.load(path)
        self._functions = dict(self._loaded.signatures)
        self.inputs = {
            sig: {key: InputSpec.from_tensor_info(key, info) for key, info in sig_def.inputs.items()}
            for sig, sig_def in self.signature_defs.items()
        }

    def signature(self, name: str | None) -> str:
        name = name or features.SERVING_DEFAULT
        if name not in self.signature_defs or name not in self._functions:
            raise bad_request(f"model '{self.model_name}' version {self.version} has no signature {name!r}; "
                              f"available: {', '.join(sorted(self.signature_defs))}")
        return name

    def method_name(self, signature: str) -> str:
        return self.signature_defs[signature].method_name

    def prepare(self, signature: str, raw_inputs: dict) -> dict[str, np.ndarray]:
        """Converted, checked inputs for `signature`; raises a 400 ServingError naming the problem."""
        specs = self.inputs[signature]
        missing, unknown = set(specs) - set(raw_inputs), set(raw_inputs) - set(specs)
        if missing or unknown:
            raise bad_request(
                f"signature '{signature}' takes inputs {sorted(specs)}"
                + (f"; missing {sorted(missing)}" if missing else "")
                + (f"; unknown {sorted(unknown)}" if unknown else ""))
        arrays = {}
        for name, spec in specs.items():
            array = _convert(name, spec, raw_inputs[name])
            _check_shape(name, spec, array)
            if name in INPUT_RANGES:
                _check_range(name, array, INPUT_RANGES[name])
            arrays[name] = array
        batch_sizes = {a.shape[0] for a in arrays.values() if a.ndim}
        if len(batch_sizes) > 1:
            raise bad_request(f"inputs disagree on the number of instances: {sorted(batch_sizes)}")
        return arrays

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self._functions[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        except tf.errors.InvalidArgumentError as err:  # e.g. a tf.Example without the right feature
            raise bad_request(f"the model rejected the input: {tf_error_line(err)}") from None
        return {k: v.numpy() for k, v in outputs.items()}
