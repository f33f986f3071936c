"""``studio run``: prepare the run, then execute it: run the script, capture what it writes, record it.

``run`` is ``prepare`` (``prepare.py``: check, snapshot the inputs, first record) followed by
``execute`` on the same machine; a queue can run the two on different machines. ``execute``:

1. Materialise: the run's own folders, every ``--reuse`` from the blob cache, the environment
   facts (gathered while the script runs), a first capture of the continuous artifacts and the
   hand-off file for fs_tracker.
2. Run the script; continuous artifacts (``--capture``, ``output``, ``modeldir``, ``tb``) are
   captured every interval in the background. Stop signals go to the script (``signals.py``).
3. Finish: one final capture, the files the script uploaded, the record's status, exit code and
   end time, a one-line summary. A run that did not capture everything (unreadable files, a
   capture that failed, uploads not delivered) is ``incomplete`` when the script exited 0,
   never ``finished``, and its artifacts say why; studio then exits 1. Otherwise studio exits
   with the script's exit code.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional

from .. import console
from ..config import Config
from ..handoff import ENV_VAR, Handoff, write_handoff
from ..snapshots.blobcache import BlobCache
from ..snapshots.ignore import IgnoreRules
from ..snapshots.statcache import StatCache
from ..snapshots.url_inputs import input_paths
from ..store.open import open_store
from ..store.records import ArtifactRecord
from ..store.store import Store
from ..uploads.collect import CollectedFiles, collect_files, handoff_settings, report_undelivered
from ..uploads.store_destination import FILES_TAG
from .capturer import Capturer, Target
from .child import ChildResult, run_child
from .environment import git_facts, host_facts, installed_packages
from .prepare import PreparedRun, check_request, input_repos, prepare, run_dir_of, stamp_origin, warn_links
from .request import RunRequest
from .signals import AbandonCapture, StopSignals
from .stopwatch import LOCAL_POLL, REMOTE_POLL, StopWatch

__all__ = ["DEFAULT_TAGS", "RunRequest", "execute", "run", "run_recorded"]

DEFAULT_TAGS = ("workspace", "output", "modeldir", "tb")
_FINAL_RETRIES = 8


def run(config: Config, request: RunRequest) -> int:
    """Run the script as a recorded experiment on this machine; returns studio's exit code."""
    return run_recorded(config, request)[0]


def run_recorded(config: Config, request: RunRequest) -> tuple[int, str]:
    """``run``, also returning the status the run's record ended with (``stopped``, ...)."""
    check_request(request)  # before the store is opened: a typo writes nothing
    store = open_store(config, connect=False)
    try:
        prepared = prepare(config, store, request, publish=False)
        return execute(config, store, prepared), prepared.record.status
    finally:
        store.close()


def execute(config: Config, store: Store, prepared: PreparedRun) -> int:
    """Run a prepared run's script here, capture what it writes and finish its record."""
    return _Execution(config, store, prepared).run()


class _Execution:
    def __init__(self, config: Config, store: Store, prepared: PreparedRun) -> None:
        self.config, self.store, self.prepared = config, store, prepared
        self.request, self.record = prepared.request, prepared.record
        self.run_dir = run_dir_of(config, prepared.experiment, prepared.run_id)
        self.log_path = os.path.join(self.run_dir, "output", "output.log")
        self.log_lock = threading.Lock()
        self.capturer = Capturer(store, self.record, StatCache(config.statcache_path), prepared.store_lock)
        self.continuous = self._continuous_targets()
        self.version = 0  # the run's number in its experiment, known once its record is listed

    def run(self) -> int:
        try:
            handoff_path = self._materialise()
        except BaseException as exc:
            self._give_up("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
            raise
        environment = _gather(self._environment)  # packages and git take tens of ms: not on the start path
        with StopSignals(self.config.stop_grace) as signals:
            watch = self._stopwatch(signals)
            result = self._run_script(handoff_path, signals, watch)
            stopped_as = signals.stopped_as or (
                "stopped" if (result.interrupted_by or signals.received) and watch.confirm() else None)  # SIGTERM from ``studio stop``
            try:
                self._final_capture()
            except AbandonCapture:
                for target in self.continuous:
                    self.capturer.problems[target.tag] = ["final capture abandoned (stopped by a repeated signal)"]
            return self._finish(result, environment, stopped_as)

    # 1. materialise
    def _materialise(self) -> str:
        """Folders, reuses and a first capture of the continuous artifacts; returns the hand-off path."""
        stamp_origin(self.record)  # the executing process is the one whose liveness counts
        for sub in ("output", "modeldir", "tb"):
            os.makedirs(os.path.join(self.run_dir, sub), exist_ok=True)
        open(self.log_path, "ab").close()
        for spec in self.request.captures:
            if not os.path.exists(spec.path):
                os.makedirs(spec.path, exist_ok=True)
        artifacts = {t.tag: t.path for t in self.continuous}
        artifacts.update({s.tag: s.path for s in self.request.captures_once})
        if "workspace" not in artifacts:
            artifacts["workspace"] = self.request.cwd
        artifacts.update(self._fill_cache())
        self.capturer.capture(self.continuous, publish=False)
        self.capturer.publish()
        handoff_path = os.path.join(self.run_dir, "handoff.json")
        self.version = self._version()
        handoff = Handoff(self.record.experiment, self.record.run_id, self.version, self.store.url,
                          self.run_dir, artifacts, upload=handoff_settings(self.config),
                          hyperparameters=dict(self.request.hyperparameters))
        write_handoff(handoff_path, handoff)
        return handoff_path

    def _continuous_targets(self) -> list[Target]:
        secrets = IgnoreRules.secrets_only()
        targets = {s.tag: Target(s.tag, s.path, "capture", secrets) for s in self.request.captures}
        taken = set(targets) | {s.tag for s in self.request.captures_once}
        for tag in ("output", "modeldir", "tb"):
            if tag not in taken:
                lock = self.log_lock if tag == "output" else None
                targets[tag] = Target(tag, os.path.join(self.run_dir, tag), tag, lock=lock)
        return list(targets.values())

    def _fill_cache(self) -> dict[str, str]:
        paths = {}
        cache = BlobCache(self.config.blobcache)
        for reuse in self.prepared.reused:
            path, how = cache.cached(reuse.restore_digest), "cached"  # a warm hit reads no manifest
            if path is None:
                manifest = self.store.repo.get_manifest(reuse.restore_digest)  # with file times when recorded
                with console.progress(f"fetching {reuse.experiment}/{reuse.tag}", manifest.size) as advance:
                    path, hit = cache.ensure(self.store.repo, reuse.restore_digest, manifest, advance)
                how = "cached" if hit else f"fetched {console.format_size(manifest.size)}"
            paths[reuse.alias] = path
            console.info(f"reuse {reuse.experiment}/{reuse.tag}@{reuse.version} as {reuse.alias!r} ({how})")
        urls = {s.tag: self.record.artifacts[s.tag].digest for s in self.request.captures_once
                if s.is_url and s.tag in self.record.artifacts}
        paths.update(input_paths(cache, input_repos(self.store), urls))  # the script reads a local copy
        return paths

    def _give_up(self, status: str) -> None:
        """Close the record of a run that ended before its script started (never left ``running``)."""
        self.record.status, self.record.ended_at = status, time.time()
        try:
            self.capturer.publish(final=True)
        except Exception as exc:  # noqa: BLE001 - the original error is the one to report
            console.warn(f"could not record that the run {status} before its script started: {exc}")

    # 2. run the script
    def _stopwatch(self, signals: StopSignals) -> StopWatch:
        """What ends the script from outside: ``--max-duration``, ``studio stop`` from anywhere."""
        grace = self.config.stop_grace

        def stop(status: str) -> bool:
            why = (f"--max-duration {_seconds(self.request.max_duration or 0)} reached" if status == "timed-out"
                   else "stop requested (studio stop)")
            stopping = signals.stop(status)
            if stopping:
                console.warn(f"{why}: stopping the script (SIGTERM; SIGKILL after {grace:g} s)")
            return stopping

        return StopWatch(self.store.storage, self.record.experiment, self.record.run_id, stop,
                         max_duration=self.request.max_duration, connection=self.store.connection,
                         poll=REMOTE_POLL if self.store.is_remote else LOCAL_POLL)

    def _run_script(self, handoff_path: str, signals: StopSignals, watch: StopWatch) -> ChildResult:
        request = self.request
        env = {**os.environ, **self.config.script_env, "PYTHONUNBUFFERED": "1", ENV_VAR: handoff_path}
        command = [sys.executable] + (["-m", request.module] if request.module else [request.script or ""])
        command += list(request.args)
        self.capturer.start(self.continuous, self.config.capture_interval)
        watch.start()
        try:
            return run_child(command, cwd=request.cwd, env=env, log_path=self.log_path,
                             log_lock=self.log_lock, signals=signals)
        finally:
            watch.close()
            self.capturer.stop()

    # 3. finish
    def _final_capture(self) -> None:
        with console.progress("final capture") as advance:
            self.capturer.capture(self.continuous, retries=_FINAL_RETRIES, progress=advance, publish=False)

    def _finish(self, result: ChildResult, environment: "Future[dict[str, Any]]", stopped_as: Optional[str]) -> int:
        """Record how the run ended and say it; returns studio's exit code (for a run stopped
        or timed out, the script's, or 1 when the script exited 0 all the same)."""
        record, capturer = self.record, self.capturer
        files = collect_files(self.store, self.run_dir)  # what the script sent to fs_tracker.upload_file
        if files.artifact is not None:
            record.artifacts[files.artifact.tag] = files.artifact
        env = environment.result()
        git: dict[str, Any] = env.get("git") or {}
        record.git_commit, record.git_dirty = git.get("commit"), git.get("dirty")
        self.store.publish_environment(record.experiment, record.run_id, env)
        missing = self._mark_incomplete(files)
        record.exit_code, record.ended_at = result.exit_code, time.time()
        record.status = stopped_as or _status(result, bool(missing))
        capturer.publish(final=True)
        self._finish_remote()
        self._summary(missing)
        report_undelivered(files)
        if stopped_as:
            return result.exit_code or 1
        if (missing or files.undelivered) and result.exit_code == 0:
            return 1
        return result.exit_code

    def _mark_incomplete(self, files: CollectedFiles) -> dict[str, list[str]]:
        """Put what each artifact misses into its record; returns the reasons by tag."""
        missing = {tag: list(reasons) for tag, reasons in self.prepared.problems.items() if reasons}
        missing.update({tag: list(reasons) for tag, reasons in self.capturer.problems.items() if reasons})
        if files.undelivered:
            names = ", ".join(repr(n) for n in list(files.undelivered)[:3])
            more = f" and {len(files.undelivered) - 3} more" if len(files.undelivered) > 3 else ""
            missing.setdefault(FILES_TAG, []).append(f"{len(files.undelivered)} uploaded file(s) not delivered: {names}{more}")
        kinds = {t.tag: t.kind for t in self.continuous}
        for tag, reasons in missing.items():
            art = self.record.artifacts.get(tag)
            if art is None:
                kind = kinds.get(tag) or ("files" if tag == FILES_TAG else _input_kind(tag))
                art = self.record.artifacts[tag] = ArtifactRecord(tag=tag, kind=kind)
            art.incomplete = reasons
        return missing

    def _environment(self) -> dict[str, Any]:
        return {"host": host_facts(), "packages": installed_packages(), "git": git_facts(self.request.cwd)}

    def _version(self) -> int:
        ids = self.store.run_ids(self.record.experiment)
        run_id = self.record.run_id
        return ids.index(run_id) + 1 if run_id in ids else len(ids) + 1

    def _finish_remote(self) -> None:
        if self.store.is_remote:
            self.store.syncer().finish(self.config.upload_wait)

    def _summary(self, missing: dict[str, list[str]]) -> None:
        record, capturer = self.record, self.capturer
        parts = []
        for tag, art in sorted(record.artifacts.items()):
            if art.digest and (art.kind in ("capture", "capture-once", "workspace") or art.files):
                parts.append(f"{tag} ({art.files} files, {console.format_size(art.size)})")
        for problem in dict.fromkeys(capturer.errors):  # each failure once, however many captures met it
            console.warn(f"capture failed: {problem}")
        if capturer.unstable:
            console.warn(f"kept the previous version of files that kept changing: {', '.join(sorted(capturer.unstable)[:5])}")
        warn_links(capturer.links_skipped)
        if missing:
            console.warn("incomplete: " + "; ".join(f"{tag}: {', '.join(why)}" for tag, why in sorted(missing.items())))
        code = f", exit code {record.exit_code}" if record.exit_code else ""
        console.info(f"{record.experiment} v{self.version} {record.status}{code}; "
                     f"captured {', '.join(parts) or 'nothing'}")


def _status(result: ChildResult, incomplete: bool) -> str:
    if result.interrupted_by:
        return "interrupted"
    if result.exit_code != 0:
        return "failed"
    return "incomplete" if incomplete else "finished"


def _seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _input_kind(tag: str) -> str:
    return "workspace" if tag == "workspace" else "capture-once"


def _gather(work: Any) -> "Future[dict[str, Any]]":
    pool = ThreadPoolExecutor(1, thread_name_prefix="studio-env")
    future: Future[dict[str, Any]] = pool.submit(work)
    pool.shutdown(wait=False)
    return future

