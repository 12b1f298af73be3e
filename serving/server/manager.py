"""Which versions are loaded: TF Serving's model config (the same text proto `tensorflow_model_server
--model_config_file` reads), a poller of each model's base path, and load-before-unload swaps.

A version directory is loaded once it holds `saved_model.pb` and its contents stayed unchanged
for one poll interval (the TFX Pusher copies file by file, so a half-copied version can be
visible). A new version becomes AVAILABLE before any old one is dropped, and requests already
holding the old one finish on it, so a swap fails no request. A version whose directory is
deleted is unloaded, as TF Serving does, even when no other version is left to serve.

Version labels (a release: `stable`, optionally `canary`, see serving/release/labels.py) switch only
once every version they name is AVAILABLE: the manager loads those first and keeps serving the
previous labels meanwhile, so moving a label fails no request. A config that cannot be read, or
whose labels name a version that is not on disk or fails to load, is rejected with one log line
and the previous config and labels keep serving. A request without version or label goes to
`stable` (or, with canary_traffic, that share of them to `canary`), else to the highest
AVAILABLE version, which is all tensorflow_model_server ever does (deploy/README.md). With
shadow_traffic, shadow_target() picks that share of the requests routed to `stable` to be run
again on `canary` (serving/server/shadow.py).
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from tensorflow_serving.config import model_server_config_pb2

from fmnist import features
from fmnist.errors import one_line
from serving.protocol import protos
from serving.protocol.errors import not_found

log = logging.getLogger(__name__)
# Through serving.protocol.protos, so importing the manager (rest.py's State, option checks) never
# pays for TensorFlow's runtime by itself; a server process has imported TensorFlow already.
State = protos.load().get_model_status_pb2.ModelVersionStatus.State


def version_dirs(base_path: str) -> set[int]:
    """Versions that have a directory, complete or not."""
    if not os.path.isdir(base_path):
        return set()
    return {int(entry.name) for entry in os.scandir(base_path) if entry.is_dir() and entry.name.isdigit()}


def versions_on_disk(base_path: str) -> dict[int, tuple]:
    """{version: fingerprint of its files} for version dirs that hold a saved_model.pb."""
    found = {}
    if not os.path.isdir(base_path):
        return found
    for entry in os.scandir(base_path):
        if entry.is_dir() and entry.name.isdigit() and os.path.exists(os.path.join(entry.path, "saved_model.pb")):
            stats = [os.stat(os.path.join(root, f)) for root, _, files in os.walk(entry.path) for f in files]
            found[int(entry.name)] = (len(stats), sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats))
    return found


def wanted_versions(model: model_server_config_pb2.ModelConfig, available: list[int]) -> set[int]:
    policy = model.model_version_policy
    kind = policy.WhichOneof("policy_choice") or "latest"
    if kind == "all":
        wanted = set(available)
    elif kind == "specific":
        wanted = set(policy.specific.versions) & set(available)
    else:
        wanted = set(sorted(available)[-max(1, policy.latest.num_versions):])
    return wanted | (set(model.version_labels.values()) & set(available))


@dataclass
class VersionState:
    state: int
    servable: object | None = None
    error: str = ""
    fingerprint: tuple = ()  # of the files it was loaded (or failed to load) from


class ModelManager:
    """Which versions of which models are loaded, kept in step with the model config and the disk.

    `config_source` is called on every poll (so an edited config file takes effect without a
    restart) and `config_name` names it in log lines; `loader(name, version, path)` returns the
    servable or raises, and is called from start() and then the poller thread, one load at a
    time. Lookups (resolve, status, labels, model_names) are thread-safe and never wait for a
    load: they see what is AVAILABLE now. `canary_traffic` is the percent (0-100) of requests
    without version or label that go to the `canary` label when there is one; `rng` draws that
    choice per request (pass a seeded random.Random for a repeatable split). `shadow_traffic` is
    the percent of the requests routed to `stable` that shadow_target() also gives the canary;
    `shadow_rng` draws that (its own, so the canary split's sequence does not depend on it).
    """

    def __init__(self, config_source: Callable[[], model_server_config_pb2.ModelServerConfig],
                 loader: Callable[[str, int, str], object], poll_seconds: float = 2.0,
                 canary_traffic: float = 0.0, rng: random.Random | None = None,
                 config_name: str = "model config", shadow_traffic: float = 0.0,
                 shadow_rng: random.Random | None = None):
        for name, share in (("canary traffic", canary_traffic), ("shadow traffic", shadow_traffic)):
            if not 0.0 <= share <= 100.0:
                raise ValueError(f"{name} is a percentage within 0..100, got {share:g}")
        self._config_source = config_source
        self._loader = loader
        self._poll_seconds = poll_seconds
        self.canary_traffic = canary_traffic
        self.rng = rng or random.Random()
        self.shadow_traffic = shadow_traffic
        self.shadow_rng = shadow_rng or random.Random()
        self._config_name = config_name
        self._lock = threading.RLock()
        self._models: dict[str, model_server_config_pb2.ModelConfig] = {}
        self._versions: dict[str, dict[int, VersionState]] = {}
        self._labels: dict[str, dict[str, int]] = {}  # the labels requests see, per model
        self._seen: dict[tuple[str, int], tuple] = {}  # last fingerprint per version dir
        self._rejected: dict[str, str] = {}  # last problem logged, per model ("" for the config itself)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Loads what is on disk now (blocking, so a server is ready once this returns), then polls
        every poll_seconds on a daemon thread. A version that fails to load is reported by status()
        as END with its error; start() itself raises only if the config cannot be read."""
        self.sync(require_stable=False)
        self._thread = threading.Thread(target=self._poll, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops polling (waits up to 10 s for a poll in progress); loaded versions stay servable."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                self.sync()
            except Exception:  # a bad poll must not kill the poller; the next one retries
                log.exception("model poll failed")

    # -- syncing -----------------------------------------------------------------------------
    def sync(self, require_stable: bool = True) -> None:
        """One poll: re-reads the config, loads and unloads versions, switches labels. Raises if the
        config cannot be read and none was read before; later, a bad config is logged (once) and
        the previous one stays in force."""
        try:
            config = self._config_source()
        except (OSError, ValueError) as err:
            if not self._models:
                raise
            problem = one_line(err)
            self._reject("", problem if self._config_name in problem else f"{self._config_name}: {problem}")
            models = dict(self._models)
        else:
            self._accept("")
            models = {m.name: m for m in config.model_config_list.config}
        with self._lock:
            self._models = models
        for name, model in models.items():
            self._sync_model(name, model, require_stable)

    def _sync_model(self, name: str, model, require_stable: bool) -> None:
        present = version_dirs(model.base_path)
        on_disk = versions_on_disk(model.base_path)
        ready = [v for v, fingerprint in on_disk.items()
                 if not require_stable or self._seen.get((name, v)) == fingerprint]
        # Forget what left the disk, so a version pushed again must be stable again before it loads.
        for key in [k for k in self._seen if k[0] == name and k[1] not in on_disk]:
            del self._seen[key]
        for version, fingerprint in on_disk.items():
            self._seen[(name, version)] = fingerprint
        wanted = wanted_versions(model, ready)
        with self._lock:
            current = self._versions.setdefault(name, {})
            to_load = [v for v in wanted if self._needs_load(current.get(v), on_disk[v])]
        for version in sorted(to_load):
            self._load(name, version, os.path.join(model.base_path, str(version)), on_disk[version])
        with self._lock:
            self._switch_labels(name, model, current, present)
            available = {v for v, s in current.items() if s.state == State.AVAILABLE}
            # Unload only what is no longer wanted, and never the last available version still on
            # disk unless a wanted one replaced it: load before unload, so a version still being
            # copied leaves the old one serving. A deleted version goes even if it is the last.
            # Versions the labels in force name stay until the labels move off them.
            keep = (wanted & available) or (available & present)
            keep |= set(self._labels.get(name, {}).values()) & available & present
            for version in sorted(available - keep):
                log.info("unloading %s version %d", name, version)
                current[version] = VersionState(State.END)

    def _switch_labels(self, name: str, model, current: dict[int, VersionState], present: set[int]) -> None:
        """Puts the config's labels in force once every version they name is AVAILABLE; rejects them
        (previous labels stay) if one names a version that is not on disk or failed to load."""
        labels = dict(model.version_labels)
        if labels == self._labels.get(name, {}):
            self._accept(name)
            return
        for label, version in sorted(labels.items()):
            state = current.get(version)
            if state is not None and state.state == State.AVAILABLE:
                continue
            if state is not None and state.error:
                problem = f"label '{label}' names version {version}, which failed to load ({state.error})"
            elif version not in present:
                problem = f"label '{label}' names version {version}, which is not on disk in {model.base_path}"
            else:
                return  # still being copied or loaded: wait, the previous labels keep serving
            self._reject(name, f"{self._config_name}: model '{name}': {problem}")
            return
        self._labels[name] = labels
        self._accept(name)
        log.info("%s labels now %s", name, _describe(labels))

    def _reject(self, scope: str, problem: str) -> None:
        problem = one_line(problem)  # a TF load error spans lines; the log line must not
        if self._rejected.get(scope) != problem:  # once per problem, not once per poll
            self._rejected[scope] = problem
            in_force = "; ".join(f"{n}: {_describe(labels)}" for n, labels in sorted(self._labels.items()))
            log.error("rejected %s; still serving the previous labels (%s)", problem, in_force or "none")

    def _accept(self, scope: str) -> None:
        self._rejected.pop(scope, None)

    @staticmethod
    def _needs_load(current: VersionState | None, fingerprint: tuple) -> bool:
        if current is None:
            return True
        # Unloaded earlier and wanted again, or failed and rewritten since: try (again).
        return current.state == State.END and (not current.error or current.fingerprint != fingerprint)

    def _load(self, name: str, version: int, path: str, fingerprint: tuple) -> None:
        with self._lock:
            self._versions[name][version] = VersionState(State.LOADING, fingerprint=fingerprint)
        log.info("loading %s version %d from %s", name, version, path)
        try:
            servable = self._loader(name, version, path)
        except Exception as err:  # keep serving what is loaded; report why this one is not
            log.exception("failed to load %s version %d", name, version)
            with self._lock:
                self._versions[name][version] = VersionState(State.END, error=f"load failed: {err}",
                                                             fingerprint=fingerprint)
            return
        with self._lock:
            self._versions[name][version] = VersionState(State.AVAILABLE, servable, fingerprint=fingerprint)
        log.info("serving %s version %d", name, version)

    # -- lookups -----------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def labels(self, name: str) -> dict[str, int]:
        """{label: version} in force for `name` (a config's new labels show up here only once they
        switched). Raises a NOT_FOUND ServingError for an unknown model."""
        with self._lock:
            self._known(name)
            return dict(self._labels.get(name, {}))

    def _known(self, name: str) -> None:
        if name not in self._models:
            raise not_found(f"Servable not found for request: unknown model {name!r} "
                            f"(serving: {', '.join(sorted(self._models)) or 'none'})")

    def _label_version(self, name: str, label: str) -> int:
        labels = self._labels.get(name, {})
        if label not in labels:
            raise not_found(f"model {name!r} has no version label {label!r} "
                            f"(labels: {', '.join(sorted(labels)) or 'none'})")
        return labels[label]

    def resolve(self, name: str, version: int | None = None, label: str | None = None):
        """The Servable a request asks for: `version`, else `label`, else the route of a request
        that names neither: `canary` for canary_traffic percent of them when that label exists,
        else `stable`, else the latest AVAILABLE version.

        Raises a NOT_FOUND ServingError for an unknown model or label, or a version not AVAILABLE.
        The servable stays usable after it is unloaded, so a caller holding it can finish.
        """
        with self._lock:
            self._known(name)
            versions = self._versions.get(name, {})
            available = {v: s for v, s in versions.items() if s.state == State.AVAILABLE}
            if label is not None:
                version = self._label_version(name, label)
            elif version is None:
                version = self._route(self._labels.get(name, {}), available)
                if version is None:
                    raise not_found(f"model {name!r} has no version available yet")
            if version not in available:
                raise not_found(f"model {name!r} version {version} is not available "
                                f"(available: {', '.join(map(str, sorted(available))) or 'none'})")
            return available[version].servable

    def _route(self, labels: dict[str, int], available: dict[int, VersionState]) -> int | None:
        canary, stable = labels.get(features.CANARY_LABEL), labels.get(features.STABLE_LABEL)
        # Draw only when a canary could be chosen, so a seeded rng's sequence is the canary split's.
        if canary in available and self.canary_traffic > 0 and self.rng.random() * 100 < self.canary_traffic:
            return canary
        if stable in available:
            return stable
        # No stable label, or its directory was deleted (unloaded, as TF Serving does): the latest.
        return max(available, default=None)

    def shadow_target(self, name: str, served: int):
        """The canary's Servable when a request without version or label that was answered by
        version `served` should also run on the canary: `served` is the `stable` label's version,
        a `canary` label is AVAILABLE beside it, and the shadow_traffic draw says so; else None."""
        if self.shadow_traffic <= 0:
            return None
        with self._lock:
            labels = self._labels.get(name, {})
            canary = labels.get(features.CANARY_LABEL)
            state = self._versions.get(name, {}).get(canary)
            if (served != labels.get(features.STABLE_LABEL) or canary == served or state is None
                    or state.state != State.AVAILABLE):
                return None
            if self.shadow_rng.random() * 100 >= self.shadow_traffic:
                return None
            return state.servable

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[tuple[int, int, str]]:
        """[(version, State, error message)] sorted by version, as GetModelStatus reports them:
        every version it loaded or tried to (END once unloaded or failed), or just `version`/`label`'s.
        Raises a NOT_FOUND ServingError for an unknown model, label or version."""
        with self._lock:
            if name not in self._models:
                raise not_found(f"unknown model {name!r}")
            if label is not None:
                version = self._label_version(name, label)
            versions = self._versions.get(name, {})
            if version is not None:
                if version not in versions:
                    raise not_found(f"model {name!r} has no version {version}")
                versions = {version: versions[version]}
            return [(v, s.state, s.error) for v, s in sorted(versions.items())]


def _describe(labels: dict[str, int]) -> str:
    return ", ".join(f"{label}={version}" for label, version in sorted(labels.items())) or "none"
