"""``studio tb EXP[@VERSION] [EXP...]``: TensorBoard over the ``tb`` artifacts of stored runs.

Parses and wires only: fetching through the blob cache and running TensorBoard live in
``studio_run.integrations.tensorboard`` (which the web UI calls too).
"""

from __future__ import annotations

from typing import Optional

import click

from .common import open_store

__all__ = ["tb"]


@click.command()
@click.argument("runs", nargs=-1, required=True, metavar="EXP[@VERSION]...")
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1 (default 6006, or a free one if taken).")
@click.pass_context
def tb(ctx: click.Context, runs: tuple[str, ...], port: Optional[int]) -> None:
    """Run TensorBoard on 127.0.0.1 over the runs' `tb` folders, named EXP@VERSION; Ctrl-C stops it."""
    from .. import console
    from ..integrations.tensorboard import require_tensorboard, run_names, serve_until_stopped, start_tensorboard
    from ..snapshots.blobcache import BlobCache

    require_tensorboard()
    store = open_store(ctx, read_only=True)
    records = []
    for run in runs:
        name, _at, version = run.partition("@")
        records.append(store.records.resolve(name, version or None))
    url, handle = start_tensorboard(store, records, port=port, cache=BlobCache(store.config.blobcache),
                                    end_with_thread=True)
    console.info(f"TensorBoard at {url} showing {', '.join(dict.fromkeys(run_names(records)))}; Ctrl-C stops it")
    serve_until_stopped(handle)
    console.info("TensorBoard stopped")
