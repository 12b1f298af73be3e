"""Continuous training on Vertex: a Cloud Run function that submits the compiled pipeline when a
new data span lands in the bucket.

The uploader writes `gs://BUCKET/<LANDING_PREFIX>/span-N/` (the two `train-*-ubyte.gz` files) and
then, last, the marker `span-N/_SUCCESS`. The function listens to every object finalized in the
bucket, ignores all but that marker (so a half-uploaded span never starts a run) and submits one
Vertex AI PipelineJob for span N, telling the pipeline's ExampleGen which span to read through the
`range_config` runtime parameter.

It is deployed on its own (the function's source is this directory only), so it imports nothing
from the project: the contract it shares with the pipeline (the parameter name and the span
layout) is checked against the real compiled pipeline by tests/test_trigger.py.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions
from google.cloud import aiplatform

try:
    from functions_framework import cloud_event as _cloud_event
except ImportError:  # not installed in the project's venv; the deployed function gets it from requirements.txt
    def _cloud_event(func: Callable[[Any], None]) -> Callable[[Any], None]:
        return func


PIPELINE_NAME = "fashion-mnist"  # tfx_pipeline.config.PIPELINE_NAME: display name and job id prefix
RANGE_CONFIG_PARAMETER = "range_config"  # the compiled pipeline's runtime parameter ExampleGen reads
MARKER = "_SUCCESS"  # written last by the uploader: its arrival means the span is complete
SPAN_PREFIX = "span-"  # fmnist.landing.SPAN_PREFIX
DEFAULT_LANDING_PREFIX = "landing"
REQUIRED_VARIABLES = ("PROJECT", "REGION", "TEMPLATE_PATH", "PIPELINE_ROOT", "SERVICE_ACCOUNT")
# Vertex's rule for PipelineJob ids (aiplatform's _VALID_NAME_PATTERN); checked here so a bad id
# fails with our message rather than deep inside the SDK.
_JOB_ID = re.compile(r"^[a-z][-a-z0-9]{0,127}$")
_TRUE, _FALSE = {"1", "true", "yes"}, {"0", "false", "no"}


class ConfigError(RuntimeError):
    """The function's environment is incomplete or invalid (a deployment mistake, not a data one)."""


@dataclass(frozen=True)
class TriggerConfig:
    project: str
    region: str
    template_path: str  # gs://BUCKET/compiled/<sha>/fashion-mnist-vertex.json: which build runs
    pipeline_root: str
    service_account: str  # the pipelines@ account the run executes as
    landing_prefix: str = DEFAULT_LANDING_PREFIX
    enable_caching: bool | None = None  # None: keep the caching the template was compiled with


def landing_prefix(environ: Mapping[str, str]) -> str:
    """LANDING_PREFIX without surrounding slashes, so `landing`, `/landing/` and `landing/` agree."""
    return environ.get("LANDING_PREFIX", "").strip("/") or DEFAULT_LANDING_PREFIX


def config_from_env(environ: Mapping[str, str]) -> TriggerConfig:
    """The function's settings, all from environment variables (`--set-env-vars` at deploy time).
    Raises ConfigError naming every missing variable at once, so one redeploy fixes them all."""
    missing = [name for name in REQUIRED_VARIABLES if not environ.get(name, "").strip()]
    if missing:
        raise ConfigError(f"missing environment variable{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return TriggerConfig(
        project=environ["PROJECT"].strip(),
        region=environ["REGION"].strip(),
        template_path=environ["TEMPLATE_PATH"].strip(),
        pipeline_root=environ["PIPELINE_ROOT"].strip(),
        service_account=environ["SERVICE_ACCOUNT"].strip(),
        landing_prefix=landing_prefix(environ),
        enable_caching=_optional_bool(environ, "ENABLE_CACHING"),
    )


def _optional_bool(environ: Mapping[str, str], name: str) -> bool | None:
    # Parsed, not truth-tested: bool("false") is True.
    text = environ.get(name, "").strip().lower()
    if not text:
        return None
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ConfigError(f"{name}: invalid value {environ[name]!r}, expected true or false")


def span_number(object_name: str, prefix: str = DEFAULT_LANDING_PREFIX) -> int | None:
    """N for `<prefix>/span-N/_SUCCESS`, else None (any other object in the bucket: the span's data
    files, other prefixes, nested folders). N is 1, 2, ... written without leading zeros, as
    `fmnist land` numbers spans; ExampleGen resolves span N to the directory `span-N` exactly, so a
    `span-007` marker would start a run that finds no data."""
    match = re.fullmatch(rf"{re.escape(prefix.strip('/'))}/{SPAN_PREFIX}([1-9][0-9]*)/{MARKER}", object_name)
    return int(match[1]) if match else None


def range_config_json(span: int) -> str:
    """The `range_config` value that pins ExampleGen to span N: TFX's RangeConfig proto as JSON
    (a static range of one span). The empty string would mean "the newest span" instead, which
    could be a newer span still uploading; naming N makes the run read exactly the span that landed."""
    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}")
    return json.dumps({"static_range": {"start_span_number": span, "end_span_number": span}})


def job_id(span: int, generation: str | int) -> str:
    """A PipelineJob id fixed by the span and the marker's GCS generation. Eventarc delivers at least
    once, so the same event can arrive twice: the second create then fails with AlreadyExists
    instead of starting a second run. Re-uploading the marker (a new generation) does start a new
    run, which is what re-landing a corrected span should do."""
    generation = str(generation)
    if not generation.isdigit():
        raise ValueError(f"a GCS generation is a decimal number, got {generation!r}")
    identifier = f"{PIPELINE_NAME}-{SPAN_PREFIX}{span}-{generation}"
    if not _JOB_ID.match(identifier):
        raise ValueError(f"{identifier!r} is not a valid Vertex PipelineJob id ({_JOB_ID.pattern})")
    return identifier


def submit_span(config: TriggerConfig, span: int, generation: str | int, event_id: str = "") -> str:
    """Submits the run for one span; returns its job id. A job that already exists (a redelivered
    event) is success: the run it names was started by the first delivery."""
    identifier = job_id(span, generation)
    job = aiplatform.PipelineJob(
        display_name=f"{PIPELINE_NAME}-{SPAN_PREFIX}{span}",
        template_path=config.template_path,
        pipeline_root=config.pipeline_root,
        parameter_values={RANGE_CONFIG_PARAMETER: range_config_json(span)},
        job_id=identifier,
        enable_caching=config.enable_caching,
        project=config.project,
        location=config.region,
    )
    try:
        job.submit(service_account=config.service_account)
    except exceptions.AlreadyExists:
        _log("INFO", f"span {span}: run {identifier} already exists (redelivered event), nothing to do",
             span=span, job_id=identifier, event_id=event_id)
        return identifier
    _log("INFO", f"span {span}: submitted {job.resource_name}", span=span, job_id=identifier, event_id=event_id)
    return identifier


@_cloud_event
def on_span_landed(cloud_event: Any) -> None:
    """Entry point for `google.cloud.storage.object.v1.finalized` events (functions-framework
    CloudEvent: `.data` is the GCS object's metadata)."""
    data = cloud_event.data or {}
    event_id = cloud_event["id"]  # the same on a redelivery: ties the log lines of one event together
    bucket, name = data.get("bucket", ""), data.get("name", "")
    prefix = landing_prefix(os.environ)
    span = span_number(name, prefix)
    if span is None:
        # Every object in the bucket fires this function; only the marker means "a span is complete".
        _log("INFO", f"ignored gs://{bucket}/{name}: not a {prefix}/{SPAN_PREFIX}N/{MARKER} marker",
             event_id=event_id)
        return
    try:
        config = config_from_env(os.environ)
    except ConfigError as err:
        _log("ERROR", f"span {span} not submitted: {err}", span=span, event_id=event_id)
        # Raised so the delivery fails: with --retry, Eventarc redelivers it once the variables are fixed.
        raise
    submit_span(config, span, data.get("generation", ""), event_id)


def _log(severity: str, message: str, **fields: Any) -> None:
    # One JSON line on stdout: Cloud Logging reads `severity` and `message` from it, no client library needed.
    print(json.dumps({"severity": severity, "message": message, **fields}), flush=True)
