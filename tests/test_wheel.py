"""The wheel ships the whole package: every folder is a package setuptools finds, nothing is data.

The editable install hides a folder without ``__init__.py`` (issue 8: ``studio_run.objects`` was left
out of the wheel and the first ``studio run`` died). This is the quick check at test time; CI also
builds the wheel and runs the hello-world from it on the oldest and newest Python (.ci/wheel_check.py).
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

import setuptools

from tests import helpers

REPO = Path(helpers.REPO)


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def _source_folders(top: str) -> set[str]:
    """Dotted names of the folders under ``top`` that hold Python files."""
    found = set()
    for folder, dirs, files in os.walk(REPO / top):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if any(name.endswith(".py") for name in files):
            found.add(os.path.relpath(folder, REPO).replace(os.sep, "."))
    return found


def test_every_folder_with_python_files_is_a_package_the_wheel_ships():
    include = _setup_cfg().get("options.packages.find", "include").split()
    shipped = set(setuptools.find_packages(where=str(REPO), include=include))
    expected = _source_folders("studio_run") | _source_folders("studio")
    assert expected - shipped == set(), "add an __init__.py to each (and a docstring with a sorted __all__)"


def test_the_package_reads_no_data_file_the_wheel_would_leave_out():
    # Only .py files are shipped (no package_data). A template, YAML or JSON file the code opens at
    # run time must be listed in setup.cfg's [options.package_data] before it can live here.
    data = [
        os.path.relpath(os.path.join(folder, name), REPO)
        for top in ("studio_run", "studio")
        for folder, dirs, files in os.walk(REPO / top)
        if "__pycache__" not in folder
        for name in files
        if not name.endswith((".py", ".pyc"))
    ]
    listed = _setup_cfg().has_section("options.package_data")
    assert listed or data == []


def test_the_console_script_and_top_level_module_are_declared():
    cfg = _setup_cfg()
    assert "studio = studio_run.cli.main:main" in cfg.get("options.entry_points", "console_scripts")
    assert cfg.get("options", "py_modules").split() == ["fs_tracker"]
