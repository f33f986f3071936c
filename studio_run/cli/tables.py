"""How records look on a terminal: rich tables for ``studio list`` and ``studio show``.

Kept apart from the CLI so the commands stay wiring and the layout can be read in one place.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Optional

from ..console import format_size
from ..redact import redact_args
from ..store.records import RunRecord, effective_status

__all__ = ["print_experiment", "print_runs"]

_HOST = socket.gethostname()


def _when(ts: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _duration(record: RunRecord) -> str:
    if not record.ended_at:
        return "-"
    seconds = record.ended_at - record.started_at
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console()


def print_runs(records: list[RunRecord], store_url: str) -> None:
    """One row per run, newest first."""
    from rich.table import Table

    table = Table(title=f"runs in {store_url}", title_justify="left")
    for column in ("experiment", "version", "status", "exit", "started", "duration", "artifacts"):
        table.add_column(column, no_wrap=column != "artifacts")
    for r in records:
        tags = ", ".join(sorted(t for t, a in r.artifacts.items() if a.digest))
        exit_code = "" if r.exit_code is None else str(r.exit_code)
        table.add_row(r.experiment, str(r.version), effective_status(r, _HOST), exit_code, _when(r.started_at), _duration(r), tags)
    if not records:
        print(f"no runs in {store_url} yet; start one with `studio run SCRIPT`")
        return
    _console().print(table)


def print_experiment(record: RunRecord, runs: list[RunRecord], env: dict[str, Any]) -> None:
    """The chosen run's record, its artifacts and lineage, and every version of the experiment."""
    from rich.table import Table

    console = _console()
    code = "" if record.exit_code is None else f" (exit code {record.exit_code})"
    console.print(f"[bold]{record.experiment}[/bold] version {record.version} - run {record.run_id}")
    console.print(f"  status   {effective_status(record, _HOST)}{code}")
    console.print(f"  started  {_when(record.started_at)}   ended {_when(record.ended_at)}   took {_duration(record)}")
    console.print(f"  command  {' '.join(redact_args(record.command))}")
    console.print(f"  host     {record.user}@{record.host}   python {record.python}")
    if record.git_commit:
        dirty = " (dirty: diff recorded)" if record.git_dirty else ""
        console.print(f"  git      {record.git_commit}{dirty}")
    packages = env.get("packages") or []
    if packages:
        console.print(f"  packages {len(packages)} recorded")

    table = Table(title="artifacts", title_justify="left")
    for column in ("tag", "kind", "files", "size", "snapshots", "digest"):
        table.add_column(column)
    for tag, art in sorted(record.artifacts.items()):
        table.add_row(tag, art.kind, str(art.files), format_size(art.size), str(art.snapshots), art.digest[:16])
    console.print(table)
    if record.reuses:
        lineage = Table(title="reused (lineage)", title_justify="left")
        for column in ("alias", "from", "run", "digest"):
            lineage.add_column(column)
        for reuse in record.reuses:
            lineage.add_row(reuse.alias, f"{reuse.experiment}/{reuse.tag}@{reuse.version}", reuse.run_id,
                            reuse.digest[:16])
        console.print(lineage)
    versions = Table(title="versions", title_justify="left")
    for column in ("version", "run", "status", "started", "artifacts"):
        versions.add_column(column)
    for r in runs:
        tags = ", ".join(sorted(t for t, a in r.artifacts.items() if a.digest))
        versions.add_row(str(r.version), r.run_id, effective_status(r, _HOST), _when(r.started_at), tags)
    console.print(versions)
