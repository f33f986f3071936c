"""How fast the job queue hands out work, per broker: Redis, RabbitMQ and the embedded default.

Rows (goals from issue 12):

- ``latency``: submit-to-script-start on an idle worker: from invoking ``studio run --queue`` to
  the first line of the script (goal < 2 s); the submit command's own time is shown beside it.
- ``redelivery``: after ``kill -9`` of the worker's process group mid-run, until the script
  starts again on the other worker (goal < 60 s).
- ``sweep``: 100 ``-hp`` points of a short script on one worker with 2 slots, from submitting
  until every run is final, against the same 100 runs back to back (``studio run -hp`` without
  ``--queue``).
- ``broker``: the broker alone, through ``studio_run.queue.brokers`` (no studio CLI):
  publish-to-consume latency of a kombu consumer with studio's settings, the time a publish to
  a broker that is down takes to fail, and when a consumer killed with -9 has its job handed to
  another one at studio's production lease (Redis: ``LEASE_TIMEOUT`` + a restore sweep; RabbitMQ:
  at once; the embedded broker: never, studio's sweep re-publishes from the run records).

Everything runs on this machine: the brokers are started here (``tests/servers.py``: redis-server
with AOF, a user-level RabbitMQ node), each worker and the submitter get their own
``STUDIOML_HOME`` ("machines") and share one local store.

Run: ``python benchmarks/queue_bench.py [--brokers redis,rabbitmq,embedded]
[--only latency,redelivery,sweep,broker] [--reps 5] [--jobs 100] [--slots 2] [--out FILE.md]``
(needs ``pip install -e '.[queue]'``, ``redis-server`` and ``rabbitmq-server``). About 10 minutes
for every row on 2 cores; ``--only broker`` about 3; ``--only latency`` about 2 (RabbitMQ's start is
most of it). Every studio process compiles studio_run anew when ``PYTHONDONTWRITEBYTECODE`` is set
(the script says so): unset it for the figures an installed studio gives.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's studio_run, and tests/servers.py

from studio_run.queue import brokers  # noqa: E402
from tests.servers import RabbitMQServer, RedisServer, free_port  # noqa: E402

JOB = '''\
import os, sys, time
journal, tag, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
again = float(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--again" else None
try:
    seen = open(journal).read()
except FileNotFoundError:
    seen = ""
if again is not None and f"start {tag} " in seen:
    seconds = again
def note(kind):
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{kind} {tag} {time.time()!r} {os.getpid()}\\n".encode())
    os.close(fd)
note("start")
time.sleep(seconds)
note("end")
'''
DEADLINE = 300.0


class Bench:
    """One broker's set-up: a shared store, homes per "machine", workers, the job journal."""

    def __init__(self, root: Path, kind: str, url: str) -> None:
        self.root, self.kind, self.url = root, kind, url
        self.store = root / "store"
        self.work = root / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "job.py").write_text(JOB)
        self.journal = root / "journal.txt"
        self.workers: list[subprocess.Popen[bytes]] = []

    def env(self, home: str) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=str(ROOT), STUDIOML_HOME=str(self.root / home),
                    STUDIO_STORE=str(self.store), STUDIO_BROKER=self.url)

    def studio(self, home: str, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "studio_run", *args], cwd=self.work, env=self.env(home),
                              capture_output=True, text=True, timeout=DEADLINE)
        if proc.returncode != 0:
            raise RuntimeError(f"studio {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        return proc

    def worker(self, home: str, queue: str, slots: int = 1) -> subprocess.Popen[bytes]:
        with open(self.root / f"{home}.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "studio_run", "worker", "--queue", queue,
                                     "--concurrency", str(slots)], cwd=self.work, env=self.env(home),
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.workers.append(proc)
        return proc

    def lines(self, kind: str, tag: str) -> list[tuple[float, int]]:
        try:
            rows = [line.split() for line in self.journal.read_text().splitlines()]
        except FileNotFoundError:
            return []
        return [(float(t), int(pid)) for k, g, t, pid in rows if k == kind and g == tag]

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait(what: str, condition: Callable[[], bool], deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _submit(b: Bench, queue: str, experiment: str, tag: str, seconds: float, *script_args: str) -> float:
    t0 = time.time()
    b.studio("submitter", "run", "--queue", queue, "-e", experiment, "job.py", str(b.journal), tag, str(seconds),
             *script_args)
    return t0


def latency(b: Bench, reps: int) -> list[tuple[str, str, str]]:
    """Submit-to-script-start on an idle worker (the first job warms the worker up, unmeasured)."""
    b.worker("worker-a", "lat")
    _submit(b, "lat", "lat", "warm", 0)
    _wait("the warm-up job", lambda: b.lines("end", "warm") != [])
    starts, submits, after = [], [], []
    for i in range(reps):
        time.sleep(1.0)  # the worker is idle again (acknowledged, polling)
        t0 = time.time()
        _submit(b, "lat", "lat", f"r{i}", 0)
        t1 = time.time()
        submits.append(t1 - t0)
        _wait(f"job r{i} to start", lambda: b.lines("start", f"r{i}") != [])
        starts.append(b.lines("start", f"r{i}")[0][0] - t0)
        after.append(b.lines("start", f"r{i}")[0][0] - t1)  # < 0 when the script starts before submit exits
    return [("submit to script start (idle worker), median", f"{statistics.median(starts):.2f} s", "< 2 s"),
            ("  of which `studio run --queue` itself", f"{statistics.median(submits):.2f} s", ""),
            ("  script start after the submit returned (worker side)", f"{statistics.median(after):.2f} s", "")]


def _holder(b: Bench, pid: int) -> Optional[subprocess.Popen[bytes]]:
    """The worker whose process tree holds ``pid`` (walking parents through /proc)."""
    by_pid = {w.pid: w for w in b.workers if w.poll() is None}
    while pid > 1:
        if pid in by_pid:
            return by_pid[pid]
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
    return None


def redelivery(b: Bench) -> list[tuple[str, str, str]]:
    b.worker("worker-b", "kill")
    b.worker("worker-c", "kill")
    _submit(b, "kill", "kill", "long", 600, "--again", "0")
    _wait("the long job to start", lambda: b.lines("start", "long") != [])
    holder = _holder(b, b.lines("start", "long")[0][1])
    if holder is None:
        raise RuntimeError("no worker holds the running script")
    killed = time.time()
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    _wait("the job to start on the other worker", lambda: len(b.lines("start", "long")) >= 2)
    return [("redelivery after kill -9 of the worker's group", f"{b.lines('start', 'long')[1][0] - killed:.1f} s",
             "< 60 s")]


def _finished(b: Bench, experiment: str) -> int:
    proc = b.studio("submitter", "list", "--json", "--all")
    final = {"finished", "failed", "incomplete", "interrupted", "stopped", "timed-out", "expired"}
    return sum(1 for r in json.loads(proc.stdout) if r["experiment"] == experiment and r["status"] in final)


def sweep(b: Bench, jobs: int, slots: int, seconds: float) -> list[tuple[str, str, str]]:
    points = ",".join(str(i) for i in range(1, jobs + 1))
    b.worker("worker-d", "sweep", slots)
    _submit(b, "sweep", "warm-sweep", "warm-sweep", 0)
    _wait("the warm-up job", lambda: _finished(b, "warm-sweep") == 1)
    t0 = time.time()
    b.studio("submitter", "run", "--queue", "sweep", "-hp", f"i={points}", "-e", "swept", "job.py",
             str(b.journal), "swept", str(seconds))
    submitted = time.time() - t0
    _wait("every queued run to be final", lambda: _finished(b, "swept") == jobs, deadline=3600)
    queued = time.time() - t0
    t0 = time.time()
    b.studio("submitter", "run", "-hp", f"i={points}", "-e", "serial", "job.py", str(b.journal), "serial",
             str(seconds))
    serial = time.time() - t0
    return [(f"{jobs}-job sweep on {slots} slots, submit to all final", f"{queued:.1f} s "
             f"(submit {submitted:.1f} s)", f"< {serial:.1f} s"),
            (f"the same {jobs} runs back to back (`studio run -hp`)", f"{serial:.1f} s", ""),
            ("speed-up", f"{serial / queued:.2f} x", "")]


def broker_level(b: Bench, reps: int) -> list[tuple[str, str, str]]:
    """The broker through studio's module: publish-to-consume, a failed publish, kombu redelivery."""
    from kombu import Connection

    app = brokers.celery_app(b.url)
    queue = brokers.job_queue("broker-bench")
    got: dict[str, float] = {}
    ready, stop = threading.Event(), threading.Event()

    def consume() -> None:
        with Connection(b.url, transport_options=app.conf.broker_transport_options) as conn:
            def on(body: object, message: object) -> None:
                got[body[0][0]["id"]] = time.time()  # type: ignore[index]  # protocol 2: [args, kwargs, embed]
                message.ack()  # type: ignore[attr-defined]

            with conn.Consumer([queue], accept=["json"], prefetch_count=1, callbacks=[on]):
                ready.set()
                while not stop.is_set():
                    try:
                        conn.drain_events(timeout=0.5)
                    except OSError:
                        pass

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    ready.wait(30)
    brokers.publish(app, "broker-bench", "bench", {"id": "warm"})
    _wait("the warm-up message", lambda: "warm" in got, 30)
    delays = []
    for i in range(reps * 4):
        t0 = time.time()
        brokers.publish(app, "broker-bench", "bench", {"id": f"m{i}"})
        _wait("a message", lambda: f"m{i}" in got, 30)
        delays.append(got[f"m{i}"] - t0)
    stop.set()
    thread.join(5)
    rows = [("publish to consume (kombu consumer, studio settings), median", f"{statistics.median(delays) * 1000:.0f} ms",
             "")]
    down = {"redis": f"redis://127.0.0.1:{free_port()}/0", "rabbitmq": f"amqp://studio@127.0.0.1:{free_port()}//",
            "embedded": "sqla+sqlite:////proc/studio-bench/broker.sqlite"}[b.kind]
    t0 = time.time()
    try:
        brokers.publish(brokers.celery_app(down), "q", "bench", {"id": "x"})
        failed = "published?!"
    except brokers.BrokerUnreachableError:
        failed = f"{time.time() - t0:.2f} s"
    rows.append(("publish to a broker that is down fails after", failed, "a few seconds"))
    rows.append(_consumer_redelivery(b))
    return rows


def _consumer_redelivery(b: Bench) -> tuple[str, str, str]:
    """kill -9 of a consumer holding a job (tests/queue/consumer.py at studio's production lease)."""
    journal = b.root / "consumers.txt"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("STUDIO_LEASE_TIMEOUT", None)
    procs = [subprocess.Popen([sys.executable, "-m", "tests.queue.consumer", b.url, "kombu-kill", str(journal)],
                              cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True) for _ in range(2)]

    def starts() -> list[tuple[int, float]]:
        try:
            rows = [line.split() for line in journal.read_text().splitlines()]
        except FileNotFoundError:
            return []
        return [(int(r[2]), time.time()) for r in rows if r[0] == "start" and r[1] == "long"]

    try:
        brokers.publish(brokers.celery_app(b.url), "kombu-kill", "tests.queue.sleep",
                        {"id": "long", "seconds": 600, "again": 0})
        _wait("the job to start", lambda: starts() != [], 60)
        holder = next(p for p in procs if p.pid == starts()[0][0])
        killed = time.time()
        os.killpg(holder.pid, signal.SIGKILL)
        bound = 120.0 if b.kind != "embedded" else 20.0
        try:
            _wait("the job to be handed out again", lambda: len(starts()) >= 2, bound)
            value = f"{time.time() - killed:.1f} s"
        except TimeoutError:
            value = f"not within {bound:.0f} s" + (" (by design: the sweep re-publishes)" if b.kind == "embedded" else "")
        return ("broker redelivery after kill -9 of a consumer (production lease)", value,
                {"redis": f"~{brokers.LEASE_TIMEOUT + brokers.RESTORE_INTERVAL:.0f} s", "rabbitmq": "at once",
                 "embedded": "never"}[b.kind])
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _start_broker(kind: str, root: Path) -> tuple[str, object]:
    if kind == "redis":
        (root / "redis").mkdir()
        server: object = RedisServer(root / "redis", durable=True)
    elif kind == "rabbitmq":
        (root / "rabbitmq").mkdir()
        server = RabbitMQServer(root / "rabbitmq")
    else:
        return brokers.embedded_url(str(root / "shared-home")), None
    server.start()  # type: ignore[attr-defined]
    return server.url, server  # type: ignore[attr-defined]


def _stop_broker(server: object) -> None:
    if isinstance(server, RabbitMQServer):
        server.close()
    elif isinstance(server, RedisServer):
        server.stop()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", default="redis,rabbitmq,embedded")
    parser.add_argument("--only", default="latency,redelivery,sweep,broker")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--job-seconds", type=float, default=0.5, help="how long each sweep job's script runs")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, store)")
    args = parser.parse_args(argv)
    if sys.dont_write_bytecode:
        print("note: PYTHONDONTWRITEBYTECODE is set, so every studio process (submit, worker, runner) compiles "
              "studio_run from source (measured 0.45 s each on a busy 2-core machine); unset it, or set "
              "PYTHONPYCACHEPREFIX, for figures an installed studio gives", file=sys.stderr)
    parts = set(args.only.split(","))
    table = ["| broker | measure | value | goal |", "|---|---|---|---|"]
    failed = False
    for kind in args.brokers.split(","):
        root = Path(tempfile.mkdtemp(prefix=f"studio-queue-bench-{kind}-"))
        server: object = None
        try:
            url, server = _start_broker(kind, root)
            rows: list[tuple[str, str, str]] = []
            steps: list[tuple[str, Callable[[Bench], list[tuple[str, str, str]]]]] = [
                ("broker", lambda b: broker_level(b, args.reps)),
                ("latency", lambda b: latency(b, args.reps)),
                ("redelivery", redelivery),
                ("sweep", lambda b: sweep(b, args.jobs, args.slots, args.job_seconds)),
            ]
            for name, step in steps:
                if name not in parts:
                    continue
                bench = Bench(root / name, kind, url)
                try:
                    rows += step(bench)
                except (RuntimeError, TimeoutError, StopIteration, OSError) as exc:
                    failed = True
                    rows.append((name, f"failed: {exc}", ""))
                finally:
                    bench.close()
            for measure, value, goal in rows:
                table.append(f"| {kind} | {measure} | {value} | {goal} |")
                print(table[-1], flush=True)
        finally:
            _stop_broker(server)
            if not args.keep:
                import shutil

                shutil.rmtree(root, ignore_errors=True)
            else:
                print(f"kept {root}", file=sys.stderr)
    text = "\n".join(table) + "\n"
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
