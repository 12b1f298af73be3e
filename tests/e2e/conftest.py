"""End-to-end tests: real LocalDagRunner runs (and runner processes) on the committed sample."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
