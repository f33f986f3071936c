"""Credential files never reach the store through ``studio run``, whatever their name or path."""

from __future__ import annotations

import json
import os

from tests.helpers import studio, write_script


def _stored_bytes(home: str) -> bytes:
    found = b""
    for d, _dirs, files in os.walk(os.path.join(home, ".studioml", "store")):
        for name in files:
            with open(os.path.join(d, name), "rb") as f:
                found += f.read()
    return found


def test_workspace_and_captures_leave_credentials_out(home):
    work, outside, outputs = (os.path.join(home, n) for n in ("work", "outside", "outputs"))
    for folder in (work, outside, outputs):
        os.makedirs(folder)
    secrets = {"prod.env": "TOKEN=env-secret-1", "secrets.yaml": "pw: yaml-secret-2", "credentials": "cred-secret-3",
               "sa.json": json.dumps({"type": "service_account", "private_key": "sa-secret-4"})}
    for name, text in secrets.items():
        write_script(work, name, text)
    write_script(outside, "id_rsa", "ssh-secret-5")
    os.symlink(os.path.join(outside, "id_rsa"), os.path.join(outputs, "innocent.txt"))
    write_script(outputs, "model.txt", "weights")
    script = write_script(work, "train.py", "print('ok')\n")
    ran = studio("run", "-e", "creds", f"--capture={outputs}:outputs", script, home=home, cwd=work)
    assert ran.returncode == 0, ran.stderr
    stored = _stored_bytes(home)
    assert b"print('ok')" in stored and b"weights" in stored
    for n in range(1, 6):
        assert b"secret-%d" % n not in stored
