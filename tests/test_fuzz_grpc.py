"""Fuzzing the gRPC door (issue #26): whatever a client sends to PredictionService or ModelService,
a client error is an INVALID_ARGUMENT-family status with a one-line message, never INTERNAL or
UNKNOWN, and the server answers a normal Predict right after.

Property-based (hypothesis): TensorProtos of every DataType value (invalid ints included), random
shapes (negative and huge dims, unknown rank), tensor_content of the wrong length, mixed *_val
fields, NaN/inf; model specs without a name, with unknown names, signatures, labels and versions
(huge ones too); Classify with random tf.Example features. Examples per test follow the hypothesis
profile: `ci` by default, many more with `make fuzz` (tests/conftest.py declares both).
"""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from fmnist import features
from fmnist.dataset import read_split
from serving.protocol.errors import ServingError
from serving.server.codec import MAX_TENSOR_ELEMENTS, arrays_from_protos
from serving.server.process import ServerOptions

MODEL = features.MODEL_NAME
# What a client error may be answered with; INTERNAL and UNKNOWN are the server's own failures.
CLIENT_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                 grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNIMPLEMENTED}
TIMEOUT = 30  # seconds: a call that takes longer is a hang, and fails the test

DTYPES = st.sampled_from(sorted(types_pb2.DataType.values())) | st.integers(-5, 2**31 - 1)
DIMS = st.lists(st.sampled_from([-1, 0, 1, 2, 27, 28, 784]) | st.integers(-(2**62), 2**62), max_size=5)
FLOATS = st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=40)
INTS = st.lists(st.integers(-(2**31), 2**31 - 1), max_size=40)
NAMES = st.sampled_from([MODEL, "", "nope", MODEL.upper(), "../" + MODEL]) | st.text(max_size=12)
SIGNATURES = st.sampled_from(["", features.SERVING_DEFAULT, "nope"]) | st.text(max_size=12)


@st.composite
def tensor_protos(draw) -> tensor_pb2.TensorProto:
    tensor = tensor_pb2.TensorProto(dtype=draw(DTYPES))
    if draw(st.booleans()):
        tensor.tensor_shape.unknown_rank = True
    for size in draw(DIMS):
        tensor.tensor_shape.dim.add(size=size)
    if draw(st.booleans()):
        tensor.tensor_content = draw(st.binary(max_size=4 * 784 + 3))
    tensor.float_val.extend(draw(FLOATS))
    tensor.int_val.extend(draw(INTS))
    tensor.string_val.extend(draw(st.lists(st.binary(max_size=8), max_size=4)))
    if draw(st.booleans()):
        tensor.half_val.extend(draw(st.lists(st.integers(0, 2**31 - 1), max_size=8)))
        tensor.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8)))
        tensor.double_val.extend(draw(st.lists(st.floats(), max_size=8)))
    return tensor


@st.composite
def model_specs(draw, target) -> None:
    """Fills `target` (a request's model_spec) with a random name, signature and version choice."""
    if draw(st.booleans()):
        target.name = draw(NAMES)
    if draw(st.booleans()):
        target.signature_name = draw(SIGNATURES)
    choice = draw(st.sampled_from(["none", "version", "label"]))
    if choice == "version":
        target.version.value = draw(st.sampled_from([0, 1, 2, -1]) | st.integers(-(2**63), 2**63 - 1))
    elif choice == "label":
        target.version_label = draw(st.sampled_from(["", "stable", "canary", "nope"]) | st.text(max_size=8))


@st.composite
def examples(draw) -> tf.train.Example:
    example = tf.train.Example()
    for name in draw(st.lists(st.sampled_from([features.IMAGE_KEY, features.LABEL_KEY, "", "x"]) | st.text(max_size=6),
                              max_size=3)):
        feature = example.features.feature[name]
        kind = draw(st.sampled_from(["float", "int", "bytes", "none"]))
        if kind == "float":
            feature.float_list.value.extend(draw(st.lists(st.floats(width=32), max_size=800)))
        elif kind == "int":
            feature.int64_list.value.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=800)))
        elif kind == "bytes":
            feature.bytes_list.value.extend(draw(st.lists(st.binary(max_size=8), max_size=3)))
    return example


@pytest.fixture(scope="module")
def image(sample_dir) -> np.ndarray:
    return read_split(sample_dir, "test").images[:1].reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)


@pytest.fixture(scope="module")
def channel(fuzzed_server):
    with grpc.insecure_channel(f"127.0.0.1:{fuzzed_server.grpc_port}") as opened:
        yield opened


@pytest.fixture(scope="module")
def predict(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _answered_or_refused_well(call, request) -> None:
    """The property: an answer, or a client-error status with a one-line message."""
    try:
        call(request, timeout=TIMEOUT)
    except grpc.RpcError as err:
        assert err.code() in CLIENT_ERRORS, (err.code(), err.details())
        assert err.details() and "\n" not in err.details() and "Traceback" not in err.details(), err.details()


def _still_serves(predict, image) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs[features.IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(image))
    answer = predict.Predict(request, timeout=TIMEOUT)
    assert tf.make_ndarray(answer.outputs["probabilities"]).shape == (1, features.NUM_CLASSES)


@given(data=st.data(), tensor=tensor_protos(), input_name=st.sampled_from([features.IMAGES_INPUT, "", "x"]),
       output_filter=st.lists(st.sampled_from(["probabilities", "nope", ""]), max_size=2))
def test_any_predict_request_is_answered_or_refused_as_a_client_error(predict, image, data, tensor, input_name,
                                                                     output_filter):
    request = predict_pb2.PredictRequest(output_filter=output_filter)
    data.draw(model_specs(request.model_spec))
    request.inputs[input_name].CopyFrom(tensor)
    _answered_or_refused_well(predict.Predict, request)
    _still_serves(predict, image)


@given(data=st.data(), batch=st.lists(examples(), max_size=4), context=st.none() | examples())
def test_any_classify_request_is_answered_or_refused_as_a_client_error(predict, image, data, batch, context):
    request = classification_pb2.ClassificationRequest()
    data.draw(model_specs(request.model_spec))
    if context is None:
        request.input.example_list.examples.extend(batch)
    else:
        request.input.example_list_with_context.examples.extend(batch)
        request.input.example_list_with_context.context.CopyFrom(context)
    _answered_or_refused_well(predict.Classify, request)
    _still_serves(predict, image)


@given(data=st.data(), fields=st.lists(st.sampled_from(["signature_def", "", "nope"]) | st.text(max_size=6),
                                       max_size=3))
def test_any_metadata_or_status_request_is_answered_or_refused_as_a_client_error(channel, predict, image, data,
                                                                                 fields):
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
    data.draw(model_specs(metadata.model_spec))
    _answered_or_refused_well(predict.GetModelMetadata, metadata)
    status = get_model_status_pb2.GetModelStatusRequest()
    data.draw(model_specs(status.model_spec))
    _answered_or_refused_well(model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus, status)
    _still_serves(predict, image)


@given(body=st.binary(max_size=2000))
def test_raw_bytes_for_any_method_are_refused_as_a_client_error(channel, predict, image, body):
    # Bytes that are not the method's proto (or a proto of it that decodes oddly): the server's
    # deserializer runs before any handler.
    for method in ("Predict", "Classify", "GetModelMetadata"):
        call = channel.unary_unary(f"/tensorflow.serving.PredictionService/{method}")
        try:
            call(body, timeout=TIMEOUT)
        except grpc.RpcError as err:
            assert err.code() in CLIENT_ERRORS | {grpc.StatusCode.INTERNAL} and "Traceback" not in err.details()
    _still_serves(predict, image)


# -- regressions found by the fuzzing above -------------------------------------------------------
def _refusal(predict, tensor: tensor_pb2.TensorProto) -> grpc.RpcError:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs[features.IMAGES_INPUT].CopyFrom(tensor)
    with pytest.raises(grpc.RpcError) as raised:
        predict.Predict(request, timeout=TIMEOUT)
    return raised.value


@pytest.mark.parametrize("dtype", [types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT, types_pb2.DT_RESOURCE_REF,
                                   types_pb2.DT_VARIANT_REF])
def test_a_resource_or_variant_tensor_is_invalid_argument(predict, image, dtype):
    # Found by fuzzing (the _REF ones by `make fuzz`): tf.make_ndarray raised KeyError for these
    # dtypes, an INTERNAL status.
    tensor = tensor_pb2.TensorProto(dtype=dtype)
    tensor.tensor_shape.dim.add(size=1)
    err = _refusal(predict, tensor)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == f"malformed TensorProto: dtype {types_pb2.DataType.Name(dtype)} cannot be sent as a value"
    _still_serves(predict, image)


@pytest.mark.parametrize("dims", [[1 << 40], [1 << 30], [2, 1 << 62, 1 << 62]])
def test_a_tensor_declaring_too_many_elements_is_refused_before_allocating(predict, image, dims):
    # Found by fuzzing: one float_val with dim 2**40 was a MemoryError (INTERNAL); 2**30 made the
    # server allocate 4 GiB for a 20-byte request, as tf.make_ndarray fills the shape.
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])
    for size in dims:
        tensor.tensor_shape.dim.add(size=size)
    err = _refusal(predict, tensor)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (f"malformed TensorProto: shape {dims} has {np.prod(dims, dtype=object)} elements; "
                             f"at most {MAX_TENSOR_ELEMENTS} are accepted")
    _still_serves(predict, image)


def test_the_element_bound_lets_a_full_request_through():
    # The bound is not below what a request of max_request_instances images needs.
    images = np.zeros((ServerOptions.max_request_instances, *features.IMAGE_SHAPE), np.float32)
    arrays = arrays_from_protos({"x": tf.make_tensor_proto(images)})
    assert arrays["x"].shape == images.shape
    too_many = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    too_many.tensor_shape.dim.add(size=MAX_TENSOR_ELEMENTS + 1)
    with pytest.raises(ServingError, match="at most"):
        arrays_from_protos({"x": too_many})


@pytest.mark.parametrize(("field", "value", "message"), [
    ("name", "a\nb", "Servable not found for request: unknown model 'a\\nb' (serving: fashion_mnist)"),
    ("version_label", "x\ny", "model 'fashion_mnist' has no version label 'x\\ny' (labels: none)"),
    ("signature_name", "s\nt", "model 'fashion_mnist' version 1 has no signature 's\\nt'; available: "),
])
def test_a_name_with_a_newline_is_quoted_in_a_one_line_refusal(predict, image, field, value, message):
    # Found by `make fuzz`: a model name of "\n" made the NOT_FOUND message two lines.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    setattr(request.model_spec, field, value)
    request.inputs[features.IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(image))
    with pytest.raises(grpc.RpcError) as raised:
        predict.Predict(request, timeout=TIMEOUT)
    assert raised.value.code() in CLIENT_ERRORS
    assert raised.value.details().startswith(message) and "\n" not in raised.value.details()
    _still_serves(predict, image)
