"""The class a model answered, from the outputs of a Predict call however they came back: the
`class_id` output, else whichever output is [N, 10] scores (the probabilities, or a Vertex AI
prediction row's bare `predictions`). Shared by the monitor (logged PredictionLogs) and the Vertex
canary analysis (logged :predict payloads), which sit in packages that may not import each other."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fmnist import features


def predicted_classes(outputs: Mapping[str, np.ndarray], count: int) -> np.ndarray:
    """int64 [count] class ids from the outputs of `count` instances. ValueError (one line, to be
    prefixed with where the outputs came from) when no output holds them."""
    if features.CLASS_ID_OUTPUT in outputs:
        predicted = np.asarray(outputs[features.CLASS_ID_OUTPUT]).reshape(-1)
    else:
        scores = next((v for v in outputs.values() if np.shape(v) == (count, features.NUM_CLASSES)), None)
        if scores is None:
            raise ValueError(f"no class_id or [N, 10] output among {sorted(outputs)}")
        predicted = np.argmax(scores, axis=1)
    if predicted.shape != (count,):
        raise ValueError(f"{predicted.size} predicted classes for {count} images")
    return predicted.astype(np.int64)
