"""Canary analysis on a Vertex AI endpoint, offline: the Google Cloud clients (aiplatform's Endpoint
and Model, Cloud Monitoring's MetricServiceClient, BigQuery's Client) are fakes with the real call
shapes; everything else is real. The replayed canaries are real SavedModels (loaded through their
fake Model Registry artifact_uri) answering the committed sample's test images with their labels
(the agreeing canary) or the labels shifted by one class (the disagreeing one); stable's logged
answers are those labels too."""

import datetime
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from google.api import distribution_pb2
from google.cloud import aiplatform, bigquery, monitoring_v3
from test_release import FakeEndpoint

from cli.main import main, resolved
from fmnist import features
from fmnist.dataset import read_split
from serving.release import canary_analysis as analysis
from serving.release import vertex_canary
from serving.release.labels import History

REPO = Path(__file__).resolve().parents[1]
ENDPOINT = FakeEndpoint.resource_name  # projects/p/locations/europe-west4/endpoints/42
TABLE = "my-project.fmnist_logs.request_response_logging"
STABLE_ID, CANARY_ID = "111", "222"
IMAGES = 60  # of the sample's test split: stable's logged instances


@pytest.fixture(scope="module")
def sample(sample_dir):
    split = read_split(sample_dir, "test")
    return split.images[:IMAGES].reshape(-1, *features.IMAGE_SHAPE).astype(np.float32), split.labels[:IMAGES]


@pytest.fixture(scope="module")
def canaries(tmp_path_factory, sample):
    """{deployed model ID: SavedModel dir}: 222 answers the labels, 333 the labels shifted by one."""
    from fmnist import tf_env

    tf_env.configure()
    import tensorflow as tf

    images, labels = sample

    class Lookup(tf.Module):  # the class of the nearest known image: a model whose answers are known
        def __init__(self, answers):
            super().__init__()
            self.table = tf.constant(images.reshape(len(images), -1))
            self.answers = tf.constant(np.eye(features.NUM_CLASSES, dtype=np.float32)[answers])

        @tf.function(input_signature=[tf.TensorSpec([None, *features.IMAGE_SHAPE], tf.float32)])
        def serve(self, images):
            flat = tf.reshape(images, [-1, features.NUM_PIXELS])
            distance = tf.reduce_sum(tf.abs(flat[:, None, :] - self.table[None]), axis=-1)
            return {features.PROBABILITIES_OUTPUT: tf.gather(self.answers, tf.argmin(distance, axis=1))}

    root = tmp_path_factory.mktemp("registry")
    for model_id, answers in ((CANARY_ID, labels), ("333", (labels + 1) % features.NUM_CLASSES)):
        module = Lookup(answers)
        tf.saved_model.save(module, str(root / model_id), signatures={features.SERVING_DEFAULT: module.serve})
    return {model_id: str(root / model_id) for model_id in (CANARY_ID, "333")}


# -- the fakes: the Google Cloud clients, with their real call shapes ---------------------------------
def _distribution(bounds_ms, counts):
    return distribution_pb2.Distribution(
        count=sum(counts), bucket_counts=counts,
        bucket_options=distribution_pb2.Distribution.BucketOptions(
            explicit_buckets=distribution_pb2.Distribution.BucketOptions.Explicit(bounds=bounds_ms)))


class FakeMetrics:
    """monitoring_v3.MetricServiceClient.list_time_series: one series per metric and deployed model,
    from `counts` {deployed model ID: (predictions, errors)}; latencies in two 60 s points."""

    def __init__(self, counts):
        self.counts = counts
        self.requests = []

    def list_time_series(self, request):
        assert isinstance(request, monitoring_v3.ListTimeSeriesRequest)
        self.requests.append(request)
        deployed = request.filter.split('metric.labels.deployed_model_id = "')[1].split('"')[0]
        predictions, errors = self.counts.get(deployed, (0, 0))
        if vertex_canary.PREDICTION_LATENCIES in request.filter:
            half = [0, predictions // 2 - predictions // 10, predictions // 10, 0, 0]
            values = [monitoring_v3.TypedValue(distribution_value=_distribution([5, 20, 80, 400], half))] * 2
        else:
            number = predictions if vertex_canary.PREDICTION_COUNT in request.filter else errors
            values = [monitoring_v3.TypedValue(int64_value=number - number // 2),
                      monitoring_v3.TypedValue(int64_value=number // 2)]
        return [monitoring_v3.TimeSeries(points=[monitoring_v3.Point(value=value) for value in values])]


class FakeBigQuery:
    """bigquery.Client.query(...).result(): the logging table's rows (REQUEST_LOG_COLUMNS order)."""

    def __init__(self, rows):
        self.rows = rows
        self.queries = []

    def query(self, sql, job_config=None):
        self.queries.append((sql, {p.name: p.value for p in job_config.query_parameters}))
        rows = self.rows

        class Job:
            def result(self):
                return [tuple(row[column] for column in ("endpoint", "deployed_model_id", "logging_time",
                                                         "request_id", "request_payload", "response_payload"))
                        for row in rows]
        return Job()


def _logged(sample, deployed, answers, count):
    """Rows as Vertex logs them: one JSON string per instance and per (bare) prediction."""
    images, _ = sample
    moment = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    return [{"endpoint": ENDPOINT, "deployed_model_id": deployed, "logging_time": moment,
             "request_id": f"{deployed}-{i}", "request_payload": [json.dumps(images[i].tolist())],
             "response_payload": [json.dumps(np.eye(features.NUM_CLASSES)[answers[i]].tolist())]}
            for i in range(count)]


@pytest.fixture
def vertex(monkeypatch, sample, canaries):
    """Installs the fakes; returns a function (canary ID, its predictions) -> (endpoint, metrics, bigquery)."""
    _, labels = sample

    def install(canary_id, canary_predictions, canary_errors=0):
        endpoint = FakeEndpoint({STABLE_ID: 90, canary_id: 10})
        canary_answers = (labels if canary_id == CANARY_ID else (labels + 1) % features.NUM_CLASSES)
        metrics = FakeMetrics({STABLE_ID: (5000, 0), canary_id: (canary_predictions, canary_errors)})
        table = FakeBigQuery(_logged(sample, STABLE_ID, labels, IMAGES)
                             + _logged(sample, canary_id, canary_answers, 20)
                             + _logged(sample, "999", labels, 5))  # another endpoint's model: ignored
        monkeypatch.setattr(aiplatform, "Endpoint", lambda name, project=None, location=None: endpoint)
        # The Model Registry: a deployed model's model resource name -> its artifact_uri.
        monkeypatch.setattr(aiplatform, "Model",
                            lambda name: type("Model", (), {"uri": canaries[name.rsplit("/", 1)[1]]}))
        monkeypatch.setattr(monitoring_v3, "MetricServiceClient", lambda *a, **k: metrics)
        monkeypatch.setattr(bigquery, "Client", lambda *a, **k: table)
        return endpoint, metrics, table
    return install


def _auto(capsys, history, *extra):
    code = main(["release", "auto", "--vertex-endpoint", ENDPOINT, "--bigquery-table", TABLE,
                 "--history", str(history), "--bake-requests", "500", *extra])
    out, err = capsys.readouterr()
    return code, out, err


# -- end to end: `fmnist release auto --vertex-endpoint ...` ---------------------------------------------
def test_an_agreeing_canary_is_promoted_and_the_old_stable_undeployed(vertex, capsys, tmp_path):
    endpoint, metrics, table = vertex(CANARY_ID, 600)
    code, out, err = _auto(capsys, tmp_path / "history.jsonl")
    assert code == 0, err
    assert f"release: canary {CANARY_ID} promoted (stable {STABLE_ID})" in out
    assert re.search(r"^agreement +1\.0000 +>= 0\.9000 +pass +60 of 60 shadow instances$", out, re.M)
    assert endpoint.calls == [("update", {CANARY_ID: 100}), ("undeploy", STABLE_ID)]
    (entry,) = History(str(tmp_path / "history.jsonl")).entries()
    assert (entry["action"], entry["stable"], entry["canary"], entry["previous_stable"]) == (
        "promoted", CANARY_ID, None, STABLE_ID)
    assert entry["evidence"]["shadow_agreements"] == entry["evidence"]["shadow_instances"] == IMAGES
    assert entry["evidence"]["canary_requests"] == 600
    assert {c["name"]: c["verdict"] for c in entry["checks"]} == {
        "error rate": "pass", "p99 latency ms": "pass", "agreement": "pass", "class JS div": "pass",
        "accuracy": "n/a"}
    # What was asked of Google Cloud: each metric per deployed model on this endpoint, the bake's window
    # of the logging table.
    filters = {request.filter for request in metrics.requests}
    assert (f'metric.type = "{vertex_canary.PREDICTION_LATENCIES}" AND resource.type = '
            f'"aiplatform.googleapis.com/Endpoint" AND resource.labels.endpoint_id = "42" AND '
            f'metric.labels.deployed_model_id = "{CANARY_ID}" AND metric.labels.latency_type = "total"') in filters
    assert {request.name for request in metrics.requests} == {"projects/p"}
    ((sql, parameters),) = table.queries
    assert sql == (f"SELECT endpoint, deployed_model_id, logging_time, request_id, request_payload, response_payload "
                   f"FROM `{TABLE}` WHERE logging_time >= @start AND logging_time < @end ORDER BY logging_time")
    assert parameters["start"] < parameters["end"]


def test_a_canary_that_disagrees_on_the_replayed_requests_is_rolled_back(vertex, capsys, tmp_path):
    endpoint, _, _ = vertex("333", 600)
    code, out, err = _auto(capsys, tmp_path / "history.jsonl")
    assert code == 0, err
    assert "release: canary 333 rolled back (stable 111)" in out
    assert re.search(r"^agreement +0\.0000 +>= 0\.9000 +FAIL +0 of 60 shadow instances$", out, re.M)
    assert endpoint.calls == [("update", {STABLE_ID: 100}), ("undeploy", "333")]
    (entry,) = History(str(tmp_path / "history.jsonl")).entries()
    assert (entry["action"], entry["stable"], entry["canary"], entry["actor"]) == (
        "rolled back", STABLE_ID, "333", "fmnist release auto")


def test_too_few_canary_requests_is_inconclusive_and_the_canary_kept(vertex, capsys, tmp_path):
    endpoint, _, _ = vertex(CANARY_ID, 10)
    code, out, err = _auto(capsys, tmp_path / "history.jsonl", "--bake-seconds", "0")
    assert code == 0, err
    assert f"release: canary {CANARY_ID} inconclusive (stable {STABLE_ID})" in out
    assert endpoint.calls == []
    (entry,) = History(str(tmp_path / "history.jsonl")).entries()
    assert (entry["action"], entry["canary"], entry["note"]) == ("inconclusive", CANARY_ID,
                                                                 "10 of 500 requests: canary kept")
    code = main(["release", "history", "--vertex-endpoint", ENDPOINT, "--history", str(tmp_path / "history.jsonl")])
    assert code == 0 and "inconclusive" in capsys.readouterr().out


def test_auto_without_a_canary_is_a_no_op(monkeypatch, capsys, tmp_path):
    endpoint = FakeEndpoint({STABLE_ID: 100})
    monkeypatch.setattr(aiplatform, "Endpoint", lambda name, project=None, location=None: endpoint)
    monkeypatch.setattr(monitoring_v3, "MetricServiceClient", lambda *a, **k: FakeMetrics({}))
    monkeypatch.setattr(bigquery, "Client", lambda *a, **k: FakeBigQuery([]))
    code, out, err = _auto(capsys, tmp_path / "history.jsonl")
    assert (code, err, out) == (0, "", f"release: no canary to analyze (stable {STABLE_ID})\n")
    assert endpoint.calls == [] and not (tmp_path / "history.jsonl").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["auto", "--vertex-endpoint", ENDPOINT, "--history", "h.jsonl"],
     "`fmnist release auto` on a Vertex endpoint needs --bigquery-table PROJECT.DATASET.TABLE"),
    (["auto", "--vertex-endpoint", ENDPOINT, "--bigquery-table", TABLE],
     "`fmnist release auto` on a Vertex endpoint needs --history FILE"),
    (["analyze", "--vertex-endpoint", ENDPOINT, "--bigquery-table", TABLE, "--server", "x:1"],
     "--server measures a `fmnist serve`; a Vertex endpoint is measured from Cloud Monitoring"),
    (["analyze", "--server", "x:1", "--bigquery-table", TABLE],
     "--bigquery-table and --history are for a Vertex endpoint"),
    (["history", "--vertex-endpoint", ENDPOINT], "a Vertex endpoint's history is the file its job appends to"),
])
def test_missing_or_contradictory_flags_are_one_line_errors(monkeypatch, capsys, args, message):
    monkeypatch.setattr(aiplatform, "Endpoint", lambda *a, **k: pytest.fail("opened the endpoint"))
    assert main(["release", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


# -- the parts --------------------------------------------------------------------------------------
def test_distribution_buckets_become_cumulative_seconds():
    options = distribution_pb2.Distribution.BucketOptions
    explicit = _distribution([10, 100], [1, 2, 3])
    assert vertex_canary.cumulative_buckets([explicit, explicit]) == ((0.01, 2.0), (0.1, 6.0), (float("inf"), 12.0))
    # Exponential: underflow < scale, then scale * growth^i; bucket_counts may leave out trailing zeros.
    exponential = distribution_pb2.Distribution(bucket_counts=[0, 4], bucket_options=options(
        exponential_buckets=options.Exponential(num_finite_buckets=2, growth_factor=2, scale=1)))
    assert vertex_canary.cumulative_buckets([exponential]) == ((0.001, 0.0), (0.002, 4.0), (0.004, 4.0),
                                                               (float("inf"), 4.0))
    assert analysis.histogram_quantile(0.5, vertex_canary.cumulative_buckets([exponential])) == pytest.approx(0.0015)
    with pytest.raises(analysis.AnalysisError, match="changed its buckets"):
        vertex_canary.cumulative_buckets([explicit, exponential])


def test_the_replay_reaches_the_canary_savedmodel_through_its_registry_uri(vertex, sample):
    from cli import canary_replay

    endpoint, _, _ = vertex("333", 0)
    images, labels = sample
    assert (canary_replay.canary_classes(endpoint, "333", images[:7]) == (labels[:7] + 1) % 10).all()
    with pytest.raises(KeyError, match="deploys no model 444"):
        canary_replay.canary_classes(endpoint, "444", images[:1])


# -- the job on Cloud Run (deploy/canary/) ---------------------------------------------------------------
def test_the_canary_job_runs_release_auto_on_the_endpoint_with_its_history_on_the_bucket():
    from cli import release
    from fmnist import bigquery as tables

    job = yaml.safe_load((REPO / "deploy" / "canary" / "job.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("run.googleapis.com/v1", "Job")
    task = job["spec"]["template"]["spec"]["template"]["spec"]
    assert task["maxRetries"] == 0 and task["serviceAccountName"].startswith("fmnist-canary@")
    (container,) = task["containers"]
    assert container["image"].endswith("/fashion-mnist/fmnist:TAG")
    parsed, args = resolved(container["args"], environ={})  # the flags exist and parse
    assert (parsed.handler.handler, parsed.action) == (release.run, "auto")
    assert vertex_canary.endpoint_parts(args["vertex_endpoint"]) == ("PROJECT", "ENDPOINT_ID")
    assert tables.check_table_id(args["bigquery_table"].replace("PROJECT", "my-project"))
    assert task["timeoutSeconds"] > args["bake_seconds"]  # the execution outlives the bake
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (volume,) = task["volumes"]
    assert volume["csi"]["driver"] == "gcsfuse.run.googleapis.com"
    assert args["history"].startswith(mounts[volume["name"]] + "/")
