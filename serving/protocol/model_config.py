"""TF Serving's model config: the ModelServerConfig text proto `tensorflow_model_server
--model_config_file`, `fmnist serve --model-config-file` and a release (version labels stable /
canary) share. Read and written here so the server (serving.server.manager polls it) and the
release operations (serving.release.labels rewrite it) need not import each other. TF-free: the
config protos are plain protobuf modules.
"""

from __future__ import annotations

import os

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from fmnist import files
from fmnist.errors import one_line


def read_model_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    """The ModelServerConfig text proto at `path`. Raises OSError if it cannot be read, ValueError
    (one line, naming the file) if it is not a ModelServerConfig or lists no model."""
    with open(path, "rb") as stream:
        data = stream.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:  # found by fuzzing: the error did not name the file
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as err:
        raise ValueError(f"{path}: not a ModelServerConfig text proto: {one_line(err)}") from None
    if not config.model_config_list.config:
        raise ValueError(f"{path}: model_config_list has no model")
    return config


def single_model_config(name: str, base_path: str, labels: dict[str, int] | None = None,
                        latest_versions: int = 1) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name=name, base_path=os.path.abspath(base_path),
                                                model_platform="tensorflow")
    model.model_version_policy.latest.num_versions = latest_versions
    for label, version in (labels or {}).items():
        model.version_labels[label] = version
    return config


def write_model_config(config: model_server_config_pb2.ModelServerConfig, path: str) -> None:
    """Replaces `path` atomically and durably (fmnist.files), so a server polling the file never
    reads half of one and the rename survives a crash. Keeps the old file's permission bits."""
    with files.replaced_atomically(path, mode=files.KEEP_MODE, durable=True) as stream:
        stream.write(text_format.MessageToString(config))
