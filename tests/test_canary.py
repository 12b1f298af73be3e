"""Automatic canary analysis: shadow traffic in the server, the analysis maths on real metric text,
`fmnist release analyze|auto|history`, the replace policy, and zero failed requests through bake,
promote, replace and rollback under REST + gRPC load on a real `fmnist serve`.

Servers run real SavedModels exported by the project's code: exported_model (stable, and its
copies as clean canaries) and disagreeing_model (trained on labels shifted by one class)."""

import contextlib
import dataclasses
import io
import shutil
import threading
import time
from concurrent.futures import Future
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from cli.main import main
from fmnist import features
from fmnist.dataset import read_split
from serving.client.clients import GrpcClient, RestClient
from serving.protocol.names import PROMETHEUS_PATH
from serving.release import canary_analysis as analysis
from serving.release import labels as release
from serving.server.process import RunningServer, ServerOptions
from serving.server.prometheus import ServingMetrics
from serving.server.shadow import ShadowMirror

MODEL = features.MODEL_NAME
STABLE, CANARY = features.STABLE_LABEL, features.CANARY_LABEL


@pytest.fixture(scope="module")
def images(sample_dir):
    return read_split(sample_dir, "test").images.reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)


@pytest.fixture(scope="module")
def base(tmp_path_factory, exported_model, disagreeing_model):
    """Versions 1-3: the exported model; 4: the disagreeing one."""
    root = tmp_path_factory.mktemp("canary") / "serving_model"
    for version in (1, 2, 3):
        shutil.copytree(exported_model, root / str(version))
    shutil.copytree(disagreeing_model, root / "4")
    return root


@pytest.fixture(scope="module")
def server(base):
    """stable=1, canary=4 (disagreeing), every unlabelled request shadowed, none sent to the canary."""
    config_file = base.parent / "models.config"
    for version in ("1", "4"):
        release.FileRelease(str(config_file), base_path=str(base)).start_canary(version)
    running = RunningServer(ServerOptions(model_config_file=str(config_file), rest_port=0, grpc_port=0,
                                          poll_seconds=0.2, shadow_traffic=100.0)).start()
    yield running
    running.stop()


def _snapshot(running) -> analysis.Snapshot:
    return analysis.Snapshot.parse(httpx.get(f"http://127.0.0.1:{running.rest_port}{PROMETHEUS_PATH}").text)


def _evidence_after(running, before, wanted_shadow_requests, stable=1, canary=4, timeout=60.0):
    """The evidence since `before`, once the shadow thread has run `wanted_shadow_requests`."""
    deadline = time.monotonic() + timeout
    while True:
        evidence = analysis.Evidence.between(_snapshot(running).minus(before), MODEL, stable, canary)
        if evidence.shadow_requests >= wanted_shadow_requests or time.monotonic() > deadline:
            return evidence
        time.sleep(0.05)


def _bincount(classes):
    return tuple(int(n) for n in np.bincount(np.asarray(classes), minlength=features.NUM_CLASSES))


# -- shadow traffic -------------------------------------------------------------------------------
def test_shadow_compares_stable_and_canary_on_the_same_inputs_and_the_client_gets_stable(server, images):
    before = _snapshot(server)
    rest, grpc_client = RestClient(f"127.0.0.1:{server.rest_port}", MODEL), GrpcClient(
        f"127.0.0.1:{server.grpc_port}", MODEL)
    batches = [images[i:i + 3] for i in range(0, 60, 3)]
    answers = [(rest if i % 2 else grpc_client).predict(batch) for i, batch in enumerate(batches)]
    assert {answer.version for answer in answers} == {1}  # the client always gets stable's answer
    classified = rest.classify(images[60:62])  # Classify is mirrored too
    stable_classes = np.concatenate([a.class_ids for a in answers] +
                                    [np.argmax([[s for _, s in r] for r in classified], axis=1)])
    # Asked by label: what the canary predicts for the same images (labelled requests are not shadowed).
    labelled = RestClient(f"127.0.0.1:{server.rest_port}", MODEL, label=CANARY).predict(images[:62])
    assert labelled.version == 4
    canary_classes = labelled.class_ids

    evidence = _evidence_after(server, before, len(batches) + 1)
    assert (evidence.shadow_requests, evidence.shadow_instances, evidence.shadow_errors) == (21, 62, 0)
    assert evidence.shadow_agreements == int(np.sum(stable_classes == canary_classes))
    assert evidence.shadow_agreements / evidence.shadow_instances < 0.5  # it learnt shifted labels
    assert evidence.shadow_classes == {STABLE: _bincount(stable_classes), CANARY: _bincount(canary_classes)}
    # Predicted classes per served version: stable's answers, and the canary's one labelled request.
    assert evidence.answered_classes == {STABLE: _bincount(stable_classes), CANARY: _bincount(canary_classes)}
    assert (evidence.canary_requests, evidence.canary_errors) == (1, 0)
    text = httpx.get(f"http://127.0.0.1:{server.rest_port}{PROMETHEUS_PATH}").text
    assert 'fmnist_serving_shadow_agreements_total{canary="4",model="fashion_mnist",stable="1"}' in text
    assert f'fmnist_serving_predicted_class_total{{class="{stable_classes[0]}",model="fashion_mnist",version="1"}}' \
        in text


def test_requests_naming_a_version_or_label_are_not_shadowed(server, images):
    before = _snapshot(server)
    for client in (RestClient(f"127.0.0.1:{server.rest_port}", MODEL, label=STABLE),
                   GrpcClient(f"127.0.0.1:{server.grpc_port}", MODEL, version=1)):
        assert client.predict(images[:2]).version == 1
    RestClient(f"127.0.0.1:{server.rest_port}", MODEL).predict(images[:1])  # one that is
    evidence = _evidence_after(server, before, 1)
    assert (evidence.shadow_requests, evidence.shadow_instances) == (1, 1)


class _SlowCanary:
    """The canary side of ShadowMirror at its narrowest boundary (prepare/signature/run): blocks in
    prepare until released, then fails or answers as told."""

    model_name, version = MODEL, 4

    def __init__(self, fail: bool):
        self.release, self.fail, self.calls, self.runs = threading.Event(), fail, 0, []

    def signature(self, name):
        return name

    def prepare(self, signature, inputs):
        self.calls += 1
        assert self.release.wait(30)
        if self.fail is True or (self.fail is not False and np.any(inputs[features.IMAGES_INPUT] == self.fail)):
            raise ValueError("canary rejects this input")
        return inputs

    def run(self, signature, inputs):
        rows = len(inputs[features.IMAGES_INPUT])
        self.runs.append(rows)
        return {features.PROBABILITIES_OUTPUT: np.eye(features.NUM_CLASSES, dtype=np.float32)[[3, 5] * (rows // 2)]}


def _answered(classes):
    future = Future()
    future.set_result({features.PROBABILITIES_OUTPUT: np.eye(features.NUM_CLASSES, dtype=np.float32)[classes]})
    return future


@pytest.mark.parametrize("fail", [False, True])
def test_a_full_shadow_queue_drops_and_a_failing_canary_counts_errors_never_touching_the_answer(fail):
    metrics = ServingMetrics()
    mirror = ShadowMirror(metrics, queue_size=1)
    stable, canary = SimpleNamespace(model_name=MODEL, version=1), _SlowCanary(fail)
    inputs = {features.IMAGES_INPUT: np.zeros((2, 28, 28), np.float32)}
    answers = [_answered([3, 4]) for _ in range(4)]
    mirror.mirror(stable, canary, features.SERVING_DEFAULT, inputs, answers[0])
    deadline = time.monotonic() + 10
    while canary.calls == 0:  # the worker holds the first one, blocked in prepare
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for answer in answers[1:]:  # the second waits in the queue, the next two find it full
        mirror.mirror(stable, canary, features.SERVING_DEFAULT, inputs, answer)
    failed = Future()
    failed.set_exception(RuntimeError("stable failed"))
    mirror.mirror(stable, canary, features.SERVING_DEFAULT, inputs, failed)  # nothing to compare: ignored
    canary.release.set()
    mirror.close()
    key = (MODEL, "1", "4")
    assert metrics.shadow_dropped.labels(*key)._value.get() == 2
    assert metrics.shadow_requests.labels(*key)._value.get() == 2
    assert metrics.shadow_errors.labels(*key)._value.get() == (2 if fail else 0)
    assert metrics.shadow_agreements.labels(*key)._value.get() == (0 if fail else 2)  # [3, 4] vs [3, 5], twice
    assert [a.result()[features.PROBABILITIES_OUTPUT].argmax(axis=1).tolist() for a in answers] == [[3, 4]] * 4


def test_queued_shadow_requests_run_as_one_call_and_a_refused_one_is_one_error():
    metrics = ServingMetrics()
    mirror = ShadowMirror(metrics, queue_size=8)
    stable, canary = SimpleNamespace(model_name=MODEL, version=1), _SlowCanary(fail=7.0)  # refuses 7s
    inputs = [{features.IMAGES_INPUT: np.full((2, 28, 28), value, np.float32)} for value in (0, 0, 0, 0, 7, 0)]
    mirror.mirror(stable, canary, features.SERVING_DEFAULT, inputs[0], _answered([3, 4]))
    deadline = time.monotonic() + 10
    while canary.calls == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for request in inputs[1:4]:  # three queued behind the first: one call of 6 rows
        mirror.mirror(stable, canary, features.SERVING_DEFAULT, request, _answered([3, 4]))
    canary.release.set()
    deadline = time.monotonic() + 10
    while metrics.shadow_requests.labels(MODEL, "1", "4")._value.get() < 4:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert canary.runs == [2, 6]
    canary.release.clear()  # hold the next ones so that they queue, one of them refused
    for request in inputs[3:]:
        mirror.mirror(stable, canary, features.SERVING_DEFAULT, request, _answered([3, 4]))
    canary.release.set()
    mirror.close()
    key = (MODEL, "1", "4")
    assert metrics.shadow_requests.labels(*key)._value.get() == 7
    assert metrics.shadow_errors.labels(*key)._value.get() == 1
    assert metrics.shadow_agreements.labels(*key)._value.get() == 6  # one of each [3, 4] vs [3, 5]
    assert canary.runs == [2, 6, 2, 2]  # the merged pair failed in prepare: each alone, 7s refused


# -- the maths, on real metric text ---------------------------------------------------------------
def test_histogram_quantile_interpolates_like_promql():
    buckets = [(0.001, 10.0), (0.002, 50.0), (0.005, 90.0), (0.01, 100.0), (float("inf"), 100.0)]
    assert analysis.histogram_quantile(0.5, buckets) == pytest.approx(0.001 + 0.001 * (50 - 10) / 40)
    assert analysis.histogram_quantile(0.99, buckets) == pytest.approx(0.005 + 0.005 * (99 - 90) / 10)
    assert analysis.histogram_quantile(0.05, buckets) == pytest.approx(0.0005)  # inside the first bucket from 0
    assert analysis.histogram_quantile(0.99, [(0.01, 1.0), (float("inf"), 100.0)]) == 0.01  # in +Inf: largest bound
    assert analysis.histogram_quantile(0.99, [(0.01, 0.0), (float("inf"), 0.0)]) is None


def test_p99_from_the_deltas_of_a_real_servers_latency_buckets(server, images):
    before = _snapshot(server)
    client = RestClient(f"127.0.0.1:{server.rest_port}", MODEL, label=STABLE)
    latencies = []
    for i in range(40):
        began = time.perf_counter()
        client.predict(images[i:i + 1])
        latencies.append(time.perf_counter() - began)
    evidence = analysis.Evidence.between(_snapshot(server).minus(before), MODEL, 1, 4)
    bounds = [bound for bound, _ in evidence.stable_latency]
    assert evidence.stable_latency[-1] == (float("inf"), 40.0)  # only this test's requests
    p99 = analysis.histogram_quantile(0.99, evidence.stable_latency)
    # The server's own time is inside the client's: the p99 bucket ends at or above it and starts
    # below the slowest request the client saw.
    slowest = max(latencies)
    bucket_end = min(bound for bound in bounds if bound >= p99)
    assert 0 < p99 <= bucket_end and bounds[bounds.index(bucket_end) - 1] < slowest


def test_js_divergence():
    assert analysis.js_divergence([5, 5, 0], [10, 10, 0]) == 0.0
    assert analysis.js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    # p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4): (log2(4/3) + (log2(2/3) + 1) / 2) / 2
    assert analysis.js_divergence([1, 0], [1, 1]) == pytest.approx(0.311278, abs=1e-6)
    with pytest.raises(ValueError, match="non-empty"):
        analysis.js_divergence([0, 0], [1, 1])


def test_a_counter_that_went_down_means_a_restart():
    before = analysis.Snapshot.parse('fmnist_serving_requests_total{model="m",version="1"} 9\n')
    after = analysis.Snapshot.parse('fmnist_serving_requests_total{model="m",version="1"} 2\n')
    with pytest.raises(analysis.AnalysisError, match="the server restarted"):
        after.minus(before)


def test_checks_and_verdicts_from_evidence():
    counts = {STABLE: (50, 50, 0, 0, 0, 0, 0, 0, 0, 0), CANARY: (50, 40, 10, 0, 0, 0, 0, 0, 0, 0)}
    latency = ((0.005, 30.0), (0.01, 40.0), (float("inf"), 40.0))
    evidence = analysis.Evidence(canary_requests=40, canary_errors=1, shadow_requests=60, shadow_errors=0,
                                 shadow_dropped=3, shadow_instances=100, shadow_agreements=90,
                                 stable_latency=latency, canary_latency=latency, shadow_classes=counts,
                                 answered_classes=counts)
    checks = analysis.run_checks(evidence, analysis.Policy(max_class_divergence=0.05), 1, 2)
    assert [(c.name, c.verdict) for c in checks] == [
        ("error rate", "pass"), ("p99 latency ms", "pass"), ("agreement", "pass"), ("class JS div", "FAIL"),
        ("accuracy", "n/a")]
    assert checks[0].value == pytest.approx(0.01) and checks[0].detail == "1 of 100 requests (40 own, 60 shadow)"
    assert checks[1].threshold == pytest.approx(100.0)  # 3 x stable's 9.8 ms is under the 100 ms floor
    slower = dataclasses.replace(evidence, canary_latency=((0.005, 0.0), (0.01, 10.0), (0.02, 40.0),
                                                           (float("inf"), 40.0)))
    tight = analysis.Policy(max_p99_ratio=1.5, p99_floor_seconds=0.001)
    check = analysis.latency_check(slower, tight)
    assert (check.value, check.threshold, check.verdict) == (pytest.approx(19.867, abs=1e-3), pytest.approx(14.7),
                                                             "FAIL")
    assert analysis.latency_check(slower, analysis.Policy()).verdict == "pass"  # under the floor
    assert checks[3].value == pytest.approx(analysis.js_divergence(counts[STABLE], counts[CANARY]))
    assert checks[4].line() == "accuracy                 -  -            n/a   n/a (no labels)"
    assert analysis.Analysis(MODEL, 1, 2, 5.0, 100, evidence, checks).verdict == "fail"
    assert analysis.Analysis(MODEL, 1, 2, 5.0, 101, evidence, checks).verdict == "inconclusive"  # 100 seen


def test_accuracy_check_is_the_seam_for_labels():
    outcome = analysis.LabelledOutcome
    policy = analysis.Policy(max_accuracy_drop=0.1, min_labelled=2)
    assert analysis.accuracy_check([], 1, 2, policy).detail == "n/a (no labels)"
    assert analysis.accuracy_check([outcome(1, 3, 3)], 1, 2, policy).verdict == "n/a"
    outcomes = [outcome(1, 3, 3), outcome(1, 4, 4), outcome(2, 3, 3), outcome(2, 5, 4)]
    check = analysis.accuracy_check(outcomes, 1, 2, policy)
    assert (check.value, check.threshold, check.verdict) == (0.5, pytest.approx(0.9), "FAIL")


def test_analyze_stops_once_the_canary_has_seen_enough_and_says_inconclusive_without(server, images):
    quiet = analysis.analyze(f"127.0.0.1:{server.rest_port}", MODEL, 1, 4, bake=analysis.Bake(1.0, 5, 0.2))
    assert quiet.verdict == "inconclusive" and quiet.evidence.seen == 0 and quiet.seconds >= 1.0
    assert {c.verdict for c in quiet.checks} == {"n/a"}

    stop = threading.Event()

    def load():
        client = RestClient(f"127.0.0.1:{server.rest_port}", MODEL)
        i = 0
        while not stop.is_set():
            client.predict(images[i % len(images)][None])
            i += 1

    sender = threading.Thread(target=load)
    sender.start()
    try:
        began = time.monotonic()
        measured = analysis.analyze(f"127.0.0.1:{server.rest_port}", MODEL, 1, 4,
                                    bake=analysis.Bake(seconds=60, requests=30, poll_seconds=0.2))
        took = time.monotonic() - began
    finally:
        stop.set()
        sender.join()
    assert measured.evidence.seen >= 30 and took < 30
    assert measured.verdict == "fail"
    assert [c.verdict for c in measured.checks if c.name == "agreement"] == ["FAIL"]


def test_auto_release_keeps_an_inconclusive_canary_unless_told_otherwise(server, tmp_path):
    """On the module server's metrics, deciding on a copy of its release (the server keeps its labels)."""
    config_file = tmp_path / "models.config"
    shutil.copy(server.options.model_config_file, config_file)
    target, address = release.FileRelease(str(config_file)), f"127.0.0.1:{server.rest_port}"
    bake = analysis.Bake(seconds=0.5, requests=10**6, poll_seconds=0.1)
    kept = analysis.auto_release(target, address, bake=bake, actor="test")
    assert (kept.action, target.status().canary) == ("inconclusive", 4)
    assert kept.line().startswith("release: canary 4 inconclusive (stable 1): 0 requests in ")
    assert " s; error rate - n/a, p99 latency ms - n/a, agreement - n/a, class JS div - n/a" in kept.line()
    assert kept.line().endswith("; 0 of 1000000 requests: canary kept")
    dropped = analysis.auto_release(target, address, bake=bake, actor="test", on_inconclusive="rollback")
    assert (dropped.action, target.status().canary) == ("rolled back", None)
    assert analysis.auto_release(target, address, bake=bake).action == "no canary"
    assert [(e["action"], e.get("decision"), e["actor"]) for e in target.history()] == [
        ("inconclusive", "inconclusive", "test"), ("rolled back", "rolled back", "test")]
    assert target.history()[-1]["note"] == "inconclusive (0 of 1000000 requests): --on-inconclusive rollback"
    with pytest.raises(release.ReleaseError, match="on-inconclusive is one of keep, promote, rollback"):
        analysis.auto_release(target, address, on_inconclusive="wait")


# -- replace policy and history --------------------------------------------------------------------
def _release_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["release", *map(str, argv)])
    return code, out.getvalue(), err.getvalue()


def test_a_newer_canary_replaces_the_baking_one_unless_told_to_keep_it(tmp_path, exported_model):
    for version in (1, 2, 3, 4):
        (tmp_path / "serving_model" / str(version)).mkdir(parents=True)
        shutil.copy(exported_model / "saved_model.pb", tmp_path / "serving_model" / str(version))
    config_file = tmp_path / "models.config"
    target = release.FileRelease(str(config_file))
    target.start_canary("1")
    target.start_canary("2")
    code, out, err = _release_cli("canary", "3", "--model-config-file", config_file, "--busy", "keep")
    assert (code, out) == (2, "") and err == (f"error: version 2 is already the canary in {config_file}: promote or "
                                              "roll it back first (or --busy replace)\n")
    code, out, err = _release_cli("canary", "3", "--model-config-file", config_file)
    assert code == 0, err
    assert out.splitlines()[0] == "version 3 is the canary beside stable 1; canary 2 superseded"
    assert (target.status().stable, target.status().canary) == (1, 3)
    with pytest.raises(release.ReleaseError, match=r"the canary .* is now version 3, not 2: it changed"):
        target.promote(expect_canary=2)
    target.rollback(actor="test")
    assert [(e["action"], e["stable"], e["canary"], e["actor"]) for e in target.history()] == [
        ("stable", 1, None, "fmnist release canary"), ("canary", 1, 2, "fmnist release canary"),
        ("superseded", 1, 2, "fmnist release canary"), ("canary", 1, 3, "fmnist release canary"),
        ("rolled back", 1, 3, "test")]
    assert target.history()[2]["by"] == 3
    code, out, _ = _release_cli("history", "--model-config-file", config_file, "--last", "3")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4
    assert lines[0].split() == ["time", "action", "stable", "canary", "actor", "evidence"]
    assert lines[1].split()[1:] == ["superseded", "1", "2", "fmnist", "release", "canary", "by", "3"]
    (tmp_path / "release_history.jsonl").open("a").write("not json\n")
    code, _, err = _release_cli("history", "--model-config-file", config_file)
    assert code == 2 and err.startswith(f"error: {tmp_path / 'release_history.jsonl'}, line 6: not JSON")


def test_analyze_and_auto_refuse_bad_input_in_one_line(tmp_path, server):
    config_file = server.options.model_config_file
    assert _release_cli("analyze", "--model-config-file", config_file) == (
        2, "", "error: `fmnist release analyze` needs --server HOST:PORT (the REST port of the `fmnist serve` "
               "running the release)\n")
    assert _release_cli("auto", "--server", "127.0.0.1:1", "--model-config-file", config_file,
                        "--min-agreement", "1.5") == (
        2, "", "error: min-agreement is a fraction within 0..1, got 1.5\n")
    code, _, err = _release_cli("analyze", "--server", "127.0.0.1:1", "--model-config-file", config_file,
                                "--bake-seconds", "0")
    assert code == 2 and err.startswith("error: cannot read the metrics at http://127.0.0.1:1/monitoring")


# -- zero failed requests through bake, promote, replace and rollback ------------------------------
@pytest.mark.slow
def test_zero_failed_requests_through_auto_promote_replace_and_auto_rollback(tmp_path, base, images,
                                                                              import_benchmark):
    """A real `fmnist serve` process with --canary-traffic 25 --shadow-traffic 50, four client
    threads (two REST, two gRPC) sending unlabelled requests throughout."""
    under_load = import_benchmark("release_under_load")
    work_base = tmp_path / "serving_model"
    shutil.copytree(base, work_base, symlinks=True)
    config_file = tmp_path / "models.config"
    release.FileRelease(str(config_file)).start_canary("1")
    settled = []  # (since, the versions unlabelled requests may get): each step once the server switched
    commanded = []  # when each `fmnist release` command began: the end of the previous step's window

    def command(*argv):
        commanded.append(time.monotonic())
        return _release_cli(*argv)

    def serves(stable, canary):
        deadline = time.monotonic() + 60
        while release.served_labels(server) != {STABLE: stable, CANARY: canary}:
            assert time.monotonic() < deadline, release.served_labels(server)
            time.sleep(0.05)
        settled.append((time.monotonic(), {stable} if canary is None else {stable, canary}))

    with (under_load.running_server(config_file, 25.0, "--shadow-traffic", "50") as (rest_port, grpc_port),
          under_load.Load(rest_port, grpc_port, images, threads=4) as load):
        server = f"127.0.0.1:{rest_port}"
        # Lenient latency thresholds: this test is about failures and the quality checks; the 2-core
        # machine's p99 under four client threads and another job is not the canary's doing.
        auto = ["auto", "--server", server, "--model-config-file", config_file, "--bake-requests", "80",
                "--bake-seconds", "60", "--max-p99-ratio", "5", "--p99-floor-ms", "200"]
        assert command("canary", "2", "--model-config-file", config_file)[0] == 0
        serves(1, 2)
        code, out, err = command(*auto)
        assert code == 0, err
        assert out.splitlines()[-1].startswith("release: canary 2 promoted (stable 1): "), out
        serves(2, None)

        assert command("canary", "3", "--model-config-file", config_file)[0] == 0
        serves(2, 3)
        code, out, err = command("canary", "4", "--model-config-file", config_file)  # replaces 3
        assert code == 0 and "canary 3 superseded" in out, err
        serves(2, 4)
        code, out, err = command(*auto)
        assert code == 0, err
        assert out.splitlines()[-1].startswith("release: canary 4 rolled back (stable 2): "), out
        assert any(line.startswith("agreement") and "FAIL" in line.split() for line in out.splitlines()), out
        serves(2, None)
        time.sleep(1.0)  # requests after the last step: all stable's
    assert load.errors == [] and len(load.records) > 200
    records = [(started, version) for started, _, version in load.records]
    assert {1, 2, 4} <= {version for _, version in records} <= {1, 2, 3, 4}
    # After each step, once the server switched, unlabelled requests got only that step's versions
    # (until the next command: the next window's start); after the last, stable 2 alone.
    for since, allowed in settled:
        until = min([at for at in commanded if at > since], default=float("inf"))
        answered = {version for started, version in records if since < started < until}
        assert answered <= allowed, (allowed, answered)
    assert answered == {2}
    history = release.FileRelease(str(config_file)).history()
    assert [(e["action"], e["stable"], e["canary"]) for e in history] == [
        ("stable", 1, None), ("canary", 1, 2), ("promoted", 2, None), ("canary", 2, 3), ("superseded", 2, 3),
        ("canary", 2, 4), ("rolled back", 2, 4)]
    promoted, rolled_back = history[2], history[-1]
    assert promoted["actor"] == rolled_back["actor"] == "fmnist release auto"
    assert [c["verdict"] for c in promoted["checks"]][:4] == ["pass"] * 4
    assert promoted["evidence"]["shadow_instances"] > 0 and promoted["bake_requests"] == 80
    assert [c["name"] for c in rolled_back["checks"] if c["verdict"] == "FAIL"][:1] == ["agreement"]

