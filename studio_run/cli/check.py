"""``studio check [--repair]``: read back and verify everything the store holds.

Only parses and wires: the work is ``studio_run.store.check``. Exit 0 when the store is sound,
1 when damage was found (repaired or not), so scripts and CI can tell.
"""

from __future__ import annotations

import click

__all__ = ["check"]


@click.command()
@click.option("--repair", is_flag=True,
              help="Move damaged objects, packs and manifests to quarantine/ so the next capture stores them again.")
@click.pass_context
def check(ctx: click.Context, repair: bool) -> None:
    """Verify every object, pack and manifest of the store by reading it back."""
    from .. import console
    from ..config import load_config
    from ..store.check import check_store
    from ..store.open import open_store

    root = ctx.find_root().params
    store = open_store(load_config(root.get("config_path"), store=root.get("store")))
    try:
        store.catch_up()  # runs an earlier command left waiting for upload are checked too
        with console.progress(f"checking {store.url}") as advance:
            result = check_store(store, repair=repair, progress=advance)
    finally:
        store.close()
    for note in result.notes:
        console.warn(note)
    for damage in result.damaged:
        console.warn(damage.describe())
    read = (f"checked {result.objects} objects, {result.packs} packs and {result.manifests} manifests "
            f"({console.format_size(result.bytes_read)} read)")
    if result.clean:
        console.info(f"{read}: no damage")
        return
    hint = "" if repair else "; `studio check --repair` moves it to quarantine so the next capture stores it again"
    console.info(f"{read}: {len(result.damaged)} damaged{hint}")
    ctx.exit(1)
