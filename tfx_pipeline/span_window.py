"""Resolver strategies for spans. The rolling window the Trainer learns from: the newest N
spans that passed the drift gate; and the drift gate's baseline, the last accepted span.

TFX's SpanRangeStrategy takes the newest N spans of a channel, but ExampleGen has already
published the Examples of a span that the drift gate then rejected, so that span would enter the
next windows. This strategy keeps only spans with a `SpanStatistics` artifact (what DriftGate
publishes when it accepts a span) and, of several ingestions of one span, the newest.

Local runner only: TFX 1.16's Vertex compiler turns only LatestArtifactStrategy (one artifact)
and LatestBlessedModelStrategy into queries (tfx/orchestration/kubeflow/v2/step_builder.py,
_build_resolver_spec), so on Vertex the pipeline trains on the ingested span, warm-started.
"""

from __future__ import annotations

import ml_metadata as mlmd
from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.dsl.components.common import resolver
from tfx.dsl.input_resolution.strategies.latest_artifact_strategy import LatestArtifactStrategy

from tfx_pipeline.components.drift_gate import SPAN, SpanStatistics, span_of

EXAMPLES_KEY = "examples"


def accepted_spans(store: mlmd.MetadataStore) -> set[int]:
    """Spans the drift gate accepted, from the live SpanStatistics artifacts in `store`."""
    return {artifact.custom_properties[SPAN].int_value
            for artifact in store.get_artifacts_by_type(SpanStatistics.TYPE_NAME) if artifact.state == artifact.LIVE}


def newest_spans(examples: list[types.Artifact], accepted: set[int], num_spans: int) -> list[types.Artifact]:
    """The newest ingestion of each of the newest `num_spans` accepted spans, oldest span first."""
    by_span: dict[int, types.Artifact] = {}

    def order(artifact: types.Artifact) -> tuple[int, int, int]:  # span, then re-ingestions of it
        return span_of(artifact), artifact.get_int_custom_property(example_gen_utils.VERSION_PROPERTY_NAME), artifact.id

    for artifact in sorted(examples, key=order):
        if span_of(artifact) in accepted:
            by_span[span_of(artifact)] = artifact
    return [by_span[span] for span in sorted(by_span)[-num_spans:]]


class AcceptedSpanWindow(resolver.ResolverStrategy):
    """Resolves `examples` to the newest `num_spans` accepted spans (None when there is none)."""

    def __init__(self, num_spans: int):
        if num_spans < 1:
            raise ValueError(f"the rolling window needs at least one span, got {num_spans}")
        self._num_spans = num_spans

    def resolve_artifacts(self, store: mlmd.MetadataStore,
                          input_dict: dict[str, list[types.Artifact]]) -> dict[str, list[types.Artifact]] | None:
        window = newest_spans(input_dict.get(EXAMPLES_KEY, []), accepted_spans(store), self._num_spans)
        return {EXAMPLES_KEY: window} if window else None


class LatestIfAny(LatestArtifactStrategy):
    """LatestArtifactStrategy that resolves to nothing, rather than failing the resolver node,
    when there is no artifact yet (the first span has no previous one). Local runner only: the
    Vertex compiler accepts LatestArtifactStrategy itself, whose empty result Vertex tolerates."""

    def resolve_artifacts(self, store: mlmd.MetadataStore,
                          input_dict: dict[str, list[types.Artifact]]) -> dict[str, list[types.Artifact]]:
        return self._resolve(input_dict)
