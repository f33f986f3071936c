"""The stat cache keeps pending digests as stat-table rows and writes them to SQLite on save."""

from __future__ import annotations

import os

from studio_run.snapshots.statcache import StatCache, stat_key, table_row


def test_a_remembered_digest_is_the_table_row_and_survives_a_new_process(tmp_path):
    path = str(tmp_path / "stat.sqlite")
    f = tmp_path / "a.txt"
    f.write_text("alpha")
    key = stat_key(os.stat(f))
    cache = StatCache(path)
    row = cache.remember(key, "d" * 64, key[3] + 10**9)
    assert row == table_row(key, "d" * 64)
    cache.save()
    assert StatCache(path).get_many([key]) == {key: "d" * 64}


def test_a_digest_read_within_a_tick_of_the_last_write_is_not_remembered(tmp_path):
    path = str(tmp_path / "stat.sqlite")
    f = tmp_path / "a.txt"
    f.write_text("alpha")
    key = stat_key(os.stat(f))
    cache = StatCache(path)
    assert cache.remember(key, "d" * 64, key[3]) == b""
    assert cache.put(key, "d" * 64, key[3]) is False
    cache.save()
    assert StatCache(path).get_many([key]) == {}


def test_the_last_digest_remembered_for_a_file_wins(tmp_path):
    path = str(tmp_path / "stat.sqlite")
    f = tmp_path / "a.txt"
    f.write_text("alpha")
    key = stat_key(os.stat(f))
    cache = StatCache(path)
    assert cache.put(key, "a" * 64, key[3] + 10**9) and cache.put(key, "b" * 64, key[3] + 10**9)
    cache.save()
    assert StatCache(path).get_many([key]) == {key: "b" * 64}
