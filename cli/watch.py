"""`fmnist watch`: the continuous-training loop on this machine.

Polls the landing directory and runs the local pipeline once per span landed after the newest
one the pipeline has ingested (ML Metadata says which), oldest first, one run at a time (the
runner's lock on the output directory), printing one summary line per span. A span the gates
stop is reported and skipped: the loop goes on with the next one. A `fmnist serve` on the push
directory picks each pushed version up by itself.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import local_runner
from fmnist import dataset, landing, settings, tf_env
from fmnist.settings import setting
from tfx_pipeline.config import PipelineConfig


@dataclass(frozen=True)
class WatchSettings:
    """Settings of the loop itself (the pipeline's are the local runner's)."""

    interval: float = setting(30.0, "seconds between two looks at the landing directory")
    once: bool = setting(False, "run the spans waiting now, then exit (for cron or a test)")


SETTINGS = (*local_runner.SETTINGS, WatchSettings)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("watch", help="train, validate and push once per newly landed span")
    settings.add_arguments(parser, *SETTINGS)
    parser.set_defaults(handler=main)


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


def watch(config: PipelineConfig, interval: float, once: bool, verbose: bool = False,
          say: Callable[[str], None] = print) -> int:
    """The loop: runs every pending span, then (unless `once`) waits `interval` seconds and looks
    again. Holds the output directory for its whole life, so no other run interleaves."""
    landing_dir = Path(config.landing_root)
    with local_runner.exclusive(local_runner.output_dir(config)):
        say(f"watching {landing_dir} for spans (pipeline {config.pipeline_name}, every {interval:g}s)")
        from tfx_pipeline import progress

        with progress.stderr_to(local_runner.output_dir(config) / local_runner.LOG_FILE):  # TF's import noise
            ingested = ingested_spans(config)
        while True:
            for span in pending_spans(landing.spans(landing_dir), ingested):
                say(run_span(config.replace(span=span), verbose))
                ingested.add(span)
            if once:
                return 0
            time.sleep(interval)


def main(args: argparse.Namespace) -> int:
    try:
        values = settings.resolve(SETTINGS, args, environ=None)
        tf_env.configure(bool(values["verbose"]))
        config, local = local_runner.build_config(values)
        options: WatchSettings = values.build(WatchSettings)
    except settings.SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        return watch(config, options.interval, options.once, local.verbose)
    except local_runner.RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.status
    except KeyboardInterrupt:
        return 130
