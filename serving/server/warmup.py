"""SavedModel warmup, as TF Serving does it: a model may ship `assets.extra/tf_serving_warmup_requests`
(features.WARMUP_FILE), TFRecords of PredictionLog; each record's request is run once while the
version loads, so the first real request does not pay for TF's first-call work (graph optimisation,
kernel set-up). A file that cannot be replayed fails the load, as in TF Serving.

Each request goes through the gRPC servicer, the same code a real Predict/Classify call runs (input
checks, signature choice, batcher, servable.run), aimed at the version being loaded whatever its
model_spec names.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import prediction_log_pb2

from fmnist import features
from fmnist.errors import one_line
from serving.server.batching import Batcher
from serving.server.grpc_service import PredictionServicer
from serving.server.prometheus import ServingMetrics
from serving.server.servables import Servable
from serving.server.service import InferenceService

log = logging.getLogger(__name__)
WarmupCallback = Callable[[str, int, int, float], None]  # (model, version, requests replayed, seconds)

# PredictionLog kinds that can be replayed, with the servicer method that runs them.
# TF Serving also replays regress_log and multi_inference_log; this server has no Regress or
# MultiInference API, so a model that ships them must fail here rather than skip its warmup.
REPLAYED = {"predict_log": "Predict", "classify_log": "Classify"}


class WarmupError(Exception):
    """A warmup file that cannot be replayed: the message names the file and the record index."""


class _RequestError(Exception):
    """A warmup request the servicer rejected: "CODE: message"."""


class _CallContext:
    """Stands in for grpc.ServicerContext: the servicer reports a failed request through abort()."""

    @staticmethod
    def abort(code, details: str):
        raise _RequestError(f"{code.name}: {details}")


class _LoadingVersion:
    """The manager as the servicer sees it during warmup: every request resolves to the version
    being loaded, whatever its model_spec says, since that version is not in the manager yet."""

    def __init__(self, servable: Servable):
        self.servable = servable

    def resolve(self, *_) -> Servable:
        return self.servable


def warmup_path(model_dir: str) -> str:
    return os.path.join(model_dir, features.WARMUP_FILE)


def read_logs(path: str) -> list[prediction_log_pb2.PredictionLog]:
    """The PredictionLogs of a warmup file ([] if there is none). Raises WarmupError for an
    unreadable record, more than features.MAX_WARMUP_RECORDS records or a kind that is not replayed,
    all before any request runs."""
    if not tf.io.gfile.exists(path):
        return []
    logs = []
    records = iter(tf.data.TFRecordDataset(path))
    while True:
        index = len(logs)
        try:
            record = next(records)
        except StopIteration:
            return logs
        except tf.errors.OpError as err:  # truncated or corrupt TFRecord, unreadable file
            raise WarmupError(f"{path}: warmup record {index} is unreadable: {one_line(err.message)}") from None
        if index == features.MAX_WARMUP_RECORDS:  # read one past the limit, never the whole file
            raise WarmupError(f"{path}: more than {features.MAX_WARMUP_RECORDS} warmup records (TF Serving's "
                              f"limit); record {index} is one too many")
        try:
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        except DecodeError as err:
            raise WarmupError(f"{path}: warmup record {index} is not a PredictionLog: {err}") from None
        kind = log.WhichOneof("log_type")
        if kind not in REPLAYED:
            raise WarmupError(f"{path}: warmup record {index} is {f'a {kind}' if kind else 'an empty PredictionLog'}; "
                              f"warmup replays only {' and '.join(REPLAYED)}")
        logs.append(log)


def replay(servable: Servable, path: str) -> int:
    """Runs every request of the warmup file at `path` against `servable`; returns how many ran
    (0 without a file). Raises WarmupError, naming the file and the record index, for a file
    read_logs() rejects or a request that fails."""
    logs = read_logs(path)
    if not logs:
        return 0
    # A batcher of its own: the server's may not exist yet (the first load runs before it is made).
    batcher = Batcher()
    # No request ids: a replay answers no client, and _CallContext has no metadata to carry one.
    servicer = PredictionServicer(InferenceService(_LoadingVersion(servable), batcher, ServingMetrics(),
                                                   request_ids=False))
    try:
        for index, log in enumerate(logs):
            kind = log.WhichOneof("log_type")
            call = getattr(servicer, REPLAYED[kind])
            try:
                call(getattr(log, kind).request, _CallContext())
            except _RequestError as err:
                raise WarmupError(f"{path}: warmup record {index} ({kind}) failed: {one_line(str(err))}") from None
    finally:
        batcher.close()
    return len(logs)


def loader(on_warmup: WarmupCallback | None = None) -> Callable[[str, int, str], Servable]:
    """A ModelManager loader `(name, version, path) -> Servable`: loads the version, then replays
    its warmup file (WarmupError if that fails), so the manager marks it AVAILABLE only once it is
    warm; `on_warmup` hears of each replay."""
    def load(model_name: str, version: int, path: str) -> Servable:
        servable = Servable(model_name, version, path)
        started = time.perf_counter()
        replayed = replay(servable, warmup_path(path))
        seconds = time.perf_counter() - started
        log.info("replayed %d warmup requests for %s version %d in %.0f ms", replayed, model_name, version,
                 seconds * 1000)
        if on_warmup is not None:
            on_warmup(model_name, version, replayed, seconds)
        return servable

    return load
