"""The TensorBoard button: TensorBoard over a real run's ``tb`` artifact, on 127.0.0.1, reached
from the page, and stopped with the UI."""

from __future__ import annotations

import os
import socket
import urllib.request

import pytest
from starlette.testclient import TestClient

from studio_run.config import load_config
from studio_run.store.open import open_store
from studio_run.store.runindex import RunIndex
from studio_run.web.app import build_app
from studio_run.web.security import Guard
from tests.helpers import studio, write_script

# studio tb's module (the integrations layer); in the merged tree it is always there.
pytest.importorskip("studio_run.integrations.tensorboard", reason="needs studio_run.integrations.tensorboard")
pytest.importorskip("tensorboard", reason="the [tb] extra (in [test])")

TB_SCRIPT = """\
import os, fs_tracker
with open(os.path.join(fs_tracker.get_tensorboard_dir(), "events.out.tfevents.1.host"), "wb") as f:
    f.write(b"")
print("logged")
"""


def test_the_button_starts_tensorboard_on_loopback_and_the_ui_stops_it(tmp_path) -> None:
    home, work = str(tmp_path / "home"), str(tmp_path / "work")
    os.makedirs(work)
    write_script(work, "tb.py", TB_SCRIPT)
    proc = studio("run", "-e", "board", "tb.py", home=home, cwd=work)
    assert proc.returncode == 0, proc.stderr
    env = {"HOME": home, "STUDIOML_HOME": os.path.join(home, ".studioml")}
    store = open_store(load_config(None, env=env))
    run_id = store.records.run_ids("board")[0]
    app = build_app(store, Guard.for_bind("127.0.0.1"), RunIndex(store, os.path.join(home, "index")),
                    socket.gethostname())
    with TestClient(app, base_url="http://127.0.0.1:8765", follow_redirects=False) as client:
        page = client.get(f"/runs/board/{run_id}").text
        assert 'id="tensorboard"' in page
        csrf = app.state.context.guard.csrf
        assert client.post("/tensorboard", data={"run": f"board/{run_id}"}).status_code == 403  # no CSRF token
        started = client.post("/tensorboard", data={"csrf": csrf, "run": f"board/{run_id}"})
        assert started.status_code == 303, started.text
        url = started.headers["location"]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=60) as answer:
            assert answer.status == 200
        assert f'href="{url}"' in client.get("/").text  # linked from every page while it runs
        handle = app.state.tensorboards.handle
        assert handle is not None and handle.running()
    assert handle.wait(60) is not None  # stopped with the UI
