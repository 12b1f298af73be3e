"""`fmnist spans [list|history|quarantine N|release N]`: the verdict of every span, and the two
changes a person makes to them.

A span's verdict (tfx_pipeline.span_verdicts) decides whether it may be trained on: only
`accepted` and `released` spans enter a rolling window or become the drift gate's baseline.
`quarantine` takes a span out (bad labels found later, a privacy request); `release` lets a
drifted, anomalous, rejected or quarantined span back in. Both are recorded with who and why.
The paths come from the same settings as `fmnist watch` and the local runner.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import local_runner
from cli.commands import command, settings_handler
from fmnist import dataset, landing, settings, tf_env
from fmnist.settings import setting
from tfx_pipeline.config import PipelineConfig

ACTIONS = ("list", "history", "quarantine", "release")


@dataclass(frozen=True)
class SpanActionSettings:
    """Settings of `fmnist spans quarantine|release`."""

    ENV_SCOPE: ClassVar[str] = "SPANS_"

    why: str | None = setting(None, "quarantine/release: the reason, recorded with the verdict (required)")
    by: str | None = setting(None, "quarantine/release: who decides (default: this user)")
    vertex_project: str | None = setting(None, "the spans of a Vertex pipeline: the GCP project whose Vertex ML "
                                               "Metadata holds their verdicts (default: the local store)")
    vertex_region: str | None = setting(None, "with --vertex-project: its Vertex AI region")


SETTINGS = (*local_runner.SETTINGS, SpanActionSettings)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = command(commands, "spans", "list each span's verdict (accepted, drifted, anomalous, rejected, "
                                        "quarantined, released); quarantine or release one",
                     __doc__.split("\n\n", 1)[1],
                     usage="%(prog)s [-h] [list | history | quarantine N | release N] [settings]")
    parser.add_argument("action", nargs="?", default="list", choices=ACTIONS,
                        help="list (default): one row per span; history: every verdict recorded; quarantine N / "
                             "release N: change span N's verdict")
    # dest span_number: `span` is also the pipeline setting --span, which a positional default would hide.
    parser.add_argument("span_number", nargs="?", type=int, metavar="span", help="the span, for quarantine and release")
    settings.add_arguments(parser, SpanActionSettings, title="quarantine and release")
    settings.add_arguments(parser, *local_runner.SETTINGS, title="pipeline settings (as local_runner.py)")
    parser.set_defaults(handler=settings_handler(SETTINGS, main))


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *rows])


def list_spans(config: PipelineConfig) -> str:
    """One row per landed or ingested span: examples, verdict and reason, golden gate, model. A
    landed span no run ingested is checked as the runner's pre-flight would: refused, or waiting."""
    from reports.spans import span_table

    metadata_path, pipeline_name = config.metadata_path, config.pipeline_name
    landing_dir = Path(config.landing_root)
    runs = span_table(metadata_path, pipeline_name) if Path(metadata_path).exists() else {}
    rows = []
    for span in sorted(set(runs) | set(landing.spans(landing_dir))):
        run = runs.get(span)
        if run is None:
            try:
                examples, state = f"{local_runner.preflight(config.replace(span=span))['train']:,}", "waiting for a run"
            except dataset.DatasetError as err:
                examples, state = "-", f"refused before a run: {err}"
            rows.append([str(span), examples, "not ingested", state, "-", "-"])
            continue
        rows.append([str(span), f"{run.examples:,}" if run.examples else "-", run.verdict or "none (run failed)",
                     run.verdict_reason or "-", run.golden_line() if run.golden_accuracy is not None else "-",
                     run.pushed_version or "-"])
    if not rows:
        return f"no spans landed in {landing_dir} or ingested by {pipeline_name}"
    return _table(rows, ["span", "examples", "verdict", "reason", "golden gate", "model version"])


def _rows(found) -> list[list[str]]:
    return [[time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.at)), str(v.span), v.verdict, v.by, v.reason]
            for v in found]


def _history(metadata_path: str, pipeline_name: str) -> str:
    from tfx_pipeline import span_verdicts

    found = span_verdicts.history(metadata_path, pipeline_name) if Path(metadata_path).exists() else []
    if not found:
        return f"no verdicts recorded for {pipeline_name}"
    return _table(_rows(found), ["time", "span", "verdict", "by", "reason"])


def _effect(span: int, made) -> str:
    effect = ("it enters the next rolling windows" if made.trainable else
              "no later window trains on it (a model it trained stays served until rolled back: `fmnist release`)")
    return f"span {span} is {made.verdict} ({made.by}: {made.reason}); {effect}"


def change(metadata_path: str, pipeline_name: str, action: str, span: int, why: str, by: str | None) -> str:
    """Quarantines or releases `span`; returns the line saying so. Raises VerdictError."""
    from tfx_pipeline import span_verdicts

    verdict, allowed = span_verdicts.manual_change(action)
    made = span_verdicts.record(metadata_path, pipeline_name, span, verdict, why,
                                by=by or f"{getpass.getuser()} (fmnist spans)", allowed_from=allowed)
    return _effect(span, made)


def on_vertex(store, action: str, span: int | None, why: str | None, by: str | None) -> str:
    """`fmnist spans` against a tfx_pipeline.vertex_verdicts.VertexVerdicts `store`: list (each
    span's current verdict), history, or quarantine/release `span`. Raises VerdictError."""
    from tfx_pipeline import span_verdicts

    if action in ("list", "history"):
        found = [r.verdict for r in (store.current().values() if action == "list" else store.history())]
        found = sorted(found, key=lambda v: v.span) if action == "list" else found
        return _table(_rows(found), ["time", "span", "verdict", "by", "reason"]) if found else "no verdicts recorded"
    verdict, allowed = span_verdicts.manual_change(action)
    made = store.record(span, verdict, why, by=by or f"{getpass.getuser()} (fmnist spans)", allowed_from=allowed)
    return _effect(span, made.verdict)


def main(values: settings.Values, args: argparse.Namespace) -> int:
    tf_env.configure()
    from tfx_pipeline.span_verdicts import VerdictError

    try:
        config, _ = local_runner.build_config(values)
        options: SpanActionSettings = values.build(SpanActionSettings)
    except settings.SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    listing = args.action in ("list", "history")
    if listing and args.span_number is not None:
        print(f"error: `fmnist spans {args.action}` takes no span number", file=sys.stderr)
        return 2
    if not listing and (args.span_number is None or not options.why):
        print(f"error: `fmnist spans {args.action}` needs a span number and --why TEXT", file=sys.stderr)
        return 2
    if options.vertex_project:
        from tfx_pipeline.vertex_verdicts import VertexVerdicts

        if not options.vertex_region:
            print("error: --vertex-project needs --vertex-region", file=sys.stderr)
            return 2
        try:
            print(on_vertex(VertexVerdicts(options.vertex_project, options.vertex_region, config.pipeline_name),
                            args.action, args.span_number, options.why, options.by))
        except VerdictError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    if not listing and not Path(config.metadata_path).exists():
        print(f"error: no ML Metadata store at {config.metadata_path}: no span was ingested yet", file=sys.stderr)
        return 2
    from tfx_pipeline import progress

    try:
        with progress.stderr_to(local_runner.output_dir(config) / local_runner.LOG_FILE):  # library noise
            if args.action == "list":
                text = list_spans(config)
            elif args.action == "history":
                text = _history(config.metadata_path, config.pipeline_name)
            else:
                text = change(config.metadata_path, config.pipeline_name, args.action, args.span_number, options.why,
                              options.by)
    except VerdictError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0
