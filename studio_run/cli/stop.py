"""``studio stop EXP[@VERSION]``: stop a queued or running run, here or on another machine."""

from __future__ import annotations

from typing import Optional

import click

from .common import open_store
from .params import DURATION_OR_ZERO

__all__ = ["stop"]


@click.command()
@click.argument("experiment")
@click.option("-v", "--version", "version", metavar="VERSION", help="A version number or run id (default newest).")
@click.option("--all", "every", is_flag=True, help="Stop every queued or running run of EXPERIMENT (a sweep).")
@click.option("--wait", "wait", type=DURATION_OR_ZERO, default="10s", show_default=True,
              help="Wait this long for a running run to end and say how it ended (0s: return at once).")
@click.pass_context
def stop(ctx: click.Context, experiment: str, version: Optional[str], every: bool, wait: float) -> None:
    """Stop a run of EXPERIMENT (EXP@VERSION for another than the newest).

    A queued run never starts. A running one, here or on any machine sharing the store, gets
    SIGTERM in its whole process group, SIGKILL after stop_grace, a final capture, and the
    status `stopped`. A run that has already ended is left as it is (exit code 0).
    """
    import socket

    from .. import console
    from ..errors import UsageError
    from ..runner.stop import stop_run
    from ..store.records import TERMINAL, effective_status

    if "@" in experiment and version is None:
        experiment, version = experiment.split("@", 1)
    if every and version is not None:
        raise UsageError("--all stops every unfinished run of the experiment; give no VERSION with it")
    store = open_store(ctx, catch_up=False)
    host = socket.gethostname()
    if every:
        records = [r for r in store.records.runs(experiment, []) if effective_status(r, host) not in TERMINAL]
        if not records:
            store.records.resolve(experiment)  # names the known experiments when there is none
            console.info(f"{experiment} has no queued or running run; nothing to stop")
            return
    else:
        records = [store.records.resolve(experiment, version)]
    for record in records:
        console.info(stop_run(store, record, hostname=host, grace=wait if len(records) == 1 else 0))
