"""``studio run -hp NAME=RANGE`` on this machine: one run per point of the grid, one after another.

Every point is a run of the same experiment (its versions follow the grid's order), with the
point's values appended to the script's arguments as ``--NAME VALUE`` and kept in the record.
A point whose script fails does not end the sweep: the next point runs, and the sweep's exit
code is 1 with the failed points named (a ``--max-duration`` that ran out is such a result). A
run ended by a stop signal (Ctrl-C) or ``studio stop`` ends the sweep: whoever stopped it meant
the sweep; the points not run are named. (With a queue, each point becomes a job instead; see ``RunRequest.with_point``.)
"""

from __future__ import annotations

from dataclasses import replace

from .. import console
from ..config import Config
from ..hyperparams import Value, describe
from ..store.records import new_run_id
from .execute import run_recorded
from .prepare import check_request, generated_name
from .request import RunRequest

__all__ = ["sweep"]

_ENDS_SWEEP = ("stopped", "interrupted")  # someone meant the sweep; a failed or timed-out point is a result


def sweep(config: Config, request: RunRequest, points: list[dict[str, Value]]) -> int:
    """Run ``request`` once per point, in order; returns 0 when every run succeeded, else the
    exit code of the run that ended the sweep, or 1."""
    check_request(request)  # a typo fails once, before the first point
    experiment = request.experiment or generated_name(new_run_id())
    failed: list[str] = []
    for number, point in enumerate(points, 1):
        console.info(f"sweep {experiment}: point {number} of {len(points)}: {describe(point)}")
        code, status = run_recorded(config, replace(request.with_point(point), experiment=experiment))
        if code == 0:
            continue
        failed.append(f"point {number} ({describe(point)}) {status}, exit code {code}")
        if status in _ENDS_SWEEP and number < len(points):
            left = len(points) - number
            console.warn(f"sweep {experiment} {status} at point {number} of {len(points)}; "
                         f"{left} point{'s' if left != 1 else ''} not run")
            return code
    if failed:
        console.warn(f"sweep {experiment}: {len(failed)} of {len(points)} runs did not succeed: " + "; ".join(failed))
        return 1
    console.info(f"sweep {experiment}: all {len(points)} runs succeeded")
    return 0
