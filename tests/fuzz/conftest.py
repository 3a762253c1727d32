"""The fuzz tests run under the resource bounds of tests/resource_bounds.py (an address-space
limit and a wall-clock alarm)."""

import pytest
from resource_bounds import resource_bounds


@pytest.fixture(scope="session")
def bounded():
    """``with bounded(seconds): ...``: at most 1 GiB more address space and ``seconds`` s."""
    return resource_bounds
