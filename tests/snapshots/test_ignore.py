"""Gitignore semantics of the workspace rules, nested and .studioignore files, and the pruning walk."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess

import pytest

from studio_run.snapshots.ignore import IgnoreRules, walk_files

# (lines of an ignore file, path, is_dir, expected is_ignored)
CASES = [
    # plain names match at any depth, files and directories
    ("foo", "foo", False, True),
    ("foo", "a/b/foo", False, True),
    ("foo", "a/foo", True, True),
    ("foo", "foobar", False, False),
    ("foo", "a/foo/inside.txt", False, True),
    # blank lines and comments match nothing; escaped # and ! are literal
    ("\n   \n# foo", "foo", False, False),
    ("#foo", "#foo", False, False),
    ("\\#foo", "#foo", False, True),
    ("\\!foo", "!foo", False, True),
    ("\\!foo", "foo", False, False),
    # negation: the last matching line wins
    ("!foo", "foo", False, False),
    ("*.log\n!keep.log", "keep.log", False, False),
    ("*.log\n!keep.log", "a/keep.log", False, False),
    ("*.log\n!keep.log", "x.log", False, True),
    ("!keep.log\n*.log", "keep.log", False, True),
    # nothing re-includes a file whose parent directory is excluded
    ("build/\n!build/keep.txt", "build/keep.txt", False, True),
    ("build/*\n!build/keep.txt", "build/keep.txt", False, False),
    ("build/*\n!build/keep.txt", "build/other.txt", False, True),
    # trailing slash: directories only
    ("foo/", "foo", True, True),
    ("foo/", "foo", False, False),
    ("foo/", "a/foo", True, True),
    ("foo/", "foo/bar.txt", False, True),
    ("a/foo/", "a/foo", True, True),
    ("a/foo/", "a/foo", False, False),
    # a leading or middle slash anchors to the ignore file's folder
    ("/foo", "foo", False, True),
    ("/foo", "a/foo", False, False),
    ("a/foo", "a/foo", False, True),
    ("a/foo", "b/a/foo", False, False),
    # * and ? never cross a slash
    ("*.py", "a/b/c.py", False, True),
    ("a/*.py", "a/b.py", False, True),
    ("a/*.py", "a/b/c.py", False, False),
    ("fo?", "foo", False, True),
    ("fo?", "fo", False, False),
    ("fo?", "fooo", False, False),
    ("x/a?b", "x/a/b", False, False),
    # bracket classes
    ("[abc].txt", "b.txt", False, True),
    ("[abc].txt", "d.txt", False, False),
    ("[!abc].txt", "d.txt", False, True),
    ("[!abc].txt", "a.txt", False, False),
    ("[^abc].txt", "d.txt", False, True),
    ("[a-c]x", "bx", False, True),
    ("[a-c]x", "dx", False, False),
    ("[]]x", "]x", False, True),
    ("[[:digit:]]x", "5x", False, True),
    ("[[:digit:]]x", "ax", False, False),
    ("x/a[!b]c", "x/a/c", False, False),
    ("[[:alpha:][:digit:]]", "7", False, True),
    ("[[:nope:]]x", "nx", False, False),
    ("[a\\]]x", "]x", False, True),
    ("[a-]x", "-x", False, True),
    ("[\\-]x", "-x", False, True),
    ("x[!a]y", "x/y", True, False),
    # git's wildmatch: an unclosed class spoils the pattern; a reversed range keeps its start
    ("[abc", "[abc", False, False),
    ("[z-a]", "z", False, True),
    ("[z-a]", "a", False, False),
    # ** : leading, trailing, middle, and otherwise a plain star
    ("**/foo", "foo", False, True),
    ("**/foo", "a/b/foo", False, True),
    ("**/a/foo", "a/foo", False, True),
    ("**/a/foo", "x/y/a/foo", False, True),
    ("**/a/foo", "x/foo", False, False),
    ("abc/**", "abc/x", False, True),
    ("abc/**", "abc/x/y", False, True),
    ("abc/**", "abc", True, False),
    ("abc/**", "x/abc/y", False, False),
    ("a/**/b", "a/b", False, True),
    ("a/**/b", "a/x/b", False, True),
    ("a/**/b", "a/x/y/b", False, True),
    ("a/**/b", "ab", False, False),
    ("a/**/b", "x/a/b", False, False),
    ("foo**bar", "fooXbar", False, True),
    ("a/foo**bar", "a/foo/bar", False, False),
    # escapes and trailing spaces
    ("\\*", "*", False, True),
    ("\\*", "a", False, False),
    ("foo   ", "foo", False, True),
    ("foo\\ ", "foo ", False, True),
    ("foo\\ ", "foo", False, False),
    ("foo\r", "foo", False, True),
    ("foo\\", "foo", False, False),
]


@pytest.mark.parametrize(("lines", "path", "is_dir", "expected"), CASES)
def test_pattern(lines, path, is_dir, expected):
    rules = IgnoreRules.from_lines(lines.split("\n"))
    assert rules.is_ignored(path, is_dir) is expected


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_table_agrees_with_git(tmp_path):
    """The expectations above are git's own: each case gets a folder with its .gitignore."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    paths = []
    for i, (lines, path, is_dir, _) in enumerate(CASES):
        case = tmp_path / f"case{i}"
        _tree(case, {".gitignore": lines + "\n"})
        target = case / path
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
        else:
            _tree(case, {path: ""})
        paths.append(f"case{i}/{path}")
    out = subprocess.run(
        ["git", "-c", "core.quotepath=off", "check-ignore", "--no-index", "--stdin", "-z"],
        check=False, cwd=tmp_path, input="\0".join(paths).encode(), capture_output=True,
    ).stdout.decode()
    ignored_by_git = set(filter(None, out.split("\0")))
    assert {p: p in ignored_by_git for p in paths} == {
        p: case[3] for p, case in zip(paths, CASES)
    }


@pytest.mark.parametrize("path", [".git", ".git/config", "sub/.git", "sub/.git/HEAD"])
def test_git_folder_is_always_ignored(path):
    assert IgnoreRules.from_lines(["!.git", "!.git/**"]).is_ignored(path, path.endswith(".git"))


def _tree(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _walked(root, rules):
    return sorted(rel for rel, _ in walk_files(str(root), rules))


def test_nested_gitignore_applies_to_its_own_subtree(tmp_path):
    _tree(
        tmp_path,
        {
            ".gitignore": "*.log\n/top.txt\n",
            "sub/.gitignore": "!keep.log\nlocal.txt\n/anchored.txt\n",
            "a.log": "", "keep.log": "", "top.txt": "", "local.txt": "",
            "sub/x.log": "", "sub/keep.log": "", "sub/local.txt": "", "sub/top.txt": "",
            "sub/anchored.txt": "", "sub/deeper/local.txt": "", "sub/deeper/anchored.txt": "",
            "sub/deeper/keep.log": "",
        },
    )  # fmt: skip
    kept = [
        ".gitignore", "local.txt", "sub/.gitignore", "sub/deeper/anchored.txt",
        "sub/deeper/keep.log", "sub/keep.log", "sub/top.txt",
    ]  # fmt: skip
    rules = IgnoreRules.for_directory(str(tmp_path))
    assert _walked(tmp_path, rules) == kept
    for rel in ("a.log", "keep.log", "sub/x.log", "sub/local.txt", "sub/deeper/local.txt"):
        assert rules.is_ignored(rel, False)
    assert not IgnoreRules.for_directory(str(tmp_path)).is_ignored("sub/keep.log", False)


def test_studioignore_excludes_more_and_re_includes_over_every_gitignore(tmp_path):
    _tree(
        tmp_path,
        {
            ".gitignore": "data/\n*.ckpt\n",
            "sub/.gitignore": "model.bin\n",
            ".studioignore": "!data/\n!best.ckpt\nnotes/\n!model.bin\n",
            "data/x.csv": "", "a.ckpt": "", "best.ckpt": "", "notes/n.md": "",
            "sub/model.bin": "", "train.py": "",
        },
    )  # fmt: skip
    rules = IgnoreRules.for_directory(str(tmp_path))
    assert _walked(tmp_path, rules) == [
        ".gitignore", ".studioignore", "best.ckpt", "data/x.csv", "sub/.gitignore",
        "sub/model.bin", "train.py",
    ]  # fmt: skip


def test_walk_never_lists_an_ignored_directory(tmp_path, monkeypatch):
    _tree(
        tmp_path,
        {
            ".gitignore": "data/\n",
            "data/.gitignore": "!*\n",  # must never be read: git ignores it too
            "data/a/b.bin": "", "data/c.bin": "", "src/m.py": "",
        },
    )  # fmt: skip
    scanned = []
    real_scandir = os.scandir

    def counting_scandir(path):
        scanned.append(os.path.relpath(path, tmp_path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counting_scandir)
    rules = IgnoreRules.for_directory(str(tmp_path))
    assert _walked(tmp_path, rules) == [".gitignore", "src/m.py"]
    assert sorted(scanned) == [".", "src"]


def test_walk_yields_lstat_of_files_and_symlinks_only(tmp_path):
    _tree(tmp_path, {"b.txt": "hello", "dir/c.txt": "x", "dir/sub/d.txt": "", "a.txt": ""})
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to("dir")
    (tmp_path / "dangling").symlink_to("nowhere")
    os.mkfifo(tmp_path / "fifo")
    walked = dict(walk_files(str(tmp_path), None))
    # files by name first, then each subdirectory in name order; empty dirs produce nothing
    assert list(walked) == ["a.txt", "b.txt", "dangling", "link", "dir/c.txt", "dir/sub/d.txt"]
    assert walked["b.txt"].st_size == 5
    assert stat.S_ISLNK(walked["link"].st_mode)
    assert stat.S_ISLNK(walked["dangling"].st_mode)
    assert walked["link"].st_ino == os.lstat(tmp_path / "link").st_ino


def test_walk_skips_git_even_without_rules(tmp_path):
    _tree(tmp_path, {".git/HEAD": "ref", "sub/.git": "gitdir: ../.git/modules/sub", "x": ""})
    assert _walked(tmp_path, None) == ["x"]
    assert _walked(tmp_path, IgnoreRules.from_lines([])) == ["x"]


def test_dir_only_rule_does_not_match_a_symlink_to_a_directory(tmp_path):
    _tree(tmp_path, {"real/f": ""})
    (tmp_path / "out").symlink_to("real")
    rules = IgnoreRules.from_lines(["out/"])
    assert _walked(tmp_path, rules) == ["out", "real/f"]


def test_unreadable_subdirectory_is_logged_and_skipped(tmp_path, monkeypatch, caplog):
    _tree(tmp_path, {"ok/a": "", "locked/b": ""})
    real_scandir = os.scandir

    def refusing_scandir(path):
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refusing_scandir)
    with caplog.at_level(logging.WARNING, logger="studio_run.snapshots.ignore"):
        assert _walked(tmp_path, None) == ["ok/a"]
    assert "locked" in caplog.text


def test_unreadable_root_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(walk_files(str(tmp_path / "missing"), None))
