"""Run logging: each run's log gets its own lines only, and a run leaves logging as it found it."""

import logging

from tfx_pipeline import progress


def test_each_run_writes_only_its_own_log_and_leaves_logging_as_it_was(tmp_path, capsys):
    root, absl = logging.getLogger(), logging.getLogger("absl")
    handlers_before, level_before, absl_level_before = list(root.handlers), root.level, absl.level
    first, second = tmp_path / "first.log", tmp_path / "second.log"

    with progress.attach(total=1, log_file=str(first)):
        logging.getLogger("absl").info("Component Trainer is running.")
        absl.setLevel(logging.WARNING)  # what some components do mid-run: ignored while attached
        assert absl.getEffectiveLevel() == logging.INFO
    with progress.attach(total=1, log_file=str(second)):
        logging.getLogger("tfx").info("only in the second run")

    # Bug: the first run's FileHandler was never removed, so it received the second run's lines.
    assert "only in the second run" not in first.read_text()
    assert "only in the second run" in second.read_text()
    assert "Component Trainer is running." in first.read_text()
    assert root.handlers == handlers_before and root.level == level_before
    absl.setLevel(logging.ERROR)  # Bug: setLevel stayed replaced by a no-op for good.
    assert absl.level == logging.ERROR
    absl.setLevel(absl_level_before)
    assert "[1/1] Trainer ..." in capsys.readouterr().out


def test_quiet_console_sends_library_output_to_the_log(tmp_path, capfd):
    import os
    import sys

    log = tmp_path / "run.log"
    with progress.quiet_console(log):
        print("the project's line")
        os.write(2, b"E0000 C++ noise\n")
        sys.stderr.write("a library writing to stderr\n")
    captured = capfd.readouterr()
    assert captured.out == "the project's line\n" and captured.err == ""
    text = log.read_text()
    assert "E0000 C++ noise" in text and "a library writing to stderr" in text
