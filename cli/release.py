"""`fmnist release status|canary VERSION|promote|rollback|analyze|auto|history`: canary releases, on
the TF Serving model config that `fmnist serve`, tensorflow_model_server and the Kubernetes
ConfigMap read (version labels stable/canary, serving/release/labels.py), or on a Vertex AI endpoint's
traffic split (serving/release/vertex_traffic.py); analyze/auto measure the canary over a bake window and
decide (serving/release/canary_analysis.py; on an endpoint from Cloud Monitoring and its logging table,
serving/release/vertex_canary.py). TensorFlow is imported only to replay instances through a Vertex
canary's SavedModel (cli/canary_replay.py); aiplatform only for an endpoint."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cli.commands import CommandSettings, command, settings_handler
from fmnist import bigquery, dataset, outcomes, paths, settings
from fmnist.errors import one_line
from fmnist.settings import setting
from serving.release import canary_analysis as analysis
from serving.release import labels as release
from serving.release.vertex_canary import REPLAY_INSTANCES


@dataclass(frozen=True)
class ReleaseTarget(CommandSettings):
    """Which release every action works on: a model config file (default) or a Vertex AI endpoint."""

    ENV_SCOPE: ClassVar[str] = "RELEASE_"

    model_config_file: Path = setting(paths.DEFAULT_MODELS_CONFIG, "TF Serving model config to edit (where the "
                                                                   "local runner writes it)")
    model_name: str | None = setting(None, "the model in the config (default: its only one)")
    model_base_path: Path | None = setting(None, "where the version directories are on this machine (default: the "
                                                 "config's base_path; for a new config, serving_model/ beside it)")
    server: str | None = setting(None, "REST HOST:PORT of the server: status shows the labels it serves; "
                                       "promote's gates, analyze and auto measure there")
    vertex_endpoint: str | None = setting(None, "release on this Vertex AI endpoint's traffic split "
                                                "(projects/P/locations/R/endpoints/ID) instead of a config file")
    project: str | None = setting(None, "Vertex: project of --endpoint-name")
    region: str | None = setting(None, "Vertex: region of --endpoint-name")
    endpoint_name: str | None = setting(None, "Vertex: the endpoint's display name")
    history: str | None = setting(None, "Vertex: the JSONL release history FILE that promote, rollback and auto "
                                        "append to and `history` reads (a config file's is release_history.jsonl "
                                        "beside it)")


@dataclass(frozen=True)
class CanarySettings:
    ENV_SCOPE: ClassVar[str] = "RELEASE_"

    traffic: int | None = setting(None, "Vertex only: the canary's percent of the endpoint's traffic (default 10); "
                                        "with a config file the share is `fmnist serve --canary-traffic`")
    busy: str = setting(release.REPLACE, "while another canary runs: replace it (it is recorded as superseded) or "
                                         "keep it and refuse", choices=release.BUSY_POLICIES)


@dataclass(frozen=True)
class PromoteGates:
    """promote's gates, measured on --server before anything changes (none by default)."""

    ENV_SCOPE: ClassVar[str] = "RELEASE_PROMOTE_"  # its max_error_rate/min_agreement are not analyze's

    max_error_rate: float | None = setting(None, "refuse if the canary answered more than this fraction of its "
                                                 "requests with an error (the server's fmnist_serving_requests "
                                                 "counters)")
    min_requests: int = setting(100, "refuse the error-rate gate below this many canary requests")
    min_agreement: float | None = setting(None, "refuse if canary and stable predict the same class on less than "
                                                "this fraction of the test images")
    agreement_images: int = setting(200, "test images for --min-agreement")
    data_dir: Path = setting(paths.DATA_DIR, "where the official test split is, for --min-agreement")


@dataclass(frozen=True)
class VertexEvidence:
    """A Vertex endpoint's evidence (serving/vertex_canary.py)."""

    ENV_SCOPE: ClassVar[str] = "RELEASE_"

    bigquery_table: str | None = setting(None, "the endpoint's request-response logging table "
                                               "(PROJECT.DATASET.TABLE): each version's predicted classes, and "
                                               "stable's answers that the canary's SavedModel replays for agreement")
    replay_instances: int = setting(REPLAY_INSTANCES, "stable's logged instances the canary answers again, at most")


@dataclass(frozen=True)
class LabelledAnswers:
    ENV_SCOPE: ClassVar[str] = "RELEASE_"

    requests: Path | None = setting(None, "the server's request log directory (fmnist serve --log-requests): the "
                                          "calls logged during the bake, joined with the labels `fmnist feedback` "
                                          "stored there")

    def outcomes(self) -> analysis.Outcomes:
        """The labelled answers of a bake, read from --requests when it ends (none without it)."""
        from cli.labelled import from_request_log

        return from_request_log(self.requests) if self.requests is not None else ()


@dataclass(frozen=True)
class BakeWindow:
    ENV_SCOPE: ClassVar[str] = "RELEASE_"

    bake_seconds: float = setting(analysis.Bake.seconds, "measure at most this long")
    bake_requests: int = setting(analysis.Bake.requests, "stop once the canary has run this many requests (its own "
                                                         "and shadow ones); fewer when the time is up is "
                                                         "inconclusive")

    def bake(self) -> analysis.Bake:
        return analysis.Bake(seconds=self.bake_seconds, requests=self.bake_requests)


@dataclass(frozen=True)
class Thresholds:
    """The canary checks (defaults measured: README, Releases)."""

    ENV_SCOPE: ClassVar[str] = "RELEASE_"

    max_error_rate: float = setting(analysis.MAX_ERROR_RATE, "canary non-OK requests over all it ran")
    max_p99_ratio: float = setting(analysis.MAX_P99_RATIO, "canary p99 latency over stable's ...")
    p99_floor_ms: float = setting(analysis.P99_FLOOR_SECONDS * 1000, "... or at most this, whichever is larger, so "
                                                                     "that tiny latencies do not flap")
    min_agreement: float = setting(analysis.MIN_AGREEMENT, "shadow instances on which the canary predicts stable's "
                                                           "class")
    max_class_divergence: float = setting(analysis.MAX_CLASS_DIVERGENCE, "Jensen-Shannon divergence of the "
                                                                         "predicted-class distributions, base 2")
    max_accuracy_drop: float = setting(analysis.MAX_ACCURACY_DROP, "canary accuracy on labelled answers may trail "
                                                                   "stable's by this much")
    min_labelled: int = setting(outcomes.MIN_LABELLED, "labelled answers each version needs before accuracy is "
                                                       "judged")

    def policy(self) -> analysis.Policy:
        """The checks as canary_analysis judges them; ValueError (one line) for a bad threshold."""
        return analysis.Policy(max_error_rate=self.max_error_rate, max_p99_ratio=self.max_p99_ratio,
                               p99_floor_seconds=self.p99_floor_ms / 1000, min_agreement=self.min_agreement,
                               max_class_divergence=self.max_class_divergence,
                               max_accuracy_drop=self.max_accuracy_drop, min_labelled=self.min_labelled)


@dataclass(frozen=True)
class AutoSettings:
    ENV_SCOPE: ClassVar[str] = "RELEASE_"

    on_inconclusive: str = setting("keep", "too little evidence when the bake ends: keep the canary, promote or "
                                           "roll back", choices=analysis.ON_INCONCLUSIVE)


@dataclass(frozen=True)
class HistorySettings:
    ENV_SCOPE: ClassVar[str] = "RELEASE_"

    last: int | None = setting(None, "only the newest N entries")


# Each action's settings, with the heading its flags show under.
_TARGET = ((ReleaseTarget, "a model config file (default) or a Vertex AI endpoint"),)
_ANALYSIS = ((VertexEvidence, "a Vertex endpoint's evidence (serving/vertex_canary.py)"),
             (LabelledAnswers, "labelled answers (issue #24), for the accuracy check"),
             (BakeWindow, "the bake window"), (Thresholds, "thresholds (defaults measured: README, Releases)"))
ACTIONS: dict[str, tuple[str, tuple[tuple[type, str], ...]]] = {
    "status": ("show which version is stable, which the canary", _TARGET),
    "canary": ("serve VERSION as the canary beside stable (stable directly if there is none)",
               ((CanarySettings, "canary"), *_TARGET)),
    "promote": ("make the canary stable and drop the old stable",
                ((PromoteGates, "gates, measured on --server before anything changes"), *_TARGET)),
    "rollback": ("drop the canary; stable serves everything", _TARGET),
    "analyze": ("measure the canary against stable on --server over a bake window: each check, then the decision "
                "(changes nothing)", (*_TARGET, *_ANALYSIS)),
    "auto": ("analyze, then promote (every check passes) or roll back (any fails); recorded in the release history",
             ((AutoSettings, "auto"), *_TARGET, *_ANALYSIS)),
    "history": ("list every label move and automatic decision, oldest first",
                ((HistorySettings, "history"), *_TARGET)),
}


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Registers `release` (with its actions) on the CLI's subparsers object."""
    parser = command(commands, "release", "canary releases: stable/canary version labels in a TF Serving model "
                                          "config, or a Vertex AI endpoint's traffic split",
                     "On the model config that `fmnist serve`, tensorflow_model_server and the Kubernetes "
                     "ConfigMap read, or on a Vertex AI endpoint; analyze and auto measure the canary over a bake "
                     "window and decide. `fmnist release ACTION --help` shows an action's settings.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, (summary, declared) in ACTIONS.items():
        action = command(actions, name, summary)
        if name == "canary":
            action.add_argument("version", help="a version directory's number (Vertex: a deployed model ID)")
        for cls, title in declared:
            settings.add_arguments(action, cls, title=title)
        action.set_defaults(handler=settings_handler(tuple(cls for cls, _ in declared), run))
    return parser


def _policy(args: argparse.Namespace) -> tuple[analysis.Policy, analysis.Bake]:
    return _declared(Thresholds, args).policy(), _declared(BakeWindow, args).bake()


def _declared(cls: type, args: argparse.Namespace) -> Any:
    """`cls` (a settings dataclass of this command) built from the parsed and resolved `args`."""
    return cls(**{field.name: getattr(args, field.name) for field in dataclasses.fields(cls)})


def _measured(args: argparse.Namespace) -> list[str]:
    """analyze / auto: the lines to print. A config file's release measured on this project's
    server (--server), or a Vertex endpoint's from Google Cloud (--bigquery-table)."""
    policy, bake = _policy(args)
    if _vertex(args):
        target, measure, bake = _vertex_measure(args, bake)
    else:
        if args.bigquery_table or args.history:
            raise release.ReleaseError("--bigquery-table and --history are for a Vertex endpoint (--vertex-endpoint, "
                                       "or --endpoint-name with --project and --region)")
        if not args.server:
            raise release.ReleaseError(f"`fmnist release {args.action}` needs --server HOST:PORT (the REST port of "
                                       "the `fmnist serve` running the release)")
        target, measure = open_release(args), functools.partial(analysis.analyze, args.server)
    if args.requests is not None and _vertex(args):
        raise release.ReleaseError("--requests reads a `fmnist serve` request log; a Vertex endpoint's labels "
                                   "are judged by `fmnist monitor --bigquery-labels-table`")
    labelled = _declared(LabelledAnswers, args).outcomes()
    if args.action == "auto":
        decision = analysis.auto_release(target, measure, policy, bake, actor="fmnist release auto",
                                         on_inconclusive=args.on_inconclusive, outcomes=labelled)
        return [*(decision.analysis.lines() if decision.analysis else []), decision.line()]
    state = target.status()
    if state.canary is None or state.stable is None:
        raise release.ReleaseError(f"{state.where} has no canary to analyze ({state.summary()})")
    measured = measure(state.model, state.stable, state.canary, policy, bake, labelled)
    would = {"pass": "promote", "fail": "roll back"}.get(measured.verdict, "inconclusive: keep the canary")
    return [*measured.lines(), f"decision: {measured.verdict} ({would}; `fmnist release auto` acts on it)"]


def _vertex_measure(args: argparse.Namespace, bake: analysis.Bake) -> tuple[release.Release, Any, analysis.Bake]:
    """The endpoint's release, its Measure (Cloud Monitoring, the logging table, the canary's
    replay through cli/canary_replay.py) and the bake polled at Vertex's pace."""
    if args.server:
        raise release.ReleaseError("--server measures a `fmnist serve`; a Vertex endpoint is measured from Cloud "
                                   "Monitoring and --bigquery-table: give one or the other")
    if not args.bigquery_table:
        raise release.ReleaseError(f"`fmnist release {args.action}` on a Vertex endpoint needs --bigquery-table "
                                   "PROJECT.DATASET.TABLE (the endpoint's request-response logging table)")
    if args.action == "auto" and not args.history:
        raise release.ReleaseError("`fmnist release auto` on a Vertex endpoint needs --history FILE (the JSONL release "
                                   "history its decisions are recorded in, e.g. /gcs/... on the job's bucket)")
    from google.cloud import monitoring_v3

    from cli import bq_load, canary_replay
    from serving.release.vertex_canary import POLL_SECONDS, VertexSource

    target = open_release(args)
    endpoint = target.endpoint

    def canary_predict(images):  # the canary as it stands when the bake ends
        return canary_replay.canary_classes(endpoint, target.status().canary, images)
    source = VertexSource(endpoint.resource_name, args.bigquery_table, monitoring_v3.MetricServiceClient(),
                          bq_load.make_client(bigquery.check_table_id(args.bigquery_table)), canary_predict,
                          replay=args.replay_instances)
    return target, source.analyze, dataclasses.replace(bake, poll_seconds=POLL_SECONDS)


def _history(args: argparse.Namespace) -> list[str]:
    if _vertex(args) and not args.history:
        raise release.ReleaseError("a Vertex endpoint's history is the file its job appends to: pass --history FILE")
    if args.history and not _vertex(args):
        raise release.ReleaseError("--history is for a Vertex endpoint; a config file's is release_history.jsonl "
                                   "beside it")
    target = (release.History(args.history) if _vertex(args)
              else release.FileRelease(str(args.model_config_file), args.model_name))
    history_file = args.history if _vertex(args) else target.history_file
    entries = target.entries() if _vertex(args) else target.history()
    if args.last is not None:
        entries = entries[-args.last:] if args.last > 0 else []
    if not entries:
        return [f"{history_file}: no entries yet"]
    rows = [list(analysis.HISTORY_COLUMNS), *analysis.history_rows(entries)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]).rstrip()
            for row in rows]


def _vertex(args: argparse.Namespace) -> bool:
    return bool(args.vertex_endpoint or args.endpoint_name)


def open_release(args: argparse.Namespace) -> release.Release:
    """The release the arguments name: a Vertex endpoint's, or the model config file's."""
    if _vertex(args):
        from serving.release.vertex_traffic import DEFAULT_CANARY_TRAFFIC, VertexRelease, open_endpoint

        endpoint = open_endpoint(args.vertex_endpoint, args.project, args.region, args.endpoint_name)
        traffic = getattr(args, "traffic", None)
        return VertexRelease(endpoint, DEFAULT_CANARY_TRAFFIC if traffic is None else traffic,
                             history_file=args.history)
    if args.history:
        raise release.ReleaseError("--history is for a Vertex endpoint; a config file's is release_history.jsonl "
                                   "beside it")
    if getattr(args, "traffic", None) is not None:
        raise release.ReleaseError("--traffic is for a Vertex endpoint; a config file's canary gets the share "
                                   "`fmnist serve --canary-traffic` gives it")
    return release.FileRelease(str(args.model_config_file), args.model_name,
                               None if args.model_base_path is None else str(args.model_base_path))


def promotion_gates(args: argparse.Namespace) -> list[release.Gate]:
    """The gates promote's flags ask for (none by default)."""
    if args.max_error_rate is None and args.min_agreement is None:
        return []
    if _vertex(args):
        raise release.ReleaseError("--max-error-rate/--min-agreement measure a TF Serving server (--server); "
                                   "gate a Vertex endpoint on its own monitoring")
    if not args.server:
        raise release.ReleaseError("--max-error-rate/--min-agreement need --server HOST:PORT (the REST port of "
                                   "the server running the canary)")
    gates = []
    if args.max_error_rate is not None:
        gates.append(release.error_rate_gate(args.server, args.max_error_rate, args.min_requests))
    if args.min_agreement is not None:
        images = dataset.read_split(str(args.data_dir), dataset.TEST).images[:args.agreement_images]
        gates.append(release.agreement_gate(args.server, images, args.min_agreement))
    return gates


def run(values: settings.Values, parsed: argparse.Namespace) -> int:
    """Prints the release (status) or what changed and the release now; 0. A refusal (a gate that
    missed, a bad version, no canary, no test split for a gate) or a Vertex API error: one line on
    stderr, 2, nothing changed."""
    # The action's resolved settings, read below as attributes like the positional VERSION.
    args = argparse.Namespace(**{**vars(parsed), **values.values})
    errors: tuple[type[BaseException], ...] = (release.ReleaseError, dataset.DatasetError)
    if _vertex(args):
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions

        errors += (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError)
    try:
        if args.action in ("analyze", "auto", "history"):
            for line in _measured(args) if args.action != "history" else _history(args):
                print(line)
            return 0
        target = open_release(args)
        if args.action == "status":
            state = target.status()
        elif args.action == "canary":
            state = (target.start_canary(args.version, busy=args.busy) if isinstance(target, release.FileRelease)
                     else target.start_canary(args.version))
        elif args.action == "promote":
            state = target.promote(promotion_gates(args))
        else:
            state = target.rollback()
        served = release.served_labels(args.server, state.model) if args.server and not _vertex(args) else None
    except errors as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    for note in state.notes:
        print(note)
    for line in state.lines():
        print(line)
    if served is not None:
        print(f"server   {args.server} answers " + ", ".join(
            f"{label}={'none' if version is None else version}" for label, version in served.items()))
    return 0
