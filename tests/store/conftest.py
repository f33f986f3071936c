"""Shared by the store tests: where a test's store lives, on every backend the test runs on."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(params=["local", "s3"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """``(url, store_options)``: a folder of the test's own, or a fresh bucket on the suite's moto
    (with fake credentials), named after the test module."""
    if request.param == "local":  # type: ignore[attr-defined]
        return str(tmp_path / "store"), {}
    server = request.getfixturevalue("s3_server")
    request.getfixturevalue("fake_aws_env")
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    return f"s3://{module}-{uuid.uuid4().hex[:12]}/runs", {"endpoint": server.endpoint}
