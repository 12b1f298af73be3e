import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO / "data" / "sample"
# The full official files: beside the checkout in CI (../shared), or where `make run` fetched them.
FULL_DATA_CANDIDATES = [REPO.parent / "shared" / "data" / "fashion-mnist", REPO / "data" / "raw"]


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def full_data_dir() -> Path:
    for candidate in FULL_DATA_CANDIDATES:
        if (candidate / "train-images-idx3-ubyte.gz").is_file():
            return candidate
    pytest.skip("full Fashion-MNIST files not found (run `fmnist fetch`)")
