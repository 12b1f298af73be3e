"""The `fmnist` CLI: starts without TensorFlow and reports bad input as one clear line."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli import main as cli
from cli.commands import SettingsHandler
from fmnist import paths, settings
from serving.server.process import ServerOptions


def test_cli_and_data_readers_do_not_import_tensorflow():
    code = ("import sys, cli.main, fmnist.dataset, fmnist.fetch, fmnist.features; "
            "heavy = [m for m in ('tensorflow', 'apache_beam', 'tfx') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fetch_from_a_directory_without_the_files_fails_with_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    status = cli.main(["fetch", "--dest", str(tmp_path / "raw"), "--source-dir", str(tmp_path / "empty"),
                       "--no-apt", "--no-download"])
    assert status == 1
    assert "error:" in capsys.readouterr().err


def test_sample_command_writes_a_stratified_sample(sample_dir, tmp_path):
    assert cli.main(["sample", "--source-dir", str(sample_dir), "--dest", str(tmp_path),
                     "--train-per-class", "3", "--test-per-class", "2"]) == 0
    from fmnist.dataset import read_split

    assert sorted(read_split(tmp_path, "train").labels.tolist()) == sorted(list(range(10)) * 3)
    assert len(read_split(tmp_path, "test").labels) == 20


def test_report_without_a_metadata_store_fails_fast_and_clearly(tmp_path, capsys):
    assert cli.main(["report", "--pipeline-root", str(tmp_path / "pipeline_root")]) == 1
    assert f"no ML Metadata store at {tmp_path / 'metadata.sqlite'}" in capsys.readouterr().err


# -- one settings system for every command -------------------------------------------------------
def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, its parser) of every runnable `fmnist` command, actions included."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield path, parser
        return
    for name, child in subparsers[0].choices.items():
        yield from _commands(child, (*path, name))


COMMANDS = {words: parser for words, parser in _commands(cli.build_parser())}
POSITIONALS = {("feedback",): ["labels.csv"], ("bq-load",): ["src"], ("predict",): ["test:0"],
               ("release", "canary"): ["17"]}


def _chosen(item: settings.Declared) -> object:
    """A value for `item` that is not its default, as the declared type."""
    kind, _ = settings._base_type(item.type)
    if item.choices:
        return next(c for c in reversed(item.choices) if c != item.default)
    return {bool: not item.default, int: 7, float: 0.25, str: "chosen", Path: Path("chosen/dir")}[kind]


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.parametrize("words", sorted(COMMANDS), ids=" ".join)
def test_every_command_reads_each_setting_from_its_flag_its_variable_and_its_config_file(words, tmp_path):
    handler = COMMANDS[words].get_default("handler")
    assert isinstance(handler, SettingsHandler), f"`fmnist {' '.join(words)}` is not declared with fmnist.settings"
    items = [i for i in settings.declared(*handler.classes) if i.name != settings.CONFIG]
    wanted = {i.name: _chosen(i) for i in items}
    argv = [*words, *POSITIONALS.get(words, [])]
    flags = [a for i in items for a in ([i.flag] if wanted[i.name] is True else
                                        ["--no-" + i.flag[2:]] if wanted[i.name] is False else
                                        [i.flag, _text(wanted[i.name])])]
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump({i.name: _text(wanted[i.name]) for i in items}))
    config_item = next(i for i in settings.declared(*handler.classes) if i.name == settings.CONFIG)
    routes = {"flags": ([*argv, *flags], {}),
              "variables": (argv, {i.env: _text(wanted[i.name]) for i in items}),
              "file": ([*argv, "--config", str(config)], {}),
              "file by variable": (argv, {config_item.env: str(config)})}
    for route, (arguments, environ) in routes.items():
        _, values = cli.resolved(arguments, environ)
        assert {name: values[name] for name in wanted} == wanted, route
        assert values.given >= set(wanted), route


def test_command_variables_do_not_clash_across_commands():
    """Two commands' settings of one name share a variable only when they mean the same thing:
    the pipeline settings of the runners, `fmnist watch` and `fmnist spans`."""
    owners: dict[str, set] = {}
    for parser in COMMANDS.values():
        for cls in parser.get_default("handler").classes:
            for item in settings.declared(cls):
                owners.setdefault(item.env, set()).add(cls)
    shared = {env: classes for env, classes in owners.items() if len(classes) > 1}
    assert not shared, shared


def test_a_bad_setting_of_any_kind_is_one_line_and_exit_2(capsys):
    for argv, environ, message in [
        (["serve"], {"FMNIST_SERVE_REST_PORT": "http"}, "FMNIST_SERVE_REST_PORT: invalid value 'http' for rest_port"),
        (["fetch"], {"FMNIST_FETCH_NO_APT": "maybe"}, "FMNIST_FETCH_NO_APT: invalid value 'maybe' for no_apt"),
        (["sample"], {}, "missing --source-dir (FMNIST_SAMPLE_SOURCE_DIR)"),
    ]:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in environ.items():
                patch.setenv(name, value)
            assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_serve_defaults_live_in_server_options_and_its_default_paths_do_not_depend_on_the_directory(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = cli.serve_options(cli.resolved(["serve", "--tf-serving", "no"])[1], {})
    defaults = ServerOptions()
    assert options.base_path == str(paths.PROJECT_ROOT / defaults.base_path)
    assert {f: getattr(options, f) for f in ("host", "rest_port", "grpc_port", "max_request_bytes", "log_sampling")} \
        == {f: getattr(defaults, f) for f in ("host", "rest_port", "grpc_port", "max_request_bytes", "log_sampling")}
    assert options.use_tf_serving is False
    given = cli.serve_options(cli.resolved(["serve", "--model-base-path", "models"])[1], {"stable": 3})
    assert (given.base_path, given.version_labels, given.model_config_file) == ("models", {"stable": 3}, None)
    with pytest.raises(ValueError, match=r"--log-sampling needs --log-requests DIR"):
        cli.serve_options(cli.resolved(["serve", "--log-sampling", "0.5"])[1], {})
    with pytest.raises(ValueError, match=r"--canary-traffic is a percent within 0\.\.100, got 150"):
        cli.serve_options(cli.resolved(["serve", "--canary-traffic", "150"])[1], {})


# -- help -----------------------------------------------------------------------------------------
def _help(*words: str, capsys) -> str:
    with pytest.raises(SystemExit):
        cli.main([*words, "--help"])
    return capsys.readouterr().out


def test_fmnist_help_groups_every_command_with_its_summary_and_points_to_make_run(capsys):
    text = _help(capsys=capsys)
    headings = [line[:-1] for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headings[:5] == ["data", "pipeline", "serving", "operations", "maintainer tools"]
    listed = {line.split()[0]: text.index(line) for line in text.splitlines()
              if line.startswith("  ") and line.split()[0] in {w[0] for w in COMMANDS}}
    assert set(listed) == {words[0] for words in COMMANDS}
    assert max(listed, key=listed.get) == "sample"  # the maintainer tool comes last
    assert text.index("serving:") < listed["predict"] and text.index("pipeline:") < listed["predictions"]
    assert "make run" in text


def test_each_command_help_starts_with_what_it_does_and_shows_defaults_and_choices(capsys):
    for words in COMMANDS:
        text = _help(*words, capsys=capsys)
        description = text.split("\n\n")[1]
        assert description[0].isupper() and description.endswith("."), (words, description)
    serve = _help("serve", capsys=capsys)
    assert "--tf-serving {auto,yes,no}" in serve and "(default: 8501)" in serve
    assert "--precision {auto,float32,bfloat16}" in _help("watch", capsys=capsys)


def test_watch_help_shows_its_own_flags_before_the_pipeline_settings(capsys):
    text = _help("watch", capsys=capsys)
    own = [text.index(flag) for flag in ("--interval", "--once", "--auto-release", "--bake-seconds")]
    pipeline = [text.index(flag) for flag in ("--pipeline-name", "--epochs", "--output-dir")]
    assert max(own) < text.index("\npipeline settings (as local_runner.py):") < min(pipeline)


def test_no_help_shows_this_machines_absolute_paths(capsys):
    for words in [(), *COMMANDS]:
        text = _help(*words, capsys=capsys)
        assert str(paths.PROJECT_ROOT) not in text and os.path.expanduser("~") + "/" not in text, words
    assert "(default: outputs)" in " ".join(_help("watch", capsys=capsys).split())


def test_watch_auto_release_takes_release_autos_settings_and_builds_the_same_policy():
    from cli import release, watch

    flags = ["--max-error-rate", "0.2", "--p99-floor-ms", "7", "--min-agreement", "0.8", "--bake-requests", "9",
             "--min-labelled", "11", "--on-inconclusive", "rollback"]
    _, watched = cli.resolved(["watch", *flags, "--canary-max-accuracy-drop", "0.03"])
    _, released = cli.resolved(["release", "auto", *flags, "--max-accuracy-drop", "0.03"])
    loop = watched.build(watch.AutoReleaseSettings)
    assert loop.policy() == released.build(release.Thresholds).policy()
    assert loop.bake() == released.build(release.BakeWindow).bake()
    assert loop.on_inconclusive == released.build(release.AutoSettings).on_inconclusive == "rollback"
    # The pipeline's own --max-accuracy-drop (the Evaluator's rule) is another setting in `fmnist watch`.
    _, pipeline = cli.resolved(["watch", "--max-accuracy-drop", "0.02"])
    assert pipeline["max_accuracy_drop"] == 0.02
    assert pipeline.build(watch.AutoReleaseSettings).max_accuracy_drop == watch.analysis.MAX_ACCURACY_DROP != 0.02


@pytest.mark.parametrize("call, frozen", [("run()", True), ("main(['release', '--help'])", False)])
def test_the_program_freezes_its_heap_only_after_every_other_exit_handler(call, frozen):
    """`fmnist` as a program (run(), the console script) freezes the heap at exit, so the
    interpreter's last collections skip TensorFlow's objects; a handler registered before it (run
    after it) sees the frozen heap. A caller's main(argv) in a longer-lived process is left alone."""
    script = ("import atexit, gc, sys\n"
              "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))\n"
              "from cli.main import main, run\n"
              f"sys.argv = ['fmnist', 'release', '--help']\n{call}\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    assert "usage: fmnist release" in done.stdout  # flushed as ever
    assert done.stdout.rstrip().endswith(f"frozen at exit: {frozen}")
