"""A `:predict` JSON body (TF Serving's REST API: row `instances` or columnar `inputs`, `{"b64":
...}` bytes) parsed to its input values. TensorFlow-free: the REST server (through serving.server.codec)
and the readers of Vertex AI request logs (serving/protocol/vertex_rows.py) both parse with it."""

from __future__ import annotations

import base64

from serving.protocol.errors import bad_request


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
