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
import tempfile
import threading
from dataclasses import dataclass, field

from fmnist import features

log = logging.getLogger(__name__)
TF_SERVING_BINARY = "tensorflow_model_server"


@dataclass(frozen=True)
class ServerOptions:
    model_name: str = features.MODEL_NAME
    base_path: str = "outputs/fashion-mnist/serving_model"
    model_config_file: str | None = None  # TF Serving text proto; overrides model_name/base_path
    version_labels: dict[str, int] = field(default_factory=dict)
    host: str = "0.0.0.0"
    rest_port: int = 8501
    grpc_port: int = 8500
    poll_seconds: float = 2.0
    max_batch_size: int = 64
    batch_timeout_ms: float = 0.0
    max_request_bytes: int = 8 << 20
    use_tf_serving: bool | None = None  # None: whenever the binary is on PATH


def _model_config_source(options: ServerOptions):
    from serving.manager import read_model_config, single_model_config

    if options.model_config_file is None:
        config = single_model_config(options.model_name, options.base_path, options.version_labels)
        return lambda: config
    cache: dict = {}

    def source():
        # Re-read when edited, so moving a label (canary -> stable) needs no restart.
        mtime = os.stat(options.model_config_file).st_mtime_ns
        if cache.get("mtime") != mtime:
            cache.update(mtime=mtime, config=read_model_config(options.model_config_file))
        return cache["config"]
    return source


class RunningServer:
    """This package's server, started in the background (tests, benchmarks) or run in the foreground.

    The constructor loads every version on disk (blocking) and binds both ports (0 picks a free
    one: read rest_port/grpc_port after); a bad config or a busy port raises there. Then either
    start() (returns once REST accepts; stop() from any thread ends it) or serve_forever().
    """

    def __init__(self, options: ServerOptions):
        import uvicorn

        from serving.batching import Batcher
        from serving.grpc_service import create_server
        from serving.manager import ModelManager
        from serving.metrics import ServingMetrics
        from serving.rest import create_app
        from serving.servables import Servable
        from serving.service import InferenceService

        self.options = options
        self.metrics = ServingMetrics()
        self.manager = ModelManager(_model_config_source(options), Servable, options.poll_seconds)
        self.manager.start()
        self.batcher = Batcher(options.max_batch_size, options.batch_timeout_ms,
                               on_batch=self.metrics.batch_size.observe)
        service = InferenceService(self.manager, self.batcher, self.metrics)
        self.grpc_server, self.grpc_port = create_server(service, options.grpc_port, options.host,
                                                         max_message_bytes=options.max_request_bytes)
        self.grpc_server.start()
        self._socket = socket.create_server((options.host, options.rest_port))
        # Accepted connections inherit it: uvicorn writes headers and body separately, and
        # Nagle + delayed ACKs would otherwise add ~40 ms to every small response.
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rest_port = self._socket.getsockname()[1]
        self._rest = uvicorn.Server(uvicorn.Config(
            create_app(service, options.max_request_bytes), log_level="warning", access_log=False,
            timeout_graceful_shutdown=10))
        self._thread: threading.Thread | None = None
        log.info("serving models %s: REST on :%d, gRPC on :%d", self.manager.model_names(),
                 self.rest_port, self.grpc_port)

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
        self.batcher.close()
        self.manager.stop()


def tf_serving_command(options: ServerOptions, workdir: str) -> list[str]:
    """The tensorflow_model_server invocation for these options (configs written into workdir)."""
    from serving.manager import single_model_config, write_model_config

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
    return [TF_SERVING_BINARY, f"--port={options.grpc_port}", f"--rest_api_port={options.rest_port}",
            f"--model_config_file={config_file}", "--model_config_file_poll_wait_seconds=60",
            f"--file_system_poll_wait_seconds={max(1, round(options.poll_seconds))}",
            f"--monitoring_config_file={monitoring}", "--enable_batching",
            f"--batching_parameters_file={batching}"]


def serve(options: ServerOptions) -> None:
    """`fmnist serve`: never returns while serving. With tensorflow_model_server on PATH (or
    use_tf_serving=True) the process is replaced by it (os.execvp); otherwise this package's
    server runs in the foreground until SIGTERM/SIGINT, then returns after a graceful stop."""
    use_tf_serving = options.use_tf_serving
    if use_tf_serving is None:
        use_tf_serving = shutil.which(TF_SERVING_BINARY) is not None
    if use_tf_serving:
        workdir = tempfile.mkdtemp(prefix="tf-serving-")
        command = tf_serving_command(options, workdir)
        log.info("running %s", " ".join(command))
        os.execvp(command[0], command)
    log.info("%s not on PATH: serving with the project's TF Serving-compatible server", TF_SERVING_BINARY)
    RunningServer(options).serve_forever()
