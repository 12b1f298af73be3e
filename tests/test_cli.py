"""The `fmnist` CLI: starts without TensorFlow and reports bad input as one clear line."""

import subprocess
import sys

from cli import main as cli


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
