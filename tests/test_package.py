"""Package hygiene: sorted, complete ``__all__``; light imports for scripts and ``--help``."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import studio_run
from tests.helpers import REPO


def _modules():
    yield importlib.import_module("fs_tracker")
    for info in pkgutil.walk_packages(studio_run.__path__, "studio_run."):
        if info.name.endswith("__main__"):
            continue
        try:
            yield importlib.import_module(info.name)
        except ImportError:  # optional SDK missing: that backend's own tests say so
            continue


def test_every_module_has_a_docstring_and_a_sorted_all():
    for module in _modules():
        assert module.__doc__, module.__name__
        names = getattr(module, "__all__", None)
        assert names is not None, f"{module.__name__} has no __all__"
        assert list(names) == sorted(names), f"{module.__name__}.__all__ is not sorted"
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"


def _imported_after(statement: str) -> set:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return set(out.stdout.split())


def test_importing_fs_tracker_pulls_in_no_heavy_module():
    loaded = _imported_after("import fs_tracker; from studio import fs_tracker as f")
    heavy = {"boto3", "botocore", "click", "rich", "google", "paramiko", "yaml", "redis", "blake3"}
    assert not heavy & {m.split(".")[0] for m in loaded}


def test_studio_help_imports_no_cloud_sdk():
    loaded = _imported_after("from studio_run.cli.main import cli; cli(['--help'], standalone_mode=False)")
    assert not {"boto3", "botocore", "google", "paramiko", "rich", "redis"} & {m.split(".")[0] for m in loaded}


def test_studio_run_imports_neither_other_commands_nor_the_http_stack():
    """``studio run`` loads only its own command's module, and the HTTP client only when a URL is fetched."""
    loaded = _imported_after("import click; from studio_run.cli.main import cli; "
                             "cli.get_command(click.Context(cli), 'run'); import studio_run.runner.execute")
    assert "studio_run.cli.run" in loaded and "studio_run.runner.execute" in loaded
    assert not {"studio_run.cli.browse", "studio_run.cli.queue", "studio_run.cli.ui", "studio_run.cli.records",
                "studio_run.snapshots.url_sources", "http.client", "urllib.request"} & loaded
