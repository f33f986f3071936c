"""``studio run -hp``, ``--max-duration`` and ``studio stop``, driven as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import fs_tracker
from studio_run.storage.local import LocalStorage
from studio_run.store.stops import request_stop
from tests.helpers import studio, studio_env, wait_for, write_script

_DEADLINE = 60.0

# Prints what it got, fails for lr=0.2.
SWEPT = """
import json, sys, fs_tracker
print("GOT", json.dumps({"argv": sys.argv[1:], "hp": fs_tracker.get_hyperparameters()}), flush=True)
sys.exit(3 if fs_tracker.get_hyperparameters()["lr"] == 0.2 else 0)
"""

# Runs until stopped; on SIGTERM writes a last line (the final capture must keep it) and exits 0.
LONG = """
import os, signal, sys, time
def bye(*_):
    print("saved on SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
open(sys.argv[1], "w").write(str(os.getpid()))
print("started", flush=True)
time.sleep(120)
"""


def _home(tmp_path) -> str:
    home = str(tmp_path / "home")
    os.makedirs(os.path.join(home, ".studioml"))
    with open(os.path.join(home, ".studioml", "config.yaml"), "w") as f:
        f.write("stop_grace: 5s\n")
    return home


def _runs(home: str, experiment: str) -> list[dict]:
    listed = studio("list", experiment, "--json", home=home)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)[::-1]  # oldest first


def _start_long(home: str, *args: str, **extra: str) -> subprocess.Popen:
    """``studio run ARGS long.py PID_FILE`` in the background, returned once the script has written its pid."""
    script = write_script(home, "long.py", LONG)
    pid_file = os.path.join(home, "pid")
    proc = subprocess.Popen([sys.executable, "-m", "studio_run", "run", *args, script, pid_file], cwd=home,
                            env=studio_env(home, **extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: os.path.exists(pid_file) and open(pid_file).read(), pid_file, _DEADLINE, 0.02)
    return proc


def test_a_sweep_runs_every_point_in_order_and_names_the_one_that_failed(tmp_path):
    home = _home(tmp_path)
    script = write_script(home, "t.py", SWEPT)
    done = studio("run", "-e", "sw", "-hp", "lr=0.1:0.1:0.3", "--hyperparam", "opt=adam", script, "--x", "1",
                  home=home)
    assert done.returncode == 1, done.stderr
    got = [json.loads(line[4:]) for line in done.stdout.splitlines() if line.startswith("GOT ")]
    assert got == [{"argv": ["--x", "1", "--lr", lr, "--opt", "adam"], "hp": {"lr": float(lr), "opt": "adam"}}
                   for lr in ("0.1", "0.2", "0.3")]
    assert "1 of 3 runs did not succeed: point 2 (lr=0.2 opt=adam) failed, exit code 3" in done.stderr
    runs = _runs(home, "sw")
    assert [(r["status"], r["hyperparameters"]) for r in runs] == [
        ("finished", {"lr": 0.1, "opt": "adam"}), ("failed", {"lr": 0.2, "opt": "adam"}),
        ("finished", {"lr": 0.3, "opt": "adam"})]
    assert runs[1]["command"][-4:] == ["--lr", "0.2", "--opt", "adam"]
    listed = studio("list", "sw", home=home).stdout.splitlines()
    assert listed[0].split("\t")[-1] == "params" and listed[1].split("\t")[-1] == "lr=0.3 opt=adam"
    assert "  params   lr=0.2 opt=adam" in studio("show", "sw@2", home=home).stdout


def test_a_bad_range_is_one_line_and_records_nothing(tmp_path):
    home = _home(tmp_path)
    script = write_script(home, "t.py", SWEPT)
    for args, message in ((["-hp", "lr=1:0:5"], "step 0"), (["-hp", "lr=1", "-hp", "lr=2"], "given twice"),
                          (["--max-duration", "soon"], "not a duration")):
        done = studio("run", "-e", "bad", *args, script, home=home)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not os.path.exists(os.path.join(home, ".studioml", "store", "experiments", "bad"))


def test_get_hyperparameters_outside_studio_is_empty(monkeypatch):
    monkeypatch.delenv("STUDIO_HANDOFF", raising=False)
    assert fs_tracker.get_hyperparameters() == {}


def test_max_duration_stops_the_script_and_keeps_the_final_capture(tmp_path):
    home = _home(tmp_path)
    script = write_script(home, "long.py", LONG)
    done = studio("run", "-e", "md", "--max-duration", "1s", script, os.path.join(home, "pid"), home=home)
    assert done.returncode == 1, done.stderr  # the script exited 0, but the run did not complete
    assert "--max-duration 1s reached: stopping the script" in done.stderr
    run, = _runs(home, "md")
    assert run["status"] == "timed-out" and run["exit_code"] == 0
    assert "saved on SIGTERM" in studio("logs", "md", home=home).stdout


def test_stop_of_a_local_run_ends_it_with_its_final_capture(tmp_path):
    home = _home(tmp_path)
    proc = _start_long(home, "-e", "st")
    stopped = studio("stop", "st", home=home)
    out, err = proc.communicate(timeout=_DEADLINE)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stderr.startswith("studio: st v1 stopped (sent SIGTERM to its runner, pid ")
    assert proc.returncode == 1 and "saved on SIGTERM" in out
    run, = _runs(home, "st")
    assert run["status"] == "stopped" and run["ended_at"]
    assert "saved on SIGTERM" in studio("logs", "st", home=home).stdout
    again = studio("stop", "st@1", home=home)
    assert again.returncode == 0 and "st v1 has already ended (stopped); nothing to stop" in again.stderr
    missing = studio("stop", "ghost", home=home)
    assert missing.returncode == 2 and "no experiment named 'ghost'" in missing.stderr


def test_a_stop_request_from_another_machine_is_found_by_the_runner(tmp_path):
    home = _home(tmp_path)
    proc = _start_long(home, "-e", "far")
    run, = _runs(home, "far")
    request_stop(LocalStorage(os.path.join(home, ".studioml", "store")), "far", run["run_id"])  # no signal
    out, err = proc.communicate(timeout=_DEADLINE)
    assert proc.returncode == 1 and "stop requested (studio stop): stopping the script" in err
    assert _runs(home, "far")[0]["status"] == "stopped"


def test_stop_all_stops_every_unfinished_run_of_a_sweep(tmp_path):
    home = _home(tmp_path)
    proc = _start_long(home, "-e", "many", "-hp", "n=1:3")
    stopped = studio("stop", "many", "--all", home=home)
    assert stopped.returncode == 0 and "many v1" in stopped.stderr
    _out, err = proc.communicate(timeout=_DEADLINE)
    assert proc.returncode == 1 and "sweep many stopped at point 1 of 3; 2 points not run" in err
    assert [r["status"] for r in _runs(home, "many")] == ["stopped"]


def test_a_run_on_a_remote_store_finds_a_stop_request_there(s3_server, tmp_path):
    import uuid

    import yaml

    from studio_run.storage import open_storage
    from tests.conftest import FAKE_AWS_ENV

    home = _home(tmp_path)
    bucket = f"studio-stop-{uuid.uuid4().hex[:10]}"
    with open(os.path.join(home, ".studioml", "config.yaml"), "w") as f:
        yaml.safe_dump({"store": f"s3://{bucket}/k", "store_options": {"endpoint": s3_server.endpoint},
                        "stop_grace": "5s"}, f)
    proc = _start_long(home, "-e", "far", **FAKE_AWS_ENV)
    storage = open_storage(f"s3://{bucket}/k", {"endpoint": s3_server.endpoint})  # another machine's view
    deadline = time.monotonic() + _DEADLINE
    while not (records := [k for k in storage.list("experiments/far/") if k.endswith(".json")]):
        assert time.monotonic() < deadline and proc.poll() is None, "the first record never reached the store"
        time.sleep(0.1)
    request_stop(storage, "far", records[0].rsplit("/", 1)[1][: -len(".json")])
    _out, err = proc.communicate(timeout=_DEADLINE)
    assert proc.returncode == 1 and "stop requested (studio stop): stopping the script" in err, err
    listed = studio("list", "far", "--json", home=home, **FAKE_AWS_ENV)
    assert [r["status"] for r in json.loads(listed.stdout)] == ["stopped"], listed.stderr
