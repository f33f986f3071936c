"""Tables fit the terminal without wrapping a cell: columns dropped and cells cut by width."""

from __future__ import annotations

import re

from studio_run.cli.tables import Column, fit_table

COLUMNS = [Column("name", shrink=True, least=6), Column("n", right=True), Column("extra", drop=1),
           Column("tags", shrink=True, least=6)]
ROWS = [["a-very-long-experiment-name-indeed", "12", "something optional", "alpha, beta, gamma, delta"],
        ["short", "3", "x", "t"]]


def test_a_table_that_fits_is_left_whole():
    lines = fit_table(COLUMNS, ROWS, 200)
    assert lines[1].split()[:1] == ["a-very-long-experiment-name-indeed"] and "something optional" in lines[1]
    assert len(lines) == 3


def test_a_narrow_width_drops_optional_columns_then_cuts_long_cells():
    for width in (80, 60, 40, 30):
        lines = fit_table(COLUMNS, ROWS, width)
        assert len(lines) == 3 and all(len(line) <= width for line in lines), (width, lines)
        assert "extra" not in lines[0]
    narrow = fit_table(COLUMNS, ROWS, 40)
    assert "…" in narrow[1] and narrow[2].startswith("short")


def test_wide_keeps_every_column_whole():
    lines = fit_table(COLUMNS, ROWS, 40, wide=True)
    assert "a-very-long-experiment-name-indeed" in lines[1] and "something optional" in lines[1]
    assert "alpha, beta, gamma, delta" in lines[1]


def test_cut_is_shared_by_the_long_cells():
    lines = fit_table(COLUMNS, ROWS, 50)
    name, _n, tags = re.split(r"\s{2,}", lines[1])
    assert name.endswith("…") and tags.endswith("…") and abs(len(name) - len(tags)) <= 2
