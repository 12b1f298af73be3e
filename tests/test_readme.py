"""The README's commands exist as written, and its `make run-sample` then `make serve` works.

Every fenced code block of README.md is read; each line that runs `fmnist`, `.venv/bin/fmnist` or
`make` (after a `$ ` prompt or `VAR=value` prefixes, `\\` continuations joined) is checked: an
`fmnist` line's subcommands must exist and each `--flag` it uses must appear, exactly, in that
subcommand's `--help`; a `make` line's targets must pass `make -n`. Nothing is run for real.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from cli import main as cli

REPO = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\S*)\s*$")
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
FMNIST = {"fmnist", ".venv/bin/fmnist"}
OPERATORS = {"&&", "||", ";", "|", "&"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def fenced_lines(markdown: str) -> list[tuple[int, str]]:
    """(line number, logical line) of every shell-like fenced block, continuations joined."""
    lines: list[tuple[int, str]] = []
    language: str | None = None
    pending = ""
    start = 0
    for number, line in enumerate(markdown.splitlines(), 1):
        fence = FENCE.match(line.strip())
        if fence:
            language = None if language is not None else fence.group(1)
            continue
        if language not in SHELL_BLOCKS:
            continue
        if not pending:
            start = number
        stripped = line.strip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append((start, pending + stripped))
        pending = ""
    return lines


def commands(line: str) -> list[list[str]]:
    """The `fmnist` / `make` commands of one shell line, as argv lists (output lines give none)."""
    if line.startswith("$ "):
        line = line[2:]
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    found, current = [], []
    for token in [*lexer, ";"]:
        if token not in OPERATORS:
            current.append(token)
            continue
        while current and ASSIGNMENT.match(current[0]):
            current.pop(0)
        if current and (current[0] in FMNIST or current[0] == "make"):
            found.append(current)
        current = []
    return found


def readme_commands(kind: str) -> list[tuple[str, list[str]]]:
    text = (REPO / "README.md").read_text()
    return [(f"README.md:{number}: {line}", argv) for number, line in fenced_lines(text)
            for argv in commands(line) if (argv[0] == "make") == (kind == "make")]


@cache
def help_text(path: tuple[str, ...]) -> str:
    """`fmnist PATH... --help`, in-process: argparse prints and exits before any handler runs."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
        cli.main([*path, "--help"])
    assert done.value.code == 0, f"fmnist {' '.join(path)} --help: {err.getvalue().strip()}"
    return out.getvalue()


def subcommand_path(args: list[str]) -> tuple[str, ...]:
    """The leading words of `args` that are subcommands: each one's help names it in its usage line."""
    path: tuple[str, ...] = ()
    for word in args:
        if word.startswith("-"):
            break
        usage = help_text((*path, word)).split("\n", 1)[0].split()
        if usage[2:3 + len(path)] != [*path, word]:
            break
        path = (*path, word)
    return path


def flags_missing(argv: list[str]) -> tuple[tuple[str, ...], list[str]]:
    args = argv[1:]
    path = subcommand_path(args)
    text = help_text(path)
    flags = [word.lstrip("[").split("=", 1)[0].rstrip("]") for word in args if word.lstrip("[").startswith("--")]
    return path, [flag for flag in flags if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text)]


FMNIST_LINES = readme_commands("fmnist")
MAKE_LINES = readme_commands("make")


def test_the_readme_has_commands_to_check():
    # A fence the parser stopped recognising would make every other test here vacuous.
    assert len(FMNIST_LINES) >= 10 and len(MAKE_LINES) >= 4


@pytest.mark.parametrize(("where", "argv"), FMNIST_LINES, ids=[w for w, _ in FMNIST_LINES])
def test_every_fmnist_command_and_flag_exists(where, argv):
    path, missing = flags_missing(argv)
    assert path, f"{where}: no subcommand"
    assert not missing, f"{where}: fmnist {' '.join(path)} has no {', '.join(missing)}"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(("where", "argv"), MAKE_LINES, ids=[w for w, _ in MAKE_LINES])
def test_every_make_target_exists(where, argv, tmp_path):
    done = subprocess.run(["make", "-n", *argv[1:], f"OUTPUT_DIR={tmp_path}"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, f"{where}: {done.stderr.strip()}"


def test_a_misspelt_flag_or_subcommand_is_caught():
    assert flags_missing([".venv/bin/fmnist", "watch", "--landing", "data/landing"])[1] == ["--landing"]
    assert flags_missing([".venv/bin/fmnist", "land", "new/", "--landing", "data/landing"]) == (("land",), [])
    assert flags_missing(["fmnist", "release", "auto", "--server", "h:1"]) == (("release", "auto"), [])
    with pytest.raises(AssertionError, match="invalid choice"):
        flags_missing(["fmnist", "serv", "--host", "0.0.0.0"])


def test_commands_are_read_from_fences_prompts_and_continuations():
    markdown = "\n".join([
        "fmnist outside a fence", "```bash", ".venv/bin/fmnist serve --host 0.0.0.0 &  # note",
        "FOO=1 make run RUN_ARGS=\"--epochs 5\" && .venv/bin/fmnist land a \\", "    --format csv", "```",
        "```console", "$ fmnist spans", "span  examples", "```", "```python", "fmnist(1)", "```"])
    found = [argv for _, line in fenced_lines(markdown) for argv in commands(line)]
    assert found == [[".venv/bin/fmnist", "serve", "--host", "0.0.0.0"],
                     ["make", "run", "RUN_ARGS=--epochs 5"],
                     [".venv/bin/fmnist", "land", "a", "--format", "csv"],
                     ["fmnist", "spans"]]


# `make run-sample` then `make serve`: serve (and watch, span) work on the pipeline run last.

def make_dry(target: str, output: Path, *extra: str) -> str:
    done = subprocess.run(["make", "-n", target, f"OUTPUT_DIR={output}", *extra], cwd=REPO,
                          capture_output=True, text=True, check=True)
    return done.stdout


def pipeline_dir(output: Path, name: str, age: float = 0.0, released: bool = True) -> Path:
    path = output / name
    (path / "serving_model").mkdir(parents=True)
    if released:
        (path / "models.config").write_text("model_config_list {}\n")
    os.utime(path, (path.stat().st_atime - age, path.stat().st_mtime - age))
    return path


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@needs_make
def test_serve_after_run_sample_serves_the_sample(tmp_path):
    sample = pipeline_dir(tmp_path, "fashion-mnist-sample")
    assert f"serve --model-config-file {sample}/models.config" in make_dry("serve", tmp_path)


@needs_make
def test_serve_picks_the_pipeline_run_last_or_the_one_named(tmp_path):
    full = pipeline_dir(tmp_path, "fashion-mnist", age=60)
    sample = pipeline_dir(tmp_path, "fashion-mnist-sample", released=False)
    assert f"--model-base-path {sample}/serving_model" in make_dry("serve", tmp_path)
    assert f"--model-config-file {full}/models.config" in make_dry("serve", tmp_path, "PIPELINE=fashion-mnist")
    os.utime(full)
    assert f"--model-config-file {full}/models.config" in make_dry("serve", tmp_path)


@needs_make
def test_serve_before_any_run_names_the_main_pipeline(tmp_path):
    assert f"--model-base-path {tmp_path}/fashion-mnist/serving_model" in make_dry("serve", tmp_path)


@needs_make
def test_make_span_lands_a_second_span_where_the_sample_loop_looks(tmp_path):
    """`make span` after `make run-sample`, its commands run (through this checkout's CLI)."""
    import local_runner
    from fmnist import landing

    pipeline_dir(tmp_path, "fashion-mnist-sample")
    config = local_runner.config_from_args(["--sample", "--output-dir", str(tmp_path)], environ={})
    lines = make_dry("span", tmp_path).replace("\\\n", " ").splitlines()
    for line in (line for line in lines if line.startswith(".venv/bin/fmnist ")):
        assert cli.main(shlex.split(line)[1:]) == 0
    spans = landing.spans(Path(config.landing_root))
    assert list(spans) == [1]
    labels = landing.read_source(spans[1], "idx").labels
    assert len(labels) == 500 and set(labels.tolist()) == set(range(10))
