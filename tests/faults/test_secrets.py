"""The secret scan: secrets handed to studio every way a user might (script arguments, a store URL
with a password, environment variables, the config file, credential files in the workspace and a
capture folder, one reached through a symlink) must never land in the store, the records, the
logs, the staging folder, the blob cache or the terminal output of ``run``, ``list`` and ``show``.

The script still receives its arguments; it prints none of them, so any occurrence found is
studio's doing.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml

from tests.helpers import studio, write_script

pytestmark = pytest.mark.servers

ARG_KEY = "argsecret-apikey-1b2c3d"
ARG_TOKEN = "argsecret-token-4e5f6a"
ARG_URL_PASSWORD = "argsecret-urlpass-7b8c9d"
ENV_TOKEN = "envsecret-token-0e1f2a"
CONFIG_SECRET = "cfgsecret-3b4c5d"
STORE_PASSWORD = "storepass-6e7f8a"
S3_URL_SECRET = "s3urlsecret-9b0c1d"
FILE_SECRETS = {
    ".env": "filesecret-dotenv-01",
    "prod.env": "filesecret-prodenv-02",
    "secrets.yaml": "filesecret-secretsyaml-03",
    "credentials": "filesecret-credentials-04",
    "private/credentials": "filesecret-linkedcreds-05",
}
SERVICE_ACCOUNT_SECRET = "filesecret-serviceaccount-06"
OUTSIDE_SECRET = "filesecret-outside-symlink-07"

ALL = [ARG_KEY, ARG_TOKEN, ARG_URL_PASSWORD, ENV_TOKEN, CONFIG_SECRET, STORE_PASSWORD, S3_URL_SECRET,
       SERVICE_ACCOUNT_SECRET, OUTSIDE_SECRET, *FILE_SECRETS.values()]

SCRIPT = """
import sys
args = sys.argv[1:]
assert "--api-key" in args and any(a.startswith("--token=") for a in args), args  # the script gets them
print("ok")
"""


def _credential_files(folder: str, outside: str) -> None:
    for rel, secret in FILE_SECRETS.items():
        path = os.path.join(folder, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(f"SECRET={secret}\n")
    with open(os.path.join(folder, "sa.json"), "w") as f:  # a Google service-account key, any file name
        json.dump({"type": "service_account", "project_id": "p", "private_key_id": "k",
                   "private_key": f"-----BEGIN PRIVATE KEY-----\n{SERVICE_ACCOUNT_SECRET}\n-----END PRIVATE KEY-----\n",
                   "client_email": "x@p.iam.gserviceaccount.com"}, f)
    os.symlink("private/credentials", os.path.join(folder, "settings.ini"))  # named innocently, a credential
    os.symlink(outside, os.path.join(folder, "notes.txt"))  # pointing outside, at a prod.env
    with open(os.path.join(folder, "train.cfg"), "w") as f:
        f.write("lr = 0.1\n")


def _scan(roots: list[str], outputs: dict[str, str]) -> list[str]:
    found = []
    needles = [s.encode() for s in ALL]
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(dirpath, name)
                for needle in needles:
                    if needle in os.fsencode(name):
                        found.append(f"{needle.decode()} in the name {path}")
                if name in files and not os.path.islink(path):
                    with open(path, "rb") as f:
                        data = f.read()
                    found += [f"{n.decode()} in {path}" for n in needles if n in data]
    for what, text in outputs.items():
        found += [f"{s} in the output of {what}" for s in ALL if s in text]
    return found


def test_no_secret_lands_in_the_store_records_logs_staging_or_output(tmp_path, sftp_server):
    home = str(tmp_path / "home")
    os.makedirs(os.path.join(home, ".studioml"))
    outside_dir = str(tmp_path / "elsewhere")
    os.makedirs(outside_dir)
    with open(os.path.join(outside_dir, "prod.env"), "w") as f:
        f.write(f"TOKEN={OUTSIDE_SECRET}\n")
    proj = os.path.join(home, "proj")
    os.makedirs(proj)
    _credential_files(proj, os.path.join(outside_dir, "prod.env"))
    extra = os.path.join(home, "extra")
    os.makedirs(extra)
    _credential_files(extra, os.path.join(outside_dir, "prod.env"))
    script = write_script(home, "train.py", SCRIPT)
    env = {"MY_SERVICE_TOKEN": ENV_TOKEN, "DATABASE_PASSWORD": ENV_TOKEN, "COLUMNS": "200"}
    args = [script, "--api-key", ARG_KEY, f"--token={ARG_TOKEN}", "--db", f"postgres://u:{ARG_URL_PASSWORD}@db/x"]
    outputs = {}

    local = studio("run", "-e", "sec", f"--capture-once={extra}:extra", "--capture", f"{extra}:live", *args,
                   home=home, cwd=proj, **env)
    outputs["run (local store)"] = local.stdout + local.stderr
    assert local.returncode == 0, local.stderr

    store_dir = str(tmp_path / "sftp-store")
    user_host = sftp_server.url(store_dir)[len("sftp://"):].split("@", 1)
    password_url = f"sftp://{user_host[0]}:{STORE_PASSWORD}@{user_host[1]}"
    options = {"store_options": sftp_server.options(), "upload_wait": "60s"}
    sftp_home = str(tmp_path / "sftp-home")
    os.makedirs(os.path.join(sftp_home, ".studioml"))
    with open(os.path.join(sftp_home, ".studioml", "config.yaml"), "w") as f:
        yaml.safe_dump({"store": password_url, **options}, f)
    remote = studio("run", "-e", "sec", *args, home=sftp_home, cwd=proj, **env)
    outputs["run (sftp store with a password)"] = remote.stdout + remote.stderr
    assert remote.returncode == 0, remote.stderr

    cfg_home = str(tmp_path / "cfg-home")
    os.makedirs(os.path.join(cfg_home, ".studioml"))
    with open(os.path.join(cfg_home, ".studioml", "config.yaml"), "w") as f:
        yaml.safe_dump({"storage": {"type": "local", "path": str(tmp_path / "cfg-store"),
                                    "credentials": {"secret_access_key": CONFIG_SECRET}}}, f)
    cfg = studio("run", "-e", "sec", *args, home=cfg_home, cwd=proj, **env)
    outputs["run (config with credentials)"] = cfg.stdout + cfg.stderr

    s3 = studio("--store", f"s3://AKIAFAKEKEY:{S3_URL_SECRET}@bucket/p", "list", home=home, **env)
    outputs["list (s3 URL with a key)"] = s3.stdout + s3.stderr
    assert s3.returncode != 0, "an S3 URL carrying a key is refused"

    for name, h in (("local", home), ("sftp", sftp_home), ("config", cfg_home)):
        for command in (["list"], ["show", "sec"]):
            done = studio(*command, home=h, **env)
            outputs[f"{' '.join(command)} ({name})"] = done.stdout + done.stderr

    found = _scan([os.path.join(home, ".studioml"), os.path.join(sftp_home, ".studioml"),
                   os.path.join(cfg_home, ".studioml"), store_dir, str(tmp_path / "cfg-store")], outputs)
    found = [f for f in found if not f.endswith("config.yaml")]  # the user's own config file holds what they wrote
    assert not found, "secrets found:\n" + "\n".join(sorted(set(found)))
