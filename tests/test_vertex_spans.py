"""Span verdicts on Vertex, offline: the verdict store against a fake Vertex ML Metadata (the two
aiplatform.Artifact calls, with the filter evaluated), the exit handler against a fake PipelineJob,
and the window and drift baseline steps on real Examples and statistics of the committed sample."""

import gzip
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tfx.types import artifact_utils, standard_artifacts

from fmnist import dataset
from tfx_pipeline import span_verdicts, vertex_verdicts
from tfx_pipeline.components import drift_gate, vertex_spans
from tfx_pipeline.components import raw_example_gen as reg
from tfx_pipeline.components.drift_gate import SPAN, SpanStatistics

REPO = Path(__file__).resolve().parent.parent
SCHEMA = tfdv.load_schema_text(str(REPO / "schema" / "schema.pbtxt"))
PROJECT, REGION, PIPELINE = "demo-proj", "europe-west4", "fashion-mnist"
_CLAUSE = re.compile(r'^(schema_title|metadata\.(\w+)\.string_value)="([^"]*)"$')


class FakeVertexMetadata:
    """google.cloud.aiplatform as the verdict store and the exit handler use it: Artifact.create /
    Artifact.list (AND of equality clauses, as AIP-160 reads them) and PipelineJob.get."""

    def __init__(self, jobs=None):
        self.artifacts: list[SimpleNamespace] = []
        self.calls: list[tuple] = []
        outer = self

        class Artifact:
            @staticmethod
            def create(schema_title, display_name, uri, metadata, project, location):
                outer.calls.append(("create", project, location))
                json.dumps(metadata)  # Vertex takes JSON values only
                outer.artifacts.append(SimpleNamespace(schema_title=schema_title, display_name=display_name, uri=uri,
                                                       metadata=dict(metadata)))

            @staticmethod
            def list(filter, project, location):  # the SDK's argument name
                outer.calls.append(("list", filter, project, location))
                return [a for a in outer.artifacts if all(outer._matches(a, c) for c in filter.split(" AND "))]

        class PipelineJob:
            @staticmethod
            def get(resource_name):
                return jobs[resource_name]

        self.Artifact, self.PipelineJob = Artifact, PipelineJob

    @staticmethod
    def _matches(artifact, clause: str) -> bool:
        found = _CLAUSE.match(clause)
        assert found, f"filter clause the fake does not understand: {clause!r}"
        if found.group(2) is None:
            return artifact.schema_title == found.group(3)
        return str(artifact.metadata.get(found.group(2))) == found.group(3)


def test_verdicts_round_trip_through_vertex_ml_metadata_per_pipeline():
    fake = FakeVertexMetadata()
    store = vertex_verdicts.VertexVerdicts(PROJECT, REGION, PIPELINE, fake)
    other = vertex_verdicts.VertexVerdicts(PROJECT, REGION, "another", fake)
    store.record(1, "accepted", "blessed", "gs://b/1", "gs://b/stats1", by="run")
    store.record(2, "rejected", "golden gate failed", "gs://b/2", "gs://b/stats2", by="run")
    store.record(3, "accepted", "kept for training", "gs://b/3", "gs://b/stats3", by="run")
    other.record(4, "accepted", "blessed", "gs://o/4", "gs://o/stats4")
    assert fake.calls[-1] == ("create", PROJECT, REGION)

    assert vertex_verdicts.verdict_filter(PIPELINE) == (
        'schema_title="system.Artifact" AND metadata.kind.string_value="fmnist.SpanVerdict" '
        'AND metadata.pipeline.string_value="fashion-mnist"')
    current = store.current()
    assert {span: r.verdict.verdict for span, r in current.items()} == {1: "accepted", 2: "rejected", 3: "accepted"}
    assert [r.verdict.span for r in vertex_verdicts.window(current, current=5, num_spans=3)] == [1, 3]
    assert vertex_verdicts.baseline(current).verdict.span == 3

    made = store.record(2, "released", "  relabelled,\n checked ", "gs://b/2", by="qa")
    assert (made.verdict.reason, made.statistics_uri) == ("relabelled, checked", "gs://b/stats2")  # kept
    current = store.current()
    assert [r.verdict.span for r in vertex_verdicts.window(current, current=5, num_spans=3)] == [2, 3]
    assert [r.verdict.verdict for r in store.history()] == ["accepted", "rejected", "accepted", "released"]
    assert set(other.current()) == {4}
    with pytest.raises(span_verdicts.VerdictError, match="unknown verdict 'fine'"):
        store.record(3, "fine", "x", "gs://b/3")
    with pytest.raises(span_verdicts.VerdictError, match="a verdict needs a reason"):
        store.record(3, "quarantined", " ", "gs://b/3")
    assert len(fake.artifacts) == 5  # the refusals wrote nothing


# -- the exit handler ------------------------------------------------------------------------------
def _task(name, state="SUCCEEDED", **outputs):
    """A PipelineTaskDetail as aiplatform returns it: outputs are ArtifactLists of (uri, metadata)."""
    listed = {key: SimpleNamespace(artifacts=[SimpleNamespace(uri=uri, metadata=meta)]) for key, (uri, meta) in
              outputs.items()}
    return SimpleNamespace(task_name=name, state=SimpleNamespace(name=state), outputs=listed)


def _job(*tasks):
    return SimpleNamespace(task_details=[_task("tfx-dag"), *tasks])


def _status(name: str, state: str, message: str = "") -> str:
    return json.dumps({"state": state, "error": {"code": 9, "message": message} if message else {},
                       "pipelineJobResourceName": name, "pipelineTaskName": "tfx-dag"})


EXAMPLES = {"examples": ("gs://b/ExampleGen/examples/7", {"span": 7.0, "split_names": '["train", "eval"]'})}
DRIFT_OK = {"accepted": ("gs://b/DriftGate/accepted/7", {"span": 7.0})}


@pytest.mark.parametrize(("tasks", "state", "verdict", "reason", "statistics"), [
    ((_task("ExampleGen", **EXAMPLES), _task("DriftGate", "FAILED")), "FAILED", "drifted",
     "DriftGate", ""),
    ((_task("ExampleGen", **EXAMPLES), _task("AnomaliesGate", "FAILED")), "FAILED", "anomalous", "AnomaliesGate", ""),
    ((_task("ExampleGen", **EXAMPLES), _task("DriftGate", **DRIFT_OK),
      _task("BlessingGate", blessing=("gs://b/bg", {"blessed": 1.0, "golden": "passed", "reason": "ok"})),
      _task("ServingValidator", blessing=("gs://b/sv", {"blessed": 1.0}))),
     "SUCCEEDED", "accepted", "blessed (eval and golden gate) and infra-blessed", "gs://b/DriftGate/accepted/7"),
    ((_task("ExampleGen", **EXAMPLES), _task("DriftGate", **DRIFT_OK),
      _task("BlessingGate", blessing=("gs://b/bg", {"blessed": 0.0, "golden": "failed",
                                                    "reason": "golden gate: class 4 recall -0.31"}))),
     "SUCCEEDED", "rejected", "not blessed: golden gate: class 4 recall -0.31", "gs://b/DriftGate/accepted/7"),
    # The golden gate passed, the floors alone failed: "kept for training", unless the labels disagree.
    ((_task("ExampleGen", **EXAMPLES), _task("DriftGate", **DRIFT_OK),
      _task("BlessingGate", blessing=("gs://b/bg", {"blessed": 0.0, "golden": "passed", "labels": "disagree",
                                                    "reason": "the span's labels disagree: class 2"}))),
     "SUCCEEDED", "rejected", "not blessed: the span's labels disagree: class 2", "gs://b/DriftGate/accepted/7"),
    ((_task("ExampleGen", **EXAMPLES), _task("DriftGate", **DRIFT_OK),
      _task("BlessingGate", blessing=("gs://b/bg", {"blessed": 1.0, "golden": "passed", "reason": "ok"})),
      _task("ServingValidator", blessing=("gs://b/sv", {"blessed": 0.0, "reason": "warmup failed"}))),
     "SUCCEEDED", "rejected", "not infra-blessed: warmup failed", "gs://b/DriftGate/accepted/7"),
])
def test_the_exit_handler_records_the_runs_verdict_with_the_local_rule(tasks, state, verdict, reason, statistics):
    name = "projects/1/locations/europe-west4/pipelineJobs/fashion-mnist-7"
    message = "The DAG failed because some tasks failed. The failed tasks are: [x]." if state == "FAILED" else ""
    fake = FakeVertexMetadata({name: _job(*tasks)})
    line = vertex_spans.record_run(_status(name, state, message), PROJECT, REGION, PIPELINE, fake)
    (record,) = vertex_verdicts.VertexVerdicts(PROJECT, REGION, PIPELINE, fake).history()
    assert (record.verdict.span, record.verdict.verdict) == (7, verdict)
    assert reason in record.verdict.reason and line.startswith(f"span 7: {verdict}")
    assert record.examples_uri == "gs://b/ExampleGen/examples/7" and record.statistics_uri == statistics
    assert record.verdict.by == vertex_spans.RECORDED_BY


def test_a_run_that_ingested_nothing_or_crashed_before_the_gates_gets_no_verdict():
    crashed = "projects/1/locations/r/pipelineJobs/crashed"
    nothing = "projects/1/locations/r/pipelineJobs/nothing"
    fake = FakeVertexMetadata({crashed: _job(_task("ExampleGen", **EXAMPLES), _task("Trainer", "FAILED")),
                               nothing: _job(_task("ExampleGen", "FAILED"))})
    for name in (crashed, nothing):
        assert "no verdict" in vertex_spans.record_run(_status(name, "FAILED", "boom"), PROJECT, REGION, PIPELINE, fake)
    assert fake.artifacts == []


# -- the window and the drift baseline, on real data -----------------------------------------------
def _examples(root: Path, span: int, images: np.ndarray, labels: np.ndarray) -> standard_artifacts.Examples:
    """An Examples artifact as ExampleGen writes it: gzipped TFRecords under Split-train/Split-eval."""
    artifact = standard_artifacts.Examples()
    artifact.uri = str(root / f"span-{span}")
    half = len(labels) * 4 // 5
    for split, rows in ((dataset.TRAIN, slice(0, half)), (dataset.EVAL, slice(half, None))):
        (Path(artifact.uri) / f"Split-{split}").mkdir(parents=True)
        with tf.io.TFRecordWriter(str(Path(artifact.uri) / f"Split-{split}" / "data_tfrecord-00000-of-00001.gz"),
                                  options="GZIP") as writer:
            for image, label in zip(images[rows], labels[rows], strict=True):
                writer.write(reg.to_tf_example(image, int(label)).SerializeToString())
    artifact.split_names = artifact_utils.encode_split_names([dataset.TRAIN, dataset.EVAL])
    artifact.span = span
    artifact.set_int_custom_property(SPAN, span)
    artifact.set_string_custom_property("payload_format", "FORMAT_TF_EXAMPLE")
    return artifact


def _labels(split_dir: Path) -> list[int]:
    found = []
    for path in sorted(split_dir.iterdir()):
        for record in tf.data.TFRecordDataset(str(path), compression_type="GZIP"):
            found.append(tf.train.Example.FromString(record.numpy()).features.feature["label"].int64_list.value[0])
    return found


@pytest.fixture(scope="module")
def thirds(sample_dir):
    train = dataset.read_split(sample_dir, dataset.TRAIN)
    order = np.argsort(train.labels, kind="stable")
    return train, [order[i::3] for i in range(3)]


def test_the_window_step_merges_the_trainable_spans_into_one_examples_artifact(tmp_path, thirds):
    train, parts = thirds
    spans = {span: _examples(tmp_path, span, train.images[rows], train.labels[rows])
             for span, rows in zip((2, 3, 5), parts, strict=True)}
    fake = FakeVertexMetadata()
    store = vertex_verdicts.VertexVerdicts(PROJECT, REGION, PIPELINE, fake)
    store.record(2, "accepted", "blessed", spans[2].uri, by="run")
    store.record(3, "rejected", "golden gate failed", spans[3].uri, by="run")  # must stay out
    chosen = vertex_verdicts.window(store.current(), current=5, num_spans=3)
    out = standard_artifacts.Examples()
    out.uri = str(tmp_path / "window")
    vertex_spans.merge_examples([(r.verdict.span, r.examples_uri) for r in chosen], spans[5], out)

    assert out.get_string_custom_property(vertex_spans.WINDOW_SPANS) == "2,5"
    assert out.get_int_custom_property(SPAN) == 5 and out.get_string_custom_property("payload_format")
    assert artifact_utils.decode_split_names(out.split_names) == [dataset.TRAIN, dataset.EVAL]
    for split in (dataset.TRAIN, dataset.EVAL):
        merged = Path(artifact_utils.get_split_uri([out], split))
        assert sorted(p.name.split("-", 2)[1] for p in merged.iterdir()) == ["2", "5"]
        expected = _labels(Path(spans[2].uri) / f"Split-{split}") + _labels(Path(spans[5].uri) / f"Split-{split}")
        assert sorted(_labels(merged)) == sorted(expected) and len(expected) > 100
    assert gzip.open(next((Path(out.uri) / "Split-train").iterdir())).read(1)  # still gzipped TFRecords


def _stats_artifact(root: Path, name: str, images, labels) -> standard_artifacts.ExampleStatistics:
    path = root / f"{name}.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image, label in zip(images, labels, strict=True):
            writer.write(reg.to_tf_example(image, int(label)).SerializeToString())
    stats = tfdv.generate_statistics_from_tfrecord(str(path), stats_options=tfdv.StatsOptions(schema=SCHEMA))
    artifact = standard_artifacts.ExampleStatistics()
    artifact.uri = str(root / name)
    (Path(artifact.uri) / f"Split-{dataset.TRAIN}").mkdir(parents=True)
    (Path(artifact.uri) / f"Split-{dataset.TRAIN}" / drift_gate.STATS_FILE).write_bytes(stats.SerializeToString())
    artifact.split_names = artifact_utils.encode_split_names([dataset.TRAIN])
    return artifact


def _run_drift_gate(root: Path, examples, statistics, previous) -> SpanStatistics:
    schema = standard_artifacts.Schema()
    schema.uri = str(REPO / "schema")
    accepted = SpanStatistics()
    accepted.uri = str(root / "accepted")
    executor = drift_gate.DriftGate.EXECUTOR_SPEC.executor_class()
    executor.Do({"examples": [examples], "statistics": [statistics], "schema": [schema], "previous": [previous]},
                {"accepted": [accepted]}, {})
    return accepted


@pytest.mark.pipeline
def test_the_baseline_step_gives_the_drift_gate_the_newest_trainable_spans_statistics(tmp_path, thirds):
    train, parts = thirds
    fake = FakeVertexMetadata()
    store = vertex_verdicts.VertexVerdicts(PROJECT, REGION, PIPELINE, fake)
    # No trainable span yet: an empty baseline, and the first span passes on the schema alone.
    empty = SpanStatistics()
    empty.uri = str(tmp_path / "empty")
    vertex_spans.copy_baseline(vertex_verdicts.baseline(store.current()), empty)
    first = _examples(tmp_path, 1, train.images[parts[0]], train.labels[parts[0]])
    first_stats = _stats_artifact(tmp_path, "stats1", train.images[parts[0]], train.labels[parts[0]])
    accepted = _run_drift_gate(tmp_path / "run1", first, first_stats, empty)
    assert json.loads((Path(accepted.uri) / drift_gate.DRIFT_FILE).read_text())["previous_span"] is None
    store.record(1, "accepted", "blessed", first.uri, accepted.uri, by="run")

    # Span 2 has no class 3: against span 1's statistics, copied by the baseline step, it drifts.
    baseline = SpanStatistics()
    baseline.uri = str(tmp_path / "baseline")
    vertex_spans.copy_baseline(vertex_verdicts.baseline(store.current()), baseline)
    assert baseline.get_int_custom_property(SPAN) == 1
    kept = parts[1][train.labels[parts[1]] != 3]
    second = _examples(tmp_path, 2, train.images[kept], train.labels[kept])
    second_stats = _stats_artifact(tmp_path, "stats2", train.images[kept], train.labels[kept])
    with pytest.raises(drift_gate.DataDriftError, match=r"span 2 drifted from span 1 .*label L-infinity"):
        _run_drift_gate(tmp_path / "run2", second, second_stats, baseline)


def test_fmnist_spans_quarantines_and_releases_a_vertex_pipelines_span():
    from cli import spans

    fake = FakeVertexMetadata()
    store = vertex_verdicts.VertexVerdicts(PROJECT, REGION, PIPELINE, fake)
    store.record(4, "accepted", "blessed", "gs://b/4", "gs://b/stats4", by="run")
    line = spans.on_vertex(store, "quarantine", 4, "labels of class 2 found wrong", "qa")
    assert line.startswith("span 4 is quarantined (qa: labels of class 2 found wrong); no later window")
    assert vertex_verdicts.window(store.current(), current=9, num_spans=3) == []
    with pytest.raises(span_verdicts.VerdictError, match=r"span 4 is quarantined; only a span that is .* can become"):
        spans.on_vertex(store, "quarantine", 4, "again", None)
    assert "it enters the next rolling windows" in spans.on_vertex(store, "release", 4, "relabelled", "qa")
    assert store.current()[4].statistics_uri == "gs://b/stats4"  # the baseline step can still use it
    with pytest.raises(span_verdicts.VerdictError, match="span 5 has no verdict in Vertex ML Metadata"):
        spans.on_vertex(store, "quarantine", 5, "x", None)
    listed = spans.on_vertex(store, "list", None, None, None).splitlines()
    assert len(listed) == 2 and listed[1].split()[2:4] == ["4", "released"]
    assert [line.split()[3] for line in spans.on_vertex(store, "history", None, None, None).splitlines()[1:]] == [
        "accepted", "quarantined", "released"]
