"""`fmnist monitor`: checks the traffic `fmnist serve --log-requests DIR` (or a Vertex AI
endpoint's request-response logging table, --bigquery-table) logged since the last check for
training/serving skew, a class-prior shift and drift from the previous window (TFDV, the
comparators of schema/schema.pbtxt), and its live accuracy per model version once delayed labels
come back (`fmnist feedback` beside the logs, or --bigquery-labels-table), writes a page and
Prometheus gauges, and exits 3 when an alert fires, so cron, Cloud Scheduler or a Cloud Run job's
failed execution can page someone.

Exit codes: 0 no alert; 3 alert; 1 an error (one `error: ...` line: no calls in the window, an
unreadable or malformed record, no training statistics for the version); 2 a bad setting.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from cli.commands import CommandSettings, command, parse_moment, settings_handler
from fmnist import bigquery, feedback, outcomes, paths, settings, tf_env
from fmnist.errors import one_line
from fmnist.settings import setting
from tfx_pipeline.config import METADATA_FILE, SCHEMA_DIR, SCHEMA_FILE

ALERT_EXIT = 3
MONITORING_DIR = "monitoring"  # the default --out, beside the pipeline root
LOG_FILE = "monitor.log"  # in --out: what the libraries print, and tracebacks


@dataclass(frozen=True)
class MonitorSettings(CommandSettings):
    """What `fmnist monitor` reads, where it writes, and which window it checks."""

    ENV_SCOPE: ClassVar[str] = "MONITOR_"

    requests: Path | None = setting(None, "directory of request logs (fmnist serve --log-requests DIR); or "
                                          "--bigquery-table")
    bigquery_table: str | None = setting(None, "a Vertex AI endpoint's request-response logging table "
                                               "(PROJECT.DATASET.TABLE) to read instead of --requests")
    bigquery_endpoint: str | None = setting(None, "with --bigquery-table: only the rows of this endpoint "
                                                  "(projects/P/locations/R/endpoints/ID)")
    first_window_hours: float = setting(24.0, "with --bigquery-table: how far back the first window reaches "
                                              "when neither a previous window nor --window-start says")
    pipeline_root: Path = setting(paths.DEFAULT_PIPELINE_ROOT,
                                  "the local runner's pipeline root (the store and --out default beside it)")
    metadata: Path | None = setting(None, "ML Metadata SQLite file (default: metadata.sqlite beside the pipeline "
                                          "root): finds the training statistics of the version that answered")
    pipeline_name: str | None = setting(None, "needed only if the store records several pipelines")
    training_statistics: Path | None = setting(None, "training statistics to compare with (FeatureStats.pb or "
                                                     "its Split-train folder) instead of ML Metadata's, e.g. "
                                                     "on Vertex AI")
    schema: Path | None = setting(None, "schema with the skew/drift comparators (default: the pipeline's "
                                        "schema/schema.pbtxt)")
    out: Path | None = setting(None, "state directory: one folder per window (default: monitoring/ beside the "
                                     "pipeline root)")
    window_start: str | None = setting(None, "window start, ISO 8601 or epoch seconds (default: the end of the "
                                             "previous window, or the first call logged)")
    window_end: str | None = setting(None, "window end (exclusive), ISO 8601 or epoch seconds (default: now)")
    prometheus_textfile: Path | None = setting(None, "also write the gauges here (node_exporter's textfile "
                                                     "collector directory, *.prom)")
    pushgateway: str | None = setting(None, "also push the gauges to this Prometheus Pushgateway (host:port or URL)")
    bigquery_labels_table: str | None = setting(None, "with --bigquery-table: the delayed labels table "
                                                      "(PROJECT.DATASET.TABLE: request_id STRING, label INT64, "
                                                      "time TIMESTAMP) for live accuracy")
    min_live_accuracy: float = setting(outcomes.MIN_LIVE_ACCURACY, "live accuracy: alert when a version's "
                                                                   "accuracy on a window's labelled images is below")
    min_labelled: int = setting(outcomes.MIN_LABELLED, "live accuracy: fewest labelled images of a version in a "
                                                       "window before its accuracy is judged (else n/a)")
    max_confusion_growth: float = setting(outcomes.MAX_CONFUSION_GROWTH, "live accuracy: alert when a confusion "
                                          "pair's share of the labelled images grew by more than this since the "
                                          "previous window")
    relabel_days: float = setting(7.0, "live accuracy: judge again the windows that ended this many days back, "
                                       "as their late labels come in")
    min_requests: int = setting(1000, "fewest logged images a window needs: the thresholds were measured on "
                                      "1,000-image windows; below, nothing is recorded and the next run waits "
                                      "for more")


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Registers `monitor` on the CLI's subparsers object."""
    parser = command(commands, "monitor", "check logged requests for skew, class-prior shift and drift (TFDV) "
                                          f"and live accuracy; exits {ALERT_EXIT} on an alert",
                     __doc__.split("\n\n", 1)[1])
    settings.add_arguments(parser, MonitorSettings)
    parser.set_defaults(handler=settings_handler((MonitorSettings,), main))


def state_dir(options: MonitorSettings) -> Path:
    """Where windows are recorded: --out, else monitoring/ beside the pipeline root."""
    return options.out or options.pipeline_root.resolve().parent / MONITORING_DIR


def monitor(options: MonitorSettings, say=print) -> int:
    """Checks one window; returns 0, or ALERT_EXIT when it alerted. Raises on bad input."""
    from serving.protocol.errors import ServingError
    from serving.server.request_log import read_request_logs, request_log_files

    requests = options.requests
    if (requests is None) == (options.bigquery_table is None):
        raise ValueError("give one source of logged calls: --requests DIR or --bigquery-table PROJECT.DATASET.TABLE")
    if options.bigquery_labels_table is not None and options.bigquery_table is None:
        raise ValueError("--bigquery-labels-table joins with a Vertex logging table: give --bigquery-table too")
    if options.bigquery_table is not None:
        bigquery.check_table_id(options.bigquery_table)
        if options.bigquery_labels_table is not None:
            bigquery.check_table_id(options.bigquery_labels_table)
    elif not requests.is_dir():
        raise FileNotFoundError(f"no request log directory at {requests}")
    elif not request_log_files(str(requests)):
        raise FileNotFoundError(f"no closed request log files (requests-*.tfrecord) in {requests}")
    metadata = options.metadata or options.pipeline_root.resolve().parent / METADATA_FILE
    if options.training_statistics is None and not metadata.is_file():
        raise FileNotFoundError(f"no ML Metadata store at {metadata} (pass --metadata, or --training-statistics)")
    if options.training_statistics is not None and not options.training_statistics.exists():
        raise FileNotFoundError(f"no training statistics at {options.training_statistics}")
    out = state_dir(options)
    end = parse_moment(options.window_end, "window_end") or time.time()
    start = parse_moment(options.window_start, "window_start")

    thresholds = _thresholds(options)
    tf_env.configure()
    import tensorflow as tf
    import tensorflow_data_validation as tfdv

    from monitoring import job, live
    from monitoring.training_stats import training_statistics

    if start is None:
        previous = job.previous_window(out)
        start = previous.end if previous is not None else None
    if start is None and options.bigquery_table is not None:  # a table has no "first call" to start from
        start = end - options.first_window_hours * 3600
    if start is not None and start >= end:
        raise ValueError(f"empty window: start {job.iso(start)} is not before end {job.iso(end)}")
    schema = tfdv.load_schema_text(str(options.schema or Path(SCHEMA_DIR) / SCHEMA_FILE))
    try:
        summary = job.run_window(
            read_request_logs(str(requests), start, end) if requests is not None else
            _bigquery_logs(options, start, end), start, end, out, schema,
            lambda version: training_statistics(version, str(metadata), options.pipeline_name,
                                                options.training_statistics),
            min_images=options.min_requests,
            textfiles=(options.prometheus_textfile,) if options.prometheus_textfile else (),
            pushgateway=options.pushgateway, labels_for=_labels_source(options), thresholds=thresholds,
            relabel_days=options.relabel_days)
    except tf.errors.OpError as err:
        raise OSError(f"unreadable request log record in {requests}: {err.message}") from None
    except ServingError as err:  # a logging table row whose payload is not :predict instances
        raise ValueError(f"{options.bigquery_table}: {err}") from None
    versions = ", ".join(f"{v} ({n} images)" for v, n in summary.versions.items())
    say(f"window   {summary.start_iso} .. {summary.end_iso}: {summary.requests} calls, {summary.images} images")
    say(f"version  {versions}; training statistics of {summary.version}: {summary.training_statistics}")
    for score in summary.scores:
        say(f"{score['check']:<12} {score['feature']:<6} {score['measure']} {score['value']:.4f} "
            f"{'>' if score['alert'] else '<='} {score['threshold']:g}  {'ALERT' if score['alert'] else 'ok'}")
    if summary.previous is None:
        say("drift        first window: nothing to compare with")
    for problem in summary.problems:
        say(f"anomaly  {problem}")
    for figures in live.judge(summary.name, live.tallies_from_json(summary.live), None, thresholds):
        say(f"live     version {figures.version}: {figures.tally.images} images, {figures.tally.labelled} labelled "
            f"({figures.tally.labelled_share:.1%}), accuracy {figures.accuracy_text}")
    for alert in summary.live_alerts:
        say(f"live     ALERT {alert}")
    say(f"verdict  {'ALERT' if summary.alert else 'ok'}")
    say(f"page     {summary.page}")
    return ALERT_EXIT if summary.alert else 0


def _thresholds(options: MonitorSettings) -> Any:
    from monitoring.live import LiveThresholds

    try:
        return LiveThresholds(options.min_live_accuracy, options.min_labelled, options.max_confusion_growth)
    except ValueError as err:
        raise settings.SettingsError(str(err)) from None


def _labels_source(options: MonitorSettings) -> Any:
    """(start, end) -> {key: Label}: the feedback stored beside the request logs (all of it: the
    files are small and the join keeps what the windows hold), or the BigQuery labels table joined
    with the logging table over [start, end); None without a labels source."""
    if options.requests is not None:
        return lambda start, end: feedback.read_labels(options.requests)
    if options.bigquery_labels_table is None:
        return None

    def from_bigquery(start: float, end: float) -> dict[str, feedback.Label]:
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions

        from cli import bq_load

        table = options.bigquery_labels_table
        try:
            return bigquery.read_labels(table, options.bigquery_table, datetime.fromtimestamp(start, UTC),
                                        datetime.fromtimestamp(end, UTC),
                                        bq_load.make_client(bigquery.check_table_id(table)), options.bigquery_endpoint)
        except (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError) as err:
            raise OSError(f"{table}: {err}") from None
    return from_bigquery


def _bigquery_logs(options: MonitorSettings, start: float, end: float) -> Iterator[Any]:
    """The window's rows of the Vertex endpoint's logging table, as the PredictionLogs `fmnist serve`
    writes (serving.server.request_log.rows_to_prediction_logs). BigQuery's errors become one OSError line."""
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    from cli import bq_load
    from serving.server.request_log import rows_to_prediction_logs

    table = options.bigquery_table
    try:
        client = bq_load.make_client(bigquery.check_table_id(table))
        rows = bigquery.read_request_log_rows(table, datetime.fromtimestamp(start, UTC),
                                              datetime.fromtimestamp(end, UTC), client, options.bigquery_endpoint)
    except (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError) as err:
        raise OSError(f"{table}: {err}") from None
    return rows_to_prediction_logs(rows)


def main(values: settings.Values, args: argparse.Namespace) -> int:
    try:
        options: MonitorSettings = values.build(MonitorSettings)
    except settings.SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from tfx_pipeline.progress import stderr_to

    log = state_dir(options) / LOG_FILE
    try:
        with stderr_to(log):  # TensorFlow's C++ lines and library warnings: the log, not the console
            return monitor(options)
    except settings.SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError, LookupError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
