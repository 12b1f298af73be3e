"""`fmnist predictions export`: the BulkInferrer's latest predictions (found through ML Metadata,
or a given inference_result directory) as CSV or JSON Lines rows `id, class_id, class, probability`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fmnist import tf_env

FORMATS = ("csv", "jsonl")  # reports.predictions.FORMATS, without importing TF for --help


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Registers `predictions` (action: export) on the CLI's subparsers object."""
    parser = commands.add_parser("predictions", help="batch inference results (the pipeline's BulkInferrer)")
    actions = parser.add_subparsers(dest="action", required=True)
    export = actions.add_parser("export", help="write the latest BulkInferrer predictions as CSV or JSON Lines")
    export.add_argument("--pipeline-root", type=Path, default=Path("outputs/fashion-mnist/pipeline_root"),
                        help="the local runner's pipeline root (default: outputs/fashion-mnist/pipeline_root)")
    export.add_argument("--metadata", type=Path, default=None,
                        help="ML Metadata SQLite file (default: metadata.sqlite next to the pipeline root)")
    export.add_argument("--pipeline-name", default=None, help="needed only if the store records several")
    export.add_argument("--inference-result", default=None, metavar="DIR",
                        help="read this BulkInferrer inference_result directory instead of asking ML Metadata")
    export.add_argument("--format", choices=FORMATS, required=True)
    export.add_argument("--out", type=Path, required=True, help="file to write (replaced whole, never half-written)")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Writes the rows and prints their count and the path: 0. No BulkInferrer output, or a log
    that cannot be read: one line on stderr, 1, nothing written."""
    tf_env.configure()
    from reports import predictions
    from tfx_pipeline.config import METADATA_FILE

    try:
        directory = args.inference_result or predictions.latest_inference_result(
            str(args.metadata or args.pipeline_root.resolve().parent / METADATA_FILE), args.pipeline_name)
        count = predictions.write_predictions(predictions.read_predictions(directory), args.out, args.format)
    except (predictions.PredictionsNotFoundError, predictions.PredictionsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{count:,} predictions from {directory} written to {args.out}")
    return 0
