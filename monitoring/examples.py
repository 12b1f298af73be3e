"""Logged calls (TF Serving PredictionLogs) -> the served examples TFDV sees: the grey levels of
each image as the schema's `image` (784 int64 within 0..255), the class the model answered and
the model version that answered.

The examples are columns (one Arrow record batch), which is what TFDV's tf.Example decoder
produces: building and re-parsing a tf.Example per image would cost more than the statistics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from fmnist import answers, features, feedback, outcomes, request_ids

PREDICTED_KEY = features.LABEL_KEY  # the served class stands in for the label: see statistics.py


class RequestLogError(ValueError):
    """A logged call that cannot be read as Fashion-MNIST images (the message names the record)."""


@dataclass(frozen=True)
class ServedExamples:
    """The images of a window, one row per image (a call may carry several)."""

    images: np.ndarray  # int64 [N, 784], 0..255
    predicted: np.ndarray  # int64 [N], the class the model answered
    versions: np.ndarray  # int64 [N], the model version that answered (0: not logged)
    timestamps: np.ndarray  # int64 [N], epoch seconds of the call
    keys: tuple[str, ...] = ()  # per image, the key its label comes back under ("": no request id)

    def __len__(self) -> int:
        return len(self.predicted)

    def version_counts(self) -> dict[int, int]:
        """{version: images it answered}, most first."""
        return dict(Counter(self.versions.tolist()).most_common())

    def answers(self) -> list[outcomes.Answer]:
        """What each image was answered, keyed for the join with delayed labels (fmnist.outcomes)."""
        keys = self.keys or ("",) * len(self)
        return [outcomes.Answer(k, v, p) for k, v, p in zip(keys, self.versions.tolist(), self.predicted.tolist(),
                                                            strict=True)]

    def record_batch(self) -> pa.RecordBatch:
        """`image` and the predicted class as `label`: list<int64> columns, as decoded tf.Examples."""
        def column(values: np.ndarray) -> pa.ListArray:
            width = values.shape[1] if values.ndim == 2 else 1
            offsets = np.arange(0, values.size + 1, width, dtype=np.int32)
            return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.reshape(-1)))
        return pa.RecordBatch.from_arrays([column(self.images), column(self.predicted)],
                                          [features.IMAGE_KEY, PREDICTED_KEY])


def pixel_rows(images: Any, where: str) -> np.ndarray:
    """The images as logged, [N, 784] of their own numeric type, from [N, 28, 28] or [N, 784];
    RequestLogError for another shape or type."""
    array = np.asarray(images)
    if array.ndim not in (2, 3) or int(np.prod(array.shape[1:])) != features.NUM_PIXELS or \
            (array.ndim == 3 and array.shape[1:] != features.IMAGE_SHAPE):
        raise RequestLogError(f"{where}: images of shape {list(array.shape)}, expected [N, 28, 28] or [N, 784]")
    if not np.issubdtype(array.dtype, np.number):
        raise RequestLogError(f"{where}: images of type {array.dtype}, expected grey levels")
    return array.reshape(len(array), features.NUM_PIXELS)


def grey_levels(images: Any, where: str) -> np.ndarray:
    """int64 [N, 784] within 0..255 from grey levels [N, 28, 28] or [N, 784] (floats rounded, then
    clipped: the model saw the floats, the schema's domain is whole grey levels)."""
    flat = pixel_rows(images, where)
    if np.issubdtype(flat.dtype, np.floating):
        if not np.isfinite(flat).all():
            raise RequestLogError(f"{where}: images hold NaN or infinite values")
        flat = np.rint(flat)
    return np.clip(flat, features.PIXEL_MIN, features.PIXEL_MAX).astype(np.int64)


def _predicted_from_outputs(outputs: dict[str, np.ndarray], count: int, where: str) -> np.ndarray:
    try:
        return answers.predicted_classes(outputs, count)
    except ValueError as err:
        raise RequestLogError(f"{where}: {err}") from None


def _class_index(label: str, where: str) -> int:
    if label.isdigit():
        return int(label)
    if label in features.CLASS_NAMES:
        return features.CLASS_NAMES.index(label)
    raise RequestLogError(f"{where}: unknown class {label!r}")


def logged_pixels(logged: Any, where: str) -> np.ndarray:
    """The images of a logged Predict call (its `images` input) or Classify call (each example's
    `image` feature), [N, 784] as logged (not rounded). RequestLogError when it carries none."""
    import tensorflow as tf

    kind = logged.WhichOneof("log_type")
    if kind == "predict_log":
        inputs = logged.predict_log.request.inputs
        if features.IMAGES_INPUT not in inputs:
            raise RequestLogError(f"{where}: no `{features.IMAGES_INPUT}` input (has {sorted(inputs)})")
        try:
            return pixel_rows(tf.make_ndarray(inputs[features.IMAGES_INPUT]), where)
        except (TypeError, ValueError) as err:
            if isinstance(err, RequestLogError):
                raise
            raise RequestLogError(f"{where}: malformed tensor ({' '.join(str(err).split())})") from None
    if kind == "classify_log":
        request = logged.classify_log.request
        rows = []
        for example in request.input.example_list.examples or request.input.example_list_with_context.examples:
            feature = example.features.feature.get(features.IMAGE_KEY)
            rows.append(np.asarray((feature.int64_list.value or feature.float_list.value) if feature is not None
                                   else []))
        if not rows or any(len(row) != features.NUM_PIXELS for row in rows):
            sizes = sorted({len(row) for row in rows})
            raise RequestLogError(f"{where}: examples with {sizes or 'no'} `{features.IMAGE_KEY}` values, "
                                  f"expected {features.NUM_PIXELS}")
        return pixel_rows(np.stack(rows), where)
    raise RequestLogError(f"{where}: only Predict and Classify calls carry images")


def logged_answers(logged: Any, count: int, where: str) -> np.ndarray:
    """int64 [count] classes the model answered to a logged Predict or Classify call."""
    import tensorflow as tf

    if logged.WhichOneof("log_type") == "predict_log":
        protos = logged.predict_log.response.outputs
        # class_id alone answers it; else every output but the strings (never needed, and slow to decode).
        wanted = [features.CLASS_ID_OUTPUT] if features.CLASS_ID_OUTPUT in protos else \
            [name for name in protos if name != "class_name"]
        try:
            outputs = {name: tf.make_ndarray(protos[name]) for name in wanted}
        except (TypeError, ValueError) as err:
            raise RequestLogError(f"{where}: malformed tensor ({' '.join(str(err).split())})") from None
        return _predicted_from_outputs(outputs, count, where)
    results = logged.classify_log.response.result.classifications
    if len(results) != count:
        raise RequestLogError(f"{where}: {len(results)} classifications for {count} examples")
    predicted = np.array([_class_index(max(r.classes, key=lambda c: c.score).label, where) if r.classes
                          else -1 for r in results], dtype=np.int64)
    if (predicted < 0).any():
        raise RequestLogError(f"{where}: a classification without classes")
    return predicted


def served_examples(logs: Iterable[Any]) -> ServedExamples:
    """Every image of `logs` (PredictionLogs of Predict or Classify calls) with its answer.
    A record that is not one raises RequestLogError naming it (position, kind, version, time)."""
    images, predicted, versions, stamps, keys = [], [], [], [], []
    for position, logged in enumerate(logs):
        kind = logged.WhichOneof("log_type")
        stamp = logged.log_metadata.timestamp_secs
        version = logged.log_metadata.model_spec.version.value
        where = (f"logged call #{position} ({kind or 'empty'}, version {version or '?'}, "
                 f"{datetime.fromtimestamp(stamp, UTC).isoformat()})")
        batch = grey_levels(logged_pixels(logged, where), where)
        answers = logged_answers(logged, len(batch), where)
        if ((answers < 0) | (answers >= features.NUM_CLASSES)).any():
            raise RequestLogError(f"{where}: predicted classes outside 0..{features.NUM_CLASSES - 1}")
        images.append(batch)
        predicted.append(answers)
        versions.append(np.full(len(batch), version, dtype=np.int64))
        stamps.append(np.full(len(batch), stamp, dtype=np.int64))
        request_id = request_ids.of_log(logged)
        keys += feedback.image_keys(request_id, len(batch)) if request_id else [""] * len(batch)
    if not images:
        return ServedExamples(np.zeros((0, features.NUM_PIXELS), np.int64), *(np.zeros(0, np.int64),) * 3)
    return ServedExamples(np.concatenate(images), np.concatenate(predicted), np.concatenate(versions),
                          np.concatenate(stamps), tuple(keys))
