"""CI: the wheel a user installs runs, on the oldest and newest Python that ``python_requires`` admits.

The editable install of the README and the suite hides packaging mistakes (a package folder left out
of the wheel, a data file read at run time that is not shipped). So: build the wheel from a clean copy
of the checkout, check that it holds every module and data file of the package, install it into fresh
virtual environments outside the checkout (one per Python, in parallel) and run the hello-world there
(``helloworld/run.sh`` copied next to a throwaway HOME), asserting its outcome.

    python .ci/wheel_check.py            # exit 0: every check passed; 1: a check failed (reason printed)

Pythons are looked for in ``$PYENV_ROOT/versions`` (or ``~/.pyenv/versions``), as ``python3.N`` on
PATH, and the running interpreter. Dependencies come from the package index through pip's cache.
"""

from __future__ import annotations

import configparser
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

try:
    from packaging.specifiers import SpecifierSet
except ImportError:  # pip always carries it
    from pip._vendor.packaging.specifiers import SpecifierSet  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("studio_run", "studio")
MODULES = ("fs_tracker.py",)
# What the hello-world prints when the second run read the weights the first one captured.
EXPECTED = re.compile(r"^weights from step 10: w=\S+ b=\S+ norm=\S+$", re.MULTILINE)


class CheckFailed(Exception):
    """One check did not hold; the message says which and why."""


def _run(argv: list[str], *, log: Path, **kwargs) -> str:
    """Run ``argv``, appending its output to ``log``; raise CheckFailed with the tail if it fails."""
    started = time.monotonic()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kwargs)
    output = proc.stdout + proc.stderr
    with open(log, "a") as f:
        f.write(f"$ {' '.join(argv)}  # {time.monotonic() - started:.1f}s\n{output}\n")
    if proc.returncode != 0:
        noise = "WARNING: Location 'file:"  # this machine's extra indexes; not our failure
        tail = "\n".join(line for line in output.splitlines() if not line.startswith(noise))[-3000:]
        raise CheckFailed(f"{' '.join(argv)} exited {proc.returncode}:\n{tail}")
    return proc.stdout


def _source_files() -> list[str]:
    """Files of the checkout as git sees them (tracked, plus new files not ignored)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO, capture_output=True, check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise CheckFailed(f"cannot list the checkout's files with git: {exc}") from exc
    return sorted(name for name in out.split("\0") if name and (REPO / name).is_file())


def build_wheel(work: Path, log: Path) -> Path:
    """Build the wheel from a clean copy, so stale ``build/`` leftovers cannot hide a missing file."""
    src = work / "src"
    for name in _source_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    dist = work / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)], log=log)
    wheels = list(dist.glob("*.whl"))
    if len(wheels) != 1:
        raise CheckFailed(f"expected one wheel in {dist}, found {[w.name for w in wheels]}")
    return wheels[0]


def check_wheel_contents(wheel: Path) -> None:
    """Every module and every data file of the packages is in the wheel."""
    expected = {
        name for name in _source_files()
        if name in MODULES or (name.split("/")[0] in PACKAGES and "__pycache__" not in name)
    }
    with zipfile.ZipFile(wheel) as zf:
        shipped = set(zf.namelist())
    missing = sorted(expected - shipped)
    if missing:
        raise CheckFailed(f"{wheel.name} leaves out {len(missing)} file(s) of the package: {', '.join(missing[:20])}")


def _candidate_pythons() -> list[str]:
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(os.path.join(root, "versions", "*", "bin", "python3")))
    found += [path for n in range(6, 30) if (path := shutil.which(f"python3.{n}"))]
    return [*found, sys.executable]


def _python_requires() -> SpecifierSet:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return SpecifierSet(cfg.get("options", "python_requires", fallback=""))


def pick_pythons() -> dict[str, str]:
    """``{"3.9.18": path, ...}``: the oldest and newest interpreters ``python_requires`` admits."""
    spec = _python_requires()
    versions: dict[tuple[int, ...], str] = {}
    for path in _candidate_pythons():
        try:
            out = subprocess.run(
                [path, "-c", "import sys; print('.'.join(map(str, sys.version_info[:3])))"],
                capture_output=True, text=True, timeout=30, check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if out in spec:
            versions.setdefault(tuple(int(p) for p in out.split(".")), path)
    if not versions:
        raise CheckFailed(f"no Python on this machine satisfies python_requires {spec}")
    chosen = {min(versions), max(versions)}
    return {".".join(map(str, v)): versions[v] for v in sorted(chosen)}


def hello_world(version: str, python: str, wheel: Path, work: Path) -> str:
    """Install ``wheel`` into a fresh venv with ``python`` and run the hello-world outside the checkout."""
    base = work / f"py{version}"
    log = base / "log.txt"
    venv, home, hello = base / "venv", base / "home", base / "hello"
    home.mkdir(parents=True)
    _run([python, "-m", "venv", str(venv)], log=log)
    vpython = str(venv / "bin" / "python")
    # The venv's own pip (bootstrapped for that Python): an older pip driving a newer Python
    # through ``pip --python`` breaks (pkgutil.ImpImporter is gone from 3.12).
    _run([vpython, "-m", "pip", "install", "-q", str(wheel)], log=log)
    shutil.copytree(REPO / "helloworld", hello / "helloworld")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "STUDIO"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HOME=str(home), VIRTUAL_ENV=str(venv))
    where = _run([vpython, "-c", "import studio_run, fs_tracker; print(studio_run.__file__, fs_tracker.__file__)"],
                 log=log, cwd=hello, env=env)
    if any(not p.startswith(str(venv)) for p in where.split()):
        raise CheckFailed(f"Python {version}: studio was imported from outside the fresh venv: {where.strip()}")
    out = _run(["bash", str(hello / "helloworld" / "run.sh")], log=log, cwd=hello, env=env)
    if not EXPECTED.search(out):
        raise CheckFailed(f"Python {version}: the hello-world did not print the reused weights; output:\n{out[-2000:]}")
    return f"Python {version}: wheel installed in a fresh venv, hello-world ran ({python})"


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="studio-wheel-") as tmp:
        work = Path(tmp)
        try:
            wheel = build_wheel(work, work / "build.log")
            check_wheel_contents(wheel)
            print(f"wheel-check: built {wheel.name}; it holds every module of {', '.join(PACKAGES)} and {', '.join(MODULES)}")
            pythons = pick_pythons()
            with ThreadPoolExecutor(len(pythons)) as pool:
                jobs = [pool.submit(hello_world, v, p, wheel, work) for v, p in pythons.items()]
                failures = []
                for job in jobs:
                    try:
                        print(f"wheel-check: {job.result()}")
                    except CheckFailed as exc:
                        failures.append(str(exc))
            if failures:
                raise CheckFailed("\n".join(failures))
        except CheckFailed as exc:
            print(f"wheel-check: FAILED: {exc}", file=sys.stderr)
            return 1
    print(f"wheel-check: passed in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
