"""TF Serving's REST API (https://www.tensorflow.org/tfx/serving/api_rest) as a Starlette app:

    GET  /v1/models/{name}[/versions/{v} | /labels/{l}]            model status
    GET  /v1/models/{name}[/versions/{v} | /labels/{l}]/metadata   signature defs
    POST /v1/models/{name}[/versions/{v} | /labels/{l}]:predict    row or columnar
    POST /v1/models/{name}[/versions/{v} | /labels/{l}]:classify
    GET  /monitoring/prometheus/metrics

Errors are `{"error": "..."}` with a 4xx status for anything the client can fix.

:predict and :classify answers carry the version that ran in an `X-Model-Version` header: the
bodies stay exactly TF Serving's, which has no version in them, and a client still learns it.
They also carry, errors included, the request id in `X-Request-Id` (fmnist/request_ids.py): the
client's own from the same request header, or a new one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from http import HTTPStatus

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fmnist import request_ids
from serving.protocol.errors import INTERNAL, ServingError, bad_request, not_found
from serving.protocol.names import PROMETHEUS_PATH, VERSION_HEADER
from serving.protocol.predict_body import MAX_JSON_DEPTH, json_depth
from serving.server import codec
from serving.server.manager import State
from serving.server.service import CLASSIFY_API, METADATA_API, PREDICT_API, STATUS_API, InferenceService

log = logging.getLogger(__name__)
MODEL_PATH = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[a-z]+))?$")


def _json(payload: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status_code=status, headers=headers,
                    media_type="application/json")


def _error(err: ServingError) -> Response:
    return _json({"error": err.message}, err.status)


def _signature_name(body: object) -> str | None:
    """The body's "signature_name": a string, or absent/null for serving_default. Anything else is
    a 400 (a list reached the signature lookup as an unhashable key, a 500; found by fuzzing)."""
    name = body.get("signature_name") if isinstance(body, dict) else None
    if name is not None and not isinstance(name, str):
        raise bad_request(f"'signature_name' must be a string, got {type(name).__name__}")
    return name


async def _read_json(request: Request, limit: int):
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServingError(f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes",
                           HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServingError(f"request body exceeds the limit of {limit} bytes", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        chunks.append(chunk)
    body = b"".join(chunks)
    # Fewer opening brackets than the bound cannot nest deeper: most bodies skip the scan.
    depth = json_depth(body) if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH else 0
    if depth > MAX_JSON_DEPTH:
        raise bad_request(f"JSON nested {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise bad_request(f"malformed JSON: {err}") from None
    except RecursionError:  # not expected under the depth bound: refused all the same, never a 500
        raise bad_request(f"JSON nested too deep (at most {MAX_JSON_DEPTH} levels)") from None


def _status_json(manager, name, version, label) -> dict:
    statuses = manager.status(name, version, label)
    return {"model_version_status": [
        {"version": str(v), "state": State.Name(state),
         "status": {"error_code": "OK" if not error else "UNKNOWN", "error_message": error}}
        for v, state, error in statuses
    ]}


def create_app(service: InferenceService, max_request_bytes: int) -> Starlette:
    manager, metrics = service.manager, service.metrics

    async def models(request: Request) -> Response:
        match = MODEL_PATH.match(request.path_params["path"])
        if match is None:
            return _error(not_found(f"no such endpoint: {request.url.path}"))
        name, label, verb = match["name"], match["label"], match["verb"]
        version = int(match["version"]) if match["version"] else None
        api = {None: STATUS_API, "predict": PREDICT_API, "classify": CLASSIFY_API}.get(verb, verb)
        if match["metadata"]:
            api = METADATA_API
        # Taken first: every answer of a :predict/:classify carries it, refusals included.
        request_id, refused = service.request_id(api, request.headers.get(request_ids.HEADER), request_ids.HEADER)
        outcome: dict = {}
        with metrics.observe(name, api, "rest", outcome):
            response = await answer(request, name, version, label, verb, api, outcome, refused, request_id)
        if request_id is not None:
            response.headers[request_ids.HEADER] = request_id
        return response

    async def answer(request: Request, name: str, version: int | None, label: str | None, verb: str | None,
                     api: str, outcome: dict, refused: ServingError | None, request_id: str | None) -> Response:
        """The response to one /v1/models call, errors included; `outcome` gets what metrics record."""
        try:
            if refused is not None:
                raise refused  # before the body is read
            expected = "POST" if verb else "GET"
            if request.method != expected:
                raise ServingError(f"{api} takes {expected}, not {request.method}", HTTPStatus.METHOD_NOT_ALLOWED)
            if api == STATUS_API:
                return _json(_status_json(manager, name, version, label))
            servable, shadow = service.route(name, version, label)
            outcome["version"] = servable.version
            if api == METADATA_API:
                return _json({
                    "model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
                    "metadata": {"signature_def": json_format.MessageToDict(
                        service.signature_def_map(servable), preserving_proto_field_name=True)},
                })
            body = await _read_json(request, max_request_bytes)
            served = {VERSION_HEADER: str(servable.version)}
            if api == PREDICT_API:
                signature = servable.signature(_signature_name(body))
                raw, row_format = codec.parse_predict_request(body, list(servable.inputs[signature]))
                _, future = service.submit_predict(servable, signature, raw, shadow, request_id)
                return _json(codec.predict_response(await asyncio.wrap_future(future), row_format),
                             headers=served)
            if api == CLASSIFY_API:
                signature_name = _signature_name(body)
                examples = codec.serialize_examples(codec.examples_from_json(body))
                future = service.submit_classify(servable, signature_name, examples, shadow,
                                                 request_id)
                outputs = await asyncio.wrap_future(future)
                return _json(codec.classify_response_json(outputs["classes"], outputs["scores"]),
                             headers=served)
            raise not_found(f"unknown method ':{verb}' (supported: :predict, :classify)")
        except ServingError as err:
            outcome["code"] = err.code_name
            return _error(err)
        except Exception as err:  # the server stays up; the client learns it was not its fault
            log.exception("internal error on %s", request.url.path)
            outcome["code"] = INTERNAL
            return _json({"error": f"internal error: {type(err).__name__}: {err}"}, 500)

    async def prometheus(_: Request) -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")

    return Starlette(routes=[
        Route("/v1/models/{path:path}", models, methods=["GET", "POST", "PUT", "DELETE"]),
        Route(PROMETHEUS_PATH, prometheus, methods=["GET"]),
    ])
