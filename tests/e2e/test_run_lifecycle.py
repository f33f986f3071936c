"""``studio run`` from start to end under stop signals, failed captures, bad inputs and secrets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

from studio_run.origin import process_start_ticks
from tests.helpers import studio, studio_env, wait_for, write_script

_DEADLINE = 60.0


def _records(home: str, experiment: str) -> list[dict]:
    folder = os.path.join(home, ".studioml", "store", "experiments", experiment)
    names = sorted(n for n in os.listdir(folder) if n.endswith(".json") and not n.endswith(".env.json"))
    out = []
    for name in names:
        with open(os.path.join(folder, name)) as f:
            out.append(json.load(f))
    return out


def _last_record(home: str, experiment: str) -> dict:
    return _records(home, experiment)[-1]


def _sigint_default() -> None:
    """A suite started in the background inherits SIGINT ignored, and so would the script; undo it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(home: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "studio_run", "run", *args], cwd=home, env=studio_env(home),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default,
    )


def _restored(home: str, ref: str, name: str) -> str:
    dest = os.path.join(home, "restored-" + ref.replace("/", "-").replace("@", "-"))
    got = studio("get", ref, dest, home=home)
    assert got.returncode == 0, got.stderr
    with open(os.path.join(dest, name)) as f:
        return f.read()


def test_a_second_ctrl_c_during_the_final_capture_keeps_it(home):
    out = os.path.join(home, "out")
    pid_file = os.path.join(home, "script.pid")
    script = write_script(home, "slow.py", f"""
import os, signal, time
open({pid_file!r}, 'w').write(str(os.getpid()))
try:
    print('ready', flush=True)
    time.sleep(120)
except KeyboardInterrupt:
    with open(os.path.join({out!r}, 'big.bin'), 'wb') as f:   # the final capture has work to do
        f.write(os.urandom(64 << 20))
    open(os.path.join({out!r}, 'progress.txt'), 'w').write('saved on Ctrl-C')
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)   # end as Ctrl-C ends a script, without a traceback
""")
    proc = _start(home, "-e", "twice", f"--capture={out}:out", script)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    with open(pid_file) as f:
        child = int(f.read())
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: process_start_ticks(child) is None or _zombie(child), "the script to exit", _DEADLINE, 0.02)
    proc.send_signal(signal.SIGINT)  # the second Ctrl-C: studio is in (or past) the final capture
    _out, err = proc.communicate(timeout=_DEADLINE)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err
    record = _last_record(home, "twice")
    assert record["status"] == "interrupted"
    assert _restored(home, "twice/out", "progress.txt") == "saved on Ctrl-C"


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


def test_a_script_ignoring_sigterm_is_killed_after_stop_grace_and_still_captured(home):
    os.makedirs(os.path.join(home, ".studioml"))
    with open(os.path.join(home, ".studioml", "config.yaml"), "w") as f:
        f.write("stop_grace: 1s\n")
    out = os.path.join(home, "out")
    script = write_script(home, "stubborn.py", f"""
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(os.path.join({out!r}, 'progress.txt'), 'w').write('epoch 1')
print('ready', flush=True)
time.sleep(120)
""")
    proc = _start(home, "-e", "stubborn", f"--capture={out}:out", script)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=_DEADLINE)
    assert "SIGKILL" in err and "after SIGTERM" in err, err
    assert proc.returncode == 128 + signal.SIGKILL
    record = _last_record(home, "stubborn")
    assert record["status"] == "interrupted" and record["exit_code"] == 128 + signal.SIGKILL
    assert _restored(home, "stubborn/out", "progress.txt") == "epoch 1"


def test_a_script_that_completed_is_finished_whatever_signal_arrived(home):
    script = write_script(home, "done.py", """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)   # studio passes the signal on: the script lets it pass
os.kill(os.getppid(), signal.SIGTERM)
time.sleep(1)
print('completed', flush=True)
""")
    done = studio("run", "-e", "completed", script, home=home)
    assert done.returncode == 0, done.stderr
    record = _last_record(home, "completed")
    assert record["status"] == "finished" and record["exit_code"] == 0


def test_the_record_names_the_runner_process_with_its_start_time(home):
    script = write_script(home, "show.py", "import os; print(os.getppid())\n")
    done = studio("run", "-e", "who", script, home=home)
    assert done.returncode == 0, done.stderr
    record = _last_record(home, "who")
    assert record["pid"] == int(done.stdout.strip())
    assert isinstance(record["pid_started"], int) and record["pid_started"] > 0
    assert record["host"] == socket.gethostname()


def test_unpinned_reuse_skips_failed_and_lost_runs_and_says_which_it_chose(home):
    out = os.path.join(home, "w")
    for value, code in (("good", 0), ("failed", 3)):
        writer = write_script(home, "write.py", f"open({os.path.join(out, 'v.txt')!r}, 'w').write({value!r})\n"
                                                f"raise SystemExit({code})\n")
        assert studio("run", "-e", "model", f"--capture={out}:weights", writer, home=home).returncode == code
    # A third run whose runner died (kill -9): its record says running, its process is gone.
    lost = dict(_last_record(home, "model"))
    gone = subprocess.Popen(["true"])
    gone.wait()
    run_id = lost["run_id"][:-6] + "ffffff"
    lost.update(run_id=run_id, status="running", exit_code=None, ended_at=None, pid=gone.pid, pid_started=None)
    path = os.path.join(home, ".studioml", "store", "experiments", "model", run_id + ".json")
    with open(path, "w") as f:
        json.dump(lost, f)
    reader = write_script(home, "read.py", "import fs_tracker, os\n"
                          "print(open(os.path.join(fs_tracker.get_artifact('w'), 'v.txt')).read())\n")
    reused = studio("run", "-e", "reader", "--reuse=model/weights:w", reader, home=home)
    assert reused.returncode == 0, reused.stderr
    assert reused.stdout.strip() == "good"
    chose = [line for line in reused.stderr.splitlines() if "chose v1" in line]
    assert len(chose) == 1, reused.stderr
    assert _last_record(home, "reader")["reuses"][0]["version"] == 1
    pinned = studio("run", "-e", "reader", "--reuse=model/weights@2:w", reader, home=home)
    assert pinned.returncode == 0, pinned.stderr
    assert pinned.stdout.strip() == "failed"


def test_a_capture_that_fails_makes_the_run_incomplete_never_finished(home):
    out = os.path.join(home, "out")
    os.makedirs(out)
    with open(os.path.join(out, "big.bin"), "wb") as f:
        f.write(os.urandom(3 << 20))
    script = write_script(home, "ok.py", "print('trained')\n")
    # A 1 MiB file-size limit: storing big.bin fails with EFBIG, as on a full or quota-bound disk.
    command = f"ulimit -f 1024; exec {sys.executable} -m studio_run run -e partial --capture={out}:out {script}"
    done = subprocess.run(["bash", "-c", command], cwd=home, env=studio_env(home), capture_output=True,
                          text=True, timeout=_DEADLINE)
    assert done.returncode == 1, done.stderr
    assert "trained" in done.stdout
    assert "Traceback" not in done.stderr
    summary = [line for line in done.stderr.splitlines() if "incomplete: out" in line]
    assert len(summary) == 1, done.stderr
    record = _last_record(home, "partial")
    assert record["status"] == "incomplete" and record["exit_code"] == 0
    assert record["artifacts"]["out"]["incomplete"], record["artifacts"]["out"]
    assert not record["artifacts"]["output"]["incomplete"]
    shown = studio("show", "partial", home=home)
    assert shown.returncode == 0 and "incomplete" in shown.stdout


def test_a_failed_capture_keeps_a_failing_scripts_status_and_exit_code(home):
    out = os.path.join(home, "out")
    os.makedirs(out)
    with open(os.path.join(out, "big.bin"), "wb") as f:
        f.write(os.urandom(3 << 20))
    script = write_script(home, "bad.py", "raise SystemExit(4)\n")
    command = f"ulimit -f 1024; exec {sys.executable} -m studio_run run -e broke --capture={out}:out {script}"
    done = subprocess.run(["bash", "-c", command], cwd=home, env=studio_env(home), capture_output=True,
                          text=True, timeout=_DEADLINE)
    assert done.returncode == 4, done.stderr
    record = _last_record(home, "broke")
    assert record["status"] == "failed" and record["artifacts"]["out"]["incomplete"]


def test_secret_arguments_reach_the_script_but_never_the_record_or_terminal(home):
    secret, password = "sk-live-0123456789abcdef", "hunter2pw"
    seen = os.path.join(home, "seen.json")
    script = write_script(home, "args.py", f"import json, sys; json.dump(sys.argv[1:], open({seen!r}, 'w'))\n")
    args = ["--api-key", secret, f"--db=postgres://me:{password}@db.example/x", "--lr", "0.1"]
    done = studio("run", "-e", "secret", script, *args, home=home)
    assert done.returncode == 0, done.stderr
    with open(seen) as f:
        assert json.load(f) == args
    shown = studio("show", "secret", home=home)
    listed = studio("list", home=home)
    assert shown.returncode == 0 and listed.returncode == 0
    folder = os.path.join(home, ".studioml", "store", "experiments", "secret")
    stored = "".join(open(os.path.join(folder, n)).read() for n in os.listdir(folder))
    for text in (done.stdout, done.stderr, shown.stdout, shown.stderr, listed.stdout, stored):
        assert secret not in text and password not in text
    assert "--lr" in stored and "0.1" in stored


def test_capture_once_of_a_fifo_is_refused_before_the_script_starts(home):
    fifo = os.path.join(home, "pipe")
    os.mkfifo(fifo)
    marker = os.path.join(home, "ran")
    script = write_script(home, "mark.py", f"open({marker!r}, 'w').write('x')\n")
    done = studio("run", "-e", "fifo", f"--capture-once={fifo}:p", script, home=home, timeout=_DEADLINE)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "FIFO" in done.stderr, done.stderr
    assert not os.path.exists(marker)


def test_sigint_ignored_by_the_shell_stays_ignored_for_the_script(home):
    script = write_script(home, "check.py", "import signal; print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)\n")
    done = subprocess.run(
        [sys.executable, "-m", "studio_run", "run", "-e", "nohup", script], cwd=home, env=studio_env(home),
        capture_output=True, text=True, timeout=_DEADLINE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
