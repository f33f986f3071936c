"""``studio run``: prepare artifacts, run the script, capture what it writes, record the run.

Order of work, each step before the next:

1. Check everything the user named (script, capture-once paths, reuses) so that a typo fails in
   a second with exit code 2, before anything is written.
2. Snapshot the inputs (``workspace`` and every ``--capture-once``), fill the blob cache for
   every ``--reuse``, publish the record as ``running`` and write the hand-off for fs_tracker.
3. Run the script; continuous artifacts (``--capture``, ``output``, ``modeldir``, ``tb``) are
   captured every interval in the background.
4. When the script ends, fails or is interrupted: one final capture, the record's status, exit
   code and end time, a one-line summary, and studio exits with the script's exit code.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import console
from ..config import Config
from ..errors import NotFoundError, StoreUnreachableError, UsageError
from ..handoff import ENV_VAR, Handoff, write_handoff
from ..refs import ReuseSpec, check_experiment_name
from ..snapshots.blobcache import BlobCache
from ..snapshots.statcache import StatCache
from ..store.open import open_store
from ..store.records import ReuseRecord, RunRecord, new_run_id
from ..store.store import Store
from ..uploads.collect import collect_files, handoff_settings, report_undelivered
from .capturer import Capturer, Target
from .child import run_child
from .request import RunRequest

__all__ = ["DEFAULT_TAGS", "run"]

DEFAULT_TAGS = ("workspace", "output", "modeldir", "tb")
_FINAL_RETRIES = 8
_CONNECT_WAIT = 3.0  # seconds studio run waits for a remote store before starting without it


def run(config: Config, request: RunRequest) -> int:
    """Run the script as a recorded experiment; returns the script's exit code."""
    _check_request(request)
    store = open_store(config, connect=False)
    try:
        _connect(store, request)
        reused = _resolve_reuses(store, request.reuses)
        return _Run(config, store, request, reused).execute()
    finally:
        store.close()


def _connect(store: Store, request: RunRequest) -> None:
    """Reach a remote store before the script starts: wrong credentials or a bucket that cannot
    be created fail now, not hours later. A store that is down or slow only delays the uploads
    (captures wait on this machine), unless ``--reuse`` has to read from it."""
    if request.reuses:
        store.connect()
        return
    try:
        if store.connect(timeout=_CONNECT_WAIT):
            return
        reason = f"{store.url} did not answer in {_CONNECT_WAIT:g} s"
    except StoreUnreachableError as exc:
        reason = str(exc)
    console.warn(f"store unreachable ({reason}); captures are kept on this machine and uploaded when it answers")


def _check_request(request: RunRequest) -> None:
    if request.module is None:
        if not request.script:
            raise UsageError("studio run needs a SCRIPT (or -m MODULE); e.g. studio run train.py")
        if not os.path.isfile(os.path.join(request.cwd, request.script)):
            raise UsageError(f"script {request.script!r} not found in {request.cwd}; check the path")
    if request.experiment is not None:
        check_experiment_name(request.experiment)
    tags: dict[str, str] = {}
    for flag, specs in (("--capture", request.captures), ("--capture-once", request.captures_once)):
        for spec in specs:
            if spec.tag in tags:
                raise UsageError(f"tag {spec.tag!r} is given twice ({tags[spec.tag]} and {flag}); tags must be unique")
            tags[spec.tag] = flag
    for spec in request.captures_once:
        if not os.path.exists(spec.path):
            raise UsageError(f"--capture-once path {spec.path} does not exist; create it or fix the path")
    for spec in request.captures:
        if os.path.isfile(spec.path):
            continue
        if os.path.exists(spec.path) and not os.path.isdir(spec.path):
            raise UsageError(f"--capture path {spec.path} is neither a folder nor a file")
    for reuse in request.reuses:
        if reuse.alias in tags:
            raise UsageError(f"reuse alias {reuse.alias!r} clashes with a captured tag; pick another alias")
        tags[reuse.alias] = "--reuse"


def _resolve_reuses(store: Store, reuses: tuple[ReuseSpec, ...]) -> list[ReuseRecord]:
    resolved = []
    for spec in reuses:
        ref = spec.ref
        record = store.records.resolve(ref.experiment, ref.version)
        art = record.artifacts.get(ref.tag)
        if art is None or not art.digest:
            tags = ", ".join(sorted(record.artifacts)) or "none"
            raise NotFoundError(
                f"experiment {ref.experiment!r} (version {record.version}) has no artifact {ref.tag!r}; its tags: {tags}"
            )
        resolved.append(ReuseRecord(spec.alias, ref.experiment, ref.tag, record.run_id, record.version, art.digest))
    return resolved


class _Run:
    def __init__(self, config: Config, store: Store, request: RunRequest, reused: list[ReuseRecord]) -> None:
        self.config, self.store, self.request, self.reused = config, store, request, reused
        self.run_id = new_run_id()
        self.experiment = request.experiment or _generated_name(self.run_id)
        self.run_dir = os.path.join(config.runs_dir, self.experiment, self.run_id)
        self.log_lock = threading.Lock()
        self.stat_cache = StatCache(config.statcache_path)

    def execute(self) -> int:
        request = self.request
        for sub in ("output", "modeldir", "tb"):
            os.makedirs(os.path.join(self.run_dir, sub), exist_ok=True)
        log_path = os.path.join(self.run_dir, "output", "output.log")
        open(log_path, "ab").close()
        for spec in request.captures:
            if not os.path.exists(spec.path):
                os.makedirs(spec.path, exist_ok=True)

        record = self._new_record()
        capturer = Capturer(self.store, record, self.stat_cache)
        once, continuous = self._targets()
        console.info(f"experiment {self.experiment} (run {self.run_id}) -> {self.store.url}")
        with console.progress("capturing inputs") as advance:
            capturer.capture(once, progress=advance, publish=False)
        self._warn_large_workspace(record)
        artifacts = {t.tag: t.path for t in once + continuous}
        artifacts.update(self._fill_cache())
        record.reuses = list(self.reused)
        # Packages and git facts take tens of milliseconds: gather them while the script runs.
        environment = ThreadPoolExecutor(1, thread_name_prefix="studio-env")
        env_future = environment.submit(self._environment)
        environment.shutdown(wait=False)
        capturer.capture(continuous, publish=False)
        capturer.publish()

        handoff_path = os.path.join(self.run_dir, "handoff.json")
        version = self._version()
        write_handoff(handoff_path, Handoff(self.experiment, self.run_id, version, self.store.url,
                                            self.run_dir, artifacts, upload=handoff_settings(self.config)))
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{ENV_VAR: handoff_path})
        command = [sys.executable] + (["-m", request.module] if request.module else [request.script or ""])
        command += list(request.args)

        capturer.start(continuous, self.config.capture_interval)
        try:
            result = run_child(command, cwd=request.cwd, env=env, log_path=log_path, log_lock=self.log_lock)
        finally:
            capturer.stop()
        with console.progress("final capture") as advance:
            capturer.capture(continuous, retries=_FINAL_RETRIES, progress=advance, publish=False)
        files = collect_files(self.store, self.run_dir)  # what the script sent to fs_tracker.upload_file
        if files.artifact is not None:
            record.artifacts[files.artifact.tag] = files.artifact
        env = env_future.result()
        git: dict[str, Any] = env.get("git") or {}  # type: ignore[assignment]
        record.git_commit, record.git_dirty = git.get("commit"), git.get("dirty")
        self.store.publish_environment(self.experiment, self.run_id, env)
        record.exit_code = result.exit_code
        record.ended_at = time.time()
        record.status = "interrupted" if result.interrupted_by else ("finished" if result.exit_code == 0 else "failed")
        capturer.publish(final=True)
        self._finish_remote()
        self._summary(record, version, capturer)
        report_undelivered(files)
        return files.exit_code(result.exit_code)

    def _new_record(self) -> RunRecord:
        from .environment import host_facts

        facts = host_facts()
        request = self.request
        shown = ["studio", "run"] + (["-m", request.module] if request.module else [request.script or ""])
        return RunRecord(
            experiment=self.experiment,
            run_id=self.run_id,
            started_at=time.time(),
            pid=os.getpid(),
            command=shown + list(request.args),
            script=request.module or request.script or "",
            host=facts.get("host") or socket.gethostname(),
            user=facts.get("user") or "",
            python=facts.get("python_version") or "",
        )

    def _targets(self) -> tuple[list[Target], list[Target]]:
        from ..snapshots.ignore import IgnoreRules

        request = self.request
        secrets = IgnoreRules.secrets_only()
        once = {s.tag: Target(s.tag, s.path, "capture-once", secrets) for s in request.captures_once}
        continuous = {s.tag: Target(s.tag, s.path, "capture", secrets) for s in request.captures}
        taken = set(once) | set(continuous)
        if "workspace" not in taken:
            # Never snapshot studio's own folders or other artifacts into the workspace.
            exclude = [self.config.home, self.config.blobcache, self.run_dir]
            if self.store.local_repo.is_local:
                exclude.append(self.store.local_repo.storage.root)  # type: ignore[attr-defined]
            exclude += [s.path for s in request.captures + request.captures_once]
            rules = IgnoreRules.for_workspace(request.cwd, exclude)
            once["workspace"] = Target("workspace", request.cwd, "workspace", rules)
        for tag in ("output", "modeldir", "tb"):
            if tag not in taken:
                lock = self.log_lock if tag == "output" else None
                continuous[tag] = Target(tag, os.path.join(self.run_dir, tag), tag, lock=lock)
        return list(once.values()), list(continuous.values())

    def _fill_cache(self) -> dict[str, str]:
        paths = {}
        cache = BlobCache(self.config.blobcache)
        for reuse in self.reused:
            manifest = self.store.repo.get_manifest(reuse.digest)
            with console.progress(f"fetching {reuse.experiment}/{reuse.tag}", manifest.size) as advance:
                path, hit = cache.ensure(self.store.repo, reuse.digest, manifest, advance)
            paths[reuse.alias] = path
            how = "cached" if hit else f"fetched {console.format_size(manifest.size)}"
            console.info(f"reuse {reuse.experiment}/{reuse.tag}@{reuse.version} as {reuse.alias!r} ({how})")
        return paths

    def _environment(self) -> dict[str, Any]:
        from .environment import git_facts, host_facts, installed_packages

        return {"host": host_facts(), "packages": installed_packages(), "git": git_facts(self.request.cwd)}

    def _version(self) -> int:
        ids = self.store.run_ids(self.experiment)
        return ids.index(self.run_id) + 1 if self.run_id in ids else len(ids) + 1

    def _warn_large_workspace(self, record: RunRecord) -> None:
        art = record.artifacts.get("workspace")
        if art and art.kind == "workspace" and art.size > self.config.workspace_warn_size:
            console.warn(
                f"the workspace snapshot is {console.format_size(art.size)} in {art.files} files; "
                "add large data to .studioignore (or .gitignore) to keep it small"
            )

    def _finish_remote(self) -> None:
        if self.store.is_remote:
            self.store.syncer().finish(self.config.upload_wait)

    def _summary(self, record: RunRecord, version: int, capturer: Capturer) -> None:
        parts = []
        for tag, art in sorted(record.artifacts.items()):
            if art.kind in ("capture", "capture-once", "workspace") or art.files:
                parts.append(f"{tag} ({art.files} files, {console.format_size(art.size)})")
        for problem in capturer.errors:
            console.warn(f"capture failed: {problem}")
        if capturer.unstable:
            console.warn(f"kept the previous version of files that kept changing: {', '.join(sorted(capturer.unstable)[:5])}")
        code = f", exit code {record.exit_code}" if record.exit_code else ""
        console.info(f"{self.experiment} v{version} {record.status}{code}; captured {', '.join(parts) or 'nothing'}")


def _generated_name(run_id: str) -> str:
    return "exp-" + run_id[:15].replace("T", "-") + "-" + run_id[-6:]
