"""How records look: aligned tables on a terminal, tab-separated lines in a pipe, JSON on request.

Kept apart from the CLI so the commands stay wiring and the layout can be read in one place.
On a terminal a table fits its width (80 columns included) without ever wrapping inside a
cell: the least useful columns are shortened or dropped first, long cells end in ``…``, and
``--wide`` shows everything. When stdout is not a terminal, every column is printed in full,
tab-separated, one row a line; ``--json`` gives the records themselves.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional

from ..console import format_size
from ..hyperparams import describe
from ..redact import redact_args
from ..store.records import RunRecord, effective_status

__all__ = ["Column", "Output", "emit_table", "fit_table", "print_experiment", "print_runs", "run_json"]

_HOST = socket.gethostname()
_ELLIPSIS = "…"


@dataclass(frozen=True)
class Output:
    """How to print: ``json``, ``tsv`` (not a terminal) or ``table`` at ``width`` (``wide``: all)."""

    mode: str = "table"
    width: int = 80
    wide: bool = False

    @classmethod
    def detect(cls, as_json: bool = False, wide: bool = False) -> "Output":
        """JSON when asked, tab-separated when stdout is not a terminal, else a table at its width."""
        if as_json:
            return cls("json")
        if not sys.stdout.isatty():
            return cls("tsv")
        return cls("table", shutil.get_terminal_size((80, 24)).columns, wide)


@dataclass(frozen=True)
class Column:
    """A table column: ``drop`` orders which go first when space is short (0: never dropped),
    ``shrink`` columns may be cut down to ``least`` characters."""

    name: str
    drop: int = 0
    shrink: bool = False
    least: int = 8
    right: bool = False


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + _ELLIPSIS


def fit_table(columns: list[Column], rows: list[list[str]], width: int, wide: bool = False) -> list[str]:
    """Lines of an aligned table no wider than ``width`` (unless ``wide``): drop columns by their
    ``drop`` rank, then shrink the shrinkable ones; a cell never wraps."""
    keep = list(range(len(columns)))
    natural = [max([len(columns[i].name)] + [len(r[i]) for r in rows]) for i in keep]
    widths = list(natural)

    def total() -> int:
        return sum(widths[i] for i in keep) + 2 * (len(keep) - 1)

    if not wide:
        for rank in sorted({c.drop for c in columns if c.drop}):
            if total() <= width:
                break
            keep = [i for i in keep if columns[i].drop != rank]
        over = total() - width
        while over > 0:  # take from the widest shrinkable column, so long cells share the cut
            able = [i for i in keep if columns[i].shrink and widths[i] > columns[i].least]
            if not able:
                break
            widest = max(able, key=lambda i: widths[i])
            widths[widest] -= 1
            over -= 1
    lines = []
    for cells in [[c.name for c in columns]] + rows:
        parts = []
        for i in keep:
            text = _cut(cells[i], widths[i])
            parts.append(text.rjust(widths[i]) if columns[i].right else text.ljust(widths[i]))
        lines.append("  ".join(parts).rstrip())
    return lines


def emit_table(out: Output, columns: list[Column], rows: list[list[str]]) -> None:
    """Print rows as ``out`` says: tab-separated in full, or a table fitted to the width."""
    if out.mode == "tsv":
        for cells in [[c.name for c in columns]] + rows:
            print("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in cells))
    else:
        print("\n".join(fit_table(columns, rows, out.width, out.wide)))


def _when(ts: Optional[float], short: bool = False) -> str:
    if not ts:
        return "-"
    return time.strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _duration(record: RunRecord) -> str:
    if not record.ended_at:
        return "-"
    seconds = record.ended_at - record.started_at
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _tags(record: RunRecord) -> str:
    return ", ".join(sorted(t for t, a in record.artifacts.items() if a.digest))


def run_json(record: RunRecord) -> dict[str, Any]:
    """A record as ``--json`` shows it: its stored form, version and shown status, command redacted."""
    data = record.to_dict()
    data.update(version=record.version, status=effective_status(record, _HOST), command=redact_args(record.command))
    return data


_RUN_COLUMNS = [Column("experiment", shrink=True, least=10), Column("version", right=True), Column("status"),
                Column("exit", drop=2, right=True), Column("started", shrink=True, least=11),
                Column("duration", drop=1, right=True), Column("artifacts", shrink=True, least=9)]
_PARAMS = Column("params", drop=3, shrink=True, least=8)  # only when a run shown has ``-hp`` values


def print_runs(records: list[RunRecord], store_url: str, out: Output = Output("tsv")) -> None:
    """One row per run, newest first."""
    if out.mode == "json":
        print(json.dumps([run_json(r) for r in records], indent=2))
        return
    if not records:
        print(f"no runs in {store_url} yet; start one with `studio run SCRIPT`")
        return
    short = out.mode == "table" and not out.wide and out.width < 100
    rows = [[r.experiment, str(r.version), effective_status(r, _HOST), "" if r.exit_code is None else str(r.exit_code),
             _when(r.started_at, short), _duration(r), _tags(r)] for r in records]
    columns = list(_RUN_COLUMNS)
    if any(r.hyperparameters for r in records):
        columns.append(_PARAMS)
        for row, record in zip(rows, records):
            row.append(describe(record.hyperparameters))
    if out.mode == "table":
        print(_cut(f"runs in {store_url}", out.width) if not out.wide else f"runs in {store_url}")
    emit_table(out, columns, rows)


def print_experiment(record: RunRecord, runs: list[RunRecord], env: dict[str, Any],
                     out: Output = Output("tsv")) -> None:
    """The chosen run's record, its artifacts and lineage, and every version of the experiment."""
    if out.mode == "json":
        print(json.dumps({"run": run_json(record), "versions": [run_json(r) for r in runs],
                          "packages": len(env.get("packages") or [])}, indent=2))
        return
    fit = out.mode == "table" and not out.wide

    def line(text: str) -> None:
        print(_cut(text, out.width) if fit else text)

    code = "" if record.exit_code is None else f" (exit code {record.exit_code})"
    line(f"{record.experiment} version {record.version} - run {record.run_id}")
    line(f"  status   {effective_status(record, _HOST)}{code}")
    line(f"  started  {_when(record.started_at)}   ended {_when(record.ended_at)}   took {_duration(record)}")
    line(f"  command  {' '.join(redact_args(record.command))}")
    if record.hyperparameters:
        line(f"  params   {describe(record.hyperparameters)}")
    line(f"  host     {record.user}@{record.host}   python {record.python}")
    if record.git_commit:
        dirty = " (dirty: diff recorded)" if record.git_dirty else ""
        line(f"  git      {record.git_commit}{dirty}")
    packages = env.get("packages") or []
    if packages:
        line(f"  packages {len(packages)} recorded")
    for tag, art in sorted(record.artifacts.items()):
        for reason in art.incomplete:
            line(f"  incomplete {tag}: {reason}")

    print("\nartifacts")
    emit_table(out, [Column("tag", shrink=True, least=8), Column("kind", drop=2), Column("files", right=True),
                Column("size", right=True), Column("snapshots", drop=1, right=True), Column("digest", drop=3)],
          [[tag, art.kind, str(art.files), format_size(art.size), str(art.snapshots), art.digest[:16]]
           for tag, art in sorted(record.artifacts.items())])
    if record.reuses:
        print("\nreused (lineage)")
        emit_table(out, [Column("alias"), Column("from", shrink=True, least=12), Column("run", drop=1),
                    Column("digest", drop=2)],
              [[r.alias, f"{r.experiment}/{r.tag}@{r.version}", r.run_id, r.digest[:16]] for r in record.reuses])
    print("\nversions")
    emit_table(out, [Column("version", right=True), Column("run", drop=1), Column("status"),
                Column("started", shrink=True, least=11), Column("artifacts", shrink=True, least=9)],
          [[str(r.version), r.run_id, effective_status(r, _HOST), _when(r.started_at), _tags(r)] for r in runs])
