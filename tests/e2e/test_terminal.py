"""The first hour at a terminal (issue 11): `list`, `show` and `cache info` fit 80 columns
without wrapping a cell, piped output is tab-separated, `--json` is for scripts; and the small
commands users reach for: `list EXP`, `ls`, `logs [-f]`, `get EXP/TAG -`, and `-hp`."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import sys
import tarfile
import termios
import time

import pytest

from tests.helpers import studio, studio_env, write_script

LONG = "a-rather-long-experiment-name-for-an-80-column-terminal"


def in_terminal(*args: str, home: str, columns: int = 80) -> tuple[int, str, str]:
    """Run studio with stdout on a pseudo-terminal ``columns`` wide; returns (code, stdout, stderr)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in studio_env(home).items() if k not in ("COLUMNS", "LINES")}
    child = subprocess.Popen([sys.executable, "-m", "studio_run", *args], cwd=home, env=env, stdout=slave,
                             stderr=subprocess.PIPE)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    child.wait(timeout=120)
    os.close(master)
    err = child.stderr.read().decode() if child.stderr else ""
    return child.returncode, b"".join(chunks).decode().replace("\r\n", "\n"), err


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = str(tmp_path_factory.mktemp("term") / "home")
    os.makedirs(os.path.join(home, "data", "sub"))
    open(os.path.join(home, "data", "a.txt"), "w").write("alpha")
    open(os.path.join(home, "data", "sub", "b.txt"), "w").write("beta!")
    os.symlink("a.txt", os.path.join(home, "data", "link"))
    script = write_script(home, "talk.py", "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\n")
    for name in (LONG, "short", "short"):
        done = studio("run", "-e", name, f"--capture-once={home}/data:data", script, home=home)
        assert done.returncode == 0, done.stderr
    return home


def _fits(text: str, width: int = 80) -> list[str]:
    lines = text.rstrip("\n").split("\n")
    assert all(len(line) <= width for line in lines), [line for line in lines if len(line) > width]
    return lines


def test_list_fits_80_columns_one_line_per_run(home):
    code, out, err = in_terminal("list", home=home)
    assert code == 0, err
    lines = _fits(out)
    assert len(lines) == 2 + 3  # title, header, one line per run: no cell wrapped
    assert lines[1].split()[:3] == ["experiment", "version", "status"]
    assert lines[-1].startswith(LONG[:10]) and "finished" in lines[-1]


def test_show_and_cache_info_fit_80_columns(home):
    code, out, err = in_terminal("show", "short", home=home)
    assert code == 0, err
    lines = _fits(out)
    assert "short version 2" in lines[0] and any(line.startswith("data ") for line in lines)
    versions = lines[lines.index("versions") + 1:]
    assert len(versions) == 1 + 2
    code, out, err = in_terminal("cache", "info", home=home)
    assert code == 0 and "entries" in out
    _fits(out)


def test_wide_shows_every_column(home):
    code, out, _err = in_terminal("list", "--wide", home=home)
    assert code == 0 and LONG in out and "duration" in out and "exit" in out


def test_piped_output_is_tab_separated_and_json_is_for_scripts(home):
    piped = studio("list", home=home)
    assert piped.returncode == 0
    rows = [line.split("\t") for line in piped.stdout.strip().split("\n")]
    assert rows[0] == ["experiment", "version", "status", "exit", "started", "duration", "artifacts"]
    assert [r[0] for r in rows[1:]] == ["short", "short", LONG] and all(len(r) == 7 for r in rows)
    listed = json.loads(studio("list", "--json", home=home).stdout)
    assert [(r["experiment"], r["version"], r["status"]) for r in listed] == [
        ("short", 2, "finished"), ("short", 1, "finished"), (LONG, 1, "finished")]
    shown = json.loads(studio("show", "short@1", "--json", home=home).stdout)
    assert shown["run"]["version"] == 1 and len(shown["versions"]) == 2
    info = json.loads(studio("cache", "info", "--json", home=home).stdout)
    assert set(info) == {"path", "entries", "bytes", "unfinished_fills"}


def test_list_of_one_experiment(home):
    listed = studio("list", "short", home=home)
    assert listed.returncode == 0
    assert [line.split("\t")[:2] for line in listed.stdout.strip().split("\n")[1:]] == [["short", "2"], ["short", "1"]]
    assert studio("list", "short", "-n", "1", home=home).stdout.count("short") == 1
    missing = studio("list", "ghost", home=home)
    assert missing.returncode == 2 and "no experiment named 'ghost'" in missing.stderr


def test_ls_lists_an_artifacts_files(home):
    listed = studio("ls", "short/data@1", home=home)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.strip().split("\n")]
    assert rows[0] == ["type", "mode", "size", "path"]
    assert [r[3] for r in rows[1:]] == ["a.txt", "link -> a.txt", "sub/b.txt"]
    below = studio("ls", "short/data", "sub", home=home)
    assert [line.split("\t")[3] for line in below.stdout.strip().split("\n")[1:]] == ["sub/b.txt"]
    missing = studio("ls", "short/data", "nope", home=home)
    assert missing.returncode == 2 and "no file or folder 'nope'" in missing.stderr


def test_logs_prints_a_runs_output(home):
    shown = studio("logs", "short@1", home=home)
    assert shown.returncode == 0, shown.stderr
    assert "to stdout" in shown.stdout and "to stderr" in shown.stdout


def test_logs_follow_prints_until_the_run_ends(home, tmp_path):
    flag = str(tmp_path / "go")
    script = write_script(str(tmp_path), "slow.py", f"""
import os, time
print('before', flush=True)
while not os.path.exists({flag!r}):
    time.sleep(0.05)
print('after', flush=True)
""")
    run = subprocess.Popen([sys.executable, "-m", "studio_run", "run", "-e", "follow", script], cwd=home,
                           env=studio_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while studio("list", "follow", home=home).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    follower = subprocess.Popen([sys.executable, "-m", "studio_run", "logs", "-f", "follow"], cwd=home,
                                env=studio_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    open(flag, "w").close()
    assert run.wait(timeout=120) == 0
    out, err = follower.communicate(timeout=120)
    assert follower.returncode == 0, err
    assert "before" in out and "after" in out and out.index("before") < out.index("after")


def test_get_dash_writes_a_tar_stream(home):
    done = subprocess.run([sys.executable, "-m", "studio_run", "get", "short/data", "-"], cwd=home,
                          env=studio_env(home), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        names = sorted(tar.getnames())
        assert names == ["a.txt", "link", "sub", "sub/b.txt"]
        assert tar.extractfile("sub/b.txt").read() == b"beta!"
        assert tar.getmember("link").issym() and tar.getmember("link").linkname == "a.txt"
    code, _out, err = in_terminal("get", "short/data", "-", home=home)
    assert code == 2 and "stdout is a terminal" in err


def test_hp_is_an_option_and_a_bad_range_is_one_line(home):
    # -hp used to be refused with a pointer to the job queue; sweeps now run (tests/cli/test_run_control_cli.py)
    for flag in ("-hp", "--hyperparam"):
        done = studio("run", flag, "lr=0.5:0.1:0.1", "talk.py", home=home)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "never reaches its end" in lines[0] and "Traceback" not in done.stderr
