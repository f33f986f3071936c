"""The first half of ``studio run``: check the request, snapshot the inputs, write the first record.

Everything here happens before the script exists, on the machine that submits the run:

1. ``check_request``: every name and path the user gave, so that a typo fails in a second with
   exit code 2 before anything is written (a device or FIFO given to ``--capture-once`` too:
   its content is a stream, not a file that can be kept).
2. The store is reached (``--reuse`` needs it; otherwise a slow store only delays uploads).
3. Each ``--reuse`` is resolved to one exact run and snapshot (an unpinned one skips runs that
   did not finish), and the terminal says which.
4. The inputs, ``workspace`` and every ``--capture-once``, are snapshotted, and the record is
   published as ``running`` with them and the reuses in it (on one machine, ``run`` leaves that
   first write to ``execute``, see ``prepare``).

What remains for ``execute`` is a ``PreparedRun``: the request, the record and the reuses. The
blob cache is filled there, since it is the executing machine that needs the files.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .. import console
from ..config import Config
from ..errors import StoreUnreachableError, UsageError
from ..objects.repository import Repository
from ..origin import current_origin
from ..redact import MASK, is_secret_flag, redact_args
from ..refs import ReuseSpec, check_experiment_name
from ..snapshots.ignore import IgnoreRules
from ..snapshots.statcache import StatCache
from ..snapshots.url_inputs import FetchedInput, UrlInputs
from ..storage.urls import scheme_of
from ..store.artifacts import resolve_artifact
from ..store.locks import StoreLock
from ..store.records import ArtifactRecord, ReuseRecord, RunRecord, new_run_id
from ..store.store import Store
from .capturer import Capturer, Target
from .request import RunRequest

__all__ = ["PreparedRun", "check_request", "generated_name", "input_repos", "prepare", "run_dir_of", "stamp_origin", "warn_links"]

_CONNECT_WAIT = 3.0  # seconds studio run waits for a remote store before starting without it
_SLOW_INPUTS = 10.0  # seconds of input snapshot after which the terminal says why the script waits


@dataclass
class PreparedRun:
    """A run whose inputs are stored and whose record exists: what ``execute`` carries out."""

    request: RunRequest
    record: RunRecord
    reused: list[ReuseRecord] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)  # what the input snapshots missed
    # The inputs' store lock, still held when the first record is left to ``execute`` (gc must
    # not sweep the inputs before a record names them); None once that record is written.
    store_lock: Optional[StoreLock] = None

    @property
    def experiment(self) -> str:
        """The experiment's name (given or generated)."""
        return self.record.experiment

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.record.run_id


def prepare(config: Config, store: Store, request: RunRequest, *, publish: bool = True) -> PreparedRun:
    """Check ``request``, snapshot its inputs into ``store`` and publish its first record.

    ``publish=False`` leaves the first write of the record to ``execute`` (which publishes it
    with the first capture of the continuous artifacts): on one machine a second write a few
    milliseconds later buys nothing, and a remote store then receives one complete first record.
    """
    check_request(request)
    _connect(store, request)
    reused = [_resolve_reuse(store, spec) for spec in request.reuses]
    urls = UrlInputs(config.home, input_repos(store), lambda scheme: _url_options(config, scheme))
    fetched = urls.fetch([s for s in request.captures_once if s.is_url])  # a bad URL stores nothing
    run_id = new_run_id()
    record = _new_record(request, request.experiment or generated_name(run_id), run_id)
    console.info(f"experiment {record.experiment} (run {run_id}) -> {store.url}")
    capturer = Capturer(store, record, StatCache(config.statcache_path))
    try:
        with _SlowNotice(request.cwd) as notice, console.progress("capturing inputs") as advance:
            targets = _input_targets(config, store, request, run_id, record.experiment)
            targets += [Target(f.tag, f.path, "capture-once", IgnoreRules.secrets_only()) for f in fetched if f.path]
            capturer.capture(targets, progress=notice.wrap(advance), publish=False)
        _point_at_unchanged(store, record, [f for f in fetched if f.digest])
        for item in fetched:
            if item.tag in record.artifacts:
                record.artifacts[item.tag].source = item.url
        whole = [f for f in fetched if f.tag in record.artifacts and not capturer.problems.get(f.tag)]
        urls.remember(whole, {f.tag: record.artifacts[f.tag].digest for f in whole})  # never a partial one
    finally:
        urls.cleanup()
    _warn_large_workspace(config, record)
    warn_links(capturer.links_skipped)
    record.reuses = reused
    if publish:
        capturer.publish()
    held = None if publish or not capturer.store_lock.held else capturer.store_lock
    return PreparedRun(request, record, reused, dict(capturer.problems), held)


def check_request(request: RunRequest) -> None:
    """Raise ``UsageError`` for anything in ``request`` that cannot work, before anything is written."""
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
        if spec.is_url:
            continue  # reached in ``prepare``, still before anything is stored
        if not os.path.exists(spec.path):
            raise UsageError(f"--capture-once path {spec.path} does not exist; create it or fix the path")
        kind = _special_kind(spec.path)
        if kind:
            raise UsageError(f"--capture-once path {spec.path} is a {kind}, not a file or folder; "
                             "copy what it gives into a file and capture that")
    for spec in request.captures:
        if os.path.isfile(spec.path):
            continue
        if os.path.exists(spec.path) and not os.path.isdir(spec.path):
            raise UsageError(f"--capture path {spec.path} is neither a folder nor a file")
    for reuse in request.reuses:
        if reuse.alias in tags:
            raise UsageError(f"reuse alias {reuse.alias!r} clashes with a captured tag; pick another alias")
        tags[reuse.alias] = "--reuse"


def run_dir_of(config: Config, experiment: str, run_id: str) -> str:
    """The run's own folder on this machine (output, modeldir, tb, hand-off)."""
    return os.path.join(config.runs_dir, experiment, run_id)


def stamp_origin(record: RunRecord) -> None:
    """Name this process as the one running ``record`` (host, user, pid and its start time)."""
    origin = current_origin()
    record.host, record.user, record.python = origin.host, origin.user, origin.python
    record.pid, record.pid_started = origin.pid, origin.pid_started


def _special_kind(path: str) -> str:
    mode = os.stat(path).st_mode
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return ""


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


def _resolve_reuse(store: Store, spec: ReuseSpec) -> ReuseRecord:
    """The exact run and snapshot ``spec`` means, said in one line when it is not the newest run."""
    ref = spec.ref
    record, art = resolve_artifact(store, ref, prefer_finished=True)
    newest = len(store.records.run_ids(ref.experiment))
    if ref.version is None and record.version != newest:
        console.info(f"reuse {ref.experiment}/{ref.tag}: chose v{record.version} (run {record.run_id}, "
                     f"{record.status}), the newest run that finished with it; newer runs did not")
    return ReuseRecord(spec.alias, ref.experiment, ref.tag, record.run_id, record.version, art.digest, art.times)


def _new_record(request: RunRequest, experiment: str, run_id: str) -> RunRecord:
    shown = ["studio", "run"] + (["-m", request.module] if request.module else [request.script or ""])
    record = RunRecord(
        experiment=experiment,
        run_id=run_id,
        started_at=time.time(),
        command=shown + redact_args(request.args),  # the script gets the real values; records never do
        script=request.module or request.script or "",
        hyperparameters={name: MASK if is_secret_flag(f"--{name}") else value  # the rule of redact_args
                         for name, value in request.hyperparameters.items()},
    )
    stamp_origin(record)
    return record


def _input_targets(config: Config, store: Store, request: RunRequest, run_id: str, experiment: str) -> list[Target]:
    secrets = IgnoreRules.secrets_only()
    targets = [Target(s.tag, s.path, "capture-once", secrets) for s in request.captures_once if not s.is_url]
    taken = {s.tag for s in request.captures + request.captures_once}
    if "workspace" not in taken:
        # Never snapshot studio's own folders or other artifacts into the workspace.
        exclude = [config.home, config.blobcache, run_dir_of(config, experiment, run_id)]
        if store.local_repo.is_local:
            exclude.append(store.local_repo.storage.root)  # type: ignore[attr-defined]
        exclude += [s.path for s in request.captures + request.captures_once if not s.is_url]
        rules = IgnoreRules.for_workspace(request.cwd, exclude)
        targets.append(Target("workspace", request.cwd, "workspace", rules))
    return targets


def input_repos(store: Store) -> list[Repository]:
    """Where a URL input's earlier snapshot may be: the captures' repository, then a remote
    store's own when it is connected (an unreachable one only means fetching again)."""
    repos: list[Repository] = [store.local_repo]
    if store.is_remote and (store.connection is None or store.connection.connected):
        repos.append(store.repo)
    return repos


def _url_options(config: Config, scheme: str) -> dict[str, Any]:
    """Backend options for fetching a ``scheme://`` input: the store's own when it uses the same
    scheme (an S3 endpoint, SSH key files), else none (each SDK's environment: AWS_ENDPOINT_URL_S3,
    STORAGE_EMULATOR_HOST, ...)."""
    return dict(config.store_options) if scheme_of(config.store) == scheme else {}


def _point_at_unchanged(store: Store, record: RunRecord, unchanged: list[FetchedInput]) -> None:
    """The artifacts of URL inputs not fetched again: the snapshot an earlier run made of them."""
    for item in unchanged:
        repo = store.local_repo if store.local_repo.has_manifest(item.digest) else store.repo
        manifest = repo.get_manifest(item.digest)
        record.artifacts[item.tag] = ArtifactRecord(
            tag=item.tag, kind="capture-once", digest=item.digest, size=manifest.size,
            files=manifest.file_count, snapshots=1, updated_at=time.time(), single_file=manifest.single_file,
        )


def _warn_large_workspace(config: Config, record: RunRecord) -> None:
    art = record.artifacts.get("workspace")
    if art and art.kind == "workspace" and art.size > config.workspace_warn_size:
        console.warn(
            f"the workspace snapshot is {console.format_size(art.size)} in {art.files} files; "
            "add large data to .studioignore (or .gitignore) to keep it small"
        )


def warn_links(links: set[str]) -> None:
    """Name the symlinks a capture left out on purpose (one line)."""
    if links:
        shown = ", ".join(sorted(links)[:5]) + (f" and {len(links) - 5} more" if len(links) > 5 else "")
        console.warn(f"symlinks not followed (to a folder outside, or dangling): {shown}")


class _SlowNotice:
    """Says once, when the input snapshot takes long, why the script has not started yet.

    The inputs are snapshotted before the script starts, never alongside it: a script that
    writes into its working folder would otherwise be captured half-changed.
    """

    def __init__(self, cwd: str, after: float = _SLOW_INPUTS) -> None:
        self.cwd, self.after = cwd, after
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._wait, name="studio-slow-inputs", daemon=True)

    def wrap(self, advance: Callable[[int], None]) -> Callable[[int], None]:
        """``advance`` that also counts the bytes read so far."""

        def counted(nbytes: int) -> None:
            self.done += nbytes
            advance(nbytes)

        return counted

    def __enter__(self) -> "_SlowNotice":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _wait(self) -> None:
        if not self._stop.wait(self.after):
            console.info(
                f"snapshotting the inputs before the script starts ({console.format_size(self.done)} read so far "
                f"in {self.cwd}); add large data to .studioignore to start sooner"
            )


def generated_name(run_id: str) -> str:
    """The experiment name of a run started without ``-e``: ``exp-<date>-<time>-<hex>``."""
    return "exp-" + run_id[:15].replace("T", "-") + "-" + run_id[-6:]
