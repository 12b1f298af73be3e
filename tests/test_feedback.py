"""Delayed labels (issue #24): `fmnist feedback` stores them beside the request log (every refusal
one line, nothing written), and `fmnist land --from-feedback` lands the labelled logged images as
the next span, byte for byte as served. Real files: request logs written as the server writes
them (PredictionLogs with ids) from the committed sample images."""

from __future__ import annotations

import gzip
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from cli.main import main
from fmnist import dataset, features, feedback, files, landing, request_ids
from serving.server import request_log

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()
T1 = T0 + 3600  # the second log file


@pytest.fixture(scope="module")
def originals(sample_dir) -> dataset.RawSplit:
    return dataset.read_split(sample_dir, dataset.TEST)


def _predict(request_id: str, images: np.ndarray, stamp: float, dtype=np.float32, input_name=features.IMAGES_INPUT):
    count = len(images)
    probabilities = np.full((count, features.NUM_CLASSES), 0.05, np.float32)
    probabilities[:, 3] = 0.55
    entry = request_log._Entry(request_log.PREDICT, features.MODEL_NAME, 1, features.SERVING_DEFAULT,
                               {input_name: images.reshape(-1, *features.IMAGE_SHAPE).astype(dtype)},
                               {features.PROBABILITIES_OUTPUT: probabilities,
                                features.CLASS_ID_OUTPUT: np.full(count, 3, np.int64)}, stamp)
    logged = request_log.to_prediction_log(entry)
    request_ids.set_on_log(logged, request_id)
    return logged


def _classify(request_id: str, images: np.ndarray, stamp: float):
    examples = []
    for image in images:
        example = tf.train.Example()
        example.features.feature[features.IMAGE_KEY].int64_list.value.extend(image.reshape(-1).tolist())
        examples.append(example.SerializeToString())
    classes = np.array([[str(c).encode() for c in range(features.NUM_CLASSES)]] * len(images), dtype=object)
    scores = np.tile(np.linspace(0.0, 0.2, features.NUM_CLASSES, dtype=np.float32), (len(images), 1))
    entry = request_log._Entry(request_log.CLASSIFY, features.MODEL_NAME, 1, features.CLASSIFY_SIGNATURE,
                               {"examples": np.array(examples, dtype=object)},
                               {"classes": classes, "scores": scores}, stamp)
    logged = request_log.to_prediction_log(entry)
    request_ids.set_on_log(logged, request_id)
    return logged


@pytest.fixture
def logs(tmp_path, originals) -> Path:
    """Two closed log files and one still open; the labelled images are originals 0..6."""
    images = originals.images
    directory = tmp_path / "requests"
    directory.mkdir()
    half = np.full((1, features.NUM_PIXELS), 12.5)
    request_log.write_log_file(str(directory), [
        _predict("a1", images[0:3], T0),  # float32, three images: keys a1#0..a1#2
        _predict("a2", images[3:4], T0 + 1, dtype=np.uint8),
        _classify("c1", images[4:6], T0 + 2),
    ], opened=T0, sequence=1)
    request_log.write_log_file(str(directory), [
        _predict("b1", images[6:7], T1),
        _predict("half", half, T1 + 1),  # a client sent 12.5: no training pixel equals it
        _predict("tfex", images[7:8], T1 + 2, input_name="examples"),  # not the image input
    ], opened=T1, sequence=2)
    path = request_log.write_log_file(str(directory), [_predict("open1", images[8:9], T1 + 3)], opened=T1 + 5,
                                      sequence=3)
    Path(path).rename(path + request_log.PARTIAL)  # still being written: not in the log yet
    return directory


GOOD = ["a1#0", "a1#1", "a1#2", "a2", "c1#0", "c1#1", "b1"]


def _labels_csv(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _good_csv(tmp_path, originals) -> Path:
    rows = [f"{key},{originals.labels[i]}" for i, key in enumerate(GOOD)]
    return _labels_csv(tmp_path, "request_id,label,time\n" + "\n".join(rows) + "\n")


def _feedback_files(logs: Path) -> list[str]:
    folder = feedback.feedback_dir(logs)
    return sorted(p.name for p in folder.iterdir() if p.name != ".labels.lock") if folder.is_dir() else []


def test_labels_are_stored_as_one_new_file(tmp_path, logs, capsys):
    source = _labels_csv(tmp_path, "a1#0,1,2026-12-01T13:00:00Z\na1#1,2,1764590400\na1#2,3\na2#0,4,\n"
                                   "c1#1,5,2026-12-01T13:00:00\n")
    assert main(["feedback", str(source), "--requests", str(logs)]) == 0
    (name,) = _feedback_files(logs)
    path = feedback.feedback_dir(logs) / name
    assert capsys.readouterr().out.strip() == f"5 labels stored (0 already known) in {path}"
    assert feedback.file_time(path) == pytest.approx(time.time(), abs=60)
    stored = feedback.read_labels(logs)
    moment = datetime(2026, 12, 1, 13, 0, tzinfo=UTC).timestamp()
    assert stored == {"a1#0": feedback.Label("a1#0", 1, moment), "a1#1": feedback.Label("a1#1", 2, 1764590400.0),
                      "a1#2": feedback.Label("a1#2", 3, None),
                      "a2": feedback.Label("a2", 4, None),  # a2#0 of a one-image request is stored as a2
                      "c1#1": feedback.Label("c1#1", 5, moment)}
    assert path.read_text().splitlines()[0] == "request_id,label,time"


def test_duplicates_with_the_same_label_are_skipped_and_counted(tmp_path, logs, capsys):
    first = _labels_csv(tmp_path, "a2,4\nb1,7\nb1,7\n", "first.csv")
    assert main(["feedback", str(first), "--requests", str(logs)]) == 0
    assert "2 labels stored (1 already known)" in capsys.readouterr().out
    again = _labels_csv(tmp_path, "request_id,label\na2#0,4\nb1,7\nc1#0,1\n", "again.csv")
    assert main(["feedback", str(again), "--requests", str(logs)]) == 0
    assert "1 labels stored (2 already known)" in capsys.readouterr().out
    assert len(_feedback_files(logs)) == 2
    same = _labels_csv(tmp_path, "b1,7\n", "same.csv")
    assert main(["feedback", str(same), "--requests", str(logs)]) == 0
    assert capsys.readouterr().out.startswith("0 labels stored (1 already known)")
    assert len(_feedback_files(logs)) == 2  # nothing new: no file


@pytest.mark.parametrize("rows, line, message", [
    ("a2,1,2026-12-01,extra", 2, "expected request_id,label[,time], got 4 fields"),
    ("a2", 2, "expected request_id,label[,time], got 1 fields"),
    ("bad id,1", 2, "request id: 'bad id' is not a request id (1..64 characters of letters, digits and . _ : -, "
                    "starting with a letter or digit)"),
    ("a1#x,1", 2, "'a1#x': the image index after '#' must be a whole number >= 0"),
    ("a2,10", 2, "label '10' is not a class id within 0..9"),
    ("a2,-1", 2, "label '-1' is not a class id within 0..9"),
    ("a2,one", 2, "label 'one' is not a class id within 0..9"),
    ("a2,1,yesterday", 2, "time 'yesterday' is neither ISO 8601 nor epoch seconds"),
    ("zzz,1", 2, "unknown request id 'zzz' (in no closed request log file)"),
    ("open1,1", 2, "unknown request id 'open1' (in no closed request log file)"),
    ("a1,1", 2, "request 'a1' carried 3 images: label each one as a1#0 .. a1#2"),
    ("a1#3,1", 2, "request 'a1' carried 3 image(s), it has no image 3"),
    ("c1#1,2\nc1#1,3", 3, "c1#1 has label 2 on line 2, not 3"),
    ("b1,6", 2, "b1 already has label 7 (stored), not 6"),
])
def test_refusals_are_one_line_and_write_nothing(tmp_path, logs, capsys, rows, line, message):
    stored = _labels_csv(tmp_path, "b1,7\n", "stored.csv")
    assert main(["feedback", str(stored), "--requests", str(logs)]) == 0
    before = _feedback_files(logs)
    capsys.readouterr()
    source = _labels_csv(tmp_path, f"a1#0,0\n{rows}\nc1#0,1\n")  # good rows around the bad one
    assert main(["feedback", str(source), "--requests", str(logs)]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"error: {source}:{line}: {message}\n")
    assert _feedback_files(logs) == before


def test_an_empty_file_and_a_missing_log_dir_are_refused(tmp_path, logs, capsys):
    empty = _labels_csv(tmp_path, "request_id,label\n\n")
    assert main(["feedback", str(empty), "--requests", str(logs)]) == 2
    assert capsys.readouterr().err == f"error: {empty}:1: no label rows (expected request_id,label[,time])\n"
    source = _labels_csv(tmp_path, "a2,1\n", "one.csv")
    assert main(["feedback", str(source), "--requests", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nowhere'}: no such request log directory\n"
    assert not feedback.feedback_dir(tmp_path / "nowhere").exists()


def test_a_failed_write_leaves_no_file(tmp_path, logs, originals, monkeypatch):
    def fail(*_):
        raise OSError("disk full")
    monkeypatch.setattr(files.os, "replace", fail)  # the rename of fmnist.files.replaced_atomically
    rows = feedback.parse_label_file(_good_csv(tmp_path, originals))
    with pytest.raises(OSError, match="disk full"):
        feedback.store_labels(rows, "labels.csv", logs, {"a1": 3, "a2": 1, "c1": 2, "b1": 1})
    assert _feedback_files(logs) == []  # neither the file nor its temporary


def test_writers_take_turns(tmp_path, logs):
    """A second writer waits for the lock, then sees the first one's labels as known."""
    index = {"a2": 1, "b1": 1}
    rows = feedback.parse_label_file(_labels_csv(tmp_path, "a2,4\n"))
    folder = feedback.feedback_dir(logs)
    folder.mkdir()
    results = []
    with feedback._exclusive(folder):
        writer = threading.Thread(target=lambda: results.append(feedback.store_labels(rows, "x", logs, index)))
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and not _feedback_files(logs)
        feedback._write_atomic(folder / "labels-20261201T120000.000000Z-000001.csv", [("a2", 4, None)])
    writer.join(10)
    assert results == [feedback.Stored(0, 1, None)]


def test_retention_deletes_files_older_than_n_days(tmp_path, logs, capsys):
    index = {"a2": 1, "b1": 1, "c1": 2}
    old = feedback.store_labels(feedback.parse_label_file(_labels_csv(tmp_path, "a2,4\n", "old.csv")), "old.csv",
                                logs, index, now=time.time() - 10 * 86400)
    recent = feedback.store_labels(feedback.parse_label_file(_labels_csv(tmp_path, "b1,7\n", "recent.csv")),
                                   "recent.csv", logs, index, now=time.time() - 2 * 86400)
    source = _labels_csv(tmp_path, "c1#0,1\n")
    assert main(["feedback", str(source), "--requests", str(logs)]) == 0  # default: keep everything
    assert old.path.exists() and recent.path.exists()
    source = _labels_csv(tmp_path, "c1#1,2\n")
    assert main(["feedback", str(source), "--requests", str(logs), "--retention-days", "5"]) == 0
    assert capsys.readouterr().out.strip().endswith("; 1 label file(s) older than 5 days deleted")
    assert not old.path.exists() and recent.path.exists()
    assert set(feedback.read_labels(logs)) == {"b1", "c1#0", "c1#1"}


def _idx_pixels(span_dir: Path) -> bytes:
    images_name, _ = dataset.IDX_FILES[dataset.TRAIN]
    return gzip.decompress((span_dir / images_name).read_bytes())[16:]  # after the IDX header


def test_land_from_feedback_lands_the_served_images_as_the_next_span(tmp_path, logs, originals, sample_dir, capsys):
    assert main(["feedback", str(_good_csv(tmp_path, originals)), "--requests", str(logs)]) == 0
    spans_dir = tmp_path / "landing"
    landing.land(sample_dir, spans_dir)  # span 1
    capsys.readouterr()
    assert main(["land", "--from-feedback", str(logs), "--landing", str(spans_dir), "--until", str(T1)]) == 0
    target = spans_dir / "span-2"
    assert capsys.readouterr().out.strip() == (
        f"landed span 2: 6 labelled images from 3 requests (requests logged from - until "
        f"2026-12-01T13:00:00Z) in {target}")
    landed = dataset.read_split(target, dataset.TRAIN)
    assert _idx_pixels(target) == originals.images[:6].astype(np.uint8).tobytes()
    assert np.array_equal(landed.labels, originals.labels[:6])
    assert not [p for p in spans_dir.iterdir() if p.name.startswith(".span")]  # no staging left

    # The rest of the log: only b1 is labelled (and tfex, a Predict of tf.Examples, is not an image input).
    source = _labels_csv(tmp_path, f"tfex,{originals.labels[7]}\n", "tfex.csv")
    assert main(["feedback", str(source), "--requests", str(logs)]) == 0
    capsys.readouterr()
    assert main(["land", "--from-feedback", str(logs), "--landing", str(spans_dir),
                 "--since", "2026-12-01T12:30:00Z"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"landed span 3: 1 labelled images from 1 requests (requests logged from 2026-12-01T12:30:00Z until -) in "
        f"{spans_dir / 'span-3'}; 1 labelled requests without images skipped")
    assert _idx_pixels(spans_dir / "span-3") == originals.images[6:7].astype(np.uint8).tobytes()


def test_land_from_feedback_refuses(tmp_path, logs, originals, capsys):
    spans_dir = tmp_path / "landing"
    assert main(["land", "--from-feedback", str(logs), "--landing", str(spans_dir)]) == 2
    assert capsys.readouterr().err == (f"error: {logs}: no labelled images in the requests logged from - until -\n")
    assert main(["feedback", str(_good_csv(tmp_path, originals)), "--requests", str(logs)]) == 0
    assert main(["land", "--from-feedback", str(logs), "--landing", str(spans_dir), "--since", str(T1 + 60)]) == 2
    assert capsys.readouterr().err == (f"error: {logs}: no labelled images in the requests logged from "
                                       f"2026-12-01T13:01:00Z until -\n")
    source = _labels_csv(tmp_path, "half,1\n", "half.csv")
    assert main(["feedback", str(source), "--requests", str(logs)]) == 0
    assert main(["land", "--from-feedback", str(logs), "--landing", str(spans_dir)]) == 2
    assert capsys.readouterr().err == ("error: request half: image 0, pixel 0 = 12.5 is not a whole grey level "
                                       "within 0..255\n")
    assert not spans_dir.exists() or not list(spans_dir.glob("span-*"))
