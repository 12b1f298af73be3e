"""The BigQuery data path, offline: table schema, load job, query and `fmnist bq-load` against a fake
client that records what would be sent; BigQueryExampleGen constructed (its query resolved by
TFX's own query driver), never run."""

import json
import subprocess
import sys

import numpy as np
import pytest
from google.api_core import exceptions
from google.cloud import bigquery as bq

from cli import bq_load
from cli import main as cli
from fmnist import bigquery, dataset, features, landing

TABLE = "my-project.fmnist.examples"
QUERY = ("SELECT image, label FROM `my-project.fmnist.examples` "
         "WHERE span = DIV(@span_begin_timestamp, 86400)")


class FakeJob:
    def __init__(self, rows=None, error=None, output_rows=None):
        self.rows, self.error, self.output_rows = rows, error, output_rows

    def result(self):
        if self.error is not None:
            raise self.error
        return self.rows


class FakeClient:
    """query() answers MAX(span) with `newest` (NotFound when `missing`); load_table_from_file()
    reads the file as BigQuery would and records it."""

    def __init__(self, newest=None, missing=False, load_error=None):
        self.newest, self.missing, self.load_error = newest, missing, load_error
        self.queries, self.loads = [], []

    def query(self, sql):
        self.queries.append(sql)
        if self.missing:
            raise exceptions.NotFound("Not found: Table my-project:fmnist.examples was not found in location US")
        return FakeJob(rows=[(self.newest,)])

    def load_table_from_file(self, file_obj, destination, **kwargs):
        if kwargs.get("rewind"):
            file_obj.seek(0)
        data = file_obj.read()
        self.loads.append({"destination": destination, "data": data, **kwargs})
        return FakeJob(error=self.load_error, output_rows=data.count(b"\n"))


@pytest.fixture(scope="module")
def sample(sample_dir):
    return landing.read_source(sample_dir, dataset.IDX)


def _rows(load):
    return [json.loads(line) for line in load["data"].decode("ascii").splitlines()]


def test_query_selects_image_and_label_of_the_span_tfx_fills_in():
    assert bigquery.query_for_span(TABLE) == QUERY


@pytest.mark.parametrize("span", [0, 1, 3, 20_000, bigquery.MAX_SPAN])
def test_tfx_query_substitution_turns_the_placeholder_into_the_span(span):
    from tfx.components.example_gen import utils

    filled = utils.get_query_for_span(QUERY, span)
    assert filled == QUERY.replace("@span_begin_timestamp", str(span * 86400))
    divided = int(filled.split("DIV(")[1].split(",")[0]) // 86400  # BigQuery's DIV: integer division
    assert divided == span


def test_max_span_is_the_last_that_tfx_can_turn_into_a_query():
    from tfx.components.example_gen import utils

    with pytest.raises(OverflowError):
        utils.get_query_for_span(QUERY, bigquery.MAX_SPAN + 1)


def test_schema_is_the_fixed_table_layout():
    assert [(f.name, f.field_type, f.mode) for f in bigquery.table_schema()] == [
        ("span", "INT64", "REQUIRED"), ("label", "INT64", "REQUIRED"), ("image", "INT64", "REPEATED")]
    assert all(isinstance(f, bq.SchemaField) for f in bigquery.table_schema())


def test_load_job_appends_newline_delimited_json_with_the_schema():
    config = bigquery.load_job_config()
    assert isinstance(config, bq.LoadJobConfig)
    assert config.source_format == bq.SourceFormat.NEWLINE_DELIMITED_JSON == "NEWLINE_DELIMITED_JSON"
    assert config.write_disposition == bq.WriteDisposition.WRITE_APPEND == "WRITE_APPEND"
    assert config.create_disposition == "CREATE_IF_NEEDED"
    assert config.schema == bigquery.table_schema()
    assert config.time_partitioning is None


def test_load_writes_one_json_row_per_example(sample, sample_dir):
    client = FakeClient(newest=2)
    assert bigquery.load(sample, TABLE, 3, client) == len(sample) == 1000
    assert client.queries == ["SELECT MAX(span) FROM `my-project.fmnist.examples`"]
    (load,) = client.loads
    assert load["destination"] == TABLE
    config = load["job_config"]
    assert (config.source_format, config.write_disposition) == ("NEWLINE_DELIMITED_JSON", "WRITE_APPEND")
    assert config.schema == bigquery.table_schema()
    rows = _rows(load)
    assert len(rows) == len(sample)
    assert all(set(row) == {"span", "label", "image"} and row["span"] == 3 for row in rows)
    assert all(len(row["image"]) == features.NUM_PIXELS for row in rows)
    np.testing.assert_array_equal([row["label"] for row in rows], sample.labels)
    np.testing.assert_array_equal(np.asarray([row["image"] for row in rows]), sample.images)
    # The same grey levels as the raw file, row-major 28x28.
    raw = dataset.read_split(sample_dir, dataset.TRAIN)
    assert rows[7]["image"] == raw.images[7].tolist() and rows[7]["label"] == int(raw.labels[7])


def test_first_load_creates_the_table_as_span_1(sample):
    client = FakeClient(missing=True)
    assert bigquery.next_span(TABLE, client) == 1
    assert bigquery.load(sample, TABLE, 1, client) == 1000
    assert {row["span"] for row in _rows(client.loads[0])} == {1}


@pytest.mark.parametrize(("newest", "span", "message"), [
    (3, 3, "my-project.fmnist.examples: span 3 is not newer than the table's latest; it already holds span 3"),
    (3, 2, "my-project.fmnist.examples: span 2 is not newer than the table's latest; it already holds span 3"),
    (None, 0, "my-project.fmnist.examples: span 0 is not newer than the table's latest; "
              "it holds no span yet (spans start at 1)"),
])
def test_a_span_that_is_not_newer_is_refused_and_nothing_loaded(sample, newest, span, message):
    client = FakeClient(newest=newest)
    with pytest.raises(dataset.DatasetError) as err:
        bigquery.load(sample, TABLE, span, client)
    assert str(err.value) == message
    assert not client.loads


def test_a_span_tfx_cannot_read_back_is_refused(sample):
    client = FakeClient(newest=1)
    with pytest.raises(dataset.DatasetError, match=f"past {bigquery.MAX_SPAN}"):
        bigquery.load(sample, TABLE, bigquery.MAX_SPAN + 1, client)
    assert not client.loads and not client.queries


@pytest.mark.parametrize("table", ["fmnist.examples", "my-project.fmnist.examples`; DROP TABLE x; --",
                                   "My_Project.fmnist.examples", "my-project.fmnist.", ""])
def test_a_bad_table_id_is_refused(table):
    with pytest.raises(dataset.DatasetError, match=r"PROJECT\.DATASET\.TABLE"):
        bigquery.query_for_span(table)


def test_values_outside_the_schema_are_refused_before_anything_is_sent(sample):
    images = sample.images.copy()
    images[5, 9] = 256
    client = FakeClient(newest=0)
    with pytest.raises(dataset.DatasetError, match="image 5, pixel 9 = 256"):
        bigquery.load(dataset.RawSplit(images, sample.labels, sample.source), TABLE, 1, client)
    assert not client.queries and not client.loads


@pytest.fixture
def fake_client(monkeypatch):
    made = []

    def install(**kwargs):
        client = FakeClient(**kwargs)

        def make_client(project):
            made.append(project)
            return client

        monkeypatch.setattr(bq_load, "make_client", make_client)
        return client, made

    return install


def test_cli_loads_the_next_span(sample_dir, fake_client, capsys):
    client, made = fake_client(newest=4)
    assert cli.main(["bq-load", str(sample_dir), "--table", TABLE]) == 0
    assert capsys.readouterr().out == "loaded 1,000 examples as span 5 into my-project.fmnist.examples\n"
    assert made == ["my-project"]  # jobs run in the table's project unless --project says otherwise
    assert {row["span"] for row in _rows(client.loads[0])} == {5}


def test_cli_reads_csv_with_the_land_formats_and_takes_span_and_project(sample, sample_dir, tmp_path,
                                                                         fake_client, capsys):
    with open(tmp_path / dataset.CSV_FILES[dataset.TRAIN], "wb") as out:
        dataset.write_csv_split(sample, out)
    client, made = fake_client(missing=True)
    assert cli.main(["bq-load", str(tmp_path), "--format", "csv", "--table", TABLE, "--span", "7",
                     "--project", "billing-project"]) == 0
    assert capsys.readouterr().out == "loaded 1,000 examples as span 7 into my-project.fmnist.examples\n"
    assert made == ["billing-project"]
    np.testing.assert_array_equal([row["label"] for row in _rows(client.loads[0])], sample.labels)


def test_cli_format_choices_are_those_of_fmnist_land(capsys):
    assert cli.resolved(["bq-load", ".", "--table", TABLE])[1]["format"] == dataset.IDX
    for kind in landing.SOURCE_KINDS:
        assert cli.resolved(["bq-load", ".", "--table", TABLE, "--format", kind])[1]["format"] == kind
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["bq-load", ".", "--table", TABLE, "--format", "parquet"])
    assert f"must be one of {', '.join(landing.SOURCE_KINDS)}" in capsys.readouterr().err
    assert cli.main(["bq-load", "."]) == 2  # --table is required
    assert capsys.readouterr().err == "error: missing --table (FMNIST_BQ_LOAD_TABLE): give a flag, a variable or a " \
                                      "--config file entry\n"


def test_cli_refuses_an_old_span_with_exit_2_and_one_line(sample_dir, fake_client, capsys):
    client, _ = fake_client(newest=4)
    assert cli.main(["bq-load", str(sample_dir), "--table", TABLE, "--span", "4"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("error: my-project.fmnist.examples: span 4 is not newer than the table's latest; "
                            "it already holds span 4\n")
    assert not client.loads


def test_cli_reports_a_bigquery_error_with_exit_2_and_one_line(sample_dir, fake_client, capsys):
    fake_client(newest=1, load_error=exceptions.BadRequest("Error while reading data\nerror message: bad row"))
    assert cli.main(["bq-load", str(sample_dir), "--table", TABLE]) == 2
    err = capsys.readouterr().err
    assert err == "error: 400 Error while reading data error message: bad row\n"


def test_cli_reports_bad_data_with_exit_2_before_contacting_bigquery(tmp_path, fake_client, capsys):
    _, made = fake_client(newest=1)
    (tmp_path / "empty").mkdir()
    assert cli.main(["bq-load", str(tmp_path / "empty"), "--table", TABLE]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "train-images-idx3-ubyte.gz: missing" in err and err.count("\n") == 1
    assert made == []


def test_cli_without_credentials_fails_with_exit_2_and_one_line(sample_dir, monkeypatch, capsys):
    from google.auth import exceptions as auth_exceptions

    def no_credentials(project):
        raise auth_exceptions.DefaultCredentialsError("Your default credentials were not found.\nSee the docs.")

    monkeypatch.setattr(bq_load, "make_client", no_credentials)
    assert cli.main(["bq-load", str(sample_dir), "--table", TABLE]) == 2
    assert capsys.readouterr().err == "error: Your default credentials were not found. See the docs.\n"


def test_the_cli_starts_without_the_bigquery_library():
    code = ("import sys, cli.main; cli.main.build_parser(); "
            "heavy = [m for m in ('google.cloud.bigquery', 'pandas', 'tensorflow', 'tfx') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def _range_config(span):
    from tfx.proto import range_config_pb2

    return range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
        start_span_number=span, end_span_number=span))


def test_example_gen_queries_one_span_and_hash_splits_train_and_eval():
    from tfx.extensions.google_cloud_big_query.example_gen.component import BigQueryExampleGen
    from tfx.proto import example_gen_pb2, range_config_pb2
    from tfx.utils import proto_utils

    from tfx_pipeline.components.bigquery_example_gen import bigquery_example_gen

    component = bigquery_example_gen(TABLE, eval_percent=10, range_config=_range_config(3))
    assert isinstance(component, BigQueryExampleGen)
    props = component.exec_properties
    input_config = proto_utils.json_to_proto(props["input_config"], example_gen_pb2.Input())
    assert [split.pattern for split in input_config.splits] == [QUERY]
    output_config = proto_utils.json_to_proto(props["output_config"], example_gen_pb2.Output())
    assert [(s.name, s.hash_buckets) for s in output_config.split_config.splits] == [
        (dataset.TRAIN, 90), (dataset.EVAL, 10)]
    assert not output_config.split_config.HasField("partition_feature_name")  # the whole example is hashed
    assert proto_utils.json_to_proto(props["range_config"], range_config_pb2.RangeConfig()) == _range_config(3)


@pytest.mark.parametrize(("range_config", "span"), [(_range_config(3), 3), (None, 0)])
def test_tfx_query_driver_fills_the_span_into_the_component_query(range_config, span):
    from tfx.components.example_gen.driver import QueryBasedDriver
    from tfx.proto import example_gen_pb2
    from tfx.utils import proto_utils

    from tfx_pipeline.components.bigquery_example_gen import bigquery_example_gen

    component = bigquery_example_gen(TABLE, eval_percent=10, range_config=range_config)
    resolved = QueryBasedDriver(None).resolve_exec_properties(dict(component.exec_properties), None, None)
    input_config = proto_utils.json_to_proto(resolved["input_config"], example_gen_pb2.Input())
    assert [split.pattern for split in input_config.splits] == [
        f"SELECT image, label FROM `{TABLE}` WHERE span = DIV({span * 86400}, 86400)"]
    assert resolved["span"] == span


def test_example_gen_passes_a_runtime_parameter_range_config_through():
    from tfx.orchestration import data_types

    from tfx_pipeline.components.bigquery_example_gen import bigquery_example_gen

    parameter = data_types.RuntimeParameter(name="range_config", ptype=str)
    component = bigquery_example_gen(TABLE, eval_percent=20, range_config=parameter)
    assert component.exec_properties["range_config"] is parameter


@pytest.mark.parametrize("eval_percent", [0, 100, -5])
def test_example_gen_refuses_an_eval_share_that_leaves_a_split_empty(eval_percent):
    from tfx_pipeline.components.bigquery_example_gen import bigquery_example_gen

    with pytest.raises(ValueError, match="eval_percent"):
        bigquery_example_gen(TABLE, eval_percent=eval_percent)


# -- a Vertex endpoint's request-response logging table, read for the monitoring job ------------
LOG_TABLE = "my-project.fmnist_logs.request_response_logging"


class FakeLogClient:
    """query() records the SQL and its parameters and answers the rows BigQuery would, in column order."""

    def __init__(self, rows):
        self.rows, self.calls = rows, []

    def query(self, sql, job_config=None):
        self.calls.append((sql, {p.name: p.value for p in job_config.query_parameters}))
        return FakeJob(rows=[tuple(row[c] for c in bigquery.REQUEST_LOG_COLUMNS) for row in self.rows])


def _logged_row(image: np.ndarray, moment) -> dict:
    prediction = {"probabilities": [0.1] * 10, "class_id": 3, "class_name": "Dress"}
    return {"endpoint": "projects/1/locations/europe-west4/endpoints/42", "deployed_model_id": "1795711938",
            "logging_time": moment, "request_id": 7,
            "request_payload": [json.dumps(image.reshape(28, 28).tolist())],
            "response_payload": [json.dumps(prediction)]}


def test_request_log_window_is_a_parameterised_query_whose_rows_become_prediction_logs(sample):
    import datetime as dt

    from serving.server import request_log

    start = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)
    end = start + dt.timedelta(hours=1)
    client = FakeLogClient([_logged_row(sample.images[i], start + dt.timedelta(minutes=i)) for i in range(3)])
    rows = bigquery.read_request_log_rows(LOG_TABLE, start, end, client, endpoint="endpoints/42")
    sql, parameters = client.calls[0]
    assert sql == ("SELECT endpoint, deployed_model_id, logging_time, request_id, request_payload, response_payload "
                   f"FROM `{LOG_TABLE}` WHERE logging_time >= @start AND logging_time < @end "
                   "AND endpoint = @endpoint ORDER BY logging_time")
    assert parameters == {"start": start, "end": end, "endpoint": "endpoints/42"}
    logs = list(request_log.rows_to_prediction_logs(rows))
    assert [log.log_metadata.model_spec.version.value for log in logs] == [1795711938] * 3
    images = logs[1].predict_log.request.inputs[features.IMAGES_INPUT]
    assert [d.size for d in images.tensor_shape.dim] == [1, 28, 28]
    import tensorflow as tf

    np.testing.assert_array_equal(tf.make_ndarray(images)[0], sample.images[1].reshape(28, 28))


@pytest.mark.parametrize(("start", "end", "message"), [
    ("2026-11-26T12:00:00+00:00", "2026-11-26T12:00:00+00:00", "is empty"),
    ("2026-11-26T12:00:00", "2026-11-26T13:00:00", "time zone"),
])
def test_a_bad_request_log_window_is_refused_before_any_query(start, end, message):
    import datetime as dt

    client = FakeLogClient([])
    with pytest.raises(dataset.DatasetError, match=message):
        bigquery.read_request_log_rows(LOG_TABLE, dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end),
                                       client)
    assert not client.calls
