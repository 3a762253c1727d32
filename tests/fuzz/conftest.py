"""The fuzz tests reuse the resource bounds of tests/files/conftest.py (an address-space limit
and a wall-clock alarm), loaded by path (the test folders are not packages)."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "_files_bounds", Path(__file__).resolve().parents[1] / "files" / "conftest.py")
_bounds = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bounds)


@pytest.fixture(scope="session")
def bounded():
    """``with bounded(seconds): ...``: at most 1 GiB more address space and ``seconds`` s."""
    return _bounds.resource_bounds
