"""Logged calls x delayed labels (issue #24): which request ids a request log holds, and the
images of logged calls whose labels came back, exactly as the model received them.

Handed PredictionLogs (serving.server.request_log.read_request_logs, through the CLI) and the stored
labels (fmnist.feedback.read_labels); keys are fmnist.feedback's image keys (`ID`, `ID#N`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmnist import features, feedback, request_ids
from monitoring.examples import RequestLogError, logged_answers, logged_pixels


def instances(logged: Any) -> int:
    """How many images (instances) a logged call carried, read from the tensor shape or the
    example count: no pixel is decoded, so indexing a large log stays cheap."""
    kind = logged.WhichOneof("log_type")
    if kind == "predict_log":
        inputs = logged.predict_log.request.inputs
        # `in` before indexing: indexing a proto map inserts the key.
        name = features.IMAGES_INPUT if features.IMAGES_INPUT in inputs else next(iter(inputs), None)
        tensor = inputs[name] if name is not None else None
        dims = tensor.tensor_shape.dim if tensor is not None else []
        return int(dims[0].size) if dims else 1
    if kind == "classify_log":
        examples = logged.classify_log.request.input
        return len(examples.example_list.examples or examples.example_list_with_context.examples)
    return 0


def request_index(logs: Iterable[Any]) -> dict[str, int]:
    """{request id: images it carried} of logged calls; calls logged without an id are left out."""
    index = {}
    for logged in logs:
        request_id = request_ids.of_log(logged)
        if request_id:
            index[request_id] = instances(logged)
    return index


def exact_grey_levels(pixels: np.ndarray, where: str, positions: list[int] | None = None) -> np.ndarray:
    """uint8 [N, 784] equal to `pixels`; RequestLogError when a value is not a whole number within
    0..255 (a float 12.5 or 300 cannot become a training pixel without changing what was served).
    `positions`: each row's image number in its call, for the message."""
    low, high = features.PIXEL_MIN, features.PIXEL_MAX
    with np.errstate(invalid="ignore"):
        exact = (pixels >= low) & (pixels <= high)
        if np.issubdtype(pixels.dtype, np.floating):
            exact &= pixels == np.floor(pixels)  # NaN fails every comparison, so it is refused too
    if not exact.all():
        row, pixel = (int(v) for v in np.argwhere(~exact)[0])
        image = row if positions is None else positions[row]
        raise RequestLogError(f"{where}: image {image}, pixel {pixel} = {pixels[row, pixel]} is not a whole "
                              f"grey level within {low}..{high}")
    return pixels.astype(np.uint8)


@dataclass(frozen=True)
class LabelledImages:
    """The labelled images of a window of logged calls, one row per image."""

    keys: list[str]  # fmnist.feedback image keys
    images: np.ndarray  # uint8 [N, 784], exactly as the model received them
    labels: np.ndarray  # int64 [N], the delayed labels
    predicted: np.ndarray  # int64 [N], what the model answered
    requests: int  # logged calls the images came from
    skipped: int  # labelled calls without images (e.g. a Predict of serialized tf.Examples)

    def __len__(self) -> int:
        return len(self.keys)

    def accuracy(self) -> float | None:
        return float((self.predicted == self.labels).mean()) if len(self) else None


def join(logs: Iterable[Any], labels: Mapping[str, feedback.Label]) -> LabelledImages:
    """The images of `logs` whose keys have a label in `labels`, with their answers. Raises
    RequestLogError (naming the request id) for a labelled image that is not whole grey levels."""
    keys, images, label_ids, predicted = [], [], [], []
    requests = skipped = 0
    for logged in logs:
        request_id = request_ids.of_log(logged)
        if not request_id:
            continue
        count = instances(logged)
        wanted = [(i, key) for i, key in enumerate(feedback.image_keys(request_id, count)) if key in labels]
        if not wanted:
            continue
        where = f"request {request_id}"
        try:
            pixels = logged_pixels(logged, where)
        except RequestLogError:
            skipped += 1  # not an image call: nothing to land or to score
            continue
        rows = [i for i, _ in wanted]
        images.append(exact_grey_levels(pixels[rows], where, rows))
        predicted.append(logged_answers(logged, len(pixels), where)[rows])
        keys.extend(key for _, key in wanted)
        label_ids.extend(labels[key].label for _, key in wanted)
        requests += 1
    if not keys:
        return LabelledImages([], np.zeros((0, features.NUM_PIXELS), np.uint8), np.zeros(0, np.int64),
                              np.zeros(0, np.int64), 0, skipped)
    return LabelledImages(keys, np.concatenate(images), np.asarray(label_ids, np.int64), np.concatenate(predicted),
                          requests, skipped)
