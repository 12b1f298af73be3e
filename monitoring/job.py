"""One run of the monitor: a window of logged calls checked and recorded.

State lives in one directory (the `--out` of `fmnist monitor`):

    windows/<start>--<end>/        one folder per window checked (UTC stamps, so names sort by time)
        serving_statistics.pb      TFDV statistics of the window (image; predicted class as `label`)
        anomalies.pbtxt            TFDV's Anomalies (skew, drift and schema), text proto
        page.html                  the page (monitoring/page.py)
        metrics.prom               the Prometheus gauges of the window
        summary.json               window, versions, scores, live accuracy, verdict: what the next run reads
        answers.csv                each image's label key, version and answer (monitoring/live.py)
    latest.prom                    the gauges of the newest window

A window folder is built under a temporary name and renamed when complete, so the next run's
"previous window" (the one that ends last) is never half written.

Labels come back late (issue #24): each run also judges again the recorded windows that ended
within `relabel_days` whose labelled count grew, and rewrites their summary.json (atomically), so
the live-accuracy chart over windows is up to date; their pages stay as they were written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

from fmnist import files, outcomes
from monitoring import live, metrics, page
from monitoring.checks import CheckResult, check_window
from monitoring.examples import served_examples
from monitoring.live import LiveThresholds
from monitoring.statistics import Statistics, window_statistics

WINDOWS = "windows"
STATISTICS_FILE = "serving_statistics.pb"
ANOMALIES_FILE = "anomalies.pbtxt"
PAGE_FILE = "page.html"
METRICS_FILE = "metrics.prom"
SUMMARY_FILE = "summary.json"
LATEST_METRICS = "latest.prom"
_STAMP = "%Y%m%dT%H%M%SZ"

TrainingLookup = Callable[[int], tuple[Statistics, str]]  # version -> (statistics, where from)
# (start, end) -> {label key: fmnist.feedback.Label} of the calls logged in [start, end) (or more)
LabelLookup = Callable[[float, float], Mapping[str, Any]]


class MonitorError(ValueError):
    """A window that cannot be checked (no traffic, too little, no training statistics...)."""


@dataclass(frozen=True)
class WindowSummary:
    """What a window was and what its checks said (summary.json)."""

    name: str
    start: float  # epoch seconds, inclusive
    end: float  # epoch seconds, exclusive
    requests: int  # logged calls
    images: int
    versions: dict[str, int]  # version -> images it answered
    version: int  # the version compared with its training statistics (the one that answered most)
    training_statistics: str
    previous: str | None
    alert: bool
    scores: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    live: dict[str, dict[str, Any]] = field(default_factory=dict)  # version -> fmnist.outcomes.Tally, as JSON
    live_alerts: list[str] = field(default_factory=list)  # this run's live-accuracy alerts (re-judged windows too)
    directory: str = ""

    @property
    def start_iso(self) -> str:
        return iso(self.start)

    @property
    def end_iso(self) -> str:
        return iso(self.end)

    @property
    def page(self) -> str:
        return os.path.join(self.directory, PAGE_FILE)


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def _stamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime(_STAMP)


def windows(state_dir: str | os.PathLike) -> list[WindowSummary]:
    """The complete windows recorded in `state_dir`, oldest (earliest end) first."""
    root = Path(state_dir) / WINDOWS
    found = []
    for summary in root.glob(f"*/{SUMMARY_FILE}") if root.is_dir() else ():
        if summary.parent.name.startswith("."):
            continue  # a window being written
        row = json.loads(summary.read_text())
        found.append(WindowSummary(**{**row, "directory": str(summary.parent)}))
    return sorted(found, key=lambda w: (w.end, w.start))


def previous_window(state_dir: str | os.PathLike) -> WindowSummary | None:
    """The complete window that ends last in `state_dir` (None before the first)."""
    recorded = windows(state_dir)
    return recorded[-1] if recorded else None


def _write_summary(directory: str | os.PathLike, summary: WindowSummary) -> None:
    # A reader sees the old summary or the new one, never half of one.
    with files.replaced_atomically(Path(directory) / SUMMARY_FILE) as stream:
        stream.write(json.dumps({k: v for k, v in asdict(summary).items() if k != "directory"}, indent=2))


def rejudge(recorded: list[WindowSummary], labels: Mapping[str, Any], thresholds: LiveThresholds,
            since: float) -> tuple[list[WindowSummary], list[str]]:
    """Judges again, with `labels`, the recorded windows (oldest first) that end after `since` and
    whose labelled count changed; rewrites their summary.json. Returns every window as it stands
    now and the alerts of the re-judged ones (a window judged before with too few labels may fail
    now: that is when its accuracy becomes known)."""
    updated, alerts = [], []
    for position, window in enumerate(recorded):
        answers = live.read_answers(Path(window.directory) / live.ANSWERS_FILE)
        before = live.tallies_from_json(window.live)
        if window.end <= since or not answers:
            updated.append(window)
            continue
        counted = outcomes.tally(answers, labels)
        now = {v: outcomes.Tally(before[v].images if v in before else c.images, c.confusion)
               for v, c in counted.items()}
        if all(now[v].labelled == before[v].labelled for v in now if v in before) and set(now) <= set(before):
            updated.append(window)
            continue
        previous = live.tallies_from_json(updated[position - 1].live) if position else None
        figures = live.judge(window.name, now, previous, thresholds)
        alerts += [a for f in figures for a in f.alerts]
        window = WindowSummary(**{**asdict(window), "live": live.tallies_to_json(now)})
        _write_summary(window.directory, window)
        updated.append(window)
    return updated, alerts


def accuracy_history(recorded: Iterable[WindowSummary], min_labelled: int) -> list[tuple[float, dict[str, float]]]:
    """[(window end, {version: live accuracy})] over windows, versions with too few labels left out."""
    history = []
    for window in recorded:
        judged = {v: t.accuracy(min_labelled) for v, t in live.tallies_from_json(window.live).items()}
        history.append((window.end, {v: a for v, a in judged.items() if a is not None}))
    return history


def run_window(logs: Iterable[Any], start: float | None, end: float, state_dir: str | os.PathLike,
               schema: schema_pb2.Schema, training_for: TrainingLookup, min_images: int = 1,
               textfiles: tuple[str | os.PathLike, ...] = (), pushgateway: str | None = None,
               labels_for: LabelLookup | None = None, thresholds: LiveThresholds | None = None,
               relabel_days: float = 7.0) -> WindowSummary:
    """Checks the window [start, end) of `logs` (PredictionLogs of that window, e.g. serving.
    server.request_log.read_request_logs; start None: from the first call logged) against the training
    statistics of the version that answered most of it (`training_for(version)`) and against the
    previous window in `state_dir`, and records it there (see the module doc). Also writes the
    gauges to each of `textfiles` and pushes them to `pushgateway` when given.

    Live accuracy (monitoring/live.py): `labels_for(start, end)` gives the delayed labels of the
    calls logged in [start, end); this window is judged with them, and so again are the recorded
    windows that ended within `relabel_days` of `end` (late labels, see the module doc). Its
    alerts, like the checks', make the window alert. Without `labels_for`, nothing is labelled.

    Raises MonitorError for a window with fewer than `min_images` images (no window is
    recorded: the next run's window starts where the previous recorded one ended, so it covers
    this one too), RequestLogError for a record that is not Fashion-MNIST images, and
    TrainingStatisticsError when the version's training statistics cannot be found."""
    thresholds = thresholds or LiveThresholds()
    requests, calls = 0, []
    for logged in logs:
        calls.append(logged)
        requests += 1
    served = served_examples(calls)
    if len(served) < max(1, min_images):
        span = f"{iso(start) if start is not None else 'the first call logged'} .. {iso(end)}"
        raise MonitorError(f"{len(served)} images logged in the window {span}, fewer than the {max(1, min_images)} "
                           "needed (--min-requests); nothing recorded, the next run's window covers this one")
    start = float(served.timestamps.min()) if start is None else start
    counts = served.version_counts()
    version = next(iter(counts))
    training, training_source = training_for(version)
    serving = window_statistics(served, schema)
    name = f"{_stamp(start)}--{_stamp(end)}"
    since = end - relabel_days * 86400
    recorded = [w for w in windows(state_dir) if w.name != name]  # the same window checked again: replaced
    reach = [w.start for w in recorded if w.end > since]
    labels = labels_for(min([start, *reach]), end) if labels_for is not None else {}
    recorded, live_alerts = rejudge(recorded, labels, thresholds, since)
    previous = recorded[-1] if recorded else None
    answers = served.answers()
    tallies = outcomes.tally(answers, labels)
    figures = live.judge(name, tallies,
                         live.tallies_from_json(previous.live) if previous is not None else None, thresholds)
    live_alerts += [a for f in figures for a in f.alerts]
    previous_stats = (tfdv.load_stats_binary(os.path.join(previous.directory, STATISTICS_FILE))
                      if previous is not None else None)
    result: CheckResult = check_window(serving, training, schema, previous_stats)

    root = Path(state_dir) / WINDOWS
    root.mkdir(parents=True, exist_ok=True)
    summary = WindowSummary(
        name=name, start=start, end=end, requests=requests, images=len(served),
        versions={str(v): n for v, n in counts.items()}, version=version, training_statistics=training_source,
        previous=previous.name if previous is not None else None, alert=result.alert or bool(live_alerts),
        scores=[{"check": s.check, **asdict(s.distance), "alert": s.alert} for s in result.scores],
        problems=result.problems, live=live.tallies_to_json(tallies), live_alerts=live_alerts,
        directory=str(root / name))
    history = accuracy_history([*recorded, summary], thresholds.min_labelled)
    gauges = metrics.registry(result, requests, len(served), version, alert=summary.alert,
                              live_accuracy=metrics.newest_accuracy(history), live_figures=figures)
    building = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        (building / STATISTICS_FILE).write_bytes(serving.SerializeToString())
        (building / ANOMALIES_FILE).write_text(result.anomalies_text())
        page.write(building / PAGE_FILE, asdict(summary) | {"start_iso": summary.start_iso,
                                                            "end_iso": summary.end_iso}, result, training, serving,
                   page.LiveView(figures, history, thresholds, live_alerts))
        metrics.publish(gauges, [building / METRICS_FILE])
        live.write_answers(building / live.ANSWERS_FILE, answers)
        _write_summary(building, summary)
        os.chmod(building, 0o755)  # mkdtemp's folder is private; the pages are for sharing
        if (root / name).exists():  # the same window checked again: the new result replaces it
            shutil.rmtree(root / name)
        os.replace(building, root / name)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    metrics.publish(gauges, [Path(state_dir) / LATEST_METRICS, *textfiles], pushgateway)
    return summary
