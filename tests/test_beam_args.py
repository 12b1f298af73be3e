"""The local runner's Beam arguments, as TFX's Beam executors read them."""

from pathlib import Path

import pytest
from tfx.utils import dependency_utils

import local_runner


@pytest.mark.parametrize("workers", [1, 2])
def test_beam_components_do_not_build_tfx_sdists_on_the_direct_runner(workers, monkeypatch):
    def no_sdist():
        raise AssertionError("TFX built its ephemeral package")

    monkeypatch.setattr(dependency_utils, "build_ephemeral_package", no_sdist)
    args = list(local_runner.beam_args(workers))
    assert dependency_utils.make_beam_dependency_flags(args) == args
    (setup_file,) = [a.split("=", 1)[1] for a in args if a.startswith("--setup_file=")]
    assert Path(setup_file) == Path(local_runner.__file__).parent / "setup.py" and Path(setup_file).is_file()
    assert f"--direct_num_workers={workers}" in args
