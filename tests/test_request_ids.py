"""Request ids against a running server: every REST and gRPC Predict/Classify answer carries one
(errors too), a client's own comes back unchanged, a bad one is refused before the body is read,
the request log keeps the ids the clients got, and `request_ids=False` sends none."""

import re
from collections import Counter

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_service_pb2_grpc

from fmnist import features, request_ids
from fmnist.dataset import read_split
from serving.client.clients import ClientError, GrpcClient, RestClient
from serving.server.process import RunningServer, ServerOptions
from serving.server.request_log import read_request_logs

MODEL = features.MODEL_NAME
GENERATED = re.compile(r"^[0-9a-f]{32}$")
BAD_IDS = ["../etc", "a" * 65, "a b"]


@pytest.fixture(scope="module")
def images(sample_dir) -> np.ndarray:
    return read_split(sample_dir, "test").images.reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)


@pytest.fixture(scope="module")
def models(exported_model_base):
    return exported_model_base


def _start(models, **options) -> RunningServer:
    return RunningServer(ServerOptions(base_path=str(models), rest_port=0, grpc_port=0, host="127.0.0.1",
                                       **options)).start()


@pytest.fixture(scope="module")
def server(models):
    running = _start(models)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _rest_predict(rest, images, model=MODEL, headers=None, content=None) -> httpx.Response:
    if content is not None:
        return rest.post(f"/v1/models/{model}:predict", content=content, headers=headers)
    return rest.post(f"/v1/models/{model}:predict", json={"instances": images[:1].tolist()}, headers=headers)


def _predict_request(images, model=MODEL) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs[features.IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(images[:1]))
    return request


def _classify_request(images) -> classification_pb2.ClassificationRequest:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    example = request.input.example_list.examples.add()
    example.features.feature[features.IMAGE_KEY].int64_list.value.extend(images[0].reshape(-1).astype(int).tolist())
    return request


def _trailing_id(call) -> str | None:
    return dict(call.trailing_metadata() or ()).get(request_ids.METADATA_KEY)


def _grpc_error(method, request, metadata=None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        method.with_call(request, timeout=30, metadata=metadata)
    return caught.value


def test_rest_and_grpc_answers_carry_a_generated_id(rest, stub, images):
    predicted = _rest_predict(rest, images)
    classified = rest.post(f"/v1/models/{MODEL}:classify",
                           json={"examples": [{features.IMAGE_KEY: images[0].reshape(-1).astype(int).tolist()}]})
    assert predicted.status_code == classified.status_code == 200
    found = [predicted.headers[request_ids.HEADER], classified.headers[request_ids.HEADER]]
    found += [_trailing_id(stub.Predict.with_call(_predict_request(images), timeout=30)[1]),
              _trailing_id(stub.Classify.with_call(_classify_request(images), timeout=30)[1])]
    assert all(GENERATED.match(value) for value in found), found
    assert len(set(found)) == 4
    # Status and metadata calls are not answers to be joined with labels: no id.
    assert request_ids.HEADER not in rest.get(f"/v1/models/{MODEL}").headers


def test_a_client_id_comes_back_unchanged(rest, stub, server, images):
    mine = "order-17:a.b_C"
    assert _rest_predict(rest, images, headers={request_ids.HEADER: mine}).headers[request_ids.HEADER] == mine
    _, call = stub.Predict.with_call(_predict_request(images), timeout=30, metadata=((request_ids.METADATA_KEY, mine),))
    assert _trailing_id(call) == mine
    for client in (RestClient(f"127.0.0.1:{server.rest_port}"), GrpcClient(f"127.0.0.1:{server.grpc_port}")):
        try:
            assert client.predict(images[:2], request_id=mine).request_id == mine
            assert GENERATED.match(client.predict(images[:2]).request_id)
            assert client.explain(images[:1], request_id="x1").prediction.request_id == "x1"
        finally:
            client.close()


@pytest.mark.parametrize("bad", BAD_IDS)
def test_a_bad_client_id_is_refused_in_one_line_before_the_body_is_read(rest, stub, images, bad):
    with pytest.raises(ValueError) as expected:
        request_ids.check(bad, request_ids.HEADER)
    # Not JSON: a refusal that names the id, not the body, proves the body was never read.
    answer = _rest_predict(rest, images, headers={request_ids.HEADER: bad}, content=b"not json")
    assert answer.status_code == 400
    assert answer.json()["error"] == str(expected.value)
    assert "\n" not in answer.json()["error"]
    assert GENERATED.match(answer.headers[request_ids.HEADER])  # a new id: the bad one is never echoed

    request = predict_pb2.PredictRequest()  # empty: it would fail on its inputs, were it read
    request.model_spec.name = MODEL
    error = _grpc_error(stub.Predict, request, metadata=((request_ids.METADATA_KEY, bad),))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ValueError) as expected_grpc:
        request_ids.check(bad, request_ids.METADATA_KEY)
    assert error.details() == str(expected_grpc.value)
    assert "\n" not in error.details()
    assert GENERATED.match(_trailing_id(error))


def test_error_answers_carry_an_id_too(rest, stub, server, images):
    unknown = _rest_predict(rest, images, model="no-such-model")
    assert unknown.status_code == 404 and GENERATED.match(unknown.headers[request_ids.HEADER])
    malformed = _rest_predict(rest, images, headers={request_ids.HEADER: "mine-1"}, content=b"{")
    assert malformed.status_code == 400 and malformed.headers[request_ids.HEADER] == "mine-1"
    error = _grpc_error(stub.Predict, _predict_request(images, model="no-such-model"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and GENERATED.match(_trailing_id(error))

    for client in (RestClient(f"127.0.0.1:{server.rest_port}", model="no-such-model"),
                   GrpcClient(f"127.0.0.1:{server.grpc_port}", model="no-such-model")):
        try:
            with pytest.raises(ClientError) as failed:
                client.predict(images[:1], request_id="lost-1")
            assert failed.value.request_id == "lost-1"
            with pytest.raises(ClientError, match="is not a request id") as refused:
                client.predict(images[:1], request_id="../etc")  # refused by the client, before any request
            assert refused.value.request_id is None
        finally:
            client.close()


def test_ids_are_unique_over_many_calls(server, images):
    rest, grpc_client = RestClient(f"127.0.0.1:{server.rest_port}"), GrpcClient(f"127.0.0.1:{server.grpc_port}")
    try:
        found = [client.predict(images[i % 8:i % 8 + 1]).request_id
                 for i in range(100) for client in (rest, grpc_client)]
    finally:
        rest.close()
        grpc_client.close()
    assert len(found) == 200 and len(set(found)) == 200
    assert all(GENERATED.match(value) for value in found)


def test_the_request_log_keeps_the_ids_the_clients_got(models, tmp_path, images):
    running = _start(models, log_requests_dir=str(tmp_path / "logs"))
    got = []
    try:
        rest, grpc_client = RestClient(f"127.0.0.1:{running.rest_port}"), GrpcClient(f"127.0.0.1:{running.grpc_port}")
        for i, client in enumerate((rest, grpc_client, rest, grpc_client)):
            got.append(client.predict(images[i:i + 1], request_id=f"mine-{i}" if i % 2 else None).request_id)
        _, call = prediction_service_pb2_grpc.PredictionServiceStub(grpc_client._channel).Classify.with_call(
            _classify_request(images), timeout=30)
        got.append(_trailing_id(call))
        rest.close()
        grpc_client.close()
    finally:
        running.stop()
    logged = [request_ids.of_log(record) for record in read_request_logs(str(tmp_path / "logs"))]
    assert Counter(logged) == Counter(got)
    assert "mine-1" in logged and "mine-3" in logged


def test_request_ids_off_sends_and_logs_none(models, tmp_path, images):
    running = _start(models, request_ids=False, log_requests_dir=str(tmp_path / "logs"))
    try:
        answer = httpx.post(f"http://127.0.0.1:{running.rest_port}/v1/models/{MODEL}:predict",
                            json={"instances": images[:1].tolist()}, headers={request_ids.HEADER: "a b"}, timeout=30)
        assert answer.status_code == 200 and request_ids.HEADER not in answer.headers  # nor is a bad one checked
        client = GrpcClient(f"127.0.0.1:{running.grpc_port}")
        try:
            assert client.predict(images[:1], request_id="mine-1").request_id is None
        finally:
            client.close()
    finally:
        running.stop()
    logged = list(read_request_logs(str(tmp_path / "logs")))
    assert len(logged) == 2 and [request_ids.of_log(record) for record in logged] == ["", ""]
