"""`fmnist watch`: the continuous-training loop on this machine, unattended.

Polls the landing directory and runs the local pipeline once per span landed after the newest
one the pipeline has ingested (ML Metadata says which), oldest first, one run at a time (the
runner's lock on the output directory), printing one summary line per span. A span the gates
stop is reported and skipped: the loop goes on with the next one. Each push becomes the canary
in the release file; with --auto-release the loop then bakes it on the `fmnist serve` at
--server (serving/release/canary_analysis.py) and promotes or rolls it back by itself, one line each; a
rolled-back canary's span becomes `rejected`, so no later window trains on it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import local_runner
from cli import release as release_command
from cli.commands import command, settings_handler
from fmnist import dataset, landing, settings, tf_env
from fmnist.errors import one_line
from fmnist.settings import setting
from serving.release import canary_analysis as analysis
from serving.release.labels import ReleaseError
from tfx_pipeline.config import PipelineConfig


@dataclass(frozen=True)
class WatchSettings:
    """Settings of the loop itself (the pipeline's are the local runner's)."""

    ENV_SCOPE: ClassVar[str] = "WATCH_"

    interval: float = setting(30.0, "seconds between two looks at the landing directory")
    once: bool = setting(False, "run the spans waiting now (with --auto-release: or decide a waiting canary), "
                                "then exit (for cron or a test)")


@dataclass(frozen=True)
class _AutoRelease:
    auto_release: bool = setting(False, "after a push, bake the canary on --server, then promote or roll it back")
    server: str = setting("127.0.0.1:8501", "REST HOST:PORT of the `fmnist serve` running the release file")


# The last base's fields come first: --auto-release and --server head the group.
@dataclass(frozen=True)
class AutoReleaseSettings(release_command.Thresholds, release_command.LabelledAnswers, release_command.BakeWindow,
                          release_command.AutoSettings, _AutoRelease):
    """After each push (and while a canary is waiting): analyze it on a running server and decide,
    with `fmnist release auto`'s settings (declared there; FMNIST_WATCH_* here). Defaults:
    serving/release/canary_analysis.py's measured thresholds."""

    ENV_SCOPE: ClassVar[str] = "WATCH_"

    # The pipeline's --max-accuracy-drop (the Evaluator's rule) already has this flag in `fmnist watch`.
    max_accuracy_drop: float = setting(analysis.MAX_ACCURACY_DROP, "canary accuracy on labelled answers may trail "
                                                                   "stable's by this much",
                                       name="canary_max_accuracy_drop")


SETTINGS = (*local_runner.SETTINGS, WatchSettings, AutoReleaseSettings)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = command(commands, "watch", "train, validate and push once per newly landed span",
                     __doc__.split("\n\n", 1)[1], usage="%(prog)s [-h] [loop and auto release settings] "
                                                          "[pipeline settings]")
    # The loop's own settings first; the pipeline's (the local runner's) after them.
    settings.add_arguments(parser, WatchSettings, title="the loop")
    settings.add_arguments(parser, AutoReleaseSettings, title="auto release (--auto-release)")
    settings.add_arguments(parser, *local_runner.SETTINGS, title="pipeline settings (as local_runner.py)")
    parser.set_defaults(handler=settings_handler(SETTINGS, main))


def ingested_spans(config: PipelineConfig) -> set[int]:
    """Spans a run of this pipeline has already ingested (whatever the run's outcome)."""
    if not Path(config.metadata_path).exists():
        return set()
    from tfx_pipeline import span_verdicts

    return span_verdicts.ingested_spans(config.metadata_path, config.pipeline_name)


def pending_spans(landed: dict[int, Path], ingested: set[int]) -> list[int]:
    """Landed spans newer than every ingested one, oldest first (a span landed out of order
    behind an ingested one is never trained on: fmnist land refuses to land one anyway)."""
    newest = max(ingested, default=0)
    return sorted(span for span in landed if span > newest)


def run_span(config: PipelineConfig, verbose: bool) -> str:
    """Runs the pipeline on one span; returns its summary line."""
    from reports.spans import span_run

    try:
        local_runner.preflight(config)
    except dataset.DatasetError as err:
        return f"span {config.settings.span}: refused before the run (not ingested): {err}"
    stopped = local_runner.run_quietly(config, verbose)
    return span_run(config.metadata_path, config.pipeline_name).line(stopped)


def release_step(config: PipelineConfig, options: AutoReleaseSettings) -> str | None:
    """Bakes and decides the canary of the release file, if there is one (None when there is not):
    the decision's line. A rolled-back canary's span is recorded as rejected."""
    from serving.release.labels import FileRelease

    release = FileRelease(str(local_runner.release_config_file(config)), base_path=config.serving_model_dir)
    if not Path(release.config_file).exists() or release.status().canary is None:
        return None
    decision = analysis.auto_release(release, options.server, options.policy(), options.bake(),
                                     actor="fmnist watch", on_inconclusive=options.on_inconclusive,
                                     outcomes=options.outcomes())
    line = decision.line()
    if decision.action == analysis.ROLLED_BACK:
        from tfx_pipeline import span_verdicts

        span = span_verdicts.span_of_pushed_version(config.metadata_path, config.pipeline_name, decision.canary)
        if span is not None:
            failed = ", ".join(f"{c.name} {c.verdict}" for c in decision.checks if c.verdict == analysis.FAIL)
            span_verdicts.record(config.metadata_path, config.pipeline_name, span, span_verdicts.REJECTED,
                                 f"canary {decision.canary} rolled back: {failed or decision.note}",
                                 by="fmnist watch (canary analysis)")
            line += f"; span {span} rejected"
    return line


def watch(config: PipelineConfig, interval: float, once: bool, verbose: bool = False,
          say: Callable[[str], None] = print, release: AutoReleaseSettings | None = None) -> int:
    """The loop: runs every pending span, then (unless `once`) waits `interval` seconds and looks
    again. With `release.auto_release`, after each span (and on each look while a canary waits)
    the canary is analyzed and promoted or rolled back. Holds the output directory for its whole
    life, so no other run interleaves."""
    landing_dir = Path(config.landing_root)
    with local_runner.exclusive(local_runner.output_dir(config)):
        say(f"watching {landing_dir} for spans (pipeline {config.pipeline_name}, every {interval:g}s)")
        from tfx_pipeline import progress

        with progress.stderr_to(local_runner.output_dir(config) / local_runner.LOG_FILE):  # TF's import noise
            ingested = ingested_spans(config)
        auto = release is not None and release.auto_release
        while True:
            pending = pending_spans(landing.spans(landing_dir), ingested)
            for span in pending:
                say(run_span(config.replace(span=span), verbose))
                ingested.add(span)
                if auto:  # bake, decide, go on: the next span is judged against what serves then
                    _say_release(config, release, say)
            if auto and not pending:  # a canary still waiting (kept as inconclusive, or pushed by hand)
                _say_release(config, release, say)
            if once:
                return 0
            time.sleep(interval)


def _say_release(config: PipelineConfig, options: AutoReleaseSettings, say: Callable[[str], None]) -> None:
    from serving.release.labels import ReleaseError

    try:
        line = release_step(config, options)
    except ReleaseError as err:  # the server is down, say: the canary waits, the loop goes on
        line = f"release: canary not analyzed: {one_line(err)}"
    if line:
        say(line)


def main(values: settings.Values, args: argparse.Namespace) -> int:
    try:
        tf_env.configure(bool(values["verbose"]))
        config, local = local_runner.build_config(values)
        options: WatchSettings = values.build(WatchSettings)
        release = values.build(AutoReleaseSettings)
        release.policy(), release.bake()  # bad thresholds: one line now, not after the first span
    except (settings.SettingsError, ReleaseError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        return watch(config, options.interval, options.once, local.verbose, release=release)
    except local_runner.RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.status
    except KeyboardInterrupt:
        return 130
