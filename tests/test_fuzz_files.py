"""Fuzzing the file doors (issue #26): IDX, CSV and image-folder spans (`fmnist land`), the serving
model config, warmup records, request-log files, delayed-label files (`fmnist feedback`), YAML
settings files and FMNIST_* variables. Whatever a file holds, it is accepted, or refused with one
line naming the file (and the line, where a file has lines); never a traceback, and a refused span
leaves the landing directory as it was.

Property-based (hypothesis), in-process for speed, plus CLI runs for the `error: ...` line and the
exit status. Examples per test follow the hypothesis profile (`ci` by default, `make fuzz` for more).
"""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from fmnist import dataset, features, feedback, landing
from fmnist import settings as fmnist_settings
from fmnist.settings import SettingsError, declared, setting
from serving.protocol import vertex_rows
from serving.protocol.errors import ServingError
from serving.protocol.model_config import read_model_config
from serving.protocol.predict_body import MAX_JSON_DEPTH
from serving.server import request_log, warmup

ROOT = Path(__file__).resolve().parents[1]
REQUEST_ID = "0123456789abcdef0123456789abcdef"


def _one_line(message: str, *names: object) -> None:
    """The refusal property: one line, no traceback, naming one of `names` (a file)."""
    assert message and "\n" not in message and "Traceback" not in message, message
    assert any(str(name) in message for name in names), (message, names)


def _tree(directory: Path) -> list[tuple[str, bytes]]:
    return sorted((str(p.relative_to(directory)), p.read_bytes() if p.is_file() else b"")
                  for p in directory.rglob("*") if p.name != ".lock")


def _land_or_refuse(source: Path, landed: Path, kind: str, *names: object) -> None:
    """land() either lands a whole span or refuses naming the file, the landing dir untouched."""
    before = _tree(landed) if landed.exists() else []
    try:
        _number, target, examples = landing.land(source, landed, kind)
    except dataset.DatasetError as err:
        _one_line(str(err), *names)
        assert (_tree(landed) if landed.exists() else []) == before
        return
    assert examples == len(dataset.read_split(target, dataset.TRAIN).labels)


# -- IDX spans --------------------------------------------------------------------------------
IMAGES = np.arange(3 * features.NUM_PIXELS, dtype=np.int64).reshape(3, -1) % 256
LABELS = np.array([0, 4, 9])
MUTATIONS = st.sampled_from(["truncate", "flip", "magic", "dims", "append"])


def _mutate(data: bytes, how: str, at: int, byte: int) -> bytes:
    at %= max(len(data), 1)
    if how == "truncate":
        return data[:at]
    if how == "flip":
        return data[:at] + bytes([data[at] ^ (byte or 1)]) + data[at + 1:] if data else data
    if how == "magic":
        return bytes([byte]) * 4 + data[4:]
    if how == "dims":  # a header field after the magic number, rewritten
        field = 4 + 4 * (at % 4)
        return data[:field] + byte.to_bytes(1, "big") * 4 + data[field + 4:]
    return data + bytes([byte]) * (at % 50)


@given(which=st.sampled_from([0, 1]), how=MUTATIONS, at=st.integers(0, 10_000), byte=st.integers(0, 255),
       compressed=st.booleans())
def test_a_mutated_idx_span_is_landed_whole_or_refused_naming_the_file(which, how, at, byte, compressed):
    with tempfile.TemporaryDirectory() as work:
        source, landed = Path(work) / "source", Path(work) / "landing"
        paths = dataset.write_idx_split(source, dataset.TRAIN, IMAGES, LABELS)
        path = paths[which]
        if compressed:
            path.write_bytes(_mutate(path.read_bytes(), how, at, byte))
        else:
            path.write_bytes(gzip.compress(_mutate(gzip.decompress(path.read_bytes()), how, at, byte)))
        _land_or_refuse(source, landed, dataset.IDX, *paths)


def test_a_20_digit_csv_value_is_refused_naming_the_line(tmp_path):
    # Found by fuzzing: 99999999999999999999 passed int() and broke np.asarray (OverflowError).
    path = _csv(tmp_path, [["1", "99999999999999999999"] + ["0"] * (features.NUM_PIXELS - 1)])
    with pytest.raises(dataset.DatasetError) as refused:
        dataset.read_split(tmp_path, dataset.TRAIN, dataset.CSV)
    assert str(refused.value) == f"{path}:2: value 99999999999999999999 is outside the 64-bit integer range"


@pytest.mark.parametrize("cell", ["--5", "²"])
def test_a_cell_that_looks_like_digits_is_refused_naming_the_line(tmp_path, cell):
    # Found by fuzzing: str.isdigit() said yes, int() said no, and finding the bad cell raised
    # StopIteration (a traceback).
    path = _csv(tmp_path, [["1", cell] + ["0"] * (features.NUM_PIXELS - 1)])
    with pytest.raises(dataset.DatasetError) as refused:
        dataset.read_split(tmp_path, dataset.TRAIN, dataset.CSV)
    assert str(refused.value) == f"{path}:2: non-integer value {cell!r}"


def test_an_empty_csv_cell_is_refused_as_empty_naming_the_line(tmp_path):
    # Found by fuzzing: Arrow read "" as a null, and NaN cast to int64 was refused as
    # "pixel2 = -9223372036854775808".
    path = _csv(tmp_path, [["1", "0", ""] + ["0"] * (features.NUM_PIXELS - 2)])
    with pytest.raises(dataset.DatasetError) as refused:
        dataset.read_split(tmp_path, dataset.TRAIN, dataset.CSV)
    assert str(refused.value) == f"{path}:2: non-integer value ''"


# -- CSV spans --------------------------------------------------------------------------------
CELLS = st.sampled_from(["0", "255", "256", "-1", "9", "10", "", " 7 ", "x", "1e3", "1.5", "99999999999999999999",
                         "--5", "²", "1_0", '"3"']) | st.text(max_size=4)


def _csv(directory: Path, rows: list[list[str]], header: str | None = None) -> Path:
    (path,) = (directory / name for name in dataset.split_files(dataset.TRAIN, dataset.CSV))
    header = header if header is not None else ",".join(dataset.CSV_HEADER)
    path.write_text(header + "\n" + "".join(",".join(row) + "\n" for row in rows))
    return path


@given(rows=st.lists(st.tuples(st.integers(0, 3), st.lists(CELLS, max_size=3), st.integers(-2, 2)), max_size=4),
       header=st.none() | st.sampled_from(["", "label", "label,pixel1"]) | st.text(max_size=10))
def test_random_csv_rows_are_landed_or_refused_naming_the_file_and_line(rows, header):
    with tempfile.TemporaryDirectory() as work:
        source, landed = Path(work) / "source", Path(work) / "landing"
        source.mkdir()
        table = []
        for position, cells, width in rows:  # near misses of a good row: some cells changed, width off by a few
            row = ["1"] + ["0"] * (features.NUM_PIXELS + width)
            for offset, cell in enumerate(cells):
                if position + offset < len(row):
                    row[position + offset] = cell
            table.append(row)
        path = _csv(source, table, header)
        _land_or_refuse(source, landed, dataset.CSV, path)


# -- image-folder spans -----------------------------------------------------------------------
@st.composite
def image_files(draw) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".webp", ".txt", ""]))
    kind = draw(st.sampled_from(["image", "bytes", "truncated"]))
    if kind == "bytes":
        return suffix, draw(st.binary(max_size=200))
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "P", "1", "LA", "I;16"]))
    size = (draw(st.integers(1, 300)), draw(st.integers(1, 300)))
    image = Image.new(mode, size, color=draw(st.integers(0, 255)))
    buffer = io.BytesIO()
    fmt = {".jpg": "JPEG", ".gif": "GIF", ".bmp": "BMP", ".webp": "WEBP"}.get(suffix, "PNG")
    try:
        image.save(buffer, fmt)
    except (OSError, ValueError, KeyError):  # a mode this format cannot hold: a grey PNG instead
        buffer = io.BytesIO()
        image.convert("L").save(buffer, "PNG")
    data = buffer.getvalue()
    return suffix, data[:draw(st.integers(0, len(data)))] if kind == "truncated" else data


@given(files=st.lists(st.tuples(st.sampled_from([*features.CLASS_NAMES[:3], "t-shirt_top", "nope", ".hidden"]),
                                image_files()), min_size=1, max_size=4))
def test_an_image_folder_with_odd_files_is_landed_or_refused_naming_the_file(files):
    with tempfile.TemporaryDirectory() as work:
        source, landed = Path(work) / "source", Path(work) / "landing"
        names = []
        for index, (folder, (suffix, data)) in enumerate(files):
            path = source / folder.replace("/", "_") / f"{index}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            names += [path, path.parent]
        _land_or_refuse(source, landed, landing.IMAGES, source, *names)


# -- the serving model config, warmup records, request logs ----------------------------------
CONFIG_WORDS = st.sampled_from(["model_config_list", "config", "name", "base_path", "model_platform", "{", "}", ":",
                                '"fashion_mnist"', '"/m"', '"tensorflow"', "version_labels", "key", "value", "1",
                                "model_version_policy", "specific", "versions", "9999999999999999999999", "<", ">",
                                "#", "\n", "\x00", "\xff", "é"])


@given(words=st.lists(CONFIG_WORDS, max_size=30), raw=st.binary(max_size=40))
def test_a_garbled_model_config_is_read_or_refused_in_one_line_naming_it(tmp_path, words, raw):
    path = tmp_path / "models.config"
    for data in (" ".join(words).encode(), raw, b"model_config_list {" * 200):
        path.write_bytes(data)
        try:
            config = read_model_config(str(path))
        except ValueError as err:
            _one_line(str(err), path)
        else:
            assert config.model_config_list.config


def test_a_model_config_that_is_not_utf8_is_refused_naming_it(tmp_path):
    # Found by fuzzing: the UnicodeDecodeError said neither which file nor that it was the config.
    path = tmp_path / "models.config"
    data = b'model_config_list { config { name: "\xff" } }'
    path.write_bytes(data)
    with pytest.raises(ValueError) as refused:
        read_model_config(str(path))
    assert str(refused.value) == f"{path}: not UTF-8 text (invalid start byte at byte {data.index(0xFF)})"


RECORDS = st.lists(st.binary(max_size=60) | st.sampled_from([b"", b"\x0a\x00", b"\x12\x02\x0a\x00", b"\x0a" * 50]),
                   max_size=4)


def _write_records(path: Path, records: list[bytes], tail: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    with open(path, "ab") as handle:
        handle.write(tail)


@given(records=RECORDS, tail=st.binary(max_size=20))
def test_garbage_warmup_records_are_refused_in_one_line_naming_the_file(tmp_path, records, tail):
    path = Path(warmup.warmup_path(str(tmp_path)))
    _write_records(path, records, tail)
    try:
        logs = warmup.read_logs(str(path))
    except warmup.WarmupError as err:
        _one_line(str(err), path)
    else:
        assert len(logs) == len(records)


@given(records=RECORDS, tail=st.binary(max_size=20))
def test_garbage_request_log_records_are_refused_in_one_line_naming_the_file(tmp_path, records, tail):
    path = tmp_path / request_log.log_file_name(1_700_000_000.0, 1)
    _write_records(path, records, tail)
    try:
        logs = list(request_log.read_request_logs(str(tmp_path)))
    except tf.errors.OpError as err:
        _one_line(err.message, path)
    else:
        assert len(logs) <= len(records)


def test_a_request_log_record_that_is_not_a_prediction_log_names_the_file(tmp_path):
    # Found by fuzzing: the DecodeError was a traceback (callers catch OpError), without the file.
    path = tmp_path / request_log.log_file_name(1_700_000_000.0, 1)
    _write_records(path, [b"\x0a" * 5], b"")
    with pytest.raises(tf.errors.DataLossError) as refused:
        list(request_log.read_request_logs(str(tmp_path)))
    assert refused.value.message.startswith(f"{path}: record 0 is not a PredictionLog (")


# -- delayed labels ---------------------------------------------------------------------------
FIELDS = st.sampled_from([REQUEST_ID, f"{REQUEST_ID}#1", f"{REQUEST_ID}#x", "", "request_id", "label", "time", "3",
                          "10", "-1", "٣", "2026-01-01T00:00:00Z", "1e400", "nan", "inf", "0001-01-01T00:00:00+14:00",
                          "9999-12-31T23:59:59-14:00", '"', "a,b"]) | st.text(max_size=6)


@given(rows=st.lists(st.lists(FIELDS, max_size=4), max_size=4), raw=st.binary(max_size=10))
def test_random_label_rows_are_parsed_or_refused_naming_the_file_and_line(tmp_path, rows, raw):
    path = tmp_path / "labels.csv"
    path.write_bytes("".join(",".join(row) + "\n" for row in rows).encode() + raw)
    try:
        parsed = feedback.parse_label_file(path)
    except feedback.FeedbackError as err:
        _one_line(str(err), path)
        return
    for row in parsed:  # what was accepted is stored or refused (against the log) in one line too
        try:
            feedback.store_labels([row], path, tmp_path / "logs", {REQUEST_ID: 2})
        except feedback.FeedbackError as err:
            _one_line(str(err), path)


@pytest.mark.parametrize("moment", ["1e400", "nan", "0001-01-01T00:00:00+14:00"])
def test_a_label_time_outside_the_calendar_is_refused_naming_the_line(tmp_path, moment):
    # Found by fuzzing: these times were accepted, then storing them raised OverflowError /
    # ValueError (year 0) as a traceback.
    path = tmp_path / "labels.csv"
    path.write_text(f"{REQUEST_ID},3,{moment}\n")
    with pytest.raises(feedback.FeedbackError) as refused:
        feedback.parse_label_file(path)
    assert str(refused.value) == f"{path}:1: time {moment!r} is neither ISO 8601 nor epoch seconds"


# -- settings: YAML files and FMNIST_* variables ----------------------------------------------
@dataclass(frozen=True)
class Fuzzed:
    steps: int = setting(1, "an int")
    rate: float = setting(0.5, "a float")
    fast: bool = setting(False, "a switch")
    where: Path | None = setting(None, "an optional path")
    mode: str = setting("a", "a choice", choices=("a", "b"))


YAML = st.text(alphabet="{}[]:,-?&*!|>'\"#\n abx19.", max_size=40).map(str.encode) | st.binary(max_size=30)
ENV = st.sampled_from(["", "1", "-0", "1e400", "nan", "inf", "9" * 5000, "true", "no", "b", "none", "\x00"]) | st.text(
    max_size=6)


@given(text=YAML, name=st.sampled_from([item.name for item in declared(Fuzzed)]), value=ENV)
def test_a_settings_file_or_variable_is_read_or_refused_in_one_line_naming_it(tmp_path, text, name, value):
    path = tmp_path / "settings.yaml"
    for data in (text, f"{name}: {value}".encode()):
        path.write_bytes(data)
        try:
            fmnist_settings.resolve(Fuzzed, config_file=path, environ={})
        except SettingsError as err:
            _one_line(str(err), path)
    (item,) = [item for item in declared(Fuzzed) if item.name == name]
    try:
        fmnist_settings.resolve(Fuzzed, environ={item.env: value})
    except SettingsError as err:
        _one_line(str(err), item.env)


@pytest.mark.parametrize("data", [b"\xff\xfe steps: 1", b"[" * 5000, b"a: [\n  b: c", b"steps: " + b"9" * 5000])
def test_an_unreadable_settings_file_is_one_line_naming_it(tmp_path, data):
    # Found by fuzzing: non-UTF-8 bytes (UnicodeDecodeError), deep nesting (RecursionError) and a
    # 5,000-digit integer (ValueError in PyYAML's int()) were tracebacks; PyYAML's errors were
    # several lines.
    path = tmp_path / "settings.yaml"
    path.write_bytes(data)
    with pytest.raises(SettingsError) as refused:
        fmnist_settings.read_file(path)
    _one_line(str(refused.value), path)
    assert str(refused.value).startswith(f"{path}: cannot read the settings file (")


# -- through the CLI: the `error: ...` line and the exit status -------------------------------
def _cli(*args: str) -> tuple[int, list[str]]:
    """(exit status, the `error:` lines) of `fmnist ARGS`; TensorFlow's own start-up lines aside,
    stderr holds no traceback."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=env)
    assert "Traceback" not in run.stderr, run.stderr
    return run.returncode, [line for line in run.stderr.splitlines() if line.startswith("error:")]


def test_the_cli_refuses_a_broken_span_and_a_broken_label_file_in_one_line(tmp_path):
    source = tmp_path / "source"
    images, _labels = dataset.write_idx_split(source, dataset.TRAIN, IMAGES, LABELS)
    images.write_bytes(images.read_bytes()[:-7])
    landed = tmp_path / "landing"
    status, errors = _cli("land", str(source), "--landing", str(landed))
    # Bad input data is exit 2, like every file door (cli.main maps DatasetError to it).
    assert status == 2 and len(errors) == 1 and errors[0].startswith(f"error: {images}: "), errors
    assert not landed.exists()

    label_file = tmp_path / "labels.csv"
    label_file.write_text(f"{REQUEST_ID},3,1e400\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    status, errors = _cli("feedback", str(label_file), "--requests", str(logs))
    assert status == 2
    assert errors == [f"error: {label_file}:1: time '1e400' is neither ISO 8601 nor epoch seconds"]
    assert sorted(logs.rglob("*.csv")) == []


# -- Vertex AI logging-table payloads (JSON text the clients sent) ------------------------------
@given(depth=st.integers(0, 5000), opener=st.sampled_from(["[", '{"instances":', '{"a":']),
       inside=st.sampled_from(["", "1", '"x"', "[[1]]"]))
def test_a_logged_payload_is_parsed_or_refused_without_recursing(depth, opener, inside):
    closer = "]" if opener == "[" else "}"
    text = opener * depth + inside + closer * depth
    try:
        vertex_rows.payload_rows(text, "instances")
    except ServingError as err:
        nested = depth + inside.count("[")
        if nested > MAX_JSON_DEPTH:
            assert err.message == f"logged payload nested {nested} levels deep; at most {MAX_JSON_DEPTH} are accepted"
        else:
            assert err.message.startswith('logged "instances" must be a list'), err.message
    except ValueError:  # json.JSONDecodeError: `{"a":` with nothing inside
        assert not inside


@pytest.mark.parametrize("payload", ['{"instances": 1}', '{"instances": {"a": 1}}', '{"instances": null}'])
def test_logged_instances_that_are_not_a_list_are_a_serving_error(payload):
    # Found by fuzzing (make fuzz): {"instances": 1} was a TypeError, which the Vertex canary
    # analysis does not catch: a traceback instead of a line naming the row.
    with pytest.raises(ServingError) as refused:
        vertex_rows.payload_rows(payload, "instances")
    assert refused.value.message.startswith('logged "instances" must be a list, got ')


def test_a_deeply_nested_logged_payload_is_a_serving_error():
    # Found while bounding the REST door: json.loads of a logged payload raised RecursionError.
    with pytest.raises(ServingError) as refused:
        vertex_rows.payload_rows("[" * 100_000, "instances")
    assert refused.value.message == f"logged payload nested 100000 levels deep; at most {MAX_JSON_DEPTH} are accepted"
