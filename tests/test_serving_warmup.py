"""SavedModel warmup in the project's server: a version's assets.extra/tf_serving_warmup_requests is
replayed while it loads, before it is AVAILABLE; a file that cannot be replayed fails the load, as
in TF Serving. One server, polling a base path that holds one version per case."""

import logging
import os
import re
import shutil
import time

import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from fmnist import features
from fmnist.dataset import read_split
from serving.protocol.model_config import single_model_config, write_model_config
from serving.protocol.names import PROMETHEUS_PATH
from serving.server.process import RunningServer, ServerOptions
from serving.server.warmup import WarmupError, replay, warmup_path
from tfx_pipeline.serving_validation import requests

MODEL = features.MODEL_NAME
WARMUP_REQUESTS = 6  # Predict and Classify, batch sizes 1 and 8 (requests.build_requests)
NO_WARMUP, WARM, TOO_MANY, BAD_RECORD, PUSHED_LATER = 1, 2, 3, 4, 5
BAD_INDEX = 2
REGRESS_LOG = prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog()).SerializeToString()


@pytest.fixture(scope="module")
def images(sample_dir):
    return read_split(sample_dir, "test").images.reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)


def _write_records(model_dir, records: list[bytes]) -> str:
    """A warmup file with exactly these records (write_warmup_file refuses what this test needs)."""
    path = warmup_path(str(model_dir))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    return path


def _log_records(built: list) -> list[bytes]:
    return [requests.prediction_log(r).SerializeToString() for r in built]


def _push(base, version: int, exported_model, records: list[bytes] | None = None) -> None:
    """Version `version` with these warmup records, appearing at once in `base` (renamed into
    place, so the poller never sees it without its warmup file)."""
    staging = base.parent / f"staging-{version}"
    shutil.copytree(exported_model, staging)
    if records is not None:
        _write_records(staging, records)
    os.rename(staging, base / str(version))


def _bad_input_name(images) -> predict_pb2.PredictRequest:
    request = requests.predict_request(images[:1])
    tensor = request.inputs[features.IMAGES_INPUT]
    request.inputs["pixels"].CopyFrom(tensor)
    del request.inputs[features.IMAGES_INPUT]
    return request


@pytest.fixture(scope="module")
def server(tmp_path_factory, exported_model, images):
    root = tmp_path_factory.mktemp("warmup")
    base = root / "models"
    base.mkdir()
    good = _log_records(requests.build_requests(images, WARMUP_REQUESTS))
    one = _log_records([requests.predict_request(images[:1])])[0]
    _push(base, NO_WARMUP, exported_model)
    _push(base, WARM, exported_model, good)
    _push(base, TOO_MANY, exported_model, [one] * (features.MAX_WARMUP_RECORDS + 1))
    _push(base, BAD_RECORD, exported_model, good[:BAD_INDEX] + _log_records([_bad_input_name(images)]))
    write_model_config(single_model_config(MODEL, str(base), latest_versions=10), str(root / "models.config"))
    running = RunningServer(ServerOptions(model_config_file=str(root / "models.config"), rest_port=0, grpc_port=0,
                                          host="127.0.0.1", poll_seconds=0.2)).start()
    running.base = base
    yield running
    running.stop()


def _status(rest) -> dict[int, tuple[str, str]]:
    body = rest.get(f"/v1/models/{MODEL}").json()["model_version_status"]
    return {int(s["version"]): (s["state"], s["status"]["error_message"]) for s in body}


def _warmup_metrics(rest) -> dict[tuple[str, str], float]:
    """{(metric sample name, version): value} for the warmup metrics of MODEL."""
    found = {}
    for family in text_string_to_metric_families(rest.get(PROMETHEUS_PATH).text):
        for sample in family.samples:
            if sample.name.startswith("fmnist_serving_warmup") and sample.labels.get("model") == MODEL:
                found[(sample.name, sample.labels["version"])] = sample.value
    return found


# -- through the server -----------------------------------------------------------------------
def test_a_version_with_a_warmup_file_replays_it_before_it_is_available(server, rest):
    assert _status(rest)[WARM] == ("AVAILABLE", "")
    metrics = _warmup_metrics(rest)
    assert metrics[("fmnist_serving_warmup_requests_total", str(WARM))] == WARMUP_REQUESTS
    assert metrics[("fmnist_serving_warmup_seconds", str(WARM))] > 0


def test_a_version_without_a_warmup_file_loads_as_before(server, rest, images):
    assert _status(rest)[NO_WARMUP] == ("AVAILABLE", "")
    assert _warmup_metrics(rest)[("fmnist_serving_warmup_requests_total", str(NO_WARMUP))] == 0
    answer = rest.post(f"/v1/models/{MODEL}/versions/{NO_WARMUP}:predict", json={"instances": images[:1].tolist()})
    assert answer.status_code == 200, answer.text


def test_more_warmup_records_than_tf_serving_allows_fail_the_load(server, rest):
    state, error = _status(rest)[TOO_MANY]
    assert state == "END"
    assert warmup_path(str(server.base / str(TOO_MANY))) in error
    assert f"more than {features.MAX_WARMUP_RECORDS} warmup records" in error
    assert "\n" not in error
    assert ("fmnist_serving_warmup_requests_total", str(TOO_MANY)) not in _warmup_metrics(rest)


def test_a_failing_warmup_request_fails_the_load_naming_the_record(server, rest):
    state, error = _status(rest)[BAD_RECORD]
    assert state == "END"
    assert warmup_path(str(server.base / str(BAD_RECORD))) in error
    assert f"warmup record {BAD_INDEX} (predict_log) failed: INVALID_ARGUMENT" in error
    assert "unknown ['pixels']" in error
    assert "\n" not in error


def test_a_pushed_version_is_available_only_once_warm(server, rest, exported_model, images, caplog):
    """The metrics are written by the load itself, so whenever the version shows AVAILABLE they
    must already count every warmup request."""
    caplog.set_level(logging.INFO, logger="serving.server.warmup")
    _push(server.base, PUSHED_LATER, exported_model, _log_records(requests.build_requests(images, 3)))
    deadline = time.monotonic() + 120
    while _status(rest).get(PUSHED_LATER, ("",))[0] != "AVAILABLE":
        assert time.monotonic() < deadline, _status(rest)
        time.sleep(0.05)
    assert _warmup_metrics(rest)[("fmnist_serving_warmup_requests_total", str(PUSHED_LATER))] == 3
    assert any(f"replayed 3 warmup requests for {MODEL} version {PUSHED_LATER} in " in r.getMessage()
               for r in caplog.records)


# -- replay() on a loaded version ---------------------------------------------------------------
@pytest.fixture
def servable(server):
    return server.manager.resolve(MODEL, NO_WARMUP)


def test_replay_without_a_file_does_nothing(servable, tmp_path):
    assert replay(servable, str(tmp_path / "absent")) == 0


def test_replay_runs_classify_with_context_and_any_model_spec(servable, tmp_path, images):
    request = requests.classify_request(images[:2], model_name="another_name")
    request.model_spec.version.value = 99  # TF Serving replays on the version loading, whatever this says
    shared = tf.train.Example()
    shared.CopyFrom(request.input.example_list.examples[0])
    request.input.example_list_with_context.context.CopyFrom(shared)  # the image, shared by both examples
    for _ in range(2):
        request.input.example_list_with_context.examples.add()
    path = _write_records(tmp_path, _log_records([request]))
    assert replay(servable, path) == 1


@pytest.mark.parametrize(("records", "message"), [
    (lambda images: [*_log_records([requests.predict_request(images[:1])]), REGRESS_LOG],
     "warmup record 1 is a regress_log; warmup replays only predict_log and classify_log"),
    (lambda images: [prediction_log_pb2.PredictionLog().SerializeToString()],
     "warmup record 0 is an empty PredictionLog"),
    (lambda images: [b"\xff\xff not a proto"], "warmup record 0 is not a PredictionLog"),
    (lambda images: _log_records([requests.predict_request(images[:1])] * 2 + [predict_pb2.PredictRequest(
        inputs={features.IMAGES_INPUT: tf.make_tensor_proto(np.zeros((1, 784), np.float32))})]),
     "warmup record 2 (predict_log) failed: INVALID_ARGUMENT: input 'images' must have shape float32 [N, 28, 28], "
     "got [1, 784]"),
], ids=["regress-log", "empty-log", "not-a-log", "wrong-shape"])
def test_replay_rejects_what_tf_serving_rejects(servable, tmp_path, images, records, message):
    path = _write_records(tmp_path, records(images))
    with pytest.raises(WarmupError, match="^" + re.escape(path)) as raised:
        replay(servable, path)
    assert message in str(raised.value)


def test_replay_reports_the_unreadable_record(servable, tmp_path, images):
    path = _write_records(tmp_path, _log_records([requests.predict_request(images[:1])] * 3))
    with open(path, "r+b") as stream:
        stream.truncate(os.path.getsize(path) - 5)  # the third record loses its tail
    with pytest.raises(WarmupError, match="warmup record 2 is unreadable"):
        replay(servable, path)
