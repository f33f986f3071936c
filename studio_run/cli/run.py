"""``studio run``: turn the command line into a ``RunRequest`` and hand it to the runner."""

from __future__ import annotations

from typing import Optional

import click

from ..refs import CaptureSpec, ReuseSpec
from .common import config_of
from .params import CAPTURE, CAPTURE_ONCE, REUSE

__all__ = ["run"]

_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _no_sweeps_yet(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> None:
    """StudioML's ``-hp``/``--hyperparam``: answered with a pointer instead of "No such option"."""
    if value:
        raise click.UsageError(
            "hyper-parameter sweeps (-hp/--hyperparam) come with the job queue; until then run one "
            "`studio run` per value, e.g. for lr in 0.1 0.01; do studio run train.py --lr $lr; done", ctx)


@click.command(context_settings=dict(_SETTINGS, allow_interspersed_args=False, ignore_unknown_options=False))
@click.option("-c", "--capture", multiple=True, type=CAPTURE, help="Snapshot DIR periodically and at the end.")
@click.option("-co", "--capture-once", "capture_once", multiple=True, type=CAPTURE_ONCE,
              help="Snapshot DIR (or a file, or an http(s)/s3/gs/sftp URL) once, before the script starts.")
@click.option("-r", "--reuse", multiple=True, type=REUSE,
              help="Make EXP/TAG[@VERSION] available as ALIAS (read-only, from the blob cache).")
@click.option("-e", "--experiment", metavar="NAME", help="Experiment name (default: a generated one).")
@click.option("-m", "module", is_flag=True, help="Run SCRIPT as a module, like python -m.")
@click.option("--store", metavar="URL", help="Store URL for this run.")
@click.option("--capture-interval", metavar="DURATION", help="Override capture_interval (e.g. 10s, 2m).")
@click.option("-hp", "--hyperparam", "hyperparam", multiple=True, hidden=True, expose_value=False,
              callback=_no_sweeps_yet)
@click.option("--queue", "queue", metavar="NAME", help="Queue the run for `studio worker --queue NAME`; returns at once.")
@click.option("--broker", metavar="URL", help="With --queue: broker URL (default STUDIO_BROKER, queue.broker, embedded).")
@click.option("--retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="With --queue: how many times a run whose worker died is taken over.")
@click.option("--lifetime", metavar="DURATION", help="With --queue: drop the job if not started within DURATION.")
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
    queue: Optional[str],
    broker: Optional[str],
    retries: int,
    lifetime: Optional[str],
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

    config = config_of(ctx, store)
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
    if queue:
        from ..queue.submit import submit

        life = parse_duration(lifetime, "--lifetime") if lifetime else None
        return submit(config, request, queue=queue, broker=broker, retries=retries, lifetime=life)
    return run_experiment(config, request)
