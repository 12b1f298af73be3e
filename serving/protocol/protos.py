"""The tensorflow-serving-api protos without TensorFlow's runtime.

`tensorflow_serving.apis.*_pb2` import `tensorflow.core.framework.*_pb2`, and importing any
`tensorflow.*` module first runs `tensorflow/__init__.py` (~6 s, the whole runtime). The protos
need none of it, so a client that has not imported TensorFlow gets a bare namespace package for
`tensorflow` while the generated modules load; a process that already has TensorFlow is untouched.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

MODULES = {
    "predict_pb2": "tensorflow_serving.apis.predict_pb2",
    "classification_pb2": "tensorflow_serving.apis.classification_pb2",
    "get_model_metadata_pb2": "tensorflow_serving.apis.get_model_metadata_pb2",
    "get_model_status_pb2": "tensorflow_serving.apis.get_model_status_pb2",
    "prediction_service_pb2_grpc": "tensorflow_serving.apis.prediction_service_pb2_grpc",
    "model_service_pb2_grpc": "tensorflow_serving.apis.model_service_pb2_grpc",
    "example_pb2": "tensorflow.core.example.example_pb2",
    "types_pb2": "tensorflow.core.framework.types_pb2",
}


def load() -> types.SimpleNamespace:
    """The serving API modules, by short name (see MODULES)."""
    stubbed = "tensorflow" not in sys.modules
    if stubbed:
        spec = importlib.util.find_spec("tensorflow")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("the gRPC client needs the tensorflow-serving-api protos (pip install "
                              "tensorflow-serving-api), or use --transport rest")
        namespace = types.ModuleType("tensorflow")
        namespace.__path__ = list(spec.submodule_search_locations)
        sys.modules["tensorflow"] = namespace
    try:
        return types.SimpleNamespace(**{short: importlib.import_module(full) for short, full in MODULES.items()})
    finally:
        if stubbed:
            # Forget the namespace so a later `import tensorflow` runs the real package; the
            # proto modules stay registered and are the same ones TensorFlow would load.
            del sys.modules["tensorflow"]
