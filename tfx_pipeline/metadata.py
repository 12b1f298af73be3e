"""Every ML Metadata query of the project: what a pipeline run did (per-component state and wall
time) and which artifacts a component's latest execution read and wrote. Read-only, except the
span verdicts (tfx_pipeline.span_verdicts), which open the store writable."""

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


def open_store(metadata_path: str, writable: bool = False) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = (metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE if writable else
                                     metadata_store_pb2.SqliteMetadataSourceConfig.READONLY)
    return metadata_store.MetadataStore(config)


def latest_run_id(store: metadata_store.MetadataStore, pipeline_name: str) -> str | None:
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline is None:
        return None
    runs = [c for c in store.get_children_contexts_by_context(pipeline.id) if c.type == "pipeline_run"]
    return max(runs, key=lambda c: c.create_time_since_epoch).name if runs else None


def component_runs(metadata_path: str, pipeline_name: str, run_id: str | None = None) -> list[ComponentRun]:
    """Executions of one pipeline run (the latest by default), in the order they started."""
    store = open_store(metadata_path)
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


@dataclass(frozen=True)
class ExecutionOutputs:
    execution: metadata_store_pb2.Execution
    run_id: str
    artifacts: dict[str, list]  # output key -> artifacts


_DONE = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)


def latest_execution_outputs(metadata_path: str, pipeline_name: str, component: str,
                             run_id: str | None = None) -> ExecutionOutputs | None:
    """`component`'s latest successful execution (within `run_id` if given) and its outputs."""
    store = open_store(metadata_path)
    executions = _done_executions(store, pipeline_name, component)
    runs = {e.id: _run_of(store, e.id) for e in executions}
    if run_id is not None:
        executions = [e for e in executions if runs[e.id] == run_id]
    if not executions:
        return None
    latest = max(executions, key=lambda e: e.create_time_since_epoch)
    return ExecutionOutputs(execution=latest, run_id=runs[latest.id],
                            artifacts=execution_artifacts(store, latest.id, _OUTPUT_EVENTS))


def execution_artifacts(store: metadata_store.MetadataStore, execution_id: int, event_types) -> dict[str, list]:
    """{input or output key: artifacts} of one execution, for the given event types."""
    events = [e for e in store.get_events_by_execution_ids([execution_id]) if e.type in event_types]
    by_id = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    artifacts: dict[str, list] = {}
    for event in events:
        # One artifact under two keys (e.g. Evaluator's model == baseline_model) is one event
        # whose path lists both: key, index, key, index.
        for key in {step.key for step in event.path.steps if step.HasField("key")}:
            artifacts.setdefault(key, []).append(by_id[event.artifact_id])
    return artifacts


def _done_executions(store: metadata_store.MetadataStore, pipeline_name: str, component: str) -> list:
    """`component`'s successful (or cached) executions, oldest first; none if it never ran."""
    node = store.get_context_by_type_and_name("node", f"{pipeline_name}.{component}")
    if node is None:
        return []
    done = (e for e in store.get_executions_by_context(node.id) if e.last_known_state in _DONE)
    return sorted(done, key=lambda e: e.create_time_since_epoch)


def _run_of(store: metadata_store.MetadataStore, execution_id: int) -> str:
    return next((c.name for c in store.get_contexts_by_execution(execution_id) if c.type == "pipeline_run"), "")


def all_outputs(metadata_path: str, pipeline_name: str, component: str, output_key: str) -> list:
    """Artifacts recorded under `output_key` by every successful execution of `component`."""
    store = open_store(metadata_path)
    return [artifact for execution in _done_executions(store, pipeline_name, component)
            for artifact in execution_artifacts(store, execution.id, _OUTPUT_EVENTS).get(output_key, [])]


def executions_inputs(metadata_path: str, pipeline_name: str, component: str) -> list[dict[str, list]]:
    """{input key: artifacts} of every successful execution of `component`, oldest first."""
    store = open_store(metadata_path)
    return [execution_artifacts(store, e.id, [metadata_store_pb2.Event.INPUT])
            for e in _done_executions(store, pipeline_name, component)]


def producers_inputs(store: metadata_store.MetadataStore, artifacts: list, input_key: str) -> list:
    """The `input_key` inputs of the executions that produced `artifacts` (one step of lineage)."""
    producers = {e.execution_id for e in store.get_events_by_artifact_ids([a.id for a in artifacts])
                 if e.type == metadata_store_pb2.Event.OUTPUT}
    return [artifact for execution in producers
            for artifact in execution_artifacts(store, execution, [metadata_store_pb2.Event.INPUT]).get(input_key, [])]


def latest_outputs(metadata_path: str, pipeline_name: str, component: str, output_key: str) -> list:
    """Artifacts that `component`'s latest successful execution recorded under `output_key`."""
    found = latest_execution_outputs(metadata_path, pipeline_name, component)
    return found.artifacts.get(output_key, []) if found else []


def only_pipeline_name(metadata_path: str) -> str:
    """The pipeline a store records, when it records exactly one (the local runner's layout)."""
    names = [c.name for c in open_store(metadata_path).get_contexts_by_type("pipeline")]
    if len(names) != 1:
        raise LookupError(f"{metadata_path} records {len(names)} pipelines ({', '.join(names) or 'none'}); "
                          "name the one you mean")
    return names[0]


def producing_run(store: metadata_store.MetadataStore, artifact) -> str:
    """The pipeline run whose execution wrote `artifact` ("" if none is recorded)."""
    producers = [e.execution_id for e in store.get_events_by_artifact_ids([artifact.id])
                 if e.type in _OUTPUT_EVENTS]
    return _run_of(store, producers[0]) if producers else ""
