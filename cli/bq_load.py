"""`fmnist bq-load`: check new labelled data and append it to the BigQuery table as the next span,
what `fmnist land` does for the file path. The BigQuery client library loads only when the
command runs, and `make_client` is the one place a client is built (tests replace it)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cli.commands import CommandSettings, command, settings_handler
from fmnist import bigquery, dataset, landing, settings
from fmnist.errors import one_line
from fmnist.settings import setting


def make_client(project: str) -> Any:
    from google.cloud import bigquery as bq

    return bq.Client(project=project)


@dataclass(frozen=True)
class BqLoadSettings(CommandSettings):
    """Settings of `fmnist bq-load SOURCE`."""

    ENV_SCOPE: ClassVar[str] = "BQ_LOAD_"

    table: str | None = setting(None, "PROJECT.DATASET.TABLE to append to (created with the fmnist schema on the "
                                      "first load)", required=True)
    format: str = setting(dataset.IDX, "what the source holds", choices=landing.SOURCE_KINDS)
    span: int | None = setting(None, "span number (default: the one after the table's newest)")
    project: str | None = setting(None, "project that runs the jobs (default: the table's)")


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Registers `bq-load` on the CLI's subparsers object."""
    parser = command(commands, "bq-load", "check labelled data and append it to a BigQuery table as a new span",
                     "What `fmnist land` does for the file path. The BigQuery client library loads only when the "
                     "command runs.")
    parser.add_argument("source", type=Path, help="a directory: official train IDX-gz files, the Kaggle train CSV, "
                                                  "or one image sub-folder per class name")
    settings.add_arguments(parser, BqLoadSettings)
    parser.set_defaults(handler=settings_handler((BqLoadSettings,), run))
    return parser


def run(values: settings.Values, args: argparse.Namespace) -> int:
    """0 with one line on success; 2 with one line for bad data, a refused span or a BigQuery error."""
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    options: BqLoadSettings = values.build(BqLoadSettings)
    try:
        project = options.project or bigquery.check_table_id(options.table)
        split = landing.read_source(args.source, options.format)  # checked before anything is sent
        client = make_client(project)
        span = bigquery.next_span(options.table, client) if options.span is None else options.span
        rows = bigquery.load(split, options.table, span, client)
    except (dataset.DatasetError, api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    print(f"loaded {rows:,} examples as span {span} into {options.table}")
    return 0
