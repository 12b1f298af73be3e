"""Live accuracy (issue #24): logged answers joined with delayed labels, in `fmnist monitor` (per
window and version, late labels re-judging earlier windows, gauges, the page), in the canary
analysis (the same join), and against a Vertex logging table + labels table (a fake BigQuery)."""

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families

from cli.main import main
from fmnist import bigquery, features, feedback, outcomes, request_ids
from fmnist.dataset import read_split
from fmnist.outcomes import Answer, Tally
from monitoring import job, live
from serving.release import canary_analysis as analysis
from serving.server.request_log import PREDICT, PREFIX, SUFFIX, _Entry, to_prediction_log

T0 = 1_700_000_000
VERSIONS = (7, 8)


@pytest.fixture(scope="module")
def sample(sample_dir) -> tuple[np.ndarray, np.ndarray]:
    raw = read_split(sample_dir, "test")
    return raw.images.reshape(-1, *features.IMAGE_SHAPE).astype(np.float32), raw.labels.astype(np.int64)


def answered(labels: np.ndarray, wrong_every: dict[int, int]) -> list[tuple[int, int, int]]:
    """(version, predicted, label) per image: versions take turns; version v answers every
    wrong_every[v]-th of its images with the next class, the others right."""
    rows = []
    for i, label in enumerate(labels.tolist()):
        version = VERSIONS[i % len(VERSIONS)]
        wrong = (i // len(VERSIONS)) % wrong_every[version] == 0
        rows.append((version, (label + 1) % features.NUM_CLASSES if wrong else label, label))
    return rows


def write_window(directory: Path, images: np.ndarray, rows: list[tuple[int, int, int]], start: int, prefix: str,
                 sequence: int) -> list[str]:
    """One logged call per image, id `<prefix><i>`, as `fmnist serve --log-requests` writes them; the ids."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(start, UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    ids = []
    with tf.io.TFRecordWriter(str(directory / f"{PREFIX}{stamp}-{sequence:06d}{SUFFIX}")) as writer:
        for i, (image, (version, predicted, _)) in enumerate(zip(images, rows, strict=True)):
            logged = to_prediction_log(_Entry(
                PREDICT, features.MODEL_NAME, version, features.SERVING_DEFAULT, {features.IMAGES_INPUT: image[None]},
                {features.PROBABILITIES_OUTPUT: np.eye(features.NUM_CLASSES, dtype=np.float32)[[predicted]],
                 features.CLASS_ID_OUTPUT: np.array([predicted])}, start + i % 900))
            request_ids.set_on_log(logged, f"{prefix}{i}")
            writer.write(logged.SerializeToString())
            ids.append(f"{prefix}{i}")
    return ids


def write_labels(directory: Path, labels: dict[str, int], sequence: int) -> None:
    """A delayed-label file in the layout of fmnist/feedback.py."""
    folder = feedback.feedback_dir(directory)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{feedback.PREFIX}20231115T000000.000000Z-{sequence:06d}{feedback.SUFFIX}", "w",
              newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(feedback.COLUMNS)
        writer.writerows([key, label, ""] for key, label in labels.items())


def direct(rows: list[tuple[int, int, int]], labelled: list[bool], version: int) -> tuple[float, list]:
    """Accuracy and per-class recall of `version` over the labelled rows, computed plainly."""
    mine = [(p, t) for (v, p, t), known in zip(rows, labelled, strict=True) if known and v == version]
    recall = []
    for c in range(features.NUM_CLASSES):
        of_class = [p == t for p, t in mine if t == c]
        recall.append(sum(of_class) / len(of_class) if of_class else None)
    return sum(p == t for p, t in mine) / len(mine), recall


def test_join_tally_and_judge_agree_with_a_direct_computation():
    answers = [Answer("a", 7, 1), Answer("b", 7, 2), Answer("c", 8, 3), Answer("", 8, 3), Answer("d", 7, 4)]
    labels = {"a": feedback.Label("a", 1, None), "b": 5, "c": 3, "zzz": 1}
    assert outcomes.join(answers, labels) == [outcomes.LabelledOutcome(7, 1, 1), outcomes.LabelledOutcome(7, 2, 5),
                                              outcomes.LabelledOutcome(8, 3, 3)]
    counts = outcomes.tally(answers, labels)
    assert (counts["7"].images, counts["7"].labelled, counts["7"].labelled_share) == (3, 2, pytest.approx(2 / 3))
    assert counts["7"].accuracy() == 0.5 and counts["7"].accuracy(min_labelled=3) is None
    assert counts["7"].recall()[1] == 1.0 and counts["7"].recall()[5] == 0.0 and counts["7"].recall()[0] is None
    assert counts["8"].accuracy() == 1.0 and counts["8"].labelled_share == 0.5
    assert feedback.image_keys("r1", 1) == ["r1"] and feedback.image_keys("r1", 2) == ["r1#0", "r1#1"]

    # Confusion growth: coat (4) -> pullover (2) goes from 1 in 100 to 10 in 100.
    def with_pairs(pairs: int) -> Tally:
        matrix = [[0] * 10 for _ in range(10)]
        matrix[4][2], matrix[0][0] = pairs, 100 - pairs
        return Tally(100, matrix)
    thresholds = live.LiveThresholds(min_live_accuracy=0.5, min_labelled=50, max_confusion_growth=0.05)
    (judged,) = live.judge("w2", {"7": with_pairs(10)}, {"7": with_pairs(1)}, thresholds)
    assert judged.growth[0][:2] == (4, 2) and judged.growth[0].growth == pytest.approx(0.09)
    assert judged.alerts == ["confusion: window w2, version 7: Coat -> Pullover 0.1000 of the labelled (previous "
                             "window 0.0100), grew 0.0900 > 0.05"]
    (few,) = live.judge("w2", {"7": with_pairs(10)}, {"7": Tally(10, [[1] + [0] * 9] + [[0] * 10] * 9)}, thresholds)
    assert few.alerts == [] and few.accuracy == 0.9  # the previous window had too few labels to compare with
    (na,) = live.judge("w2", {"7": Tally(40)}, None, thresholds)
    assert na.accuracy is None and na.accuracy_text == "n/a (0 labelled)" and na.alerts == []


def _gauges(path: Path) -> dict[str, float]:
    return {s.name + str(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(path.read_text()) for s in family.samples}


def test_monitor_judges_live_accuracy_and_late_labels_rejudge_earlier_windows(sample, training, tmp_path, capsys,
                                                                              screenshot):
    images, labels = sample
    requests, out, textfile = tmp_path / "logs", tmp_path / "state", tmp_path / "node" / "fmnist.prom"
    first, second, third = (answered(labels, {7: 10, 8: 4}), answered(labels, {7: 10, 8: 10}),
                            answered(labels, {7: 10, 8: 3}))
    ids1 = write_window(requests, images, first, T0, "a", 1)
    ids2 = write_window(requests, images, second, T0 + 1000, "b", 2)
    ids3 = write_window(requests, images, third, T0 + 2000, "c", 3)
    common = ["monitor", "--requests", str(requests), "--training-statistics", str(training), "--out", str(out),
              "--min-requests", "100", "--min-labelled", "50", "--min-live-accuracy", "0.8",
              "--prometheus-textfile", str(textfile)]

    # Window 1, checked before any label came back: n/a, no alert.
    assert main([*common, "--window-end", str(T0 + 1000)]) == 0
    output = capsys.readouterr().out
    assert "live     version 7: 150 images, 0 labelled (0.0%), accuracy n/a (0 labelled)" in output

    # Labels come back for 2 in 3 of window 1's images and 1 in 5 of window 2's (30 per version: n/a).
    known1 = [i % 3 != 0 for i in range(len(ids1))]
    known2 = [i % 5 == 0 for i in range(len(ids2))]
    write_labels(requests, {k: int(t) for k, t, known in zip(ids1, labels, known1, strict=True) if known}, 1)
    write_labels(requests, {k: int(t) for k, t, known in zip(ids2, labels, known2, strict=True) if known}, 2)
    assert main([*common, "--window-end", str(T0 + 2000)]) == 3
    output = capsys.readouterr().out
    accuracy8 = direct(first, known1, 8)[0]
    assert accuracy8 == pytest.approx(0.75, abs=0.02)
    assert f"ALERT live accuracy: window {job.windows(out)[0].name}, version 8: {accuracy8:.4f} < 0.8" in output
    assert "live     version 7: 150 images, 30 labelled (20.0%), accuracy n/a (30 labelled)" in output
    assert "verdict  ALERT" in output

    # The earlier window's summary now holds its labelled answers: its figures equal the direct ones.
    window1, window2 = job.windows(out)
    rejudged = live.tallies_from_json(window1.live)
    for version in VERSIONS:
        accuracy, recall = direct(first, known1, version)
        assert rejudged[str(version)].accuracy() == pytest.approx(accuracy)
        assert rejudged[str(version)].recall() == pytest.approx(recall)
        assert rejudged[str(version)].labelled_share == pytest.approx(100 / 150)
    assert live.tallies_from_json(window2.live)["7"].labelled == 30 and not window1.live_alerts
    gauges = _gauges(textfile)
    assert gauges["fmnist_monitor_live_accuracy[('version', '8')]"] == pytest.approx(accuracy8)
    assert gauges["fmnist_monitor_live_accuracy_window_end_seconds[('version', '8')]"] == T0 + 1000
    assert gauges["fmnist_monitor_live_labelled[('version', '7')]"] == 30
    assert gauges["fmnist_monitor_live_images[('version', '8')]"] == 150
    assert gauges["fmnist_monitor_alert[]"] == 1

    # Window 2's labels all arrive, then window 3 (version 8 worse again) is checked: window 2 is
    # re-judged (both fine), window 1 is not re-judged again (its labels did not change).
    write_labels(requests, {k: int(t) for k, t, known in zip(ids2, labels, known2, strict=True) if not known}, 3)
    write_labels(requests, dict(zip(ids3, map(int, labels), strict=True)), 4)
    assert main([*common, "--window-end", str(T0 + 3000)]) == 3
    output = capsys.readouterr().out
    assert "window 2023" in output and "version 8: 0.6" in output and output.count("ALERT live accuracy") == 1
    history = job.accuracy_history(job.windows(out), 50)
    assert [sorted(judged) for _, judged in history] == [["7", "8"]] * 3
    assert history[1][1]["8"] == pytest.approx(direct(second, [True] * len(ids2), 8)[0])

    page = Path(job.previous_window(out).page).read_text()
    assert page.count("data:image/png;base64,") == 3 and 'id="live-accuracy"' in page
    assert "live accuracy per model version over windows" in page and "confusions grown most" in page
    pixels = screenshot(Path(job.previous_window(out).page), width=1200, height=3000)
    assert (pixels < 200).mean() > 0.02


def test_canary_accuracy_check_uses_the_same_join(sample, tmp_path):
    from cli.labelled import from_request_log

    images, labels = sample
    rows = answered(labels, {7: 10, 8: 3})
    ids = write_window(tmp_path, images, rows, T0, "a", 1)
    write_labels(tmp_path, dict(zip(ids, map(int, labels), strict=True)), 1)
    read = from_request_log(tmp_path)
    found = read(T0, T0 + 900)
    assert sorted((o.version, o.predicted, o.label) for o in found) == sorted(rows)
    assert len(read(T0 + 100, T0 + 199)) == 100  # only the calls logged within the bake

    seen = []

    def source(start, end):
        seen.append((start, end))
        return found
    policy = analysis.Policy(max_accuracy_drop=0.05, min_labelled=100)
    bake = analysis.Bake(seconds=0, requests=1, poll_seconds=0.1)
    empty = analysis.Snapshot({})
    wall = iter([T0, T0 + 900]).__next__
    judged = analysis.analyze("server", features.MODEL_NAME, 7, 8, policy, bake, source, read=lambda _: empty,
                              wall=wall)
    check = judged.checks[-1]
    assert seen == [(T0, T0 + 900)]
    assert check.verdict == "FAIL" and check.value == pytest.approx(direct(rows, [True] * len(rows), 8)[0])
    assert analysis.accuracy_check(found, 8, 7, policy).verdict == "pass"  # the better one as the canary
    assert analysis.accuracy_check(found[:150], 7, 8, policy).verdict == "n/a"  # 75 labelled each, 100 needed
    assert "canary 75; 100 each needed" in analysis.accuracy_check(found[:150], 7, 8, policy).detail


class FakeBigQuery:
    """Answers the logging-table query with `rows` in its window and the labels query with `labels`."""

    def __init__(self, rows: list[dict], labels: list[tuple]):
        self.rows, self.labels, self.queries = rows, labels, []

    def query(self, sql, job_config=None):
        parameters = {p.name: p.value for p in job_config.query_parameters}
        self.queries.append((sql, parameters))
        if "AS labels" in sql:
            result = self.labels
        else:
            window = (parameters["start"].timestamp(), parameters["end"].timestamp())
            result = [tuple(r[c] for c in bigquery.REQUEST_LOG_COLUMNS) for r in self.rows
                      if window[0] <= r["logging_time"].timestamp() < window[1]]
        return type("Job", (), {"result": lambda _: result})()


def test_vertex_labels_table_joins_with_the_logging_table(sample, training, tmp_path, monkeypatch, capsys):
    from cli import bq_load

    images, labels = sample
    rows = answered(labels, {7: 10, 8: 2})
    logged = [{"endpoint": "projects/1/locations/europe-west4/endpoints/42", "deployed_model_id": str(version),
               "logging_time": datetime.fromtimestamp(T0 + i, UTC), "request_id": 5000 + i,
               "request_payload": [json.dumps(image.tolist())],
               "response_payload": [json.dumps({features.PROBABILITIES_OUTPUT: np.eye(10)[predicted].tolist(),
                                                features.CLASS_ID_OUTPUT: predicted})]}
              for i, (image, (version, predicted, _)) in enumerate(zip(images, rows, strict=True))]
    moment = datetime.fromtimestamp(T0 + 5000, UTC)
    client = FakeBigQuery(logged, [(str(5000 + i), label, moment) for i, (_, _, label) in enumerate(rows)])
    monkeypatch.setattr(bq_load, "make_client", lambda project: client)
    assert main(["monitor", "--bigquery-table", "my-project.logs.fmnist", "--bigquery-labels-table",
                 "my-project.logs.labels", "--bigquery-endpoint", "projects/1/locations/europe-west4/endpoints/42",
                 "--training-statistics", str(training), "--out", str(tmp_path / "state"), "--min-requests", "100",
                 "--min-labelled", "50", "--window-start", str(T0), "--window-end", str(T0 + 1000)]) == 3
    output = capsys.readouterr().out
    assert f"version 8: 150 images, 150 labelled (100.0%), accuracy {direct(rows, [True] * 300, 8)[0]:.4f}" in output

    sql, parameters = next(q for q in client.queries if "AS labels" in q[0])
    assert sql == bigquery.labels_query("my-project.logs.labels", "my-project.logs.fmnist", "projects/1/locations/"
                                        "europe-west4/endpoints/42")
    assert "JOIN `my-project.logs.fmnist` AS logged" in sql and "CAST(logged.request_id AS STRING)" in sql
    assert "@start" in sql and "@endpoint" in sql and "5000" not in sql  # ids are never in the text
    assert parameters == {"start": datetime.fromtimestamp(T0, UTC), "end": datetime.fromtimestamp(T0 + 1000, UTC),
                          "endpoint": "projects/1/locations/europe-west4/endpoints/42"}
    found = bigquery.read_labels("my-project.logs.labels", "my-project.logs.fmnist", parameters["start"],
                                 parameters["end"], client)
    assert found["5000"] == feedback.Label("5000", rows[0][2], moment.timestamp())
    with pytest.raises(ValueError, match="expected a BigQuery table id"):
        bigquery.labels_query("my-project.logs.labels`; DROP TABLE x; --", "my-project.logs.fmnist")
    assert main(["monitor", "--requests", str(tmp_path), "--bigquery-labels-table", "p.d.t",
                 "--training-statistics", str(training), "--out", str(tmp_path / "other")]) == 1
    assert "give --bigquery-table too" in capsys.readouterr().err
