"""Production data in BigQuery: one table of labelled examples, appended to span by span.

Table layout (fixed): `span INT64 REQUIRED`, `label INT64 REQUIRED`, `image ARRAY<INT64>` (a
REPEATED INT64 field of the 784 grey levels 0..255, row-major 28x28), one row per example. The
`image`/`label` columns are the features TFX's BigQueryExampleGen turns into the same int64 lists
the file path's ExampleGen writes, so everything downstream reads either source alike.

`load` is the BigQuery counterpart of `fmnist.landing.land`: the caller reads and checks the
source with `landing.read_source` (the runner's pre-flight checks), and a span is refused unless
it is newer than every span in the table. One load job is atomic (all rows or none, no bad
records allowed), so a run never sees half a span. Unlike landing there is no lock: two loads
started at the same moment could both pass the newest-span check.

google.cloud.bigquery (which pulls in pandas and pyarrow) is imported inside the functions, so
importing this module, and so starting the `fmnist` CLI, stays cheap.
"""

from __future__ import annotations

import datetime
import json
import re
import tempfile
from typing import TYPE_CHECKING, Any

from fmnist import dataset, features, feedback

if TYPE_CHECKING:
    from google.cloud import bigquery

SPAN_COLUMN = "span"
SECONDS_PER_DAY = 86_400
# TFX turns span N into the timestamps of day N after 1970-01-01 (UTC); past 9999-12-30 its
# datetime arithmetic overflows, so no larger span can ever be read back.
MAX_SPAN = (datetime.date.max - datetime.date(1970, 1, 1)).days - 1

# PROJECT.DATASET.TABLE; a domain-scoped project (example.com:project) holds dots itself.
_TABLE_ID = re.compile(r"^(?P<project>[a-z][a-z0-9.:-]*[a-z0-9])\.(?P<dataset>\w+)\.(?P<table>[\w-]+)$")


def check_table_id(table: str) -> str:
    """The project of a `PROJECT.DATASET.TABLE` id; DatasetError for anything else (the id is
    pasted into SQL between backquotes, so nothing that could close them gets through)."""
    match = _TABLE_ID.match(table)
    if not match:
        raise dataset.DatasetError(f"{table!r}: expected a BigQuery table id PROJECT.DATASET.TABLE")
    return match["project"]


def table_schema() -> list[bigquery.SchemaField]:
    """The table's columns, as the load job declares them (and creates the table with)."""
    from google.cloud import bigquery

    return [
        bigquery.SchemaField(SPAN_COLUMN, "INT64", mode="REQUIRED",
                             description="span number: loads append newer spans, ExampleGen reads one"),
        bigquery.SchemaField(features.LABEL_KEY, "INT64", mode="REQUIRED",
                             description="class id 0..9, as in fmnist.features.CLASS_NAMES"),
        bigquery.SchemaField(features.IMAGE_KEY, "INT64", mode="REPEATED",
                             description=f"{features.NUM_PIXELS} grey levels 0..255, row-major "
                                         f"{features.IMAGE_HEIGHT}x{features.IMAGE_WIDTH}"),
    ]


def query_for_span(table: str) -> str:
    """The BigQueryExampleGen query: `image` and `label` of the one span the run resolves.

    TFX substitutes no `{SPAN}` in queries ({SPAN} is a file-pattern spec, filled only by the
    file-based driver). For a query, tfx.components.example_gen.driver.QueryBasedDriver (through
    input_processor.QueryBasedInputProcessor.get_pattern_for_span_version) calls
    tfx.components.example_gen.utils.get_query_for_span(pattern, span), which replaces the text
    `@span_begin_timestamp` by the epoch seconds of day `span` after 1970-01-01 UTC, i.e.
    span * 86400 (plus `@span_end_timestamp` and `@span_yyyymmdd_utc`). The span is
    RangeConfig.static_range's start_span_number (0 without a RangeConfig; a rolling range is
    refused for queries). So `DIV(@span_begin_timestamp, 86400)` is the span number again.
    """
    check_table_id(table)
    return (f"SELECT {features.IMAGE_KEY}, {features.LABEL_KEY} FROM `{table}` "
            f"WHERE {SPAN_COLUMN} = DIV(@span_begin_timestamp, {SECONDS_PER_DAY})")


def load_job_config() -> bigquery.LoadJobConfig:
    """Append newline-delimited JSON rows with the table schema (creating the table on the first
    load); no bad record is allowed, so a job loads a span whole or not at all."""
    from google.cloud import bigquery

    return bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        schema=table_schema(),
        write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
        create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
    )


def max_span(table: str, client: Any) -> int | None:
    """The newest span in the table; None when the table does not exist yet or is empty."""
    from google.api_core import exceptions

    check_table_id(table)
    try:
        rows = list(client.query(f"SELECT MAX({SPAN_COLUMN}) FROM `{table}`").result())
    except exceptions.NotFound:  # the first load creates the table (a missing dataset fails the load)
        return None
    return None if not rows or rows[0][0] is None else int(rows[0][0])


def next_span(table: str, client: Any) -> int:
    """The span number after the table's newest (1 for a new or empty table)."""
    newest = max_span(table, client)
    return 1 if newest is None else newest + 1


def write_ndjson(split: dataset.RawSplit, span: int, out: Any) -> None:
    """One JSON object per example, `{"span": S, "label": L, "image": [784 ints]}`, to a binary stream."""
    for image, label in zip(split.images.tolist(), split.labels.tolist(), strict=True):
        row = {SPAN_COLUMN: span, features.LABEL_KEY: label, features.IMAGE_KEY: image}
        out.write(json.dumps(row, separators=(",", ":")).encode("ascii") + b"\n")


def load(split: dataset.RawSplit, table: str, span: int, client: Any) -> int:
    """Appends `split` to `table` as span `span`, which must be newer than every span there.
    Returns the rows loaded. Raises DatasetError (then nothing is loaded) for a bad table id,
    values outside the schema, or a span that is not newer; google.api_core errors as BigQuery
    reports them."""
    check_table_id(table)
    dataset.check_split(split)
    if not len(split):
        raise dataset.DatasetError(f"{split.source or 'the split'}: no examples to load")
    if span > MAX_SPAN:
        raise dataset.DatasetError(f"{table}: span {span} is past {MAX_SPAN}, the largest TFX can read back")
    newest = max_span(table, client)
    if span <= (0 if newest is None else newest):
        latest = "holds no span yet (spans start at 1)" if newest is None else f"already holds span {newest}"
        raise dataset.DatasetError(f"{table}: span {span} is not newer than the table's latest; it {latest}")
    with tempfile.TemporaryFile(prefix=f"fmnist-span-{span}-", suffix=".ndjson") as rows:
        write_ndjson(split, span, rows)
        rows.flush()
        job = client.load_table_from_file(rows, table, rewind=True, job_config=load_job_config(),
                                          job_id_prefix=f"fmnist_span_{span}_")
        job.result()  # waits; raises the job's error
    # A load job that ends without error loaded every row (no bad records are allowed).
    return len(split) if job.output_rows is None else int(job.output_rows)


# -- Vertex AI endpoint request-response logging ------------------------------------------------
# The columns Vertex writes (deploy/README.md#request-logging-fmnist-serve---log-requests);
# serving.server.request_log.rows_to_prediction_logs turns such rows into PredictionLogs.
REQUEST_LOG_COLUMNS = ("endpoint", "deployed_model_id", "logging_time", "request_id", "request_payload",
                       "response_payload")


def request_log_query(table: str, endpoint: str | None = None) -> str:
    """The query for one window of a Vertex endpoint's request-response logging table: rows with
    @start <= logging_time < @end (TIMESTAMP query parameters), oldest first, optionally of one
    endpoint (@endpoint). Parameters, never pasted values: only the checked table id is in the text."""
    check_table_id(table)
    where = "logging_time >= @start AND logging_time < @end"
    if endpoint:
        where += " AND endpoint = @endpoint"
    return f"SELECT {', '.join(REQUEST_LOG_COLUMNS)} FROM `{table}` WHERE {where} ORDER BY logging_time"


def _check_window(start: datetime.datetime, end: datetime.datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise dataset.DatasetError(f"request log window {start} .. {end}: give times with a time zone (UTC)")
    if end <= start:
        raise dataset.DatasetError(f"request log window {start.isoformat()} .. {end.isoformat()} is empty")


def read_request_log_rows(table: str, start: datetime.datetime, end: datetime.datetime, client: Any,
                          endpoint: str | None = None) -> list[dict[str, Any]]:
    """The logged calls of [start, end) as dicts keyed by REQUEST_LOG_COLUMNS (aware datetimes, UTC).
    Raises DatasetError for a bad table id or an empty/negative window; google.api_core errors
    (NotFound, Forbidden, ...) as BigQuery reports them."""
    from google.cloud import bigquery as bq

    _check_window(start, end)
    parameters = [bq.ScalarQueryParameter("start", "TIMESTAMP", start),
                  bq.ScalarQueryParameter("end", "TIMESTAMP", end)]
    if endpoint:
        parameters.append(bq.ScalarQueryParameter("endpoint", "STRING", endpoint))
    job = client.query(request_log_query(table, endpoint), job_config=bq.QueryJobConfig(query_parameters=parameters))
    return [dict(zip(REQUEST_LOG_COLUMNS, row, strict=True)) for row in job.result()]


# -- delayed labels (issue #24) -------------------------------------------------------------------
# The labels table: `request_id STRING` (the logging table's request_id as text; `ID#N` for image N of
# a request of several, as fmnist/feedback.py keys them), `label INT64`, `time TIMESTAMP` (nullable).
LABEL_COLUMNS = ("request_id", "label", "time")


def labels_query(labels_table: str, log_table: str, endpoint: str | None = None) -> str:
    """The labels of the calls logged in [@start, @end) (of @endpoint when given): the labels table
    joined with the endpoint's logging table on the request id (the logging table's NUMERIC id as
    text; the part before `#` of an image key). Only the two checked table ids are in the text."""
    check_table_id(labels_table)
    check_table_id(log_table)
    where = "logged.logging_time >= @start AND logged.logging_time < @end"
    if endpoint:
        where += " AND logged.endpoint = @endpoint"
    return (f"SELECT labels.request_id, labels.label, labels.time FROM `{labels_table}` AS labels "
            f"JOIN `{log_table}` AS logged "
            f"ON SPLIT(labels.request_id, '{feedback.KEY_SEPARATOR}')[OFFSET(0)] = CAST(logged.request_id AS STRING) "
            f"WHERE {where}")


def read_labels(labels_table: str, log_table: str, start: datetime.datetime, end: datetime.datetime, client: Any,
                endpoint: str | None = None) -> dict[str, feedback.Label]:
    """{key: fmnist.feedback.Label} of the calls `log_table` logged in [start, end) (aware datetimes),
    as fmnist.feedback.read_labels gives them for a request-log directory. Raises DatasetError for a
    bad table id or window, ValueError for a label outside 0..9; google.api_core errors as BigQuery's."""
    from google.cloud import bigquery as bq

    _check_window(start, end)
    parameters = [bq.ScalarQueryParameter("start", "TIMESTAMP", start),
                  bq.ScalarQueryParameter("end", "TIMESTAMP", end)]
    if endpoint:
        parameters.append(bq.ScalarQueryParameter("endpoint", "STRING", endpoint))
    job = client.query(labels_query(labels_table, log_table, endpoint),
                       job_config=bq.QueryJobConfig(query_parameters=parameters))
    labels = {}
    for key, label, moment in job.result():
        if not 0 <= int(label) < features.NUM_CLASSES:
            raise ValueError(f"{labels_table}: label {label} of {key!r} is not a class id within "
                             f"0..{features.NUM_CLASSES - 1}")
        labels[str(key)] = feedback.Label(str(key), int(label), moment.timestamp() if moment is not None else None)
    return labels
