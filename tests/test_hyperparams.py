"""The ``-hp NAME=RANGE`` grammar and its grid, from a table of valid and invalid strings."""

from __future__ import annotations

import click
import pytest

from studio_run.cli.params import DURATION, DURATION_OR_ZERO, HYPERPARAM
from studio_run.hyperparams import MAX_POINTS, as_args, describe, format_value, grid, parse_hyperparam


@pytest.mark.parametrize("text, name, values", [
    ("lr=0.1,0.01,0.001", "lr", [0.1, 0.01, 0.001]),
    ("layers=:5", "layers", [0, 1, 2, 3, 4, 5]),
    ("layers=2:5", "layers", [2, 3, 4, 5]),
    ("layers=2:4", "layers", [2, 3, 4]),
    ("lr=0.1:0.05:0.3", "lr", [0.1, 0.15, 0.2, 0.25, 0.3]),
    ("lr=0.1:0.1:0.5", "lr", [0.1, 0.2, 0.3, 0.4, 0.5]),
    ("lr=0.01:4l:10", "lr", [0.01, 0.1, 1.0, 10.0]),
    ("lr=1e-5:3l:1e-3", "lr", [1e-05, 0.0001, 0.001]),
    ("x=1:-0.25:0", "x", [1.0, 0.75, 0.5, 0.25, 0.0]),
    ("x=0:2:5", "x", [0, 2, 4]),
    ("opt=adam,sgd", "opt", ["adam", "sgd"]),
    ("n=3", "n", [3]),
    ("w=1.0,2", "w", [1.0, 2]),
    (" drop_out = 0.5 , 0.25 ", "drop_out", [0.5, 0.25]),
])
def test_valid_ranges(text, name, values):
    parsed = parse_hyperparam(text)
    assert parsed == (name, values)
    assert [type(v) for v in parsed[1]] == [type(v) for v in values]


@pytest.mark.parametrize("text, message", [
    ("lr", "is not NAME=RANGE"),
    ("=1,2", "is not NAME=RANGE"),
    ("lr=", "gives no values"),
    ("1lr=1", "must start with a letter"),
    ("l r=1", "must start with a letter"),
    ("lr=1,,2", "empty value between commas"),
    ("lr=1,a b", "neither a number nor a plain word"),
    ("lr=1:2:3:4", "has 4 parts"),
    ("lr=1:", "has no end"),
    ("lr=a:5", "is not a number"),
    ("lr=1:x:5", "step 'x'"),
    ("lr=1:0:5", "step 0"),
    ("lr=5:1:1", "never reaches its end"),
    ("lr=0:1l:5", "at least 2"),
    ("lr=0:4l:10", "above 0"),
    ("lr=0:1e-9:1", f"more than {MAX_POINTS}"),
    ("lr=1:nan:2", "is not a number"),
    ("lr=1:inf", "is not a number"),
])
def test_invalid_ranges_say_what_and_how_in_one_line(text, message):
    with pytest.raises(ValueError) as caught:
        parse_hyperparam(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(click.BadParameter):
        HYPERPARAM.convert(text, None, None)


def test_values_are_written_as_the_user_would():
    _name, values = parse_hyperparam("lr=0.1:0.1:0.9")
    assert [format_value(v) for v in values] == [f"0.{i}" for i in range(1, 10)]
    assert [format_value(v) for v in parse_hyperparam("lr=0.01:5l:100")[1]] == ["0.01", "0.1", "1.0", "10.0", "100.0"]
    assert format_value(3) == "3" and format_value("adam") == "adam"


def test_grid_is_the_cartesian_product_first_name_slowest():
    points = grid([parse_hyperparam("lr=0.1,0.01,0.001"), parse_hyperparam("layers=2:4")])
    assert len(points) == 9
    assert points[:4] == [{"lr": 0.1, "layers": 2}, {"lr": 0.1, "layers": 3}, {"lr": 0.1, "layers": 4},
                          {"lr": 0.01, "layers": 2}]
    assert as_args(points[3]) == ["--lr", "0.01", "--layers", "2"]
    assert describe(points[3]) == "lr=0.01 layers=2"
    assert grid([]) == [{}]


def test_a_grid_refuses_a_name_given_twice_and_too_many_points():
    with pytest.raises(ValueError, match="'lr' is given twice"):
        grid([("lr", [1]), ("lr", [2])])
    with pytest.raises(ValueError, match="more than"):
        grid([("a", list(range(200))), ("b", list(range(200)))])


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert DURATION.convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1s", "0s", "2 weeks", "1y"])
def test_bad_durations(text):
    with pytest.raises(click.BadParameter, match="not a duration"):
        DURATION.convert(text, None, None)


def test_zero_is_a_duration_only_where_allowed():
    assert DURATION_OR_ZERO.convert("0s", None, None) == 0
