"""A download over a corrupted object ends in an error the client sees (a truncated body), never
as a complete archive of wrong bytes; a single file likewise."""

from __future__ import annotations

import http.client
import os

import pytest

from studio_run.config import load_config
from studio_run.store.open import open_store
from tests.helpers import corrupt_object, studio, write_script
from tests.web.conftest import Home, start_ui

# One large intact file first (so the archive's first pieces go out), then the one to corrupt.
SCRIPT = """\
import os
os.makedirs("out", exist_ok=True)
open("out/a-first.bin", "wb").write(os.urandom(3 << 20))
open("out/z-last.bin", "wb").write(bytes(range(256)) * 40)
open("out/small.txt", "w").write("intact")
"""


def _fetch(port: int, path: str) -> tuple[int, bytes, bool]:
    """(status, body as far as it came, whether the body ended early)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", path)
    response = connection.getresponse()
    try:
        body, cut = response.read(), False
    except http.client.IncompleteRead as exc:
        body, cut = exc.partial, True
    connection.close()
    return response.status, body, cut


@pytest.mark.faults
def test_a_corrupted_object_breaks_the_download_instead_of_shipping_wrong_bytes(tmp_path) -> None:
    home = Home(str(tmp_path / "home"), str(tmp_path / "work"))
    os.makedirs(home.work)
    write_script(home.work, "make.py", SCRIPT)
    proc = studio("run", "-e", "alpha", "-c", "out:model", "make.py", home=home.home, cwd=home.work)
    assert proc.returncode == 0, proc.stderr
    store = open_store(load_config(None, env=home.env()))
    record = store.records.resolve("alpha")
    manifest = store.repo.get_manifest(record.artifacts["model"].digest)
    weights = next(e for e in manifest.entries if e.path == "z-last.bin")
    corrupt_object(store.repo, weights.digest)
    server = start_ui(home)
    try:
        run = f"/runs/alpha/{record.run_id}"
        outcomes = []
        for path in (f"{run}/artifact/model.tar", f"{run}/artifact/model.tar.gz", f"{run}/file/model/z-last.bin"):
            status, body, cut = _fetch(server.port, path)
            if status == 500:  # found before the first byte: said, nothing sent
                assert b"studio check" in body, path
            else:
                assert status == 200 and cut, f"{path} ended as if complete ({len(body)} bytes)"
            assert bytes(range(256)) * 40 not in body
            outcomes.append(status)
        assert outcomes[:2] == [200, 200]  # the archives started (3 MiB intact first), then broke off
        assert outcomes[2] == 500  # the damaged file alone: refused before its first byte
        status, body, cut = _fetch(server.port, f"{run}/file/model/small.txt")  # an intact file still comes
        assert (status, body, cut) == (200, b"intact", False)
    finally:
        server.stop()
