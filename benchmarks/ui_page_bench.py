"""The HTTP side of ``studio ui``: the Runs page of a store with 10,000 runs, as a browser gets it.

``studio ui --port 0`` is started as a subprocess over W8's store (``workloads.make_records``:
one finished run per experiment, ``--runs`` of them) and asked over loopback HTTP with
``http.client`` (the server's time plus one loopback round trip; no browser rendering):

- **first page after start, no index yet**: the very first ``studio ui`` on a store (the index
  file does not exist: the page waits for the newest records only);
- **first page after a restart**: the index file kept from the previous start;
- **warm pages**: the newest page, a deep page (offset 5,000), sorted by duration, filtered by
  experiment substring, filtered by status, and the htmx fragment of the table (median of
  ``--reps`` requests each).

Goals (issue 13): under 1 s for the first page after start, under 0.2 s for a page.
Run: ``python benchmarks/ui_page_bench.py [--quick] [--runs N] [--reps N] [--out FILE]``
(``--quick``: 1,250 runs). Writes a Markdown table to ``--out`` (default
``benchmarks/results/ui_page.md``) and prints it.
"""

from __future__ import annotations

import argparse
import http.client
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from workloads import make_records  # noqa: E402

FIRST_GOAL, WARM_GOAL = 1.0, 0.2


def _start(home: str, store: str) -> tuple[subprocess.Popen, int, float]:
    """``studio ui`` over ``store``; returns the process, its port and when it printed its address."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_", "STUDIO"))}
    env.update(HOME=home, STUDIOML_HOME=os.path.join(home, ".studioml"), PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "studio_run", "--store", store, "ui", "--port", "0"],
                            env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = b""
    deadline = time.monotonic() + 120
    while not line.endswith(b"\n"):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"studio ui did not start: {line!r}")
        if select.select([proc.stdout], [], [], 0.5)[0]:
            line += os.read(proc.stdout.fileno(), 4096)
    printed = time.perf_counter()
    port = int(line.decode().split(" at ", 1)[1].split()[0].rstrip("/").rsplit(":", 1)[1])
    return proc, port, printed


def _stop(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    if proc.stdout:
        proc.stdout.close()


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> float:
    """Seconds for one GET (new connection, as a browser's first request), body read; asserts 200."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    took = time.perf_counter() - start
    connection.close()
    assert response.status == 200 and b'class="run"' in body, (path, response.status)
    return took


def _first_page(home: str, store: str) -> tuple[float, float]:
    """(seconds for the first page, seconds from the printed address to its last byte)."""
    proc, port, printed = _start(home, store)
    try:
        took = _get(port, "/")
        return took, time.perf_counter() - printed
    finally:
        _stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,250 runs instead of 10,000")
    parser.add_argument("--runs", type=int, help="runs in the store (default 10,000)")
    parser.add_argument("--reps", type=int, default=20, help="requests per warm page")
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "ui_page.md"))
    args = parser.parse_args()
    runs = args.runs or (1250 if args.quick else 10_000)
    work = tempfile.mkdtemp(prefix="studio-uipage-", dir=args.workdir)
    try:
        store = os.path.join(work, "store")
        home = os.path.join(work, "home")
        os.makedirs(home)
        make_records(store, runs)
        rows = []
        cold, _ = _first_page(home, store)
        rows.append(("first page after start, no index yet (first start on the store)", cold, FIRST_GOAL))
        kept, _ = _first_page(home, store)
        rows.append(("first page after a restart (index kept)", kept, FIRST_GOAL))
        proc, port, _printed = _start(home, store)
        try:
            _get(port, "/")
            time.sleep(3)  # let the start's refresh finish: warm means an index in step with the store
            deep = f"/?page={runs // 100}"
            for label, path, headers in [
                ("warm: newest page", "/", None),
                (f"warm: deep page (offset {(runs // 100 - 1) * 50:,})", deep, None),
                ("warm: sorted by duration", "/?sort=duration", None),
                ("warm: experiment filter 'exp-001'", "/?experiment=exp-001", None),
                ("warm: status filter 'finished', page 3", "/?status=finished&page=3", None),
                ("warm: htmx fragment (paging)", "/?page=2", {"HX-Request": "true", "HX-Target": "runs"}),
            ]:
                times = [_get(port, path, headers) for _ in range(args.reps)]
                rows.append((label, statistics.median(times), WARM_GOAL))
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [f"# studio ui: Runs page over HTTP, {runs:,} runs (W8's store)", "",
             "Loopback HTTP with http.client, a new connection per request, body read; warm rows are the "
             f"median of {args.reps} requests. Machine: {os.cpu_count()} cores.", "",
             "| page | time | goal | met |", "|---|---|---|---|"]
    for label, took, goal in rows:
        lines.append(f"| {label} | {took * 1000:.0f} ms | < {goal:g} s | {'yes' if took < goal else 'NO'} |")
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
