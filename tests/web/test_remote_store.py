"""``studio ui`` over remote stores (S3 on moto, GCS on fake-gcs-server, SFTP on sshd): the runs
one machine made show on another machine's page, an artifact downloads with its bytes and times,
and no credential reaches a page."""

from __future__ import annotations

import gzip
import http.client
import io
import os
import re
import tarfile
import uuid

import pytest
import yaml

from tests.conftest import FAKE_AWS_ENV, FAKE_AWS_SECRET
from tests.helpers import studio, write_script
from tests.web.conftest import TRAIN, Home, expected_files, start_ui

pytestmark = pytest.mark.servers


def _machine(root: str, url: str, options: dict, env: dict) -> Home:
    home = Home(os.path.join(root, "home"), os.path.join(root, "work"), extra=env)
    os.makedirs(os.path.join(home.home, ".studioml"))
    os.makedirs(home.work)
    config = {"store": url, "store_options": options, "upload_wait": "60s"}
    with open(os.path.join(home.home, ".studioml", "config.yaml"), "w") as f:
        yaml.safe_dump(config, f)
    return home


def _get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


@pytest.fixture(params=["s3", "gcs", "sftp"])
def remote(request, tmp_path) -> tuple[str, dict, dict]:
    bucket = f"studio-ui-{uuid.uuid4().hex[:12]}"
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        return f"s3://{bucket}/team", {"endpoint": server.endpoint}, dict(FAKE_AWS_ENV)
    if request.param == "gcs":
        server = request.getfixturevalue("gcs_server")
        return f"gs://{bucket}/team", {"endpoint": server.endpoint}, {}
    server = request.getfixturevalue("sftp_server")
    return server.url(str(tmp_path / "sftp-store")), server.options(), {}


def test_a_run_from_one_machine_shows_and_downloads_on_another(remote, tmp_path) -> None:
    url, options, env = remote
    a = _machine(str(tmp_path / "a"), url, options, env)
    b = _machine(str(tmp_path / "b"), url, options, env)
    write_script(a.work, "train.py", TRAIN)
    done = studio("run", "-e", "remote", "-c", "out:model", "train.py", "--lr", "0.1", home=a.home, cwd=a.work, **env)
    assert done.returncode == 0, done.stderr
    server = start_ui(b)
    try:
        status, page = _get(server.port, "/")
        assert status == 200
        found = re.search(rb'href="(/runs/remote/[^"]+)">remote</a>', page)
        assert found, page[-2000:]
        run = found.group(1).decode()
        status, archive = _get(server.port, f"{run}/artifact/model.tar.gz")
        assert status == 200
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive)), mode="r:") as tar:
            files = {m.name: (tar.extractfile(m).read(), int(m.mtime)) for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
        assert files == expected_files("0.1")
        status, run_page = _get(server.port, run)
        assert status == 200 and b"--lr 0.1" in run_page
        for text in (page, run_page):
            assert FAKE_AWS_SECRET.encode() not in text
    finally:
        server.stop()
