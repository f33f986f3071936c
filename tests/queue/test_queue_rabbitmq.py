"""The job queue on RabbitMQ (a user-level node started by the suite): a worker killed with -9
mid-run -> RabbitMQ requeues the job at once, the other worker drops that delivery (the run is
alive as far as its heartbeat says), then takes the run over when the heartbeat stays silent:
attempt 2 finishes from the last capture, once, with no orphan script. The broker's queue
contents hold no credential.
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from typing import Iterator

import pytest

from tests.conftest import FAKE_AWS_SECRET
from tests.helpers import write_script
from tests.queue.machines import World, new_store_url, orphans, wait_for

pytestmark = pytest.mark.servers

RESUME = (
    "import os, time, fs_tracker\n"
    "path = os.path.join(fs_tracker.get_artifact('ckpt'), 'step')\n"
    "step = int(open(path).read()) if os.path.exists(path) else 0\n"
    "print('resumed from', step, flush=True)\n"
    "pace = 0.25 if step == 0 else 0.02  # a first attempt slow enough to be killed mid-run\n"
    "while step < 100:\n"
    "    step += 1\n"
    "    open(path + '.tmp', 'w').write(str(step))\n"
    "    os.replace(path + '.tmp', path)\n"
    "    time.sleep(pace)\n"
    "print('done at', step, flush=True)\n"
)


@pytest.fixture(scope="module")
def world(tmp_path_factory, s3_server, rabbitmq_server) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("rabbit-world"), new_store_url(), s3_server.endpoint, rabbitmq_server.url)
    try:
        yield w
    finally:
        w.stop_all()


def _status(world: World, experiment: str) -> str:
    runs = world.runs(experiment)
    return runs[0]["status"] if runs else ""


def test_rabbitmq_a_killed_worker_run_is_taken_over_once(world: World) -> None:
    queue = f"rq-{uuid.uuid4().hex[:8]}"
    script = f"resume_{uuid.uuid4().hex[:8]}.py"
    write_script(world.project, script, RESUME)
    first = world.b.worker(queue)
    queued = world.a.studio("run", "--queue", queue, "--capture=ckpt:ckpt", "-e", queue, script, cwd=world.project)
    assert queued.returncode == 0, queued.stderr

    def progressed() -> bool:
        runs = world.runs(queue)
        ckpt = runs[0]["artifacts"].get("ckpt") if runs else None
        return bool(ckpt) and runs[0]["status"] == "running" and ckpt["snapshots"] >= 2

    wait_for(progressed, "a periodic capture on the first worker")
    second = world.c.worker(queue)
    second.wait_ready()
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(30)
    wait_for(lambda: not orphans(script), "the killed worker's script to be gone")
    wait_for(lambda: _status(world, queue) == "finished", "the run to finish on the other worker")
    record = world.runs(queue)[0]
    assert record["attempt"] == 2
    log = world.a.studio("logs", queue).stdout
    resumed = [int(n) for n in re.findall(r"resumed from (\d+)", log)]
    assert len(resumed) == 2 and resumed[0] == 0 and resumed[1] > 0, log
    assert log.count("done at 100") == 1
    second.kill()


def test_rabbitmq_queue_contents_hold_no_credential(world: World, rabbitmq_server) -> None:
    from kombu import Connection

    from studio_run.queue.brokers import job_queue

    parked = f"parked-{uuid.uuid4().hex[:8]}"
    write_script(world.project, "parked.py", "print('x')\n")
    queued = world.a.studio("run", "--queue", parked, "-e", parked, "parked.py", cwd=world.project)
    assert queued.returncode == 0, queued.stderr
    with Connection(rabbitmq_server.url) as conn:
        queue = job_queue(parked)(conn.default_channel)
        message = queue.get(no_ack=False)
        assert message is not None
        raw = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        headers = repr(message.headers).encode() + repr(message.properties).encode()
        message.requeue()
    assert parked.encode() in raw
    for blob in (raw, headers):
        assert FAKE_AWS_SECRET.encode() not in blob
        assert b"fake-secret" not in blob
