"""Looking into stored runs from a terminal: ``studio ls`` (files of an artifact) and ``studio
logs`` (a run's output, ``-f`` to follow one still running)."""

from __future__ import annotations

import json
import socket
import sys
from typing import Optional

import click

from ..refs import ArtifactRef
from .common import open_store
from .params import ARTIFACT_REF
from .tables import Column, Output, emit_table

__all__ = ["logs", "ls"]


@click.command()
@click.argument("ref", type=ARTIFACT_REF)
@click.argument("path", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@click.option("--wide", is_flag=True, help="Show every column, however wide.")
@click.pass_context
def ls(ctx: click.Context, ref: ArtifactRef, path: Optional[str], as_json: bool, wide: bool) -> None:
    """List the files of artifact EXP/TAG[@VERSION] (below PATH), with sizes and modes."""
    from ..console import format_size
    from ..objects.manifest import LINK
    from ..store.browse import artifact_manifest, list_files

    store = open_store(ctx, read_only=True)
    _record, manifest = artifact_manifest(store, ref)
    entries = list_files(manifest, path or ref.path)
    if as_json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    rows = [["l" if e.type == LINK else "-", "" if e.type == LINK else f"{e.mode & 0o7777:04o}",
             "" if e.type == LINK else format_size(e.size),
             f"{e.path} -> {e.target}" if e.type == LINK else e.path] for e in entries]
    emit_table(Output.detect(wide=wide), [Column("type", drop=2), Column("mode", drop=1), Column("size", right=True),
                                     Column("path", shrink=True, least=12)], rows)


@click.command()
@click.argument("experiment", metavar="EXP[@VERSION]")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what a running run adds, until it ends.")
@click.pass_context
def logs(ctx: click.Context, experiment: str, follow: bool) -> None:
    """Print a run's output (its stdout and stderr, from the `output` artifact)."""
    from ..store.browse import follow_log, read_log

    name, _at, version = experiment.partition("@")
    store = open_store(ctx, read_only=True)
    record = store.records.resolve(name, version or None)
    out = sys.stdout.buffer

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    if follow:
        follow_log(store, record, write, socket.gethostname())
    else:
        write(read_log(store, record))
