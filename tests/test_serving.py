"""The TF Serving protocol server against a model exported by the project's own Trainer code:
every REST and gRPC call, version labels, bad requests, a hot swap under load, a load test."""

import base64
import contextlib
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from http import HTTPStatus

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from fmnist import features
from fmnist.dataset import read_split
from serving.client.clients import ClientError, GrpcClient, RestClient
from serving.protocol.errors import ServingError
from serving.protocol.model_config import read_model_config, single_model_config, write_model_config
from serving.server.process import RunningServer, ServerOptions, tf_serving_command

MODEL = features.MODEL_NAME
MAX_REQUEST_BYTES = 1 << 20


@pytest.fixture(scope="module")
def test_images(sample_dir):
    test = read_split(sample_dir, "test")
    return test.images.reshape(-1, *features.IMAGE_SHAPE).astype(np.float32), test.labels


@pytest.fixture(scope="module")
def server(tmp_path_factory, exported_model):
    """Versions 1 and 2 (same model), labelled stable=1 and canary=2."""
    root = tmp_path_factory.mktemp("serving")
    for version in (1, 2):
        shutil.copytree(exported_model, root / "models" / str(version))
    config = single_model_config(MODEL, str(root / "models"), {"stable": 1, "canary": 2}, latest_versions=2)
    write_model_config(config, str(root / "models.config"))
    running = RunningServer(ServerOptions(model_config_file=str(root / "models.config"), rest_port=0, grpc_port=0,
                                          host="127.0.0.1", poll_seconds=0.2,
                                          max_request_bytes=MAX_REQUEST_BYTES)).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as opened:
        yield opened


def _reference(exported_model, images):
    """What the SavedModel itself says, without any server in between."""
    serve = tf.saved_model.load(str(exported_model)).signatures[features.SERVING_DEFAULT]
    return serve(images=tf.constant(images))["probabilities"].numpy()


# -- REST -------------------------------------------------------------------------------------
def test_rest_status_for_model_version_and_label(rest):
    status = rest.get(f"/v1/models/{MODEL}").json()["model_version_status"]
    assert {(s["version"], s["state"]) for s in status} == {("1", "AVAILABLE"), ("2", "AVAILABLE")}
    assert rest.get(f"/v1/models/{MODEL}/versions/1").json()["model_version_status"][0]["version"] == "1"
    assert rest.get(f"/v1/models/{MODEL}/labels/canary").json()["model_version_status"][0]["version"] == "2"


def test_rest_metadata_lists_the_signatures(rest):
    body = rest.get(f"/v1/models/{MODEL}/metadata").json()
    # No version or label asked for: the `stable` one answers (the fixture's models.config labels it).
    assert body["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {features.SERVING_DEFAULT, features.TF_EXAMPLE_SIGNATURE, features.CLASSIFY_SIGNATURE,
                               features.EXPLAIN_SIGNATURE}
    images = signatures[features.SERVING_DEFAULT]["inputs"][features.IMAGES_INPUT]
    assert images["dtype"] == "DT_FLOAT"
    assert [int(d["size"]) for d in images["tensor_shape"]["dim"]] == [-1, 28, 28]
    assert signatures[features.CLASSIFY_SIGNATURE]["method_name"] == features.CLASSIFY_METHOD_NAME


def test_rest_predict_row_and_columnar_forms_agree_with_the_model(rest, test_images, exported_model):
    images = test_images[0][:4]
    expected = _reference(exported_model, images)
    rows = rest.post(f"/v1/models/{MODEL}:predict", json={"instances": images.tolist()}).json()["predictions"]
    named_rows = rest.post(f"/v1/models/{MODEL}/labels/stable:predict",
                           json={"instances": [{features.IMAGES_INPUT: i} for i in images.tolist()]}).json()
    columns = rest.post(f"/v1/models/{MODEL}/versions/1:predict",
                        json={"inputs": {features.IMAGES_INPUT: images.tolist()}}).json()["outputs"]
    np.testing.assert_allclose([r["probabilities"] for r in rows], expected, atol=1e-5)
    np.testing.assert_allclose([r["probabilities"] for r in named_rows["predictions"]], expected, atol=1e-5)
    np.testing.assert_allclose(columns["probabilities"], expected, atol=1e-5)
    assert columns["class_name"] == [features.CLASS_NAMES[i] for i in expected.argmax(axis=1)]


def test_rest_predict_with_b64_serialized_examples(rest, test_images, exported_model):
    images, _ = test_images
    examples = []
    for image in images[:2]:
        example = tf.train.Example()
        example.features.feature[features.IMAGE_KEY].int64_list.value.extend(image.reshape(-1).astype(int).tolist())
        examples.append({"b64": base64.b64encode(example.SerializeToString()).decode()})
    body = rest.post(f"/v1/models/{MODEL}:predict",
                     json={"signature_name": features.TF_EXAMPLE_SIGNATURE, "instances": examples})
    assert body.status_code == 200, body.text
    np.testing.assert_allclose(body.json()["predictions"], _reference(exported_model, images[:2]), atol=1e-5)


def test_rest_classify(rest, test_images, exported_model):
    images, _ = test_images
    body = rest.post(f"/v1/models/{MODEL}:classify", json={
        "signature_name": features.CLASSIFY_SIGNATURE,
        "examples": [{features.IMAGE_KEY: image.reshape(-1).astype(int).tolist()} for image in images[:3]]})
    assert body.status_code == 200, body.text
    results = body.json()["results"]
    assert len(results) == 3
    expected = _reference(exported_model, images[:3])
    for result, probabilities in zip(results, expected, strict=True):
        assert [label for label, _ in result] == list(features.CLASS_NAMES)
        np.testing.assert_allclose([score for _, score in result], probabilities, atol=1e-5)


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    (":predict", b"{not json", 400, "malformed JSON"),
    (":predict", {"instances": [[1.0, 2.0]]}, 400, "must have shape float32 [N, 28, 28], got [1, 2]"),
    (":predict", {"instances": [[["x"] * 28] * 28]}, 400, "expects float32 numbers"),
    (":predict", {"instances": [[[300.0] * 28] * 28]}, 400, "must be within [0, 255]; value 300.0"),
    (":predict", {"instances": [[[-1.0] * 28] * 28]}, 400, "must be within [0, 255]; value -1.0"),
    (":predict", {"instances": [[[1.0] * 28] * 27 + [[1.0] * 5]]}, 400, "not a rectangular array"),
    (":predict", {"instances": []}, 400, "non-empty list"),
    (":predict", {"rows": []}, 400, "exactly one of \"instances\""),
    (":predict", {"instances": [[[0.0] * 28] * 28], "inputs": {}}, 400, "exactly one of"),
    (":predict", {"signature_name": "nope", "instances": [[[0.0] * 28] * 28]}, 400, "has no signature 'nope'"),
    (":classify", {"examples": [{features.IMAGE_KEY: [999] * 784}]}, 400, "within [0, 255]"),
    (":classify", {"examples": [{features.IMAGE_KEY: [1, 2, 3]}]}, 400, "the model rejected the input"),
    (":classify", {"instances": []}, 400, "needs \"examples\""),
    ("/versions/7:predict", {"instances": [[[0.0] * 28] * 28]}, 404, "version 7 is not available"),
    ("/labels/beta:predict", {"instances": [[[0.0] * 28] * 28]}, 404, "no version label 'beta'"),
    (":explain", {}, 404, "unknown method ':explain'"),
])
def test_rest_bad_requests_get_a_specific_error(rest, path, body, status, message):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = rest.post(f"/v1/models/{MODEL}{path}", content=content)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_rest_unknown_model_oversized_body_and_wrong_method(rest):
    response = rest.post("/v1/models/nope:predict", json={"instances": [[[0.0] * 28] * 28]})
    assert response.status_code == 404 and "unknown model 'nope'" in response.json()["error"]
    response = rest.post(f"/v1/models/{MODEL}:predict", content=b" " * (MAX_REQUEST_BYTES + 1))
    assert response.status_code == 413 and "exceeds the limit" in response.json()["error"]
    response = rest.get(f"/v1/models/{MODEL}:predict")
    assert response.status_code == 405 and "takes POST" in response.json()["error"]


def test_server_stays_healthy_after_bad_requests(rest, test_images):
    for _ in range(3):
        rest.post(f"/v1/models/{MODEL}:predict", content=b"\xff\xfe garbage")
    response = rest.post(f"/v1/models/{MODEL}:predict", json={"instances": test_images[0][:1].tolist()})
    assert response.status_code == 200


# -- gRPC -------------------------------------------------------------------------------------
def test_grpc_predict_classify_metadata_and_status(server, channel, test_images, exported_model):
    images = test_images[0][:3]
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.version_label = "stable"
    request.inputs[features.IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(images))
    response = stub.Predict(request)
    assert response.model_spec.version.value == 1
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["probabilities"]),
                               _reference(exported_model, images), atol=1e-5)

    client = GrpcClient(f"127.0.0.1:{server.grpc_port}", MODEL)
    classified = client.classify(images)
    np.testing.assert_allclose([[s for _, s in r] for r in classified], _reference(exported_model, images), atol=1e-5)

    metadata = stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": MODEL}, metadata_field=["signature_def"]))
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signature_map)
    assert features.SERVING_DEFAULT in signature_map.signature_def

    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": MODEL}))
    assert {(s.version, s.state) for s in status.model_version_status} == {
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE), (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE)}


@pytest.mark.parametrize(("model", "images", "code", "message"), [
    ("nope", np.zeros((1, 28, 28), np.float32), grpc.StatusCode.NOT_FOUND, "unknown model"),
    (MODEL, np.zeros((1, 28), np.float32), grpc.StatusCode.INVALID_ARGUMENT, "must have shape"),
    (MODEL, np.full((1, 28, 28), 256, np.float32), grpc.StatusCode.INVALID_ARGUMENT, "within [0, 255]"),
    (MODEL, np.zeros((1, 28, 28), np.int32), grpc.StatusCode.OK, ""),  # ints are fine for a float input
])
def test_grpc_errors_carry_status_codes(channel, model, images, code, message):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs[features.IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(images))
    if code == grpc.StatusCode.OK:
        assert stub.Predict(request).outputs["probabilities"]
        return
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request)
    assert raised.value.code() == code and message in raised.value.details()


def test_clients_agree_and_report_server_errors(server, test_images):
    images = test_images[0][:5]
    via_rest = RestClient(f"127.0.0.1:{server.rest_port}", MODEL).predict(images)
    via_grpc = GrpcClient(f"127.0.0.1:{server.grpc_port}", MODEL, label="canary").predict(images)
    np.testing.assert_allclose(via_rest.probabilities, via_grpc.probabilities, atol=1e-6)
    assert via_grpc.version == 2
    with pytest.raises(ClientError, match="version 9 is not available"):
        RestClient(f"127.0.0.1:{server.rest_port}", MODEL, version=9).predict(images)
    with pytest.raises(ClientError, match="NOT_FOUND"):
        GrpcClient(f"127.0.0.1:{server.grpc_port}", "nope").predict(images)


@pytest.mark.parametrize(("label", "version"), [(None, 1), ("stable", 1), ("canary", 2)])
def test_rest_client_reports_the_served_version_like_grpc(server, label, version, test_images):
    images = test_images[0][:2]
    via_rest = RestClient(f"127.0.0.1:{server.rest_port}", MODEL, label=label).predict(images)
    via_grpc = GrpcClient(f"127.0.0.1:{server.grpc_port}", MODEL, label=label).predict(images)
    assert via_rest.version == via_grpc.version == version


def test_rest_version_header_leaves_the_tf_serving_body_alone(rest, test_images):
    images = test_images[0][:1]
    predicted = rest.post(f"/v1/models/{MODEL}/labels/stable:predict", json={"instances": images.tolist()})
    assert predicted.headers["X-Model-Version"] == "1"
    assert set(predicted.json()) == {"predictions"}
    classified = rest.post(f"/v1/models/{MODEL}/labels/canary:classify", json={
        "examples": [{features.IMAGE_KEY: images.reshape(-1).astype(int).tolist()}]})
    assert classified.headers["X-Model-Version"] == "2"
    assert set(classified.json()) == {"results"}


@pytest.mark.parametrize(("version", "label", "expected", "metadata_calls"), [
    (1, None, 1, 0),  # pinned: no need to ask
    (None, "stable", 1, 1),
    (None, None, 1, 1),  # unlabelled: stable
])
def test_rest_client_without_the_version_header_falls_back(server, test_images, version, label, expected,
                                                           metadata_calls):
    """tensorflow_model_server sends the same body without X-Model-Version: the real server's
    responses, with that header dropped on arrival."""
    client = RestClient(f"127.0.0.1:{server.rest_port}", MODEL, version=version, label=label)
    seen = []

    def drop_header(response):
        seen.append(response.url.path)
        response.headers.pop("X-Model-Version", None)

    client._http.event_hooks["response"].append(drop_header)
    assert client.predict(test_images[0][:1]).version == expected
    assert sum(path.endswith("/metadata") for path in seen) == metadata_calls


def test_predict_cli_uses_no_tensorflow_runtime(server, predict_cli):
    """`fmnist predict` over gRPC: answers with class names and never loads TF's runtime."""
    code, lines, stderr = predict_cli(3, "--transport", "grpc", "--server", f"127.0.0.1:{server.grpc_port}")
    assert code == 0, stderr
    assert len(lines) == 5 and all(line.startswith(f"test:{i}") for i, line in enumerate(lines[:3]))
    assert lines[3].startswith("accuracy ") and lines[3].endswith("serving_default over grpc")
    assert all("(true: " in line for line in lines[:3])
    assert lines[-1] == "TF runtime loaded: False"


def test_predict_cli_accuracy_over_several_requests_matches_the_served_model(server, predict_cli, test_images):
    """`fmnist predict test:I-J --summary-only` sends --batch images per request and prints the accuracy
    of the served `serving_default` over every labelled input: the same count a direct client call gives."""
    count = 7
    code, lines, stderr = predict_cli(count, "--server", f"127.0.0.1:{server.rest_port}", "--batch", "3",
                                      "--summary-only")
    assert code == 0, stderr
    images, labels = test_images[0][:count], test_images[1][:count]
    correct = int((RestClient(f"127.0.0.1:{server.rest_port}", MODEL).predict(images).class_ids == labels).sum())
    assert re.fullmatch(rf"accuracy {correct / count:.4f}: {correct} of {count} labelled inputs, "
                        r"model version [12](, 2)?, serving_default over rest", lines[0]), lines
    assert lines[1:] == ["TF runtime loaded: False"]
    code, _, stderr = predict_cli(count, "--batch", "0")
    assert code == 2 and "--batch: expected a whole number >= 1, got '0'" in stderr


def test_predict_cli_summary_only_refuses_unlabelled_inputs_before_any_request(tmp_path, sample_dir, capsys):
    """An image file has no label, so --summary-only would print nothing: a one-line error instead, before
    any request (no server listens on the port)."""
    from cli.main import main

    np.save(tmp_path / "two.npy", np.zeros((2, *features.IMAGE_SHAPE), np.float32))
    code = main(["predict", "test:0", str(tmp_path / "two.npy"), "--data-dir", str(sample_dir), "--summary-only",
                 "--server", "127.0.0.1:1"])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --summary-only prints the accuracy over labelled inputs (test:I-J), but two.npy[0] has no label "
        "(2 of 3 inputs)"]


# -- load, batching, metrics --------------------------------------------------------------------
@pytest.mark.slow
def test_load_from_several_threads_has_zero_errors(server, test_images):
    images = test_images[0]
    failures, done = [], []

    def worker(index):
        client = (GrpcClient(f"127.0.0.1:{server.grpc_port}", MODEL) if index % 2 else
                  RestClient(f"127.0.0.1:{server.rest_port}", MODEL))
        for i in range(400):
            try:
                prediction = client.predict(images[(index * 400 + i) % len(images)])
                done.append(prediction.probabilities.shape == (1, 10))
            except Exception as err:
                failures.append(repr(err))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and len(done) == 2400 and all(done)

    metrics = httpx.get(f"http://127.0.0.1:{server.rest_port}/monitoring/prometheus/metrics").text
    predicted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                    if line.startswith("fmnist_serving_requests_total{") and 'api="predict"' in line
                    and 'code="OK"' in line)
    assert predicted >= 2400
    assert "fmnist_serving_request_latency_seconds_bucket" in metrics
    # Concurrent requests shared TF calls: some batches held more than one row.
    batch_count = float(next(line.split()[-1] for line in metrics.splitlines()
                             if line.startswith("fmnist_serving_batch_size_count")))
    assert batch_count < predicted


def _request_counts(rest) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    exposition = rest.get("/monitoring/prometheus/metrics").text
    return {tuple(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(exposition) for sample in family.samples
            if sample.name == "fmnist_serving_requests_total"}


def _recorded(rest, *requests) -> set[tuple[str, str]]:
    """(transport, code) of the request counters the requests incremented."""
    before = _request_counts(rest)
    for request in requests:
        request()
    return {(dict(labels)["transport"], dict(labels)["code"])
            for labels, value in _request_counts(rest).items() if value > before.get(labels, 0)}


def _grpc_predict(channel, images, version=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[features.IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(images))
    try:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
    except grpc.RpcError:
        pass


@pytest.mark.parametrize(("rest_path", "images", "version", "code"), [
    (":predict", np.zeros((1, 28), np.float32), None, "INVALID_ARGUMENT"),
    ("/versions/7:predict", np.zeros((1, 28, 28), np.float32), 7, "NOT_FOUND"),
    (":predict", np.zeros((1, 28, 28), np.float32), None, "OK"),
])
def test_metrics_code_label_is_the_same_for_both_transports(rest, channel, rest_path, images, version, code):
    recorded = _recorded(
        rest,
        lambda: rest.post(f"/v1/models/{MODEL}{rest_path}", json={"instances": images.tolist()}),
        lambda: _grpc_predict(channel, images, version))
    assert recorded == {("rest", code), ("grpc", code)}


def test_metrics_name_rest_only_failures_with_grpc_codes(rest):
    assert _recorded(rest, lambda: rest.get(f"/v1/models/{MODEL}:predict")) == {("rest", "UNIMPLEMENTED")}
    assert _recorded(rest, lambda: rest.post(f"/v1/models/{MODEL}:predict", content=b" " * (MAX_REQUEST_BYTES + 1))
                     ) == {("rest", "RESOURCE_EXHAUSTED")}
    for status in HTTPStatus:
        if status >= 400:
            error = ServingError("x", status)
            assert error.code_name == error.grpc_code.name
    assert ServingError("x", HTTPStatus.INTERNAL_SERVER_ERROR).code_name == "INTERNAL"
    assert ServingError("x", HTTPStatus.METHOD_NOT_ALLOWED).code_name == "UNIMPLEMENTED"


@contextlib.contextmanager
def _polling_server(base, exported_model):
    """A server on `base` holding version 1, polling the disk every 0.2 s."""
    shutil.copytree(exported_model, base / "1")
    running = RunningServer(ServerOptions(base_path=str(base), rest_port=0, grpc_port=0, host="127.0.0.1",
                                          poll_seconds=0.2)).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.slow
def test_hot_swap_fails_no_request(tmp_path, exported_model, test_images):
    """A new version is pushed (copied file by file, like the Pusher) while requests stream in."""
    base = tmp_path / "models"
    with _polling_server(base, exported_model) as running:
        client = GrpcClient(f"127.0.0.1:{running.grpc_port}", MODEL)
        image = test_images[0][:1]
        versions, failures, stop = [], [], threading.Event()

        def stream():
            while not stop.is_set():
                try:
                    versions.append(client.predict(image).version)
                except Exception as err:
                    failures.append(repr(err))

        streamer = threading.Thread(target=stream)
        streamer.start()
        time.sleep(0.5)
        shutil.copytree(exported_model, base / "2")  # not atomic, as with the TFX Pusher
        deadline = time.monotonic() + 60
        while (not versions or versions[-1] != 2) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        streamer.join()

        assert failures == []
        assert versions[0] == 1 and versions[-1] == 2
        switch = versions.index(2)
        assert set(versions[:switch]) == {1} and set(versions[switch:]) == {2}  # one clean switch
        status = {v: state for v, state, _ in running.manager.status(MODEL)}
        assert status[2] == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert status[1] == get_model_status_pb2.ModelVersionStatus.END


def test_versions_deleted_from_disk_are_unloaded(tmp_path, exported_model, test_images):
    """As TF Serving does: a version whose directory is gone stops being served."""
    base = tmp_path / "models"
    with _polling_server(base, exported_model) as running:
        rest_client = RestClient(f"127.0.0.1:{running.rest_port}", MODEL)
        grpc_client = GrpcClient(f"127.0.0.1:{running.grpc_port}", MODEL)
        assert grpc_client.predict(test_images[0][:1]).version == 1
        shutil.rmtree(base / "1")
        deadline = time.monotonic() + 30
        while running.manager.status(MODEL) != [(1, get_model_status_pb2.ModelVersionStatus.END, "")]:
            assert time.monotonic() < deadline, running.manager.status(MODEL)
            time.sleep(0.1)
        status = rest_client.status()["model_version_status"]
        assert [(s["version"], s["state"]) for s in status] == [("1", "END")]
        with pytest.raises(ClientError, match="HTTP 404"):
            rest_client.predict(test_images[0][:1])
        with pytest.raises(ClientError, match="NOT_FOUND"):
            grpc_client.predict(test_images[0][:1])


# -- production config ------------------------------------------------------------------------
def test_tf_serving_command_and_configs_agree_with_the_options(tmp_path):
    options = ServerOptions(model_name=MODEL, base_path="/models/fashion_mnist", rest_port=8601, grpc_port=8600,
                            version_labels={"stable": 3}, max_batch_size=32, batch_timeout_ms=1.5)
    command = tf_serving_command(options, str(tmp_path))
    flags = _flag_values(command[1:])
    assert command[0] == "tensorflow_model_server" and "--enable_batching" in command
    assert flags["port"] == "8600" and flags["rest_api_port"] == "8601"
    (model,) = read_model_config(flags["model_config_file"]).model_config_list.config
    assert (model.name, model.base_path, dict(model.version_labels)) == (MODEL, "/models/fashion_mnist", {"stable": 3})
    batching = open(flags["batching_parameters_file"]).read()
    assert "max_batch_size { value: 32 }" in batching and "batch_timeout_micros { value: 1500 }" in batching
    assert "/monitoring/prometheus/metrics" in open(flags["monitoring_config_file"]).read()


def test_default_model_name_is_the_contract_constant():
    from serving.client.clients import DEFAULT_MODEL

    assert DEFAULT_MODEL == ServerOptions().model_name == features.MODEL_NAME


@pytest.mark.slow
def test_serve_command_shuts_down_gracefully_on_sigterm(tmp_path, exported_model, test_images):
    import signal
    import socket

    def free_port():
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    shutil.copytree(exported_model, tmp_path / "models" / "1")
    rest_port, grpc_port = free_port(), free_port()
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--model-base-path",
                                str(tmp_path / "models"), "--host", "127.0.0.1", "--rest-port", str(rest_port),
                                "--grpc-port", str(grpc_port), "--tf-serving", "no"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = RestClient(f"127.0.0.1:{rest_port}", MODEL)
        deadline = time.monotonic() + 120
        while True:
            try:
                client.status()
                break
            except ClientError:
                assert process.poll() is None and time.monotonic() < deadline, "server did not come up"
                time.sleep(0.3)
        assert client.predict(test_images[0][:1]).probabilities.shape == (1, 10)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "serving models ['fashion_mnist']" in output


@pytest.mark.slow
def test_serving_code_never_imports_tfx_or_beam():
    script = ("import sys\nimport serving.server.process, serving.server.rest, serving.server.grpc_service\n"
              "import serving.client.clients, serving.client.inputs\n"
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'tfx', 'apache_beam', 'tensorflow_transform', "
              "'tensorflow_model_analysis'}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_serve_runs_tensorflow_model_server_when_it_is_on_path(tmp_path):
    """With the real binary on PATH, `fmnist serve` hands over to it (here a stand-in that records
    its arguments, since the binary cannot be installed on this machine)."""
    import os
    import stat

    fake = tmp_path / "bin" / "tensorflow_model_server"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path / 'argv.txt'}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--model-base-path", str(tmp_path / "models"),
                           "--rest-port", "9501", "--grpc-port", "9500", "--label", "stable=7"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    flags = _flag_values((tmp_path / "argv.txt").read_text().split())
    assert (flags["port"], flags["rest_api_port"]) == ("9500", "9501")
    (model,) = read_model_config(flags["model_config_file"]).model_config_list.config
    assert (model.name, model.base_path, dict(model.version_labels)) == (MODEL, str(tmp_path / "models"), {"stable": 7})


def _flag_values(args):
    return dict(arg.removeprefix("--").split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)
