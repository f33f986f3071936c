"""Bad input, found by trying studio as a hostile user would (issue 9): each gives one line on
stderr, exit 2 (usage) or 1, no traceback, and leaves what is stored untouched."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.helpers import file_bytes, studio, write_script


def _one_error(done, code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("studio: error: "), done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A HOME whose store holds two experiments: ``good`` (2 runs) and ``other`` (1 run)."""
    home = str(tmp_path_factory.mktemp("seed") / "home")
    os.makedirs(home)
    out = os.path.join(home, "out")
    script = write_script(home, "w.py", f"import os; os.makedirs({out!r}, exist_ok=True)\n"
                                        f"open(os.path.join({out!r}, 'f.txt'), 'w').write('v')\n")
    for name in ("good", "good", "other"):
        done = studio("run", "-e", name, f"--capture={out}:model", script, "--api-key", "s3cr3t", home=home)
        assert done.returncode == 0, done.stderr
    return home


@pytest.fixture
def home(seeded, tmp_path):
    """A private copy of the seeded HOME, so a test may damage it."""
    copy = str(tmp_path / "home")
    shutil.copytree(seeded, copy, symlinks=True)
    return copy


def _store(home: str) -> str:
    return os.path.join(home, ".studioml", "store")


def _records(home: str, experiment: str) -> list[str]:
    folder = os.path.join(_store(home), "experiments", experiment)
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if n.endswith(".json") and not n.endswith(".env.json"))


def _rewrite(path: str, change) -> None:
    with open(path) as f:
        data = json.load(f)
    change(data)
    with open(path, "w") as f:
        json.dump(data, f)


DAMAGE = {
    "garbled": lambda p: open(p, "w").write("{not json"),
    "empty": lambda p: open(p, "w").close(),
    "a list": lambda p: open(p, "w").write("[1, 2]"),
    "bytes": lambda p: open(p, "wb").write(b"\xff\xfe\x00"),
    "artifacts typed wrong": lambda p: _rewrite(p, lambda d: d.update(artifacts=[1])),
    "status typed wrong": lambda p: _rewrite(p, lambda d: d.update(status={"x": 1})),
    "bad digest": lambda p: _rewrite(p, lambda d: d["artifacts"]["model"].update(digest="../../etc/passwd")),
    "another run's": lambda p: _rewrite(p, lambda d: d.update(run_id="20200101T000000Z-abcdef")),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_record_is_skipped_by_list_and_named(home, damage):
    newest = _records(home, "good")[-1]
    DAMAGE[damage](newest)
    listed = studio("list", home=home)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("good") == 1 and "other" in listed.stdout
    assert "Traceback" not in listed.stderr
    warning = [line for line in listed.stderr.splitlines() if "damaged" in line]
    assert len(warning) == 1 and os.path.basename(newest) in warning[0]


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_record_gives_one_line_to_show_get_and_gc(home, damage):
    DAMAGE[damage](_records(home, "good")[-1])
    before = file_bytes(_store(home))
    for args in (["show", "good"], ["get", "good/model", os.path.join(home, "dest")]):
        line = _one_error(studio(*args, home=home), 1)
        assert "is damaged" in line, args
    # gc goes on when the damaged record still names its snapshots (it keeps them), and removes
    # nothing when it names none it can read (one line, exit 1)
    swept = studio("gc", "--grace", "1ms", home=home)
    assert "Traceback" not in swept.stderr and "is damaged" in swept.stderr, swept.stderr
    if swept.returncode == 0:
        assert "everything it may point at is kept" in swept.stderr
    else:
        assert swept.returncode == 1 and "gc removed nothing" in _one_error(swept, 1)
    assert file_bytes(_store(home)) == before  # gc removed nothing it could not account for
    assert not os.path.exists(os.path.join(home, "dest"))
    older = studio("show", "good@1", home=home)
    assert older.returncode == 0 and "version 1" in older.stdout, older.stderr
    assert "version 2" not in older.stdout and "damaged" in older.stderr  # its version list skips it


def test_a_garbled_environment_file_still_shows_the_record(home):
    env_file = _records(home, "good")[-1][:-5] + ".env.json"
    with open(env_file, "w") as f:
        f.write("garbage")
    shown = studio("show", "good", home=home)
    assert shown.returncode == 0 and "version 2" in shown.stdout
    assert "Traceback" not in shown.stderr and "damaged" in shown.stderr


@pytest.mark.parametrize("stray", ["experiments/README", "experiments/good/notes.txt",
                                   "experiments/good/sub/20261122T192448Z-1a2b3c.json", "experiments/good/.json",
                                   "experiments/good/x.env.json", "experiments/.hidden/a.json"])
def test_stray_files_in_the_records_folder_are_ignored(home, stray):
    path = os.path.join(_store(home), *stray.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("stray")
    listed = studio("list", home=home)
    assert listed.returncode == 0 and listed.stdout.count("good") == 2, listed.stderr
    assert studio("show", "good", home=home).returncode == 0
    assert studio("gc", "--grace", "1ms", "--dry-run", home=home).returncode == 0


@pytest.mark.parametrize("name", ["", "/", "..", ".", "good/..", "a b", "../good", "good/", "*", "-"])
def test_odd_experiment_names_never_match_anything(home, name):
    before = file_bytes(_store(home))
    for command in ("delete", "show"):
        line = _one_error(studio(command, "--", name, home=home), 2)
        assert "experiment name" in line
    assert file_bytes(_store(home)) == before


@pytest.mark.parametrize("limit", ["-5", "0", "x"])
def test_list_limit_must_be_positive(home, limit):
    line = _one_error(studio("list", "-n", limit, home=home), 2)
    assert "--limit" in line


def test_show_never_displays_a_secret_argument(home):
    shown = studio("show", "good", home=home)
    assert shown.returncode == 0 and "--api-key ***" in shown.stdout
    assert "s3cr3t" not in shown.stdout


def test_an_old_record_with_a_secret_is_redacted_on_display(home):
    _rewrite(_records(home, "other")[-1], lambda d: d.update(command=["x.py", "--token=abc123",
                                                                       "https://u:pw9@host/x"]))
    shown = studio("show", "other", home=home)
    assert shown.returncode == 0 and "--token=***" in shown.stdout
    assert "abc123" not in shown.stdout and "pw9" not in shown.stdout


@pytest.mark.parametrize("args", [["list"], ["show", "x"], ["get", "x/y", "d"], ["cache", "info"],
                                  ["gc", "--dry-run"], ["delete", "x"], ["sync"], ["ls", "x/y"], ["logs", "x"],
                                  ["list", "x"]])
def test_read_only_commands_create_no_store(tmp_path, args):
    home = str(tmp_path)
    done = studio(*args, home=home)
    assert done.returncode in (0, 2) and "Traceback" not in done.stderr
    assert not os.path.exists(os.path.join(home, ".studioml"))
    assert not os.path.exists(os.path.join(home, "d"))
