"""The fault suite: every test in this folder carries the ``faults`` marker (``pytest -m faults``).

It is the specification issue 9 left behind: damaged stores, hostile file names, kill -9 at
random instants, gc racing captures, a full disk and secrets. Its tests drive ``studio`` as a
user would, against the real servers of ``tests/conftest.py``.
"""

from __future__ import annotations

import os

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: the fault suite of tests/faults (damage, kills, races, secrets)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if os.path.dirname(os.path.abspath(str(item.fspath))).startswith(_HERE):
            item.add_marker(pytest.mark.faults)
