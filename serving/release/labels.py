"""Canary releases on a TF Serving model config: the `fmnist release` operations.

A release is TF Serving's own canary layout in a ModelServerConfig (the file `fmnist serve
--model-config-file`, tensorflow_model_server and the Kubernetes ConfigMap all read):

    model_version_policy { specific { versions: S versions: C } }
    version_labels { key: "stable" value: S }  version_labels { key: "canary" value: C }

`FileRelease` moves those labels: start_canary(C) adds a canary beside the stable version,
promote() makes the canary stable and drops the old stable, rollback() drops the canary. Each
rewrite is validated first (the version directory must hold a saved_model.pb), holds an fcntl lock
on `<file>.lock` so two commands never interleave, and replaces the file atomically, so a server
polling it sees either the old release or the new one. The project server (serving/server/manager.py)
switches its labels only once the versions they name are loaded, so no request fails while a label
moves.

Gates (`error_rate_gate`, `agreement_gate`) measure the canary on a running server before a
promotion; a gate that misses its threshold raises GateRefusedError and the file is left as it was.
serving/release/canary_analysis.py measures it over a bake window and promotes or rolls back by itself.
serving/release/vertex_traffic.py does the same on a Vertex AI endpoint's traffic split.

Every label move (canary, superseded, promoted, rolled back) and every automatic decision is
appended to `release_history.jsonl` beside the config, one JSON object per line, under the same
lock and right after the config write it records, so the history never misses or reorders a move.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np

from fmnist import features, paths
from fmnist.errors import one_line
from serving.protocol.names import PROMETHEUS_PATH, REQUESTS

# Where the local runner writes the release config, beside its push directory (serving_model/).
DEFAULT_CONFIG_FILE: Final = str(paths.DEFAULT_MODELS_CONFIG)
STABLE, CANARY = features.STABLE_LABEL, features.CANARY_LABEL
HISTORY_FILE: Final = "release_history.jsonl"  # beside the model config
# What start_canary does when a canary is already running: the newer version replaces it (the older
# is recorded as superseded), or the running one is kept and the newer version stays unlabelled.
REPLACE, KEEP = "replace", "keep"
BUSY_POLICIES: Final = (REPLACE, KEEP)

Version = int | str  # a version number (model config) or a deployed model ID (Vertex)


class ReleaseError(RuntimeError):
    """A release operation refused, with one line saying why; nothing was changed."""


class GateRefusedError(ReleaseError):
    """A promotion gate measured the canary below its threshold."""


@dataclass(frozen=True)
class ReleaseState:
    """Where a release stands: which version is stable, which is the canary (None: none)."""

    where: str  # the config file, or the Vertex endpoint's resource name
    model: str
    stable: Version | None
    canary: Version | None
    serving: tuple[str, ...] = ()  # what is loaded or deployed, one description each
    notes: tuple[str, ...] = field(default=(), compare=False)  # what an operation did or measured

    def summary(self) -> str:
        return f"stable {_or_none(self.stable)}, canary {_or_none(self.canary)}"

    def lines(self) -> list[str]:
        return [f"{self.where}: model {self.model}", f"stable   {_or_none(self.stable)}",
                f"canary   {_or_none(self.canary)}", *(f"serving  {item}" for item in self.serving)]


def _or_none(version: Version | None) -> str:
    return "none" if version is None else str(version)


Gate = Callable[[ReleaseState], str]  # returns what it measured; raises GateRefusedError on a miss


class Release(Protocol):
    """The operations `fmnist release` runs, on a model config file or a Vertex endpoint."""

    def status(self) -> ReleaseState: ...

    def start_canary(self, version: str) -> ReleaseState: ...  # FileRelease also takes busy= and actor=

    def promote(self, gates: Sequence[Gate] = ()) -> ReleaseState: ...

    def rollback(self) -> ReleaseState: ...


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """Holds an exclusive fcntl lock on `path`.lock (created beside it, left there) for the block."""
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _set_release(model, stable: int, canary: int | None) -> None:
    """Labels stable (and canary) on a ModelConfig and loads exactly the labelled versions."""
    labels = model.version_labels
    labels[STABLE] = stable
    if canary is None:
        labels.pop(CANARY, None)
    else:
        labels[CANARY] = canary
    policy = model.model_version_policy
    policy.ClearField("specific")  # also clears `latest`/`all`: the policy is one oneof
    # Every labelled version (a hand-added one too): tensorflow_model_server rejects a label on a
    # version its policy does not load.
    policy.specific.versions.extend(sorted(set(labels.values())))


class History:
    """A release history: one JSON object per line in `path`, appended to, never rewritten. Each
    entry is {time, action, model, stable, canary, actor, **evidence}. FileRelease appends under
    its config lock; VertexRelease's file (e.g. on a Cloud Storage FUSE mount) has no lock, so one
    writer at a time (one job execution) is the caller's to ensure."""

    def __init__(self, path: str):
        self.path = str(path)

    def append(self, action: str, model: str, stable: Version | None, canary: Version | None, actor: str,
               evidence: Mapping[str, Any] | None = None) -> dict:
        """Appends one entry; returns it."""
        entry = {"time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "action": action,
                 "model": model, "stable": stable, "canary": canary, "actor": actor, **(evidence or {})}
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        # One write of one whole line on an O_APPEND descriptor, fsynced: a reader never sees half a line.
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line.encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return entry

    def entries(self) -> list[dict]:
        """Every entry, oldest first ([] before the first). Raises ReleaseError naming the line
        that is not a JSON object (the file is append-only: a bad line was written by hand)."""
        try:
            with open(self.path) as stream:
                lines = stream.read().splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                raise ReleaseError(f"{self.path}, line {number}: not JSON ({err.msg})") from None
            if not isinstance(entry, dict):
                raise ReleaseError(f"{self.path}, line {number}: not a JSON object")
            entries.append(entry)
        return entries


class FileRelease:
    """Releases by version labels in a ModelServerConfig text file (see the module docstring).

    `model_name` picks the model (default: the config's only one, else features.MODEL_NAME).
    `base_path` is where its version directories are on this machine, for the saved_model.pb check
    (default: the config's base_path) and the base_path of a config created by the first canary
    (default: serving_model/ beside the config file). All operations raise ReleaseError (one line)
    and leave the file as it was when they refuse.
    """

    def __init__(self, config_file: str = DEFAULT_CONFIG_FILE, model_name: str | None = None,
                 base_path: str | None = None):
        self.config_file = str(config_file)
        self.model_name = model_name
        self.base_path = None if base_path is None else str(base_path)
        self.history_file = os.path.join(os.path.dirname(os.path.abspath(self.config_file)), HISTORY_FILE)
        self._history = History(self.history_file)

    # -- history ----------------------------------------------------------------------------
    def _append(self, action: str, model, stable: Version | None, canary: Version | None, actor: str,
                evidence: Mapping[str, Any] | None = None) -> dict:
        """Appends one history line (call under the lock, after the config write it records)."""
        return self._history.append(action, model.name, stable, canary, actor, evidence)

    def record(self, action: str, actor: str, evidence: Mapping[str, Any] | None = None) -> dict:
        """Appends a decision that moves no label (e.g. an inconclusive analysis that keeps the
        canary) to the history, with the release as it stands; returns the entry written."""
        with _locked(self.config_file):
            model = self._read()[1]
            labels = model.version_labels
            return self._append(action, model, labels.get(STABLE), labels.get(CANARY), actor, evidence)

    def history(self) -> list[dict]:
        """Every history entry, oldest first (see History.entries)."""
        return self._history.entries()

    # -- reading ----------------------------------------------------------------------------
    def _read(self, create: bool = False):
        from serving.protocol.model_config import read_model_config, single_model_config

        if not os.path.exists(self.config_file):
            if not create:
                raise ReleaseError(f"{self.config_file} does not exist (`fmnist release canary VERSION` "
                                   "writes it, or pass --model-config-file)")
            base = self.base_path or os.path.join(os.path.dirname(os.path.abspath(self.config_file)), "serving_model")
            config = single_model_config(self.model_name or features.MODEL_NAME, base)
            return config, config.model_config_list.config[0]
        try:
            config = read_model_config(self.config_file)
        except (OSError, ValueError) as err:
            raise ReleaseError(one_line(err)) from None
        models = {m.name: m for m in config.model_config_list.config}
        name = self.model_name or (next(iter(models)) if len(models) == 1 else features.MODEL_NAME)
        if name not in models:
            raise ReleaseError(f"{self.config_file} has no model '{name}' (models: {', '.join(sorted(models))}; "
                               "pick one with --model-name)")
        return config, models[name]

    def _state(self, model, *notes: str) -> ReleaseState:
        labels = model.version_labels
        policy = model.model_version_policy
        kind = policy.WhichOneof("policy_choice") or "latest"
        if kind == "specific":
            loads = "versions " + ", ".join(map(str, policy.specific.versions))
        elif kind == "all":
            loads = "every version"
        else:
            loads = f"the latest {max(1, policy.latest.num_versions)} version(s)"
        others = [f"label {k}={v}" for k, v in sorted(labels.items()) if k not in (STABLE, CANARY)]
        return ReleaseState(self.config_file, model.name, labels.get(STABLE), labels.get(CANARY),
                            (f"{loads} of {model.base_path}", *others), notes)

    def _check_version(self, model, version: Version) -> int:
        """The version as a number, once its directory holds a saved_model.pb."""
        text = str(version)
        if not text.isdigit():
            raise ReleaseError(f"a version is a number (a directory name under the base path), got {text!r}")
        base = self.base_path or model.base_path
        directory = os.path.join(base, text)
        if not os.path.isfile(os.path.join(directory, "saved_model.pb")):
            where = ("" if "://" not in base else
                     " (a remote base path cannot be checked from here: pass --model-base-path to a local copy)")
            raise ReleaseError(f"version {text}: no saved_model.pb in {directory}{where}")
        return int(text)

    # -- operations -------------------------------------------------------------------------
    def status(self) -> ReleaseState:
        """The release in the file now."""
        return self._state(self._read()[1])

    def start_canary(self, version: str, busy: str = REPLACE, actor: str = "fmnist release canary") -> ReleaseState:
        """Labels `version` canary beside the stable one (stable unchanged); with no stable label
        yet (a new file, or one serving the latest version), `version` becomes stable directly.
        While another canary runs, `busy` decides: REPLACE (the default) makes `version` the
        canary and records the older one as superseded; KEEP refuses (the running canary goes on
        baking, `version` stays unlabelled). Refuses a version already stable. `actor` is who
        asked, for the history."""
        from serving.protocol.model_config import write_model_config

        if busy not in BUSY_POLICIES:
            raise ReleaseError(f"a busy policy is one of {', '.join(BUSY_POLICIES)}, got {busy!r}")
        with _locked(self.config_file):
            config, model = self._read(create=True)
            number = self._check_version(model, version)
            stable, canary = model.version_labels.get(STABLE), model.version_labels.get(CANARY)
            superseded = None
            if stable is None:
                _set_release(model, number, None)
                note = f"no stable version yet: {number} is stable directly"
            elif number == stable:
                raise ReleaseError(f"version {number} is already stable in {self.config_file}")
            elif canary not in (None, number) and busy == KEEP:
                raise ReleaseError(f"version {canary} is already the canary in {self.config_file}: "
                                   "promote or roll it back first (or --busy replace)")
            else:
                superseded = canary if canary not in (None, number) else None
                _set_release(model, stable, number)
                note = f"version {number} is the canary beside stable {stable}" + (
                    f"; canary {superseded} superseded" if superseded is not None else "")
            write_model_config(config, self.config_file)
            if superseded is not None:
                self._append("superseded", model, stable, superseded, actor, {"by": number})
            self._append("canary" if stable is not None else "stable", model, stable if stable is not None else number,
                         number if stable is not None else None, actor)
            return self._state(model, note)

    def promote(self, gates: Sequence[Gate] = (), actor: str = "fmnist release promote",
                expect_canary: Version | None = None, evidence: Mapping[str, Any] | None = None) -> ReleaseState:
        """stable := canary, the canary label and the old stable version dropped. Every gate runs
        first, under the lock; the first refusal raises GateRefusedError and nothing is written.
        `expect_canary`: refuse unless that version is still the canary (a decision measured on
        one canary must not promote the one that replaced it). `evidence` goes into the history."""
        from serving.protocol.model_config import write_model_config

        with _locked(self.config_file):
            config, model = self._read()
            before = self._state(model)
            if before.canary is None:
                raise ReleaseError(f"{self.config_file} has no canary to promote (stable: {_or_none(before.stable)})")
            self._check_expected(before, expect_canary)
            canary = self._check_version(model, before.canary)
            measured = [gate(before) for gate in gates]
            _set_release(model, canary, None)
            write_model_config(config, self.config_file)
            self._append("promoted", model, canary, None, actor,
                         {"previous_stable": before.stable, **({"gates": measured} if measured else {}),
                          **(evidence or {})})
            return self._state(model, *measured, f"version {canary} is stable; {before.stable} is no longer served")

    def rollback(self, actor: str = "fmnist release rollback", expect_canary: Version | None = None,
                 evidence: Mapping[str, Any] | None = None) -> ReleaseState:
        """Drops the canary label and version; stable keeps serving everything. `expect_canary`
        and `evidence`: as for promote."""
        from serving.protocol.model_config import write_model_config

        with _locked(self.config_file):
            config, model = self._read()
            before = self._state(model)
            if before.canary is None:
                raise ReleaseError(f"{self.config_file} has no canary to roll back (stable: {_or_none(before.stable)})")
            if before.stable is None:
                raise ReleaseError(f"{self.config_file} labels a canary but no stable version to fall back to")
            self._check_expected(before, expect_canary)
            _set_release(model, before.stable, None)
            write_model_config(config, self.config_file)
            self._append("rolled back", model, before.stable, before.canary, actor, evidence)
            return self._state(model, f"canary {before.canary} dropped; stable {before.stable} serves everything")

    def _check_expected(self, state: ReleaseState, expected: Version | None) -> None:
        if expected is not None and str(state.canary) != str(expected):
            raise ReleaseError(f"the canary in {self.config_file} is now version {state.canary}, not {expected}: "
                               "it changed while it was measured, nothing done")


# -- promotion gates ------------------------------------------------------------------------------
def metrics_text(server: str) -> tuple[str, str]:
    """(the Prometheus text exposition of the server at REST `server` (host:port or URL), its URL).
    ReleaseError (one line) when it cannot be read."""
    import httpx

    url = f"{server if server.startswith('http') else f'http://{server}'}{PROMETHEUS_PATH}"
    try:
        response = httpx.get(url, timeout=10)
        response.raise_for_status()
    except httpx.HTTPError as err:
        raise ReleaseError(f"cannot read the metrics at {url}: {err}") from None
    return response.text, url


def request_counts(server: str, model: str, version: Version) -> tuple[int, int]:
    """(requests, non-OK requests) the server counted for `version` of `model`, all APIs and both
    transports, from its Prometheus `fmnist_serving_requests` counters (since it started)."""
    from prometheus_client.parser import text_string_to_metric_families

    text, url = metrics_text(server)
    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == REQUESTS]
    if not samples:
        raise ReleaseError(f"{url} has no {REQUESTS} counters: the error-rate gate needs `fmnist serve`'s "
                           "metrics (tensorflow_model_server counts per model, not per version)")
    mine = [s for s in samples if s.labels.get("model") == model and s.labels.get("version") == str(version)]
    total = sum(s.value for s in mine)
    errors = sum(s.value for s in mine if s.labels.get("code") != "OK")
    return int(total), int(errors)


def error_rate_gate(server: str, max_error_rate: float, min_requests: int) -> Gate:
    """Refuses unless the canary answered at least `min_requests` requests on `server` (REST
    host:port), and at most the fraction `max_error_rate` of them with a non-OK code."""

    def gate(state: ReleaseState) -> str:
        total, errors = request_counts(server, state.model, state.canary)
        if total < min_requests:
            raise GateRefusedError(f"canary version {state.canary} answered {total} requests on {server}, "
                                   f"fewer than --min-requests {min_requests}: too few to judge its error rate")
        rate = errors / total
        if rate > max_error_rate:
            raise GateRefusedError(f"canary version {state.canary} error rate {rate:.2%} ({errors} of {total} "
                                   f"requests) is above --max-error-rate {max_error_rate:.2%}")
        return f"gate passed: canary error rate {rate:.2%} ({errors} of {total} requests) <= {max_error_rate:.2%}"

    return gate


def _predicted_classes(client, images: np.ndarray, expected: Version, label: str, batch: int = 50) -> np.ndarray:
    classes = []
    for start in range(0, len(images), batch):
        prediction = client.predict(images[start:start + batch])
        if prediction.version != expected:
            raise GateRefusedError(f"the server's '{label}' label answers with version {prediction.version}, "
                                   f"the release says {expected}: wait until it has picked the config up")
        classes.append(prediction.class_ids)
    return np.concatenate(classes)


def agreement_gate(server: str, images: np.ndarray, min_agreement: float) -> Gate:
    """Refuses unless the canary predicts the same class as stable on at least the fraction
    `min_agreement` of `images` ([N, 28, 28] or [N, 784] grey levels), both asked on `server`
    (REST host:port) through their labels."""
    from serving.client.clients import ClientError, RestClient

    def gate(state: ReleaseState) -> str:
        answers = {}
        for label, version in ((STABLE, state.stable), (CANARY, state.canary)):
            client = RestClient(server, state.model, label=label)
            try:
                answers[label] = _predicted_classes(client, images, version, label)
            except ClientError as err:
                raise ReleaseError(f"agreement gate: {label} on {server}: {err}") from None
            finally:
                client.close()
        agreement = float(np.mean(answers[STABLE] == answers[CANARY]))
        if agreement < min_agreement:
            raise GateRefusedError(f"canary version {state.canary} agrees with stable version {state.stable} on "
                                   f"{agreement:.1%} of {len(images)} test images, "
                                   f"below --min-agreement {min_agreement:.1%}")
        return (f"gate passed: canary agrees with stable on {agreement:.1%} of {len(images)} test images "
                f">= {min_agreement:.1%}")

    return gate


def served_labels(server: str, model: str = features.MODEL_NAME) -> dict[str, int | None]:
    """{stable, canary: the version the server answers that label with, None if it has no such
    label}, asked through TF Serving's REST status API (so any TF Serving server answers)."""
    from serving.client.clients import ClientError, RestClient

    served: dict[str, int | None] = {}
    for label in (STABLE, CANARY):
        client = RestClient(server, model, label=label, timeout=10)
        try:
            statuses = client.status()["model_version_status"]
            served[label] = int(statuses[0]["version"])
        except ClientError as err:
            if "HTTP 404" not in str(err):
                raise ReleaseError(f"cannot ask {server} for its '{label}' label: {err}") from None
            served[label] = None
        finally:
            client.close()
    return served
