"""The ``studio`` command: parses arguments and wires them to the modules that do the work.

No storage or capture logic lives here. Every expected failure (``StudioError``, click usage
errors) becomes one line on stderr and an exit code (2 for usage, 1 otherwise); only a bug
prints a traceback.
"""

from __future__ import annotations

import sys
from typing import Optional

import click

from ..errors import StudioError
from ..refs import ArtifactRef, CaptureSpec, ReuseSpec
from .check import check
from .params import ARTIFACT_REF, CAPTURE, REUSE

__all__ = ["cli", "main"]

_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _config(ctx: click.Context, store: Optional[str] = None):  # type: ignore[no-untyped-def]
    from ..config import load_config

    root = ctx.find_root().params
    return load_config(root.get("config_path"), store=store or root.get("store"))


def _open(ctx: click.Context):  # type: ignore[no-untyped-def]
    from ..store.open import open_store

    store = open_store(_config(ctx))
    store.catch_up()  # runs an earlier command left waiting for upload are published first
    return store


@click.group(context_settings=_SETTINGS)
@click.option("--config", "config_path", metavar="FILE", help="Config file (default $STUDIOML_HOME/config.yaml).")
@click.option("--store", metavar="URL", help="Store URL: a path, file://, s3://, gs:// or sftp://.")
@click.version_option(package_name="studio-run", prog_name="studio")
def cli(config_path: Optional[str], store: Optional[str]) -> None:
    """Run training scripts and keep every file they read and write, versioned."""


@cli.command(context_settings=dict(_SETTINGS, allow_interspersed_args=False, ignore_unknown_options=False))
@click.option("-c", "--capture", multiple=True, type=CAPTURE, help="Snapshot DIR periodically and at the end.")
@click.option("-co", "--capture-once", "capture_once", multiple=True, type=CAPTURE,
              help="Snapshot DIR (or a file) once, before the script starts.")
@click.option("-r", "--reuse", multiple=True, type=REUSE,
              help="Make EXP/TAG[@VERSION] available as ALIAS (read-only, from the blob cache).")
@click.option("-e", "--experiment", metavar="NAME", help="Experiment name (default: a generated one).")
@click.option("-m", "module", is_flag=True, help="Run SCRIPT as a module, like python -m.")
@click.option("--store", metavar="URL", help="Store URL for this run.")
@click.option("--capture-interval", metavar="DURATION", help="Override capture_interval (e.g. 10s, 2m).")
@click.argument("script")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(
    ctx: click.Context,
    capture: tuple[CaptureSpec, ...],
    capture_once: tuple[CaptureSpec, ...],
    reuse: tuple[ReuseSpec, ...],
    experiment: Optional[str],
    module: bool,
    store: Optional[str],
    capture_interval: Optional[str],
    script: str,
    script_args: tuple[str, ...],
) -> int:
    """Run SCRIPT [SCRIPT_ARGS]... as a recorded experiment.

    Options go before SCRIPT; everything after it is passed to the script untouched.
    """
    from dataclasses import replace

    from ..config import parse_duration
    from ..runner.execute import RunRequest
    from ..runner.execute import run as run_experiment

    config = _config(ctx, store)
    if capture_interval:
        config = replace(config, capture_interval=parse_duration(capture_interval, "--capture-interval"))
    request = RunRequest(
        script=None if module else script,
        module=script if module else None,
        args=script_args,
        experiment=experiment,
        captures=capture,
        captures_once=capture_once,
        reuses=reuse,
    )
    return run_experiment(config, request)


@cli.command("list")
@click.option("-n", "--limit", default=50, show_default=True, help="Show this many newest runs.")
@click.option("-a", "--all", "show_all", is_flag=True, help="Show every run.")
@click.pass_context
def list_(ctx: click.Context, limit: int, show_all: bool) -> None:
    """List runs, newest first."""
    from .tables import print_runs

    store = _open(ctx)
    print_runs(store.records.latest(None if show_all else limit), store.url)


@cli.command()
@click.argument("experiment")
@click.option("-v", "--version", "version", metavar="VERSION", help="A version number or run id (default newest).")
@click.pass_context
def show(ctx: click.Context, experiment: str, version: Optional[str]) -> None:
    """Show an experiment's record, artifacts, lineage and versions."""
    from .tables import print_experiment

    if "@" in experiment and version is None:
        experiment, version = experiment.split("@", 1)
    store = _open(ctx)
    record = store.records.resolve(experiment, version)
    env = store.records.read_environment(record.experiment, record.run_id)
    print_experiment(record, store.records.runs(experiment), env)


@cli.command()
@click.argument("ref", type=ARTIFACT_REF)
@click.argument("dest", type=click.Path())
@click.pass_context
def get(ctx: click.Context, ref: ArtifactRef, dest: str) -> None:
    """Write artifact EXP/TAG[@VERSION] to DEST (a folder, or a file for a one-file artifact)."""
    from .. import console
    from ..store.artifacts import fetch_artifact

    store = _open(ctx)
    with console.progress(f"fetching {ref}") as advance:
        path = fetch_artifact(store, ref, dest, advance)
    console.info(f"{ref} -> {path}")


@cli.command()
@click.argument("experiment")
@click.pass_context
def delete(ctx: click.Context, experiment: str) -> None:
    """Delete an experiment's records; `studio gc` then frees content nothing else uses."""
    from .. import console

    removed = _open(ctx).records.delete_experiment(experiment)
    console.info(f"deleted {experiment} ({removed} runs); run `studio gc` to free unreferenced content")


@cli.command()
@click.option("--grace", default="1h", show_default=True, help="Keep unreferenced content younger than this.")
@click.option("--dry-run", is_flag=True, help="Only count what would be removed.")
@click.pass_context
def gc(ctx: click.Context, grace: str, dry_run: bool) -> None:
    """Remove stored content that no experiment refers to."""
    from .. import console
    from ..config import parse_duration
    from ..store.gc import collect_garbage

    result = collect_garbage(_open(ctx), parse_duration(grace, "--grace", allow_zero=True), dry_run)
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
    if local is not None and local.unreadable:
        console.warn(f"staged files were kept: {local.unreadable}; `studio sync` names the run")


@cli.command()
@click.pass_context
def sync(ctx: click.Context) -> None:
    """Upload captures still waiting for a remote store (after an outage or a timed-out wait)."""
    from .. import console
    from ..errors import UploadError
    from ..store.open import open_store
    from ..store.sync import describe_broken

    store = open_store(_config(ctx))
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


@cli.group()
def cache() -> None:
    """Inspect or empty the local blob cache used by --reuse."""


@cache.command("info")
@click.pass_context
def cache_info(ctx: click.Context) -> None:
    """Show where the cache is and how much it holds."""
    from .. import console
    from ..snapshots.blobcache import BlobCache

    config = _config(ctx)
    stats = BlobCache(config.blobcache).stats()
    click.echo(f"{config.blobcache}: {stats.entries} entries, {console.format_size(stats.size)}")


@cache.command("clean")
@click.pass_context
def cache_clean(ctx: click.Context) -> None:
    """Remove every cache entry (they are refilled from the store on the next reuse)."""
    from .. import console
    from ..snapshots.blobcache import BlobCache

    config = _config(ctx)
    stats = BlobCache(config.blobcache).clean()
    console.info(f"removed {stats.entries} entries ({console.format_size(stats.size)}) from {config.blobcache}")


cli.add_command(check)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point: run the CLI, turning expected errors into one line and a code."""
    try:
        result = cli.main(args=argv, prog_name="studio", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "studio"
        click.echo(f"studio: error: {exc.format_message()} (see `{command} --help`)", err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("studio: aborted", err=True)
        sys.exit(130)
    except StudioError as exc:
        click.echo(f"studio: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"studio: error: {exc.strerror or exc}{where}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("studio: interrupted", err=True)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
