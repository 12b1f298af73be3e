"""A `:predict` JSON body (TF Serving's REST API: row `instances` or columnar `inputs`, `{"b64":
...}` bytes) parsed to its input values. TensorFlow-free: the REST server (through serving.server.codec)
and the readers of Vertex AI request logs (serving/protocol/vertex_rows.py) both parse with it."""

from __future__ import annotations

import base64

import numpy as np

from serving.protocol.errors import bad_request

# Deepest nesting of arrays and objects a request body may have. The deepest body the protocol
# needs is {"inputs": {"images": [[[[...]]]]}} (6); Python's json recurses per level and raised
# RecursionError (an HTTP 500) at about a thousand.
MAX_JSON_DEPTH = 32
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_NESTING = np.zeros(256, dtype=np.int8)  # +1 opens an array/object, -1 closes one
_NESTING[list(b"[{")], _NESTING[list(b"]}")] = 1, -1


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays/objects in `body`, brackets inside strings not counted; a
    vectorized pass (about 20 ms a megabyte). Exact for valid JSON; for invalid JSON, a value
    json.loads refuses anyway."""
    data = np.frombuffer(body, dtype=np.uint8)
    quote = data == _QUOTE
    if b"\\" in body:  # a quote is escaped when an odd run of backslashes precedes it
        backslash = data == _BACKSLASH
        runs = np.cumsum(backslash, dtype=np.int64)
        runs -= np.maximum.accumulate(np.where(backslash, 0, runs))  # the run ending at each byte
        quote[1:] &= (runs[:-1] % 2) == 0
    inside = (np.cumsum(quote, dtype=np.int64) - quote) % 2 == 1  # within a string, its closing quote included
    step = _NESTING[data].astype(np.int64)
    step[inside] = 0
    return int(np.cumsum(step).max(initial=0))


def decode_b64(value):
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise bad_request(f"a JSON object as a value must be {{\"b64\": \"...\"}}, got keys {sorted(value)}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError as err:  # binascii.Error, and non-ASCII text (found by tests/test_fuzz_rest.py)
            raise bad_request(f"invalid base64 in a \"b64\" value: {err}") from None
    if isinstance(value, list):
        return [decode_b64(v) for v in value]
    return value


def parse_predict_request(body, input_names: list[str]) -> tuple[dict, bool]:
    """({input name: value}, row_format) from a `:predict` JSON body."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object with \"instances\" or \"inputs\"")
    has_rows, has_columns = "instances" in body, "inputs" in body
    if has_rows == has_columns:
        raise bad_request("the request must have exactly one of \"instances\" (row format) or \"inputs\" (columnar)")
    unknown = set(body) - {"instances", "inputs", "signature_name"}
    if unknown:
        raise bad_request(f"unknown request fields {sorted(unknown)}")
    if has_rows:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise bad_request("\"instances\" must be a non-empty list")
        if all(isinstance(i, dict) and "b64" not in i for i in instances):
            keys = set(instances[0])
            if any(set(i) != keys for i in instances):
                raise bad_request("every instance must have the same named inputs")
            return {k: decode_b64([i[k] for i in instances]) for k in keys}, True
        if len(input_names) != 1:
            raise bad_request(f"this signature takes several inputs {sorted(input_names)}: "
                              "give each instance as an object with those keys")
        return {input_names[0]: decode_b64(instances)}, True
    inputs = body["inputs"]
    if isinstance(inputs, dict) and "b64" not in inputs:
        return {k: decode_b64(v) for k, v in inputs.items()}, False
    if len(input_names) != 1:
        raise bad_request(f"this signature takes several inputs {sorted(input_names)}: \"inputs\" must name them")
    return {input_names[0]: decode_b64(inputs)}, False
