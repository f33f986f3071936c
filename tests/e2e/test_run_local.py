"""``studio run`` end to end on the local default store, driven as a user would."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, studio, studio_env, write_script

TRAIN = os.path.join(REPO, "helloworld", "train_linreg.py")
PRINT_NORM = os.path.join(REPO, "helloworld", "print_norm_linreg.py")


def _last_record(home: str, experiment: str) -> dict:
    folder = os.path.join(home, ".studioml", "store", "experiments", experiment)
    names = sorted(n for n in os.listdir(folder) if n.endswith(".json") and not n.endswith(".env.json"))
    with open(os.path.join(folder, names[-1])) as f:
        return json.load(f)


def test_seed_scenario_reuse_after_original_folder_is_deleted(home):
    weights = os.path.join(home, "weights")
    data = os.path.join(home, "data")
    os.makedirs(data)
    with open(os.path.join(data, "points.csv"), "w") as f:
        f.write("x,y\n1,2\n")
    trained = studio("run", f"--capture-once={data}:data", f"--capture={weights}:weights", "-e", "linreg",
                     TRAIN, "--steps", "10", home=home)
    assert trained.returncode == 0, trained.stderr
    with open(os.path.join(weights, "weights.pkl"), "rb") as f:
        original = pickle.load(f)
    shutil.rmtree(weights)

    reused = studio("run", "--reuse=linreg/weights:w", PRINT_NORM, home=home)
    assert reused.returncode == 0, reused.stderr
    assert f"w={original['w']:.6f} b={original['b']:.6f}" in reused.stdout
    assert "step 10" in reused.stdout

    record = _last_record(home, "linreg")
    assert record["status"] == "finished" and record["exit_code"] == 0
    assert {"data", "weights", "workspace", "output", "modeldir", "tb"} <= set(record["artifacts"])
    assert record["artifacts"]["data"]["files"] == 1


def test_script_arguments_after_the_script_reach_it_untouched(home):
    script = write_script(home, "echo_args.py", "import sys; print(sys.argv[1:])\n")
    done = studio("run", "-e", "args", script, "--experiment", "x", "-c", "y", home=home)
    assert done.returncode == 0, done.stderr
    assert "['--experiment', 'x', '-c', 'y']" in done.stdout


def test_module_mode_runs_python_dash_m(home):
    pkg = os.path.join(home, "pkg")
    os.makedirs(pkg)
    write_script(pkg, "__init__.py", "")
    write_script(pkg, "mod.py", "import sys, fs_tracker; print('mod', sys.argv[1:], fs_tracker.get_experiment_key())\n")
    done = studio("run", "-e", "modrun", "-m", "pkg.mod", "--lr", "1", home=home)
    assert done.returncode == 0, done.stderr
    assert "mod ['--lr', '1'] modrun" in done.stdout


def test_capture_once_keeps_the_start_state(home):
    data = os.path.join(home, "inputs")
    os.makedirs(data)
    with open(os.path.join(data, "a.txt"), "w") as f:
        f.write("before")
    script = write_script(home, "edit.py", f"open({os.path.join(data, 'a.txt')!r}, 'w').write('after')\n")
    assert studio("run", "-e", "once", f"--capture-once={data}:inputs", script, home=home).returncode == 0
    out = os.path.join(home, "restored")
    got = studio("get", "once/inputs", out, home=home)
    assert got.returncode == 0, got.stderr
    with open(os.path.join(out, "a.txt")) as f:
        assert f.read() == "before"


def test_failing_script_keeps_exit_code_and_final_capture(home):
    out = os.path.join(home, "out")
    script = write_script(home, "fail.py", f"""
import os
with open(os.path.join({out!r}, 'partial.txt'), 'w') as f:
    f.write('written before the crash')
raise SystemExit(3)
""")
    done = studio("run", "-e", "crash", f"--capture={out}:out", script, home=home)
    assert done.returncode == 3
    record = _last_record(home, "crash")
    assert record["status"] == "failed" and record["exit_code"] == 3
    restored = os.path.join(home, "restored")
    assert studio("get", "crash/out", restored, home=home).returncode == 0
    with open(os.path.join(restored, "partial.txt")) as f:
        assert f.read() == "written before the crash"


def _sigint_default() -> None:
    """A suite started in the background inherits SIGINT ignored, and so would the script; undo it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupt_keeps_the_final_capture(home):
    out = os.path.join(home, "out")
    script = write_script(home, "slow.py", f"""
import os, time
with open(os.path.join({out!r}, 'progress.txt'), 'w') as f:
    f.write('epoch 1 done')
print('ready', flush=True)
time.sleep(60)
""")
    proc = subprocess.Popen(
        [sys.executable, "-m", "studio_run", "run", "-e", "stopped", f"--capture={out}:out", script],
        cwd=home, env=studio_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_sigint_default,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err
    record = _last_record(home, "stopped")
    assert record["status"] == "interrupted"
    restored = os.path.join(home, "restored")
    assert studio("get", "stopped/out", restored, home=home).returncode == 0
    with open(os.path.join(restored, "progress.txt")) as f:
        assert f.read() == "epoch 1 done"


def test_rerunning_a_name_is_never_served_stale(home):
    out = os.path.join(home, "out")
    reader = write_script(home, "read.py", "import fs_tracker, os\n"
                          "print(open(os.path.join(fs_tracker.get_artifact('m'), 'v.txt')).read())\n")
    for value in ("first", "second"):
        writer = write_script(home, "write.py", f"open({os.path.join(out, 'v.txt')!r}, 'w').write({value!r})\n")
        assert studio("run", "-e", "model", f"--capture={out}:model", writer, home=home).returncode == 0
        done = studio("run", "--reuse=model/model:m", reader, home=home)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == value
    pinned = studio("run", "--reuse=model/model@1:m", reader, home=home)
    assert pinned.stdout.strip() == "first"


def test_reused_copy_is_read_only_and_a_spoiled_entry_is_refilled(home):
    out = os.path.join(home, "out")
    writer = write_script(home, "write.py", f"open({os.path.join(out, 'v.txt')!r}, 'w').write('clean')\n")
    assert studio("run", "-e", "src", f"--capture={out}:model", writer, home=home).returncode == 0
    spoil = write_script(home, "spoil.py", """
import fs_tracker, os
path = os.path.join(fs_tracker.get_artifact('m'), 'v.txt')
print(oct(os.stat(path).st_mode & 0o777))
os.chmod(path, 0o644)
open(path, 'w').write('spoiled')
""")
    first = studio("run", "--reuse=src/model:m", spoil, home=home)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "0o444"
    reader = write_script(home, "read.py", "import fs_tracker, os\n"
                          "print(open(os.path.join(fs_tracker.get_artifact('m'), 'v.txt')).read())\n")
    again = studio("run", "--reuse=src/model:m", reader, home=home)
    assert again.stdout.strip() == "clean"


def test_fs_tracker_paths_for_default_and_unknown_tags(home):
    script = write_script(home, "tags.py", """
import os, fs_tracker
from studio import fs_tracker as same
assert same is fs_tracker
arts = fs_tracker.get_artifacts()
print(sorted(arts))
print(os.path.isdir(fs_tracker.get_model_directory()), os.path.isdir(fs_tracker.get_tensorboard_dir()))
try:
    fs_tracker.get_artifact('nope')
except LookupError as exc:
    print('error:', exc)
""")
    done = studio("run", "-e", "tags", script, home=home)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "['modeldir', 'output', 'tb', 'workspace']"
    assert lines[1] == "True True"
    assert lines[2] == "error: this run has no artifact 'nope'; its tags are: modeldir, output, tb, workspace"


def test_output_artifact_holds_stdout_and_stderr(home):
    script = write_script(home, "talk.py", "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\n")
    done = studio("run", "-e", "talk", script, home=home)
    assert "to out" in done.stdout and "to err" in done.stderr
    dest = os.path.join(home, "o")
    assert studio("get", "talk/output", dest, home=home).returncode == 0
    with open(os.path.join(dest, "output.log")) as f:
        text = f.read()
    assert "to out" in text and "to err" in text


def test_workspace_honours_ignore_files_and_never_takes_git(home):
    work = os.path.join(home, "proj")
    os.makedirs(os.path.join(work, "data"))
    os.makedirs(os.path.join(work, ".git"))
    write_script(work, "train.py", "print('ok')\n")
    write_script(work, ".gitignore", "data/\n")
    write_script(work, ".studioignore", "*.log\n")
    write_script(work, "run.log", "noise")
    write_script(os.path.join(work, "data"), "big.bin", "x")
    write_script(os.path.join(work, ".git"), "HEAD", "ref")
    assert studio("run", "-e", "ws", "train.py", home=home, cwd=work).returncode == 0
    dest = os.path.join(home, "ws")
    assert studio("get", "ws/workspace", dest, home=home).returncode == 0
    assert sorted(os.listdir(dest)) == [".gitignore", ".studioignore", "train.py"]


def test_a_capture_flag_overrides_a_default_tag(home):
    mine = os.path.join(home, "mymodels")
    script = write_script(home, "m.py", "import fs_tracker; print(fs_tracker.get_model_directory())\n")
    done = studio("run", "-e", "over", f"--capture={mine}:modeldir", script, home=home)
    assert done.stdout.strip() == mine


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--capture=/tmp/x", "s.py"], "needs the form DIR:TAG"),
        (["run", "--capture-once=/does/not/exist:d", "s.py"], "does not exist"),
        (["run", "--reuse=noexp/x:y", "s.py"], "no experiment named 'noexp'"),
        (["run", "missing.py"], "script 'missing.py' not found"),
        (["run", "--capture=/tmp/x:bad/tag", "s.py"], "must be letters"),
        (["run", "-e", "bad/name", "s.py"], "invalid experiment name"),
        (["get", "nothing", "dest"], "needs the form EXPERIMENT/TAG"),
        (["run", "--nope", "s.py"], "No such option"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(home, args, message):
    write_script(home, "s.py", "print('ran')\n")
    done = studio(*args, home=home)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("studio: error:") and message in lines[0]
    assert "Traceback" not in done.stderr and "ran" not in done.stdout


def test_list_show_get_delete_and_cache_commands(home):
    out = os.path.join(home, "out")
    writer = write_script(home, "w.py", f"open({os.path.join(out, 'f.txt')!r}, 'w').write('v')\n")
    for _ in range(2):
        assert studio("run", "-e", "cmds", f"--capture={out}:model", writer, home=home).returncode == 0
    listed = studio("list", home=home)
    assert listed.returncode == 0 and listed.stdout.count("cmds") == 2
    shown = studio("show", "cmds", home=home)
    assert shown.returncode == 0 and "version 2" in shown.stdout and "model" in shown.stdout
    pinned = studio("show", "cmds@1", home=home)
    assert "version 1" in pinned.stdout
    reader = write_script(home, "r.py", "print('ok')\n")
    assert studio("run", "--reuse=cmds/model:m", reader, home=home).returncode == 0
    info = studio("cache", "info", home=home)
    assert "1 entries" in info.stdout
    assert studio("cache", "clean", home=home).returncode == 0
    assert "0 entries" in studio("cache", "info", home=home).stdout
    assert studio("delete", "cmds", home=home).returncode == 0
    assert studio("show", "cmds", home=home).returncode == 2
    swept = studio("gc", "--grace", "1ms", home=home)
    assert swept.returncode == 0 and "removed" in swept.stderr


def test_status_is_recorded_while_running(home):
    flag = os.path.join(home, "go")
    script = write_script(home, "wait.py", f"""
import os, time
print('started', flush=True)
while not os.path.exists({flag!r}):
    time.sleep(0.05)
""")
    proc = subprocess.Popen([sys.executable, "-m", "studio_run", "run", "-e", "live", script], cwd=home,
                            env=studio_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    assert _last_record(home, "live")["status"] == "running"
    open(flag, "w").close()
    proc.communicate(timeout=60)
    assert _last_record(home, "live")["status"] == "finished"


def test_periodic_capture_records_intermediate_snapshots(home):
    out = os.path.join(home, "out")
    script = write_script(home, "steps.py", f"""
import os, time
for i in range(6):
    open(os.path.join({out!r}, 'step.txt'), 'w').write(str(i))
    time.sleep(0.3)
""")
    done = studio("run", "-e", "periodic", "--capture-interval", "0.2s", f"--capture={out}:out", script, home=home)
    assert done.returncode == 0, done.stderr
    record = _last_record(home, "periodic")
    assert record["artifacts"]["out"]["snapshots"] >= 3
    assert time.time() - record["ended_at"] < 120


def _object_bytes(home: str) -> int:
    root = os.path.join(home, ".studioml", "store", "objects")
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)


def test_identical_content_across_experiments_is_stored_once(home):
    a, b = os.path.join(home, "a"), os.path.join(home, "b")
    payload = os.urandom(1 << 20)
    for folder in (a, b):
        os.makedirs(folder)
        with open(os.path.join(folder, "weights.bin"), "wb") as f:
            f.write(payload)
    script = write_script(home, "noop.py", "")
    assert studio("run", "-e", "first", f"--capture-once={a}:w", script, home=home).returncode == 0
    before = _object_bytes(home)
    assert studio("run", "-e", "second", f"--capture-once={b}:w", script, home=home).returncode == 0
    after = _object_bytes(home)
    assert after - before < 4096  # only the second run's own small output/workspace objects, if any
    first = _last_record(home, "first")["artifacts"]["w"]["digest"]
    second = _last_record(home, "second")["artifacts"]["w"]["digest"]
    assert first == second


def test_workspace_never_holds_the_store_or_other_artifacts(home):
    out = os.path.join(home, "out")
    script = write_script(home, "noop.py", "")
    assert studio("run", "-e", "first", script, home=home).returncode == 0  # the store now lies in cwd
    assert studio("run", "-e", "self", f"--capture={out}:out", script, home=home).returncode == 0
    dest = os.path.join(home, "ws")
    assert studio("get", "self/workspace", dest, home=home).returncode == 0
    assert sorted(os.listdir(dest)) == ["noop.py"]


def test_credential_files_never_enter_a_snapshot(home):
    work = os.path.join(home, "proj")
    os.makedirs(os.path.join(work, ".aws"))
    write_script(work, "train.py", "print('ok')\n")
    write_script(work, ".env", "AWS_SECRET_ACCESS_KEY=topsecret\n")
    write_script(os.path.join(work, ".aws"), "credentials", "[default]\naws_secret_access_key=topsecret\n")
    out = os.path.join(home, "out")
    os.makedirs(out)
    write_script(out, "server.key", "-----BEGIN PRIVATE KEY-----\n")
    write_script(out, "model.txt", "weights")
    assert studio("run", "-e", "sec", f"--capture={out}:out", "train.py", home=home, cwd=work).returncode == 0
    for tag, expected in (("workspace", ["train.py"]), ("out", ["model.txt"])):
        dest = os.path.join(home, "restored-" + tag)
        assert studio("get", f"sec/{tag}", dest, home=home).returncode == 0
        assert sorted(os.listdir(dest)) == expected
    store = os.path.join(home, ".studioml", "store")
    for dirpath, _dirs, files in os.walk(store):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                assert b"topsecret" not in f.read()
