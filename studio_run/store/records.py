"""Experiment records: the small mutable pointers that make snapshots visible.

One record per run of an experiment, at ``experiments/<name>/<run_id>.json``; the environment
(packages, git diff), written once, sits beside it in ``<run_id>.env.json`` so that listing ten
thousand runs reads only the small files. A record names each artifact's manifest digest; it is
rewritten (atomically) after every capture that changed something, and is the last thing
written, so whatever a reader finds through it is complete.

Run ids sort by start time (``20261122T192448Z-1a2b3c``) and need no coordination between
machines sharing a store; an experiment's *versions* are its runs numbered 1, 2, … in that order.
Records hold no local paths as identity and no credentials.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Optional, TypeVar

from .. import console
from ..errors import IntegrityError, NotFoundError, UsageError
from ..objects.digest import is_digest
from ..origin import process_alive, process_start_ticks
from ..refs import check_experiment_name
from ..storage.base import Storage
from .queue_keys import claims_prefix, forget_runs

__all__ = [
    "ArtifactRecord",
    "DamagedRecordError",
    "RecordStore",
    "ReuseRecord",
    "RunRecord",
    "TERMINAL",
    "effective_status",
    "new_run_id",
]

# ``queued``: submitted to a queue, not started; ``stopped``: ended by ``studio stop``;
# ``timed-out``: ended by ``--max-duration``; ``expired``: a queued run not started within
# ``--lifetime``. ``lost`` is never stored: ``effective_status`` derives it.
TERMINAL = frozenset({"finished", "incomplete", "failed", "interrupted", "stopped", "timed-out", "expired"})
_RUN_ID = re.compile(r"^\d{8}T\d{6}(\d{6})?Z-[0-9a-f]{6}\Z")


class DamagedRecordError(IntegrityError):
    """A stored record or environment file that cannot be read as one (garbled, empty, wrongly
    typed, or naming another run). ``key`` says which file; the rest of the store is unaffected."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"run record {key} is damaged ({reason}); move that file out of the store "
                         "(its content stays until `studio gc`) or restore it from a copy")
        self.key = key
        self.reason = reason


def new_run_id(now: Optional[float] = None) -> str:
    """A run id that sorts by start time (microseconds) and is unique without coordination."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1e6):06d}Z"
    return f"{stamp}-{secrets.token_hex(3)}"


_Flat = TypeVar("_Flat", bound="_FlatRecord")


class _FlatRecord:
    """A dataclass of plain fields, stored as a JSON object."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_Flat], data: dict[str, Any]) -> _Flat:
        """Inverse of ``to_dict``, ignoring keys from newer versions."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})  # type: ignore[attr-defined]


@dataclass
class ArtifactRecord(_FlatRecord):
    """One artifact of a run: which snapshot it points at and what that holds."""

    tag: str
    kind: str  # capture | capture-once | workspace | output | modeldir | tb | reuse | files
    digest: str = ""
    size: int = 0
    files: int = 0
    snapshots: int = 0
    updated_at: float = 0.0
    single_file: bool = False
    # Why this artifact does not hold everything it should (unreadable or vanished files,
    # files that never held still, a final capture that failed): one short line each. An
    # artifact with reasons here makes a run that exited 0 ``incomplete``, never ``finished``.
    incomplete: list[str] = field(default_factory=list)
    source: str = ""  # the URL a ``--capture-once URL:TAG`` input came from (no password, no query)
    # The same snapshot with each file's mtime: a second manifest (same entries and objects, plus
    # times) under its own digest. ``digest`` stays the content's identity (equal content, equal
    # digest, whatever the files' times); restores read this one. Empty in records made before.
    times: str = ""

    @property
    def restore_digest(self) -> str:
        """The manifest to restore from: the one with file times when recorded, else the content's."""
        return self.times or self.digest

    def manifests(self) -> list[str]:
        """Every manifest this artifact points at (what must be stored before the record, and kept)."""
        return [d for d in dict.fromkeys((self.digest, self.times)) if d]


@dataclass
class ReuseRecord(_FlatRecord):
    """Lineage: an artifact this run reused, and the exact run and snapshot it resolved to."""

    alias: str
    experiment: str
    tag: str
    run_id: str
    version: int
    digest: str
    times: str = ""  # the reused artifact's manifest with file times (``ArtifactRecord.times``)

    @property
    def restore_digest(self) -> str:
        """The manifest to restore from: the one with file times when recorded, else the content's."""
        return self.times or self.digest


@dataclass
class RunRecord:
    """Everything recorded about one run of an experiment."""

    experiment: str
    run_id: str
    status: str = "running"
    exit_code: Optional[int] = None
    started_at: float = 0.0
    ended_at: Optional[float] = None
    command: list[str] = field(default_factory=list)
    script: str = ""
    host: str = ""
    user: str = ""
    python: str = ""
    git_commit: Optional[str] = None
    git_dirty: Optional[bool] = None
    artifacts: dict[str, ArtifactRecord] = field(default_factory=dict)
    reuses: list[ReuseRecord] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    pid: Optional[int] = None
    pid_started: Optional[int] = None  # the runner's start time (/proc/PID/stat field 22): pids are reused
    # ``-hp NAME=RANGE`` values of this run (passed to the script as ``--NAME VALUE``).
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    queue: str = ""  # the queue it was submitted to; empty for a run started by ``studio run`` here
    attempt: int = 1  # 2, 3, ... when a worker took over the run of a worker that died
    version: int = 0  # derived from the run's position; not stored

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the derived version)."""
        data = asdict(self)
        data.pop("version")
        data["artifacts"] = {tag: a.to_dict() for tag, a in self.artifacts.items()}
        data["reuses"] = [r.to_dict() for r in self.reuses]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunRecord":
        """Inverse of ``to_dict``, ignoring keys from newer versions."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["artifacts"] = {t: ArtifactRecord.from_dict(a) for t, a in data.get("artifacts", {}).items()}
        fields["reuses"] = [ReuseRecord.from_dict(r) for r in data.get("reuses", [])]
        fields.pop("version", None)
        return cls(**fields)


def effective_status(record: RunRecord, hostname: str) -> str:
    """The status to show: a ``running`` run whose runner died on this host shows as ``lost``.

    A runner killed with ``kill -9`` (or a machine that lost power) never writes its final
    status; its snapshots up to then are complete and usable, but the run is not running.
    A pid the kernel has since given to another process is told apart by its start time.
    """
    if record.status != "running" or record.host != hostname or not record.pid:
        return record.status
    if not process_alive(record.pid):
        return "lost"
    if record.pid_started is not None:
        started = process_start_ticks(record.pid)
        if started is not None and started != record.pid_started:
            return "lost"  # the pid now belongs to another process
    return record.status


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "experiment": (str,), "run_id": (str,), "status": (str,), "exit_code": (int, type(None)),
    "started_at": (int, float), "ended_at": (int, float, type(None)), "command": (list,), "script": (str,),
    "host": (str,), "user": (str,), "python": (str,), "git_commit": (str, type(None)),
    "git_dirty": (bool, type(None)), "artifacts": (dict,), "reuses": (list,), "pending": (list,),
    "pid": (int, type(None)), "hyperparameters": (dict,), "queue": (str,), "attempt": (int,),
}
_ARTIFACT_TYPES: dict[str, tuple[type, ...]] = {
    "tag": (str,), "kind": (str,), "digest": (str,), "size": (int,), "files": (int,), "snapshots": (int,),
    "updated_at": (int, float), "single_file": (bool,), "incomplete": (list,),
    "times": (str,),
}


def _problem(data: Any, experiment: str, run_id: str) -> Optional[str]:
    """What is wrong with a record's parsed JSON, or None when it can be trusted."""
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, not an object"
    for name, types in _FIELD_TYPES.items():
        if name in data and not isinstance(data[name], types) or (
            name in ("exit_code", "pid", "started_at") and isinstance(data.get(name), bool)
        ):
            return f"field {name!r} is {type(data[name]).__name__}"
    if data.get("experiment") != experiment or data.get("run_id") != run_id:
        return "it names another run"
    if not all(isinstance(a, str) for a in data.get("command", [])):
        return "field 'command' holds something other than text"
    for tag, art in data.get("artifacts", {}).items():
        if not isinstance(art, dict):
            return f"artifact {tag!r} is not an object"
        for name, types in _ARTIFACT_TYPES.items():
            if name in art and not isinstance(art[name], types):
                return f"artifact {tag!r} field {name!r} is {type(art[name]).__name__}"
        if "tag" not in art or "kind" not in art:
            return f"artifact {tag!r} has no tag or kind"
        for name in ("digest", "times"):
            if art.get(name) and not is_digest(art[name]):
                return f"artifact {tag!r} has a malformed {name} digest"
    for reuse in data.get("reuses", []):
        if not isinstance(reuse, dict) or not is_digest(reuse.get("digest")):
            return "a reuse entry is malformed"
        if reuse.get("times") and not is_digest(reuse["times"]):
            return "a reuse entry is malformed"
        if not all(isinstance(reuse.get(k), str) for k in ("alias", "experiment", "tag", "run_id")):
            return "a reuse entry is malformed"
        if not isinstance(reuse.get("version"), int):
            return "a reuse entry is malformed"
    return None


def _checked_name(experiment: str) -> str:
    """``experiment`` if it is a name studio could have stored; a ``UsageError`` otherwise, so
    that no odd name ('', '..', 'a/b') ever becomes a store prefix matching something else."""
    if not isinstance(experiment, str) or not experiment:
        raise UsageError("experiment name is empty; name one (see `studio list`)")
    return check_experiment_name(experiment)


class RecordStore:
    """Reads and writes run records on any ``Storage``."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @staticmethod
    def record_key(experiment: str, run_id: str) -> str:
        """Key of a run's record."""
        return f"experiments/{experiment}/{run_id}.json"

    @staticmethod
    def env_key(experiment: str, run_id: str) -> str:
        """Key of a run's environment (packages, git diff)."""
        return f"experiments/{experiment}/{run_id}.env.json"

    def write(self, record: RunRecord) -> bool:
        """Publish the record (atomic replace): the pointer written last. False when dropped.

        The attempt guard: a queued run's record written by attempt N is dropped (one line says
        so) once attempt N+1 has been claimed. A worker judged dead and taken over may still be
        alive (a network partition, a stalled machine) and finish late; its record, or one its
        uploader publishes later from the journal, must not overwrite the newer attempt's. The
        claims are read right before the write: one listing, for queued runs only.
        """
        if record.queue and self._taken_over(record):
            console.warn(f"{record.experiment}--{record.run_id}: attempt {record.attempt} was taken over by a "
                         "newer attempt; its record is not written")
            return False
        data = json.dumps(record.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        self.storage.write_bytes(self.record_key(record.experiment, record.run_id), data)
        return True

    def _taken_over(self, record: RunRecord) -> bool:
        """Whether an attempt newer than ``record.attempt`` has claimed the run (``queue_keys``)."""
        prefix = claims_prefix(record.experiment, record.run_id)
        return any(k[len(prefix):].isdigit() and int(k[len(prefix):]) > record.attempt
                   for k in self.storage.list(prefix))

    def write_environment(self, experiment: str, run_id: str, env: dict[str, Any]) -> None:
        """Store the run's environment once."""
        data = json.dumps(env, sort_keys=True).encode()
        self.storage.write_bytes(self.env_key(experiment, run_id), data)

    def read_environment(self, experiment: str, run_id: str) -> dict[str, Any]:
        """The run's environment, or an empty dict when it was never written."""
        key = self.env_key(experiment, run_id)
        try:
            data = self.storage.read_bytes(key)
        except FileNotFoundError:
            return {}
        try:
            env = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise DamagedRecordError(key, "not valid JSON") from None
        if not isinstance(env, dict):
            raise DamagedRecordError(key, f"holds a JSON {type(env).__name__}, not an object")
        return env

    def experiments(self) -> list[str]:
        """Every experiment name, sorted."""
        return self.storage.list_dirs("experiments/")

    def run_ids(self, experiment: str) -> list[str]:
        """Run ids of one experiment, oldest first."""
        prefix = f"experiments/{experiment}/"
        ids = []
        for key in self.storage.list(prefix):
            name = key[len(prefix):]
            if name.endswith(".json") and not name.endswith(".env.json") and "/" not in name:
                ids.append(name[:-5])
        return sorted(i for i in ids if _RUN_ID.match(i))

    def read(self, experiment: str, run_id: str, version: int = 0) -> RunRecord:
        """One run's record; ``NotFoundError`` when absent, ``DamagedRecordError`` when it cannot
        be trusted (never a half-read record: whatever reads it next would act on wrong values)."""
        key = self.record_key(experiment, run_id)
        try:
            data = self.storage.read_bytes(key)
        except FileNotFoundError:
            raise NotFoundError(f"experiment {experiment!r} has no run {run_id!r}") from None
        if not data.strip():
            raise DamagedRecordError(key, "empty file")
        try:
            parsed = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise DamagedRecordError(key, "not valid JSON") from None
        problem = _problem(parsed, experiment, run_id)
        if problem:
            raise DamagedRecordError(key, problem)
        record = RunRecord.from_dict(parsed)
        record.version = version
        return record

    def runs(self, experiment: str, damaged: Optional[list[str]] = None) -> list[RunRecord]:
        """Every run of an experiment, oldest first, with versions numbered from 1.

        With ``damaged`` (a list), unreadable records are skipped and their keys appended to it;
        without, the first one raises ``DamagedRecordError``.
        """
        return self._read_runs(_checked_name(experiment), damaged)

    def _read_runs(self, experiment: str, damaged: Optional[list[str]] = None) -> list[RunRecord]:
        records = []
        for i, rid in enumerate(self.run_ids(experiment), 1):
            try:
                records.append(self.read(experiment, rid, i))
            except DamagedRecordError as exc:
                if damaged is None:
                    raise
                damaged.append(exc.key)
        return records

    def resolve(self, experiment: str, version: Optional[str] = None) -> RunRecord:
        """The run a user means: the newest, a 1-based version number, or a run id."""
        ids = self.run_ids(_checked_name(experiment))
        if not ids:
            known = self.experiments()
            hint = f"; known experiments: {', '.join(known[:10])}" if known else "; the store has no experiments yet"
            raise NotFoundError(f"no experiment named {experiment!r}{hint}")
        if version is None:
            return self.read(experiment, ids[-1], len(ids))
        if version.isdigit():
            number = int(version)
            if not 1 <= number <= len(ids):
                raise NotFoundError(f"experiment {experiment!r} has versions 1 to {len(ids)}, not {number}")
            return self.read(experiment, ids[number - 1], number)
        if version in ids:
            return self.read(experiment, version, ids.index(version) + 1)
        raise NotFoundError(f"experiment {experiment!r} has no version or run id {version!r}")

    def all_runs(self) -> dict[str, list[str]]:
        """Run ids of every experiment (oldest first) from one listing, without reading records."""
        runs: dict[str, list[str]] = {}
        for key in self.storage.list("experiments/"):
            parts = key.split("/")
            if len(parts) != 3 or not parts[2].endswith(".json") or parts[2].endswith(".env.json"):
                continue
            run_id = parts[2][:-5]
            if _RUN_ID.match(run_id):
                runs.setdefault(parts[1], []).append(run_id)
        for ids in runs.values():
            ids.sort()
        return runs

    def latest(self, limit: Optional[int] = None, damaged: Optional[list[str]] = None) -> list[RunRecord]:
        """The newest runs across all experiments, newest first; reads only the records shown.

        With ``damaged`` (a list), unreadable records are skipped and their keys appended to it.
        """
        runs = self.all_runs()
        ordered = sorted(
            ((rid, name, i) for name, ids in runs.items() for i, rid in enumerate(ids, 1)), reverse=True
        )
        if limit is not None:
            ordered = ordered[:limit]
        records = []
        for rid, name, version in ordered:
            try:
                records.append(self.read(name, rid, version))
            except NotFoundError:  # deleted between the listing and the read
                continue
            except DamagedRecordError as exc:
                if damaged is None:
                    raise
                damaged.append(exc.key)
        return records

    def iter_all(self) -> Iterator[RunRecord]:
        """Every run of every experiment (under any folder name: what gc keeps depends on it)."""
        for name in self.experiments():
            yield from self._read_runs(name)

    def delete_experiment(self, experiment: str) -> int:
        """Remove every record of an experiment (content stays until ``gc``); returns runs removed."""
        keys = list(self.storage.list(f"experiments/{_checked_name(experiment)}/"))
        if not keys:
            raise NotFoundError(f"no experiment named {experiment!r}")
        self.storage.delete_many(keys)
        forget_runs(self.storage, experiment)  # its claims and queue index entries: no queue leftovers
        return sum(1 for k in keys if k.endswith(".json") and not k.endswith(".env.json"))  # not .stop requests

    def delete_run(self, experiment: str, run_id: str) -> None:
        """Remove one run's record and environment (content stays until ``gc``). Later runs'
        version numbers move down by one: a version is a position."""
        if run_id not in self.run_ids(_checked_name(experiment)):
            raise NotFoundError(f"experiment {experiment!r} has no run {run_id!r}")
        self.storage.delete_many([self.record_key(experiment, run_id), self.env_key(experiment, run_id),
                                  self.record_key(experiment, run_id)[: -len(".json")] + ".stop"])
        forget_runs(self.storage, experiment, [run_id])  # its claims and queue index entry
