"""Resolver strategies for spans and models, read from the span verdicts in ML Metadata
(tfx_pipeline.span_verdicts):

- AcceptedSpanWindow, the rolling window the Trainer learns from: this run's span (it has just
  passed the drift gate; its own verdict comes after the run) and the newest N-1 spans whose
  verdict is accepted or released. TFX's SpanRangeStrategy would take any ingested span: one
  the drift gate stopped, or whose candidate was rejected, would enter the next windows.
- LatestTrainableSpanStatistics, the drift gate's baseline: the statistics of the newest span
  that is accepted or released (a rejected span's statistics are not what "normal" looks like).
- StableModel, the golden gate's baseline: the model the release labels `stable`.

Local runner only: TFX 1.16's Vertex compiler turns only LatestArtifactStrategy (one artifact)
and LatestBlessedModelStrategy into queries (tfx/orchestration/kubeflow/v2/step_builder.py,
_build_resolver_spec), so on Vertex the pipeline trains on the ingested span, warm-started, its
drift baseline is the latest accepted span's statistics and the golden gate compares with the
latest blessed model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import ml_metadata as mlmd
from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.dsl.components.common import resolver

from tfx_pipeline.components.drift_gate import SPAN, SpanStatistics, span_of
from tfx_pipeline.span_verdicts import Verdict, current_verdicts

EXAMPLES_KEY = "examples"
STATISTICS_KEY = "previous"
MODEL_KEY, BLESSING_KEY, PUSHED_KEY = "model", "model_blessing", "pushed_model"


def trainable_spans(verdicts: Mapping[int, Verdict]) -> set[int]:
    """Spans whose current verdict is accepted or released."""
    return {span for span, verdict in verdicts.items() if verdict.trainable}


def current_span(store: mlmd.MetadataStore) -> int | None:
    """The span the drift gate accepted last: this run's, when the gate has just run."""
    accepted = [a for a in store.get_artifacts_by_type(SpanStatistics.TYPE_NAME) if a.state == a.LIVE]
    return max(accepted, key=lambda a: a.id).custom_properties[SPAN].int_value if accepted else None


def newest_spans(examples: list[types.Artifact], current: int | None, trainable: set[int],
                 num_spans: int) -> list[types.Artifact]:
    """The newest ingestion of `current` and of the newest `num_spans` - 1 other `trainable`
    spans, oldest span first."""
    by_span: dict[int, types.Artifact] = {}

    def order(artifact: types.Artifact) -> tuple[int, int, int]:  # span, then re-ingestions of it
        return span_of(artifact), artifact.get_int_custom_property(example_gen_utils.VERSION_PROPERTY_NAME), artifact.id

    earlier = trainable - {current}
    for artifact in sorted(examples, key=order):
        if span_of(artifact) in earlier or span_of(artifact) == current:
            by_span[span_of(artifact)] = artifact
    keep = sorted(span for span in by_span if span != current)[-(num_spans - 1):] if num_spans > 1 else []
    keep += [current] if current in by_span else []
    return [by_span[span] for span in sorted(keep)]


class AcceptedSpanWindow(resolver.ResolverStrategy):
    """Resolves `examples` to this run's span and the newest `num_spans` - 1 trainable spans of
    `pipeline_name` (None when there is none)."""

    def __init__(self, num_spans: int, pipeline_name: str | None = None):
        if num_spans < 1:
            raise ValueError(f"the rolling window needs at least one span, got {num_spans}")
        self._num_spans = num_spans
        self._pipeline_name = pipeline_name

    def resolve_artifacts(self, store: mlmd.MetadataStore,
                          input_dict: dict[str, list[types.Artifact]]) -> dict[str, list[types.Artifact]] | None:
        trainable = trainable_spans(current_verdicts(store, self._pipeline_name))
        window = newest_spans(input_dict.get(EXAMPLES_KEY, []), current_span(store), trainable, self._num_spans)
        return {EXAMPLES_KEY: window} if window else None


def latest_trainable(statistics: list[types.Artifact], trainable: set[int]) -> list[types.Artifact]:
    """The SpanStatistics of the newest trainable span ([] when there is none)."""
    candidates = [a for a in statistics if span_of(a) in trainable]
    return [max(candidates, key=lambda a: (span_of(a), a.id))] if candidates else []


class LatestTrainableSpanStatistics(resolver.ResolverStrategy):
    """Resolves `previous` to the SpanStatistics of the newest trainable span of `pipeline_name`
    (nothing when there is none yet: the first span passes on the schema alone)."""

    def __init__(self, pipeline_name: str | None = None):
        self._pipeline_name = pipeline_name

    def resolve_artifacts(self, store: mlmd.MetadataStore,
                          input_dict: dict[str, list[types.Artifact]]) -> dict[str, list[types.Artifact]]:
        trainable = trainable_spans(current_verdicts(store, self._pipeline_name))
        return {STATISTICS_KEY: latest_trainable(input_dict.get(STATISTICS_KEY, []), trainable)}


def stable_version(release_file: str) -> int | None:
    """The version a TF Serving model config labels `stable` (None: no file, or no such label)."""
    if not os.path.exists(release_file):
        return None
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from fmnist.features import STABLE_LABEL

    with open(release_file) as stream:
        config = text_format.Parse(stream.read(), model_server_config_pb2.ModelServerConfig())
    labels = [dict(m.version_labels) for m in config.model_config_list.config]
    versions = [found[STABLE_LABEL] for found in labels if STABLE_LABEL in found]
    return versions[0] if versions else None


class StableModel(resolver.ResolverStrategy):
    """Resolves `model` to the Model behind the version `release_file` labels stable (the blessing
    the Pusher of that version read names it); with no release yet, the latest blessed model (the
    `model_blessing` channel, as LatestBlessedModelStrategy does); nothing when neither exists."""

    def __init__(self, release_file: str):
        self._release_file = release_file

    def resolve_artifacts(self, store: mlmd.MetadataStore,
                          input_dict: dict[str, list[types.Artifact]]) -> dict[str, list[types.Artifact]]:
        models = {m.id: m for m in input_dict.get(MODEL_KEY, [])}
        wanted = _stable_model_id(store, input_dict.get(PUSHED_KEY, []), stable_version(self._release_file))
        if wanted is None:
            blessed = [b for b in input_dict.get(BLESSING_KEY, []) if b.get_int_custom_property("blessed") == 1]
            ids = [b.get_int_custom_property("current_model_id") for b in blessed]
            wanted = max((i for i in ids if i in models), default=None)
        return {**input_dict, MODEL_KEY: [models[wanted]] if wanted in models else []}  # others: unused


def _stable_model_id(store: mlmd.MetadataStore, pushed: list[types.Artifact], version: int | None) -> int | None:
    if version is None:
        return None
    from tfx_pipeline import metadata

    matches = [p for p in pushed if p.get_string_custom_property("pushed_version") == str(version)]
    if not matches:
        return None
    # The Pusher pushes the ServingValidator's copy; the blessing it read names the model.
    blessings = metadata.producers_inputs(store, [matches[-1].mlmd_artifact], "model_blessing")
    ids = [b.custom_properties["current_model_id"].int_value for b in blessings
           if "current_model_id" in b.custom_properties]
    return ids[0] if ids else None
