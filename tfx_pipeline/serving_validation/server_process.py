"""A model server in its own process on one candidate model: tensorflow_model_server when it is on
PATH, else the project's TF Serving-compatible server (`fmnist serve`). The candidate is served as
version 1 of a throwaway base path, on free localhost ports, with a model config written for it
(so a production `models.config` in the working directory is never read).

The project's server is started as a command, `python -m cli.main serve`, the way
tensorflow_model_server is: a process boundary, not an import, so the pipeline layer stays below
the CLI and the check exercises exactly what `fmnist serve` runs in production.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from fmnist import features
from fmnist.paths import TF_SERVING_BINARY

PROJECT_SERVER = "project server (fmnist serve)"
VERSION = 1
_State = get_model_status_pb2.ModelVersionStatus.State


class ServerStartError(RuntimeError):
    """The server did not make the candidate AVAILABLE: it exited, reported a failed load, or timed out."""


@dataclass(frozen=True)
class Endpoints:
    kind: str  # TF_SERVING_BINARY or PROJECT_SERVER
    grpc_target: str  # host:port
    rest_url: str  # http://host:port
    model_name: str
    load_seconds: float  # process start to AVAILABLE


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_command(kind: str, config_file: str, grpc_port: int, rest_port: int) -> list[str]:
    """The command line that serves `config_file` on localhost ports (both kinds read the same
    ModelServerConfig text proto)."""
    if kind == TF_SERVING_BINARY:
        return [TF_SERVING_BINARY, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                f"--model_config_file={config_file}", "--rest_api_num_threads=4"]
    return [sys.executable, "-m", "cli.main", "serve", "--tf-serving", "no", "--host", "127.0.0.1",
            "--grpc-port", str(grpc_port), "--rest-port", str(rest_port), "--model-config-file", config_file]


def _tail(path: str, lines: int = 1) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as stream:
        kept = [line.strip() for line in stream if line.strip()]
        return " | ".join(kept[-lines:])
    return ""


def _wait_until_available(process: subprocess.Popen, target: str, model_name: str, deadline: float,
                          log_path: str) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model_name
    while True:
        if process.poll() is not None:
            raise ServerStartError(f"the server exited with code {process.returncode} before the model was "
                                   f"AVAILABLE: {_tail(log_path) or 'no output'}")
        # A fresh channel per poll: one that failed to connect (the port is not open yet) backs off
        # for seconds before it tries again, and the server is expected any moment.
        with grpc.insecure_channel(target) as channel:
            try:
                statuses = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                    request, timeout=2).model_version_status
            except grpc.RpcError:  # not listening yet, or the model not known yet
                statuses = []
        if statuses and all(s.state == _State.AVAILABLE for s in statuses):
            return
        failed = [s for s in statuses if s.state == _State.END]
        if failed:
            raise ServerStartError(f"the server could not load the model: "
                                   f"{failed[0].status.error_message or 'state END'}")
        if time.monotonic() > deadline:
            raise ServerStartError(f"the model was not AVAILABLE within the load timeout "
                                   f"(states: {[_State.Name(s.state) for s in statuses] or 'none yet'})")
        time.sleep(0.25)


@contextlib.contextmanager
def model_server(model_dir: str, load_timeout_s: float, log_path: str,
                 model_name: str = features.MODEL_NAME, use_tf_serving: bool | None = None) -> Iterator[Endpoints]:
    """Serves `model_dir` until the block ends, then stops the process (SIGTERM, then SIGKILL).

    Yields once every version is AVAILABLE; raises ServerStartError (one line: why) if the server
    exits, reports the load as failed (state END), or is not ready within `load_timeout_s`. The
    server's output goes to `log_path`. `use_tf_serving` None: whenever the binary is on PATH."""
    if use_tf_serving is None:
        use_tf_serving = shutil.which(TF_SERVING_BINARY) is not None
    kind = TF_SERVING_BINARY if use_tf_serving else PROJECT_SERVER
    workdir = tempfile.mkdtemp(prefix="serving-validation-")
    try:
        base = os.path.join(workdir, model_name)
        os.makedirs(base)
        os.symlink(os.path.abspath(model_dir), os.path.join(base, str(VERSION)))
        config = model_server_config_pb2.ModelServerConfig()
        model = config.model_config_list.config.add(name=model_name, base_path=base, model_platform="tensorflow")
        model.model_version_policy.specific.versions.append(VERSION)
        config_file = os.path.join(workdir, "models.config")
        with open(config_file, "w") as stream:
            stream.write(str(config))
        grpc_port, rest_port = _free_port(), _free_port()
        started = time.monotonic()
        with open(log_path, "ab") as log:
            process = subprocess.Popen(server_command(kind, config_file, grpc_port, rest_port), stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            target = f"127.0.0.1:{grpc_port}"
            _wait_until_available(process, target, model_name, started + load_timeout_s, log_path)
            yield Endpoints(kind, target, f"http://127.0.0.1:{rest_port}", model_name, time.monotonic() - started)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
