"""A run holds the store's shared lock only while a capture waits for its record: once studio
exits, nothing of it is left in ``locks/`` (another machine's gc would otherwise wait for it)."""

from __future__ import annotations

import os

from tests.helpers import studio, write_script


def test_a_finished_run_leaves_no_lock_in_the_store(home):
    data = os.path.join(home, "data")
    os.makedirs(data)
    write_script(data, "a.txt", "input\n")
    script = write_script(home, "train.py", "print('trained')\n")
    done = studio("run", "-co", f"{data}:data", "-e", "locks", script, home=home)
    assert done.returncode == 0, done.stderr
    locks = os.path.join(home, ".studioml", "store", "locks")
    assert not os.path.isdir(locks) or os.listdir(locks) == []
