"""Delayed labels ("feedback") for served requests, stored beside the request logs.

Layout, under a request-log directory (`fmnist serve --log-requests DIR`):

    DIR/feedback/labels-<UTC time>-<seq>.csv     one file per accepted batch, never rewritten

Each file is CSV with the header `request_id,label,time`: the request id the answer carried
(fmnist/request_ids.py), the true class id, and when the label was observed (ISO 8601, may be
empty). Files are written under a temporary name and renamed (atomic); a key (below) appears in
at most one row across all files (the writer skips repeats and refuses conflicting labels), so
readers can take the files in any order.

One request may carry several images, and each needs its own label, so the `request_id` cell is an
image key: `ID` for a request of one image, `ID#N` for image N (from 0) of a request of several
(`#` is outside the id alphabet, so the split is never ambiguous). Stored keys are canonical:
`ID#0` of a one-image request is stored as `ID`.

The writer (store_labels) checks every row against the request log's index of ids (request id ->
images, built by the caller: reading PredictionLogs needs TensorFlow, which this package never
imports) and refuses the whole file at the first bad row with a FeedbackError "FILE:LINE: what".
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import os
import re
import time as clock
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fmnist import features, files, request_ids

FEEDBACK_DIR = "feedback"
PREFIX, SUFFIX = "labels-", ".csv"
COLUMNS = ("request_id", "label", "time")
KEY_SEPARATOR = "#"  # ID#N: image N of a request of several
_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"  # as the request log's file names: names sort by time
_FILE_NAME = re.compile(rf"^{PREFIX}(\d{{8}}T\d{{6}}\.\d{{6}}Z)-(\d+){re.escape(SUFFIX)}$")
_LOCK = ".labels.lock"


class FeedbackError(ValueError):
    """A label file that cannot be stored, or labels that cannot be landed (one line, FILE:LINE first)."""


@dataclass(frozen=True)
class Label:
    """One delayed label: which answer it is for, the true class, and when it was observed."""

    request_id: str
    label: int
    time: float | None  # epoch seconds, None when the source gave no time


def feedback_dir(log_dir: str | os.PathLike) -> Path:
    return Path(log_dir) / FEEDBACK_DIR


def label_files(log_dir: str | os.PathLike) -> list[Path]:
    """The closed label files of a request-log directory, oldest first (names sort by time)."""
    folder = feedback_dir(log_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(PREFIX) and p.name.endswith(SUFFIX))


def parse_time(text: str) -> float | None:
    """ISO 8601 (a trailing Z allowed; naive means UTC) or epoch seconds, as epoch seconds; "" is None.
    ValueError for anything else."""
    text = text.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    # Found by fuzzing: inf, nan or year 0 in UTC passed here and failed as a traceback when stored.
    try:
        datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{text!r} is not a time within the years 1..9999 UTC") from None
    return seconds


def read_labels(log_dir: str | os.PathLike) -> dict[str, Label]:
    """{request id: Label} of every stored label file of `log_dir` (empty when there are none)."""
    labels: dict[str, Label] = {}
    for path in label_files(log_dir):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                labels[row["request_id"]] = Label(row["request_id"], int(row["label"]), parse_time(row["time"] or ""))
    return labels


# -- image keys ---------------------------------------------------------------------------------
def split_key(key: str) -> tuple[str, int | None]:
    """(request id, image index or None) of an image key `ID` or `ID#N`; ValueError (one line) when
    the id is not a request id or N is not a whole number."""
    request_id, separator, index = key.partition(KEY_SEPARATOR)
    request_ids.check(request_id)
    if not separator:
        return request_id, None
    if not index.isdigit() or not index.isascii():
        raise ValueError(f"{key!r}: the image index after {KEY_SEPARATOR!r} must be a whole number >= 0")
    return request_id, int(index)


def image_keys(request_id: str, images: int) -> list[str]:
    """The canonical keys of a request's images: [ID] for one image, [ID#0, ID#1, ...] for several."""
    return [request_id] if images == 1 else [f"{request_id}{KEY_SEPARATOR}{i}" for i in range(images)]


def canonical_key(key: str, index: Mapping[str, int]) -> str:
    """The stored form of `key`, checked against `index` ({request id: images} of the request log);
    ValueError (one line) for an id no closed log file holds or an image the request does not have."""
    request_id, position = split_key(key)
    images = index.get(request_id)
    if images is None:
        raise ValueError(f"unknown request id {request_id!r} (in no closed request log file)")
    if position is None:
        if images != 1:
            raise ValueError(f"request {request_id!r} carried {images} images: label each one as "
                             f"{request_id}{KEY_SEPARATOR}0 .. {request_id}{KEY_SEPARATOR}{images - 1}")
        return request_id
    if position >= images:
        raise ValueError(f"request {request_id!r} carried {images} image(s), it has no image {position}")
    return image_keys(request_id, images)[position]


# -- reading a delayed-label file -----------------------------------------------------------------
@dataclass(frozen=True)
class LabelRow:
    """One row of a delayed-label file as given (its key not yet checked against the log)."""

    line: int
    key: str
    label: int
    time: float | None


def _is_header(cells: list[str]) -> bool:
    return [c.strip().lower() for c in cells] in (list(COLUMNS[:2]), list(COLUMNS))


def parse_label_file(path: str | os.PathLike) -> list[LabelRow]:
    """The rows of a delayed-label CSV `request_id,label[,time]` (header optional; time ISO 8601 or
    epoch seconds), syntax and ranges checked. FeedbackError "FILE:LINE: what" at the first bad row."""
    rows: list[LabelRow] = []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            for cells in reader:
                line = reader.line_num
                if not cells or all(not c.strip() for c in cells):
                    continue  # blank lines (a trailing newline, a hand-edited file)
                if not rows and _is_header(cells):
                    continue
                rows.append(_parse_row(cells, f"{path}:{line}", line))
    except UnicodeDecodeError as err:
        raise FeedbackError(f"{path}: not UTF-8 text ({err.reason})") from None
    except csv.Error as err:
        raise FeedbackError(f"{path}: not CSV ({err})") from None
    if not rows:
        raise FeedbackError(f"{path}:1: no label rows (expected request_id,label[,time])")
    return rows


def _parse_row(cells: list[str], where: str, line: int) -> LabelRow:
    if len(cells) not in (2, 3):
        raise FeedbackError(f"{where}: expected request_id,label[,time], got {len(cells)} fields")
    key, label_text = cells[0].strip(), cells[1].strip()
    try:
        split_key(key)
    except ValueError as err:
        raise FeedbackError(f"{where}: {err}") from None
    if not (label_text.isdigit() and label_text.isascii()) or int(label_text) >= features.NUM_CLASSES:
        raise FeedbackError(f"{where}: label {label_text!r} is not a class id within 0..{features.NUM_CLASSES - 1}")
    try:
        moment = parse_time(cells[2]) if len(cells) == 3 else None
    except ValueError:
        raise FeedbackError(f"{where}: time {cells[2].strip()!r} is neither ISO 8601 nor epoch seconds") from None
    return LabelRow(line, key, int(label_text), moment)


# -- storing ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stored:
    """What store_labels did: labels written, rows skipped as already known, the new file (None: none)."""

    stored: int
    already_known: int
    path: Path | None


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    # Blocking: a second `fmnist feedback` waits its turn (it must see the first one's labels to
    # find duplicates), it never interleaves.
    with open(folder / _LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _format_time(moment: float | None) -> str:
    return "" if moment is None else datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def _next_path(folder: Path, now: float) -> Path:
    sequences = [int(m[2]) for p in folder.iterdir() if (m := _FILE_NAME.match(p.name))]
    stamp = datetime.fromtimestamp(now, UTC).strftime(_TIME_FORMAT)
    return folder / f"{PREFIX}{stamp}-{max(sequences, default=0) + 1:06d}{SUFFIX}"


def _write_atomic(target: Path, rows: list[tuple[str, int, float | None]]) -> None:
    # Durable: a label file acknowledged as stored must survive a crash.
    with files.replaced_atomically(target, newline="", mode=0o644, durable=True) as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows([key, label, _format_time(moment)] for key, label, moment in rows)


def store_labels(rows: list[LabelRow], source: str | os.PathLike, log_dir: str | os.PathLike,
                 index: Mapping[str, int], now: float | None = None) -> Stored:
    """Checks every row (parse_label_file of the file `source`) and stores the new ones as ONE new
    file under `log_dir`/feedback. `index`: {request id: images} of the closed request log files.

    Refuses the whole file (FeedbackError "FILE:LINE: what", nothing written) for a malformed row,
    an invalid id, a label outside 0..9, an id or image the log does not hold, or a key given a
    different label earlier in the file or in a stored file. A key given the same label again is
    skipped and counted. Never rewrites a stored file."""
    folder = feedback_dir(log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder):
        stored = read_labels(log_dir)  # under the lock: another writer's labels count as known
        new: dict[str, tuple[int, int, float | None]] = {}  # key -> (line, label, time)
        known = 0
        for row in rows:
            where = f"{source}:{row.line}"
            try:
                key = canonical_key(row.key, index)
            except ValueError as err:
                raise FeedbackError(f"{where}: {err}") from None
            earlier = stored.get(key)
            if earlier is not None:
                if earlier.label != row.label:
                    raise FeedbackError(f"{where}: {key} already has label {earlier.label} (stored), not {row.label}")
                known += 1
            elif key in new:
                line, label, _ = new[key]
                if label != row.label:
                    raise FeedbackError(f"{where}: {key} has label {label} on line {line}, not {row.label}")
                known += 1
            else:
                new[key] = (row.line, row.label, row.time)
        if not new:
            return Stored(0, known, None)
        target = _next_path(folder, clock.time() if now is None else now)
        _write_atomic(target, [(key, label, moment) for key, (_, label, moment) in new.items()])
    return Stored(len(new), known, target)


def file_time(path: str | os.PathLike) -> float | None:
    """When a label file was written, from its name (epoch seconds); None for another name."""
    match = _FILE_NAME.match(Path(path).name)
    if not match:
        return None
    return datetime.strptime(match[1], _TIME_FORMAT).replace(tzinfo=UTC).timestamp()


def remove_older_than(log_dir: str | os.PathLike, days: float, now: float | None = None) -> list[Path]:
    """Deletes the label files written more than `days` days before `now` (by the time in their
    names) and returns them; days <= 0 keeps everything."""
    if days <= 0:
        return []
    cutoff = (clock.time() if now is None else now) - days * 86400
    folder = feedback_dir(log_dir)
    if not folder.is_dir():
        return []
    removed = []
    with _exclusive(folder):
        for path in label_files(log_dir):
            written = file_time(path)
            if written is not None and written < cutoff:
                path.unlink()
                removed.append(path)
    return removed
