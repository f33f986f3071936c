"""The baselines: what people use instead of studio, each run for real as its users run it.

Durability is made equal: studio ``syncfs``-es its store before it publishes a snapshot, so every
baseline that writes a local destination ends with ``sync -f DEST`` inside the timed command.
Reads into a cache (W6) are not synced by studio, and are not synced here either.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from typing import Callable, Optional

from contenders import INSTALL_HINT, Contender, Ctx, remove
from measure import Cmd

__all__ = [
    "Boto3Upload", "Copy", "Dvc", "DvcPull", "Mlflow", "MlflowDownload", "Python", "TarCapture", "TarExtract",
]

_QUIET = {"DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
          "GIT_PYTHON_REFRESH": "quiet", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def _sh(script: str, cwd: str, env: Optional[dict[str, str]] = None) -> Cmd:
    return Cmd(["sh", "-c", script], cwd, dict(_QUIET, **(env or {})))


def _q(path: str) -> str:
    return shlex.quote(path)


class _Capture(Contender):
    """A baseline that captures a folder into a destination, once per capture.

    ``fresh``: every repetition starts from an empty destination (first capture); otherwise
    ``prepare`` captures once and each repetition captures again beside the earlier copies,
    the oldest of which are removed before the timed run (only the growth is measured).
    """

    def __init__(self, ctx: Ctx, name: str, data: str, *, fresh: bool) -> None:
        super().__init__(ctx)
        self.name, self.data, self.fresh = name, data, fresh
        self.dest = ctx.path(name)
        self.outputs = [self.dest]
        self.count = 0

    def prepare(self) -> None:
        remove(self.dest)
        os.makedirs(self.dest)
        if not self.fresh:
            self.ctx.untimed(self.command())

    def before(self) -> None:
        if self.fresh:
            remove(self.dest)
            os.makedirs(self.dest)
        else:
            for name in os.listdir(self.dest):
                remove(os.path.join(self.dest, name))
        self.count += 1

    def command(self) -> Cmd:
        raise NotImplementedError


class TarCapture(_Capture):
    """The original StudioML: GNU tar of the whole folder into the store, once per capture."""

    def __init__(self, ctx: Ctx, name: str, data: str, *, fresh: bool, gzip: bool) -> None:
        super().__init__(ctx, name, data, fresh=fresh)
        self.gzip = gzip
        self.label = "tar + gzip (Studio-style)" if gzip else "tar (Studio-style)"

    def command(self) -> Cmd:
        out = os.path.join(self.dest, f"capture-{self.count}.tar" + (".gz" if self.gzip else ""))
        flags = "-czf" if self.gzip else "-cf"
        return _sh(f"tar {flags} {_q(out)} -C {_q(self.data)} . && sync -f {_q(self.dest)}", self.dest)


class Copy(_Capture):
    """The floor: ``cp -r`` of the folder (then ``sync``, unless ``durable`` is off)."""

    def __init__(self, ctx: Ctx, name: str, data: str, *, fresh: bool, durable: bool = True) -> None:
        super().__init__(ctx, name, data, fresh=fresh)
        self.durable = durable
        self.label = "cp -r + sync" if durable else "cp -r"

    def command(self) -> Cmd:
        out = os.path.join(self.dest, f"copy-{self.count}")
        sync = f" && sync -f {_q(self.dest)}" if self.durable else ""
        return _sh(f"cp -r {_q(self.data)} {_q(out)}{sync}", self.dest)


class Dvc(_Capture):
    """``dvc add`` + ``dvc push`` to a local remote folder or to S3 (dvc-s3), as a DVC user captures.

    The repository holds its own copy of the data: ``dvc add`` replaces a hard-linked workspace
    file with a copy from its cache, which would change the link count and ctime of the files
    the other contenders capture. W2's change is made in both copies. DVC's hash cache lives in
    its site cache folder, which a fresh repetition empties too, so a first capture hashes everything.
    """

    def __init__(self, ctx: Ctx, name: str, data: str, *, fresh: bool, s3: bool = False) -> None:
        super().__init__(ctx, name, data, fresh=fresh)
        self.s3 = s3
        self.label = "dvc add + push (S3)" if s3 else "dvc add + push"
        self.repo = os.path.join(self.dest, "repo")
        self.remote = os.path.join(self.dest, "remote")
        self.site = os.path.join(self.dest, "site-cache")
        self.outputs = [os.path.join(self.repo, ".dvc", "cache"), self.remote]
        if s3:
            self.bucket = f"{name}-remote"

    def missing(self) -> Optional[str]:
        if not self.ctx.tools.dvc:
            return INSTALL_HINT + " (dvc)"
        if self.s3 and not self.ctx.tools.has("dvc_s3"):
            return INSTALL_HINT + " (dvc-s3)"
        return None

    def env(self) -> dict[str, str]:
        """DVC's own environment: no telemetry, our site cache, fake S3 credentials."""
        extra = {"DVC_SITE_CACHE_DIR": self.site}
        if self.s3 and self.ctx.s3:
            extra.update(self.ctx.s3.env)
        return extra

    def stage(self) -> None:
        remove(self.dest)
        os.makedirs(self.repo)
        subprocess.run(["cp", "-a", self.data, os.path.join(self.repo, "data")], check=True)
        self.ctx.views.append(os.path.join(self.repo, "data"))

    def _init(self) -> None:
        for name in (".dvc", ".dvcignore", "data.dvc"):
            remove(os.path.join(self.repo, name))
        remove(self.remote)
        remove(self.site)
        dvc = _q(self.ctx.tools.dvc or "dvc")
        if self.s3 and self.ctx.s3:
            self.ctx.s3.ensure_bucket(self.bucket)
            remote = (f"{dvc} remote add -q -d r s3://{self.bucket}/dvc && "
                      f"{dvc} remote modify -q r endpointurl {self.ctx.s3.endpoint}")
        else:
            remote = f"{dvc} remote add -q -d r {_q(self.remote)}"
        self.ctx.untimed(_sh(f"{dvc} init -q --no-scm && {dvc} config -q core.analytics false && {remote}",
                             self.repo, self.env()))

    def prepare(self) -> None:
        self._init()
        if not self.fresh:
            self.ctx.untimed(self.capture())

    def before(self) -> None:
        if self.fresh:
            self._init()

    def command(self) -> Cmd:
        return self.capture()

    def capture(self) -> Cmd:
        """``dvc add`` + ``dvc push`` (+ ``sync`` for a local remote)."""
        dvc = _q(self.ctx.tools.dvc or "dvc")
        sync = "" if self.s3 else f" && sync -f {_q(self.repo)}"
        return _sh(f"{dvc} add -q data && {dvc} push -q{sync}", self.repo, self.env())

    def warm(self) -> Optional[Cmd]:
        return _sh(f"{_q(self.ctx.tools.dvc or 'dvc')} --version > /dev/null", self.repo)

    def cleanup(self) -> None:
        remove(self.dest)


class DvcPull(Dvc):
    """DVC reuse: ``dvc pull`` of the pushed folder into a workspace with an empty cache."""

    def __init__(self, ctx: Ctx, name: str, data: str) -> None:
        super().__init__(ctx, name, data, fresh=False)
        self.label = "dvc pull"
        self.workspace = os.path.join(self.repo, "data")
        self.cache = os.path.join(self.repo, ".dvc", "cache")
        self.outputs = [self.workspace, self.cache]

    def before(self) -> None:
        for path in (self.workspace, self.cache, self.site):
            remove(path)

    def command(self) -> Cmd:
        return _sh(f"{_q(self.ctx.tools.dvc or 'dvc')} pull -q", self.repo, self.env())


_MLFLOW_LOG = """\
import sys, mlflow
data, artifacts = sys.argv[1], sys.argv[2]
found = mlflow.get_experiment_by_name("bench")
eid = found.experiment_id if found else mlflow.create_experiment("bench", artifact_location=artifacts)
if data:
    with mlflow.start_run(experiment_id=eid):
        mlflow.log_artifacts(data, "data")
"""

_MLFLOW_GET = """\
import sys, mlflow
run = mlflow.search_runs(experiment_names=["bench"], output_format="list")[0]
mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="data", dst_path=sys.argv[1])
"""


class Mlflow(_Capture):
    """``mlflow.log_artifacts`` in a new run, to a local artifact folder or to S3 (its S3 artifact repository).

    Tracking uses SQLite, MLflow's recommended local backend (its ``./mlruns`` file store refuses
    to start since MLflow 3 unless told to); the database and experiment are made in ``prepare``,
    so a first capture is a user's first ``log_artifacts`` with MLflow already set up.
    """

    def __init__(self, ctx: Ctx, name: str, data: str, *, fresh: bool, s3: bool = False) -> None:
        super().__init__(ctx, name, data, fresh=fresh)
        self.s3 = s3
        self.label = "mlflow log_artifacts (S3)" if s3 else "mlflow log_artifacts"
        self.db = os.path.join(self.dest, "mlflow.db")
        self.artifacts = os.path.join(self.dest, "artifacts")
        self.outputs = [self.artifacts, self.db]
        self.content_dirs = [self.artifacts]
        if s3:
            self.bucket = f"{name}-artifacts"

    def missing(self) -> Optional[str]:
        if not self.ctx.tools.has("mlflow"):
            return INSTALL_HINT + " (mlflow)"
        if self.s3 and not self.ctx.tools.has("boto3"):
            return INSTALL_HINT + " (boto3)"
        return None

    def env(self) -> dict[str, str]:
        """The tracking database and, for S3, the test server."""
        env = {"MLFLOW_TRACKING_URI": "sqlite:///" + self.db}
        if self.s3 and self.ctx.s3:
            env.update(self.ctx.s3.env)
        return env

    def _python(self, code: str, *args: str) -> str:
        return " ".join([_q(self.ctx.tools.python), "-c", _q(code)] + [_q(a) for a in args])

    def prepare(self) -> None:
        remove(self.dest)
        os.makedirs(self.artifacts)
        location = f"s3://{self.bucket}/mlflow" if self.s3 else "file://" + self.artifacts
        self.before()
        first = "" if self.fresh else self.data  # a re-capture starts from one logged run
        self.ctx.untimed(_sh(self._python(_MLFLOW_LOG, first, location), self.dest, self.env()))

    def before(self) -> None:
        if self.fresh:
            remove(self.artifacts)
            os.makedirs(self.artifacts)
        if self.s3 and self.ctx.s3:
            self.ctx.s3.ensure_bucket(self.bucket)

    def command(self) -> Cmd:
        sync = "" if self.s3 else f" && sync -f {_q(self.dest)}"
        return _sh(self._python(_MLFLOW_LOG, self.data, "") + sync, self.dest, self.env())

    def warm(self) -> Optional[Cmd]:
        return Cmd([self.ctx.tools.python, "-c", "import mlflow"], self.dest, dict(_QUIET))


class MlflowDownload(Mlflow):
    """MLflow reuse: ``mlflow.artifacts.download_artifacts`` of the logged folder into a fresh one."""

    def __init__(self, ctx: Ctx, name: str, data: str) -> None:
        super().__init__(ctx, name, data, fresh=False)
        self.label = "mlflow download_artifacts"
        self.restored = os.path.join(self.dest, "restored")
        self.outputs = self.content_dirs = [self.restored]

    def before(self) -> None:
        remove(self.restored)
        os.makedirs(self.restored)

    def command(self) -> Cmd:
        return _sh(self._python(_MLFLOW_GET, self.restored), self.dest, self.env())

    def cleanup(self) -> None:
        remove(self.dest)


_BOTO3_UPLOAD = """\
import os, sys
from concurrent.futures import ThreadPoolExecutor
import boto3
from botocore.config import Config
data, bucket, endpoint, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(max_pool_connections=workers))
files = [os.path.join(d, n) for d, _, names in os.walk(data) for n in names]
with ThreadPoolExecutor(workers) as pool:
    list(pool.map(lambda p: s3.upload_file(p, bucket, "raw/" + os.path.relpath(p, data)), files))
"""


class Boto3Upload(Contender):
    """The S3 floor: every file uploaded with ``boto3 upload_file`` from a pool of threads."""

    def __init__(self, ctx: Ctx, name: str, data: str, workers: int = 16) -> None:
        super().__init__(ctx)
        self.name, self.data, self.workers = name, data, workers
        self.label = f"boto3 upload_file x{workers} threads"
        self.bucket = f"{name}-raw"

    def missing(self) -> Optional[str]:
        return None if self.ctx.tools.has("boto3") else INSTALL_HINT + " (boto3)"

    def before(self) -> None:
        if self.ctx.s3:
            self.ctx.s3.ensure_bucket(self.bucket)

    def command(self) -> Cmd:
        assert self.ctx.s3 is not None
        argv = [self.ctx.tools.python, "-c", _BOTO3_UPLOAD, self.data, self.bucket,
                self.ctx.s3.endpoint, str(self.workers)]
        return Cmd(argv, self.ctx.root, dict(self.ctx.s3.env))


class Python(Contender):
    """The script alone, ``python SCRIPT ARGS``, without studio (W5, W7)."""

    def __init__(self, ctx: Ctx, label: str, cwd: str, script: list[str], outputs: Optional[list[str]] = None,
                 on_before: Optional[Callable[[], None]] = None) -> None:
        super().__init__(ctx)
        self.label, self.cwd, self.script, self._on_before = label, cwd, script, on_before
        self.outputs = outputs or []

    def before(self) -> None:
        if self._on_before:
            self._on_before()

    def command(self) -> Cmd:
        return Cmd([sys.executable] + self.script, self.cwd)


class TarExtract(Contender):
    """Studio-style reuse: extract the capture's tar into a fresh folder."""

    label = "tar -x (Studio-style)"

    def __init__(self, ctx: Ctx, name: str, data: str) -> None:
        super().__init__(ctx)
        self.data, self.tar = data, ctx.path(name, "capture.tar")
        self.dest = ctx.path(name, "restored")
        self.outputs = [self.dest]

    def prepare(self) -> None:
        os.makedirs(os.path.dirname(self.tar), exist_ok=True)
        self.ctx.untimed(_sh(f"tar -cf {_q(self.tar)} -C {_q(self.data)} .", self.ctx.root))

    def before(self) -> None:
        remove(self.dest)
        os.makedirs(self.dest)

    def command(self) -> Cmd:
        return _sh(f"tar -xf {_q(self.tar)} -C {_q(self.dest)}", self.ctx.root)

    def cleanup(self) -> None:
        remove(os.path.dirname(self.tar))

