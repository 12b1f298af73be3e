"""`fmnist serve`: serve every version the Pusher writes over the TF Serving protocol.

With `tensorflow_model_server` on PATH this runs it (the production server) with a model config,
batching and Prometheus monitoring written for the push directory. Otherwise it runs this
package's server, which speaks the same REST and gRPC APIs: same clients, same tests.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from functools import cache
from typing import ClassVar

from fmnist import features, paths
from fmnist.paths import TF_SERVING_BINARY
from fmnist.settings import setting

log = logging.getLogger(__name__)
TF_SERVING_CHOICES = ("auto", "yes", "no")


@dataclass(frozen=True)
class ServerOptions:
    """`fmnist serve`'s settings (flags, FMNIST_SERVE_* variables, --config YAML: fmnist.settings)
    and what RunningServer and tensorflow_model_server are started with. Declared once, here."""

    ENV_SCOPE: ClassVar[str] = "SERVE_"

    model_name: str = setting(features.MODEL_NAME, "the model's name in request paths")
    base_path: str = setting(str(paths.DEFAULT_SERVING_MODEL_DIR), "the Pusher's directory of numbered versions",
                             name="model_base_path")
    model_config_file: str | None = setting(
        None, "TF Serving model config (text proto: several models, version policy, labels); overrides "
              "--model-name/--model-base-path and is re-read when it changes (default: "
              f"{paths.DEFAULT_MODELS_CONFIG} when it exists and neither --model-base-path nor --label is given)")
    version_labels: dict[str, int] = field(default_factory=dict)  # --label LABEL=VERSION, repeated
    # tensorflow_model_server has no traffic share: these two are this project's server only.
    canary_traffic: float = setting(0.0, "percent (0-100) of requests without version or label sent to the "
                                         "'canary' label (the rest go to 'stable'); this project's server only")
    shadow_traffic: float = setting(0.0, "percent (0-100) of the requests answered by 'stable' (no version or "
                                         "label) also run on the 'canary' in the background, to compare their "
                                         "answers for `fmnist release analyze`; the client gets stable's answer "
                                         "(this project's server only)")
    # Beyond this many shadow requests waiting, more are dropped and counted (serving/server/shadow.py).
    shadow_queue_size: int = 256
    # Loopback unless told otherwise: exposing the server is a decision (host="0.0.0.0").
    host: str = setting("127.0.0.1", "interface to listen on (127.0.0.1: this machine only; 0.0.0.0 exposes it "
                                     "on every interface)")
    rest_port: int = setting(8501, "REST API port (0: a free one)")
    grpc_port: int = setting(8500, "gRPC API port (0: a free one)")
    poll_seconds: float = setting(2.0, "how often the base path is scanned for new versions, seconds")
    max_batch_size: int = setting(64, "most instances batched into one model call")
    batch_timeout_ms: float = setting(0.0, "how long a batch waits for more requests, ms (0: take what is queued)")
    max_request_bytes: int = setting(8 << 20, "largest REST body / gRPC message, both directions "
                                              "(413 / RESOURCE_EXHAUSTED beyond)")
    max_request_instances: int = setting(1024, "most instances in one :predict/:classify, on both transports "
                                               "(400 / INVALID_ARGUMENT beyond)")
    # PEM files, both or neither: REST becomes https and gRPC TLS-only (load_tls checks them).
    tls_cert_file: str | None = setting(None, "PEM certificate chain: REST serves https and gRPC TLS (needs "
                                              "--tls-key); tensorflow_model_server gets it for gRPC only",
                                        name="tls_cert")
    tls_key_file: str | None = setting(None, "PEM private key of --tls-cert (unencrypted)", name="tls_key")
    tf_serving: str = setting("auto", "run tensorflow_model_server (auto: when it is on PATH)",
                              choices=TF_SERVING_CHOICES)
    # Request logging (serving/server/request_log.py), this project's server only: a `log_sampling` share
    # of answered Predict/Classify calls as PredictionLog TFRecords in this directory (None: off).
    log_requests_dir: str | None = setting(None, "log sampled Predict/Classify requests and responses as "
                                                 "PredictionLog TFRecords in this directory (this project's "
                                                 "server only)", name="log_requests")
    log_sampling: float = setting(1.0, "with --log-requests: share of requests logged, within 0..1")
    log_max_bytes: int = setting(64 << 20, "with --log-requests: start a new log file past this size")
    log_max_seconds: float = setting(3600.0, "with --log-requests: start a new log file past this age, seconds")
    log_queue_size: int = 1024  # records waiting for the writer; beyond, they are dropped and counted
    log_retention_days: float = setting(0.0, "with --log-requests: delete closed log files opened more than this "
                                             "many days ago, at start and at each rotation (0: keep forever)")
    # Request ids on every Predict/Classify answer and in the request log (fmnist/request_ids.py).
    # Off only to measure what they cost (benchmarks/request_ids.py): labels cannot be joined without.
    request_ids: bool = setting(True, "answer every :predict/:classify with a request id (X-Request-Id header, "
                                      "x-request-id gRPC trailing metadata) and log it; --no-request-ids only to "
                                      "measure their cost (this project's server only)")

    @property
    def use_tf_serving(self) -> bool | None:
        """True/False as --tf-serving says; None (auto): whenever the binary is on PATH."""
        return {"auto": None, "yes": True, "no": False}[self.tf_serving]


@dataclass(frozen=True)
class TlsMaterial:
    """A server's certificate chain and private key (PEM), read and checked once at start-up."""

    cert_file: str
    key_file: str
    cert_chain: bytes
    private_key: bytes


class _EncryptedKeyError(Exception):
    pass


def _refuse_encrypted_key() -> bytes:
    # Without a password callback OpenSSL would prompt on the terminal: a server would hang there.
    raise _EncryptedKeyError


def load_tls(options: ServerOptions) -> TlsMaterial | None:
    """The certificate and key `options` name, checked; None when neither is set.

    Raises ValueError (one line) when only one is set, a file cannot be read, the certificate file
    holds no PEM certificate, or the key is encrypted, not PEM, or not the certificate's key.
    """
    cert_file, key_file = options.tls_cert_file, options.tls_key_file
    if not cert_file and not key_file:
        return None
    if not (cert_file and key_file):
        given, missing = (("tls_cert_file (--tls-cert)", "tls_key_file (--tls-key)") if cert_file
                          else ("tls_key_file (--tls-key)", "tls_cert_file (--tls-cert)"))
        raise ValueError(f"TLS needs a certificate and its private key: {given} was given without {missing}")
    pem = {}
    for what, path in (("certificate", cert_file), ("private key", key_file)):
        try:
            with open(path, "rb") as stream:
                pem[what] = stream.read()
        except OSError as err:
            raise ValueError(f"cannot read the TLS {what} {path}: {err.strerror}") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=pem["certificate"].decode("latin-1"))
    except ssl.SSLError:
        raise ValueError(f"the TLS certificate {cert_file} holds no PEM certificate") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file, password=_refuse_encrypted_key)
    except _EncryptedKeyError:
        raise ValueError(f"the TLS private key {key_file} is encrypted: the server starts unattended, give it "
                         "an unencrypted key readable only by its user") from None
    except ssl.SSLError as err:
        if err.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(f"the TLS private key {key_file} does not match the certificate {cert_file}") from None
        raise ValueError(f"the TLS private key {key_file} holds no PEM private key") from None
    return TlsMaterial(cert_file, key_file, pem["certificate"], pem["private key"])


@cache
def ssl_config_class() -> type:
    """tensorflow.serving.SSLConfig, tensorflow_model_server's --ssl_config_file text proto.

    The tensorflow-serving-api wheel does not ship tensorflow_serving/config/ssl_config.proto, so
    its four fields are declared here, names and numbers as in that file.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(name="tensorflow_serving/config/ssl_config.proto",
                                               package="tensorflow.serving", syntax="proto3")
    message = proto.message_type.add(name="SSLConfig")
    field_type = descriptor_pb2.FieldDescriptorProto
    for number, (name, kind) in enumerate([("server_key", field_type.TYPE_STRING),
                                           ("server_cert", field_type.TYPE_STRING),
                                           ("custom_ca", field_type.TYPE_STRING),
                                           ("client_verify", field_type.TYPE_BOOL)], start=1):
        message.field.add(name=name, number=number, type=kind, label=field_type.LABEL_OPTIONAL)
    # A private pool: TensorFlow (or a future wheel) may register the same name in the default one.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.SSLConfig"))


def write_ssl_config(tls: TlsMaterial, path: str) -> None:
    """Writes the SSLConfig for `tls` to `path`, readable by this user only: TF Serving wants the
    key's PEM text inside the file, not its path. No client certificates are asked for."""
    from google.protobuf import text_format

    config = ssl_config_class()(server_key=tls.private_key.decode(), server_cert=tls.cert_chain.decode())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(text_format.MessageToString(config))


def _model_config_source(options: ServerOptions):
    from serving.protocol.model_config import read_model_config, single_model_config

    if options.model_config_file is None:
        config = single_model_config(options.model_name, options.base_path, options.version_labels)
        return lambda: config
    cache: dict = {}

    def source():
        # Re-read when edited, so moving a label (canary -> stable) needs no restart. The inode too:
        # `fmnist release` replaces the file, and two rewrites can share a coarse mtime tick.
        stat = os.stat(options.model_config_file)
        mtime = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
        if cache.get("mtime") != mtime:
            cache.update(mtime=mtime, config=read_model_config(options.model_config_file))
        return cache["config"]
    return source


class RunningServer:
    """This package's server, started in the background (tests, benchmarks) or run in the foreground.

    The constructor loads every version on disk (blocking) and binds both ports (0 picks a free
    one: read rest_port/grpc_port after); bad TLS files (first, before any model loads), a bad
    config or a busy port raise there. With TLS, REST is https only and gRPC TLS only. Then either
    start() (returns once REST accepts; stop() from any thread ends it) or serve_forever().
    """

    def __init__(self, options: ServerOptions):
        tls = load_tls(options)  # before the imports below load TensorFlow: a bad file fails at once
        _check_request_log(options)

        import grpc
        import uvicorn

        from serving.server.batching import Batcher
        from serving.server.grpc_service import create_server
        from serving.server.manager import ModelManager
        from serving.server.prometheus import ServingMetrics
        from serving.server.request_log import RequestLogger
        from serving.server.rest import create_app
        from serving.server.service import InferenceService
        from serving.server.shadow import ShadowMirror
        from serving.server.warmup import loader

        self.options = options
        self.metrics = ServingMetrics()
        self.manager = ModelManager(_model_config_source(options), loader(self.metrics.record_warmup),
                                    options.poll_seconds, canary_traffic=options.canary_traffic,
                                    config_name=options.model_config_file or "model config",
                                    shadow_traffic=options.shadow_traffic)
        self.manager.start()
        self.batcher = Batcher(options.max_batch_size, options.batch_timeout_ms,
                               on_batch=self.metrics.batch_size.observe)
        self.request_log = None if options.log_requests_dir is None else RequestLogger(
            options.log_requests_dir, options.log_sampling, options.log_max_bytes, options.log_max_seconds,
            options.log_queue_size, registry=self.metrics.registry, retention_days=options.log_retention_days)
        # Made even at 0 %: a test or an operator may raise manager.shadow_traffic on a live server.
        self.shadow = ShadowMirror(self.metrics, options.shadow_queue_size)
        service = InferenceService(self.manager, self.batcher, self.metrics,
                                   max_request_instances=options.max_request_instances,
                                   request_log=self.request_log, shadow=self.shadow,
                                   request_ids=options.request_ids)
        credentials = grpc.ssl_server_credentials([(tls.private_key, tls.cert_chain)]) if tls else None
        self.grpc_server, self.grpc_port = create_server(service, options.grpc_port, options.host,
                                                         max_message_bytes=options.max_request_bytes,
                                                         credentials=credentials)
        self.grpc_server.start()
        self._socket = socket.create_server((options.host, options.rest_port))
        # Accepted connections inherit it: uvicorn writes headers and body separately, and
        # Nagle + delayed ACKs would otherwise add ~40 ms to every small response.
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rest_port = self._socket.getsockname()[1]
        self._rest = uvicorn.Server(uvicorn.Config(
            create_app(service, options.max_request_bytes), log_level="warning", access_log=False,
            timeout_graceful_shutdown=10,
            # uvicorn wraps the pre-bound socket in TLS too (Server.startup passes ssl= with sockets=).
            ssl_certfile=tls.cert_file if tls else None, ssl_keyfile=tls.key_file if tls else None))
        self._thread: threading.Thread | None = None
        log.info("serving models %s: REST on %s:%d, gRPC on %s:%d, %s", self.manager.model_names(),
                 options.host, self.rest_port, options.host, self.grpc_port, "TLS" if tls else "plaintext")

    def serve_forever(self) -> None:
        """Blocks; SIGTERM/SIGINT stop accepting, finish in-flight requests, then return."""
        # uvicorn catches SIGTERM/SIGINT for its graceful stop, then restores the previous handlers
        # and re-raises the signal; with these no-op handlers in place, that re-raise returns here
        # and gRPC gets its graceful stop too, instead of the process dying mid-shutdown.
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._rest.run(sockets=[self._socket])
        finally:
            log.info("shutting down: finishing in-flight requests")
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start(self) -> RunningServer:
        self._thread = threading.Thread(target=self._rest.run, kwargs={"sockets": [self._socket]},
                                        name="rest", daemon=True)
        self._thread.start()
        while not self._rest.started:
            if not self._thread.is_alive():
                raise RuntimeError("the REST server failed to start")
            threading.Event().wait(0.02)
        return self

    def stop(self) -> None:
        self._rest.should_exit = True
        if self._thread:
            self._thread.join(timeout=15)
        self._shutdown()

    def _shutdown(self) -> None:
        self.grpc_server.stop(grace=5).wait()
        self.batcher.close()  # after it, no call is left to log or mirror: both can be flushed
        self.shadow.close()
        if self.request_log is not None:
            self.request_log.close()
        self.manager.stop()


def _check_request_log(options: ServerOptions) -> None:
    from serving.server.request_log import check_options

    check_options(options.log_requests_dir, options.log_sampling, options.log_max_bytes,
                  options.log_max_seconds, options.log_queue_size, options.log_retention_days)


def tf_serving_command(options: ServerOptions, workdir: str) -> list[str]:
    """The tensorflow_model_server invocation for these options (configs written into workdir).

    With TLS files, gRPC gets them through --ssl_config_file; TF Serving's REST API has no TLS, so
    its port stays plaintext (terminate TLS in front of it). host, max_request_bytes and
    max_request_instances have no tensorflow_model_server flag: it listens on every interface.
    Bad TLS files raise ValueError (one line, see load_tls) before anything is written.
    """
    from serving.protocol.model_config import single_model_config, write_model_config

    tls = load_tls(options)

    config_file = options.model_config_file
    if config_file is None:
        config_file = os.path.join(workdir, "models.config")
        write_model_config(single_model_config(options.model_name, options.base_path, options.version_labels),
                           config_file)
    monitoring = os.path.join(workdir, "monitoring.config")
    with open(monitoring, "w") as stream:
        stream.write('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    batching = os.path.join(workdir, "batching.config")
    with open(batching, "w") as stream:
        stream.write(f"max_batch_size {{ value: {options.max_batch_size} }}\n"
                     f"batch_timeout_micros {{ value: {int(options.batch_timeout_ms * 1000)} }}\n"
                     "num_batch_threads { value: 2 }\n")
    command = [TF_SERVING_BINARY, f"--port={options.grpc_port}", f"--rest_api_port={options.rest_port}",
               f"--model_config_file={config_file}", "--model_config_file_poll_wait_seconds=60",
               # So `fmnist release canary` can label a version that is still loading.
               "--allow_version_labels_for_unavailable_models",
               f"--file_system_poll_wait_seconds={max(1, round(options.poll_seconds))}",
               f"--monitoring_config_file={monitoring}", "--enable_batching",
               f"--batching_parameters_file={batching}"]
    if tls is not None:
        ssl_config = os.path.join(workdir, "ssl.config")
        write_ssl_config(tls, ssl_config)
        command.append(f"--ssl_config_file={ssl_config}")
    return command


def serve(options: ServerOptions) -> None:
    """`fmnist serve`: never returns while serving. With tensorflow_model_server on PATH (or
    tf_serving="yes") the process is replaced by it (os.execvp); otherwise this package's
    server runs in the foreground until SIGTERM/SIGINT, then returns after a graceful stop."""
    _check_request_log(options)
    use_tf_serving = options.use_tf_serving
    if use_tf_serving is None:
        use_tf_serving = shutil.which(TF_SERVING_BINARY) is not None
    if use_tf_serving:
        load_tls(options)  # bad TLS files: one line, before a temporary directory is left behind
        workdir = tempfile.mkdtemp(prefix="tf-serving-")
        command = tf_serving_command(options, workdir)
        # Said before the handover: what the options ask for and tensorflow_model_server cannot do.
        limits = ([f"it listens on every interface, not only {options.host}"]
                  if options.host not in ("0.0.0.0", "::") else [])
        limits += ["its REST API has no TLS (gRPC has): put a TLS proxy in front"] if options.tls_cert_file else []
        limits += [f"it has no traffic share: --canary-traffic {options.canary_traffic:g} is ignored and requests "
                   "without version or label get the highest version (split traffic in front of it, "
                   "deploy/README.md)"] if options.canary_traffic else []
        limits += [f"it has no shadow traffic: --shadow-traffic {options.shadow_traffic:g} is ignored (mirror in "
                   "front of it)"] if options.shadow_traffic else []
        limits += ["it writes no request log: --log-requests is ignored (its LoggingConfig needs a log "
                   "collector the open-source build lacks, deploy/README.md)"] if options.log_requests_dir else []
        limits += ["it sends no request ids (X-Request-Id / x-request-id): answers cannot be joined with "
                   "labels that come back later"] if options.request_ids else []
        if limits:
            log.warning("%s: %s", TF_SERVING_BINARY, "; ".join(limits))
        log.info("running %s", " ".join(command))
        os.execvp(command[0], command)
    log.info("%s not on PATH: serving with the project's TF Serving-compatible server", TF_SERVING_BINARY)
    RunningServer(options).serve_forever()
