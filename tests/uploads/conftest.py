"""Fixtures for the upload tests: a throwaway studio home, and no uploader left behind."""

from __future__ import annotations

import os

import pytest

from studio_run.uploads import api


@pytest.fixture
def studio_home(tmp_path, monkeypatch):
    """STUDIOML_HOME in a temporary folder, with no STUDIO_* variables from outside."""
    for name in list(os.environ):
        if name.startswith("STUDIO"):
            monkeypatch.delenv(name)
    home = tmp_path / "studioml"
    home.mkdir()
    monkeypatch.setenv("STUDIOML_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _no_uploader_left():
    """Close this process's uploader after each test; never let the exit handler end pytest."""
    api._exit_on_failure = False
    yield
    api.shutdown(5, report=False)


@pytest.fixture(params=["local", "s3"])
def store_url(request, studio_home, tmp_path):
    """A store URL on each backend: a folder, and a bucket on the test S3 server (moto).

    For S3 the endpoint goes into ``config.yaml`` (``store_options``), as a user would set it.
    """
    if request.param == "local":
        yield str(tmp_path / "store")
        return
    server = request.getfixturevalue("s3_server")
    url = f"s3://studio-uploads-{os.urandom(4).hex()}/runs"
    (studio_home / "config.yaml").write_text(f"store: {url}\nstore_options:\n  endpoint: {server.endpoint}\n")
    yield url
    server.reset()
