"""The Vertex runner, offline: the compiled pipeline JSON puts each component where it belongs,
compiling opens no network connection, and `--submit` sends the right arguments to the
aiplatform SDK (mocked at PipelineJob, the narrowest boundary)."""

import json
import re
import socket
from pathlib import Path

import pytest

import kubeflow_runner
from fmnist.settings import SettingsError

IMAGE = "europe-west4-docker.pkg.dev/demo-proj/fashion-mnist/pipeline:abc123"
BASE_FLAGS = ["--project", "demo-proj", "--region", "europe-west4", "--bucket", "gs://demo-bucket",
              "--image", IMAGE, "--service-account", "pipelines@demo-proj.iam.gserviceaccount.com"]
BEAM_COMPONENTS = {"ExampleGen", "TestExampleGen", "StatisticsGen", "Transform", "Evaluator", "GoldenEvaluator",
                   "TestEvaluator"}
REPO = Path(__file__).resolve().parent.parent
KFP_V2_EXECUTOR = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"


class NetworkBlockedError(AssertionError):
    pass


def _no_network(*args, **kwargs):
    raise NetworkBlockedError(f"compilation tried to open a network connection: {args}")


def _compile(tmp_path_factory, *extra) -> dict:
    output = tmp_path_factory.mktemp("vertex") / "pipeline.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _no_network)
        patch.setattr(socket.socket, "connect_ex", _no_network)
        patch.setattr(socket, "create_connection", _no_network)
        patch.setattr(socket, "getaddrinfo", _no_network)
        assert kubeflow_runner.main([*BASE_FLAGS, "--output", str(output), *extra]) == 0
    return json.loads(output.read_text())


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _compile(tmp_path_factory, "--training-replicas", "3", "--accelerator-type", "NVIDIA_TESLA_T4",
                    "--accelerator-count", "1", "--traffic-percentage", "10", "--dataflow-max-workers", "7")


def _tasks(pipeline) -> dict:
    """Every task: the root's (the exit handler) and those of the `tfx-dag` sub-DAG it follows."""
    spec = pipeline["pipelineSpec"]
    inner = spec["components"].get(kubeflow_runner.TFX_DAG, {}).get("dag", {}).get("tasks", {})
    return {**{k: v for k, v in spec["root"]["dag"]["tasks"].items() if k != kubeflow_runner.TFX_DAG}, **inner}


def _parameter(pipeline, task: str, name: str) -> str:
    return _tasks(pipeline)[task]["inputs"]["parameters"][name]["runtimeValue"]["constantValue"]["stringValue"]


def _container(pipeline, task: str) -> dict:
    executor = pipeline["pipelineSpec"]["components"][task]["executorLabel"]
    return pipeline["pipelineSpec"]["deploymentSpec"]["executors"][executor]["container"]


def test_every_component_is_compiled_and_runs_in_the_project_image(compiled):
    tasks = set(_tasks(compiled))
    assert {"ExampleGen", "TestExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "AnomaliesGate",
            "DriftGate", "Transform", "Trainer", "Evaluator", "GoldenEvaluator", "BlessingGate", "TestEvaluator",
            "ServingValidator", "Pusher", "previous_span", "span_window", "span_verdict"} <= tasks
    # No span resolver: the Vertex compiler has no custom-strategy query (tfx_pipeline.vertex_verdicts:
    # steps read the verdicts instead); the golden gate's baseline is the latest blessed model there.
    assert {t for t in tasks if "resolver" in t} == {"latest_blessed_model_resolver-model-blessing-resolver",
                                                     "latest_blessed_model_resolver-model-resolver",
                                                     "stable_model_resolver-model-blessing-resolver",
                                                     "stable_model_resolver-model-resolver"}
    for task in tasks - {t for t in tasks if "resolver" in t}:
        container = _container(compiled, task)
        assert container["image"] == IMAGE, task
        # Vertex runs TFX's executor explicitly, so the image's entrypoint can be Beam's boot.
        assert container["command"] == ["python", "-m", KFP_V2_EXECUTOR]
    assert compiled["runtimeConfig"]["gcsOutputDirectory"] == "gs://demo-bucket/pipeline_root"


def test_beam_components_run_on_dataflow_with_the_project_image(compiled):
    for task in _tasks(compiled):
        if "resolver" in task:
            continue
        args = _container(compiled, task)["args"]
        if task not in BEAM_COMPONENTS:
            assert "--runner=DataflowRunner" not in args, task
            continue
        flags = dict(a.removeprefix("--").split("=", 1) for a in args if a.startswith("--") and "=" in a)
        assert flags["runner"] == "DataflowRunner", task
        assert flags["sdk_container_image"] == IMAGE
        assert (flags["project"], flags["region"]) == ("demo-proj", "europe-west4")
        assert flags["temp_location"].startswith("gs://demo-bucket/") and flags["staging_location"].startswith("gs://")
        assert flags["max_num_workers"] == "7" and flags["machine_type"]
        assert flags["service_account_email"] == "pipelines@demo-proj.iam.gserviceaccount.com"


def test_batch_inference_runs_on_dataflow_when_asked(compiled, tmp_path_factory):
    assert not {"UnlabelledExampleGen", "BulkInferrer"} & set(_tasks(compiled))
    with_inference = _compile(tmp_path_factory, "--dataflow-max-workers", "7",
                              "--bulk-inference-input", "gs://demo-bucket/unlabelled")
    tasks = _tasks(with_inference)
    assert set(tasks["BulkInferrer"]["dependentTasks"]) == {"UnlabelledExampleGen", "Trainer", "BlessingGate"}
    assert _parameter(with_inference, "UnlabelledExampleGen", "input_base") == "gs://demo-bucket/unlabelled"
    for task in ("UnlabelledExampleGen", "BulkInferrer"):
        args = _container(with_inference, task)["args"]
        flags = dict(a.removeprefix("--").split("=", 1) for a in args if a.startswith("--") and "=" in a)
        assert flags["runner"] == "DataflowRunner" and flags["sdk_container_image"] == IMAGE, task
        assert flags["max_num_workers"] == "7" and flags["temp_location"].startswith("gs://demo-bucket/"), task


def test_trainer_runs_on_vertex_training_with_a_multi_worker_gpu_spec(compiled):
    config = json.loads(_parameter(compiled, "Trainer", "custom_config"))
    assert config["ai_platform_enable_vertex"] is True and config["ai_platform_vertex_region"] == "europe-west4"
    training = config["ai_platform_training_args"]
    assert training["project"] == "demo-proj"
    chief, workers = training["worker_pool_specs"]
    assert (chief["replica_count"], workers["replica_count"]) == (1, 2)
    for pool in (chief, workers):
        assert pool["container_spec"]["image_uri"] == IMAGE
        assert pool["machine_spec"]["accelerator_type"] == "NVIDIA_TESLA_T4"
    assert config["seed"] == 42  # the project's own training config travels with it
    assert _parameter(compiled, "Trainer", "run_fn") == "modules.trainer.run_fn"


def test_pusher_deploys_to_a_vertex_endpoint_with_a_traffic_split(compiled):
    config = json.loads(_parameter(compiled, "Pusher", "custom_config"))
    assert config["ai_platform_enable_vertex"] is True
    from google.cloud.aiplatform.constants import prediction

    # A real pre-built TF serving image (the aiplatform SDK's own list), not a made-up tag.
    assert config["ai_platform_vertex_container_image_uri"] in prediction.TF_CONTAINER_URIS
    serving = config["ai_platform_serving_args"]
    assert serving["endpoint_name"] == "fashion-mnist" and serving["project_id"] == "demo-proj"
    assert serving["traffic_percentage"] == 10
    # It pushes the copy the serving check validated (with its warmup requests), once both blessed it.
    pusher = _tasks(compiled)["Pusher"]
    assert set(pusher["dependentTasks"]) == {"BlessingGate", "ServingValidator"}
    assert set(pusher["inputs"]["artifacts"]) == {"model_blessing", "infra_blessing"}


def test_serving_validation_runs_in_the_project_image_with_its_settings(compiled):
    """TFX's InfraValidator needs Docker beside it, which Vertex Pipelines does not give: the
    project's ServingValidator runs there, on the Trainer's model and the official test split."""
    validator = _tasks(compiled)["ServingValidator"]
    assert set(validator["dependentTasks"]) == {"Trainer", "BlessingGate", "TestExampleGen"}
    assert _parameter(compiled, "ServingValidator", "split") == "test"
    warmup = _tasks(compiled)["ServingValidator"]["inputs"]["parameters"]["warmup_requests"]
    assert warmup["runtimeValue"]["constantValue"] == {"intValue": "64"}
    assert "InfraValidator" not in json.dumps(compiled)


def test_tfx_infra_validator_is_refused_on_vertex():
    with pytest.raises(SettingsError, match="serving_validator=tfx cannot run on Vertex Pipelines"):
        kubeflow_runner.config_from_args([*BASE_FLAGS, "--serving-validator", "tfx"], environ={})


def test_code_is_referenced_by_module_path_and_the_schema_by_its_path_in_the_image(compiled):
    text = json.dumps(compiled)
    assert "module_file" not in text and "/work/" not in text  # nothing from the compiling machine
    assert _parameter(compiled, "Transform", "preprocessing_fn") == "modules.preprocessing.preprocessing_fn"
    schema_file = _parameter(compiled, "ImportSchemaGen", "schema_file")
    assert schema_file == f"{kubeflow_runner.IMAGE_WORKDIR}/schema/schema.pbtxt"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(rf"^WORKDIR {kubeflow_runner.IMAGE_WORKDIR}$", dockerfile, re.M)
    assert (REPO / "schema" / "schema.pbtxt").is_file()


def test_tuner_runs_on_vertex_when_enabled(tmp_path_factory):
    pipeline = _compile(tmp_path_factory, "--tune")
    config = json.loads(_parameter(pipeline, "Tuner", "custom_config"))
    assert config["ai_platform_tuning_args"]["job_spec"]["worker_pool_specs"][0]["container_spec"]["image_uri"] == IMAGE
    assert config["remote_trials_working_dir"].startswith("gs://demo-bucket/")
    assert _parameter(pipeline, "Tuner", "tuner_fn") == "modules.tuner.tuner_fn"
    assert "Tuner" in _tasks(pipeline)["Trainer"]["dependentTasks"]


def test_submit_sends_the_compiled_template_to_vertex(tmp_path, monkeypatch):
    from google.cloud import aiplatform

    calls = {}

    class FakePipelineJob:
        resource_name = "projects/demo-proj/locations/europe-west4/pipelineJobs/fashion-mnist-1"
        state = "PIPELINE_STATE_SUCCEEDED"

        def __init__(self, **kwargs):
            calls["job"] = kwargs

        def submit(self, **kwargs):
            calls["submit"] = kwargs

        def wait(self):
            calls["wait"] = True

        def __getattr__(self, name):  # the real SDK's private helpers are not part of its contract
            raise AttributeError(f"the runner used PipelineJob.{name}, which is not public API")

    monkeypatch.setattr(aiplatform, "init", lambda **kwargs: calls.setdefault("init", kwargs))
    monkeypatch.setattr(aiplatform, "PipelineJob", FakePipelineJob)
    output = tmp_path / "p.json"
    assert kubeflow_runner.main([*BASE_FLAGS, "--output", str(output), "--submit", "--wait", "--no-cache"]) == 0

    assert calls["init"] == {"project": "demo-proj", "location": "europe-west4", "staging_bucket": "gs://demo-bucket"}
    assert calls["job"] == {"display_name": "fashion-mnist", "template_path": str(output),
                            "pipeline_root": "gs://demo-bucket/pipeline_root", "enable_caching": False,
                            "parameter_values": {"range_config": ""},  # the newest span
                            "project": "demo-proj", "location": "europe-west4"}
    assert calls["submit"] == {"service_account": "pipelines@demo-proj.iam.gserviceaccount.com"}
    assert calls["wait"] is True and json.loads(output.read_text())["pipelineSpec"]


def test_the_span_is_a_runtime_parameter_of_example_gen_read_from_the_landing_prefix(compiled, tmp_path_factory):
    assert compiled["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]["range_config"]["type"] == "STRING"
    example_gen = _tasks(compiled)["ExampleGen"]["inputs"]["parameters"]
    assert example_gen["range_config"] == {"componentInputParameter": "range_config"}
    assert json.loads(_parameter(compiled, "ExampleGen", "input_config")) == {"splits": [
        {"name": "train", "pattern": "span-{SPAN}/train-*-ubyte.gz"},
        {"name": "eval", "pattern": "span-{SPAN}/train-*-ubyte.gz"}]}
    assert _parameter(compiled, "ExampleGen", "input_base") == "gs://demo-bucket/landing"
    assert _parameter(compiled, "TestExampleGen", "input_base") == "gs://demo-bucket/data/fashion-mnist"
    # The value a trigger (or --span) sends is RangeConfig JSON that ExampleGen's driver parses.
    from tfx.proto import range_config_pb2
    from tfx.utils import proto_utils

    from tfx_pipeline.pipeline import range_config_value

    parsed = proto_utils.json_to_proto(range_config_value(3), range_config_pb2.RangeConfig())
    assert (parsed.static_range.start_span_number, parsed.static_range.end_span_number) == (3, 3)


def test_span_verdicts_drive_the_drift_baseline_and_the_window_on_vertex(compiled):
    tasks = _tasks(compiled)
    drift_inputs = tasks["DriftGate"]["inputs"]["artifacts"]
    assert drift_inputs["previous"]["taskOutputArtifact"] == {"producerTask": "previous_span",
                                                              "outputArtifactKey": "baseline_statistics"}
    assert drift_inputs["statistics"]["taskOutputArtifact"]["producerTask"] == "StatisticsGen"
    # The window merges this run's span with the trainable ones, after the drift gate accepted it.
    assert "DriftGate" in tasks["span_window"]["dependentTasks"]
    assert tasks["span_window"]["inputs"]["artifacts"]["examples"]["taskOutputArtifact"]["producerTask"] == "ExampleGen"
    assert tasks["span_window"]["inputs"]["parameters"]["num_spans"]["runtimeValue"]["constantValue"]["intValue"] == "3"
    assert tasks["Transform"]["inputs"]["artifacts"]["examples"]["taskOutputArtifact"] == {
        "producerTask": "span_window", "outputArtifactKey": "window_examples"}
    for task in ("previous_span", "span_window", "span_verdict"):
        assert _parameter(compiled, task, "project") == "demo-proj"
        assert _parameter(compiled, task, "pipeline_name") == "fashion-mnist"


def test_the_exit_handler_records_every_runs_verdict_failed_or_not(compiled):
    recorder = compiled["pipelineSpec"]["root"]["dag"]["tasks"]["span_verdict"]
    assert recorder["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert recorder["inputs"]["parameters"]["final_status"] == {"taskFinalStatus": {"producerTask": "tfx-dag"}}
    assert _container(compiled, "span_verdict")["image"] == IMAGE
    # TFX puts the tasks in a sub-DAG but declares range_config on the root only: it is passed down.
    spec = compiled["pipelineSpec"]
    assert spec["components"]["tfx-dag"]["inputDefinitions"]["parameters"]["range_config"]["type"] == "STRING"
    assert spec["root"]["dag"]["tasks"]["tfx-dag"]["inputs"]["parameters"]["range_config"] == {
        "componentInputParameter": "range_config"}
    assert _tasks(compiled)["ExampleGen"]["inputs"]["parameters"]["range_config"] == {
        "componentInputParameter": "range_config"}


def test_the_trainer_warm_starts_from_the_latest_blessed_model(compiled):
    base = _tasks(compiled)["Trainer"]["inputs"]["artifacts"]["base_model"]["taskOutputArtifact"]
    assert base["producerTask"] == "latest_blessed_model_resolver-model-resolver"


def test_a_bigquery_pipeline_has_its_span_compiled_into_the_query(tmp_path_factory):
    pipeline = _compile(tmp_path_factory, "--bigquery-table", "demo-proj.fmnist.examples", "--span", "4")
    (split,) = json.loads(_parameter(pipeline, "ExampleGen", "input_config"))["splits"]
    # Vertex runs no ExampleGen driver for queries: TFX's own substitution, done at compile time.
    assert split["pattern"] == "SELECT image, label FROM `demo-proj.fmnist.examples` WHERE span = DIV(345600, 86400)"
    assert "inputDefinitions" not in pipeline["pipelineSpec"]["root"]  # so no range_config parameter to send
    assert _parameter(pipeline, "ExampleGen", "output_config")


@pytest.mark.parametrize(("flags", "message"), [
    (["--bigquery-table", "demo-proj.fmnist.examples"], "bigquery_table needs span N >= 1"),
    (["--bigquery-table", "x`; DROP", "--span", "2"], "expected a BigQuery table id"),
])
def test_bad_bigquery_settings_are_one_line_errors(flags, message, capsys):
    assert kubeflow_runner.main([*BASE_FLAGS, *flags]) == 2
    assert message in capsys.readouterr().err


def test_console_link_is_built_from_the_resource_name():
    link = kubeflow_runner.console_link("projects/demo-proj/locations/europe-west4/pipelineJobs/fashion-mnist-1")
    assert link == ("https://console.cloud.google.com/vertex-ai/locations/europe-west4/pipelines/runs/"
                    "fashion-mnist-1?project=demo-proj")
    with pytest.raises(ValueError, match="not a PipelineJob resource name"):
        kubeflow_runner.console_link("projects/p/locations/l/trainingPipelines/1")


REQUIRED_ENV = {"FMNIST_PROJECT": "p", "FMNIST_REGION": "r", "FMNIST_BUCKET": "gs://b", "FMNIST_IMAGE": "i"}


def test_settings_come_from_flags_then_environment_then_config_file(tmp_path):
    config_file = tmp_path / "vertex.yaml"
    config_file.write_text("project: from-file\nregion: us-central1\nbucket: gs://file-bucket\nimage: img:1\n"
                           "training_replicas: 2\n")
    config, _ = kubeflow_runner.config_from_args(["--config", str(config_file), "--region", "europe-west1"],
                                                 environ={"FMNIST_PROJECT": "from-env", "FMNIST_REGION": "asia-east1"})
    assert (config.vertex.project, config.vertex.region, config.vertex.bucket) == (
        "from-env", "europe-west1", "gs://file-bucket")
    assert config.vertex.training_replicas == 2 and config.data_root == "gs://file-bucket/data/fashion-mnist"
    config, _ = kubeflow_runner.config_from_args(["--config", str(config_file)],
                                                 environ={"FMNIST_TRAINING_REPLICAS": "3"})
    assert config.vertex.training_replicas == 3  # a string, converted

    with pytest.raises(SettingsError, match=r"missing --bucket \(FMNIST_BUCKET\), --image \(FMNIST_IMAGE\)"):
        kubeflow_runner.config_from_args(["--project", "p", "--region", "r"], environ={})
    with pytest.raises(SettingsError, match="must be a gs:// URI"):
        kubeflow_runner.config_from_args(["--project", "p", "--region", "r", "--bucket", "/tmp/x", "--image", "i"],
                                         environ={})


def test_pipeline_name_from_the_environment_or_file_is_not_beaten_by_a_flag_default(tmp_path):
    # Bug: --pipeline-name had a default, so it always won over FMNIST_PIPELINE_NAME and the file.
    config, _ = kubeflow_runner.config_from_args([], environ={**REQUIRED_ENV, "FMNIST_PIPELINE_NAME": "from-env"})
    assert config.pipeline_name == "from-env"
    config_file = tmp_path / "c.yaml"
    config_file.write_text("pipeline_name: from-file\n")
    config, _ = kubeflow_runner.config_from_args(["--config", str(config_file)], environ=REQUIRED_ENV)
    assert config.pipeline_name == "from-file"
    config, _ = kubeflow_runner.config_from_args([], environ=REQUIRED_ENV)
    assert config.pipeline_name == "fashion-mnist"


@pytest.mark.parametrize(("text", "value"), [("false", False), ("0", False), ("no", False), ("true", True),
                                             ("1", True), ("YES", True)])
def test_boolean_variables_are_parsed_not_truth_tested(text, value):
    # Bug: bool("false") is True, so FMNIST_TUNE=false turned tuning on and FMNIST_NO_CACHE=0 the cache off.
    config, _ = kubeflow_runner.config_from_args([], environ={**REQUIRED_ENV, "FMNIST_TUNE": text,
                                                             "FMNIST_NO_CACHE": text})
    assert config.training.tuning.tune is value
    assert config.enable_cache is (not value)


def test_a_bad_boolean_names_the_variable():
    with pytest.raises(SettingsError, match=r"FMNIST_TUNE: invalid value 'maybe' for tune"):
        kubeflow_runner.config_from_args([], environ={**REQUIRED_ENV, "FMNIST_TUNE": "maybe"})
    assert kubeflow_runner.main([], environ={**REQUIRED_ENV, "FMNIST_EPOCHS": "ten"}) == 2


def test_submit_wait_output_and_config_are_read_from_the_environment(tmp_path, monkeypatch):
    # Bug: these were read from env/YAML but main() used only the flags.
    config_file = tmp_path / "c.yaml"
    config_file.write_text("dataflow_max_workers: 4\n")
    config, run = kubeflow_runner.config_from_args([], environ={
        **REQUIRED_ENV, "FMNIST_SUBMIT": "yes", "FMNIST_WAIT": "1", "FMNIST_OUTPUT": str(tmp_path / "x.json"),
        "FMNIST_CONFIG": str(config_file)})
    assert (run.submit, run.wait, run.output) == (True, True, tmp_path / "x.json")
    assert config.vertex.dataflow_max_workers == 4
    submitted = []
    monkeypatch.setattr(kubeflow_runner, "submit", lambda config, template, wait: submitted.append((template, wait)))
    monkeypatch.setattr(kubeflow_runner, "compile_pipeline", lambda config, output: output)
    assert kubeflow_runner.main([], environ={**REQUIRED_ENV, "FMNIST_SUBMIT": "true",
                                            "FMNIST_OUTPUT": str(tmp_path / "y.json")}) == 0
    assert submitted == [(tmp_path / "y.json", False)]


def test_cloud_build_tests_builds_pushes_then_compiles_with_the_same_image():
    import yaml

    build = yaml.safe_load((REPO / "cloudbuild.yaml").read_text())
    steps = {step["id"]: step for step in build["steps"]}
    assert list(steps) == ["test", "build", "push", "compile-and-submit", "deploy-serving"]  # the last: opt-in
    assert "bash .ci/run" in steps["test"]["args"][-1]  # the README's test command, as in CI
    image = steps["build"]["args"][steps["build"]["args"].index("-t") + 1]
    assert steps["push"]["args"] == ["push", image] and build["images"] == [image]
    compile_step = steps["compile-and-submit"]
    assert compile_step["name"] == image and f"IMAGE={image}" in compile_step["env"]
    script = compile_step["args"][-1]
    assert script.startswith("python kubeflow_runner.py") and '--image "$$IMAGE"' in script and "--submit" in script
