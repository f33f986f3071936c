"""``studio run``: turn the command line into a ``RunRequest`` and hand it to the runner.

One run, or with ``-hp`` one run per point of the grid, one after another on this machine.
"""

from __future__ import annotations

from typing import Optional

import click

from ..hyperparams import Value
from ..refs import CaptureSpec, ReuseSpec
from .common import config_of
from .params import CAPTURE, CAPTURE_ONCE, DURATION, HYPERPARAM, REUSE

__all__ = ["run"]

_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command(context_settings=dict(_SETTINGS, allow_interspersed_args=False, ignore_unknown_options=False))
# what the run keeps
@click.option("-c", "--capture", multiple=True, type=CAPTURE, help="Snapshot DIR periodically and at the end.")
@click.option("-co", "--capture-once", "capture_once", multiple=True, type=CAPTURE_ONCE,
              help="Snapshot DIR (or a file, or an http(s)/s3/gs/sftp URL) once, before the script starts.")
@click.option("-r", "--reuse", multiple=True, type=REUSE,
              help="Make EXP/TAG[@VERSION] available as ALIAS (read-only, from the blob cache).")
@click.option("-e", "--experiment", metavar="NAME", help="Experiment name (default: a generated one).")
@click.option("-m", "module", is_flag=True, help="Run SCRIPT as a module, like python -m.")
@click.option("--store", metavar="URL", help="Store URL for this run.")
@click.option("--capture-interval", metavar="DURATION", help="Override capture_interval (e.g. 10s, 2m).")
# sweeps and limits
@click.option("-hp", "--hyperparam", "hyperparams", multiple=True, type=HYPERPARAM,
              help="Sweep: one run per combination, each with --NAME VALUE appended "
                   "(1,2,3 | 2:5 | START:STEP:END | START:Nl:END for N log-spaced values).")
@click.option("--max-duration", "max_duration", type=DURATION,
              help="Stop the script after this long (30s, 10m, 2h, 1d): status timed-out, final capture kept.")
@click.option("--lifetime", type=DURATION,
              help="With a queue: drop the job if it has not started within this long (status expired).")
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
    hyperparams: tuple[tuple[str, list[Value]], ...],
    max_duration: Optional[float],
    lifetime: Optional[float],
    script: str,
    script_args: tuple[str, ...],
) -> int:
    """Run SCRIPT [SCRIPT_ARGS]... as a recorded experiment.

    Options go before SCRIPT; everything after it is passed to the script untouched.
    """
    from dataclasses import replace

    from ..config import parse_duration
    from ..errors import UsageError
    from ..hyperparams import grid
    from ..runner.execute import RunRequest
    from ..runner.execute import run as run_experiment
    from ..runner.sweep import sweep

    try:
        points = grid(hyperparams)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
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
        max_duration=max_duration,
        lifetime=lifetime,
    )
    if hyperparams:
        return sweep(config, request, points)
    return run_experiment(config, request)
