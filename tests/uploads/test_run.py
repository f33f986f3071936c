"""``fs_tracker.upload_file`` end to end: ``studio run``, then ``studio show``/``get``/``--reuse``,
on the local store and on S3 (moto); and a script outside ``studio run`` using ``init``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import studio, studio_env, write_script

UPLOADER = '''
import os, sys, fs_tracker
os.makedirs("out", exist_ok=True)
with open("out/ep3.pt", "wb") as f:
    f.write(b"weights of epoch 3")
name = fs_tracker.upload_file("checkpoints/ep3.pt", "out/ep3.pt")
with open("out/ep3.pt", "wb") as f:          # overwritten right after the call
    f.write(b"SOMETHING ELSE")
with open("cfg.yaml", "w") as f:
    f.write("lr: 0.1\\n")
fs_tracker.upload_file("hparams.yaml", "cfg.yaml")
with open("cfg.yaml", "w") as f:
    f.write("lr: 0.2\\n")
fs_tracker.upload_file("hparams.yaml", "cfg.yaml", overwrite=True)
try:
    fs_tracker.upload_file("hparams.yaml", "cfg.yaml", overwrite=False)
except FileExistsError:
    print("overwrite=False refused")
fs_tracker.link("checkpoints/ep3.pt", "checkpoints/latest.pt")
fs_tracker.upload_file("by-rank/{experiment}-{rank}.txt", "cfg.yaml")
print("uploaded", name)
'''

READER = '''
import os, fs_tracker
root = fs_tracker.get_artifact("prev")
print("latest:", open(os.path.join(root, "checkpoints", "latest.pt"), "rb").read().decode())
print("hparams:", open(os.path.join(root, "hparams.yaml")).read().strip())
'''

FAILING = '''
import fs_tracker
from studio_run.errors import StorePermissionError, UploadError
from studio_run.uploads import Destination

class Refusing(Destination):
    label = "refusing"
    def upload_file(self, name, path):
        raise StorePermissionError("this bucket refuses " + name)

fs_tracker.init(STORE, EXPERIMENT, destinations=["store", Refusing()])
with open("a.txt", "w") as f:
    f.write("a")
fs_tracker.upload_file("a.txt", "a.txt")
try:
    fs_tracker.flush(30)
except UploadError as exc:
    print("flush raised:", sorted(exc.failures), type(exc.failures["a.txt"]).__name__)
fs_tracker.upload_file("b.txt", "a.txt")
print("script done")
'''


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path):
    """``(home, extra env)`` for a studio home on each backend; S3 is set in ``config.yaml``."""
    home = str(tmp_path / "home")
    os.makedirs(os.path.join(home, ".studioml"))
    if request.param == "local":
        yield home, {}
        return
    server = request.getfixturevalue("s3_server")
    with open(os.path.join(home, ".studioml", "config.yaml"), "w") as f:
        f.write(f"store: s3://studio-run-{os.urandom(4).hex()}/store\nstore_options:\n  endpoint: {server.endpoint}\n")
    yield home, {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    server.reset()


def test_uploaded_files_become_the_runs_files_artifact(backend):
    home, env = backend
    write_script(home, "train.py", UPLOADER)
    write_script(home, "read.py", READER)
    run = studio("run", "-e", "up", "train.py", home=home, **env)
    assert run.returncode == 0, run.stderr
    assert "overwrite=False refused" in run.stdout
    assert "uploaded checkpoints/ep3.pt" in run.stdout

    shown = studio("show", "up", home=home, **env)
    assert shown.returncode == 0, shown.stderr
    assert "files" in shown.stdout

    got = studio("get", "up/files/checkpoints/latest.pt", os.path.join(home, "latest.pt"), home=home, **env)
    assert got.returncode == 0, got.stderr
    with open(os.path.join(home, "latest.pt"), "rb") as f:
        assert f.read() == b"weights of epoch 3"  # the content at the call, through the link

    folder = os.path.join(home, "all")
    got = studio("get", "up/files", folder, home=home, **env)
    assert got.returncode == 0, got.stderr
    assert os.path.islink(os.path.join(folder, "checkpoints", "latest.pt"))
    assert os.readlink(os.path.join(folder, "checkpoints", "latest.pt")) == "ep3.pt"
    assert open(os.path.join(folder, "by-rank", "up-0.txt")).read() == "lr: 0.2\n"

    reused = studio("run", "--reuse", "up/files:prev", "read.py", home=home, **env)
    assert reused.returncode == 0, reused.stderr
    assert "latest: weights of epoch 3" in reused.stdout
    assert "hparams: lr: 0.2" in reused.stdout  # the latest call won


def test_a_failing_destination_makes_studio_run_exit_1_naming_the_files(backend):
    home, env = backend
    write_script(home, "train.py", FAILING.replace("STORE, EXPERIMENT", "None, None"))
    run = studio("run", "-e", "fails", "train.py", home=home, **env)
    assert "flush raised: ['a.txt'] StorePermissionError" in run.stdout, run.stderr
    assert "script done" in run.stdout
    assert run.returncode == 1
    assert "file not delivered: a.txt" in run.stderr and "this bucket refuses a.txt" in run.stderr
    assert "file not delivered: b.txt" in run.stderr
    # the store destination still delivered both: they are in the run's files artifact
    got = studio("get", "fails/files/b.txt", os.path.join(home, "b.txt"), home=home, **env)
    assert got.returncode == 0, got.stderr


def test_script_exit_code_is_kept_when_it_failed_itself(tmp_path):
    home = str(tmp_path)
    write_script(home, "train.py", FAILING.replace("STORE, EXPERIMENT", "None, None") + "\nraise SystemExit(3)\n")
    run = studio("run", "-e", "fails3", "train.py", home=home)
    assert run.returncode == 3
    assert "file not delivered: a.txt" in run.stderr


def test_outside_studio_run_init_records_the_files_and_failures_exit_1(backend):
    home, env = backend
    script = FAILING.replace("STORE, EXPERIMENT", "None, 'outside'")
    write_script(home, "alone.py", script)
    done = subprocess.run([sys.executable, "alone.py"], cwd=home, env=studio_env(home, **env),
                          capture_output=True, text=True, timeout=120)
    assert "script done" in done.stdout, done.stderr
    assert done.returncode == 1
    assert "file not delivered: a.txt" in done.stderr and "file not delivered: b.txt" in done.stderr
    got = studio("get", "outside/files/a.txt", os.path.join(home, "a.out"), home=home, **env)
    assert got.returncode == 0, got.stderr
    assert open(os.path.join(home, "a.out")).read() == "a"


def test_outside_studio_run_the_environment_is_enough(tmp_path):
    home = str(tmp_path)
    write_script(home, "alone.py", "import fs_tracker\nopen('x.txt','w').write('x')\n"
                                   "fs_tracker.upload_file('x.txt', 'x.txt')\n")
    done = subprocess.run([sys.executable, "alone.py"], cwd=home, capture_output=True, text=True, timeout=60,
                          env=studio_env(home, STUDIO_EXPERIMENT="from-env"))
    assert done.returncode == 0, done.stderr
    shown = studio("show", "from-env", home=home)
    assert shown.returncode == 0 and "files" in shown.stdout


def test_outside_studio_run_without_a_target_says_what_to_do(tmp_path):
    home = str(tmp_path)
    write_script(home, "alone.py", "import fs_tracker\nopen('x','w').write('x')\n"
                                   "try:\n    fs_tracker.upload_file('x', 'x')\n"
                                   "except fs_tracker.NotUnderStudio as exc:\n    print('refused:', exc)\n")
    done = subprocess.run([sys.executable, "alone.py"], cwd=home, capture_output=True, text=True, timeout=60,
                          env=studio_env(home))
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "fs_tracker.init" in done.stdout


def test_two_processes_of_one_run_are_merged(tmp_path):
    home = str(tmp_path)
    write_script(home, "worker.py", "import sys, fs_tracker\nopen('w.txt','w').write('rank ' + sys.argv[1])\n"
                                    "fs_tracker.upload_file('rank{rank}.txt', 'w.txt')\n"
                                    "fs_tracker.upload_file('shared.txt', 'w.txt')\n")
    write_script(home, "main.py", "import os, subprocess, sys\n"
                                  "for r in ('0', '1'):\n"
                                  "    subprocess.run([sys.executable, 'worker.py', r], check=True,\n"
                                  "                   env=dict(os.environ, RANK=r))\n")
    run = studio("run", "-e", "ranks", "main.py", home=home)
    assert run.returncode == 0, run.stderr
    got = studio("get", "ranks/files", os.path.join(home, "got"), home=home)
    assert got.returncode == 0, got.stderr
    files = sorted(os.listdir(os.path.join(home, "got")))
    assert files == ["rank0.txt", "rank1.txt", "shared.txt"]
    assert open(os.path.join(home, "got", "shared.txt")).read() == "rank 1"  # delivered last
