"""Reading and removing what is stored: ``studio list``, ``show``, ``get`` and ``delete``."""

from __future__ import annotations

from typing import Optional

import click

from ..refs import ArtifactRef
from .common import open_store
from .params import ARTIFACT_REF

__all__ = ["delete", "get", "list_", "show"]


def _skipped(damaged: list[str]) -> None:
    """One warning naming the records that could not be read (the rest was shown)."""
    from .. import console

    if damaged:
        names = ", ".join(damaged[:5]) + (f" and {len(damaged) - 5} more" if len(damaged) > 5 else "")
        console.warn(f"skipped {len(damaged)} damaged run record{'s' if len(damaged) > 1 else ''}: {names} "
                     "(move them out of the store, or restore them from a copy)")


@click.command("list")
@click.option("-n", "--limit", default=50, show_default=True, type=click.IntRange(min=1),
              help="Show this many newest runs.")
@click.option("-a", "--all", "show_all", is_flag=True, help="Show every run.")
@click.option("--wide", is_flag=True, help="Show every column, however wide the table gets.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON (for scripts).")
@click.argument("experiment", required=False)
@click.pass_context
def list_(ctx: click.Context, limit: int, show_all: bool, wide: bool, as_json: bool,
          experiment: Optional[str]) -> None:
    """List runs (of EXPERIMENT only, when given), newest first.

    On a terminal the table fits its width; piped, rows are tab-separated.
    """
    from .tables import Output, print_runs

    store = open_store(ctx, read_only=True)
    damaged: list[str] = []
    if experiment is None:
        records = store.records.latest(None if show_all else limit, damaged)
    else:
        records = store.records.runs(experiment, damaged)[::-1]
        if not records and not damaged:
            store.records.resolve(experiment)  # names the known experiments
        records = records if show_all else records[:limit]
    print_runs(records, store.url, Output.detect(as_json, wide))
    _skipped(damaged)


@click.command()
@click.argument("experiment")
@click.option("-v", "--version", "version", metavar="VERSION", help="A version number or run id (default newest).")
@click.option("--wide", is_flag=True, help="Show every column and whole lines, however wide.")
@click.option("--json", "as_json", is_flag=True, help="Print the record and versions as JSON (for scripts).")
@click.pass_context
def show(ctx: click.Context, experiment: str, version: Optional[str], wide: bool, as_json: bool) -> None:
    """Show an experiment's record, artifacts, lineage and versions."""
    from .tables import Output, print_experiment

    if "@" in experiment and version is None:
        experiment, version = experiment.split("@", 1)
    from .. import console
    from ..store.records import DamagedRecordError

    store = open_store(ctx, read_only=True)
    record = store.records.resolve(experiment, version)
    try:
        env = store.records.read_environment(record.experiment, record.run_id)
    except DamagedRecordError as exc:
        console.warn(f"{exc}; the record itself is shown")
        env = {}
    damaged: list[str] = []
    print_experiment(record, store.records.runs(experiment, damaged), env, Output.detect(as_json, wide))
    _skipped(damaged)


@click.command()
@click.argument("ref", type=ARTIFACT_REF)
@click.argument("dest", required=False)
@click.option("-f", "--force", is_flag=True, help="Merge into a DEST folder that is not empty.")
@click.option("--tar", "tar_out", metavar="OUT",
              help="Write the artifact as one archive instead: OUT.tar.gz / OUT.tgz (gzip), OUT.tar, or - "
                   "(tar.gz to stdout).")
@click.pass_context
def get(ctx: click.Context, ref: ArtifactRef, dest: Optional[str], force: bool, tar_out: Optional[str]) -> None:
    """Write artifact EXP/TAG[@VERSION] to DEST (a folder, or a file for a one-file artifact).

    DEST must be new or an empty folder (--force merges into a full one); links, devices and
    FIFOs at DEST are refused, never replaced or written through. DEST `-` writes a tar
    stream to stdout (`studio get exp/model - | tar -x -C somewhere`). `--tar OUT` writes an
    archive file instead, keeping file modes and times; every byte is verified first, and OUT
    appears only once the archive is complete.
    """
    import sys

    from .. import console
    from ..errors import UsageError
    from ..store.archive import iter_ref_tar
    from ..store.artifacts import fetch_artifact

    if tar_out is not None:
        if dest is not None:
            raise UsageError(f"give DEST or --tar OUT, not both (DEST {dest!r} and --tar {tar_out!r})")
        _get_tar(ctx, ref, tar_out)
        return
    if dest is None:
        raise UsageError("studio get needs DEST (a folder, a file, or - for a tar stream) or --tar OUT")
    store = open_store(ctx, read_only=True)
    if dest == "-":
        if sys.stdout.isatty():
            raise UsageError("DEST - writes a tar stream, and stdout is a terminal; pipe it (| tar -x) or redirect it")
        for chunk in iter_ref_tar(store, ref, gzip_level=None):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        console.info(f"{ref} -> stdout (tar)")
        return
    with console.progress(f"fetching {ref}") as advance:
        path = fetch_artifact(store, ref, dest, advance, force=force)
    console.info(f"{ref} -> {path}")


def _get_tar(ctx: click.Context, ref: ArtifactRef, out: str) -> None:
    """``studio get REF --tar OUT``: the archive to a file, or tar.gz to stdout for ``-``."""
    import sys

    from .. import console
    from ..errors import UsageError
    from ..store.archive import iter_ref_tar, save_tar, tar_kind

    level = tar_kind(out)
    if out == "-" and sys.stdout.isatty():
        raise UsageError("--tar - writes a tar.gz stream, and stdout is a terminal; redirect it (> out.tar.gz)")
    store = open_store(ctx, read_only=True)
    if out != "-":
        path = save_tar(store, ref, out, gzip_level=level)
        console.info(f"{ref} -> {path}")
        return
    for chunk in iter_ref_tar(store, ref, gzip_level=level):
        sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
    console.info(f"{ref} -> stdout (tar.gz)")


@click.command()
@click.argument("experiment")
@click.pass_context
def delete(ctx: click.Context, experiment: str) -> None:
    """Delete an experiment's records; `studio gc` then frees content nothing else uses."""
    from .. import console

    removed = open_store(ctx, read_only=True).records.delete_experiment(experiment)
    console.info(f"deleted {experiment} ({removed} runs); run `studio gc` to free unreferenced content")
