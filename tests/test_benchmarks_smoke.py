"""Keep the benchmark harness from rotting: a quick W3 run must work end to end.

Runs ``benchmarks/run.py --quick --only W3`` as a user would, into a throwaway output folder, and
checks the outcome, never the timings: exit code 0, the W3 goal rows in ``latest.md``, and an
unchanged re-capture that stored zero content bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_w3_runs_and_stores_no_content(tmp_path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--quick", "--only", "W3",
         "--out", str(out), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    table = (out / "latest.md").read_text()
    assert "| W3 | re-capture of W1 unchanged | <= 0.3 s |" in table
    assert "| W3 | re-capture of W1 unchanged | zero content bytes written |" in table
    studio_row = next(line for line in table.splitlines() if line.startswith("| studio | "))
    cells = [cell.strip() for cell in studio_row.strip("|").split("|")]
    assert cells[5] == "0 B"  # the content column

    result = json.loads((out / "latest.json").read_text())
    assert [w["id"] for w in result["workloads"]] == ["W3"]
    studio = next(c for c in result["workloads"][0]["contenders"] if c["label"] == "studio")
    assert studio["status"] == "ok"
    assert len(studio["samples"]) == 3
    assert [s["content"] for s in studio["samples"]] == [0, 0, 0]
    assert not [p for p in os.listdir(tmp_path) if p.startswith("studio-bench-")]  # the data was removed



def _default_out(*args: str) -> str:
    """Where ``run.py ARGS`` would write its tables (asked in a child: run.py's modules stay out of ours)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import run; "
            "print(run._parse(sys.argv[2:]).out)")
    proc = subprocess.run([sys.executable, "-c", code, os.path.join(ROOT, "benchmarks"), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


def test_quick_run_writes_to_a_scratch_folder_unless_told(tmp_path) -> None:
    committed = os.path.join(ROOT, "benchmarks", "results")
    assert _default_out() == committed
    quick = os.path.realpath(_default_out("--quick"))
    assert quick != os.path.realpath(committed)
    assert not quick.startswith(os.path.realpath(ROOT) + os.sep)
    assert _default_out("--quick", "--out", str(tmp_path)) == str(tmp_path)


def test_w9_runs_every_phase_and_summarises_the_growth(tmp_path) -> None:
    """W9 at a tiny size (no large files): every phase runs, each studio row succeeds, the summary fits lines.

    Two sizes of a handful of files: the smallest run that has a slope. Times are not checked.
    """
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--quick", "--only", "W9",
         "--w9-sizes", "3,6", "--w9-large-mib", "0", "--no-drop-caches", "--out", str(out),
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    result = json.loads((out / "latest.json").read_text())
    ids = [w["id"] for w in result["workloads"]]
    assert ids == [f"W9/{n}/{phase}" for n in (3, 6) for phase in ("first", "unchanged", "changed", "read")]
    for w in result["workloads"]:
        for row in w["contenders"]:
            if row["label"].startswith("restic") and row["status"] == "skipped":
                assert "apt-get install" in row["reason"]  # restic missing is said, never silent
                continue
            assert row["status"] == "ok", (w["id"], row)
            assert len(row["samples"]) == 3
    studio_get = next(c for w in result["workloads"] if w["id"] == "W9/6/read"
                      for c in w["contenders"] if c["label"] == "studio get")
    assert studio_get["samples"][0]["written"] > 0  # the tree was written out

    w9 = result["w9"]
    assert w9["sizes"] == [3, 6]
    first = next(r for r in w9["rows"] if (r["phase"], r["label"]) == ("first", "studio, warm"))
    assert first["sizes"] == [3, 6] and "slope" in first and len(first["peak_rss"]) == 2
    assert [g["text"] for g in w9["goals"] if "peak RSS" in g["text"]] == [
        "3 files, studio's peak RSS <= 200 MiB", "6 files, studio's peak RSS <= 200 MiB"]

    table = (out / "latest.md").read_text()
    assert "## W9: time and memory against the number of files" in table
    assert "| W9/6/read | 6 files: studio get and --reuse | 6 files, get <= 2 x cp -r |" in table


_STEPS = """
import json, sys
sys.path.insert(0, sys.argv[1])
import run
out = sys.argv[2]
def workload(wid):
    return {"id": wid, "title": wid, "data": "Data.", "goals": [], "contenders": [], "notes": [], "primary": "x"}
base = dict(command="python benchmarks/run.py", mode="full", started="day 1", minutes=60.0, reps=3, noop_reps=10,
            machine={}, scale={}, drop_caches=False, method=[], workloads=[workload("W1"), workload("W2")])
json.dump(base, open(out + "/latest.json", "w"))
head = dict(base, command="python benchmarks/run.py --only W2,W3 --update", started="day 2")
del head["workloads"], head["minutes"]
before = run._base(out)
done = []
for wid, minutes in (("W2", 5.0), ("W3", 9.0)):
    done.append(workload(wid))
    run._write(out, head, done, before, minutes)
"""


def test_an_update_run_is_saved_after_each_workload_and_merged_once(tmp_path) -> None:
    """Each finished workload reaches latest.json at once; the base's minutes and 'updated' are counted once."""
    proc = subprocess.run([sys.executable, "-c", _STEPS, os.path.join(ROOT, "benchmarks"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "latest.json").read_text())
    assert [w["id"] for w in result["workloads"]] == ["W1", "W2", "W3"]
    assert result["minutes"] == 69.0
    assert result["command"] == "python benchmarks/run.py" and result["started"] == "day 1"
    assert result["updated"] == "W2, W3 re-run day 2 (`python benchmarks/run.py --only W2,W3 --update`)"
    assert "W3" in (tmp_path / "latest.md").read_text()
