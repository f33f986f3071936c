"""``studio run --queue``: what is refused before anything is stored, and a broker that is down.

Fast checks with no worker: a store the workers cannot reach, a secret in the script's
arguments, a script outside the working folder, and a publish that fails (exit 1, one line,
no record and no queue entry left behind).
"""

from __future__ import annotations

import os

import pytest

from tests.helpers import studio, write_script
from tests.servers import free_port


@pytest.fixture
def project(tmp_path):
    home = str(tmp_path / "home")
    folder = os.path.join(home, "project")
    os.makedirs(folder)
    write_script(folder, "train.py", "print('hi')\n")
    return home, folder


def _store(home: str) -> str:
    return os.path.join(home, ".studioml", "store")


def test_a_local_store_with_a_remote_broker_is_refused_before_anything_is_stored(project) -> None:
    home, folder = project
    done = studio("run", "--queue", "gpu", "--broker", "redis://gpu-box.example:6379/0", "train.py",
                  home=home, cwd=folder)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "workers elsewhere could not read the inputs" in done.stderr
    assert "s3://" in done.stderr
    assert not os.path.exists(os.path.join(_store(home), "experiments"))


def test_a_secret_in_the_script_arguments_never_travels_in_a_job(project) -> None:
    home, folder = project
    done = studio("run", "--queue", "gpu", "train.py", "--api-key", "abc123", home=home, cwd=folder)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "never carries one" in done.stderr
    assert "abc123" not in done.stderr


def test_a_script_outside_the_working_folder_is_refused(project, tmp_path) -> None:
    home, folder = project
    outside = write_script(str(tmp_path), "elsewhere.py", "print('x')\n")
    done = studio("run", "--queue", "gpu", outside, home=home, cwd=folder)
    assert done.returncode == 2 and "outside the working folder" in done.stderr


def test_a_broker_that_is_down_fails_in_one_line_and_queues_nothing(project) -> None:
    home, folder = project
    broker = f"redis://127.0.0.1:{free_port()}/0"
    done = studio("run", "--queue", "gpu", "--broker", broker, "-e", "nobroker", "train.py", home=home, cwd=folder)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "not reachable" in done.stderr
    listed = studio("list", home=home)
    assert "nobroker" not in listed.stdout
    assert not os.path.exists(os.path.join(_store(home), "queue"))


def test_the_embedded_broker_queues_and_a_worker_runs_it_on_one_machine(project) -> None:
    """No broker configured: kombu's SQLite transport under the studio home, a local store."""
    import subprocess
    import sys

    from tests.helpers import studio_env
    from tests.queue.machines import TIMING, wait_for

    home, folder = project
    write_script(folder, "train.py", "import sys; print('embedded', sys.argv[1:])\n")
    queued = studio("run", "--queue", "local", "-e", "emb", "train.py", "--x", "1", home=home, cwd=folder)
    assert queued.returncode == 0, queued.stderr
    env = studio_env(home, STUDIO_WORKER_TIMING=TIMING)
    worker = subprocess.Popen([sys.executable, "-m", "studio_run", "worker", "--queue", "local"], cwd=home, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        def finished() -> bool:
            listed = studio("list", "emb", home=home)
            return "finished" in listed.stdout
        wait_for(finished, "the embedded broker's job to finish")
        logs = studio("logs", "emb", home=home)
        assert "embedded ['--x', '1']" in logs.stdout
        worker.terminate()
        assert worker.wait(60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_a_worker_given_store_and_config_flags_runs_its_jobs_in_that_store(project, tmp_path) -> None:
    """``studio --config FILE --store URL worker``: its runner processes use the same settings,
    not the home's default store (the record and output land where the worker was pointed)."""
    import subprocess
    import sys

    from tests.helpers import studio_env
    from tests.queue.machines import TIMING, wait_for

    home, folder = project
    elsewhere = str(tmp_path / "team-store")
    config = tmp_path / "worker.yaml"
    config.write_text("capture_interval: 7s\n")
    write_script(folder, "flagged.py", "print('ran in the flagged store')\n")
    queued = studio("--store", elsewhere, "run", "--queue", "flags", "-e", "flagged", "flagged.py",
                    home=home, cwd=folder)
    assert queued.returncode == 0, queued.stderr
    env = studio_env(home, STUDIO_WORKER_TIMING=TIMING)
    worker = subprocess.Popen([sys.executable, "-m", "studio_run", "--config", str(config), "--store", elsewhere,
                               "worker", "--queue", "flags"], cwd=home, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: "finished" in studio("--store", elsewhere, "list", "flagged", home=home).stdout,
                 "the job to finish in the store the worker was given")
        logs = studio("--store", elsewhere, "logs", "flagged", home=home)
        assert "ran in the flagged store" in logs.stdout
        assert not os.path.exists(os.path.join(_store(home), "experiments", "flagged"))
    finally:
        worker.kill()
        worker.wait()
