"""`fmnist release status|canary VERSION|promote|rollback`: canary releases, on the TF Serving model
config that `fmnist serve`, tensorflow_model_server and the Kubernetes ConfigMap read (version
labels stable/canary, serving/release.py), or on a Vertex AI endpoint's traffic split
(serving/vertex_release.py). TensorFlow is never imported; aiplatform only for an endpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fmnist import dataset
from serving import release


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
                        help="REST address of the server: status shows the labels it serves; promote's gates "
                             "measure there")
    target.add_argument("--vertex-endpoint", default=None, metavar="projects/P/locations/R/endpoints/ID",
                        help="release on this Vertex AI endpoint's traffic split instead of a config file")
    target.add_argument("--project", default=None, help="Vertex: project of --endpoint-name")
    target.add_argument("--region", default=None, help="Vertex: region of --endpoint-name")
    target.add_argument("--endpoint-name", default=None, help="Vertex: the endpoint's display name")

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
    parser.set_defaults(handler=run)
    return parser


def _vertex(args: argparse.Namespace) -> bool:
    return bool(args.vertex_endpoint or args.endpoint_name)


def open_release(args: argparse.Namespace) -> release.Release:
    """The release the arguments name: a Vertex endpoint's, or the model config file's."""
    if _vertex(args):
        from serving.vertex_release import DEFAULT_CANARY_TRAFFIC, VertexRelease, open_endpoint

        endpoint = open_endpoint(args.vertex_endpoint, args.project, args.region, args.endpoint_name)
        traffic = getattr(args, "traffic", None)
        return VertexRelease(endpoint, DEFAULT_CANARY_TRAFFIC if traffic is None else traffic)
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
        target = open_release(args)
        if args.action == "status":
            state = target.status()
        elif args.action == "canary":
            state = target.start_canary(args.version)
        elif args.action == "promote":
            state = target.promote(promotion_gates(args))
        else:
            state = target.rollback()
        served = release.served_labels(args.server, state.model) if args.server and not _vertex(args) else None
    except errors as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    for note in state.notes:
        print(note)
    for line in state.lines():
        print(line)
    if served is not None:
        print(f"server   {args.server} answers " + ", ".join(
            f"{label}={'none' if version is None else version}" for label, version in served.items()))
    return 0
