"""How `fmnist` subcommands are declared: settings dataclasses (fmnist.settings) turned into
flags, FMNIST_<COMMAND>_* variables and --config YAML keys, and the grouped `fmnist --help`."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmnist import paths, settings
from fmnist.settings import setting

SETTINGS_REFUSED = 2  # a setting that cannot be used: one line, nothing done

# `fmnist --help` lists the commands under these headings, in this order; maintainer tools last.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("data", ("fetch", "land", "feedback", "bq-load")),
    ("pipeline", ("watch", "spans", "report", "predictions")),
    ("serving", ("serve", "predict", "release")),
    ("operations", ("monitor",)),
    ("maintainer tools", ("sample",)),
)
EPILOG = ("Start with `make run` (fetch the data, run the pipeline on this machine) or `make run-sample`; "
          "README.md walks through the rest. Each setting of `fmnist COMMAND --help` is also an FMNIST_* "
          "variable and a key of the command's --config YAML file (flag > variable > file > default).")


@dataclass(frozen=True)
class CommandSettings:
    """The YAML file every command reads its settings from (subclasses add theirs and set
    ENV_SCOPE, so `fmnist fetch` reads FMNIST_FETCH_CONFIG)."""

    config: Path | None = setting(None, "YAML file with any of this command's settings, keys named like the flags")



@dataclass(frozen=True)
class MetadataSettings(CommandSettings):
    """Where a command finds the local runner's ML Metadata: `fmnist report`, `predictions export`."""

    pipeline_root: Path = setting(paths.DEFAULT_PIPELINE_ROOT, "the local runner's pipeline root")
    metadata: Path | None = setting(None, f"ML Metadata SQLite file (default: {paths.METADATA_FILE} beside the "
                                          "pipeline root)")
    pipeline_name: str | None = setting(None, "needed only if the store records several")

    def metadata_file(self) -> Path:
        """--metadata, else the store the local runner writes beside the pipeline root."""
        return self.metadata or self.pipeline_root.resolve().parent / paths.METADATA_FILE

class ParagraphFormatter(argparse.HelpFormatter):
    """Wraps each paragraph of a description on its own, keeping the blank lines between them
    (argparse's default joins a module docstring into one block; the raw formatter wraps nothing)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = textwrap.dedent(text).strip().split("\n\n")
        return "\n\n".join(textwrap.fill(" ".join(p.split()), width, initial_indent=indent,
                                          subsequent_indent=indent) for p in paragraphs)


Handler = Callable[[settings.Values, argparse.Namespace], int]


def parse_moment(text: str | None, name: str) -> float | None:
    """Epoch seconds of a time setting (ISO 8601, naive: UTC, or epoch seconds); None for None.
    ValueError naming the setting's flag for anything else."""
    from fmnist import feedback

    if text is None:
        return None
    try:
        moment = feedback.parse_time(text)  # the one reader of times, label files' included
    except ValueError:
        moment = None
    if moment is None:
        raise ValueError(f"--{name.replace('_', '-')}: {text!r} is neither ISO 8601 nor epoch seconds")
    return moment


@dataclass(frozen=True)
class SettingsHandler:
    """A handler for cli.main's dispatch: resolves `classes` (flag > FMNIST_* > --config file >
    default) and calls `handler(values, args)`; a bad setting (SettingsError, also raised by the
    handler for values that only it can judge) is one line and exit 2."""

    classes: tuple[type, ...]
    handler: Handler

    def resolve(self, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> settings.Values:
        return settings.resolve(self.classes, args, environ)

    def __call__(self, args: argparse.Namespace) -> int:
        try:
            return self.handler(self.resolve(args), args)
        except settings.SettingsError as err:
            print(f"error: {err}", file=sys.stderr)
            return SETTINGS_REFUSED


def settings_handler(classes: tuple[type, ...], handler: Handler) -> SettingsHandler:
    return SettingsHandler(classes, handler)


def command(commands: argparse._SubParsersAction, name: str, summary: str, description: str | None = None,
            **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand whose help starts with what it does (`summary`, also its line in `fmnist
    --help`), then `description` if any; flags show their defaults."""
    text = summary[0].upper() + summary[1:] + "."
    if description:
        text += "\n\n" + description
    return commands.add_parser(name, help=summary, description=text,
                               formatter_class=ParagraphFormatter,
                               **kwargs)


def grouped_commands(commands: argparse._SubParsersAction, width: int = 100) -> str:
    """The GROUPS table of every registered command with its one-line summary. Raises TypeError
    when a command is in no group, or a group names one that does not exist (a test runs this)."""
    summaries = {action.dest: action.help or "" for action in commands._choices_actions}
    grouped = [name for _, names in GROUPS for name in names]
    if sorted(grouped) != sorted(summaries):
        raise TypeError(f"cli.commands.GROUPS lists {sorted(grouped)}, the CLI has {sorted(summaries)}")
    column = max(map(len, grouped)) + 4
    lines = []
    for title, names in GROUPS:
        lines.append(f"{title}:")
        for name in names:
            wrapped = textwrap.wrap(summaries[name], width - column) or [""]
            lines.append(f"  {name:<{column - 2}}{wrapped[0]}")
            lines.extend(" " * column + rest for rest in wrapped[1:])
    return "\n".join(lines)
