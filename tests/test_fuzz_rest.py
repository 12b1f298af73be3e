"""Fuzzing the REST door (issue #26): whatever a client sends, a client error is a 4xx with a
one-line JSON `error`, never a 5xx, and the server answers a normal request right after.

Property-based (hypothesis): random JSON bodies in every request form (`instances`, `inputs`,
`examples`, b64 objects), nesting far past the depth bound, raw bytes, unicode, random paths,
methods and content types. Examples per test follow the hypothesis profile: `ci` by default, a
longer run with `make fuzz` (HYPOTHESIS_PROFILE=fuzz); tests/conftest.py declares both.
"""

import json
import math

import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmnist import features
from fmnist.dataset import read_split
from serving.server.rest import MAX_JSON_DEPTH, json_depth

MODEL = features.MODEL_NAME
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
    st.text(max_size=10), inner, max_size=5), max_leaves=30)


def _nested_lists(shape: list[int]) -> int:
    """How many JSON arrays an array of this shape is written as: a zero late in the shape holds no
    number but still writes every array above it ([29, 29, 29, 29, 28, 0]: 20 million of them)."""
    return sum(math.prod(shape[:depth]) for depth in range(len(shape)))


# Arrays of numbers of random shapes and depths: near misses of a [N, 28, 28, 1] image batch, at most
# four images' worth of numbers and of arrays. (Unbounded arrays made 60 examples take 40 s to
# write, all of it refused for its size; the size bound has tests of its own.)
SHAPES = st.lists(st.sampled_from([0, 1, 2, 3, 27, 28, 29]), max_size=6).filter(
    lambda s: math.prod(s) <= 4 * 784 and _nested_lists(s) <= 2 * 4 * 784)
KEYS = st.sampled_from(["instances", "inputs", "examples", "signature_name", features.IMAGES_INPUT, "b64", ""])


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@given(JSON_VALUES)
def test_json_depth_is_the_nesting_of_the_document(value):
    body = json.dumps(value).encode()
    assert json_depth(body) == _depth(value)


@given(st.text(alphabet='[]{}"\\ ,:a1', max_size=60))
def test_json_depth_of_any_text_never_raises(text):
    assert json_depth(text.encode()) >= 0


@pytest.fixture(scope="module")
def image(sample_dir) -> list:
    return read_split(sample_dir, "test").images[:1].reshape(-1, *features.IMAGE_SHAPE).astype(float).tolist()


@pytest.fixture(scope="module")
def server(fuzzed_server):  # the name conftest's `rest` client asks for
    return fuzzed_server


def _refused_well(response: httpx.Response) -> None:
    """The property: no 5xx; a refusal is JSON with a one-line error."""
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        message = response.json()["error"]
        assert message and "\n" not in message and "Traceback" not in message, message


def _still_serves(rest, image) -> None:
    answer = rest.post(f"/v1/models/{MODEL}:predict", json={"instances": image})
    assert answer.status_code == 200, answer.text[:300]
    assert len(answer.json()["predictions"]) == 1


@given(body=JSON_VALUES, key=KEYS, wrap=st.booleans())
def test_any_json_body_gets_an_answer_or_a_one_line_4xx(rest, image, body, key, wrap):
    payload = {key: body} if wrap else body
    _refused_well(rest.post(f"/v1/models/{MODEL}:predict", content=json.dumps(payload)))
    _refused_well(rest.post(f"/v1/models/{MODEL}:classify", content=json.dumps(payload)))
    _still_serves(rest, image)


@pytest.mark.slow
@given(shape=SHAPES, fill=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-300, 300) | st.text(max_size=3),
       form=st.sampled_from(["instances", "inputs", "inputs-named", "b64"]))
def test_near_miss_tensors_are_refused_in_one_line(rest, image, shape, fill, form):
    value = np.full(shape, None, dtype=object)
    value.fill(fill)
    tensor = value.tolist()
    payload = {"instances": tensor, "inputs": tensor, "inputs-named": {"inputs": {features.IMAGES_INPUT: tensor}},
               "b64": {"instances": [{"b64": tensor}]}}[form]
    _refused_well(rest.post(f"/v1/models/{MODEL}:predict", content=json.dumps(payload)))
    _still_serves(rest, image)


@given(depth=st.integers(MAX_JSON_DEPTH - 2, 200_000), opener=st.sampled_from(["[", '{"a":']),
       inside=st.sampled_from(["", "1", '"x"']))
def test_nesting_past_the_bound_is_a_400_naming_the_depth(rest, image, depth, opener, inside):
    closer = "]" if opener == "[" else "}"
    body = opener * depth + inside + closer * depth
    response = rest.post(f"/v1/models/{MODEL}:predict", content=body)
    _refused_well(response)
    if depth > MAX_JSON_DEPTH and len(body) <= 1 << 20:
        assert response.status_code == 400
        assert response.json()["error"] == (f"JSON nested {depth} levels deep; at most {MAX_JSON_DEPTH} are "
                                            "accepted")
    _still_serves(rest, image)


def test_the_nesting_of_the_issue_is_a_400(rest, image):
    # The report of issue #26: `[` x 100,000 answered HTTP 500 "internal error: RecursionError".
    response = rest.post(f"/v1/models/{MODEL}:predict", content="[" * 100_000)
    assert response.status_code == 400
    assert response.json()["error"] == f"JSON nested 100000 levels deep; at most {MAX_JSON_DEPTH} are accepted"
    _still_serves(rest, image)


def test_non_ascii_base64_is_a_400(rest, image):
    # Found by test_near_miss_tensors_are_refused_in_one_line: {"b64": "\x80"} was an HTTP 500.
    response = rest.post(f"/v1/models/{MODEL}:predict", json={"instances": [{"b64": "\x80"}]})
    assert response.status_code == 400
    assert response.json()["error"] == ('invalid base64 in a "b64" value: string argument should contain only '
                                        'ASCII characters')
    _still_serves(rest, image)


@pytest.mark.parametrize("verb", ["predict", "classify"])
@pytest.mark.parametrize("name", [[None], {"a": 1}, 3, True])
def test_a_signature_name_that_is_not_a_string_is_a_400(rest, image, verb, name):
    # Found by test_any_json_body_gets_an_answer_or_a_one_line_4xx under a 10-example random
    # profile: {"signature_name": [null], ...} reached the signature lookup and was an HTTP 500.
    response = rest.post(f"/v1/models/{MODEL}:{verb}", json={"signature_name": name, "instances": image})
    assert response.status_code == 400
    assert response.json()["error"] == f"'signature_name' must be a string, got {type(name).__name__}"
    _still_serves(rest, image)


@given(body=st.binary(max_size=2000) | st.text(max_size=500).map(str.encode))
def test_raw_bytes_are_refused_in_one_line(rest, image, body):
    _refused_well(rest.post(f"/v1/models/{MODEL}:predict", content=body))
    _still_serves(rest, image)


@given(path=st.text(max_size=40).filter(lambda p: "#" not in p and "?" not in p),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
       content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                     "multipart/form-data", "", "application/json; charset=latin-1"]))
def test_any_path_method_and_content_type_is_answered_without_a_5xx(rest, image, path, method, content_type):
    try:
        response = rest.request(method, f"/v1/models/{path}", content=json.dumps({"instances": image}),
                                headers={"content-type": content_type} if content_type else None)
    except httpx.InvalidURL:
        return  # the client will not send it: nothing reached the server
    assert response.status_code < 500, response.text[:300]
    _still_serves(rest, image)
