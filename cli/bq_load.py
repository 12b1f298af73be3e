"""`fmnist bq-load`: check new labelled data and append it to the BigQuery table as the next span,
what `fmnist land` does for the file path. The BigQuery client library loads only when the
command runs, and `make_client` is the one place a client is built (tests replace it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fmnist import bigquery, dataset, landing
from fmnist.errors import one_line


def make_client(project: str) -> Any:
    from google.cloud import bigquery as bq

    return bq.Client(project=project)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Registers `bq-load` on the CLI's subparsers object."""
    parser = commands.add_parser("bq-load", help="check labelled data and append it to a BigQuery table as a new span")
    parser.add_argument("source", type=Path, help="a directory: official train IDX-gz files, the Kaggle train CSV, "
                                                  "or one image sub-folder per class name")
    parser.add_argument("--format", choices=landing.SOURCE_KINDS, default=dataset.IDX, help="what the source holds")
    parser.add_argument("--table", required=True, metavar="PROJECT.DATASET.TABLE",
                        help="the table to append to (created with the fmnist schema on the first load)")
    parser.add_argument("--span", type=int, default=None,
                        help="span number (default: the one after the table's newest)")
    parser.add_argument("--project", default=None, help="project that runs the jobs (default: the table's)")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """0 with one line on success; 2 with one line for bad data, a refused span or a BigQuery error."""
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    try:
        project = args.project or bigquery.check_table_id(args.table)
        split = landing.read_source(args.source, args.format)  # checked before anything is sent
        client = make_client(project)
        span = bigquery.next_span(args.table, client) if args.span is None else args.span
        rows = bigquery.load(split, args.table, span, client)
    except (dataset.DatasetError, api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    print(f"loaded {rows:,} examples as span {span} into {args.table}")
    return 0
