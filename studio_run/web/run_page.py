"""The Run page: one record (command, arguments, hyper-parameters, host, git with its diff,
packages, a queued run's attempts), its artifacts with a browsable file tree, lineage both
ways, and every version of its experiment.

Arguments and the diff pass through ``redact`` again before they are shown: records are
redacted when written, and a page must never be the place a secret slips out from an older one.
"""

from __future__ import annotations

import shlex
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

from .. import console
from ..errors import NotFoundError
from ..queue.status import attempt_rows
from ..redact import redact_args, redact_text
from ..store.archive import list_tree
from ..store.records import TERMINAL, DamagedRecordError, RunRecord, effective_status
from ..store.runindex import RunRow
from .context import Context, artifact_tag, not_found, render, run_of
from .security import safe_path

__all__ = ["command_line", "run_page", "tree_fragment", "versions_of"]


def command_line(record: RunRecord) -> str:
    """The run's command as a shell line, secrets redacted."""
    return shlex.join(redact_args(list(record.command)))


def versions_of(context: Context, experiment: str) -> list[RunRow]:
    """Every run of ``experiment`` from the index, newest first."""
    return context.fresh_index().versions(experiment)[::-1]


def _environment(context: Context, record: RunRecord) -> dict[str, Any]:
    """The run's environment (packages, git), or an empty one when missing or damaged."""
    try:
        env = context.store.records.read_environment(record.experiment, record.run_id)
    except DamagedRecordError as exc:
        console.warn(str(exc))
        return {}
    git = env.get("git")
    if isinstance(git, dict) and isinstance(git.get("diff"), str):
        env["git"] = dict(git, diff=redact_text(git["diff"]))
    return env


def run_page(request: Request) -> HTMLResponse:
    """The page of the run ``/runs/{experiment}/{run_id}``."""
    context, record = run_of(request)
    status = effective_status(record, context.hostname)
    _used, reused_by = context.fresh_index().lineage(record.experiment, record.run_id)
    return render(
        request, "run.html", record=record, status=status, command=command_line(record),
        env=_environment(context, record), artifacts=sorted(record.artifacts.values(), key=lambda a: a.tag),
        reused_from=record.reuses, reused_by=reused_by, versions=versions_of(context, record.experiment),
        stoppable=status in ("running", "queued"), deletable=status in TERMINAL or status == "lost",
        attempts=attempt_rows(context.store, record) if record.queue else [],
        duration=(record.ended_at - record.started_at) if record.ended_at and record.started_at else None,
    )


def tree_fragment(request: Request) -> HTMLResponse:
    """One folder of an artifact's file tree (``?path=`` below its root), as an htmx fragment or page."""
    context, record = run_of(request)
    tag = artifact_tag(request, record)
    prefix = request.query_params.get("path", "")
    if prefix and safe_path(prefix) is None:
        raise not_found("no such folder")
    try:
        entries = list_tree(context.store, record, tag, prefix)
    except NotFoundError as exc:
        raise not_found(str(exc)) from None
    return render(request, "_tree.html", record=record, tag=tag, prefix=prefix, entries=entries)
