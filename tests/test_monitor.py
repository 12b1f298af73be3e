"""`fmnist monitor`: skew, class-prior and drift checks of logged traffic on real images answered
by a real (briefly trained) model, the CLI's exit codes and one-line errors, the page and the
Prometheus textfile."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from prometheus_client.parser import text_string_to_metric_families

from cli.main import main
from fmnist import features
from fmnist.dataset import read_split
from monitoring import job
from monitoring.checks import CLASS_PRIOR, DRIFT, SKEW, check_window
from monitoring.examples import served_examples
from monitoring.statistics import window_statistics
from serving.server.request_log import PREDICT, PREFIX, SUFFIX, _Entry, to_prediction_log

SCHEMA = tfdv.load_schema_text(str(Path(__file__).resolve().parent.parent / "schema" / "schema.pbtxt"))
VERSION = 7
T0 = 1_700_000_000


@pytest.fixture(scope="module")
def model(exported_model):
    return tf.saved_model.load(str(exported_model)).signatures[features.SERVING_DEFAULT]


@pytest.fixture(scope="module")
def test_images(sample_dir) -> np.ndarray:
    return read_split(sample_dir, "test").images.reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)


@pytest.fixture(scope="module")
def test_labels(sample_dir) -> np.ndarray:
    return read_split(sample_dir, "test").labels.astype(np.int64)


def logs_of(model, images: np.ndarray, start: int = T0, batch: int = 10, labels: np.ndarray | None = None) -> list:
    """PredictionLogs as `fmnist serve --log-requests` writes them, one call per `batch` images.
    With `labels`, the answers are those labels: an accurate model's. The fixture model, trained
    for a few steps, answers one class for half the images, a class-prior shift of its own."""
    outputs = model(**{features.IMAGES_INPUT: tf.constant(images)})
    answers = {name: outputs[name].numpy() for name in (features.PROBABILITIES_OUTPUT, features.CLASS_ID_OUTPUT)}
    if labels is not None:
        answers = {features.PROBABILITIES_OUTPUT: np.eye(features.NUM_CLASSES, dtype=np.float32)[labels],
                   features.CLASS_ID_OUTPUT: labels}
    return [to_prediction_log(_Entry(PREDICT, features.MODEL_NAME, VERSION, features.SERVING_DEFAULT,
                                     {features.IMAGES_INPUT: images[i:i + batch]},
                                     {k: v[i:i + batch] for k, v in answers.items()}, start + i))
            for i in range(0, len(images), batch)]


def write_logs(directory: Path, logs: list, sequence: int = 1) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(directory / f"{PREFIX}20231114T221320.000000Z-{sequence:06d}{SUFFIX}")) as writer:
        for logged in logs:
            writer.write(logged.SerializeToString())


def statistics_of(logs: list):
    return window_statistics(served_examples(logs), SCHEMA)


SHIFTS = {  # name -> (shift of the images, the check that must alert)
    "inverted": (lambda x: 255 - x, SKEW),
    "darker": (lambda x: x * 0.6 + 60, SKEW),
    "brighter": (lambda x: np.clip(x * 1.3, 0, 255), SKEW),
    "blank": (np.zeros_like, SKEW),
}


def test_normal_traffic_does_not_alert_and_shifts_alert_the_right_check(model, test_images, test_labels, training):
    baseline = tfdv.load_stats_binary(str(training))
    normal = check_window(statistics_of(logs_of(model, test_images, labels=test_labels)), baseline, SCHEMA)
    assert not normal.alert, [s.describe() for s in normal.scores] + normal.problems
    assert {s.check for s in normal.scores} == {SKEW, CLASS_PRIOR}  # no previous window: no drift
    for name, (shift, check) in SHIFTS.items():
        result = check_window(statistics_of(logs_of(model, shift(test_images).astype(np.float32))), baseline, SCHEMA)
        assert result.alert and result.score(check, features.IMAGE_KEY).alert, name
    # A class-prior shift: three classes only. The images are real, so the pixels barely move.
    three = np.isin(test_labels, (0, 1, 2))
    prior = check_window(statistics_of(logs_of(model, test_images[three], labels=test_labels[three])), baseline,
                         SCHEMA)
    assert prior.score(CLASS_PRIOR, features.LABEL_KEY).alert
    assert not prior.score(SKEW, features.IMAGE_KEY).alert


def test_cli_records_windows_finds_drift_and_exits_3_on_alert(model, test_images, test_labels, training, tmp_path,
                                                              capsys):
    requests, out, textfile = tmp_path / "logs", tmp_path / "state", tmp_path / "node" / "fmnist.prom"
    write_logs(requests, logs_of(model, test_images, start=T0, labels=test_labels), 1)
    write_logs(requests, logs_of(model, 255 - test_images, start=T0 + 1000), 2)
    common = ["monitor", "--requests", str(requests), "--training-statistics", str(training), "--out", str(out),
              "--min-requests", "100", "--prometheus-textfile", str(textfile)]

    assert main([*common, "--window-end", str(T0 + 1000)]) == 0
    first = capsys.readouterr().out
    assert "verdict  ok" in first and f"version  {VERSION}" in first and "first window" in first

    # The next window starts where the first ended (no --window-start): the inverted traffic.
    assert main([*common, "--window-end", "2023-11-14T23:00:00Z"]) == 3
    second = capsys.readouterr().out
    assert "verdict  ALERT" in second
    windows = sorted(p.name for p in (out / job.WINDOWS).iterdir())
    assert len(windows) == 2 and not [w for w in windows if w.startswith(".")]
    latest = job.previous_window(out)
    assert latest.previous == windows[0] and latest.start == T0 + 1000
    drift = [s for s in latest.scores if s["check"] == DRIFT and s["feature"] == features.IMAGE_KEY]
    assert drift and drift[0]["alert"]

    page = Path(latest.page).read_text()
    assert page.count("data:image/png;base64,") == 3 and "ALERT" in page and "served predictions" in page
    assert "training vs serving: image: " in page and "vs previous window: image: " in page  # TFDV anomalies
    assert (Path(latest.directory) / job.ANOMALIES_FILE).read_text().strip()
    gauges = {s.name + str(sorted(s.labels.items())): s.value
              for family in text_string_to_metric_families(textfile.read_text()) for s in family.samples}
    assert gauges["fmnist_monitor_alert[]"] == 1
    assert gauges["fmnist_monitor_requests[]"] == len(test_images) // 10
    assert gauges["fmnist_monitor_skew_score[('feature', 'image')]"] > 0.01
    assert "fmnist_monitor_drift_score[('feature', 'image')]" in gauges
    assert (out / job.LATEST_METRICS).read_text() == textfile.read_text()


def _error(capsys, argv) -> str:
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_bad_input_gives_one_line_errors(model, test_images, training, tmp_path, capsys):
    base = ["--training-statistics", str(training), "--out", str(tmp_path / "state"), "--min-requests", "1"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no closed request log files" in _error(capsys, ["monitor", "--requests", str(empty), *base])

    requests = tmp_path / "logs"
    write_logs(requests, logs_of(model, test_images[:20]))
    assert "0 images logged in the window" in _error(
        capsys, ["monitor", "--requests", str(requests), *base, "--window-start", str(T0 + 500)])
    assert "no statistics file" in _error(capsys, ["monitor", "--requests", str(requests), "--out", str(tmp_path),
                                                   "--min-requests", "1", "--training-statistics",
                                                   str(tmp_path / "empty")])
    assert "no ML Metadata store" in _error(capsys, ["monitor", "--requests", str(requests), "--pipeline-root",
                                                     str(tmp_path / "nowhere" / "pipeline_root")])

    wrong = tmp_path / "wrong"
    logged = logs_of(model, test_images[:3], batch=3)[0]
    logged.predict_log.request.inputs[features.IMAGES_INPUT].CopyFrom(tf.make_tensor_proto(np.zeros((3, 27, 28),
                                                                                           np.float32)))
    write_logs(wrong, [logged])
    line = _error(capsys, ["monitor", "--requests", str(wrong), *base])
    assert "logged call #0" in line and "[3, 27, 28]" in line

    broken = tmp_path / "broken"
    write_logs(broken, logs_of(model, test_images[:5]))
    path = next(broken.iterdir())
    path.write_bytes(path.read_bytes()[:-7])
    assert "unreadable request log record" in _error(capsys, ["monitor", "--requests", str(broken), *base])


def _vertex_rows(images: np.ndarray, labels: np.ndarray, start: int) -> list[dict]:
    """Rows of a Vertex endpoint's request-response logging table, one call per image, answered with `labels`."""
    import json
    from datetime import UTC, datetime

    return [{"endpoint": "projects/1/locations/europe-west4/endpoints/42", "deployed_model_id": str(VERSION),
             "logging_time": datetime.fromtimestamp(start + i, UTC), "request_id": i,
             "request_payload": [json.dumps(image.tolist())],
             "response_payload": [json.dumps({features.PROBABILITIES_OUTPUT: np.eye(10)[label].tolist(),
                                              features.CLASS_ID_OUTPUT: int(label)})]}
            for i, (image, label) in enumerate(zip(images, labels, strict=True))]


def test_vertex_logging_table_is_a_source_like_the_log_directory(test_images, test_labels, training, tmp_path,
                                                                 monkeypatch, capsys):
    from google.api_core import exceptions

    from cli import bq_load
    from fmnist import bigquery

    class Client:
        def __init__(self, rows=None, error=None):
            self.rows, self.error, self.windows = rows, error, []

        def query(self, sql, job_config=None):
            if self.error:
                raise self.error
            window = {p.name: p.value.timestamp() for p in job_config.query_parameters}
            self.windows.append(window)
            rows = [r for r in self.rows if window["start"] <= r["logging_time"].timestamp() < window["end"]]
            return type("Job", (), {"result": lambda _: [tuple(r[c] for c in bigquery.REQUEST_LOG_COLUMNS)
                                                         for r in rows]})()

    client = Client(_vertex_rows(test_images, test_labels, T0) +
                    _vertex_rows(255 - test_images, test_labels, T0 + 1000))
    monkeypatch.setattr(bq_load, "make_client", lambda project: client)
    common = ["monitor", "--bigquery-table", "my-project.logs.fmnist", "--training-statistics", str(training),
              "--out", str(tmp_path / "state"), "--min-requests", "100"]
    assert main([*common, "--window-start", str(T0), "--window-end", str(T0 + 1000)]) == 0
    assert f"{len(test_images)} calls" in capsys.readouterr().out
    # The next window starts where the last ended: the inverted images alert.
    assert main([*common, "--window-end", str(T0 + 2000)]) == 3
    assert client.windows[1] == {"start": T0 + 1000, "end": T0 + 2000}
    assert "verdict  ALERT" in capsys.readouterr().out

    assert "one source of logged calls" in _error(capsys, [*common, "--requests", str(tmp_path)])
    monkeypatch.setattr(bq_load, "make_client", lambda project: Client(error=exceptions.Forbidden("no access")))
    assert "my-project.logs.fmnist: 403 no access" in _error(capsys, [*common, "--window-end", str(T0 + 3000)])


def test_the_monitoring_page_renders_in_a_headless_browser(model, test_images, training, tmp_path, screenshot):
    requests, out = tmp_path / "logs", tmp_path / "state"
    write_logs(requests, logs_of(model, np.clip(test_images * 1.3, 0, 255)))
    assert main(["monitor", "--requests", str(requests), "--training-statistics", str(training), "--out", str(out),
                 "--min-requests", "100"]) == 3
    pixels = screenshot(Path(job.previous_window(out).page), width=1200, height=2000)
    assert pixels.shape == (2000, 1200)
    # Not blank: the verdict, the two charts and the anomaly list put ink on a good part of it.
    assert (pixels < 200).mean() > 0.02


@pytest.mark.slow
def test_the_console_shows_only_the_commands_own_lines(model, test_images, test_labels, training, tmp_path):
    """In its own process, as cron runs it: TensorFlow's C++ lines and library warnings go to the log."""
    import subprocess
    import sys

    from cli import monitor

    requests, out = tmp_path / "logs", tmp_path / "state"
    write_logs(requests, logs_of(model, test_images, labels=test_labels))
    done = subprocess.run([sys.executable, "-m", "cli.main", "monitor", "--requests", str(requests),
                           "--training-statistics", str(training), "--out", str(out), "--min-requests", "100"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    own = ("window ", "version ", "class prior ", "skew ", "drift ", "anomaly ", "live ", "verdict ", "page ")
    assert [line for line in done.stdout.splitlines() if not line.startswith(own)] == []
    assert (out / monitor.LOG_FILE).stat().st_size > 0  # where the libraries' lines went
