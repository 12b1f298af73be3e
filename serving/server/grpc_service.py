"""TF Serving's gRPC API: PredictionService (Predict, Classify, GetModelMetadata) and ModelService
(GetModelStatus), on the tensorflow-serving-api protos, so stock TF Serving clients work.

Predict and Classify answer, errors included, with the request id (fmnist/request_ids.py) in the
`x-request-id` trailing metadata: the client's own from the same invocation metadata, or a new one.
Trailing, not initial: it is set before the call runs and goes out with any status, aborts too."""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from fmnist import request_ids
from serving.protocol.errors import INTERNAL, ServingError, bad_request
from serving.server import codec
from serving.server.service import CLASSIFY_API, METADATA_API, PREDICT_API, STATUS_API, InferenceService

log = logging.getLogger(__name__)


def _target(model_spec) -> tuple[str, int | None, str | None]:
    choice = model_spec.WhichOneof("version_choice")
    version = model_spec.version.value if choice == "version" else None
    label = model_spec.version_label if choice == "version_label" else None
    return model_spec.name, version, label


def _client_id(context) -> str | None:
    """The request id the client sent in its invocation metadata (the first, if several), or None."""
    return next((value for key, value in context.invocation_metadata() if key == request_ids.METADATA_KEY), None)


class _Handler:
    """Runs one call with metrics and turns ServingErrors into gRPC status codes. `body` gets the
    outcome dict and the request id the call is answered under (None: this call carries none)."""

    def __init__(self, service: InferenceService):
        self.service = service

    def call(self, api: str, request, context, body):
        outcome: dict = {}
        # Metadata read only when ids are on: warmup replays run with a stand-in context that has none.
        client_id = _client_id(context) if self.service.request_ids else None
        request_id, refused = self.service.request_id(api, client_id, request_ids.METADATA_KEY)
        if request_id is not None:
            context.set_trailing_metadata(((request_ids.METADATA_KEY, request_id),))
        with self.service.metrics.observe(request.model_spec.name, api, "grpc", outcome):
            try:
                if refused is not None:
                    raise refused
                return body(outcome, request_id)
            except ServingError as err:
                outcome["code"] = err.code_name
                context.abort(err.grpc_code, err.message)
            except Exception as err:
                log.exception("internal error in %s", api)
                outcome["code"] = INTERNAL
                context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}: {err}")


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, service: InferenceService):
        self.service = service
        self.handler = _Handler(service)

    def _servable(self, request, outcome):
        return self._route(request, outcome)[0]

    def _route(self, request, outcome):
        """(the Servable that answers, the canary's to shadow it on or None): InferenceService.route."""
        servable, shadow = self.service.route(*_target(request.model_spec))
        outcome["version"] = servable.version
        return servable, shadow

    def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        def body(outcome, request_id):
            servable, shadow = self._route(request, outcome)
            signature, future = self.service.submit_predict(
                servable, request.model_spec.signature_name or None, codec.arrays_from_protos(request.inputs),
                shadow, request_id)
            outputs = future.result()
            if request.output_filter:
                unknown = set(request.output_filter) - set(outputs)
                if unknown:
                    raise bad_request(f"output_filter names unknown outputs {sorted(unknown)}")
                outputs = {k: v for k, v in outputs.items() if k in request.output_filter}
            response = predict_pb2.PredictResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = signature
            codec.protos_from_arrays(outputs, response.outputs)
            return response

        return self.handler.call(PREDICT_API, request, context, body)

    def Classify(self, request: classification_pb2.ClassificationRequest, context):
        def body(outcome, request_id):
            servable, shadow = self._route(request, outcome)
            kind = request.input.WhichOneof("kind")
            if kind == "example_list":
                examples = list(request.input.example_list.examples)
            elif kind == "example_list_with_context":
                with_context = request.input.example_list_with_context
                examples = []
                for example in with_context.examples:
                    merged = type(example)()
                    merged.CopyFrom(with_context.context)
                    merged.MergeFrom(example)
                    examples.append(merged)
            else:
                raise bad_request("ClassificationRequest.input has no examples")
            if not examples:
                raise bad_request("ClassificationRequest.input has no examples")
            outputs = self.service.submit_classify(servable, request.model_spec.signature_name or None,
                                                   codec.serialize_examples(examples), shadow,
                                                   request_id).result()
            response = classification_pb2.ClassificationResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = servable.version
            codec.classification_results(outputs["classes"], outputs["scores"], response.result)
            return response

        return self.handler.call(CLASSIFY_API, request, context, body)

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, context):
        def body(outcome, _request_id):
            unsupported = set(request.metadata_field) - {"signature_def"}
            if unsupported:
                raise bad_request(f"metadata_field {sorted(unsupported)} not supported (only signature_def)")
            servable = self._servable(request, outcome)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = servable.version
            packed = any_pb2.Any()
            packed.Pack(self.service.signature_def_map(servable))
            response.metadata["signature_def"].CopyFrom(packed)
            return response

        return self.handler.call(METADATA_API, request, context, body)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, service: InferenceService):
        self.service = service
        self.handler = _Handler(service)

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):
        def body(outcome, _request_id):
            response = get_model_status_pb2.GetModelStatusResponse()
            for version, state, error in self.service.manager.status(*_target(request.model_spec)):
                status = response.model_version_status.add(version=version, state=state)
                status.status.error_message = error
                status.status.error_code = 0 if not error else 2  # tensorflow.error.Code OK / UNKNOWN
            return response

        return self.handler.call(STATUS_API, request, context, body)


def create_server(service: InferenceService, port: int, host: str = "127.0.0.1", threads: int = 32,
                  max_message_bytes: int = 16 << 20,
                  credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, int]:
    """(the server, not started yet; the port it bound) serving PredictionService and ModelService.

    port 0 picks a free one. Messages over max_message_bytes, either way, fail with
    RESOURCE_EXHAUSTED before any handler runs. With credentials (grpc.ssl_server_credentials)
    the port speaks TLS only; without, plaintext. A port that cannot be bound raises RuntimeError.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        options=[("grpc.max_receive_message_length", max_message_bytes),
                 ("grpc.max_send_message_length", max_message_bytes)],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(service), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(service), server)
    address = f"{host}:{port}"
    if credentials is None:
        return server, server.add_insecure_port(address)
    return server, server.add_secure_port(address, credentials)
