"""`fmnist release status|canary VERSION|promote|rollback|analyze|auto|history`: canary releases, on
the TF Serving model config that `fmnist serve`, tensorflow_model_server and the Kubernetes
ConfigMap read (version labels stable/canary, serving/release.py), or on a Vertex AI endpoint's
traffic split (serving/vertex_release.py); analyze/auto measure the canary over a bake window and
decide (serving/canary_analysis.py; on an endpoint from Cloud Monitoring and its logging table,
serving/vertex_canary.py). TensorFlow is imported only to replay instances through a Vertex
canary's SavedModel (cli/canary_replay.py); aiplatform only for an endpoint."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from pathlib import Path
from typing import Any

from fmnist import bigquery, dataset, outcomes
from fmnist.errors import one_line
from serving import canary_analysis as analysis
from serving import release
from serving.vertex_canary import REPLAY_INSTANCES


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Registers `release` (with its actions) on the CLI's subparsers object."""
    common = argparse.ArgumentParser(add_help=False)
    target = common.add_argument_group("a model config file (default) or a Vertex AI endpoint")
    target.add_argument("--model-config-file", type=Path, default=Path(release.DEFAULT_CONFIG_FILE),
                        help=f"TF Serving model config to edit (default: {release.DEFAULT_CONFIG_FILE}, where the "
                             "local runner writes it)")
    target.add_argument("--model-name", default=None, help="the model in the config (default: its only one)")
    target.add_argument("--model-base-path", type=Path, default=None,
                        help="where the version directories are on this machine (default: the config's "
                             "base_path; for a new config, serving_model/ beside it)")
    target.add_argument("--server", default=None, metavar="HOST:PORT",
                        help="REST address of the server: status shows the labels it serves; promote's gates, "
                             "analyze and auto measure there")
    target.add_argument("--vertex-endpoint", default=None, metavar="projects/P/locations/R/endpoints/ID",
                        help="release on this Vertex AI endpoint's traffic split instead of a config file")
    target.add_argument("--project", default=None, help="Vertex: project of --endpoint-name")
    target.add_argument("--region", default=None, help="Vertex: region of --endpoint-name")
    target.add_argument("--endpoint-name", default=None, help="Vertex: the endpoint's display name")
    target.add_argument("--history", default=None, metavar="FILE",
                        help="Vertex: the JSONL release history that promote, rollback and auto append to and "
                             "`history` reads (a config file's is release_history.jsonl beside it)")

    parser = commands.add_parser("release", help="canary releases: stable/canary version labels in a TF Serving "
                                                 "model config, or a Vertex AI endpoint's traffic split")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("status", parents=[common], help="which version is stable, which the canary")
    canary = actions.add_parser("canary", parents=[common],
                                help="serve VERSION as the canary beside stable (stable directly if there is none)")
    canary.add_argument("version", help="a version directory's number (Vertex: a deployed model ID)")
    canary.add_argument("--traffic", type=int, default=None,
                        help="Vertex only: the canary's percent of the endpoint's traffic (default 10); with a "
                             "config file the share is `fmnist serve --canary-traffic`")
    canary.add_argument("--busy", choices=release.BUSY_POLICIES, default=release.REPLACE,
                        help="while another canary runs: replace it (default; it is recorded as superseded) or "
                             "keep it and refuse")
    promote = actions.add_parser("promote", parents=[common], help="make the canary stable and drop the old stable")
    gates = promote.add_argument_group("gates, measured on --server before anything changes")
    gates.add_argument("--max-error-rate", type=float, default=None, metavar="FRACTION",
                       help="refuse if the canary answered more than this fraction of its requests with an error "
                            "(from the server's fmnist_serving_requests counters)")
    gates.add_argument("--min-requests", type=int, default=100,
                       help="refuse the error-rate gate below this many canary requests (default 100)")
    gates.add_argument("--min-agreement", type=float, default=None, metavar="FRACTION",
                       help="refuse if canary and stable predict the same class on less than this fraction of "
                            "the test images")
    gates.add_argument("--agreement-images", type=int, default=200, help="test images for --min-agreement")
    gates.add_argument("--data-dir", type=Path, default=Path("data/raw"),
                       help="where the official test split is, for --min-agreement (default data/raw)")
    actions.add_parser("rollback", parents=[common], help="drop the canary; stable serves everything")
    measured = argparse.ArgumentParser(add_help=False)
    _add_analysis_arguments(measured)
    actions.add_parser("analyze", parents=[common, measured],
                       help="measure the canary against stable on --server over a bake window: each check, "
                            "then the decision (changes nothing)")
    auto = actions.add_parser("auto", parents=[common, measured],
                              help="analyze, then promote (every check passes) or roll back (any fails); "
                                   "recorded in the release history")
    auto.add_argument("--on-inconclusive", choices=analysis.ON_INCONCLUSIVE, default="keep",
                      help="too little evidence when the bake ends: keep the canary (default), promote or roll "
                           "back")
    history = actions.add_parser("history", parents=[common],
                                 help="every label move and automatic decision, oldest first")
    history.add_argument("--last", type=int, default=None, metavar="N", help="only the newest N entries")
    parser.set_defaults(handler=run)
    return parser


def _add_analysis_arguments(parser: argparse.ArgumentParser) -> None:
    vertex = parser.add_argument_group("a Vertex endpoint's evidence (serving/vertex_canary.py)")
    vertex.add_argument("--bigquery-table", default=None, metavar="PROJECT.DATASET.TABLE",
                        help="the endpoint's request-response logging table: each version's predicted classes, "
                             "and stable's answers that the canary's SavedModel replays for agreement")
    vertex.add_argument("--replay-instances", type=int, default=REPLAY_INSTANCES,
                        help="stable's logged instances the canary answers again, at most "
                             f"(default {REPLAY_INSTANCES})")
    local = parser.add_argument_group("labelled answers (issue #24), for the accuracy check")
    local.add_argument("--requests", type=Path, default=None, metavar="LOGDIR",
                       help="the server's request log directory (fmnist serve --log-requests): the calls logged "
                            "during the bake, joined with the labels `fmnist feedback` stored there")
    bake = parser.add_argument_group("the bake window")
    bake.add_argument("--bake-seconds", type=float, default=analysis.Bake.seconds,
                      help=f"measure at most this long (default {analysis.Bake.seconds:g})")
    bake.add_argument("--bake-requests", type=int, default=analysis.Bake.requests,
                      help="stop once the canary has run this many requests (its own and shadow ones); fewer "
                           f"when the time is up is inconclusive (default {analysis.Bake.requests})")
    checks = parser.add_argument_group("thresholds (defaults measured: README, Releases)")
    checks.add_argument("--max-error-rate", type=float, default=analysis.MAX_ERROR_RATE, metavar="FRACTION",
                        help=f"canary non-OK requests over all it ran (default {analysis.MAX_ERROR_RATE:g})")
    checks.add_argument("--max-p99-ratio", type=float, default=analysis.MAX_P99_RATIO,
                        help=f"canary p99 latency over stable's (default {analysis.MAX_P99_RATIO:g}) ...")
    checks.add_argument("--p99-floor-ms", type=float, default=analysis.P99_FLOOR_SECONDS * 1000,
                        help="... or at most this, whichever is larger, so that tiny latencies do not flap "
                             f"(default {analysis.P99_FLOOR_SECONDS * 1000:g})")
    checks.add_argument("--min-agreement", type=float, default=analysis.MIN_AGREEMENT, metavar="FRACTION",
                        help="shadow instances on which the canary predicts stable's class "
                             f"(default {analysis.MIN_AGREEMENT:g})")
    checks.add_argument("--max-class-divergence", type=float, default=analysis.MAX_CLASS_DIVERGENCE,
                        help="Jensen-Shannon divergence of the predicted-class distributions, base 2 "
                             f"(default {analysis.MAX_CLASS_DIVERGENCE:g})")
    checks.add_argument("--max-accuracy-drop", type=float, default=analysis.MAX_ACCURACY_DROP, metavar="FRACTION",
                        help="canary accuracy on labelled answers may trail stable's by this much "
                             f"(default {analysis.MAX_ACCURACY_DROP:g})")
    checks.add_argument("--min-labelled", type=int, default=outcomes.MIN_LABELLED,
                        help="labelled answers each version needs before accuracy is judged "
                             f"(default {outcomes.MIN_LABELLED})")


def _policy(args: argparse.Namespace) -> tuple[analysis.Policy, analysis.Bake]:
    return (analysis.Policy(max_error_rate=args.max_error_rate, max_p99_ratio=args.max_p99_ratio,
                            p99_floor_seconds=args.p99_floor_ms / 1000, min_agreement=args.min_agreement,
                            max_class_divergence=args.max_class_divergence,
                            max_accuracy_drop=args.max_accuracy_drop, min_labelled=args.min_labelled),
            analysis.Bake(seconds=args.bake_seconds, requests=args.bake_requests))


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
    labelled: analysis.Outcomes = ()
    if args.requests is not None:
        if _vertex(args):
            raise release.ReleaseError("--requests reads a `fmnist serve` request log; a Vertex endpoint's labels "
                                       "are judged by `fmnist monitor --bigquery-labels-table`")
        from cli.labelled import from_request_log

        labelled = from_request_log(args.requests)
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
    from serving.vertex_canary import POLL_SECONDS, VertexSource

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
        from serving.vertex_release import DEFAULT_CANARY_TRAFFIC, VertexRelease, open_endpoint

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


def run(args: argparse.Namespace) -> int:
    """Prints the release (status) or what changed and the release now; 0. A refusal (a gate that
    missed, a bad version, no canary, no test split for a gate) or a Vertex API error: one line on
    stderr, 2, nothing changed."""
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
