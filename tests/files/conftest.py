"""Bounds for the fuzz tests of the file parsers (tests/resource_bounds.py): an address-space
limit and a wall-clock alarm."""

import pytest
from resource_bounds import resource_bounds


@pytest.fixture
def bounded():
    """:func:`resource_bounds` as a fixture: ``with bounded(60): ...``."""
    return resource_bounds
