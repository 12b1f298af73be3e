"""`fmnist feedback FILE --requests LOGDIR` and `fmnist land --from-feedback LOGDIR`: delayed
labels (issue #24) stored beside the request log, and the labelled logged images landed as a span.

Refusals print one line `error: ...` and exit 2 with nothing written. Both read the request log
(TensorFlow), so TF loads inside the handlers: `fmnist --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from cli.commands import CommandSettings, command, parse_moment, settings_handler
from fmnist import feedback, settings, tf_env
from fmnist.errors import one_line
from fmnist.settings import setting

REFUSED = 2


@dataclass(frozen=True)
class FeedbackSettings(CommandSettings):
    """Settings of `fmnist feedback FILE`."""

    ENV_SCOPE: ClassVar[str] = "FEEDBACK_"

    requests: Path | None = setting(None, "the request log directory (`fmnist serve --log-requests LOGDIR`)",
                                    required=True)
    retention_days: float = setting(0.0, "after storing, delete label files written more than this many days ago "
                                         "(0: keep all)")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = command(
        commands, "feedback", "store delayed labels (request_id,label[,time] CSV) for logged requests",
        "Checks every row of FILE against the request log and appends the new labels as one new file in "
        "LOGDIR/feedback; refuses the whole file at the first bad row. `request_id` is ID for a request of one "
        "image, ID#N for image N of several.")
    parser.add_argument("file", type=Path, metavar="FILE", help="CSV request_id,label[,time] (header optional; "
                                                               "time ISO 8601 or epoch seconds)")
    settings.add_arguments(parser, FeedbackSettings)
    parser.set_defaults(handler=settings_handler((FeedbackSettings,), main))


def _run(action: Callable[[], str]) -> int:
    """Prints what `action` returns (exit 0), or the one line of what these commands refuse for (exit 2)."""
    tf_env.configure()
    import tensorflow as tf

    from fmnist.dataset import DatasetError
    from monitoring.examples import RequestLogError

    try:
        print(action())
    except (feedback.FeedbackError, RequestLogError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return REFUSED
    except tf.errors.OpError as err:
        print(f"error: unreadable request log record ({one_line(err.message)})", file=sys.stderr)
        return REFUSED
    return 0


def _logs(log_dir: Path, since: float | None = None, until: float | None = None) -> Iterator[Any]:
    from serving.server.request_log import read_request_logs

    if not log_dir.is_dir():
        raise feedback.FeedbackError(f"{log_dir}: no such request log directory")
    return read_request_logs(str(log_dir), since, until)


def store(source: Path, log_dir: Path, retention_days: float = 0.0) -> str:
    """Stores the delayed labels of `source` for the requests of `log_dir`; returns the line to
    print. FeedbackError (one line, FILE:LINE first) when refused: then nothing is written."""
    from monitoring.labelled import request_index

    if not source.is_file():
        raise feedback.FeedbackError(f"{source}: no such file")
    rows = feedback.parse_label_file(source)  # syntax first: a broken file costs no log read
    done = feedback.store_labels(rows, source, log_dir, request_index(_logs(log_dir)))
    removed = feedback.remove_older_than(log_dir, retention_days)
    where = done.path if done.path is not None else f"{feedback.feedback_dir(log_dir)} (no new file)"
    line = f"{done.stored:,} labels stored ({done.already_known:,} already known) in {where}"
    if removed:
        line += f"; {len(removed)} label file(s) older than {retention_days:g} days deleted"
    return line


def _iso(value: float | None) -> str:
    return "-" if value is None else datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")


def land_from_feedback(log_dir: Path, landing_dir: Path, since: float | None = None, until: float | None = None,
                       span: int | None = None) -> str:
    """Lands the labelled images of the requests logged in [since, until) as the next span (or
    `span`) through fmnist.landing; returns the line to print. Refuses (FeedbackError,
    RequestLogError naming the request, DatasetError) a window without labelled images or an
    image that is not whole grey levels 0..255."""
    import numpy as np

    from fmnist import dataset, landing
    from monitoring.labelled import join

    window = f"requests logged from {_iso(since)} until {_iso(until)}"
    labels = feedback.read_labels(log_dir)
    found = join(_logs(log_dir, since, until), labels) if labels else None
    if found is None or not len(found):
        raise feedback.FeedbackError(f"{log_dir}: no labelled images in the {window}")
    split = dataset.RawSplit(images=found.images.astype(np.int64), labels=found.labels,
                             source=f"{log_dir} (labelled requests)")
    number, target, examples = landing.land_split(split, landing_dir, span)
    skipped = f"; {found.skipped:,} labelled requests without images skipped" if found.skipped else ""
    return (f"landed span {number}: {examples:,} labelled images from {found.requests:,} requests "
            f"({window}) in {target}{skipped}")


def land(log_dir: Path, landing_dir: Path, since: str | None, until: str | None, span: int | None) -> int:
    """`fmnist land --from-feedback LOGDIR`: the handler cli.main's `land` calls for it."""
    try:
        window = parse_moment(since, "since"), parse_moment(until, "until")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return REFUSED
    return _run(lambda: land_from_feedback(log_dir, landing_dir, *window, span))


def main(values: settings.Values, args: argparse.Namespace) -> int:
    options: FeedbackSettings = values.build(FeedbackSettings)
    if options.retention_days < 0:
        print(f"error: --retention-days: expected a number of days >= 0, got {options.retention_days:g}",
              file=sys.stderr)
        return REFUSED
    return _run(lambda: store(args.file, options.requests, options.retention_days))
