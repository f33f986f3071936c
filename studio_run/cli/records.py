"""Reading and removing what is stored: ``studio list``, ``show``, ``get`` and ``delete``."""

from __future__ import annotations

from typing import Optional

import click

from ..refs import ArtifactRef
from .common import open_store
from .params import ARTIFACT_REF

__all__ = ["delete", "get", "list_", "show"]


@click.command("list")
@click.option("-n", "--limit", default=50, show_default=True, help="Show this many newest runs.")
@click.option("-a", "--all", "show_all", is_flag=True, help="Show every run.")
@click.pass_context
def list_(ctx: click.Context, limit: int, show_all: bool) -> None:
    """List runs, newest first."""
    from .tables import print_runs

    store = open_store(ctx)
    print_runs(store.records.latest(None if show_all else limit), store.url)


@click.command()
@click.argument("experiment")
@click.option("-v", "--version", "version", metavar="VERSION", help="A version number or run id (default newest).")
@click.pass_context
def show(ctx: click.Context, experiment: str, version: Optional[str]) -> None:
    """Show an experiment's record, artifacts, lineage and versions."""
    from .tables import print_experiment

    if "@" in experiment and version is None:
        experiment, version = experiment.split("@", 1)
    store = open_store(ctx)
    record = store.records.resolve(experiment, version)
    env = store.records.read_environment(record.experiment, record.run_id)
    print_experiment(record, store.records.runs(experiment), env)


@click.command()
@click.argument("ref", type=ARTIFACT_REF)
@click.argument("dest", type=click.Path())
@click.pass_context
def get(ctx: click.Context, ref: ArtifactRef, dest: str) -> None:
    """Write artifact EXP/TAG[@VERSION] to DEST (a folder, or a file for a one-file artifact)."""
    from .. import console
    from ..store.artifacts import fetch_artifact

    store = open_store(ctx)
    with console.progress(f"fetching {ref}") as advance:
        path = fetch_artifact(store, ref, dest, advance)
    console.info(f"{ref} -> {path}")


@click.command()
@click.argument("experiment")
@click.pass_context
def delete(ctx: click.Context, experiment: str) -> None:
    """Delete an experiment's records; `studio gc` then frees content nothing else uses."""
    from .. import console

    removed = open_store(ctx).records.delete_experiment(experiment)
    console.info(f"deleted {experiment} ({removed} runs); run `studio gc` to free unreferenced content")
