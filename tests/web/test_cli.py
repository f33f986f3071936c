"""``studio ui`` as a command: one line and an exit code when it cannot serve, and nothing of the
web stack loaded by ``studio --help``."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.helpers import REPO, studio, studio_env


def test_without_the_ui_extra_it_says_which_pip_line_to_run(tmp_path) -> None:
    code = ("import sys; sys.modules['uvicorn'] = None; from studio_run.cli.main import main; "
            "main(['ui', '--port', '0'])")
    proc = subprocess.run([sys.executable, "-c", code], env=studio_env(str(tmp_path)), cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == ("studio: error: studio ui needs uvicorn (the [ui] extra); "
                           "run: pip install 'studio-run[ui]'\n")
    assert proc.stdout == ""


def test_a_taken_port_is_one_line_and_exit_2(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = studio("ui", "--port", str(port), home=str(tmp_path), timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"studio: error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in proc.stderr


def test_studio_help_and_ui_help_load_no_web_library() -> None:
    for argv in (["--help"], ["ui", "--help"]):
        code = (f"import sys; from studio_run.cli.main import cli; cli({argv!r}, standalone_mode=False); "
                "print('\\n'.join(sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
        loaded = {m.split(".")[0] for m in out.stdout.split()}
        assert not {"starlette", "uvicorn", "jinja2", "fastapi"} & loaded, argv
        if argv == ["ui", "--help"]:
            assert "--host" in out.stdout and "sign-in token" in out.stdout


def test_the_page_benchmark_runs_end_to_end(tmp_path) -> None:
    """benchmarks/ui_page_bench.py on a small store: exit 0 and every row in its table (not the times)."""
    out = tmp_path / "ui_page.md"
    proc = subprocess.run([sys.executable, "benchmarks/ui_page_bench.py", "--runs", "120", "--reps", "1",
                           "--workdir", str(tmp_path), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = out.read_text()
    assert "| first page after start, no index yet (first start on the store) |" in table
    assert table.count("| warm: ") == 6
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("studio-uipage-")]
