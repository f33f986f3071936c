"""Machines for the queue tests: separate HOMEs sharing one S3 store (moto), workers as processes.

Each "machine" is a HOME with its own config, staging, blob cache and run folders; a worker is
``studio worker`` started in its own process group (so a test can kill -9 the group, or the main
process alone). Waits poll a condition with a generous deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import boto3
import yaml

from tests.conftest import FAKE_AWS_ENV, FAKE_AWS_SECRET
from tests.helpers import studio, studio_env

__all__ = ["Machine", "TIMING", "Worker", "World", "new_store_url", "orphans", "wait_for"]

# Attempts beat every 0.5 s, a heartbeat unchanged for 3 s is a dead worker, sweeps every second.
TIMING = "heartbeat=0.5,stale=3,sweep=1"
DEADLINE = 90.0  # generous: the suite may run twice side by side on two loaded cores


def wait_for(condition: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``deadline`` s."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline:g} s waiting for {what}")
        time.sleep(0.1)


def new_store_url() -> str:
    """A fresh bucket and prefix on moto for one test module."""
    return f"s3://studio-queue-{uuid.uuid4().hex[:12]}/team"


class Machine:
    """A HOME with a config pointing at the shared store and broker."""

    def __init__(self, root: Path, name: str, store_url: str, endpoint: str, broker: str) -> None:
        self.home = str(root / name)
        self.broker = broker
        os.makedirs(os.path.join(self.home, ".studioml"), exist_ok=True)
        config = {"store": store_url, "store_options": {"endpoint": endpoint}, "upload_wait": "60s",
                  "capture_interval": "1s", "stop_grace": "5s"}
        Path(self.home, ".studioml", "config.yaml").write_text(yaml.safe_dump(config))
        self.workers: list[Worker] = []

    def env(self) -> dict[str, str]:
        return {**FAKE_AWS_ENV, "STUDIO_BROKER": self.broker, "STUDIO_WORKER_TIMING": TIMING}

    def studio(self, *args: str, cwd: Optional[str] = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return studio(*args, home=self.home, cwd=cwd, timeout=timeout, **self.env())

    def record(self, experiment: str, version: str = "") -> dict[str, Any]:
        """The run's record as ``studio show --json`` gives it (the newest run by default)."""
        args = ["show", experiment, "--json"] + (["-v", version] if version else [])
        shown = self.studio(*args)
        assert shown.returncode == 0, shown.stderr
        return json.loads(shown.stdout)["run"]

    def runs(self, experiment: str) -> list[dict[str, Any]]:
        listed = self.studio("list", experiment, "--json", "--all")
        return json.loads(listed.stdout) if listed.returncode == 0 else []

    def worker(self, queue: str, *extra: str, env: Optional[dict[str, str]] = None) -> "Worker":
        worker = Worker(self, queue, list(extra), env or {})
        self.workers.append(worker)
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.kill()


class Worker:
    """``studio worker --queue QUEUE`` in its own process group, output in a log file."""

    def __init__(self, machine: Machine, queue: str, extra: list[str], env: dict[str, str]) -> None:
        self.machine = machine
        self.log_path = os.path.join(machine.home, f"worker-{uuid.uuid4().hex[:6]}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "studio_run", "worker", "--queue", queue, *extra],
            cwd=machine.home, env=studio_env(machine.home, **machine.env(), **env), stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    @property
    def output(self) -> str:
        self.log.flush()
        return Path(self.log_path).read_text(errors="replace")

    def wait_ready(self) -> None:
        wait_for(lambda: " on queue " in self.output or self.proc.poll() is not None, "the worker to start")
        assert self.proc.poll() is None, self.output

    def terminate(self, timeout: float = DEADLINE) -> int:
        """SIGTERM (finish running jobs, then exit); returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """kill -9 of the worker's whole process group (whatever is still in it)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        self.log.close()


def orphans(marker: str) -> list[int]:
    """Pids of live processes whose command line holds ``marker`` (a test script's unique name)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(pid))
    return found


class World:
    def __init__(self, root: Path, store_url: str, endpoint: str, broker: str) -> None:
        self.store_url, self.endpoint, self.broker = store_url, endpoint, broker
        self.a = Machine(root, "laptop", store_url, endpoint, broker)
        self.b = Machine(root, "gpu-box-1", store_url, endpoint, broker)
        self.c = Machine(root, "gpu-box-2", store_url, endpoint, broker)
        self.project = os.path.join(self.a.home, "project")
        os.makedirs(self.project)
        self._s3 = None

    def s3(self):  # type: ignore[no-untyped-def]
        if self._s3 is None:
            self._s3 = self._client()
        return self._s3

    def _client(self):  # type: ignore[no-untyped-def]
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=FAKE_AWS_SECRET)

    def bucket(self) -> tuple[str, str]:
        bucket, prefix = self.store_url[len("s3://"):].split("/", 1)
        return bucket, prefix

    def store_keys(self) -> list[str]:
        return self.store_keys_under(self.bucket()[1] + "/")

    def store_bytes(self, key: str) -> bytes:
        bucket, _ = self.bucket()
        return self.s3().get_object(Bucket=bucket, Key=key)["Body"].read()

    def runs(self, experiment: str) -> list[dict]:
        """The experiment's records straight from the bucket, newest first, with versions (cheap
        enough to poll: no studio process per look)."""
        _, prefix = self.bucket()
        base = f"{prefix}/experiments/{experiment}/"
        ids = sorted(k[len(base):-5] for k in self.store_keys_under(base)
                     if k.endswith(".json") and not k.endswith(".env.json"))
        runs = []
        for version, run_id in enumerate(ids, 1):
            record = json.loads(self.store_bytes(f"{base}{run_id}.json"))
            record["version"] = version
            runs.append(record)
        return runs[::-1]

    def store_keys_under(self, prefix: str) -> list[str]:
        bucket, _ = self.bucket()
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def stop_all(self) -> None:
        for machine in (self.a, self.b, self.c):
            machine.stop_workers()
