"""Host, package and git facts of a run, against real git repositories made in tmp_path."""

from __future__ import annotations

import getpass
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from importlib import metadata

import pytest

from studio_run.runner import environment
from studio_run.runner.environment import git_facts, host_facts, installed_packages

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None,
    reason="git is not installed",
)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repository on branch main with one commit of train.py; no user or system config."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{var}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{var}_EMAIL", "test@example.com")
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q", "-b", "main")
    (path / "train.py").write_text("print('hello')\n")
    _git(path, "add", "train.py")
    _git(path, "commit", "-q", "-m", "first")
    return path


def _git(path, *args):
    return subprocess.run(
        ["git", *args], cwd=path, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_clean_repository(repo):
    facts = git_facts(str(repo))
    assert facts == {
        "commit": _git(repo, "rev-parse", "HEAD"),
        "branch": "main",
        "dirty": False,
        "remote": None,
        "diff": "",
    }
    assert re.fullmatch(r"[0-9a-f]{40}", facts["commit"])


def test_modified_and_staged_changes_make_it_dirty_and_show_in_the_diff(repo):
    (repo / "train.py").write_text("print('hello')\nprint('unstaged')\n")
    (repo / "new.py").write_text("staged = True\n")
    _git(repo, "add", "new.py")
    facts = git_facts(str(repo))
    assert facts["dirty"] is True
    assert "+print('unstaged')" in facts["diff"]
    assert "+staged = True" in facts["diff"]


def test_untracked_files_do_not_make_it_dirty(repo):
    (repo / "scratch.txt").write_text("notes")
    assert git_facts(str(repo))["dirty"] is False


def test_path_in_a_subfolder_or_a_file_finds_the_repository(repo):
    (repo / "sub").mkdir()
    assert git_facts(str(repo / "sub"))["branch"] == "main"
    assert git_facts(str(repo / "train.py"))["branch"] == "main"


def test_non_ascii_file_names_are_not_quoted(repo):
    (repo / "données.py").write_text("x = 1\n")
    _git(repo, "add", "données.py")
    assert "données.py" in git_facts(str(repo))["diff"]


def test_detached_head_has_no_branch(repo):
    _git(repo, "checkout", "-q", "--detach")
    facts = git_facts(str(repo))
    assert facts["branch"] is None
    assert facts["commit"] == _git(repo, "rev-parse", "HEAD")


def test_repository_without_commits(tmp_path):
    _git(tmp_path, "init", "-q", "-b", "trunk")
    assert git_facts(str(tmp_path)) == {
        "commit": None, "branch": "trunk", "dirty": False, "remote": None, "diff": None
    }  # fmt: skip


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:pw@host/x.git", "https://user@host/x.git"),
        ("https://ghp_abcdefghij0123456789abcdefghij012345@github.com/o/x.git",
         "https://github.com/o/x.git"),
        ("https://x-access-token:ghs_secret@github.com/o/x.git",
         "https://x-access-token@github.com/o/x.git"),
        ("https://0123456789abcdef0123456789abcdef01234567@github.com/o/x",
         "https://github.com/o/x"),
        ("https://glpat-short@gitlab.com/o/x.git", "https://gitlab.com/o/x.git"),
        ("https://host/x.git?token=secret", "https://host/x.git"),
        ("git@github.com:o/x.git", "git@github.com:o/x.git"),
        ("ssh://git@host:2222/x.git", "ssh://git@host:2222/x.git"),
    ],
)  # fmt: skip
def test_remote_is_recorded_without_credentials(repo, url, expected):
    _git(repo, "remote", "add", "origin", url)
    assert git_facts(str(repo))["remote"] == expected


def test_origin_is_preferred_over_other_remotes(repo):
    _git(repo, "remote", "add", "aaa", "https://host/fork.git")
    _git(repo, "remote", "add", "origin", "https://host/main.git")
    assert git_facts(str(repo))["remote"] == "https://host/main.git"
    _git(repo, "remote", "remove", "origin")
    assert git_facts(str(repo))["remote"] == "https://host/fork.git"


def test_large_diff_is_truncated_with_a_marker(repo, monkeypatch):
    monkeypatch.setattr(environment, "_DIFF_LIMIT", 1000)
    (repo / "train.py").write_text("x = 1\n" * 2000)
    diff = git_facts(str(repo))["diff"]
    assert diff.endswith("\n[studio: diff truncated at 1000 bytes]\n")
    assert diff.startswith("diff --git a/train.py b/train.py")
    assert len(diff.encode()) == 1000 + len("\n[studio: diff truncated at 1000 bytes]\n")


def test_folder_outside_any_repository_gives_none(tmp_path):
    assert git_facts(str(tmp_path)) is None
    assert git_facts(str(tmp_path / "does-not-exist")) is None


def test_missing_git_gives_none(repo, monkeypatch, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert git_facts(str(repo)) is None


def test_hung_git_gives_none_within_the_timeout(repo, monkeypatch, tmp_path):
    bin_dir = tmp_path / "slow-bin"
    bin_dir.mkdir()
    fake = bin_dir / "git"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(environment, "_GIT_TIMEOUT", 0.2)
    start = time.monotonic()
    assert git_facts(str(repo)) is None
    assert time.monotonic() - start < 5


def test_host_facts():
    facts = host_facts()
    assert facts["host"] == socket.gethostname()
    assert facts["user"] == getpass.getuser()
    assert facts["python_version"] == platform.python_version()
    assert facts["python_executable"] == sys.executable
    assert facts["platform"] == platform.platform()


def test_user_is_none_when_the_account_has_no_name(monkeypatch):
    def no_user():
        raise KeyError("getpwuid(): uid not found: 12345")

    monkeypatch.setattr(getpass, "getuser", no_user)
    assert host_facts()["user"] is None


def test_installed_packages():
    packages = installed_packages()
    assert f"click=={metadata.version('click')}" in packages
    names = [p.split("==")[0].lower().replace("_", "-") for p in packages]
    assert names == sorted(names)
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[^=\s]+==\S+", p) for p in packages)


def test_installed_packages_are_listed_once_when_installed_twice(tmp_path, monkeypatch):
    for folder, version in (("first", "1.0"), ("second", "2.0")):
        info = tmp_path / folder / f"Dup_Pkg-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: Dup_Pkg\nVersion: {version}\n")
        monkeypatch.syspath_prepend(str(tmp_path / folder))
    # syspath_prepend puts "second" first: its version is the one that imports
    dup = [p for p in installed_packages() if p.lower().startswith("dup")]
    assert dup == ["Dup_Pkg==2.0"]
