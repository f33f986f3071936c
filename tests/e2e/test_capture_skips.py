"""``studio run`` keeps an artifact whose folder holds something it cannot capture."""

from __future__ import annotations

import os

from tests.helpers import studio, write_script


def test_a_fifo_in_a_captured_folder_does_not_cost_the_other_files(home):
    outputs = os.path.join(home, "outputs")
    script = write_script(home, "make.py", (
        "import os\n"
        f"os.makedirs({outputs!r}, exist_ok=True)\n"
        f"open(os.path.join({outputs!r}, 'model.txt'), 'w').write('weights')\n"
        f"os.mkfifo(os.path.join({outputs!r}, 'pipe'))\n"
    ))
    ran = studio("run", "-e", "fifo", f"--capture={outputs}:outputs", script, home=home)
    assert "Traceback" not in ran.stderr
    out = os.path.join(home, "got")
    got = studio("get", "fifo/outputs", out, home=home)
    assert got.returncode == 0, got.stderr
    assert os.listdir(out) == ["model.txt"]
    with open(os.path.join(out, "model.txt")) as f:
        assert f.read() == "weights"
