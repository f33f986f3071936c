"""Hyper-parameter sweeps: StudioML's ``-hp NAME=RANGE`` grammar and the grid it spans.

A range is one of (ends included, as StudioML's ``-hp layers=2:4`` gives three runs)::

    lr=0.1,0.01,0.001      the values listed (numbers, or words such as adam,sgd)
    layers=:5              0, 1, 2, 3, 4, 5
    layers=2:5             2, 3, 4, 5
    lr=0.1:0.05:0.3        start:step:end: 0.1, 0.15, 0.2, 0.25, 0.3
    lr=0.01:4l:10          4 values spaced evenly on a log scale: 0.01, 0.1, 1, 10

Linear ranges are computed in decimal, so 0.1 + 2 x 0.1 is 0.3, never 0.30000000000000004; log
values are rounded to 12 significant digits for the same reason. Each value travels to the
script as ``--NAME VALUE`` written as the user would write it (``format_value``). Nothing here
imports anything outside the standard library: the CLI, the runner and a queue share it.
"""

from __future__ import annotations

import itertools
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Mapping, Union

__all__ = ["MAX_POINTS", "Value", "as_args", "describe", "format_value", "grid", "parse_hyperparam"]

Value = Union[int, float, str]

MAX_POINTS = 10_000  # values in one range, and points in one grid: more is a typo, not a sweep
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*\Z")
_WORD = re.compile(r"^[A-Za-z0-9_.+/@%-]+\Z")  # a listed value that is not a number
_INT = re.compile(r"^[+-]?\d+\Z")
_LOG_COUNT = re.compile(r"^(\d+)l\Z")


def parse_hyperparam(text: str) -> tuple[str, list[Value]]:
    """``NAME=RANGE`` -> (name, values in order); ``ValueError`` with a one-line message."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name:
        raise ValueError(f"{text!r} is not NAME=RANGE; write e.g. lr=0.1,0.01 or layers=2:4")
    if not _NAME.match(name):
        raise ValueError(f"hyper-parameter name {name!r} must start with a letter or '_' and hold only "
                         "letters, digits, '_', '.' or '-'")
    if not spec:
        raise ValueError(f"{text!r} gives no values; write e.g. {name}=1,2,3 or {name}=0.1:0.1:0.5")
    values = _range(spec) if ":" in spec else _listed(spec)
    if len(values) > MAX_POINTS:
        raise ValueError(f"{text!r} spans {len(values)} values, more than {MAX_POINTS}; use a larger step")
    if not values:
        raise ValueError(f"{text!r} spans no values; check that the step leads from start to end")
    return name, values


def grid(specs: Iterable[tuple[str, list[Value]]]) -> list[dict[str, Value]]:
    """Every combination of the values (cartesian product), the first parameter varying slowest.

    The order is stable: it follows the order of ``specs`` and of each one's values, so the
    versions of a sweep line up with what was typed. A name given twice is a ``ValueError``.
    """
    specs = list(specs)
    names = [name for name, _values in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"hyper-parameter {twice[0]!r} is given twice; give each name once with all its values")
    total = math.prod(len(values) for _name, values in specs)
    if total > MAX_POINTS:
        raise ValueError(f"the sweep has {total} points, more than {MAX_POINTS}; narrow a range")
    return [dict(zip(names, point)) for point in itertools.product(*(values for _name, values in specs))]


def format_value(value: Value) -> str:
    """A value as the user would write it: ``3``, ``0.15``, ``1e-05``, ``adam``."""
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same float; 1.0 stays "1.0"
    return str(value)


def as_args(point: dict[str, Value]) -> list[str]:
    """The script arguments for one point: ``--NAME VALUE`` for each, in order."""
    args: list[str] = []
    for name, value in point.items():
        args += [f"--{name}", format_value(value)]
    return args


def describe(point: Mapping[str, Any]) -> str:
    """``lr=0.1 layers=2``: a point as the terminal, ``studio list`` and ``show`` write it."""
    return " ".join(f"{name}={format_value(value)}" for name, value in point.items())


def _listed(spec: str) -> list[Value]:
    values: list[Value] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            raise ValueError(f"{spec!r} has an empty value between commas; write e.g. 1,2,3")
        number = _number(item)
        if number is not None:
            values.append(_plain(number))
        elif _WORD.match(item):
            values.append(item)
        else:
            raise ValueError(f"value {item!r} in {spec!r} is neither a number nor a plain word "
                             "(letters, digits, '_', '.', '-', '+', '/', '@', '%')")
    return values


def _range(spec: str) -> list[Value]:
    parts = [p.strip() for p in spec.split(":")]
    if len(parts) > 3:
        raise ValueError(f"range {spec!r} has {len(parts)} parts; write START:END, START:STEP:END or START:Nl:END")
    if len(parts) == 2:
        start_text, step_text, end_text = parts[0] or "0", "1", parts[1]
    else:
        start_text, step_text, end_text = parts
    if not end_text:
        raise ValueError(f"range {spec!r} has no end; write e.g. 2:5 or 0.1:0.1:0.5")
    start, end = _bound(start_text, spec), _bound(end_text, spec)
    log = _LOG_COUNT.match(step_text)
    if log:
        return _log_range(start, end, int(log.group(1)), spec)
    step = _number(step_text)
    if step is None:
        raise ValueError(f"step {step_text!r} in {spec!r} is not a number; write START:STEP:END or START:Nl:END "
                         "(N values on a log scale)")
    if step == 0:
        raise ValueError(f"range {spec!r} has step 0; give a step that leads from start to end")
    if (end - start) * step < 0:
        raise ValueError(f"range {spec!r} never reaches its end: the step goes the other way")
    count = int((end - start) / step) + 1
    if count > MAX_POINTS:
        raise ValueError(f"range {spec!r} spans {count} values, more than {MAX_POINTS}; use a larger step")
    return [_plain(start + i * step) for i in range(count)]


def _log_range(start: Decimal, end: Decimal, count: int, spec: str) -> list[Value]:
    if count < 2:
        raise ValueError(f"range {spec!r} asks for {count} log-spaced value(s); ask for at least 2 (e.g. 4l)")
    if count > MAX_POINTS:
        raise ValueError(f"range {spec!r} spans {count} values, more than {MAX_POINTS}; ask for fewer")
    if start <= 0 or end <= 0:
        raise ValueError(f"log range {spec!r} needs start and end above 0 (a log scale has no 0)")
    low, high = math.log10(start), math.log10(end)
    values: list[Value] = []
    for i in range(count):
        exact = start if i == 0 else end if i == count - 1 else None
        value = float(exact) if exact is not None else float(f"{10 ** (low + i * (high - low) / (count - 1)):.12g}")
        values.append(value)
    return values


def _bound(text: str, spec: str) -> Decimal:
    number = _number(text)
    if number is None:
        raise ValueError(f"{text!r} in range {spec!r} is not a number; write e.g. 2:5 or 0.1:0.05:0.3")
    return number


def _number(text: str) -> Union[Decimal, None]:
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    if not number.is_finite() or not math.isfinite(float(number)):
        return None  # nan, inf, or past what a float holds
    return number


def _plain(number: Decimal) -> Value:
    """An int when the number was written (or came out) whole without a point, else a float."""
    if number == number.to_integral_value() and _INT.match(str(number)):
        return int(number)
    return float(number)
