"""Credential files stay out of snapshots: by name, by content, and when reached through a symlink."""

from __future__ import annotations

import json
import os

import pytest

from studio_run.objects.repository import Repository
from studio_run.snapshots.capture import snapshot
from studio_run.snapshots.ignore import IgnoreRules, is_credential_file, walk_files
from studio_run.snapshots.statcache import StatCache
from studio_run.storage.local import LocalStorage

KEY = {
    "type": "service_account",
    "project_id": "demo",
    "private_key_id": "0123",
    "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEv...\n-----END PRIVATE KEY-----\n",
    "client_email": "bot@demo.iam.gserviceaccount.com",
}


def _write(root, rel: str, text: str) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


@pytest.mark.parametrize("rules", [IgnoreRules.secrets_only(), IgnoreRules.for_workspace("/nonexistent")])
@pytest.mark.parametrize(
    "path, ignored",
    [("prod.env", True), ("conf/staging.env", True), (".env", True), (".env.example", False),
     ("secrets.yaml", True), ("deploy/secrets.json", True), ("credentials", True), ("a/credentials", True),
     ("my_secrets.yaml", False), ("environment.py", False), ("credentials.md", False)],
)
def test_credential_names_are_left_out(rules, path, ignored):
    assert rules.is_ignored(path, False) is ignored


def test_a_service_account_key_is_left_out_by_its_content(tmp_path):
    _write(tmp_path, "keys/deploy.json", json.dumps(KEY, indent=2))
    _write(tmp_path, "keys/compact.json", json.dumps(KEY, separators=(",", ":")))
    _write(tmp_path, "data/config.json", json.dumps({"type": "service_account", "note": "no key here"}))
    _write(tmp_path, "data/points.json", json.dumps({"points": [1, 2, 3]}))
    _write(tmp_path, "notes.txt", json.dumps(KEY))  # not a .json file: not opened
    walked = [rel for rel, _st in walk_files(str(tmp_path), IgnoreRules.secrets_only())]
    assert walked == ["notes.txt", "data/config.json", "data/points.json"]
    # rules from plain lines say nothing about content
    assert len(list(walk_files(str(tmp_path), IgnoreRules.from_lines([])))) == 5


def test_files_reached_through_a_symlink_are_checked_by_their_target(tmp_path):
    home = tmp_path / "home"
    _write(home, ".aws/credentials", "[default]\naws_secret_access_key = x\n")
    _write(home, ".ssh/id_ed25519", "PRIVATE")
    _write(home, "prod.env", "TOKEN=x")
    _write(home, "gcp/sa.json", json.dumps(KEY))
    _write(home, "fine.txt", "shareable")
    src = tmp_path / "src"
    src.mkdir()
    for name, target in [("aws", ".aws/credentials"), ("ssh", ".ssh/id_ed25519"), ("config", "prod.env"),
                         ("gcp.json", "gcp/sa.json"), ("fine", "fine.txt")]:
        os.symlink(str(home / target), src / name)
    repo = Repository(LocalStorage(str(tmp_path / "store")))
    result = snapshot(str(src), repo, StatCache(), ignore=IgnoreRules.secrets_only())
    assert [(e.path, e.type) for e in result.manifest.entries] == [("fine", "file")]
    assert result.skipped == ()
    assert is_credential_file(str(home / ".aws/credentials")) and not is_credential_file(str(home / "fine.txt"))
