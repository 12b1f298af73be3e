"""A small client for the TF Serving protocol (this project's server or tensorflow_model_server):
`RestClient` (JSON over HTTP, no TensorFlow) and `GrpcClient` (PredictionService protos, no
TensorFlow runtime either, see serving/protocol/protos.py). Both return the same `ServedPrediction`,
and the same `Explanation` from the model's `explain` signature.

Both speak TLS when given a CA file (PEM: the certificates that signed the server's): REST over
https verified against it, gRPC over a secure channel. An `https://` REST server without a CA file
is verified against the system's CAs (Cloud Run, a public ingress).

predict and explain send the `request_id` they are given (fmnist/request_ids.py: the server
answers with it) or none (the server makes one); the id the server answered with is the result's
`request_id`, and a ClientError's when the call failed (None from a server without ids)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import numpy as np

from fmnist import features, request_ids
from serving.protocol.names import VERSION_HEADER

DEFAULT_MODEL = features.MODEL_NAME


class ClientError(RuntimeError):
    """The server answered with an error (its message included) or could not be reached.
    `request_id`: the id the server answered that error under, if it sent one."""

    def __init__(self, message: str, request_id: str | None = None):
        super().__init__(message)
        self.request_id = request_id


def _trust(ca_file: str) -> tuple[bytes, ssl.SSLContext]:
    """The CA file's PEM bytes (for gRPC) and a client context trusting only them (for httpx);
    ClientError if it cannot be read or holds no PEM certificate, before any connection."""
    try:
        with open(ca_file, "rb") as stream:
            pem = stream.read()
    except OSError as err:
        raise ClientError(f"cannot read the CA file {ca_file}: {err.strerror}") from None
    try:
        return pem, ssl.create_default_context(cadata=pem.decode("latin-1"))
    except (ssl.SSLError, ValueError):
        raise ClientError(f"the CA file {ca_file} holds no PEM certificate") from None


@dataclass(frozen=True)
class ServedPrediction:
    """What a server answered to one Predict call: class probabilities per instance, the version
    that answered and the request id (not reports.predictions.Prediction, a BulkInferrer row)."""

    probabilities: np.ndarray  # [N, classes]
    version: int | None = None
    request_id: str | None = None  # what the server answered under (None: it sends no ids)

    @property
    def class_ids(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def class_names(self) -> list[str]:
        return [features.CLASS_NAMES[i] for i in self.class_ids]

    def top(self, k: int = 3) -> list[list[tuple[str, float]]]:
        order = np.argsort(-self.probabilities, axis=1)[:, :k]
        return [[(features.CLASS_NAMES[c], float(p[c])) for c in row] for row, p in zip(order, self.probabilities,
                                                                                          strict=True)]


@dataclass(frozen=True)
class Explanation:
    """What the `explain` signature says: the prediction and, per image, how much each grey level
    pushed the predicted class's logit up (> 0) or down (< 0) from a black image's."""

    prediction: ServedPrediction
    attributions: np.ndarray  # float32 [N, 28, 28]; each image's sum ~ its logit minus a black image's


# The outputs each client call asks the model for.
_PREDICT_OUTPUTS = (features.PROBABILITIES_OUTPUT,)
_EXPLAIN_OUTPUTS = (features.PROBABILITIES_OUTPUT, features.ATTRIBUTIONS_OUTPUT)


def _explanation(outputs: dict[str, np.ndarray], version: int | None, request_id: str | None) -> Explanation:
    return Explanation(ServedPrediction(outputs[features.PROBABILITIES_OUTPUT], version, request_id),
                       outputs[features.ATTRIBUTIONS_OUTPUT])


def _id_to_send(request_id: str | None) -> str | None:
    """`request_id` checked here, so a bad one is the caller's ClientError before any request."""
    if request_id is None:
        return None
    try:
        return request_ids.check(request_id)
    except ValueError as err:
        raise ClientError(str(err)) from None


def _as_images(images) -> np.ndarray:
    array = np.asarray(images, dtype=np.float32)
    if array.shape[-2:] != features.IMAGE_SHAPE:
        array = array.reshape(-1, *features.IMAGE_SHAPE)
    return array.reshape(-1, *features.IMAGE_SHAPE)


class RestClient:
    """TF Serving's REST API over one httpx connection pool. Error answers and unreachable servers
    raise ClientError; one instance may be shared by threads (httpx.Client is thread-safe)."""

    def __init__(self, server: str = "localhost:8501", model: str = DEFAULT_MODEL, version: int | None = None,
                 label: str | None = None, timeout: float = 30.0, ca_file: str | None = None):
        """server: host:port (http, or https with ca_file) or a URL. ca_file (PEM) turns TLS on
        and is the only trust anchor; ClientError if it cannot be read or the URL is http://."""
        import httpx

        if server.startswith("http://") and ca_file:
            raise ClientError(f"a CA file needs an https:// server, got {server}")
        base = server if server.startswith("http") else f"{'https' if ca_file else 'http'}://{server}"
        target = f"/versions/{version}" if version is not None else f"/labels/{label}" if label else ""
        self.model_url = f"{base}/v1/models/{model}{target}"
        self.version = version
        self._http = httpx.Client(timeout=timeout, verify=_trust(ca_file)[1] if ca_file else True)

    def _send(self, method: str, url: str, payload: dict | None = None, request_id: str | None = None):
        import httpx

        headers = {request_ids.HEADER: request_id} if request_id else None
        try:
            response = self._http.request(method, url, json=payload, headers=headers)
        except httpx.HTTPError as err:
            raise ClientError(f"cannot reach {url}: {err}") from None
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if response.status_code != 200:
            raise ClientError(f"HTTP {response.status_code}: {body.get('error', response.text)}",
                              response.headers.get(request_ids.HEADER))
        return body, response.headers

    def _call(self, method: str, url: str, payload: dict | None = None) -> dict:
        return self._send(method, url, payload)[0]

    def _predict(self, signature: str, images, names: tuple[str, ...],
                 request_id: str | None) -> tuple[dict[str, np.ndarray], int, str | None]:
        """The float32 outputs `names` of `signature` for `images`, the version that answered and
        the request id it answered under."""
        body, headers = self._send("POST", f"{self.model_url}:predict",
                                   {"signature_name": signature, "inputs": {
                                       features.IMAGES_INPUT: _as_images(images).tolist()}},
                                   _id_to_send(request_id))
        outputs = {name: np.asarray(body["outputs"][name], dtype=np.float32) for name in names}
        return outputs, self._served_version(headers), headers.get(request_ids.HEADER)

    def predict(self, images, request_id: str | None = None) -> ServedPrediction:
        """Probabilities for [N, 28, 28] (or [N, 784]) grey levels, the version that answered and
        the request id (`request_id` if given)."""
        outputs, version, answered_id = self._predict(features.SERVING_DEFAULT, images, _PREDICT_OUTPUTS, request_id)
        return ServedPrediction(outputs[features.PROBABILITIES_OUTPUT], version, answered_id)

    def explain(self, images, request_id: str | None = None) -> Explanation:
        """Probabilities and attributions [N, 28, 28] for [N, 28, 28] (or [N, 784]) grey levels."""
        return _explanation(*self._predict(features.EXPLAIN_SIGNATURE, images, _EXPLAIN_OUTPUTS, request_id))

    def _served_version(self, headers) -> int:
        if VERSION_HEADER in headers:
            return int(headers[VERSION_HEADER])
        # tensorflow_model_server sends no version: a pinned one is what ran; otherwise ask, which
        # can name a newer version if a swap lands between the two calls.
        if self.version is not None:
            return self.version
        return int(self.metadata()["model_spec"]["version"])

    def classify(self, images) -> list[list[tuple[str, float]]]:
        pixels = np.rint(_as_images(images)).astype(int).reshape(-1, features.NUM_PIXELS)
        body = self._call("POST", f"{self.model_url}:classify", {
            "signature_name": features.CLASSIFY_SIGNATURE,
            "examples": [{features.IMAGE_KEY: row.tolist()} for row in pixels]})
        return [[(label, score) for label, score in result] for result in body["results"]]

    def status(self) -> dict:
        return self._call("GET", self.model_url)

    def metadata(self) -> dict:
        return self._call("GET", f"{self.model_url}/metadata")

    def close(self) -> None:
        self._http.close()


class GrpcClient:
    """TF Serving's gRPC PredictionService and ModelService. Error statuses raise ClientError; one
    instance may be shared by threads (gRPC channels are thread-safe)."""

    def __init__(self, server: str = "localhost:8500", model: str = DEFAULT_MODEL, version: int | None = None,
                 label: str | None = None, timeout: float = 30.0, ca_file: str | None = None):
        """server: host:port. ca_file (PEM) turns TLS on, with those certificates as the only trust
        anchors (the server's name must match host); ClientError if it cannot be read."""
        import grpc

        from serving.protocol import protos

        self._pb = protos.load()
        self._channel = (grpc.secure_channel(server, grpc.ssl_channel_credentials(root_certificates=_trust(ca_file)[0]))
                         if ca_file else grpc.insecure_channel(server))
        self._prediction = self._pb.prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = self._pb.model_service_pb2_grpc.ModelServiceStub(self._channel)
        self.model, self.version, self.label, self.timeout = model, version, label, timeout

    def _spec(self, target, signature: str = "") -> None:
        target.name = self.model
        if signature:
            target.signature_name = signature
        if self.version is not None:
            target.version.value = self.version
        elif self.label:
            target.version_label = self.label

    def _call(self, method, request):
        return self._answered(method, request)[0]

    def _answered(self, method, request, request_id: str | None = None) -> tuple:
        """(the response, the request id of the server's trailing metadata or None), sending
        `request_id` in the invocation metadata when given."""
        import grpc

        metadata = ((request_ids.METADATA_KEY, request_id),) if request_id else None
        try:
            response, call = method.with_call(request, timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as err:
            raise ClientError(f"gRPC {err.code().name}: {err.details()}", _trailing_id(err)) from None
        return response, _trailing_id(call)

    def _predict(self, signature: str, images, names: tuple[str, ...],
                 request_id: str | None) -> tuple[dict[str, np.ndarray], int, str | None]:
        """The float32 outputs `names` of `signature` for `images`, the version that answered and
        the request id it answered under."""
        array = _as_images(images)
        request = self._pb.predict_pb2.PredictRequest()
        self._spec(request.model_spec, signature)
        tensor = request.inputs[features.IMAGES_INPUT]
        tensor.dtype = self._pb.types_pb2.DT_FLOAT
        tensor.tensor_shape.dim.extend([tensor.tensor_shape.Dim(size=s) for s in array.shape])
        tensor.tensor_content = array.astype("<f4").tobytes()
        request.output_filter.extend(names)
        response, answered_id = self._answered(self._prediction.Predict, request, _id_to_send(request_id))
        outputs = {}
        for name in names:
            proto = response.outputs[name]
            values = (np.frombuffer(proto.tensor_content, dtype="<f4") if proto.tensor_content
                      else np.asarray(proto.float_val, dtype=np.float32))
            outputs[name] = values.reshape([d.size for d in proto.tensor_shape.dim])
        return outputs, response.model_spec.version.value, answered_id

    def predict(self, images, request_id: str | None = None) -> ServedPrediction:
        """As RestClient.predict."""
        outputs, version, answered_id = self._predict(features.SERVING_DEFAULT, images, _PREDICT_OUTPUTS, request_id)
        return ServedPrediction(outputs[features.PROBABILITIES_OUTPUT], version, answered_id)

    def explain(self, images, request_id: str | None = None) -> Explanation:
        """Probabilities and attributions [N, 28, 28] for [N, 28, 28] (or [N, 784]) grey levels."""
        return _explanation(*self._predict(features.EXPLAIN_SIGNATURE, images, _EXPLAIN_OUTPUTS, request_id))

    def classify(self, images) -> list[list[tuple[str, float]]]:
        pixels = np.rint(_as_images(images)).astype(np.int64).reshape(-1, features.NUM_PIXELS)
        request = self._pb.classification_pb2.ClassificationRequest()
        self._spec(request.model_spec, features.CLASSIFY_SIGNATURE)
        for row in pixels:
            example = self._pb.example_pb2.Example()
            example.features.feature[features.IMAGE_KEY].int64_list.value.extend(row.tolist())
            request.input.example_list.examples.append(example)
        response = self._call(self._prediction.Classify, request)
        return [[(c.label, c.score) for c in result.classes] for result in response.result.classifications]

    def status(self):
        request = self._pb.get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        return self._call(self._models.GetModelStatus, request)

    def metadata(self):
        request = self._pb.get_model_metadata_pb2.GetModelMetadataRequest()
        self._spec(request.model_spec)
        request.metadata_field.append("signature_def")
        return self._call(self._prediction.GetModelMetadata, request)

    def close(self) -> None:
        self._channel.close()


def _trailing_id(call) -> str | None:
    """The request id in a finished gRPC call's trailing metadata (None: the server sent none)."""
    return next((value for key, value in call.trailing_metadata() or () if key == request_ids.METADATA_KEY), None)


def connect(transport: str, server: str | None = None, model: str = DEFAULT_MODEL, version: int | None = None,
            label: str | None = None, timeout: float = 30.0, ca_file: str | None = None) -> RestClient | GrpcClient:
    """A client for `transport` ("rest" or "grpc"), on the default port of each when server is None."""
    if transport == "rest":
        return RestClient(server or "localhost:8501", model, version, label, timeout, ca_file)
    if transport == "grpc":
        return GrpcClient(server or "localhost:8500", model, version, label, timeout, ca_file)
    raise ValueError(f"unknown transport {transport!r} (rest or grpc)")
