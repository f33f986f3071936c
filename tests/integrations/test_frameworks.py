"""Lightning and the Hugging Face Trainer under ``studio run``, and ``studio tb`` over their logs.

Real training on CPU (``train_both.py``: a linear Lightning model and a one-layer BERT built from
a config), on the local store and on S3 (moto). Importing torch, Lightning and transformers is
most of the cost, so each store gets two runs in all: a first one, and a second that reuses the
first one's ``files`` and resumes both trainers. The tests then read what those runs stored.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

import pytest
import yaml

from tests.conftest import FAKE_AWS_ENV
from tests.helpers import REPO, file_bytes, studio, studio_env
from tests.servers import free_port

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_both.py")
RUN_TIMEOUT = 900  # seconds: a busy CI machine imports torch, Lightning and transformers slowly


@dataclass
class Trained:
    """Two runs of ``train_both.py`` (``fw@1`` fresh, ``fw@2`` resumed from ``fw@1``'s files)."""

    kind: str
    home: str
    project: str
    env: dict = field(default_factory=dict)
    outputs: list = field(default_factory=list)

    def studio(self, *args: str) -> subprocess.CompletedProcess:
        return studio(*args, home=self.home, cwd=self.project, timeout=RUN_TIMEOUT, **self.env)

    def values(self, run: int) -> dict[str, str]:
        """The ``key=value`` lines run ``run`` (1 or 2) printed."""
        lines = self.outputs[run - 1].stdout.splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line and " " not in line)

    def get(self, ref: str, dest: str) -> str:
        done = self.studio("get", ref, dest)
        assert done.returncode == 0, done.stderr
        return dest


def _train(kind: str, factory, request) -> Trained:  # type: ignore[no-untyped-def]
    home = str(factory.mktemp(f"home-{kind}"))
    project = str(factory.mktemp(f"project-{kind}"))
    shutil.copy(SCRIPT, os.path.join(project, "train_both.py"))
    env: dict = {}
    if kind == "s3":
        server = request.getfixturevalue("s3_server")
        os.makedirs(os.path.join(home, ".studioml"))
        config = {"store": f"s3://studio-fw-{os.urandom(4).hex()}/runs", "store_options": {"endpoint": server.endpoint}}
        with open(os.path.join(home, ".studioml", "config.yaml"), "w") as f:
            yaml.safe_dump(config, f)
        env = dict(FAKE_AWS_ENV)
    trained = Trained(kind, home, project, env)
    for args in (["train_both.py"], ["--reuse", "fw/files:prev", "train_both.py", "resume"]):
        done = trained.studio("run", "-e", "fw", *args)
        assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        trained.outputs.append(done)
    return trained


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request):
    """``runs(kind)``: the two trained runs on that store, made once per module."""
    made: dict[str, Trained] = {}

    def get(kind: str) -> Trained:
        if kind not in made:
            made[kind] = _train(kind, tmp_path_factory, request)
        return made[kind]

    return get


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.servers)])
def trained(request, runs) -> Trained:
    return runs(request.param)


@pytest.mark.parametrize("run", [1, 2])
def test_every_checkpoint_lightning_kept_is_in_files_under_its_name(trained, tmp_path, run):
    files = file_bytes(trained.get(f"fw/files@{run}", str(tmp_path / "files")))
    modeldir = file_bytes(trained.get(f"fw/modeldir@{run}", str(tmp_path / "modeldir")))
    kept = {name: data for name, data in modeldir.items() if name.endswith(".ckpt")}
    last_epoch = 2 if run == 1 else 5
    # save_top_k=1: the older epochs were written, then removed by Lightning, and by studio too
    assert sorted(kept) == sorted(n for n in files if n.endswith(".ckpt")) == [
        f"epoch={last_epoch}-step={4 * (last_epoch + 1)}.ckpt", "last.ckpt"]
    for name, data in kept.items():
        assert files[name] == data, name
    assert files["latest"] == files["last.ckpt"]  # links, followed by `studio get`
    assert files["best"] == files[f"epoch={last_epoch}-step={4 * (last_epoch + 1)}.ckpt"]
    links = trained.studio("ls", f"fw/files@{run}", "--json")
    entries = {e["path"]: e for e in json.loads(links.stdout)}
    assert entries["latest"]["type"] == "link" and entries["best"]["type"] == "link"


@pytest.mark.parametrize("run", [1, 2])
def test_every_checkpoint_the_hf_trainer_kept_is_in_files_by_step_with_latest_and_final(trained, tmp_path, run):
    files = file_bytes(trained.get(f"fw/files@{run}", str(tmp_path / "files")))
    modeldir = file_bytes(trained.get(f"fw/modeldir@{run}", str(tmp_path / "modeldir")))
    last = 4 if run == 1 else 8
    # save_total_limit=1: only the newest checkpoint folder is left, in modeldir as in files
    folders = {name.split(os.sep)[1] for name in modeldir if name.startswith(f"hf{os.sep}checkpoint-")}
    assert folders == {f"checkpoint-{last}"}
    written = {name.split(os.sep, 2)[2]: data for name, data in modeldir.items()
               if name.startswith(f"hf{os.sep}checkpoint-{last}{os.sep}")}
    assert {"trainer_state.json", "model.safetensors", "optimizer.pt"} <= set(written)
    for prefix in (f"checkpoints/{last}", "checkpoints/latest"):
        uploaded = {name[len(prefix) + 1:]: data for name, data in files.items() if name.startswith(prefix + "/")}
        assert uploaded == written, prefix
    assert not [n for n in files if n.startswith("checkpoints/") and n.split("/")[1] not in (str(last), "latest")]
    state = json.loads(files["checkpoints/latest/trainer_state.json"])
    assert state["global_step"] == last
    assert {"config.json", "model.safetensors"} <= {n[len("final/"):] for n in files if n.startswith("final/")}


def test_a_second_run_reusing_the_files_resumes_both_trainers(trained):
    first, second = trained.values(1), trained.values(2)
    assert first["lightning_steps"] == first["lightning_steps_run"] == "12"
    assert first["transformers_steps"] == first["transformers_steps_run"] == "4"
    # resumed: the step count continues from the first run's checkpoints instead of starting over
    assert (second["lightning_steps"], second["lightning_steps_run"]) == ("24", "12")
    assert (second["transformers_steps"], second["transformers_steps_run"]) == ("8", "4")
    shown = trained.studio("show", "fw@2", "--json")
    assert "fw/files" in shown.stdout or '"files"' in shown.stdout


def _get_json(url: str):  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_studio_tb_serves_the_scalars_of_two_runs_and_stops_on_ctrl_c(runs):
    trained = runs("local")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "studio_run", "tb", "fw@1", "fw@2", "--port", str(port)],
        cwd=trained.project, env=studio_env(trained.home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    serving = threading.Event()

    def read_stderr() -> None:
        for line in process.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if "TensorBoard at" in line:
                serving.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}/data/plugin/scalars/tags"
    try:
        assert serving.wait(300), "".join(lines)
        assert f"TensorBoard at http://127.0.0.1:{port}/ showing fw@1, fw@2" in "".join(lines)
        tags: dict = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # TensorBoard loads event files in the background
            try:
                tags = _get_json(url)
            except (urllib.error.URLError, OSError, ValueError):
                tags = {}
            if len(tags) >= 2 and all("val_loss" in t for t in tags.values()):
                break
            time.sleep(0.5)
        assert {run.split("/")[0] for run in tags} == {"fw@1", "fw@2"}, tags
        for run, run_tags in tags.items():
            assert {"train_loss", "val_loss"} <= set(run_tags), run
            query = urllib.parse.urlencode({"run": run, "tag": "val_loss"})
            points = _get_json(f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?{query}")
            assert len(points) == 3  # one per epoch: run 1 logged epochs 0-2, run 2 (resumed) epochs 3-5
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(120)
        reader.join(30)
    assert process.returncode == 0, "".join(lines)
    assert "TensorBoard stopped" in "".join(lines)
    with pytest.raises((urllib.error.URLError, OSError)):
        urllib.request.urlopen(url, timeout=5)


def test_studio_tb_without_a_tb_artifact_or_run_says_so_in_one_line(runs):
    trained = runs("local")
    missing = trained.studio("tb", "nosuch")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "nosuch" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_studio_tb_without_tensorboard_names_the_extra(tmp_path):
    hidden = tmp_path / "no-tb"
    (hidden / "tensorboard").mkdir(parents=True)
    (hidden / "tensorboard" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    # find_spec would find the stand-in package: a meta path finder that answers None hides it instead
    (hidden / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'tensorboard' or name.startswith('tensorboard.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    home = str(tmp_path / "home")
    os.makedirs(home)
    done = studio("tb", "fw", home=home, PYTHONPATH=f"{hidden}{os.pathsep}{REPO}")
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == "studio: error: TensorBoard is not installed; run: pip install 'studio-run[tb]'"
