"""Which versions are loaded: TF Serving's model config (the same text proto `tensorflow_model_server
--model_config_file` reads), a poller of each model's base path, and load-before-unload swaps.

A version directory is loaded once it holds `saved_model.pb` and its contents stayed unchanged
for one poll interval (the TFX Pusher copies file by file, so a half-copied version can be
visible). A new version becomes AVAILABLE before any old one is dropped, and requests already
holding the old one finish on it, so a swap fails no request. A version whose directory is
deleted is unloaded, as TF Serving does, even when no other version is left to serve.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import not_found

log = logging.getLogger(__name__)
State = get_model_status_pb2.ModelVersionStatus.State


def read_model_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    with open(path) as stream:
        config = text_format.Parse(stream.read(), model_server_config_pb2.ModelServerConfig())
    if not config.model_config_list.config:
        raise ValueError(f"{path}: model_config_list has no model")
    return config


def single_model_config(name: str, base_path: str, labels: dict[str, int] | None = None,
                        latest_versions: int = 1) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name=name, base_path=os.path.abspath(base_path),
                                                model_platform="tensorflow")
    model.model_version_policy.latest.num_versions = latest_versions
    for label, version in (labels or {}).items():
        model.version_labels[label] = version
    return config


def write_model_config(config: model_server_config_pb2.ModelServerConfig, path: str) -> None:
    with open(path, "w") as stream:
        stream.write(text_format.MessageToString(config))


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
    restart); `loader(name, version, path)` returns the servable or raises, and is called from
    start() and then the poller thread, one load at a time. Lookups (resolve, status,
    model_names) are thread-safe and never wait for a load: they see what is AVAILABLE now.
    """

    def __init__(self, config_source: Callable[[], model_server_config_pb2.ModelServerConfig],
                 loader: Callable[[str, int, str], object], poll_seconds: float = 2.0):
        self._config_source = config_source
        self._loader = loader
        self._poll_seconds = poll_seconds
        self._lock = threading.RLock()
        self._models: dict[str, model_server_config_pb2.ModelConfig] = {}
        self._versions: dict[str, dict[int, VersionState]] = {}
        self._seen: dict[tuple[str, int], tuple] = {}  # last fingerprint per version dir
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
        config = self._config_source()
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
            available = {v for v, s in current.items() if s.state == State.AVAILABLE}
            # Unload only what is no longer wanted, and never the last available version still on
            # disk unless a wanted one replaced it: load before unload, so a version still being
            # copied leaves the old one serving. A deleted version goes even if it is the last.
            keep = (wanted & available) or (available & present)
            for version in sorted(available - keep):
                log.info("unloading %s version %d", name, version)
                current[version] = VersionState(State.END)

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

    def resolve(self, name: str, version: int | None = None, label: str | None = None):
        """The Servable a request asks for: `version`, else `label`, else the latest AVAILABLE one.

        Raises a NOT_FOUND ServingError for an unknown model or label, or a version not AVAILABLE.
        The servable stays usable after it is unloaded, so a caller holding it can finish.
        """
        with self._lock:
            if name not in self._models:
                raise not_found(f"Servable not found for request: unknown model '{name}' "
                                f"(serving: {', '.join(sorted(self._models)) or 'none'})")
            versions = self._versions.get(name, {})
            if label is not None:
                labels = self._models[name].version_labels
                if label not in labels:
                    raise not_found(f"model '{name}' has no version label '{label}' "
                                    f"(labels: {', '.join(sorted(labels)) or 'none'})")
                version = labels[label]
            available = {v: s for v, s in versions.items() if s.state == State.AVAILABLE}
            if version is None:
                if not available:
                    raise not_found(f"model '{name}' has no version available yet")
                return available[max(available)].servable
            if version not in available:
                raise not_found(f"model '{name}' version {version} is not available "
                                f"(available: {', '.join(map(str, sorted(available))) or 'none'})")
            return available[version].servable

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[tuple[int, int, str]]:
        """[(version, State, error message)] sorted by version, as GetModelStatus reports them:
        every version it loaded or tried to (END once unloaded or failed), or just `version`/`label`'s.
        Raises a NOT_FOUND ServingError for an unknown model, label or version."""
        with self._lock:
            if name not in self._models:
                raise not_found(f"unknown model '{name}'")
            if label is not None:
                if label not in self._models[name].version_labels:
                    raise not_found(f"model '{name}' has no version label '{label}'")
                version = self._models[name].version_labels[label]
            versions = self._versions.get(name, {})
            if version is not None:
                if version not in versions:
                    raise not_found(f"model '{name}' has no version {version}")
                versions = {version: versions[version]}
            return [(v, s.state, s.error) for v, s in sorted(versions.items())]
