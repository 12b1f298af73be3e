"""`fmnist predictions export`: the BulkInferrer's latest predictions (found through ML Metadata,
or a given inference_result directory) as CSV or JSON Lines rows `id, class_id, class, probability`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cli.commands import MetadataSettings, command, settings_handler
from fmnist import settings, tf_env
from fmnist.settings import setting

FORMATS = ("csv", "jsonl")  # reports.predictions.FORMATS, without importing TF for --help


@dataclass(frozen=True)
class ExportSettings(MetadataSettings):
    """Settings of `fmnist predictions export`."""

    ENV_SCOPE: ClassVar[str] = "PREDICTIONS_"

    format: str = setting(None, "file format of the rows", choices=FORMATS, required=True)
    out: Path | None = setting(None, "file to write (replaced whole, never half-written)", required=True)
    inference_result: str | None = setting(None, "read this BulkInferrer inference_result directory instead of "
                                                 "asking ML Metadata")


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Registers `predictions` (action: export) on the CLI's subparsers object."""
    parser = command(commands, "predictions", "export batch inference results (the pipeline's BulkInferrer)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = command(actions, "export", "write the latest BulkInferrer predictions as CSV or JSON Lines",
                     "Rows `id, class_id, class, probability`, from the run ML Metadata names or a given "
                     "inference_result directory.")
    settings.add_arguments(export, ExportSettings)
    export.set_defaults(handler=settings_handler((ExportSettings,), run))
    return parser


def run(values: settings.Values, args: argparse.Namespace) -> int:
    """Writes the rows and prints their count and the path: 0. No BulkInferrer output, or a log
    that cannot be read: one line on stderr, 1, nothing written."""
    options: ExportSettings = values.build(ExportSettings)
    tf_env.configure()
    from reports import predictions

    try:
        directory = options.inference_result or predictions.latest_inference_result(
            str(options.metadata_file()), options.pipeline_name)
        count = predictions.write_predictions(predictions.read_predictions(directory), options.out, options.format)
    except (predictions.PredictionsNotFoundError, predictions.PredictionsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{count:,} predictions from {directory} written to {options.out}")
    return 0
