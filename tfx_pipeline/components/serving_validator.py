"""Proves a blessed candidate serves before the Pusher ships it: TFX's InfraValidator contract,
for where TFX's own component cannot run (no Docker or Kubernetes: this machine, Vertex Pipelines).

It writes the standard `InfraBlessing` artifact, which the stock Pusher's `infra_blessing` input
gates on (`blessed` custom property, INFRA_BLESSED / INFRA_NOT_BLESSED file), and, like
InfraValidator with `make_warmup`, a copy of the model carrying TF Serving's warmup file
(`has_model` = 1), which is what the Pusher then pushes. Between those: the candidate is served by
a real model server process (serving_validation.server_process), must become AVAILABLE within the
load timeout, and must answer Predict and Classify requests built from real images over gRPC and
REST with the contract's outputs, the in-process SavedModel's values and a p99 latency within
budget (serving_validation.checks). Any failure: not blessed, one line in the console and in
`validation.json`, no model copy left behind.
"""


import json
import logging
import os
import time

import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts
from tfx.utils import io_utils, path_utils

from fmnist.errors import first_line
from modules.inference import read_examples
from tfx_pipeline.serving_validation import checks, requests, server_process

log = logging.getLogger(__name__)
RESULT_FILE = "validation.json"
SERVER_LOG = "server.log"
BLESSED_KEY, HAS_MODEL_KEY, REASON_KEY = "blessed", "has_model", "reason"  # the Pusher reads the first two
_FLAG_FILES = {True: "INFRA_BLESSED", False: "INFRA_NOT_BLESSED"}  # as TFX's InfraValidator writes them
NOT_EVALUATED = "not validated: the model was not blessed (eval hold-out and golden gate)"
_FAILURES = (server_process.ServerStartError, checks.ServingCheckError, OSError, ValueError, tf.errors.OpError)


def _validate(model_dir: str, images, num_requests: int, p99_budget_ms: float, load_timeout_s: float,
              tolerance: float, log_path: str) -> dict:
    with server_process.model_server(model_dir, load_timeout_s, log_path) as endpoints:
        try:
            reference = checks.Reference(model_dir)
        except Exception as err:  # served, but TF cannot load it here: not a model we can vouch for
            raise checks.ServingCheckError(f"the model does not load in-process: {first_line(err)}") from None
        timings = checks.check_served(endpoints, reference, requests.build_requests(images, num_requests),
                                      tolerance, p99_budget_ms)
    return {"server": endpoints.kind, "load_seconds": round(endpoints.load_seconds, 2),
            **{k: round(v, 2) for k, v in timings.summary().items()}}


@component
def ServingValidator(
    model: InputArtifact[standard_artifacts.Model],
    model_blessing: InputArtifact[standard_artifacts.ModelBlessing],
    examples: InputArtifact[standard_artifacts.Examples],
    blessing: OutputArtifact[standard_artifacts.InfraBlessing],
    split: Parameter[str],
    num_requests: Parameter[int],
    warmup_requests: Parameter[int],
    p99_budget_ms: Parameter[float],
    load_timeout_s: Parameter[float],
    tolerance: Parameter[float],
) -> None:
    started = time.monotonic()
    result: dict = {}
    evaluated = bool(model_blessing.get_int_custom_property(BLESSED_KEY))
    if not evaluated:
        reason = NOT_EVALUATED
    else:
        stamped = path_utils.stamped_model_path(blessing.uri)
        try:
            io_utils.copy_dir(path_utils.serving_model_path(model.uri), stamped)
            images, _ = read_examples(examples.uri, split, limit=max(warmup_requests, num_requests) * 32)
            requests.write_warmup_file(stamped, requests.build_requests(images, warmup_requests))
            result = _validate(stamped, images, num_requests, p99_budget_ms, load_timeout_s, tolerance,
                               os.path.join(blessing.uri, SERVER_LOG))
            reason = ""
        except _FAILURES as err:
            reason = first_line(err)
            if tf.io.gfile.exists(stamped):
                tf.io.gfile.rmtree(stamped)
    blessed = not reason
    result.update(blessed=blessed, reason=reason, warmup_requests=warmup_requests if blessed else 0,
                  seconds=round(time.monotonic() - started, 1))
    io_utils.write_string_file(os.path.join(blessing.uri, _FLAG_FILES[blessed]), "")
    io_utils.write_string_file(os.path.join(blessing.uri, RESULT_FILE), json.dumps(result, indent=2))
    blessing.set_int_custom_property(BLESSED_KEY, int(blessed))
    blessing.set_int_custom_property(HAS_MODEL_KEY, int(blessed))
    blessing.set_string_custom_property(REASON_KEY, reason)
    if blessed:
        log.info("serving validation passed on the %s in %.0f s: AVAILABLE after %.1f s, %d requests, p99 %.0f ms; "
                 "%d warmup requests shipped", result["server"], result["seconds"], result["load_seconds"],
                 result["requests"], result["p99_ms"], warmup_requests)
    elif evaluated:
        log.warning("serving validation failed, not pushing: %s", reason)
    else:
        log.info("serving validation skipped: the model was not blessed")
