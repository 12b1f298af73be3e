"""Rows of a Vertex AI endpoint's request-response logging table (BigQuery) as arrays: the
:predict instances and predictions each row logged, parsed as the REST API parses a request.
TensorFlow-free, so the Vertex canary analysis can read them (serving/release/vertex_canary.py), and
serving.server.request_log turns them into PredictionLogs for `fmnist monitor --bigquery-table`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from fmnist import features
from serving.protocol.errors import bad_request
from serving.protocol.predict_body import MAX_JSON_DEPTH, json_depth, parse_predict_request


def _loads(text: str) -> Any:
    # Logged payloads are what clients sent: the REST door's depth bound applies before json.loads
    # recurses (a RecursionError at about a thousand levels).
    depth = json_depth(text.encode())
    if depth > MAX_JSON_DEPTH:
        raise bad_request(f"logged payload nested {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted")
    return json.loads(text)


def payload_rows(payload: Any, key: str) -> list:
    """Vertex writes one JSON string per instance / prediction (a REPEATED STRING column); a whole
    body (`{"instances": [...]}`) in one string is taken too."""
    items = [payload] if isinstance(payload, str | dict) else list(payload or [])
    rows: list = []
    for item in items:
        value = _loads(item) if isinstance(item, str) else item
        if isinstance(value, dict) and key in value:
            if not isinstance(value[key], list):  # found by fuzzing: {"instances": 1} was a TypeError
                raise bad_request(f'logged "{key}" must be a list, got {type(value[key]).__name__}')
            rows.extend(value[key])
        else:
            rows.append(value)
    return rows


def _arrays(rows: list, name: str) -> dict[str, np.ndarray]:
    # The REST API's own row-format parsing (b64 values, named or bare instances), then the dtype
    # the REST API would pick: JSON floats as float32, the model's input and output type.
    columns, _ = parse_predict_request({"instances": rows}, [name])
    arrays = {}
    for key, values in columns.items():
        array = np.asarray(values)
        arrays[key] = array.astype(np.float32) if array.dtype == np.float64 else array
    return arrays


def row_arrays(row: Mapping[str, Any], input_name: str = features.IMAGES_INPUT,
               output_name: str = "predictions") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The (inputs, outputs) arrays of one logging-table row, by input/output name (bare instances
    and predictions named input_name / output_name); outputs {} for a row without a response. A
    payload that is not JSON or not instances raises ServingError (or json.JSONDecodeError)."""
    predictions = payload_rows(row.get("response_payload"), "predictions")
    instances = payload_rows(row.get("request_payload"), "instances")
    return _arrays(instances, input_name), (_arrays(predictions, output_name) if predictions else {})
