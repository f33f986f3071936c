"""A store that refuses connections (nothing listens on its port) is not waited for at the end of
a run: studio says so in one line and leaves the captures pending for ``studio sync``, instead of
waiting out the whole ``upload_wait``."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import yaml

from studio_run.config import Config
from studio_run.store.open import open_store
from tests.conftest import FAKE_AWS_ENV
from tests.helpers import studio, write_script
from tests.servers import free_port
from tests.store.test_sync import FILES, _record, _tree

_WAIT = 3600.0  # upload_wait: far longer than any test may take, so returning at all means giving up early


def test_finish_stops_waiting_on_a_store_that_keeps_refusing_and_keeps_the_run_pending(
    tmp_path, fake_aws_env, capsys
):
    config = Config(home=str(tmp_path / "home"), store="s3://refused/team", fsync=False,
                    store_options={"endpoint": f"http://127.0.0.1:{free_port()}"})
    store = open_store(config, connect=False)
    try:
        record = _record(store, "refused", {"w": _tree(tmp_path / "w", FILES)})
        store.publish(record)
        returned: list[bool] = []
        waiter = threading.Thread(target=lambda: returned.append(store.syncer().finish(_WAIT)), daemon=True)
        waiter.start()
        waiter.join(300)  # generous for a loaded machine; an hour would mean it waited it out
        assert returned == [False]
        pending = os.listdir(os.path.join(store.local_repo.storage.root, "pending"))
        assert f"refused--{record.run_id}.json" in pending
    finally:
        store.close()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1, warnings
    assert "refuses connections" in warnings[0] and "studio sync" in warnings[0]


@pytest.mark.servers
def test_a_run_against_a_refusing_store_ends_with_one_line_and_sync_has_the_captures(tmp_path):
    home = tmp_path / "home"
    (home / ".studioml").mkdir(parents=True)
    (home / ".studioml" / "config.yaml").write_text(yaml.safe_dump({
        "store": "s3://refused/team", "store_options": {"endpoint": f"http://127.0.0.1:{free_port()}"},
        "upload_wait": "1h",
    }))
    project = tmp_path / "project"
    project.mkdir()
    script = write_script(str(project), "hi.py", "print('hi')\n")
    ran = studio("run", "-e", "offline", script, home=str(home), cwd=str(project), timeout=300, **FAKE_AWS_ENV)
    assert ran.returncode == 0 and ran.stdout == "hi\n", ran.stderr
    assert "Traceback" not in ran.stderr
    warnings = [line for line in ran.stderr.splitlines() if "not uploaded yet" in line]
    assert len(warnings) == 1 and "refuses connections" in warnings[0] and "studio sync" in warnings[0], ran.stderr
    assert list(Path(home, ".studioml", "staging").glob("*/pending/offline--*.json"))
