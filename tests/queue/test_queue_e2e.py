"""The job queue end to end on Redis: a submitting machine and workers with their own HOMEs,
sharing an S3 store (moto), every one a separate process.

Guarantees checked: the seed scenario through a worker; a worker killed with -9 (its process
group, or its main process alone) -> the run finishes once on another worker from its last
capture, attempt 2, attempt 1 lost, no orphan script; a job whose broker lease runs out while it
runs is not started again; studio stop of queued and running jobs; --lifetime; a 6-point grid
over two workers; a job queued before a broker kill -9 and restart (AOF) runs once; and no credential in Redis, the store, or any log.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import FAKE_AWS_SECRET
from tests.helpers import write_script
from tests.queue.machines import World, new_store_url, orphans, wait_for

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def world(tmp_path_factory, s3_server, redis_server) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("queue-world"), new_store_url(), s3_server.endpoint, redis_server.url)
    try:
        yield w
    finally:
        w.stop_all()


@pytest.fixture
def queue_name() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


def _status(world: World, experiment: str, wanted: str) -> bool:
    runs = world.runs(experiment)
    return bool(runs) and runs[0]["status"] == wanted


def test_seed_scenario_trains_on_a_worker_and_the_laptop_reuses_its_weights(world: World, queue_name: str) -> None:
    write_script(world.project, "train.py", (
        "import os, sys, fs_tracker\n"
        "w = fs_tracker.get_artifact('weights')\n"
        "open(os.path.join(w, 'model.txt'), 'w').write('trained lr=' + sys.argv[2] + ' in ' + os.environ['HOME'])\n"
    ))
    write_script(world.project, "check.py", (
        "import os, fs_tracker\n"
        "print(open(os.path.join(fs_tracker.get_artifact('w'), 'model.txt')).read())\n"
    ))
    worker = world.b.worker(queue_name)
    queued = world.a.studio("run", "--queue", queue_name, "--capture=weights:weights", "-e", "linreg",
                            "train.py", "--lr", "0.1", cwd=world.project)
    assert queued.returncode == 0, queued.stderr
    assert re.search(r"^linreg v1 run \S+ queued on " + queue_name, queued.stdout, re.M), queued.stdout
    assert world.runs("linreg")[0]["status"] in ("queued", "running", "finished")
    wait_for(lambda: _status(world, "linreg", "finished"), "the queued run to finish on the worker")
    record = world.runs("linreg")[0]
    assert record["queue"] == queue_name and record["attempt"] == 1 and record["exit_code"] == 0
    assert record["command"][-2:] == ["--lr", "0.1"]

    reused = world.a.studio("run", "--reuse=linreg/weights:w", "check.py", cwd=world.project)
    assert reused.returncode == 0, reused.stderr
    assert f"trained lr=0.1 in {world.b.home}" in reused.stdout
    assert worker.terminate() == 0
    assert "attempt 1 finished" in worker.output


RESUME = (
    "import os, sys, time, fs_tracker\n"
    "path = os.path.join(fs_tracker.get_artifact('ckpt'), 'step')\n"
    "step = int(open(path).read()) if os.path.exists(path) else 0\n"
    "print('resumed from', step, flush=True)\n"
    "pace = 0.25 if step == 0 else 0.02  # a first attempt slow enough to be killed mid-run\n"
    "while step < 120:\n"
    "    step += 1\n"
    "    open(path + '.tmp', 'w').write(str(step))\n"
    "    os.replace(path + '.tmp', path)\n"
    "    time.sleep(pace)\n"
    "print('done at', step, flush=True)\n"
)


@pytest.mark.parametrize("victim", ["group", "main process"])
def test_a_worker_killed_mid_run_is_taken_over_once_from_its_last_capture(
        world: World, queue_name: str, victim: str) -> None:
    script = f"resume_{uuid.uuid4().hex[:8]}.py"
    write_script(world.project, script, RESUME)
    experiment = f"resume-{queue_name}"
    first = world.b.worker(queue_name)
    queued = world.a.studio("run", "--queue", queue_name, "--capture=ckpt:ckpt", "-e", experiment, script,
                            cwd=world.project)
    assert queued.returncode == 0, queued.stderr

    def captured_progress() -> bool:
        runs = world.runs(experiment)
        ckpt = runs[0]["artifacts"].get("ckpt") if runs else None
        return bool(runs) and runs[0]["status"] == "running" and bool(ckpt) and ckpt["snapshots"] >= 2

    wait_for(captured_progress, "a periodic capture of the checkpoint on the first worker")
    assert orphans(script), "the script should be running on the first worker"
    if victim == "group":
        os.killpg(first.proc.pid, signal.SIGKILL)
    else:
        os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(30)
    wait_for(lambda: not orphans(script), "the killed worker's script to be gone (no orphan)")
    second = world.c.worker(queue_name)
    wait_for(lambda: _status(world, experiment, "finished"), "the run to finish on the other worker")

    record = world.runs(experiment)[0]
    assert record["attempt"] == 2
    bucket, prefix = world.bucket()
    claims = f"{prefix}/claims/{experiment}/{record['run_id']}/"
    assert json.loads(world.store_bytes(claims + "1.end"))["end"] == "lost"
    shown = world.a.studio("show", experiment).stdout
    attempts = [line.split("\t") for line in shown.split("attempts (queue ")[1].splitlines()[2:] if line]
    assert [(a[0], a[-1]) for a in attempts] == [("1", "lost"), ("2", "finished")], shown
    log = world.a.studio("logs", experiment)
    assert log.returncode == 0, log.stderr
    resumed = [int(n) for n in re.findall(r"resumed from (\d+)", log.stdout)]
    assert resumed[0] == 0 and len(resumed) == 2 and resumed[1] > 0, log.stdout
    assert log.stdout.count("done at 120") == 1
    assert f"{experiment}--{record['run_id']} attempt 2 finished" in second.output
    assert not orphans(script)
    second.kill()


def test_a_worker_stopped_twice_gives_its_running_job_back_after_a_final_capture(
        world: World, queue_name: str) -> None:
    script = f"resume_{uuid.uuid4().hex[:8]}.py"
    write_script(world.project, script, RESUME)
    experiment = f"release-{queue_name}"
    first = world.b.worker(queue_name)
    queued = world.a.studio("run", "--queue", queue_name, "--capture=ckpt:ckpt", "-e", experiment, script,
                            cwd=world.project)
    assert queued.returncode == 0, queued.stderr

    def progressed() -> bool:
        runs = world.runs(experiment)
        ckpt = runs[0]["artifacts"].get("ckpt") if runs else None
        return bool(ckpt) and runs[0]["status"] == "running" and ckpt["snapshots"] >= 2

    wait_for(progressed, "a periodic capture on the first worker")
    first.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "stopping: no new jobs" in first.output, "the first signal to be taken")
    assert first.proc.poll() is None and _status(world, experiment, "running")  # the job goes on
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(90) == 0, first.output
    record = world.runs(experiment)[0]
    assert record["status"] == "queued" and "given back to the queue" in first.output
    _, prefix = world.bucket()
    claims = f"{prefix}/claims/{experiment}/{record['run_id']}/"
    assert json.loads(world.store_bytes(claims + "1.end"))["end"] == "released"
    second = world.c.worker(queue_name)
    wait_for(lambda: _status(world, experiment, "finished"), "the given-back job to finish on another worker")
    assert world.runs(experiment)[0]["attempt"] == 2
    log = world.a.studio("logs", experiment).stdout
    resumed = [int(n) for n in re.findall(r"resumed from (\d+)", log)]
    assert len(resumed) == 2 and resumed[1] > 0 and log.count("done at 120") == 1, log
    second.kill()


def test_a_job_longer_than_the_broker_timeout_runs_once_and_a_second_delivery_is_dropped(
        world: World, queue_name: str, redis_server) -> None:
    script = f"long_{uuid.uuid4().hex[:8]}.py"
    write_script(world.project, script, (
        "import os, time\n"
        "print('started', flush=True)\n"
        "while not os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'release')):\n"
        "    time.sleep(0.1)\n"
        "print('ended', flush=True)\n"
    ))
    experiment = f"long-{queue_name}"
    short = {"STUDIO_LEASE_TIMEOUT": "2s"}  # the broker's timeout, far shorter than the job
    holder = world.b.worker(queue_name, env=short)
    queued = world.a.studio("run", "--queue", queue_name, "-e", experiment, script, cwd=world.project)
    assert queued.returncode == 0, queued.stderr
    wait_for(lambda: _status(world, experiment, "running"), "the long job to start")
    other = world.c.worker(queue_name, env=short)
    other.wait_ready()
    started = time.time()
    # Renewed leases keep Redis from handing the job out again for several lease timeouts ...
    wait_for(lambda: time.time() > started + 3 * 2.0, "three lease timeouts to pass")
    assert "delivery dropped" not in other.output
    # ... and a delivery of it anyway (a lease that ran out, a duplicate) meets the fence: the
    # very job, as stored in the queue index, goes through the broker again to the idle worker.
    from studio_run.queue.brokers import celery_app, publish
    from studio_run.queue.jobs import TASK_NAME, Job

    _, prefix = world.bucket()
    run_id = world.runs(experiment)[0]["run_id"]
    job = Job.decode(world.store_bytes(f"{prefix}/queue/{queue_name}/{experiment}--{run_id}.json"))
    publish(celery_app(redis_server.url), queue_name, TASK_NAME, job.to_dict())
    wait_for(lambda: "attempt 1 is running elsewhere; delivery dropped" in other.output,
             "the idle worker to drop the second delivery")
    record = world.runs(experiment)[0]
    workspace = os.path.join(world.b.home, ".studioml", "worker", experiment, record["run_id"], "workspace")
    Path(workspace, "release").write_text("")
    wait_for(lambda: _status(world, experiment, "finished"), "the long job to finish")
    log = world.a.studio("logs", experiment).stdout
    assert log.count("started") == 1 and log.count("ended") == 1, log
    assert world.runs(experiment)[0]["attempt"] == 1
    assert "attempt 1 starting" not in other.output
    holder.kill()
    other.kill()


def test_studio_stop_of_a_queued_job_and_of_a_job_on_a_worker(world: World, queue_name: str) -> None:
    script = f"forever_{uuid.uuid4().hex[:8]}.py"
    write_script(world.project, script, (
        "import os, time, fs_tracker\n"
        "open(os.path.join(fs_tracker.get_artifact('out'), 'alive'), 'w').write('yes')\n"
        "print('looping', flush=True)\n"
        "while True:\n"
        "    time.sleep(0.1)\n"
    ))
    waiting = f"stopq-{queue_name}"
    assert world.a.studio("run", "--queue", queue_name, "-e", waiting, "--capture=out:out", script,
                          cwd=world.project).returncode == 0
    stopped = world.a.studio("stop", waiting)
    assert stopped.returncode == 0, stopped.stderr
    assert world.runs(waiting)[0]["status"] == "stopped"

    worker = world.b.worker(queue_name)
    running = f"stopw-{queue_name}"
    assert world.a.studio("run", "--queue", queue_name, "-e", running, "--capture=out:out", script,
                          cwd=world.project).returncode == 0
    wait_for(lambda: _status(world, running, "running") and orphans(script), "the job to run on the worker")
    stop = world.a.studio("stop", running)
    assert stop.returncode == 0, stop.stderr
    wait_for(lambda: _status(world, running, "stopped"), "the worker's run to be stopped")
    wait_for(lambda: not orphans(script), "the stopped script to be gone")
    record = world.runs(running)[0]
    assert record["artifacts"]["out"]["files"] == 1  # the final capture kept what it wrote
    assert world.runs(waiting)[0]["status"] == "stopped"  # the worker never started it
    assert f"{waiting}--" not in worker.output or "starting" not in worker.output.split(f"{waiting}--")[1][:80]
    queue_view = world.a.studio("queue", queue_name)
    wait_for(lambda: "no queued or running jobs" in world.a.studio("queue", queue_name).stdout,
             "the stopped jobs to leave the queue")
    assert queue_view.returncode == 0
    worker.kill()


def test_a_job_not_started_within_its_lifetime_expires(world: World, queue_name: str) -> None:
    write_script(world.project, "quick.py", "print('ran')\n")
    experiment = f"life-{queue_name}"
    queued = world.a.studio("run", "--queue", queue_name, "--lifetime", "1s", "-e", experiment, "quick.py",
                            cwd=world.project)
    assert queued.returncode == 0, queued.stderr
    submitted = time.time()
    wait_for(lambda: time.time() > submitted + 1.5, "the job's lifetime to pass")
    worker = world.b.worker(queue_name)
    wait_for(lambda: _status(world, experiment, "expired"), "the job to expire")
    assert "output" not in world.runs(experiment)[0]["artifacts"]  # the script never ran
    worker.kill()


def test_a_six_point_grid_over_two_workers_gives_six_finished_runs_with_their_arguments(
        world: World, queue_name: str) -> None:
    write_script(world.project, "grid.py", (
        "import sys, fs_tracker\n"
        "print('args', sys.argv[1:], 'hp', sorted(fs_tracker.get_hyperparameters().items()))\n"
    ))
    experiment = f"grid-{queue_name}"
    workers = [world.b.worker(queue_name), world.c.worker(queue_name)]
    queued = world.a.studio("run", "--queue", queue_name, "-hp", "lr=0.1,0.01,0.001", "-hp", "layers=2:3",
                            "-e", experiment, "grid.py", cwd=world.project)
    assert queued.returncode == 0, queued.stderr
    assert len(re.findall(r"queued on " + queue_name, queued.stdout)) == 6
    wait_for(lambda: [r["status"] for r in world.runs(experiment)] == ["finished"] * 6, "six finished runs")
    seen = set()
    for run in world.runs(experiment):
        hp = run["hyperparameters"]
        assert run["command"][-4:] == ["--lr", str(hp["lr"]), "--layers", str(hp["layers"])]
        seen.add((hp["lr"], hp["layers"]))
        log = world.a.studio("logs", f"{experiment}@{run['version']}").stdout
        assert f"'--lr', '{hp['lr']}', '--layers', '{hp['layers']}'" in log
    assert seen == {(lr, layers) for lr in (0.1, 0.01, 0.001) for layers in (2, 3)}
    for worker in workers:
        worker.kill()


def test_a_job_whose_message_the_broker_lost_is_found_by_a_sweep_and_runs(
        world: World, queue_name: str, redis_server) -> None:
    import redis

    write_script(world.project, "found.py", "print('found and ran')\n")
    experiment = f"lost-msg-{queue_name}"
    queued = world.a.studio("run", "--queue", queue_name, "-e", experiment, "found.py", cwd=world.project)
    assert queued.returncode == 0, queued.stderr
    client = redis.Redis.from_url(redis_server.url)
    assert client.delete(f"studio.{queue_name}") == 1  # the broker loses the message (e.g. no AOF, a crash)
    worker = world.b.worker(queue_name)
    wait_for(lambda: _status(world, experiment, "finished"), "the sweep to find the job and a worker to run it")
    assert "waits without a message; republished" in worker.output
    assert "found and ran" in world.a.studio("logs", experiment).stdout
    worker.kill()


def test_a_job_queued_before_a_broker_crash_runs_once_after_the_restart(
        world: World, queue_name: str, redis_server) -> None:
    import redis

    marker = uuid.uuid4().hex
    write_script(world.project, "survivor.py", f"print('survived the broker crash {marker}')\n")
    experiment = f"restart-{queue_name}"
    queued = world.a.studio("run", "--queue", queue_name, "-e", experiment, "survivor.py", cwd=world.project)
    assert queued.returncode == 0, queued.stderr
    assert world.runs(experiment)[0]["status"] == "queued"  # no worker serves this queue yet
    redis_server.kill9()  # kill -9: nothing flushed on purpose; the append-only file keeps the job
    redis_server.start()  # same port, same AOF
    client = redis.Redis.from_url(redis_server.url)
    assert client.llen(f"studio.{queue_name}") == 1  # the broker itself kept the message
    worker = world.b.worker(queue_name)
    wait_for(lambda: _status(world, experiment, "finished"), "the job kept across the broker crash to run")
    runs = world.runs(experiment)
    assert len(runs) == 1 and runs[0]["attempt"] == 1 and runs[0]["exit_code"] == 0
    log = world.a.studio("logs", experiment)
    assert log.returncode == 0, log.stderr
    assert log.stdout.count(f"survived the broker crash {marker}") == 1, log.stdout
    _, prefix = world.bucket()
    claims = world.store_keys_under(f"{prefix}/claims/{experiment}/{runs[0]['run_id']}/")
    assert [k.rsplit("/", 1)[1] for k in claims if not k.endswith((".beat", ".end"))] == ["1"]
    assert worker.output.count(f"{experiment}--{runs[0]['run_id']} attempt 1 starting") == 1
    assert "waits without a message; republished" not in worker.output  # delivered by the broker, not the sweep
    worker.kill()


def test_no_credential_in_redis_the_store_or_any_log(world: World, redis_server) -> None:
    """Runs last in this module: everything the tests above left behind is scanned."""
    import redis

    secret = FAKE_AWS_SECRET.encode()
    parked = f"parked-{uuid.uuid4().hex[:8]}"  # nobody serves it: its message stays in Redis to be read
    write_script(world.project, "parked.py", "print('never runs here')\n")
    queued = world.a.studio("run", "--queue", parked, "-e", parked, "parked.py", "--lr", "0.1", cwd=world.project)
    assert queued.returncode == 0, queued.stderr
    client = redis.Redis.from_url(redis_server.url)
    waiting = client.lrange(f"studio.{parked}", 0, -1)
    assert len(waiting) == 1 and parked.encode() in waiting[0]  # the job is there, in plain JSON
    scanned = 0
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind == b"hash":
            values = list(client.hgetall(key).values())
        elif kind == b"zset":
            values = client.zrange(key, 0, -1)
        elif kind == b"set":
            values = list(client.smembers(key))
        else:
            values = []
        for value in [key] + values:
            scanned += 1
            assert secret not in value, f"redis key {key!r} holds the secret"
    keys = world.store_keys()
    assert any("/queue/" in k or "/claims/" in k for k in keys)
    for key in keys:
        if "/objects/" in key or "/packs/" in key:
            continue  # content captured from the scripts' folders (no secret was ever in them)
        assert secret not in world.store_bytes(key), f"{key} holds the secret"
    for machine in (world.a, world.b, world.c):
        for path in Path(machine.home).rglob("*"):
            if path.is_file() and (path.suffix in (".log", ".json") or "worker" in path.name):
                assert secret not in path.read_bytes(), f"{path} holds the secret"
    assert scanned > 0
