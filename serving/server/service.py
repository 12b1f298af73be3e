"""What both transports do with a request, once decoded: find the servable, check the inputs,
run them through the batcher. REST and gRPC differ only in how they decode and encode."""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING

import numpy as np
from tensorflow_serving.apis import get_model_metadata_pb2

from fmnist import features, request_ids
from serving.protocol.errors import ServingError, bad_request
from serving.server.batching import Batcher
from serving.server.manager import ModelManager
from serving.server.prometheus import ServingMetrics
from serving.server.servables import Servable

if TYPE_CHECKING:
    from serving.server.request_log import RequestLogger
    from serving.server.shadow import ShadowMirror

PREDICT_API, CLASSIFY_API, METADATA_API, STATUS_API = "predict", "classify", "metadata", "status"
ANSWERED_APIS = (PREDICT_API, CLASSIFY_API)  # the calls whose answers carry a request id


class InferenceService:
    """The transport-independent half of a request: signature choice, input checks, batching.

    Thread-safe, shared by the REST event loop and the gRPC worker threads. The submit_* methods
    check inputs synchronously (raising a 400 ServingError the caller reports) and return a
    Future, so REST can await it and gRPC can block on it.
    """

    def __init__(self, manager: ModelManager, batcher: Batcher, metrics: ServingMetrics,
                 max_request_instances: int | None = None, request_log: RequestLogger | None = None,
                 shadow: ShadowMirror | None = None, request_ids: bool = True):
        """max_request_instances: the most instances (rows) one Predict or Classify may carry; None
        for no limit (warmup replays, which are the model's own files). request_log: where a
        sample of answered Predict/Classify calls is logged, both transports alike (None: not).
        shadow: where the manager's shadow_traffic share of stable's answers is run again on the
        canary (None: never). request_ids: whether Predict/Classify answers carry a request id
        (off only to measure what ids cost)."""
        self.manager = manager
        self.batcher = batcher
        self.metrics = metrics
        self.max_request_instances = max_request_instances
        self.request_log = request_log
        self.shadow = shadow
        self.request_ids = request_ids

    def request_id(self, api: str, client_value: str | None, where: str) -> tuple[str | None, ServingError | None]:
        """(the id a call of `api` is answered under, None when it carries none; the 400 to answer
        with when the client's id is refused, or None). `client_value` is what the client sent in
        `where` (header or metadata key). A refused id is not echoed: that answer carries a new id,
        so even it can be found in the server's logs."""
        if not self.request_ids or api not in ANSWERED_APIS:
            return None, None
        try:
            return request_ids.accept(client_value, where), None
        except ValueError as err:
            return request_ids.new_id(), bad_request(str(err))

    def route(self, name: str, version: int | None, label: str | None) -> tuple[Servable, Servable | None]:
        """(the Servable that answers a request for `name` with this version/label, the canary's
        Servable to shadow it on or None). Only requests naming neither are shadowed: a client
        that asked for a version or label gets exactly that, and no copy of it goes elsewhere."""
        servable = self.manager.resolve(name, version, label)
        if self.shadow is None or version is not None or label is not None:
            return servable, None
        return servable, self.manager.shadow_target(name, servable.version)

    def submit_predict(self, servable: Servable, signature_name: str | None, raw_inputs: dict,
                       shadow: Servable | None = None, request_id: str | None = None) -> tuple[str, Future]:
        """(the signature used, a Future of {output: array}) for {input: JSON/proto values};
        signature_name None means serving_default. Bad inputs, or more than max_request_instances
        rows, raise a 400 ServingError now; the Future can still fail with one if the model
        rejects what passed the checks. `shadow` (from route()) also gets the inputs once the
        answer is in, off the request path. `request_id` (from request_id()) is logged with the call."""
        signature = servable.signature(signature_name)
        inputs = servable.prepare(signature, raw_inputs)
        # prepare() has checked that every input has the same number of rows: any one counts.
        self._check_instances(next((a.shape[0] for a in inputs.values() if a.ndim), 1))
        future = self._submit(servable, signature, inputs, shadow)
        if self.request_log is not None:
            self.request_log.watch_predict(servable, signature, inputs, future, request_id or "")
        return signature, future

    def submit_classify(self, servable: Servable, signature_name: str | None,
                        serialized_examples: np.ndarray, shadow: Servable | None = None,
                        request_id: str | None = None) -> Future:
        """A Future of {"classes", "scores"} for serialized tf.Examples [N]; without signature_name,
        the model's classification signature. A signature that is not a classifier, bad inputs, or
        more than max_request_instances examples raise a 400 ServingError now. `shadow` and
        `request_id`: as for submit_predict."""
        self._check_instances(len(serialized_examples))
        signature = servable.signature(signature_name or self._classify_signature(servable))
        if servable.method_name(signature) != features.CLASSIFY_METHOD_NAME:
            raise bad_request(f"signature '{signature}' is not a classification signature "
                              f"(method {servable.method_name(signature)!r})")
        (input_name,) = servable.inputs[signature]
        inputs = servable.prepare(signature, {input_name: serialized_examples})
        future = self._submit(servable, signature, inputs, shadow)
        if self.request_log is not None:
            self.request_log.watch_classify(servable, signature, serialized_examples, future, request_id or "")
        return future

    def _submit(self, servable: Servable, signature: str, inputs: dict[str, np.ndarray],
                shadow: Servable | None) -> Future:
        """Batches the call; once answered, its predicted classes are counted per version and, with
        `shadow`, the inputs go to the shadow mirror."""
        future = self.batcher.submit(servable, signature, inputs)
        future.add_done_callback(lambda done: self._count_classes(servable, done))
        if shadow is not None and self.shadow is not None:
            self.shadow.mirror(servable, shadow, signature, inputs, future)
        return future

    def _count_classes(self, servable: Servable, answer: Future) -> None:
        # On the batcher's thread, after the client's future is settled: cheap, and never raises.
        if answer.exception() is None:
            self.metrics.record_answer(servable.model_name, servable.version, answer.result())

    def _check_instances(self, count: int) -> None:
        # Both transports pass here, so REST and gRPC refuse the same requests with the same words.
        # The byte limit alone would let a request of tiny instances queue one huge TF call.
        limit = self.max_request_instances
        if limit is not None and count > limit:
            raise bad_request(f"request has {count} instances, over the limit of {limit} per request: "
                              "split it into smaller requests")

    @staticmethod
    def _classify_signature(servable: Servable) -> str:
        if servable.method_name(features.SERVING_DEFAULT) == features.CLASSIFY_METHOD_NAME:
            return features.SERVING_DEFAULT
        return next((name for name in sorted(servable.signature_defs)
                     if servable.method_name(name) == features.CLASSIFY_METHOD_NAME), features.SERVING_DEFAULT)

    @staticmethod
    def signature_def_map(servable: Servable) -> get_model_metadata_pb2.SignatureDefMap:
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in servable.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        return signature_map
