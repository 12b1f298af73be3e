"""End-to-end tests: real LocalDagRunner runs (and runner processes) on the committed sample."""

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from fmnist import dataset


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def first_sample_run(tmp_path_factory, sample_dir) -> Callable[[], object]:
    """The committed sample's first pipeline run, once per session: cold (--no-warm-start, so a
    rerun of the same config is cached up to the Evaluator), its test images also labelled by
    bulk inference. Returns `restore()`, which puts the output tree back as that run left it and
    returns the run's PipelineConfig: a module that adds runs to the history calls it first, so
    no module sees another's runs. (The tree is restored in place: ML Metadata and the release
    file hold absolute paths.)"""
    import local_runner

    work = tmp_path_factory.mktemp("first-sample-run")
    unlabelled = work / "unlabelled"  # the test images alone: no labels file
    unlabelled.mkdir()
    shutil.copy(sample_dir / dataset.IDX_FILES[dataset.TEST][0], unlabelled)
    config = local_runner.config_from_args(
        ["--sample", "--data-dir", str(sample_dir), "--output-dir", str(work / "out"), "--no-warm-start",
         "--bulk-inference-input", str(unlabelled)], environ={})
    local_runner.run(config)
    tree = Path(config.metadata_path).parent
    snapshot = work / "snapshot"
    shutil.copytree(tree, snapshot)

    def restore():
        shutil.rmtree(tree)
        shutil.copytree(snapshot, tree)
        return config
    return restore
