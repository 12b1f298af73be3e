"""The continuous-training trigger (deploy/trigger/main.py), offline: which GCS objects start a run,
what it submits to Vertex (aiplatform.PipelineJob mocked, the narrowest boundary), that a
redelivered event starts nothing new, and that the parameter it sends exists in the real compiled
pipeline."""

import ast
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from google.api_core import exceptions
from google.protobuf import json_format

REPO = Path(__file__).resolve().parent.parent
TRIGGER_DIR = REPO / "deploy" / "trigger"
ENV = {
    "PROJECT": "demo-proj",
    "REGION": "europe-west4",
    "TEMPLATE_PATH": "gs://demo-bucket/compiled/abc123/fashion-mnist-vertex.json",
    "PIPELINE_ROOT": "gs://demo-bucket/pipeline_root",
    "SERVICE_ACCOUNT": "pipelines@demo-proj.iam.gserviceaccount.com",
}
GENERATION = "1712345678901234"


def _load_trigger():
    # deploy/ is not a package and the function is deployed from its own directory: load it by path.
    spec = importlib.util.spec_from_file_location("fmnist_span_trigger", TRIGGER_DIR / "main.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


trigger = _load_trigger()


class FakeCloudEvent:
    """What functions-framework hands the function: `.data` and attributes by key."""

    def __init__(self, data: dict, event_id: str = "event-1"):
        self.data = data
        self._attributes = {"id": event_id, "type": "google.cloud.storage.object.v1.finalized"}

    def __getitem__(self, key: str) -> str:
        return self._attributes[key]


def _event(name: str, generation: str = GENERATION, event_id: str = "event-1") -> FakeCloudEvent:
    return FakeCloudEvent({"bucket": "demo-bucket", "name": name, "generation": generation,
                           "metageneration": "1", "contentType": "application/octet-stream"}, event_id)


class _Jobs(list):
    fake: type  # the fake PipelineJob class, to make its submit() fail


@pytest.fixture
def jobs(monkeypatch):
    """Replaces aiplatform.PipelineJob (as the trigger module sees it) with a recorder; returns the
    list of created jobs, each with the constructor's kwargs and the submit() kwargs."""
    created = _Jobs()

    class FakePipelineJob:
        submit_error: Exception | None = None

        def __init__(self, **kwargs):
            self.kwargs, self.submitted = kwargs, None
            created.append(self)

        @property
        def resource_name(self) -> str:
            return f"projects/{self.kwargs['project']}/locations/{self.kwargs['location']}/pipelineJobs/" \
                   f"{self.kwargs['job_id']}"

        def submit(self, **kwargs):
            if FakePipelineJob.submit_error is not None:
                raise FakePipelineJob.submit_error
            self.submitted = kwargs

        def __getattr__(self, name):  # only the SDK's public surface is part of the contract
            raise AttributeError(f"the trigger used PipelineJob.{name}")

    monkeypatch.setattr(trigger.aiplatform, "PipelineJob", FakePipelineJob)
    created.fake = FakePipelineJob
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("LANDING_PREFIX", "ENABLE_CACHING"):
        monkeypatch.delenv(name, raising=False)
    return created


def _log_lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_a_span_marker_submits_the_template_for_that_span(jobs, capsys):
    trigger.on_span_landed(_event("landing/span-3/_SUCCESS"))

    (job,) = jobs
    assert job.kwargs == {
        "display_name": "fashion-mnist-span-3",
        "template_path": "gs://demo-bucket/compiled/abc123/fashion-mnist-vertex.json",
        "pipeline_root": "gs://demo-bucket/pipeline_root",
        "parameter_values": {"range_config": '{"static_range": {"start_span_number": 3, "end_span_number": 3}}'},
        "job_id": f"fashion-mnist-span-3-{GENERATION}",
        "enable_caching": None,
        "project": "demo-proj",
        "location": "europe-west4",
    }
    assert job.submitted == {"service_account": "pipelines@demo-proj.iam.gserviceaccount.com"}
    (line,) = _log_lines(capsys)
    assert line["severity"] == "INFO" and line["job_id"] == f"fashion-mnist-span-3-{GENERATION}"
    assert line["message"] == (f"span 3: submitted projects/demo-proj/locations/europe-west4/pipelineJobs/"
                               f"fashion-mnist-span-3-{GENERATION}")


def test_the_range_config_is_tfx_range_config_json_for_exactly_that_span():
    from tfx.proto import range_config_pb2

    parsed = json_format.Parse(trigger.range_config_json(12), range_config_pb2.RangeConfig())
    assert parsed == range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
        start_span_number=12, end_span_number=12))
    with pytest.raises(ValueError, match="span must be >= 1"):
        trigger.range_config_json(0)


def test_the_job_id_is_fixed_by_span_and_generation_and_valid_for_vertex():
    from google.cloud.aiplatform.constants import pipeline as pipeline_constants

    first = trigger.job_id(3, GENERATION)
    assert first == trigger.job_id(3, int(GENERATION)) == f"fashion-mnist-span-3-{GENERATION}"
    assert trigger.job_id(3, "1712345678909999") != first  # a re-uploaded marker is a new run
    assert trigger.job_id(4, GENERATION) != first
    # The SDK's own rule for job ids, with the longest span and generation GCS can produce.
    assert pipeline_constants._VALID_NAME_PATTERN.match(trigger.job_id(2**63 - 1, str(2**63 - 1)))
    with pytest.raises(ValueError, match="decimal number"):
        trigger.job_id(3, "")


def test_a_redelivered_event_submits_the_same_job_id_and_already_exists_is_success(jobs, capsys):
    event = _event("landing/span-5/_SUCCESS", event_id="event-9")
    trigger.on_span_landed(event)
    jobs.fake.submit_error = exceptions.AlreadyExists("pipelineJobs/fashion-mnist-span-5 already exists")
    trigger.on_span_landed(event)  # no exception: the first delivery's run stands

    first, second = jobs
    assert first.kwargs == second.kwargs  # same job id, so Vertex refuses the duplicate
    submitted, duplicate = _log_lines(capsys)
    assert submitted["message"].startswith("span 5: submitted ")
    assert duplicate["severity"] == "INFO" and duplicate["event_id"] == "event-9"
    assert duplicate["message"] == (f"span 5: run fashion-mnist-span-5-{GENERATION} already exists "
                                    "(redelivered event), nothing to do")


def test_other_vertex_errors_fail_the_delivery_so_it_is_retried(jobs):
    jobs.fake.submit_error = exceptions.ServiceUnavailable("try again")
    with pytest.raises(exceptions.ServiceUnavailable):
        trigger.on_span_landed(_event("landing/span-5/_SUCCESS"))


@pytest.mark.parametrize("name", [
    "landing/span-3/train-images-idx3-ubyte.gz",  # the span's data, before its marker
    "landing/span-3/train-labels-idx1-ubyte.gz",
    "landing/span-3/_SUCCESS.tmp",
    "landing/span-3/nested/_SUCCESS",
    "landing/_SUCCESS",
    "landing/span-/_SUCCESS",
    "landing/span-x/_SUCCESS",
    "landing/span-0/_SUCCESS",  # spans start at 1
    "landing/span-007/_SUCCESS",  # ExampleGen would look for span-7
    "other/span-3/_SUCCESS",
    "archive/landing/span-3/_SUCCESS",
    "landing-old/span-3/_SUCCESS",
    "compiled/abc123/fashion-mnist-vertex.json",
    "pipeline_root/123/FileBasedExampleGen/_SUCCESS",
])
def test_objects_that_are_not_a_span_marker_submit_nothing(jobs, capsys, name):
    trigger.on_span_landed(_event(name))
    assert jobs == []
    (line,) = _log_lines(capsys)
    assert line["severity"] == "INFO"
    assert line["message"] == f"ignored gs://demo-bucket/{name}: not a landing/span-N/_SUCCESS marker"


def test_span_number_parses_markers_under_the_configured_prefix():
    assert trigger.span_number("landing/span-1/_SUCCESS") == 1
    assert trigger.span_number("landing/span-1024/_SUCCESS") == 1024
    assert trigger.span_number("data/fmnist/landing/span-2/_SUCCESS", "data/fmnist/landing") == 2
    assert trigger.span_number("data/fmnist/landing/span-2/_SUCCESS", "/data/fmnist/landing/") == 2
    assert trigger.span_number("landing/span-2/_SUCCESS", "data/fmnist/landing") is None
    assert trigger.span_number("dataXfmnist/landing/span-2/_SUCCESS", "data.fmnist/landing") is None  # literal


def test_landing_prefix_comes_from_the_environment(jobs, monkeypatch):
    monkeypatch.setenv("LANDING_PREFIX", "incoming/fmnist/")
    trigger.on_span_landed(_event("landing/span-3/_SUCCESS"))
    assert jobs == []
    trigger.on_span_landed(_event("incoming/fmnist/span-3/_SUCCESS"))
    (job,) = jobs
    assert job.kwargs["parameter_values"] == {"range_config": trigger.range_config_json(3)}


def test_a_missing_variable_is_one_error_line_naming_it_and_nothing_is_submitted(jobs, capsys, monkeypatch):
    monkeypatch.delenv("TEMPLATE_PATH")
    with pytest.raises(trigger.ConfigError, match=r"^missing environment variable TEMPLATE_PATH$"):
        trigger.on_span_landed(_event("landing/span-3/_SUCCESS"))
    assert jobs == []
    (line,) = _log_lines(capsys)
    assert line["severity"] == "ERROR"
    assert line["message"] == "span 3 not submitted: missing environment variable TEMPLATE_PATH"

    with pytest.raises(trigger.ConfigError, match=r"^missing environment variables REGION, TEMPLATE_PATH$"):
        trigger.config_from_env(dict(ENV, REGION=" ", TEMPLATE_PATH=""))


def test_a_missing_variable_does_not_matter_for_objects_that_are_ignored(jobs, capsys, monkeypatch):
    # Every data file fires the function too: those must not fail while the configuration is broken.
    monkeypatch.delenv("PROJECT")
    trigger.on_span_landed(_event("landing/span-3/train-images-idx3-ubyte.gz"))
    assert jobs == [] and _log_lines(capsys)[0]["severity"] == "INFO"


@pytest.mark.parametrize(("text", "value"), [("", None), ("true", True), ("1", True), ("FALSE", False),
                                             ("no", False)])
def test_enable_caching_is_parsed_not_truth_tested(text, value):
    assert trigger.config_from_env(dict(ENV, ENABLE_CACHING=text)).enable_caching is value
    with pytest.raises(trigger.ConfigError, match=r"ENABLE_CACHING: invalid value 'maybe'"):
        trigger.config_from_env(dict(ENV, ENABLE_CACHING="maybe"))


def test_enable_caching_reaches_the_job(jobs, monkeypatch):
    monkeypatch.setenv("ENABLE_CACHING", "false")
    trigger.on_span_landed(_event("landing/span-3/_SUCCESS"))
    assert jobs[0].kwargs["enable_caching"] is False


def test_the_function_is_self_contained_and_its_requirements_cover_its_imports():
    # It is deployed from deploy/trigger alone: a project import would fail only in the cloud.
    tree = ast.parse((TRIGGER_DIR / "main.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == {"google", "functions_framework"}
    requirements = {line.split("==")[0].strip() for line in (TRIGGER_DIR / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")}
    assert requirements == {"functions-framework", "google-cloud-aiplatform"}
    lock = (REPO / "requirements" / "requirements.lock.txt").read_text()
    pinned = next(line for line in (TRIGGER_DIR / "requirements.txt").read_text().splitlines()
                  if line.startswith("google-cloud-aiplatform=="))
    assert f"\n{pinned}\n" in lock  # the SDK version these tests ran against


def test_constants_shared_with_the_project_agree():
    from fmnist import landing
    from tfx_pipeline.config import PIPELINE_NAME
    from tfx_pipeline.pipeline import RANGE_CONFIG_PARAMETER, range_config_value

    assert trigger.PIPELINE_NAME == PIPELINE_NAME
    assert trigger.SPAN_PREFIX == landing.SPAN_PREFIX
    assert trigger.RANGE_CONFIG_PARAMETER == RANGE_CONFIG_PARAMETER
    assert json.loads(trigger.range_config_json(7)) == json.loads(range_config_value(7))


def test_the_compiled_pipeline_declares_the_parameter_the_trigger_sends(tmp_path):
    from google.cloud.aiplatform.utils import pipeline_utils

    import kubeflow_runner

    config, _ = kubeflow_runner.config_from_args(
        ["--project", "demo-proj", "--region", "europe-west4", "--bucket", "gs://demo-bucket",
         "--image", "europe-west4-docker.pkg.dev/demo-proj/fashion-mnist/pipeline:abc123"], environ={})
    compiled = json.loads(kubeflow_runner.compile_pipeline(config, tmp_path / "pipeline.json").read_text())
    parameters = compiled["pipelineSpec"]["root"].get("inputDefinitions", {}).get("parameters", {})
    assert trigger.RANGE_CONFIG_PARAMETER in parameters, sorted(parameters)
    declared = parameters[trigger.RANGE_CONFIG_PARAMETER]
    # TFX 1.16 writes IR schema 2.0.0 (`type`); newer IR says `parameterType`. The SDK reads either.
    assert (declared.get("parameterType") or declared.get("type")) == "STRING"
    # What PipelineJob() does with parameter_values: it refuses a name or type the template does not declare.
    builder = pipeline_utils.PipelineRuntimeConfigBuilder.from_job_spec_json(compiled)
    builder.update_runtime_parameters({trigger.RANGE_CONFIG_PARAMETER: trigger.range_config_json(3)})
    runtime = builder.build()
    sent = (runtime.get("parameterValues") or runtime["parameters"])[trigger.RANGE_CONFIG_PARAMETER]
    assert sent in (trigger.range_config_json(3), {"stringValue": trigger.range_config_json(3)})
