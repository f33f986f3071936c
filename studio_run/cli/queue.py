"""``studio worker`` and ``studio queue``: serve a job queue, and show what it holds.

Only parsing and wiring: the worker's life is ``studio_run.queue.worker``, what the queue
holds is read by ``studio_run.queue.status``. ``_queue-run`` (hidden) is the runner process a
worker starts for each attempt (``studio_run.queue.attempt``).
"""

from __future__ import annotations

import time
from typing import Optional

import click

from .common import config_of, open_store

__all__ = ["queue_run", "queue_status", "worker"]


def _queue_name(ctx: click.Context, given: Optional[str]) -> str:
    from ..errors import UsageError
    from ..queue.brokers import check_queue_name

    name = given or config_of(ctx).queue
    if not name:
        raise UsageError("name the queue: --queue NAME (or `queue: NAME` in config.yaml)")
    return check_queue_name(name)


@click.command()
@click.option("-q", "--queue", "queue", metavar="NAME", help="Queue to serve (default: `queue` in config.yaml).")
@click.option("-j", "--concurrency", type=click.IntRange(min=1), metavar="N",
              help="Jobs run at once (default: one per --gpus group, else 1).")
@click.option("--gpus", metavar="IDS", help="GPUs to share between slots, e.g. 0,1 (each slot gets its own "
              "CUDA_VISIBLE_DEVICES).")
@click.option("--broker", metavar="URL", help="Broker URL (default: STUDIO_BROKER, `queue.broker`, else the "
              "embedded one).")
@click.pass_context
def worker(ctx: click.Context, queue: Optional[str], concurrency: Optional[int], gpus: Optional[str],
           broker: Optional[str]) -> int:
    """Run queued jobs, one per slot, until stopped.

    The first SIGTERM or Ctrl-C stops taking jobs and lets running ones finish; a second
    stops them (with their final capture) and gives them back to the queue.
    """
    from ..errors import UsageError
    from ..queue.brokers import resolve_broker
    from ..queue.worker import Worker

    name = _queue_name(ctx, queue)
    config = config_of(ctx)
    ids = None
    if gpus is not None:
        ids = [g.strip() for g in gpus.split(",") if g.strip()]
        if not ids:
            raise UsageError("--gpus: give GPU ids, e.g. --gpus 0,1")
    slots = concurrency or (len(ids) if ids else 1)
    if ids and len(ids) % slots:
        raise UsageError(f"--gpus {gpus} cannot be split evenly between {slots} slots; "
                         "give a --concurrency that divides the number of GPUs")
    return Worker(config, resolve_broker(broker, config, config.home), name, slots, ids).run()


@click.command("queue")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print jobs and workers as JSON (for scripts).")
@click.pass_context
def queue_status(ctx: click.Context, name: Optional[str], as_json: bool) -> None:
    """Show queued and running jobs (of queue NAME only, when given) and the workers seen."""
    import json
    from dataclasses import asdict

    from ..queue.status import queue_jobs, workers_seen
    from .tables import Column, Output, emit_table

    store = open_store(ctx, read_only=True)
    jobs = queue_jobs(store, name)
    workers = workers_seen(store, name)
    if as_json:
        print(json.dumps({"jobs": [asdict(j) for j in jobs], "workers": [dict(asdict(w), age=w.age) for w in workers]},
                         indent=2))
        return
    out = Output.detect()
    if jobs:
        rows = []
        for j in jobs:
            attempt = j.attempts[-1].number if j.attempts else 0
            lost = sum(1 for a in j.attempts if a.end == "lost")
            history = f"{attempt}" + (f" ({lost} lost)" if lost else "")
            values = " ".join(f"{k}={v}" for k, v in j.hyperparameters.items())
            rows.append([j.queue, j.experiment, j.run_id, j.status, j.host or "-", history if attempt else "-", values])
        emit_table(out, [Column("queue"), Column("experiment", shrink=True, least=10), Column("run", drop=3),
                         Column("status"), Column("host", shrink=True), Column("attempt", drop=2),
                         Column("hyperparameters", drop=1, shrink=True)], rows)
    else:
        print(f"no queued or running jobs{' on ' + name if name else ''} in {store.url}")
    print()
    if workers:
        now = time.time()
        rows = [[w.host, w.worker, w.queue, str(w.slots),
                 ", ".join(f"{r.get('experiment')}/{r.get('run_id')}" for r in w.runs) or "idle",
                 f"{max(0.0, now - w.at):.0f}s ago" + (" (stopping)" if w.stopping else "")] for w in workers]
        emit_table(out, [Column("host", shrink=True), Column("worker", drop=2), Column("queue"),
                         Column("slots", right=True), Column("running", shrink=True), Column("heartbeat")], rows)
    else:
        print("no workers seen; start one with `studio worker --queue NAME`")


@click.command("_queue-run", hidden=True)
@click.argument("attempt_file")
@click.pass_context
def queue_run(ctx: click.Context, attempt_file: str) -> int:
    """(internal) Run one attempt of a queued job, as a worker's runner process."""
    from ..queue.attempt import run_attempt

    return run_attempt(config_of(ctx), attempt_file)
