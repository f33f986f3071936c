"""Contenders: studio, and the shared machinery every baseline uses (``baselines.py``).

A contender is what one row of the table measures. The harness calls, in this order:

- ``missing()``: a reason it cannot run here (not installed, not written yet), or None;
- ``stage()`` for every contender of a workload, then ``prepare()`` for every one: inputs are
  arranged first (DVC's copy of the data) so that no preparation changes a file another
  contender has already seen;
- per repetition, ``before()`` (untimed: a fresh destination, a filled cache), the timed
  ``command()``, and ``usage()`` before and after it for the bytes written;
- ``cleanup()`` when the workload is done, to give the disk back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Optional

from measure import Cmd, disk_usage, run_command
from workloads import NOOP_SCRIPT, write_script

__all__ = ["Contender", "Ctx", "S3", "Studio", "StudioList", "StudioRun", "StudioSnapshot", "Tools"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL_HINT = "not installed: pip install -r benchmarks/requirements.txt"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/bench", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/bench",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class Tools:
    """Where each program is: studio from this interpreter, baselines from ``python`` (a venv)."""

    python: str
    studio: list[str]
    dvc: Optional[str]
    studio_env: dict[str, str] = field(default_factory=dict)
    _modules: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def find(cls, venv: Optional[str], pycache: str) -> "Tools":
        """Baselines from ``venv`` when given (or ``~/.cache/studio-bench`` exists), else from here.

        studio commands keep their bytecode in ``pycache``: an editable checkout has no
        ``__pycache__`` where ``PYTHONDONTWRITEBYTECODE`` is set, and compiling studio's modules
        on every start would be counted against it, while the baselines load the bytecode pip
        compiled at install time.
        """
        here = os.path.dirname(sys.executable)
        default = os.path.expanduser("~/.cache/studio-bench")
        venv = venv or (default if os.path.isdir(default) else None)
        bindir = os.path.join(venv, "bin") if venv else here
        python = os.path.join(bindir, "python") if venv else sys.executable
        studio = os.path.join(here, "studio")
        argv = [studio] if os.path.exists(studio) else [sys.executable, "-m", "studio_run"]
        dvc = os.path.join(bindir, "dvc")
        # Measure this checkout's studio_run, whatever an editable install elsewhere points at.
        path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
        env = {"PYTHONPATH": path, "PYTHONPYCACHEPREFIX": pycache, "PYTHONDONTWRITEBYTECODE": ""}
        return cls(python, argv, dvc if os.path.exists(dvc) else shutil.which("dvc"), env)

    def studio_cmd(self, args: list[str], cwd: str, home: str, **env: str) -> Cmd:
        """``studio ARGS`` run from ``cwd`` with ``STUDIOML_HOME=home``."""
        return Cmd(self.studio + args, cwd, dict(self.studio_env, STUDIOML_HOME=home, **env))

    def has(self, module: str) -> bool:
        """Whether the baseline interpreter can import ``module`` (asked once)."""
        if module not in self._modules:
            code = f"import importlib.util as u, sys; sys.exit(u.find_spec({module!r}) is None)"
            self._modules[module] = subprocess.run([self.python, "-c", code]).returncode == 0
        return self._modules[module]

    def version(self, package: str) -> str:
        """Installed version of ``package`` for the baseline interpreter, or 'not installed'."""
        code = f"from importlib.metadata import version; print(version({package!r}))"
        out = subprocess.run([self.python, "-c", code], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else "not installed"


class S3:
    """The S3 test server (moto on 127.0.0.1, started by the harness) and bucket accounting."""

    def __init__(self, endpoint: str, stop) -> None:  # type: ignore[no-untyped-def]
        import boto3

        self.endpoint, self.stop = endpoint, stop
        self.env = dict(FAKE_AWS, MLFLOW_S3_ENDPOINT_URL=endpoint)
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                   aws_access_key_id="bench", aws_secret_access_key="bench-secret")

    @classmethod
    def start(cls) -> "S3":
        """Start moto's S3 in this process (tests/servers.py when present), without a log line per request."""
        import logging

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        try:
            from tests.servers import MotoS3Server
        except ImportError:
            from moto.server import ThreadedMotoServer

            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            host, port = server.get_host_and_port()
            return cls(f"http://{host}:{port}", server.stop)
        moto = MotoS3Server()
        moto.start()
        return cls(moto.endpoint, moto.stop)

    def reset(self) -> None:
        """Drop every bucket (moto keeps objects in memory)."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=30).close()

    def ensure_bucket(self, bucket: str) -> None:
        """Create ``bucket`` unless it exists."""
        try:
            self.client.head_bucket(Bucket=bucket)
        except Exception:  # noqa: BLE001 - botocore's 404 ClientError
            self.client.create_bucket(Bucket=bucket)

    def bytes_under(self, bucket: str, prefix: str = "", suffix: str = "") -> int:
        """Sum of the sizes of keys under ``prefix`` ending in ``suffix``; 0 for a missing bucket."""
        total = 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                total += sum(obj["Size"] for obj in page.get("Contents", []) if obj["Key"].endswith(suffix))
        except self.client.exceptions.NoSuchBucket:
            return 0
        return total


class Ctx:
    """One workload's folder, the tools, the log and (for W4) the S3 server."""

    def __init__(self, root: str, tools: Tools, log: str, s3: Optional[S3] = None) -> None:
        self.root, self.tools, self.log, self.s3 = root, tools, log, s3
        self.views: list[str] = []  # contenders' private copies of the data (a change is made in each)

    def path(self, *parts: str) -> str:
        """A path below the workload's folder."""
        return os.path.join(self.root, *parts)

    def untimed(self, cmd: Cmd) -> None:
        """Run a setup command (output in the log); raises ``CommandFailed`` if it fails."""
        run_command(cmd, self.log)


class Contender:
    """One row of a workload's table. Subclasses set ``label`` and ``command``."""

    label = ""
    is_studio = False
    cold: Optional[bool] = None  # drop the page cache before timed runs; None: as the workload says

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.outputs: list[str] = []  # local folders whose growth is "written"
        self.content_dirs: Optional[list[str]] = None  # growth that is content (default: outputs)
        self.bucket = ""  # an S3 bucket whose growth is also "written"
        self.bucket_content: list[tuple[str, str]] = []  # (prefix, suffix) of keys that are content (default: all)

    def missing(self) -> Optional[str]:
        """Why this contender cannot run here, or None."""
        return None

    def stage(self) -> None:
        """Arrange inputs; runs for every contender before any ``prepare``."""

    def prepare(self) -> None:
        """Build the state the timed runs start from (untimed, once)."""

    def before(self) -> None:
        """Untimed, before each timed run."""

    def command(self) -> Cmd:
        """The timed command."""
        raise NotImplementedError

    def warm(self) -> Optional[Cmd]:
        """A command that loads the contender's own code after the page cache was dropped."""
        return None

    def usage(self) -> tuple[int, int]:
        """``(written, content)`` bytes currently held by the destination."""
        written = disk_usage(*self.outputs)
        content = written if self.content_dirs is None else disk_usage(*self.content_dirs)
        if self.bucket and self.ctx.s3:
            remote = self.ctx.s3.bytes_under(self.bucket)
            written += remote
            if self.bucket_content:
                content += sum(self.ctx.s3.bytes_under(self.bucket, prefix, suffix) for prefix, suffix in self.bucket_content)
            else:
                content += remote
        return written, content

    def cleanup(self) -> None:
        """Remove what this contender wrote."""
        for path in self.outputs:
            remove(path)


def remove(path: str) -> None:
    """``rm -rf`` that also clears read-only folders (studio's blob cache is read-only)."""
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
        return
    subprocess.run(["chmod", "-R", "u+w", path], check=False, stderr=subprocess.DEVNULL)
    shutil.rmtree(path)


class Studio(Contender):
    """``studio run -e EXP --capture-once DATA:data noop.py`` from an empty folder: one capture.

    ``fresh`` starts each repetition from an empty ``STUDIOML_HOME`` (a first capture);
    otherwise ``prepare`` captures once and every repetition is a re-capture (W2, W3).
    ``s3`` sends the store to the S3 test server (``--store s3://…``).
    """

    label = "studio"
    is_studio = True

    def __init__(self, ctx: Ctx, name: str, data: str, *, fresh: bool, s3: bool = False) -> None:
        super().__init__(ctx)
        self.name, self.data, self.fresh, self.s3 = name, data, fresh, s3
        self.home = ctx.path(name, "home")
        self.cwd = ctx.path(name, "cwd")
        self.outputs = [self.home]
        self.content_dirs = [os.path.join(self.home, "store", "objects")]
        if s3:
            self.label = "studio (S3)"
            self.bucket = f"{name}-store"
            self.bucket_content = [("objects/", ""), ("packs/", ".pack")]  # loose objects and packs

    def missing(self) -> Optional[str]:
        import importlib.util

        if self.s3 and importlib.util.find_spec("studio_run.store.sync") is None:
            return "not available yet: studio_run/sync.py (the remote upload path) has not landed"
        return None

    def env(self) -> dict[str, str]:
        """Environment of every studio command of this contender."""
        env = dict(self.ctx.tools.studio_env, STUDIOML_HOME=self.home)
        return dict(FAKE_AWS, **env) if self.s3 else env

    def _reset(self) -> None:
        remove(self.home)
        os.makedirs(self.home)
        write_script(self.cwd, "noop.py", NOOP_SCRIPT)
        if self.s3 and self.ctx.s3:
            self.ctx.s3.ensure_bucket(self.bucket)
            with open(os.path.join(self.home, "config.yaml"), "w") as f:
                json.dump({"store": f"s3://{self.bucket}", "store_options": {"endpoint": self.ctx.s3.endpoint}}, f)

    def prepare(self) -> None:
        self._reset()
        if not self.fresh:
            self.ctx.untimed(self.command())

    def before(self) -> None:
        if self.fresh:
            self._reset()

    def command(self) -> Cmd:
        argv = self.ctx.tools.studio + ["run", "-e", self.name, "--capture-once", f"{self.data}:data", "noop.py"]
        return Cmd(argv, self.cwd, self.env())

    def warm(self) -> Optional[Cmd]:
        return self.ctx.tools.studio_cmd(["--version"], self.cwd, self.home)


class StudioSnapshot(Studio):
    """``studio_run.snapshots.capture.snapshot`` alone, timed inside its process: studio without the CLI."""

    label = "studio snapshot() in-process"
    is_studio = False  # informational: the goals compare the CLI, as a user runs it

    CODE = (
        "import json, os, sys, time\n"
        "from studio_run.snapshots.capture import snapshot\n"
        "from studio_run.objects.repository import Repository\n"
        "from studio_run.snapshots.statcache import StatCache\n"
        "from studio_run.storage.local import LocalStorage\n"
        "home, data = sys.argv[1], sys.argv[2]\n"
        "repo = Repository(LocalStorage(os.path.join(home, 'store')))\n"
        "cache = StatCache(os.path.join(home, 'statcache.sqlite'))\n"
        "start = time.perf_counter()\n"
        "snapshot(data, repo, cache)\n"
        "json.dump({'seconds': time.perf_counter() - start}, open(os.environ['BENCH_REPORT'], 'w'))\n"
    )

    def command(self) -> Cmd:
        return Cmd([sys.executable, "-c", self.CODE, self.home, self.data], self.cwd, self.env())


class StudioRun(Contender):
    """``studio run [OPTIONS] SCRIPT ARGS`` with a home that persists between repetitions (W5-W7).

    ``fresh`` empties the home before each repetition; ``on_prepare`` and ``on_before`` add a
    workload's own setup (capture the artifact to reuse, fill or empty the blob cache).
    """

    is_studio = True

    def __init__(self, ctx: Ctx, label: str, home: str, cwd: str, options: list[str], script: list[str], *,
                 fresh: bool = False, outputs: Optional[list[str]] = None, cold: Optional[bool] = None,
                 on_prepare: Optional[Callable[[], None]] = None,
                 on_before: Optional[Callable[[], None]] = None) -> None:
        super().__init__(ctx)
        self.label, self.home, self.cwd, self.options, self.script = label, home, cwd, options, script
        self.fresh, self.cold, self._on_prepare, self._on_before = fresh, cold, on_prepare, on_before
        self.outputs = outputs if outputs is not None else [home]

    def prepare(self) -> None:
        if self._on_prepare:
            self._on_prepare()

    def before(self) -> None:
        if self.fresh:
            remove(self.home)
        if self._on_before:
            self._on_before()

    def command(self) -> Cmd:
        return self.ctx.tools.studio_cmd(["run"] + self.options + self.script, self.cwd, self.home)

    def warm(self) -> Optional[Cmd]:
        return self.ctx.tools.studio_cmd(["--version"], self.cwd, self.home)


class StudioList(Contender):
    """``studio list`` against a store of many experiments (W8)."""

    label = "studio list"
    is_studio = True

    def __init__(self, ctx: Ctx, experiments: int) -> None:
        super().__init__(ctx)
        self.home, self.experiments = ctx.path("list-home"), experiments

    def prepare(self) -> None:
        from workloads import make_records

        remove(self.home)
        make_records(os.path.join(self.home, "store"), self.experiments)

    def command(self) -> Cmd:
        return self.ctx.tools.studio_cmd(["list"], self.ctx.root, self.home, COLUMNS="120")

    def cleanup(self) -> None:
        remove(self.home)
