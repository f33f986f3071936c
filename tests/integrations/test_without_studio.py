"""The integrations cost nothing to import and leave a script runnable without ``studio run``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

FRAMEWORKS = ("torch", "lightning", "pytorch_lightning", "transformers", "tensorboard")


def test_importing_the_integrations_imports_no_framework():
    code = ("import sys, fs_tracker; import studio_run.integrations.lightning, studio_run.integrations.transformers, "
            "studio_run.integrations.tensorboard, studio_run.cli.main; print('\\n'.join(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert not {m.split(".")[0] for m in out.stdout.split()} & set(FRAMEWORKS)


@pytest.fixture
def outside_studio(monkeypatch, tmp_path):
    """No hand-off, no STUDIO_* variables: a script started with plain ``python``."""
    for name in list(os.environ):
        if name.startswith("STUDIO"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("STUDIOML_HOME", str(tmp_path / "studioml"))
    yield
    from studio_run.uploads import api

    api.shutdown(5, report=False)


def test_lightning_checkpoints_stay_on_disk_with_one_warning_outside_studio(outside_studio, tmp_path):
    from studio_run.integrations.lightning import StudioCheckpointIO

    io = StudioCheckpointIO()
    with pytest.warns(UserWarning, match="checkpoints stay on disk only.*studio run"):
        io.save_checkpoint({"step": 1}, str(tmp_path / "a.ckpt"))
    io.save_checkpoint({"step": 2}, str(tmp_path / "b.ckpt"))  # no second warning, no error
    io.remove_checkpoint(str(tmp_path / "a.ckpt"))
    assert not (tmp_path / "a.ckpt").exists()
    assert io.load_checkpoint(str(tmp_path / "b.ckpt"))["step"] == 2
    assert io.name_of(str(tmp_path / "b.ckpt")) == "b.ckpt"
