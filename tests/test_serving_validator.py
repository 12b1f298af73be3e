"""The serving check before a push, run as the pipeline runs it (the component's executor, then the
stock TFX Pusher executor) on a model exported by the project's own code and on broken models:
only a model that serves right is infra-blessed, carries its warmup requests and is pushed."""

import json
import os
import shutil
import stat
import sys

import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2
from tfx.components.pusher import executor as pusher_executor
from tfx.types import standard_artifacts
from tfx.v1 import proto

from fmnist import dataset, features
from modules import signatures as signatures_lib
from tfx_pipeline.components import serving_validator as validator
from tfx_pipeline.components.raw_example_gen import to_tf_example
from tfx_pipeline.config import ServingValidationConfig
from tfx_pipeline.serving_validation import server_process

PARAMETERS = dict(split=dataset.TEST, num_requests=6, warmup_requests=10, p99_budget_ms=5000.0, load_timeout_s=120.0,
                  tolerance=1e-5)


@pytest.fixture(scope="module")
def test_examples(tmp_path_factory, sample_dir):
    """A TestExampleGen-like `examples` artifact: the sample's test split as gzipped tf.Examples."""
    artifact = standard_artifacts.Examples()
    artifact.uri = str(tmp_path_factory.mktemp("examples"))
    artifact.split_names = json.dumps([dataset.TEST])
    raw = dataset.read_split(sample_dir, dataset.TEST)
    os.makedirs(os.path.join(artifact.uri, f"Split-{dataset.TEST}"))
    with tf.io.TFRecordWriter(os.path.join(artifact.uri, f"Split-{dataset.TEST}", "data.gz"), "GZIP") as writer:
        for image, label in zip(raw.images, raw.labels, strict=True):
            writer.write(to_tf_example(image, int(label)).SerializeToString())
    return artifact


def _model_artifact(tmp_path, saved_model_dir) -> standard_artifacts.Model:
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    shutil.copytree(saved_model_dir, os.path.join(model.uri, "Format-Serving"))
    return model


def _evaluated(tmp_path, blessed: bool = True) -> standard_artifacts.ModelBlessing:
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "model_blessing")
    blessing.set_int_custom_property("blessed", int(blessed))
    return blessing


def _validate(tmp_path, saved_model_dir, examples, blessed_by_evaluator: bool = True, **overrides):
    """Runs the ServingValidator executor; returns (InfraBlessing, validation.json, ModelBlessing)."""
    infra = standard_artifacts.InfraBlessing()
    infra.uri = str(tmp_path / "infra_blessing")
    os.makedirs(infra.uri)
    evaluated = _evaluated(tmp_path, blessed_by_evaluator)
    inputs = {"model": [_model_artifact(tmp_path, saved_model_dir)], "model_blessing": [evaluated],
              "examples": [examples]}
    validator.ServingValidator.EXECUTOR_SPEC.executor_class().Do(
        inputs, {"blessing": [infra]}, {**PARAMETERS, **overrides})
    with open(os.path.join(infra.uri, validator.RESULT_FILE)) as stream:
        return infra, json.load(stream), evaluated


def _push(tmp_path, evaluated, infra) -> tuple[int, list[str]]:
    """The stock TFX Pusher executor on the two blessings; (pushed, version dirs written)."""
    destination = tmp_path / "serving_model"
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    os.makedirs(pushed.uri)
    push_to = proto.PushDestination(filesystem=proto.PushDestination.Filesystem(base_directory=str(destination)))
    from google.protobuf import json_format

    pusher_executor.Executor().Do({"model_blessing": [evaluated], "infra_blessing": [infra]},
                                  {"pushed_model": [pushed]},
                                  {"push_destination": json_format.MessageToJson(push_to)})
    versions = sorted(os.listdir(destination)) if destination.exists() else []
    return pushed.get_int_custom_property("pushed"), [str(destination / v) for v in versions]


def _warmup_records(model_dir: str) -> list[prediction_log_pb2.PredictionLog]:
    path = os.path.join(model_dir, features.WARMUP_FILE)
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]


@pytest.mark.pipeline
def test_a_model_that_serves_right_is_blessed_and_pushed_with_its_warmup(tmp_path, exported_model, test_examples):
    infra, result, evaluated = _validate(tmp_path, exported_model, test_examples)
    assert result["blessed"] and result["reason"] == "", result
    assert infra.get_int_custom_property("blessed") == 1 and infra.get_int_custom_property("has_model") == 1
    assert os.path.exists(os.path.join(infra.uri, "INFRA_BLESSED"))
    assert result["server"] == server_process.PROJECT_SERVER
    assert result["requests"] == 2 * PARAMETERS["num_requests"]  # each over gRPC and REST
    assert 0 < result["p50_ms"] <= result["p99_ms"] < PARAMETERS["p99_budget_ms"]

    pushed, versions = _push(tmp_path, evaluated, infra)
    assert pushed == 1 and len(versions) == 1
    records = _warmup_records(versions[0])
    assert len(records) == PARAMETERS["warmup_requests"] <= features.MAX_WARMUP_RECORDS
    assert {r.WhichOneof("log_type") for r in records} == {"predict_log", "classify_log"}
    assert records[0].predict_log.request.model_spec.signature_name == features.SERVING_DEFAULT


def _save(module: tf.Module, path, predict, classify=None) -> str:
    signatures = {features.SERVING_DEFAULT: predict}
    if classify is not None:
        signatures[features.CLASSIFY_SIGNATURE] = classify
    tf.saved_model.save(module, str(path), signatures=signatures)
    if classify is not None:
        signatures_lib.mark_classify_signature(str(path))  # what the project's export does
    return str(path)


IMAGES = tf.TensorSpec([None, *features.IMAGE_SHAPE], tf.float32, name=features.IMAGES_INPUT)
EXAMPLES = tf.TensorSpec([None], tf.string, name="inputs")


def _wrong_shape_model(path) -> str:
    """Loads and answers, but with 3 probabilities per image instead of 10."""
    module = tf.Module()

    @tf.function(input_signature=[IMAGES])
    def predict(images):
        batch = tf.shape(images)[0]
        return {"probabilities": tf.fill([batch, 3], 1 / 3), "class_id": tf.zeros([batch], tf.int64),
                "class_name": tf.fill([batch], "T-shirt/top")}

    @tf.function(input_signature=[EXAMPLES])
    def classify(inputs):
        batch = tf.shape(inputs)[0]
        return {"classes": tf.tile(tf.constant([features.CLASS_NAMES]), [batch, 1]),
                "scores": tf.fill([batch, features.NUM_CLASSES], 0.1)}

    module.predict, module.classify = predict, classify
    return _save(module, path, predict, classify)


def _failing_model(path) -> str:
    """Loads, but its serving_default fails on every real image."""
    module = tf.Module()

    @tf.function(input_signature=[IMAGES])
    def predict(images):
        tf.debugging.assert_less(images, -1.0, message="this model cannot take grey levels")
        return {"probabilities": tf.zeros([tf.shape(images)[0], features.NUM_CLASSES])}

    module.predict = predict
    return _save(module, path, predict)


def _not_a_saved_model(path) -> str:
    os.makedirs(path)
    (path / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    return str(path)


@pytest.mark.pipeline
@pytest.mark.parametrize("broken, reason", [
    (_wrong_shape_model, "output 'probabilities' has shape [1, 3], expected [1, 10]"),
    (_failing_model, "cannot take grey levels"),
    (_not_a_saved_model, "could not load the model"),
])
def test_a_model_that_does_not_serve_right_is_not_blessed_and_not_pushed(tmp_path, test_examples, broken, reason,
                                                                          caplog):
    with caplog.at_level("WARNING", logger="tfx_pipeline"):
        infra, result, evaluated = _validate(tmp_path, broken(tmp_path / "broken"), test_examples)
    assert not result["blessed"] and reason in result["reason"], result
    assert "\n" not in result["reason"]
    assert infra.get_int_custom_property("blessed") == 0 and infra.get_int_custom_property("has_model") == 0
    assert os.path.exists(os.path.join(infra.uri, "INFRA_NOT_BLESSED"))
    assert not os.path.exists(os.path.join(infra.uri, "stamped_model"))  # nothing half-written is left
    assert [r.getMessage() for r in caplog.records] == [f"serving validation failed, not pushing: {result['reason']}"]
    assert _push(tmp_path, evaluated, infra) == (0, [])


def test_a_model_the_evaluator_did_not_bless_is_not_served(tmp_path, exported_model, test_examples):
    infra, result, evaluated = _validate(tmp_path, exported_model, test_examples, blessed_by_evaluator=False)
    assert result == {"blessed": False, "reason": validator.NOT_EVALUATED, "warmup_requests": 0,
                      "seconds": result["seconds"]}
    assert result["seconds"] < 5  # no server was started
    assert _push(tmp_path, evaluated, infra) == (0, [])


@pytest.mark.pipeline
def test_a_latency_budget_the_server_cannot_meet_fails_the_check(tmp_path, exported_model, test_examples):
    _, result, _ = _validate(tmp_path, exported_model, test_examples, p99_budget_ms=0.001)
    assert not result["blessed"] and result["reason"].startswith("p99 latency "), result
    assert "over the budget of 0 ms" in result["reason"]


@pytest.mark.pipeline
def test_tensorflow_model_server_is_used_when_it_is_on_path(tmp_path, exported_model, test_examples, monkeypatch):
    """A stand-in `tensorflow_model_server` (the binary cannot be installed here) that takes TF
    Serving's flags and serves them with the project's server: the validator must start it with
    flags it understands and pass on what it answers."""
    fake = tmp_path / "bin" / server_process.TF_SERVING_BINARY
    fake.parent.mkdir()
    fake.write_text(f"""#!/bin/sh
for arg in "$@"; do
  case "$arg" in
    --port=*) grpc="${{arg#--port=}}" ;;
    --rest_api_port=*) rest="${{arg#--rest_api_port=}}" ;;
    --model_config_file=*) config="${{arg#--model_config_file=}}" ;;
  esac
done
exec {sys.executable} -m cli.main serve --tf-serving no --host 127.0.0.1 --grpc-port "$grpc" --rest-port "$rest" \\
  --model-config-file "$config"
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    _, result, _ = _validate(tmp_path, exported_model, test_examples)
    assert result["blessed"], result
    assert result["server"] == server_process.TF_SERVING_BINARY


def test_warmup_requests_are_bounded_by_tf_servings_limit():
    with pytest.raises(ValueError, match=r"warmup_requests must be within 1\.\.1000"):
        ServingValidationConfig(warmup_requests=features.MAX_WARMUP_RECORDS + 1)


def _stand_in_docker(tmp_path, monkeypatch, info_status: int) -> None:
    """A `docker` client on PATH whose `docker info` answers with `info_status` (0: a daemon)."""
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(f"#!/bin/sh\n[ \"$1\" = info ] && exit {info_status}\nexit 2\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")


@pytest.mark.parametrize(("choice", "daemon", "expected"), [
    ("auto", True, "InfraValidator"),  # a Docker daemon answers: TFX's own component
    ("auto", False, "ServingValidator"),  # a docker client without a daemon (this machine)
    ("project", True, "ServingValidator"),
    ("tfx", False, "InfraValidator"),  # asked for: its own run will say what is missing
])
def test_the_serving_check_is_tfx_infra_validator_only_where_docker_answers(tmp_path, monkeypatch, choice, daemon,
                                                                             expected):
    import local_runner
    from tfx_pipeline.pipeline import create_components

    _stand_in_docker(tmp_path, monkeypatch, 0 if daemon else 1)
    config = local_runner.config_from_args(["--sample", "--output-dir", str(tmp_path / "out"),
                                            "--serving-validator", choice], environ={})
    nodes = {node.id: node for node in create_components(config)}
    validator_node = nodes["ServingValidator"]
    assert type(validator_node).__name__ == expected
    pusher = nodes["Pusher"]
    assert pusher.inputs["infra_blessing"].producer_component_id == "ServingValidator"
    assert "model" not in pusher.inputs  # it pushes the validated copy, warmup included
    if expected == "InfraValidator":
        request_spec = json.loads(validator_node.exec_properties["request_spec"])
        assert request_spec["make_warmup"] and request_spec["split_name"] == dataset.TEST
        serving_spec = json.loads(validator_node.exec_properties["serving_spec"])
        assert "local_docker" in serving_spec and serving_spec["tensorflow_serving"]["tags"] == ["2.16.1"]
