"""What a pipeline run did, read back from ML Metadata: per-component state and wall time,
and where the pushed model went."""

from __future__ import annotations

from dataclasses import dataclass

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

_STATES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}


@dataclass(frozen=True)
class ComponentRun:
    component: str
    state: str  # COMPLETE, CACHED, FAILED, ...
    seconds: float
    properties: dict


def _store(metadata_path: str) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def latest_run_id(store: metadata_store.MetadataStore, pipeline_name: str) -> str | None:
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline is None:
        return None
    runs = [c for c in store.get_children_contexts_by_context(pipeline.id) if c.type == "pipeline_run"]
    return max(runs, key=lambda c: c.create_time_since_epoch).name if runs else None


def component_runs(metadata_path: str, pipeline_name: str, run_id: str | None = None) -> list[ComponentRun]:
    """Executions of one pipeline run (the latest by default), in the order they started."""
    store = _store(metadata_path)
    run_id = run_id or latest_run_id(store, pipeline_name)
    if run_id is None:
        return []
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    executions = sorted(store.get_executions_by_context(context.id), key=lambda e: e.create_time_since_epoch)
    runs = []
    for execution in executions:
        nodes = [c.name for c in store.get_contexts_by_execution(execution.id) if c.type == "node"]
        name = nodes[0].split(".", 1)[-1] if nodes else execution.type
        runs.append(ComponentRun(
            component=name,
            state=_STATES.get(execution.last_known_state, "UNKNOWN"),
            seconds=(execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000,
            properties={k: v.string_value or v.int_value or v.double_value
                        for k, v in execution.custom_properties.items()},
        ))
    return runs


def format_table(runs: list[ComponentRun]) -> str:
    width = max([len(r.component) for r in runs] + [9])
    lines = [f"{'component':<{width}}  {'state':<9} {'seconds':>8}"]
    lines += [f"{r.component:<{width}}  {r.state:<9} {r.seconds:>8.1f}" for r in runs]
    return "\n".join(lines)


def latest_pushed_model(serving_model_dir: str) -> str | None:
    """The highest numbered version directory the Pusher wrote, if any."""
    import os

    if not os.path.isdir(serving_model_dir):
        return None
    versions = [d for d in os.listdir(serving_model_dir) if d.isdigit()]
    return os.path.join(serving_model_dir, max(versions, key=int)) if versions else None


def predict_classes(model_dir: str, raw, batch_size: int = 1000):
    """Class ids a SavedModel's `serving_default` assigns to a RawSplit's images: the same path a
    serving client takes, raw pixels in, so it also exercises the exported preprocessing."""
    import numpy as np
    import tensorflow as tf

    from modules import features

    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    images = raw.images.reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)
    return np.concatenate([
        serve(images=tf.constant(images[i:i + batch_size]))["class_id"].numpy()
        for i in range(0, len(images), batch_size)
    ])


def pushed_model_accuracy(model_dir: str, data_root: str, input_format: str, split: str = "test") -> float:
    """Accuracy of a pushed SavedModel on a raw split of the input data."""
    import numpy as np

    from tfx_pipeline.components.raw_example_gen import SPLIT_PATTERNS, read_split

    raw = read_split(data_root, SPLIT_PATTERNS[input_format][split], input_format)
    return float(np.mean(predict_classes(model_dir, raw) == raw.labels))


def latest_outputs(metadata_path: str, pipeline_name: str, component: str, output_key: str) -> list:
    """Artifacts that `component`'s latest successful execution recorded under `output_key`."""
    store = _store(metadata_path)
    node = store.get_context_by_type_and_name("node", f"{pipeline_name}.{component}")
    if node is None:
        return []
    done = {metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED}
    executions = [e for e in store.get_executions_by_context(node.id) if e.last_known_state in done]
    if not executions:
        return []
    latest = max(executions, key=lambda e: e.create_time_since_epoch)
    artifact_ids = [
        event.artifact_id for event in store.get_events_by_execution_ids([latest.id])
        if event.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
        and event.path.steps and event.path.steps[0].key == output_key
    ]
    return store.get_artifacts_by_id(artifact_ids)
