"""Keeping the store and this machine tidy: ``studio gc``, ``sync`` and ``cache info|clean``."""

from __future__ import annotations

import click

from .common import config_of, open_store

__all__ = ["cache", "gc", "sync"]


@click.command()
@click.option("--grace", default="1h", show_default=True, help="Keep unreferenced content younger than this.")
@click.option("--dry-run", is_flag=True, help="Only count what would be removed.")
@click.pass_context
def gc(ctx: click.Context, grace: str, dry_run: bool) -> None:
    """Remove stored content that no experiment refers to."""
    from .. import console
    from ..config import parse_duration
    from ..store.gc import collect_garbage

    result = collect_garbage(open_store(ctx, read_only=True), parse_duration(grace, "--grace", allow_zero=True), dry_run)
    verb = "would remove" if dry_run else "removed"
    local = result.local
    staged = "" if local is None else (
        f"; on this machine {verb} {local.objects_removed + local.manifests_removed} staged files "
        f"({console.format_size(local.bytes_removed)}) and {local.indexes_removed} cached pack indexes"
    )
    console.info(
        f"{verb} {result.objects_removed} objects ({console.format_size(result.bytes_removed)}) and "
        f"{result.manifests_removed} manifests; kept {result.kept_young} younger than {grace}{staged}"
    )
    if result.queue.total:
        console.info(f"{verb} {result.queue.total} queue keys of final or deleted runs and long-silent workers")
    if local is not None and local.unreadable:
        console.warn(f"staged files were kept: {local.unreadable}; `studio sync` names the run")


@click.command()
@click.pass_context
def sync(ctx: click.Context) -> None:
    """Upload captures still waiting for a remote store (after an outage or a timed-out wait)."""
    from .. import console
    from ..errors import UploadError
    from ..store.sync import describe_broken

    store = open_store(ctx, catch_up=False, read_only=True)
    if not store.is_remote:
        console.info(f"{store.url} is on this machine: nothing to upload")
        return
    with console.progress(f"uploading to {store.url}") as advance:
        report = store.syncer().push_pending(advance)
    if report.runs:
        console.info(f"published {report.runs} run{'' if report.runs == 1 else 's'} to {store.url} "
                     f"({console.format_size(report.uploaded)} uploaded)")
    elif not (report.busy or report.broken):
        console.info(f"nothing is waiting to be uploaded to {store.url}")
    if report.busy:
        console.info(f"{len(report.busy)} more being uploaded by a studio command still running")
    if report.broken:
        raise UploadError(describe_broken(report))


@click.group()
def cache() -> None:
    """Inspect or empty the local blob cache used by --reuse."""


@cache.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print path, entries and bytes as JSON.")
@click.pass_context
def cache_info(ctx: click.Context, as_json: bool) -> None:
    """Show where the cache is and how much it holds."""
    import json
    import shutil
    import sys

    from .. import console
    from ..snapshots.blobcache import BlobCache

    config = config_of(ctx)
    stats = BlobCache(config.blobcache).stats()
    if as_json:
        click.echo(json.dumps({"path": config.blobcache, "entries": stats.entries, "bytes": stats.size,
                               "unfinished_fills": stats.leftovers}))
        return
    counts = f"{stats.entries} entries, {console.format_size(stats.size)}"
    if stats.leftovers:  # fills killed half-way: counted in the size, removed by the next fill or clean
        counts += f", {stats.leftovers} unfinished fills"
    line = f"{config.blobcache}: {counts}"
    if sys.stdout.isatty() and len(line) > shutil.get_terminal_size((80, 24)).columns:
        line = f"{config.blobcache}:\n  {counts}"
    click.echo(line)


@cache.command("clean")
@click.pass_context
def cache_clean(ctx: click.Context) -> None:
    """Remove every cache entry (they are refilled from the store on the next reuse)."""
    from .. import console
    from ..snapshots.blobcache import BlobCache

    config = config_of(ctx)
    stats = BlobCache(config.blobcache).clean()
    console.info(f"removed {stats.entries} entries ({console.format_size(stats.size)}) from {config.blobcache}")
