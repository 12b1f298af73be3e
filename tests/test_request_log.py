"""Request logging: sampled REST and gRPC calls written as PredictionLog TFRecords, read back
equal to what was sent and answered; sampling, drops under a full queue, rotation; Vertex rows."""

import json
import os
import random
import shutil
import time
from datetime import UTC, datetime

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_service_pb2_grpc

from fmnist import features
from fmnist.dataset import read_split
from serving.server import request_log
from serving.server.process import RunningServer, ServerOptions
from serving.server.request_log import RequestLogger, read_request_logs, rows_to_prediction_logs

MODEL = features.MODEL_NAME


@pytest.fixture(scope="module")
def images(sample_dir) -> np.ndarray:
    return read_split(sample_dir, "test").images.reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)


def _start(exported_model, log_dir, **log_options) -> RunningServer:
    base = log_dir.parent / "models"
    if not base.exists():
        base.mkdir()
        shutil.copytree(exported_model, base / "1")
    return RunningServer(ServerOptions(base_path=str(base), rest_port=0, grpc_port=0, host="127.0.0.1",
                                       log_requests_dir=str(log_dir), **log_options)).start()


def _grpc_predict(stub, image: np.ndarray) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs[features.IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(image[np.newaxis]))
    return stub.Predict(request, timeout=30)


def _example(image: np.ndarray) -> tf.train.Example:
    example = tf.train.Example()
    example.features.feature[features.IMAGE_KEY].int64_list.value.extend(image.reshape(-1).astype(int).tolist())
    return example


def test_rest_and_grpc_calls_are_logged_as_sent_and_answered(exported_model, tmp_path, images):
    server = _start(exported_model, tmp_path / "logs")
    sent: list[tuple[str, object, object]] = []
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        with httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=30) as rest:
            for i in range(3):
                answer = rest.post(f"/v1/models/{MODEL}:predict", json={"instances": images[i:i + 1].tolist()})
                assert answer.status_code == 200, answer.text
                sent.append(("rest", images[i:i + 1], answer.json()["predictions"][0]))
                sent.append(("grpc", images[i:i + 1], _grpc_predict(stub, images[i])))
            classify = classification_pb2.ClassificationRequest()
            classify.model_spec.name = MODEL
            classify.input.example_list.examples.append(_example(images[0]))
            sent.append(("classify", classify, stub.Classify(classify, timeout=30)))
    finally:
        server.stop()

    assert not [n for n in os.listdir(tmp_path / "logs") if n.endswith(".tmp")]
    logs = list(read_request_logs(str(tmp_path / "logs")))
    assert len(logs) == len(sent)
    # Calls of one client run one after another: the log keeps their order.
    for logged, (kind, request, answer) in zip(logs, sent, strict=True):
        assert logged.log_metadata.model_spec.name == MODEL
        assert logged.log_metadata.model_spec.version.value == 1
        assert abs(logged.log_metadata.timestamp_secs - time.time()) < 600
        if kind == "classify":
            assert logged.WhichOneof("log_type") == "classify_log"
            assert logged.classify_log.request.input.example_list == request.input.example_list
            assert logged.classify_log.response.result == answer.result
            continue
        call = logged.predict_log
        np.testing.assert_array_equal(tf.make_ndarray(call.request.inputs[features.IMAGES_INPUT]), request)
        if kind == "grpc":
            assert call.response == answer
        else:
            outputs = {k: tf.make_ndarray(v) for k, v in call.response.outputs.items()}
            np.testing.assert_allclose(outputs["probabilities"][0], answer["probabilities"], atol=1e-6)
            assert outputs["class_name"][0].decode() == answer["class_name"]

    start, end = logs[0].log_metadata.timestamp_secs, logs[-1].log_metadata.timestamp_secs + 1
    assert len(list(read_request_logs(str(tmp_path / "logs"), start=start, end=end))) == len(sent)
    assert list(read_request_logs(str(tmp_path / "logs"), end=datetime.fromtimestamp(start, UTC))) == []


@pytest.mark.slow
def test_sampling_logs_about_the_share_asked_for(exported_model, tmp_path, images):
    server = _start(exported_model, tmp_path / "logs", log_sampling=0.25)
    # Seeded: the count is exact for this seed, so the test cannot flake.
    server.request_log._random = random.Random(13).random
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=30) as rest:
            for i in range(400):
                assert rest.post(f"/v1/models/{MODEL}:predict",
                                 json={"instances": images[i % 8:i % 8 + 1].tolist()}).status_code == 200
    finally:
        server.stop()
    draws = random.Random(13)
    expected = sum(draws.random() < 0.25 for _ in range(400))
    assert len(list(read_request_logs(str(tmp_path / "logs")))) == expected
    assert 70 <= expected <= 130


@pytest.mark.slow
def test_a_full_queue_drops_records_and_never_fails_a_request(exported_model, tmp_path, images, monkeypatch):
    def slow_append(self, writer, record):
        time.sleep(0.05)
        writer.write(record)
    monkeypatch.setattr(RequestLogger, "_append", slow_append)
    server = _start(exported_model, tmp_path / "logs", log_queue_size=2)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=30) as rest:
            for i in range(40):
                assert rest.post(f"/v1/models/{MODEL}:predict",
                                 json={"instances": images[i % 8:i % 8 + 1].tolist()}).status_code == 200
            metrics = rest.get("/monitoring/prometheus/metrics").text
    finally:
        server.stop()
    values = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
              if line.startswith("fmnist_serving_request_log_")}
    dropped = values["fmnist_serving_request_log_dropped_total"]
    written = values["fmnist_serving_request_log_written_total"]
    assert dropped > 0
    # What was not dropped is all written by the end (close() flushes the queue).
    assert len(list(read_request_logs(str(tmp_path / "logs")))) == 40 - dropped >= written


def test_files_rotate_by_size_and_are_all_closed_after_stop(exported_model, tmp_path, images):
    server = _start(exported_model, tmp_path / "logs", log_max_bytes=8000)  # ~2 records of 3 KB + outputs
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=30) as rest:
            for i in range(10):
                rest.post(f"/v1/models/{MODEL}:predict", json={"instances": images[i:i + 1].tolist()})
    finally:
        server.stop()
    names = sorted(os.listdir(tmp_path / "logs"))
    assert len(names) >= 3
    assert all(n.startswith(request_log.PREFIX) and n.endswith(request_log.SUFFIX) for n in names)
    assert len(list(read_request_logs(str(tmp_path / "logs")))) == 10


def test_a_file_is_closed_by_age_without_traffic(tmp_path):
    logger = RequestLogger(str(tmp_path), max_seconds=0.2)
    try:
        entry = request_log._Entry(request_log.PREDICT, MODEL, 1, features.SERVING_DEFAULT,
                                   {"x": np.ones((1, 2), np.float32)}, {"y": np.zeros((1,), np.float32)}, time.time())
        logger._offer(entry)
        deadline = time.monotonic() + 10
        while not request_log.request_log_files(str(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(request_log.request_log_files(str(tmp_path))) == 1
    finally:
        logger.close()


DAY = 86400.0
NOW = datetime(2030, 1, 15, 12, tzinfo=UTC).timestamp()  # the fake clock of the retention tests


def _log_file(directory, opened: float, suffix: str = request_log.SUFFIX) -> str:
    """An (empty) log file named as one opened at `opened` would be."""
    stamp = datetime.fromtimestamp(opened, UTC).strftime(request_log._TIME_FORMAT)
    path = os.path.join(directory, f"{request_log.PREFIX}{stamp}-000001{suffix}")
    open(path, "wb").close()
    return path


def _entry() -> request_log._Entry:
    return request_log._Entry(request_log.PREDICT, MODEL, 1, features.SERVING_DEFAULT,
                              {"x": np.ones((1, 2), np.float32)}, {"y": np.zeros((1,), np.float32)}, time.time())


def test_retention_deletes_closed_files_older_than_the_days_at_start(tmp_path):
    old, kept = _log_file(tmp_path, NOW - 3 * DAY), _log_file(tmp_path, NOW - 0.5 * DAY)
    partial = _log_file(tmp_path, NOW - 9 * DAY, request_log.SUFFIX + request_log.PARTIAL)
    other = tmp_path / "notes.txt"
    other.write_text("not a log")
    logger = RequestLogger(str(tmp_path), retention_days=1, clock=lambda: NOW)
    try:
        assert not os.path.exists(old)
        assert os.path.exists(kept) and os.path.exists(partial) and other.exists()  # open files: never
        assert logger.expire() == []
    finally:
        logger.close()


def test_no_retention_keeps_every_file(tmp_path):
    ancient = _log_file(tmp_path, NOW - 3650 * DAY)
    logger = RequestLogger(str(tmp_path), clock=lambda: NOW)
    logger.close()
    assert os.path.exists(ancient)


def test_retention_runs_each_time_a_file_is_closed(tmp_path):
    logger = RequestLogger(str(tmp_path), max_bytes=1, retention_days=2)  # each record closes its file
    try:
        old, kept = _log_file(tmp_path, time.time() - 2.5 * DAY), _log_file(tmp_path, time.time() - 1.5 * DAY)
        logger._offer(_entry())
        deadline = time.monotonic() + 10
        while os.path.exists(old) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(old)
        files = request_log.request_log_files(str(tmp_path))
        assert kept in files and len(files) == 2  # the one just written, and the younger planted one
    finally:
        logger.close()


@pytest.mark.parametrize(("options", "message"), [
    ({"log_sampling": 2.0}, "log_sampling (--log-sampling) is a share within 0..1, got 2"),
    ({"log_max_bytes": 0}, "log_max_bytes (--log-max-bytes) must be positive, got 0"),
    ({"log_retention_days": -1.0}, "log_retention_days (--log-retention-days) must be >= 0 (0: keep forever), got -1"),
])
def test_bad_log_options_are_refused_in_one_line(tmp_path, options, message):
    with pytest.raises(ValueError, match=r"^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        RunningServer(ServerOptions(log_requests_dir=str(tmp_path), **options))


def test_vertex_request_response_rows_become_predict_logs(images):
    prediction = {"probabilities": [0.1] * 10, "class_name": "Bag"}
    rows = [
        {"endpoint": "projects/p/locations/europe-west4/endpoints/42", "deployed_model_id": "1795713092",
         "logging_time": datetime(2026, 11, 26, 12, 0, tzinfo=UTC), "request_id": 7,
         "request_payload": [json.dumps(images[0].tolist()), json.dumps(images[1].tolist())],
         "response_payload": [json.dumps(prediction), json.dumps(prediction)]},
        # A whole :predict body in one string, named inputs, ISO time, a non-numeric model id.
        {"endpoint": "e", "deployed_model_id": "fmnist-canary", "logging_time": "2026-11-26T12:00:01Z",
         "request_id": 8, "request_payload": json.dumps({"instances": [{features.IMAGES_INPUT: images[2].tolist()}]}),
         "response_payload": [json.dumps(prediction)]},
        {"endpoint": "e", "deployed_model_id": "1", "logging_time": 0, "request_id": 9,
         "request_payload": [json.dumps(images[3].tolist())], "response_payload": []},  # failed call: skipped
    ]
    first, second = rows_to_prediction_logs(rows)
    assert first.log_metadata.model_spec.version.value == 1795713092
    assert first.log_metadata.timestamp_secs == int(datetime(2026, 11, 26, 12, 0, tzinfo=UTC).timestamp())
    request = tf.make_ndarray(first.predict_log.request.inputs[features.IMAGES_INPUT])
    assert request.dtype == np.float32
    np.testing.assert_array_equal(request, images[:2])
    outputs = first.predict_log.response.outputs
    np.testing.assert_allclose(tf.make_ndarray(outputs["probabilities"]), [[0.1] * 10] * 2, rtol=1e-6)
    assert tf.make_ndarray(outputs["class_name"]).tolist() == [b"Bag", b"Bag"]
    assert not second.log_metadata.model_spec.HasField("version")
    assert second.log_metadata.timestamp_secs == first.log_metadata.timestamp_secs + 1
    np.testing.assert_array_equal(tf.make_ndarray(second.predict_log.request.inputs[features.IMAGES_INPUT]),
                                  images[2:3])
