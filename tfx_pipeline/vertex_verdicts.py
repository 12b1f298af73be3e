"""Span verdicts on Vertex AI: the same verdicts as tfx_pipeline.span_verdicts, kept in Vertex ML
Metadata, and the two things that read them there.

TFX 1.16's Vertex compiler turns no custom resolver strategy into a query, so the local runner's
AcceptedSpanWindow / LatestTrainableSpanStatistics cannot run on Vertex. Instead:

- every run ends in an exit handler (tfx_pipeline.components.vertex_spans.SpanVerdictRecorder) that
  reads the run's task outputs from the PipelineJob and records the span's verdict with
  span_verdicts.decide(), the local rule, as a Vertex ML Metadata artifact (schema
  `system.Artifact`, metadata `kind` = VERDICT_TYPE): span, verdict, reason, by, time, pipeline,
  and the URIs of the span's Examples and SpanStatistics, so later runs can read them;
- TrainableSpans (before the drift gate) copies the newest trainable span's statistics as the
  drift baseline, and SpanWindow (after it) merges this run's span with the newest trainable
  ones into one Examples artifact the Transform and Trainer read.

`fmnist spans quarantine/release` on Vertex would record through VertexVerdicts.record() the same
way; the store is the only part that differs from the local one. The narrow boundary with GCP is
`aiplatform.Artifact.list` / `.create` (tests fake those two) and `aiplatform.PipelineJob.get`.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from tfx_pipeline.span_verdicts import (
    AT,
    BY,
    PIPELINE,
    REASON,
    VERDICT,
    VERDICT_TYPE,
    Verdict,
    VerdictError,
    checked,
)

SCHEMA_TITLE: Final = "system.Artifact"  # a system schema: a custom one would need registering first
KIND: Final = "kind"
SPAN: Final = "span"
EXAMPLES_URI: Final = "examples_uri"
STATISTICS_URI: Final = "statistics_uri"


@dataclass(frozen=True)
class SpanRecord:
    """A verdict as Vertex ML Metadata holds it, with where the span's data and statistics are."""

    verdict: Verdict
    examples_uri: str
    statistics_uri: str


def verdict_filter(pipeline_name: str) -> str:
    """The ListArtifacts filter for this pipeline's verdicts (AIP-160, metadata.<field>.<type>_value)."""
    return (f'schema_title="{SCHEMA_TITLE}" AND metadata.{KIND}.string_value="{VERDICT_TYPE}" '
            f'AND metadata.{PIPELINE}.string_value="{pipeline_name}"')


def _record(metadata: Mapping[str, Any]) -> SpanRecord:
    return SpanRecord(Verdict(span=int(metadata[SPAN]), verdict=str(metadata[VERDICT]), reason=str(metadata[REASON]),
                              by=str(metadata[BY]), at=float(metadata[AT])),
                      str(metadata.get(EXAMPLES_URI, "")), str(metadata.get(STATISTICS_URI, "")))


class VertexVerdicts:
    """The verdicts of `pipeline_name` in the Vertex ML Metadata store of project/region.
    `aiplatform` is the google.cloud.aiplatform module (imported when None)."""

    def __init__(self, project: str, region: str, pipeline_name: str, aiplatform: Any = None):
        if aiplatform is None:
            from google.cloud import aiplatform
        self._aiplatform, self._project, self._region, self._pipeline = aiplatform, project, region, pipeline_name

    def history(self) -> list[SpanRecord]:
        """Every verdict recorded, oldest first."""
        found = self._aiplatform.Artifact.list(filter=verdict_filter(self._pipeline), project=self._project,
                                               location=self._region)
        return sorted((_record(dict(a.metadata)) for a in found), key=lambda r: r.verdict.at)

    def current(self) -> dict[int, SpanRecord]:
        """{span: its newest verdict}."""
        return {record.verdict.span: record for record in self.history()}

    def record(self, span: int, verdict: str, reason: str, examples_uri: str = "", statistics_uri: str = "",
               by: str | None = None, allowed_from: Iterable[str | None] | None = None) -> SpanRecord:
        """Records `span`'s new verdict, by span_verdicts.checked()'s rule; empty URIs keep the
        span's earlier ones. VerdictError (nothing written) for a change the rule refuses, or a
        span with neither a verdict yet nor `examples_uri`."""
        earlier = self.current().get(span)
        examples_uri = examples_uri or (earlier.examples_uri if earlier else "")
        statistics_uri = statistics_uri or (earlier.statistics_uri if earlier else "")
        if not examples_uri:
            raise VerdictError(f"span {span} has no verdict in Vertex ML Metadata for pipeline {self._pipeline!r} "
                               f"({self._project}/{self._region}): no run recorded it")
        reason = checked(span, verdict, reason, earlier.verdict.verdict if earlier else None, allowed_from)
        made = SpanRecord(Verdict(span, verdict, reason, by or f"{getpass.getuser()} (fmnist)", time.time()),
                          examples_uri, statistics_uri)
        self._aiplatform.Artifact.create(
            schema_title=SCHEMA_TITLE, display_name=f"{self._pipeline}-span-{span}-{verdict}", uri=examples_uri,
            metadata={KIND: VERDICT_TYPE, PIPELINE: self._pipeline, SPAN: span, VERDICT: verdict, REASON: reason,
                      BY: made.verdict.by, AT: made.verdict.at, EXAMPLES_URI: examples_uri,
                      STATISTICS_URI: statistics_uri},
            project=self._project, location=self._region)
        return made


def window(records: Mapping[int, SpanRecord], current: int, num_spans: int) -> list[SpanRecord]:
    """The newest `num_spans` - 1 trainable spans other than `current`, oldest first (the local
    window's rule, span_window.newest_spans, on Vertex records)."""
    earlier = sorted(span for span, record in records.items() if record.verdict.trainable and span != current)
    keep = earlier[-(num_spans - 1):] if num_spans > 1 else []
    return [records[span] for span in keep]


def baseline(records: Mapping[int, SpanRecord]) -> SpanRecord | None:
    """The newest trainable span that has statistics (the drift gate's baseline), or None."""
    usable = [r for r in records.values() if r.verdict.trainable and r.statistics_uri]
    return max(usable, key=lambda r: r.verdict.span) if usable else None
