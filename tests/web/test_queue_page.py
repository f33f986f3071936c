"""The Queue page, checked fast with Starlette's TestClient over a store where ``studio run
--queue`` (embedded broker, no worker) queued real jobs: it lists the jobs (with version,
attempts and lost count) and the workers' heartbeats, filters by queue, answers htmx's refresh
with the tables only, escapes what workers wrote, and never needs the ``[queue]`` extra."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import Iterator

import pytest
from starlette.testclient import TestClient

from studio_run.config import load_config
from studio_run.queue.claims import Claims
from studio_run.queue.jobs import worker_key
from studio_run.store.open import open_store
from tests.helpers import studio, write_script
from tests.web.conftest import Home, app_client

JOB = re.compile(r'<tr class="job" data-experiment="([^"]+)" data-run="([^"]+)">')
HTMX = {"HX-Request": "true", "HX-Target": "queue"}


def _queue(home: Home, queue: str, experiment: str, *hp: str) -> str:
    """``studio run --queue QUEUE -e EXPERIMENT -hp ... train.py``; the queued run's id."""
    options = [item for value in hp for item in ("-hp", value)]
    proc = studio("run", "--queue", queue, "-e", experiment, *options, "train.py", home=home.home, cwd=home.work)
    assert proc.returncode == 0, proc.stderr
    found = re.search(r"run (\S+) queued on " + re.escape(queue), proc.stdout + proc.stderr)
    assert found, proc.stdout + proc.stderr
    return found.group(1)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """Two jobs on ``gpu`` (the first taken over once after its worker was lost), one on ``cpu``,
    and two workers' heartbeats, one of them stopping and with markup in its host name."""
    root = str(tmp_path_factory.mktemp("qpage"))
    home = Home(os.path.join(root, "home"), os.path.join(root, "work"))
    os.makedirs(home.home)
    os.makedirs(home.work)
    write_script(home.work, "train.py", "print('hi')\n")
    home.runs["gpu"] = [_queue(home, "gpu", "qexp", "lr=0.3"), _queue(home, "gpu", "qexp", "lr=0.03")]
    home.runs["cpu"] = [_queue(home, "cpu", "small")]
    store = open_store(load_config(None, env=home.env()))
    claims = Claims(store.storage, "qexp", home.runs["gpu"][0])
    assert claims.claim(1, "w-dead") and claims.claim(2, "w-gpu1")
    claims.end(1, "lost")
    now = time.time()
    for beat in [
        {"worker": "w-gpu1", "host": "gpu-box", "queue": "gpu", "slots": 2, "at": now - 4, "stopping": False,
         "runs": [{"experiment": "qexp", "run_id": home.runs["gpu"][0], "attempt": 2, "slot": 0}]},
        {"worker": "w-cpu1", "host": "<b>cpu</b>", "queue": "cpu", "slots": 1, "at": now - 90, "stopping": True,
         "runs": []},
    ]:
        store.storage.write_bytes(worker_key(str(beat["worker"])), json.dumps(beat).encode())
    return home


@pytest.fixture(scope="module")
def client(home: Home) -> Iterator[TestClient]:
    with app_client(home) as c:
        yield c


def _jobs(html: str) -> list[tuple[str, str]]:
    return JOB.findall(html)


def test_queue_page_lists_the_jobs_with_version_attempts_and_hyper_parameters(client: TestClient, home: Home) -> None:
    page = client.get("/queue")
    assert page.status_code == 200 and "<html" in page.text
    first, second = home.runs["gpu"]
    assert _jobs(page.text) == [("qexp", first), ("qexp", second), ("small", home.runs["cpu"][0])]
    row = page.text.split(f'data-run="{first}">', 1)[1].split("</tr>", 1)[0]
    assert f'href="/runs/qexp/{first}">qexp</a>' in row
    assert '<td class="num">1</td>' in row  # version 1 of qexp
    assert "2 (1 lost)" in row and "<code>lr=0.3</code>" in row and ">queued</span>" in row
    other = page.text.split(f'data-run="{second}">', 1)[1].split("</tr>", 1)[0]
    assert '<td class="num">2</td>' in other and '<td class="num">-</td>' in other  # never claimed
    assert 'href="/queue">Queue</a>' in page.text  # the nav link


def test_queue_page_lists_the_workers_with_heartbeat_age_and_stopping_escaped(client: TestClient, home: Home) -> None:
    page = client.get("/queue").text
    gpu = page.split('data-worker="w-gpu1">', 1)[1].split("</tr>", 1)[0]
    assert "<td>gpu-box</td>" in gpu and '<td class="num">2</td>' in gpu
    assert f'href="/runs/qexp/{home.runs["gpu"][0]}">qexp/{home.runs["gpu"][0]}</a>' in gpu
    assert re.search(r"<td>\d+\.\ds ago</td>", gpu) and "stopping" not in gpu
    cpu = page.split('data-worker="w-cpu1">', 1)[1].split("</tr>", 1)[0]
    assert "&lt;b&gt;cpu&lt;/b&gt;" in cpu and "<b>cpu</b>" not in page
    assert re.search(r"<td>1m\d\ds ago <span class=\"status st-warn\">stopping</span></td>", cpu)
    assert ">idle<" in cpu
    assert page.index('data-worker="w-gpu1"') < page.index('data-worker="w-cpu1"')  # most recent first


def test_queue_page_filters_by_queue_name_and_refuses_a_bad_name(client: TestClient, home: Home) -> None:
    page = client.get("/queue", params={"name": "cpu"}).text
    assert _jobs(page) == [("small", home.runs["cpu"][0])]
    assert 'data-worker="w-cpu1"' in page and 'data-worker="w-gpu1"' not in page
    assert 'hx-get="/queue?name=cpu"' in page
    assert "No queued or running jobs on nothere" in client.get("/queue", params={"name": "nothere"}).text
    bad = client.get("/queue", params={"name": "../x"})
    assert bad.status_code == 400 and "not a queue name" in bad.text


def test_the_htmx_refresh_gets_the_tables_only(client: TestClient, home: Home) -> None:
    page = client.get("/queue").text
    assert 'hx-trigger="every 3s"' in page
    fragment = client.get("/queue", params={"name": "gpu"}, headers=HTMX)
    assert fragment.status_code == 200 and "<html" not in fragment.text and "<header>" not in fragment.text
    assert '<table id="queue-jobs">' in fragment.text and '<table id="queue-workers">' in fragment.text
    assert _jobs(fragment.text) == [("qexp", r) for r in home.runs["gpu"]]


def test_run_page_of_a_queued_run_shows_its_attempts(client: TestClient, home: Home) -> None:
    page = client.get(f"/runs/qexp/{home.runs['gpu'][0]}").text
    table = page.split('<table id="attempts"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<tr><td class="num">(\d)</td><td>[^<]*</td><td><code>([^<]*)</code></td><td>([^<]*)</td></tr>',
                      table)
    assert rows == [("1", "w-dead", "lost"), ("2", "w-gpu1", "-")]  # the record still says attempt 1
    assert "No worker has taken this run yet." in client.get(f"/runs/small/{home.runs['cpu'][0]}").text


def test_the_queue_page_needs_no_celery() -> None:
    """``queue.status`` reads the store only: the page works without the ``[queue]`` extra."""
    probe = ("import sys, studio_run.web.app, studio_run.web.queue_page; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'celery', 'kombu', 'redis', 'amqp'}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_empty_store_says_there_is_nothing_queued_and_no_worker(tmp_path) -> None:  # type: ignore[no-untyped-def]
    home = Home(str(tmp_path / "home"), str(tmp_path))
    os.makedirs(home.home)
    with app_client(home) as c:
        page = c.get("/queue")
    assert page.status_code == 200 and _jobs(page.text) == []
    assert "No queued or running jobs." in page.text and "No workers seen" in page.text
