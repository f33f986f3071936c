"""The CLI in-process through click's CliRunner: wiring, messages and exit codes."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from studio_run.cli.main import cli, main


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIOML_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("STUDIO_STORE", raising=False)
    return tmp_path


def test_list_on_an_empty_store_says_how_to_start(env):
    result = CliRunner().invoke(cli, ["list"])
    assert result.exit_code == 0
    assert "no runs in file://" in result.output and "studio run SCRIPT" in result.output


def test_cache_info_on_a_fresh_machine(env):
    result = CliRunner().invoke(cli, ["cache", "info"])
    assert result.exit_code == 0 and "0 entries, 0 B" in result.output


def test_run_records_and_lists_in_process(env, monkeypatch):
    script = env / "hello.py"
    script.write_text("print('hi')\n")
    monkeypatch.chdir(env)
    result = CliRunner().invoke(cli, ["run", "-e", "inproc", "hello.py"])
    assert result.exit_code == 0, result.output
    listed = CliRunner().invoke(cli, ["list"])
    assert "inproc" in listed.output and "finished" in listed.output


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["show", "ghost"], 2, "no experiment named 'ghost'"),
        (["get", "ghost/tag", "x"], 2, "no experiment named 'ghost'"),
        (["delete", "ghost"], 2, "no experiment named 'ghost'"),
        (["--store", "ftp://host/x", "list"], 2, "unknown scheme 'ftp'"),
        (["gc", "--grace", "soon"], 2, "not a duration"),
        (["run", "--capture-interval", "0", "x.py"], 2, "not a duration"),
    ],
)
def test_main_turns_errors_into_one_line(env, capsys, monkeypatch, argv, code, message):
    (env / "x.py").write_text("")
    monkeypatch.chdir(env)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("studio: error:") and message in err[0]


def test_a_password_in_a_store_url_is_never_printed(env, capsys):
    with pytest.raises(SystemExit):
        main(["--store", "ftp://alice:hunter2@host/x", "list"])
    assert "hunter2" not in capsys.readouterr().err
