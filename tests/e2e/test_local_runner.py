"""`python local_runner.py` as a user runs it: pre-flight errors in seconds, one run per output
directory, a quiet console, and a run killed during training that completes when started again."""

import gzip
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import local_runner
from fmnist import dataset

REPO = Path(local_runner.__file__).resolve().parent
# What libraries print when they are not kept off the console (TF's C++ log prefixes, absl, CUDA
# plugin registration, Python warnings).
NOISE = ("I0000", "W0000", "E0000", "cuda", "cuDNN", "Warning:", "WARNING", "absl", "tensorflow/")


def _runner(*args, timeout=900, **kwargs):
    """local_runner.py in its own process. Without --landing-dir the spans would be the
    checkout's data/landing: each test gets its own, in its output directory."""
    if "--landing-dir" not in args and "--sample" not in args:
        args = (*args, "--landing-dir", str(Path(args[args.index("--output-dir") + 1]) / "landing"))
    return subprocess.run([sys.executable, str(REPO / "local_runner.py"), *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def _copy(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest


def _rewrite_gz(path: Path, change) -> None:
    data = bytearray(gzip.decompress(path.read_bytes()))
    change(data)
    path.write_bytes(gzip.compress(bytes(data)))


def _bad_label(data: Path) -> str:
    _rewrite_gz(data / dataset.IDX_FILES["test"][1], lambda b: b.__setitem__(8 + 5, 12))
    return r"error: .*t10k-labels-idx1-ubyte\.gz: label 12 at index 5 is outside 0\.\.9 \(1 such label\(s\)\)"


def _truncated(data: Path) -> str:
    path = data / dataset.IDX_FILES["train"][0]
    path.write_bytes(path.read_bytes()[:5000])
    return r"error: .*train-images-idx3-ubyte\.gz: truncated gzip stream \(.*\)"


def _missing(data: Path) -> str:
    (data / dataset.IDX_FILES["test"][0]).unlink()
    return r"error: .*t10k-images-idx3-ubyte\.gz: missing \(the test split of the idx input\)"


def _wrong_magic(data: Path) -> str:
    _rewrite_gz(data / dataset.IDX_FILES["train"][1], lambda b: b.__setitem__(3, 3))
    return r"error: .*train-labels-idx1-ubyte\.gz: wrong magic number 0x00000803, expected 0x00000801 \(.*\)"


# Runs local_runner.py as its own __main__ and, at exit, names which heavy frameworks it loaded.
_LOADED_PROBE = ("import atexit, runpy, sys; atexit.register(lambda: sys.stderr.write('\\nloaded:' + ''.join("
                 "' ' + m for m in ('tensorflow', 'apache_beam', 'tfx') if m in sys.modules))); "
                 "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def _refused(*args: str) -> tuple[subprocess.CompletedProcess, str]:
    """A run expected to stop at pre-flight, and the frameworks it had loaded by then. What keeps
    a refusal in seconds is that the raw files are checked before TensorFlow, Beam or TFX load
    (their import alone is ~10 s on 2 cores); a wall-clock bound alone was flaky (0.7 s warm, 5.6 s
    with a cold page cache, 6.3 s once on a loaded CI machine for the full data)."""
    result = subprocess.run([sys.executable, "-c", _LOADED_PROBE, str(REPO / "local_runner.py"), *args],
                            capture_output=True, text=True, timeout=120)
    result.stderr, loaded = result.stderr.rstrip("\n").rsplit("\n", 1)
    return result, loaded.removeprefix("loaded:")


@pytest.mark.parametrize("breakage", [_bad_label, _truncated, _missing, _wrong_magic])
def test_bad_raw_files_are_rejected_before_tfx_starts_with_one_line(breakage, sample_dir, tmp_path):
    data = _copy(sample_dir, tmp_path / "data")
    expected = breakage(data)
    result, loaded = _refused("--data-dir", str(data), "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert re.fullmatch(expected, result.stderr.strip()), result.stderr
    assert loaded == "", loaded
    out = tmp_path / "out" / "fashion-mnist"
    # Nothing half-written: the lock and the log (with the traceback) only.
    assert sorted(p.name for p in out.iterdir()) == [local_runner.LOCK_FILE, "logs"]
    assert "Traceback" in (out / local_runner.LOG_FILE).read_text()


def test_csv_errors_name_the_line(sample_dir, tmp_path):
    data = tmp_path / "csv"
    data.mkdir()
    for split, name in dataset.CSV_FILES.items():
        with open(data / name, "wb") as out:
            dataset.write_csv_split(dataset.read_split(sample_dir, split), out)
    lines = (data / dataset.CSV_FILES["train"]).read_text().splitlines()
    lines[6] = lines[6].rsplit(",", 1)[0]  # file line 7: one column short
    (data / dataset.CSV_FILES["train"]).write_text("\n".join(lines) + "\n")
    result = _runner("--data-dir", str(data), "--format", "csv", "--output-dir", str(tmp_path / "out"), timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("fashion-mnist_train.csv:7: 784 columns, expected 785"), result.stderr


def test_a_hold_out_larger_than_the_data_is_rejected(sample_dir, tmp_path):
    result = _runner("--data-dir", str(sample_dir), "--eval-holdout", "5000", "--output-dir", str(tmp_path),
                     timeout=60)
    assert result.returncode == 2
    assert "the hold-out of 5000 examples must be between 1 and 999 (it has 1000)" in result.stderr


def test_full_data_preflight_refuses_before_any_framework_loads(full_data_dir, tmp_path):
    data = _copy(full_data_dir, tmp_path / "data")
    _rewrite_gz(data / dataset.IDX_FILES["test"][1], lambda b: b.__setitem__(8 + 9999, 10))
    started = time.perf_counter()
    result, loaded = _refused("--data-dir", str(data), "--output-dir", str(tmp_path / "out"), "--landing-dir",
                              str(tmp_path / "landing"))
    seconds = time.perf_counter() - started
    assert result.returncode == 2 and "label 10 at index 9999" in result.stderr, result.stderr
    assert loaded == "", loaded
    assert seconds < 60, seconds  # the pipeline itself would take minutes


def test_a_second_run_on_the_same_output_is_refused_at_once(sample_dir, tmp_path):
    with local_runner.exclusive(tmp_path / "fashion-mnist-sample"):
        result = _runner("--sample", "--output-dir", str(tmp_path), timeout=60)
    assert result.returncode == 3
    assert f"error: {tmp_path / 'fashion-mnist-sample'} is in use by another run (pid {os.getpid()}" in result.stderr


def test_a_stale_lock_from_a_killed_run_is_taken_over(sample_dir, tmp_path):
    out = tmp_path / "fashion-mnist-sample"
    out.mkdir()
    (out / local_runner.LOCK_FILE).write_text("pid 999999, started 2026-01-01 00:00:00")
    # Bad settings-free input that stops at pre-flight: proves the lock was taken, cheaply.
    result = _runner("--sample", "--eval-holdout", "5000", "--output-dir", str(tmp_path), timeout=60)
    assert result.returncode == 2 and "in use" not in result.stderr
    assert "999999" not in (out / local_runner.LOCK_FILE).read_text()


def test_a_run_killed_during_training_completes_when_started_again(tmp_path):
    args = ("--sample", "--output-dir", str(tmp_path))
    first = subprocess.Popen([sys.executable, str(REPO / "local_runner.py"), *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stdout:
            if "Trainer ..." in line:
                break
        else:
            pytest.fail(f"the first run ended before training: {first.stderr.read()}")
        time.sleep(3)  # inside fit
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL

    second = _runner(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    console = second.stdout.splitlines()
    # A quiet console: the project's lines only, library noise in the log.
    noisy = [line for line in console + second.stderr.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, noisy
    # The first run landed the sample's train files as span 1; this one ingests that span.
    assert console[0].startswith("pipeline fashion-mnist-sample: 1,000 images of span 1 of "), console[0]
    assert "300 test images" in console[0]
    states = dict(line.split()[:2] for line in console if line.split()[:1] and line.split()[0] in {
        "ExampleGen", "StatisticsGen", "Transform", "Trainer", "Pusher"})
    assert states["ExampleGen"] == states["StatisticsGen"] == states["Transform"] == "CACHED", console
    assert states["Trainer"] == "COMPLETE" and states["Pusher"] == "COMPLETE", console
    assert any(line.startswith("pushed model: ") for line in console)
    training = [line for line in console if line.startswith("training: ")]
    assert len(training) == 1 and " images/s; precision " in training[0], console
    log = (tmp_path / "fashion-mnist-sample" / local_runner.LOG_FILE).read_text()
    assert "Component Trainer is running." in log
    # --setup_file spares every Beam component TFX's sdist of itself (3 s, 52 MB in /tmp each).
    assert "Component Evaluator is running." in log and "Attempting to infer TFX Python dependency" not in log
