"""Compare two or more runs: their records side by side (what differs is marked), the packages
that differ, and per artifact which files each run added, removed or changed against the first.

Files are compared by the content manifests the records name (path -> digest, or link target):
no file content is read, so comparing two large checkpoints costs two manifest reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from starlette.requests import Request
from starlette.responses import HTMLResponse

from ..objects.manifest import LINK, Manifest
from ..redact import redact_args
from ..store.records import DamagedRecordError, RunRecord, effective_status
from .context import Context, context_of, not_found, record_of, render

__all__ = ["FileChanges", "Row", "compare_page", "file_changes", "package_rows", "record_rows"]

_MAX_RUNS = 8


@dataclass(frozen=True)
class Row:
    """One line of the side-by-side table: a label and one value per run."""

    label: str
    values: tuple[str, ...]

    @property
    def differs(self) -> bool:
        """Whether the runs disagree on it."""
        return len(set(self.values)) > 1


@dataclass
class FileChanges:
    """One artifact of one run against the same artifact of the first run."""

    tag: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    missing: str = ""  # which side has no such artifact, if one lacks it

    @property
    def same(self) -> bool:
        """Whether the two snapshots hold the same files."""
        return not (self.added or self.removed or self.changed or self.missing)


def record_rows(records: list[RunRecord], hostname: str) -> list[Row]:
    """The record fields side by side: arguments (one row per position), hyper-parameters, git."""
    def row(label: str, values: list[Any]) -> Row:
        return Row(label, tuple("" if v is None else str(v) for v in values))

    rows = [
        row("version", [r.version for r in records]),
        row("status", [effective_status(r, hostname) for r in records]),
        row("exit code", [r.exit_code for r in records]),
        row("script", [r.script for r in records]),
    ]
    args = [redact_args(list(r.command)) for r in records]
    for i in range(max(len(a) for a in args)):
        rows.append(row(f"argument {i}", [a[i] if i < len(a) else "" for a in args]))
    for name in sorted({k for r in records for k in r.hyperparameters}):
        rows.append(row(f"hyper-parameter {name}", [r.hyperparameters.get(name, "") for r in records]))
    rows += [
        row("git commit", [r.git_commit for r in records]),
        row("git dirty", [r.git_dirty for r in records]),
        row("host", [r.host for r in records]),
        row("python", [r.python for r in records]),
        row("duration (s)", [round(r.ended_at - r.started_at, 1) if r.ended_at else "" for r in records]),
    ]
    return rows


def package_rows(envs: list[dict[str, Any]]) -> list[Row]:
    """Only the packages whose version differs between the runs (absent shows as empty)."""
    versions: list[dict[str, str]] = []
    for env in envs:
        found: dict[str, str] = {}
        for line in env.get("packages") or []:
            if isinstance(line, str):
                name, _eq, version = line.partition("==")
                found[name.lower()] = version
        versions.append(found)
    rows = [Row(name, tuple(v.get(name, "") for v in versions)) for name in sorted(set().union(*versions))]
    return [r for r in rows if r.differs]


def _files(manifest: Optional[Manifest]) -> dict[str, str]:
    if manifest is None:
        return {}
    return {e.path: ("->" + e.target if e.type == LINK else e.digest) for e in manifest.entries}


def file_changes(tag: str, base: Optional[Manifest], other: Optional[Manifest]) -> FileChanges:
    """Files of ``other`` against ``base`` (None: that run has no such artifact)."""
    changes = FileChanges(tag)
    if base is None or other is None:
        changes.missing = "first run" if base is None else "this run"
    old, new = _files(base), _files(other)
    changes.added = sorted(p for p in new if p not in old)
    changes.removed = sorted(p for p in old if p not in new)
    changes.changed = sorted(p for p in new if p in old and new[p] != old[p])
    return changes


def _manifest(context: Context, record: RunRecord, tag: str) -> Optional[Manifest]:
    art = record.artifacts.get(tag)
    return context.store.repo.get_manifest(art.digest) if art is not None and art.digest else None


def _environment(context: Context, record: RunRecord) -> dict[str, Any]:
    try:
        return context.store.records.read_environment(record.experiment, record.run_id)
    except DamagedRecordError:
        return {}


def compare_page(request: Request) -> HTMLResponse:
    """``/compare?run=EXP/RUN_ID&run=...``: two to eight runs side by side."""
    context = context_of(request)
    names = request.query_params.getlist("run")
    if not 2 <= len(names) <= _MAX_RUNS:
        return render(request, "compare.html", status_code=400, records=[], rows=[], packages=[], artifacts=[],
                      message=f"pick 2 to {_MAX_RUNS} runs to compare (tick them on the Runs page)")
    records = []
    for name in names:
        experiment, _slash, run_id = name.partition("/")
        if not run_id:
            raise not_found(f"no run {name}")
        records.append(record_of(context, experiment, run_id))
    tags = sorted({t for r in records for t, a in r.artifacts.items() if a.digest})
    artifacts = []
    for tag in tags:
        base = _manifest(context, records[0], tag)
        artifacts.append((tag, [file_changes(tag, base, _manifest(context, r, tag)) for r in records[1:]]))
    return render(request, "compare.html", records=records, message="",
                  rows=record_rows(records, context.hostname),
                  packages=package_rows([_environment(context, r) for r in records]), artifacts=artifacts)
