"""Request logging as TF Serving does it: a sampled share of Predict and Classify calls, request
and response, written as `PredictionLog` TFRecords (the record type of TF Serving's LoggingConfig
and of warmup files), on both transports.

Files are `requests-<UTC open time>-<seq>.tfrecord` in one directory, so their names sort by
time; each is written as `<name>.tmp` and renamed once closed (by size, age or shutdown), so a
reader never sees half a file. With a retention, closed files opened more than that many days ago
are deleted at start and whenever a file is closed: the name says when, no file is opened for it.
Each record keeps the request id its answer carried (fmnist/request_ids.py: `of_log`).
Writing runs on one background thread fed by a bounded queue: when the queue is full the record
is dropped and counted, the request itself never waits or fails.

Also reads them back (read_request_logs) and converts Vertex AI endpoint request-response logging
rows (BigQuery) to the same PredictionLogs (rows_to_prediction_logs). TensorFlow and the serving
protos load inside the functions: validating options must not cost the TF import.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from fmnist import features, request_ids

if TYPE_CHECKING:
    from tensorflow_serving.apis import prediction_log_pb2

    from serving.server.servables import Servable

log = logging.getLogger(__name__)
PREFIX, SUFFIX, PARTIAL = "requests-", ".tfrecord", ".tmp"
_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_RECORD_OVERHEAD = 16  # TFRecord framing: length (8) + its CRC (4) + the data's CRC (4)
PREDICT, CLASSIFY = "predict_log", "classify_log"
_DAY_SECONDS = 86400.0
_READ_BATCH = 256  # records per step when reading logs back


def check_options(directory: str | None, sampling: float, max_bytes: int, max_seconds: float,
                  queue_size: int, retention_days: float = 0.0) -> None:
    """Raises ValueError (one line, naming the option and its CLI flag) for a value out of range."""
    if directory is None:
        return
    if not 0 <= sampling <= 1:
        raise ValueError(f"log_sampling (--log-sampling) is a share within 0..1, got {sampling:g}")
    if max_bytes <= 0:
        raise ValueError(f"log_max_bytes (--log-max-bytes) must be positive, got {max_bytes}")
    if max_seconds <= 0:
        raise ValueError(f"log_max_seconds (--log-max-seconds) must be positive, got {max_seconds:g}")
    if queue_size <= 0:
        raise ValueError(f"log_queue_size must be positive, got {queue_size}")
    if not retention_days >= 0:  # `not >=`: NaN is refused too
        raise ValueError(f"log_retention_days (--log-retention-days) must be >= 0 (0: keep forever), "
                         f"got {retention_days:g}")


@dataclass(frozen=True)
class _Entry:
    """One answered call, as the batcher left it: protos are built on the writer thread, not here."""

    kind: str
    model_name: str
    version: int
    signature: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    timestamp: float
    request_id: str = ""  # "" when the server answers without ids


class RequestLogger:
    """Samples answered Predict/Classify calls and writes them as PredictionLog TFRecords.

    Thread-safe: watch_predict/watch_classify are called from any request thread and never block.
    close() writes what is queued, closes and renames the open file; nothing is logged after it.
    `random_source` (a [0, 1) draw per call) is there so tests can seed the sampling, `clock`
    (epoch seconds) so they can age files for the retention.
    """

    def __init__(self, directory: str, sampling: float = 1.0, max_bytes: int = 64 << 20,
                 max_seconds: float = 3600.0, queue_size: int = 1024,
                 registry: CollectorRegistry | None = None, random_source: Callable[[], float] = random.random,
                 retention_days: float = 0.0, clock: Callable[[], float] = time.time):
        """retention_days > 0: closed files opened longer ago than that are deleted (0: kept forever)."""
        check_options(directory, sampling, max_bytes, max_seconds, queue_size, retention_days)
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.sampling = sampling
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.retention_days = retention_days
        self._random = random_source
        self._clock = clock
        self._queue: queue.Queue[_Entry | None] = queue.Queue(maxsize=queue_size)
        self.written = Counter("fmnist_serving_request_log_written", "Requests written to the request log",
                               registry=registry)
        self.dropped = Counter("fmnist_serving_request_log_dropped",
                               "Sampled requests not logged because the request log queue was full",
                               registry=registry)
        self._sequence = 0
        self._closed = False
        self.expire()  # what a previous run left beyond the retention goes before anything is written
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    # -- request side: called on request / batcher threads, must stay cheap -------------------
    def watch_predict(self, servable: Servable, signature: str, inputs: dict[str, np.ndarray],
                      future: Future, request_id: str = "") -> None:
        """Logs the call once `future` ({output: array}) succeeds, if this call is sampled, under
        `request_id` (the id its answer carries; "" for none)."""
        self._watch(PREDICT, servable, signature, inputs, future, request_id)

    def watch_classify(self, servable: Servable, signature: str, serialized_examples: np.ndarray,
                       future: Future, request_id: str = "") -> None:
        """Logs the call once `future` ({"classes", "scores"}) succeeds, if this call is sampled."""
        self._watch(CLASSIFY, servable, signature, {"examples": serialized_examples}, future, request_id)

    def _watch(self, kind: str, servable: Servable, signature: str, inputs: dict, future: Future,
               request_id: str) -> None:
        # Decided before the call runs, so an unsampled request costs one random draw and nothing more.
        if self._closed or self._random() >= self.sampling:
            return
        timestamp = time.time()

        def done(settled: Future) -> None:
            if settled.cancelled() or settled.exception() is not None:
                return  # as TF Serving: only answered calls are logged
            self._offer(_Entry(kind, servable.model_name, servable.version, signature, inputs,
                               settled.result(), timestamp, request_id))
        future.add_done_callback(done)

    def _offer(self, entry: _Entry) -> None:
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped.inc()

    # -- writer thread ------------------------------------------------------------------------
    def close(self, timeout: float = 30.0) -> None:
        """Writes what is queued, then closes and renames the open file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)  # blocking put: the end marker must get in behind the queued records
        self._thread.join(timeout)

    def _run(self) -> None:
        import tensorflow as tf

        writer, path, opened, size = None, "", 0.0, 0
        while True:
            wait = None if writer is None else max(0.0, opened + self.max_seconds - time.time())
            try:
                entry, aged = self._queue.get(timeout=wait), False
            except queue.Empty:
                entry, aged = None, True  # the open file is old enough: close it even with no traffic
            if entry is not None:
                try:
                    record = to_prediction_log(entry).SerializeToString()
                    if writer is None:
                        opened = time.time()
                        path = self._next_path(opened)
                        writer, size = tf.io.TFRecordWriter(path + PARTIAL), 0
                    self._append(writer, record)
                    size += len(record) + _RECORD_OVERHEAD
                    self.written.inc()
                except Exception:  # a bad record or a full disk must not end logging for good
                    log.exception("request log: could not write a record")
            if writer is not None and (entry is None or size >= self.max_bytes
                                       or time.time() - opened >= self.max_seconds):
                writer.close()
                os.replace(path + PARTIAL, path)
                writer = None
                self.expire()
            if entry is None and not aged:
                return

    def expire(self) -> list[str]:
        """Deletes the closed log files opened more than retention_days ago (by the time in their
        names) and returns their paths; none with no retention. Never raises: a file it cannot
        delete is logged and tried again next time."""
        if self.retention_days <= 0:
            return []
        cutoff = self._clock() - self.retention_days * _DAY_SECONDS
        deleted = []
        for path in request_log_files(self.directory):
            try:
                if opened_at(path) < cutoff:
                    os.remove(path)
                    deleted.append(path)
            except (OSError, ValueError) as err:  # a renamed-by-hand file or a race with an operator
                log.warning("request log retention: cannot delete %s: %s", path, err)
        if deleted:
            log.info("request log retention: deleted %d file(s) older than %g days", len(deleted),
                     self.retention_days)
        return deleted

    def _append(self, writer: Any, record: bytes) -> None:
        writer.write(record)

    def _next_path(self, opened: float) -> str:
        self._sequence += 1
        return os.path.join(self.directory, log_file_name(opened, self._sequence))


def log_file_name(opened: float, sequence: int) -> str:
    """The name of the log file opened at `opened` (epoch seconds), the `sequence`th of its writer."""
    return f"{PREFIX}{datetime.fromtimestamp(opened, UTC).strftime(_TIME_FORMAT)}-{sequence:06d}{SUFFIX}"


def write_log_file(directory: str, logs: Iterable[prediction_log_pb2.PredictionLog], opened: float,
                   sequence: int = 1) -> str:
    """Writes `logs` as one closed log file, as RequestLogger does (`.tmp`, then renamed); returns
    its path. For tools and tests that build logs themselves (imports, benchmarks)."""
    import tensorflow as tf

    path = os.path.join(directory, log_file_name(opened, sequence))
    with tf.io.TFRecordWriter(path + PARTIAL) as writer:
        for logged in logs:
            writer.write(logged.SerializeToString())
    os.replace(path + PARTIAL, path)
    return path


def to_prediction_log(entry: _Entry) -> prediction_log_pb2.PredictionLog:
    """The PredictionLog of one answered call: the request as the model got it (the same
    PredictRequest/ClassificationRequest for REST and gRPC), the response gRPC answers, and
    log_metadata with the model spec that answered (name, version, signature) and the time."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from serving.server import codec

    logged = prediction_log_pb2.PredictionLog()
    spec = logged.log_metadata.model_spec
    spec.name, spec.signature_name = entry.model_name, entry.signature
    spec.version.value = entry.version
    logged.log_metadata.timestamp_secs = int(entry.timestamp)
    if entry.request_id:
        request_ids.set_on_log(logged, entry.request_id)
    call = getattr(logged, entry.kind)
    for message in (call.request, call.response):
        message.model_spec.CopyFrom(spec)
    if entry.kind == PREDICT:
        codec.protos_from_arrays(entry.inputs, call.request.inputs)
        codec.protos_from_arrays(entry.outputs, call.response.outputs)
    else:
        call.request.input.example_list.examples.extend(
            tf.train.Example.FromString(serialized) for serialized in entry.inputs["examples"])
        codec.classification_results(entry.outputs["classes"], entry.outputs["scores"], call.response.result)
    return logged


def _timestamp(moment: datetime | float | None) -> float | None:
    return moment.timestamp() if isinstance(moment, datetime) else moment


def opened_at(path: str) -> float:
    """When the log file at `path` was opened (epoch seconds), read from its name; ValueError for
    a name that is not a log file's."""
    stamp = os.path.basename(path)[len(PREFIX):].rsplit("-", 1)[0]
    return datetime.strptime(stamp, _TIME_FORMAT).replace(tzinfo=UTC).timestamp()


def request_log_files(directory: str) -> list[str]:
    """The closed log files of `directory`, oldest first (their names sort by time)."""
    names = sorted(n for n in os.listdir(directory) if n.startswith(PREFIX) and n.endswith(SUFFIX))
    return [os.path.join(directory, n) for n in names]


def read_request_logs(directory: str, start: datetime | float | None = None,
                      end: datetime | float | None = None) -> Iterator[prediction_log_pb2.PredictionLog]:
    """The PredictionLogs of the closed files in `directory` whose timestamp is within
    [start, end) (datetimes or epoch seconds; None: unbounded), oldest file first. Files still
    being written (.tmp) are skipped. An unreadable record raises tf.errors.OpError."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError
    from tensorflow_serving.apis import prediction_log_pb2

    low, high = _timestamp(start), _timestamp(end)
    for path in request_log_files(directory):
        opened = opened_at(path)
        if high is not None and int(opened) >= high:
            return  # this file and every later one began after the window (record stamps are >= open time)
        # Not warmup.read_logs: that one caps the count at TF Serving's warmup limit and rejects kinds.
        # Batched: one eager iterator step per record cost more than parsing the record.
        # Found by fuzzing: a record that is not a PredictionLog was a DecodeError traceback, and
        # a corrupt one an error without the file's name. Both now name it, as an OpError.
        index = -1
        try:
            for record in (r for batch in tf.data.TFRecordDataset(path).batch(_READ_BATCH) for r in batch.numpy()):
                index += 1
                logged = prediction_log_pb2.PredictionLog.FromString(record)
                stamp_secs = logged.log_metadata.timestamp_secs
                if (low is None or stamp_secs >= int(low)) and (high is None or stamp_secs < high):
                    yield logged
        except DecodeError as err:
            raise tf.errors.DataLossError(None, None,
                                          f"{path}: record {index} is not a PredictionLog ({err})") from None
        except tf.errors.OpError as err:
            raise type(err)(err.node_def, err.op, f"{path}: {' '.join(err.message.split())}") from None


# -- Vertex AI endpoint request-response logging (BigQuery) -------------------------------------
def rows_to_prediction_logs(rows: Iterable[Mapping[str, Any]], model_name: str = features.MODEL_NAME,
                            input_name: str = features.IMAGES_INPUT,
                            output_name: str = "predictions") -> Iterator[prediction_log_pb2.PredictionLog]:
    """PredictionLogs (predict_log) from rows of a Vertex AI endpoint's request-response logging
    table: endpoint, deployed_model_id, logging_time (datetime, epoch seconds or ISO text),
    request_id (kept as the log's request id, the key delayed labels join on), request_payload and
    response_payload (JSON strings of the :predict instances and predictions). Bare instances /
    predictions are named input_name / output_name; a deployed_model_id of digits becomes the model
    spec's version. Rows without a response are skipped (Vertex logs the request alone when the
    call failed). A payload that is not JSON or not instances raises ServingError (or
    json.JSONDecodeError)."""
    from tensorflow_serving.apis import prediction_log_pb2

    from serving.protocol import vertex_rows
    from serving.server import codec

    for row in rows:
        predictions = vertex_rows.payload_rows(row.get("response_payload"), "predictions")
        if not predictions:
            continue
        logged = prediction_log_pb2.PredictionLog()
        spec = logged.log_metadata.model_spec
        spec.name, spec.signature_name = model_name, features.SERVING_DEFAULT
        deployed = str(row.get("deployed_model_id") or "")
        if deployed.isdigit():
            spec.version.value = int(deployed)
        moment = row.get("logging_time")
        if isinstance(moment, str):
            moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        logged.log_metadata.timestamp_secs = int(_timestamp(moment) or 0)
        if row.get("request_id") is not None:  # NUMERIC in Vertex's table: its text is the labels' key
            request_ids.set_on_log(logged, str(row["request_id"]))
        for message in (logged.predict_log.request, logged.predict_log.response):
            message.model_spec.CopyFrom(spec)
        inputs, outputs = vertex_rows.row_arrays(row, input_name, output_name)
        codec.protos_from_arrays(inputs, logged.predict_log.request.inputs)
        codec.protos_from_arrays(outputs, logged.predict_log.response.outputs)
        yield logged

