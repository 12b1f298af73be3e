"""Delayed labels ("feedback") for served requests, stored beside the request logs.

Layout, under a request-log directory (`fmnist serve --log-requests DIR`):

    DIR/feedback/labels-<UTC time>-<seq>.csv     one file per accepted batch, never rewritten

Each file is CSV with the header `request_id,label,time`: the request id the answer carried
(fmnist/request_ids.py), the true class id, and when the label was observed (ISO 8601, may be
empty). Files are written under a temporary name and renamed (atomic); a request id appears in at
most one row across all files (the writer refuses duplicates), so readers can take the files in
any order.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

FEEDBACK_DIR = "feedback"
PREFIX, SUFFIX = "labels-", ".csv"
COLUMNS = ("request_id", "label", "time")


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
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def read_labels(log_dir: str | os.PathLike) -> dict[str, Label]:
    """{request id: Label} of every stored label file of `log_dir` (empty when there are none)."""
    labels: dict[str, Label] = {}
    for path in label_files(log_dir):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                labels[row["request_id"]] = Label(row["request_id"], int(row["label"]), parse_time(row["time"] or ""))
    return labels
