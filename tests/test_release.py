"""Canary releases: routing by version labels in the project server, `fmnist release` on a model
config (under load, with gates, with a corrupted file) and on a Vertex AI endpoint (a fake
Endpoint object, the SDK's narrowest boundary). Servers run on a real exported SavedModel."""

import contextlib
import datetime
import io
import logging
import os
import random
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from tensorflow_serving.apis import get_model_status_pb2

from cli.main import main
from fmnist import features, paths
from fmnist.dataset import read_split
from serving.client.clients import ClientError, GrpcClient, RestClient
from serving.protocol.model_config import read_model_config, single_model_config, write_model_config
from serving.release import labels as release
from serving.release.vertex_traffic import VertexRelease
from serving.server.manager import ModelManager
from serving.server.process import RunningServer, ServerOptions, tf_serving_command

MODEL = features.MODEL_NAME
STABLE, CANARY = features.STABLE_LABEL, features.CANARY_LABEL
State = get_model_status_pb2.ModelVersionStatus


@pytest.fixture(scope="module")
def images(sample_dir):
    return read_split(sample_dir, "test").images.reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)


def _versions(base, exported_model, versions=(1, 2, 3)):
    for version in versions:
        shutil.copytree(exported_model, base / str(version))


def _config(path, base, labels):
    """A release config: the labelled versions loaded, nothing else."""
    config = single_model_config(MODEL, str(base), labels)
    policy = config.model_config_list.config[0].model_version_policy
    policy.ClearField("latest")
    policy.specific.versions.extend(sorted(set(labels.values())))
    write_model_config(config, str(path))


@contextlib.contextmanager
def _server(tmp_path, exported_model, labels, canary_traffic=0.0):
    """Versions 1, 2, 3 on disk; the config labels `labels` and loads only those versions."""
    _versions(tmp_path / "models", exported_model)
    _config(tmp_path / "models.config", tmp_path / "models", labels)
    running = RunningServer(ServerOptions(model_config_file=str(tmp_path / "models.config"), rest_port=0,
                                          grpc_port=0, host="127.0.0.1", poll_seconds=0.2,
                                          canary_traffic=canary_traffic)).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, exported_model):
    """stable=1, canary=2: for tests that only read."""
    with _server(tmp_path_factory.mktemp("release"), exported_model, {STABLE: 1, CANARY: 2}) as running:
        yield running


def _rest(running, **kwargs):
    return RestClient(f"127.0.0.1:{running.rest_port}", MODEL, **kwargs)


def _grpc(running, **kwargs):
    return GrpcClient(f"127.0.0.1:{running.grpc_port}", MODEL, **kwargs)


def _release(*argv):
    """`fmnist release ...` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["release", *map(str, argv)])
    return code, out.getvalue(), err.getvalue()


def _wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# -- routing ------------------------------------------------------------------------------------
def test_requests_without_version_or_label_go_to_stable(server, images):
    assert server.manager.labels(MODEL) == {STABLE: 1, CANARY: 2}
    for client in (_rest(server), _grpc(server)):
        assert {client.predict(images[i:i + 1]).version for i in range(10)} == {1}
    assert _rest(server, label=CANARY).predict(images[:1]).version == 2
    assert _grpc(server, label=STABLE).predict(images[:1]).version == 1
    assert _grpc(server, version=2).predict(images[:1]).version == 2


def test_canary_traffic_sends_that_share_of_unlabelled_requests_to_the_canary(server, images):
    """400 requests at 25 %: the seeded draw decides each one, so the count is exactly the
    seed's, and (being a fair draw) within 7 points of 25 %."""
    server.manager.canary_traffic, server.manager.rng = 25.0, random.Random(7)
    try:
        clients = [_rest(server), _grpc(server)]
        seen = [clients[i % 2].predict(images[i % len(images)][None]).version for i in range(400)]
    finally:
        server.manager.canary_traffic = 0.0
    replay = random.Random(7)
    expected = sum(replay.random() * 100 < 25 for _ in range(400))
    assert set(seen) == {1, 2}
    assert seen.count(2) == expected
    assert abs(seen.count(2) / 400 - 0.25) <= 0.07


def test_canary_traffic_is_checked():
    with pytest.raises(ValueError, match=r"percentage within 0\.\.100, got 101"):
        ModelManager(lambda: None, lambda *_: None, canary_traffic=101)


# -- label changes --------------------------------------------------------------------------------
class _Loaded:
    def __init__(self, name, version, path):
        self.version = version


def test_labels_switch_only_once_their_versions_are_loaded(tmp_path):
    """Load before switch: a version still being copied keeps the previous labels in force."""
    base = tmp_path / "models"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_text("x")
    configs = [single_model_config(MODEL, str(base), {STABLE: 1})]
    manager = ModelManager(lambda: configs[-1], _Loaded, poll_seconds=60)
    manager.sync(require_stable=False)
    assert manager.labels(MODEL) == {STABLE: 1}
    (base / "2").mkdir()  # the Pusher has started copying version 2
    configs.append(single_model_config(MODEL, str(base), {STABLE: 1, CANARY: 2}))
    manager.sync()
    assert manager.labels(MODEL) == {STABLE: 1}
    (base / "2" / "saved_model.pb").write_text("x")
    manager.sync()  # first sight of the finished copy: it must stay unchanged for one poll
    assert manager.labels(MODEL) == {STABLE: 1}
    manager.sync()
    assert manager.labels(MODEL) == {STABLE: 1, CANARY: 2}
    assert manager.resolve(MODEL, label=CANARY).version == 2
    assert manager.resolve(MODEL).version == 1  # unlabelled: stable, not the highest


@pytest.mark.slow
def test_a_bad_config_is_rejected_in_one_line_and_the_previous_labels_keep_serving(tmp_path, exported_model,
                                                                                   images, caplog):
    caplog.set_level(logging.INFO, logger="serving")
    config_file = tmp_path / "models.config"
    with _server(tmp_path, exported_model, {STABLE: 1, CANARY: 2}) as running:
        failures, seen, stop = [], set(), threading.Event()

        def stream():
            client = _rest(running)
            while not stop.is_set():
                try:
                    seen.add(client.predict(images[:1]).version)
                except ClientError as err:
                    failures.append(repr(err))

        streamer = threading.Thread(target=stream)
        streamer.start()
        try:
            def rejected():
                return [r.getMessage() for r in caplog.records if r.getMessage().startswith("rejected ")]

            def holds_previous_labels():
                assert running.manager.labels(MODEL) == {STABLE: 1, CANARY: 2}
                assert _grpc(running, label=CANARY).predict(images[:1]).version == 2

            config_file.write_text('model_config_list { config { name: "fashion_mnist" base_path: ')  # half a file
            _wait_for(lambda: len(rejected()) == 1)
            time.sleep(1.0)  # five more polls of the same bad file: still one line
            assert len(rejected()) == 1 and str(config_file) in rejected()[0]
            assert "not a ModelServerConfig text proto" in rejected()[0]
            holds_previous_labels()

            _config(config_file, tmp_path / "models", {STABLE: 1, CANARY: 9})  # no such version
            _wait_for(lambda: len(rejected()) == 2)
            assert rejected()[1].startswith(f"rejected {config_file}: model 'fashion_mnist': label 'canary' names "
                                            "version 9, which is not on disk")
            holds_previous_labels()

            (tmp_path / "models" / "4").mkdir()
            (tmp_path / "models" / "4" / "saved_model.pb").write_bytes(b"not a SavedModel")
            _config(config_file, tmp_path / "models", {STABLE: 1, CANARY: 4})
            _wait_for(lambda: len(rejected()) == 3)
            assert "label 'canary' names version 4, which failed to load" in rejected()[2]
            holds_previous_labels()

            _config(config_file, tmp_path / "models", {STABLE: 1, CANARY: 3})  # fixed
            _wait_for(lambda: running.manager.labels(MODEL) == {STABLE: 1, CANARY: 3})
            assert _rest(running, label=CANARY).predict(images[:1]).version == 3
            assert len(rejected()) == 3
        finally:
            stop.set()
            streamer.join()
        assert failures == [] and seen == {1}
        assert all("\n" not in line for line in rejected())


# -- fmnist release on a config file ------------------------------------------------------------
@pytest.mark.slow
def test_promote_and_rollback_under_load_fail_no_request(tmp_path, exported_model, images):
    """REST and gRPC clients stream unlabelled requests while `fmnist release` runs canary 2 ->
    promote -> canary 3 -> rollback; in each phase, once the server has switched and until the
    next command, exactly the expected versions answer."""
    config_file = tmp_path / "models.config"
    with _server(tmp_path, exported_model, {STABLE: 1}, canary_traffic=25) as running:
        records, failures, stop = [], [], threading.Event()

        def stream(client):
            i = 0
            while not stop.is_set():
                started = time.monotonic()
                try:
                    version = client.predict(images[i % len(images)][None]).version
                    records.append((started, time.monotonic(), version))
                except ClientError as err:
                    failures.append(repr(err))
                i += 1

        threads = [threading.Thread(target=stream, args=(make(running),))
                   for make in (_rest, _grpc, _rest, _grpc)]
        for thread in threads:
            thread.start()
        windows = []  # (start, end, versions expected)
        steps = [(None, {STABLE: 1}, {1}), (("canary", 2), {STABLE: 1, CANARY: 2}, {1, 2}),
                 (("promote",), {STABLE: 2}, {2}), (("canary", 3), {STABLE: 2, CANARY: 3}, {2, 3}),
                 (("rollback",), {STABLE: 2}, {2})]
        try:
            for command, labels, expected in steps:
                if command:
                    code, _, err = _release(*command, "--model-config-file", config_file)
                    assert code == 0, err
                _wait_for(lambda labels=labels: running.manager.labels(MODEL) == labels)
                started = time.monotonic()
                time.sleep(1.5)
                windows.append((started, time.monotonic(), expected))
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert failures == []
        for start, end, expected in windows:
            seen = [version for began, ended, version in records if began >= start and ended <= end]
            assert len(seen) > 20 and set(seen) == expected, (expected, sorted(set(seen)))
        status = {version: state for version, state, _ in running.manager.status(MODEL)}
        assert status == {1: State.END, 2: State.AVAILABLE, 3: State.END}
    assert read_model_config(str(config_file)).model_config_list.config[0].model_version_policy.specific.versions == [2]


def test_release_operations_rewrite_the_config(tmp_path, exported_model):
    base = tmp_path / "serving_model"
    _versions(base, exported_model, (1, 2))
    config_file = tmp_path / "models.config"
    target = release.FileRelease(str(config_file))  # the first canary writes it, base path beside it
    assert target.start_canary("1").notes == ("no stable version yet: 1 is stable directly",)
    state = target.start_canary("2")
    assert (state.stable, state.canary) == (1, 2)
    (model,) = read_model_config(str(config_file)).model_config_list.config
    assert model.base_path == str(base) and list(model.model_version_policy.specific.versions) == [1, 2]
    assert dict(model.version_labels) == {STABLE: 1, CANARY: 2}
    for refused, message in [(lambda: target.start_canary("3"), "version 3: no saved_model.pb in "),
                             (lambda: target.start_canary("1"), "version 1 is already stable"),
                             (lambda: target.start_canary("v2"), "a version is a number")]:
        before = config_file.read_bytes()
        with pytest.raises(release.ReleaseError, match=message):
            refused()
        assert config_file.read_bytes() == before
    assert (target.rollback().stable, target.status().canary) == (1, None)
    with pytest.raises(release.ReleaseError, match="has no canary to roll back"):
        target.rollback()
    target.start_canary("2")
    assert (target.promote().stable, target.status().canary) == (2, None)
    assert list(read_model_config(str(config_file)).model_config_list.config[0]
                .model_version_policy.specific.versions) == [2]
    assert sorted(os.listdir(tmp_path)) == ["models.config", "models.config.lock", "release_history.jsonl",
                                            "serving_model"]


def test_writes_are_atomic_and_serialized(tmp_path, exported_model, monkeypatch):
    _versions(tmp_path / "serving_model", exported_model, (1, 2, 3))
    config_file = tmp_path / "models.config"
    release.FileRelease(str(config_file)).start_canary("1")
    before = config_file.read_bytes()

    def crash(*_):
        raise OSError("disk full")

    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", crash)
        with pytest.raises(OSError, match="disk full"):
            release.FileRelease(str(config_file)).start_canary("2")
    assert config_file.read_bytes() == before  # untouched, and no temp file or history line left behind
    assert sorted(os.listdir(tmp_path)) == ["models.config", "models.config.lock", "release_history.jsonl",
                                            "serving_model"]
    assert [entry["action"] for entry in release.FileRelease(str(config_file)).history()] == ["stable"]

    # Two canaries at once (keeping a running one): the lock serializes them, so the second sees the
    # first and refuses.
    outcomes, barrier = [], threading.Barrier(2)

    def canary(version):
        barrier.wait()
        try:
            outcomes.append(release.FileRelease(str(config_file)).start_canary(version, busy=release.KEEP).canary)
        except release.ReleaseError as err:
            outcomes.append(str(err))

    threads = [threading.Thread(target=canary, args=(v,)) for v in ("2", "3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winner = release.FileRelease(str(config_file)).status().canary
    assert winner in (2, 3) and winner in outcomes
    assert any("is already the canary" in str(outcome) for outcome in outcomes)


def test_gates_refuse_a_promotion_and_leave_the_file_alone(tmp_path, exported_model, images, sample_dir):
    config_file = tmp_path / "models.config"
    with _server(tmp_path, exported_model, {STABLE: 1, CANARY: 2}) as running:
        server = f"127.0.0.1:{running.rest_port}"
        canary = _rest(running, label=CANARY)
        for i in range(20):
            canary.predict(images[i:i + 1])
        for _ in range(5):  # real errors, counted by the server against the canary's version
            with pytest.raises(ClientError, match="HTTP 400"):
                canary.predict(np.full((1, 28, 28), 300, np.float32))  # beyond [0, 255]
        assert release.request_counts(server, MODEL, 2) == (25, 5)
        before = config_file.read_bytes()
        promote = ["promote", "--model-config-file", config_file, "--server", server]
        for gate, message in [
            (["--max-error-rate", "0.1", "--min-requests", "10"],
             "error: canary version 2 error rate 20.00% (5 of 25 requests) is above --max-error-rate 10.00%\n"),
            (["--max-error-rate", "0.5", "--min-requests", "100"],
             f"error: canary version 2 answered 25 requests on {server}, fewer than --min-requests 100: too few "
             "to judge its error rate\n"),
            (["--min-agreement", "1.01", "--agreement-images", "60", "--data-dir", sample_dir],
             "error: canary version 2 agrees with stable version 1 on 100.0% of 60 test images, below "
             "--min-agreement 101.0%\n"),
        ]:
            code, out, err = _release(*promote, *gate)
            assert (code, out, err) == (2, "", message)
            assert config_file.read_bytes() == before
        assert _release("promote", "--model-config-file", config_file, "--max-error-rate", "0.5") == (
            2, "", "error: --max-error-rate/--min-agreement need --server HOST:PORT (the REST port of the server "
                   "running the canary)\n")

        code, out, err = _release(*promote, "--max-error-rate", "0.25", "--min-requests", "10",
                                  "--min-agreement", "0.99", "--agreement-images", "60", "--data-dir", sample_dir)
        assert code == 0, err
        lines = out.splitlines()
        # The refused agreement gate's two requests (50 + 10 images) reached the canary too.
        assert lines[:3] == ["gate passed: canary error rate 18.52% (5 of 27 requests) <= 25.00%",
                             "gate passed: canary agrees with stable on 100.0% of 60 test images >= 99.0%",
                             "version 2 is stable; 1 is no longer served"]
        assert "stable   2" in lines and "canary   none" in lines
        _wait_for(lambda: running.manager.labels(MODEL) == {STABLE: 2})


def test_release_status_command(server, tmp_path):
    """Through the real `fmnist` entry point, in its own process: no TensorFlow runtime loaded."""
    config_file = server.options.model_config_file
    script = ("import sys\nfrom cli.main import main\n"
              f"code = main(['release', 'status', '--model-config-file', {config_file!r}, "
              f"'--server', '127.0.0.1:{server.rest_port}'])\n"
              "print('TF runtime loaded:', 'tensorflow.python' in sys.modules)\nsys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    base = read_model_config(config_file).model_config_list.config[0].base_path
    assert done.stdout.splitlines() == [
        f"{config_file}: model fashion_mnist", "stable   1", "canary   2", f"serving  versions 1, 2 of {base}",
        f"server   127.0.0.1:{server.rest_port} answers stable=1, canary=2", "TF runtime loaded: False"]
    code, out, err = _release("status", "--model-config-file", tmp_path / "none.config")
    assert (code, out) == (2, "") and err.startswith(f"error: {tmp_path / 'none.config'} does not exist")
    code, _, err = _release("canary", "2", "--model-config-file", config_file, "--traffic", "5")
    assert code == 2 and err.startswith("error: --traffic is for a Vertex endpoint")


# -- fmnist serve -------------------------------------------------------------------------------
def test_serve_options(tmp_path, monkeypatch, capsys):
    import serving.server.process

    captured = []
    monkeypatch.setattr(serving.server.process, "serve", captured.append)
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path)  # where the default paths are anchored
    assert main(["serve", "--canary-traffic", "150"]) == 1
    assert capsys.readouterr().err == "error: --canary-traffic is a percent within 0..100, got 150\n"
    assert main(["serve", "--canary-traffic", "25"]) == 0
    assert (captured[-1].model_config_file, captured[-1].canary_traffic, captured[-1].shadow_traffic) == (None, 25.0, 0)
    assert main(["serve", "--shadow-traffic", "-1"]) == 1
    assert capsys.readouterr().err == "error: --shadow-traffic is a percent within 0..100, got -1\n"
    assert main(["serve", "--shadow-traffic", "10"]) == 0 and captured[-1].shadow_traffic == 10.0
    release_file = tmp_path / release.DEFAULT_CONFIG_FILE
    release_file.parent.mkdir(parents=True)
    release_file.touch()
    assert main(["serve"]) == 0
    assert captured[-1].model_config_file == str(release_file)  # the release config, once it exists
    assert main(["serve", "--model-base-path", "elsewhere"]) == 0
    assert captured[-1].model_config_file is None  # an explicit base path wins over it


def test_tf_serving_command_allows_labels_on_versions_still_loading(tmp_path):
    command = tf_serving_command(ServerOptions(model_config_file=str(tmp_path / "models.config")), str(tmp_path))
    assert "--allow_version_labels_for_unavailable_models" in command


# -- Vertex AI ------------------------------------------------------------------------------------
class FakeEndpoint:
    """aiplatform.Endpoint's surface that VertexRelease uses, recording the calls that change it.
    undeploy refuses, as the SDK does, to strand the traffic of a model that still has all of it."""

    resource_name = "projects/p/locations/europe-west4/endpoints/42"
    display_name = "fashion-mnist"

    def __init__(self, split, created=None):
        from google.cloud.aiplatform_v1.types import DeployedModel

        epoch = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        self._models = [DeployedModel(id=model_id, display_name=f"fashion-mnist-{model_id}",
                                      model=f"projects/p/locations/europe-west4/models/{model_id}",
                                      create_time=epoch + datetime.timedelta(days=(created or {}).get(model_id, i)))
                        for i, model_id in enumerate(split)]
        self._split = {k: v for k, v in split.items() if v}
        self.calls = []

    @property
    def traffic_split(self):
        return dict(self._split)

    def list_models(self):
        return list(self._models)

    def update(self, traffic_split=None):
        assert sum(traffic_split.values()) == 100
        self.calls.append(("update", dict(traffic_split)))
        self._split = {k: v for k, v in traffic_split.items() if v}
        return self

    def undeploy(self, deployed_model_id, traffic_split=None):
        if len(self._split) > 1 or self._split.get(deployed_model_id):
            raise ValueError(f"undeploying {deployed_model_id} would strand traffic")
        self.calls.append(("undeploy", deployed_model_id))
        self._models = [m for m in self._models if m.id != deployed_model_id]


def test_vertex_status_names_stable_and_canary_by_share():
    state = VertexRelease(FakeEndpoint({"111": 90, "222": 10})).status()
    assert (state.stable, state.canary, state.model) == ("111", "222", "fashion-mnist")
    assert state.serving == ("111 (fashion-mnist-111, projects/p/locations/europe-west4/models/111): 90 %",
                             "222 (fashion-mnist-222, projects/p/locations/europe-west4/models/222): 10 %")
    # A tie: the older deployment is stable.
    assert VertexRelease(FakeEndpoint({"222": 50, "111": 50}, created={"111": 0, "222": 5})).status().stable == "111"


def test_vertex_canary_promote_and_rollback_move_traffic_before_undeploying():
    endpoint = FakeEndpoint({"111": 100, "222": 0})
    target = VertexRelease(endpoint, canary_traffic=20)
    assert (target.start_canary("222").canary, endpoint.calls) == ("222", [("update", {"111": 80, "222": 20})])
    state = target.promote()
    assert endpoint.calls[1:] == [("update", {"222": 100}), ("undeploy", "111")]
    assert (state.stable, state.canary) == ("222", None)

    endpoint = FakeEndpoint({"111": 90, "222": 10})
    state = VertexRelease(endpoint).rollback()
    assert endpoint.calls == [("update", {"111": 100}), ("undeploy", "222")]
    assert (state.stable, state.canary, endpoint.traffic_split) == ("111", None, {"111": 100})


@pytest.mark.parametrize(("split", "operation", "message"), [
    ({"111": 100}, "promote", "has no canary to promote"),
    ({"111": 100}, "rollback", "has no canary to roll back"),
    ({"111": 80, "222": 10, "333": 10}, "promote", "has 3 deployed models"),
    ({"111": 100, "222": 0}, "canary:999", "has no deployed model 999"),
])
def test_vertex_refusals_change_nothing(split, operation, message):
    endpoint = FakeEndpoint(split)
    target = VertexRelease(endpoint)
    name, _, version = operation.partition(":")
    with pytest.raises(release.ReleaseError, match=message):
        target.start_canary(version) if version else getattr(target, name)()
    assert endpoint.calls == []


def test_vertex_gate_refusal_changes_nothing():
    endpoint = FakeEndpoint({"111": 90, "222": 10})

    def refuse(state):
        raise release.GateRefusedError(f"canary {state.canary} missed")

    with pytest.raises(release.GateRefusedError, match="canary 222 missed"):
        VertexRelease(endpoint).promote([refuse])
    assert endpoint.calls == []


def test_vertex_release_command(monkeypatch):
    """`fmnist release ... --vertex-endpoint`: the SDK's Endpoint class is the only thing replaced."""
    from google.cloud import aiplatform

    endpoint = FakeEndpoint({"111": 100, "222": 0})
    opened = []

    def open_endpoint(name, project=None, location=None):
        opened.append(name)
        return endpoint

    monkeypatch.setattr(aiplatform, "Endpoint", open_endpoint)
    target = ["--vertex-endpoint", FakeEndpoint.resource_name]
    code, out, err = _release("canary", "222", "--traffic", "25", *target)
    assert code == 0, err
    assert out.splitlines()[:4] == ["canary 222 gets 25 % of the traffic, stable 111 75 %",
                                    f"{FakeEndpoint.resource_name}: model fashion-mnist", "stable   111",
                                    "canary   222"]
    code, out, err = _release("promote", *target)
    assert code == 0, err
    assert endpoint.calls == [("update", {"111": 75, "222": 25}), ("update", {"222": 100}), ("undeploy", "111")]
    assert _release("promote", "--max-error-rate", "0.1", "--server", "x:1", *target) == (
        2, "", "error: --max-error-rate/--min-agreement measure a TF Serving server (--server); gate a Vertex "
               "endpoint on its own monitoring\n")
    assert _release("status", "--endpoint-name", "fashion-mnist") == (
        2, "", "error: a Vertex endpoint needs --vertex-endpoint projects/P/locations/R/endpoints/ID, or --project, "
               "--region and --endpoint-name\n")
    assert opened == [FakeEndpoint.resource_name] * 3
