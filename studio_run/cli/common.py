"""What every command needs first: the settings in force and the opened store.

Commands call ``config_of`` and ``open_store`` instead of building either themselves, so the
precedence of ``--config``/``--store`` and the catch-up of earlier uploads are decided once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import click

if TYPE_CHECKING:
    from ..config import Config
    from ..store.store import Store

__all__ = ["config_of", "open_store"]


def config_of(ctx: click.Context, store: Optional[str] = None) -> "Config":
    """The settings for this command: ``studio --config/--store`` (or a command's own ``--store``)."""
    from ..config import load_config

    root = ctx.find_root().params
    return load_config(root.get("config_path"), store=store or root.get("store"))


def open_store(ctx: click.Context, *, catch_up: bool = True) -> "Store":
    """The configured store, opened; with ``catch_up``, runs an earlier command left waiting for
    upload are published first, so what the command reads is complete."""
    from ..store.open import open_store as open_configured

    store = open_configured(config_of(ctx))
    if catch_up:
        store.catch_up()
    return store
