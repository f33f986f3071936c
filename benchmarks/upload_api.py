"""How long ``fs_tracker.upload_file`` blocks the training loop, and how long until files are durable.

Three ways to get N files of SIZE MiB from a training script into S3, all against one S3 server
(moto on 127.0.0.1 in its own process, started here and stopped by its PID):

- ``studio``: ``fs_tracker.upload_file`` per file, then ``fs_tracker.flush()``; durable means
  objects, manifest and the experiment's record are in the bucket.
- ``copy2``: what MosaicML Composer does: ``shutil.copy2`` into a temporary folder on the
  caller's thread, then background threads (4, like studio's workers) call boto3 ``upload_file``.
- ``boto3``: what a script without studio does: a synchronous boto3 ``upload_file`` per file.

Caller-blocking time is the sum of the time spent inside the per-file calls; time-to-durable
runs from the first call until every file is in the bucket. Ratios > 1 mean studio is faster.

Run: ``python benchmarks/upload_api.py [--files 1,100] [--size-mib 64] [--queue-size 2GiB]``
(needs ``pip install 'moto[s3]' flask flask-cors boto3``). 100 files of 64 MiB need about
7 GiB of free disk under ``$TMPDIR`` and as much memory for moto, which holds objects in RAM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MiB = 1 << 20
_MOTO = (
    "import sys, time\n"
    "from moto.server import ThreadedMotoServer\n"
    "s = ThreadedMotoServer(ip_address='127.0.0.1', port=int(sys.argv[1]), verbose=False)\n"
    "s.start()\n"
    "while True: time.sleep(3600)\n"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_moto() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", _MOTO, str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto server did not start: pip install 'moto[s3]' flask flask-cors")


def _reset(endpoint: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30).close()


def _warm_up(endpoint: str, tmp: str) -> None:
    """One small upload first, so that no contender pays for the server's first requests."""
    client = _client(endpoint)
    client.create_bucket(Bucket="bench-warm-up")
    path = os.path.join(tmp, "warm-up")
    with open(path, "wb") as f:
        f.write(os.urandom(16 * MiB))
    client.upload_file(path, "bench-warm-up", "warm-up")
    os.unlink(path)


def _make_files(folder: str, count: int, size: int) -> list[str]:
    block = os.urandom(MiB)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"ckpt-{i:03d}.pt")
        with open(path, "wb") as f:
            for j in range(size // MiB):  # distinct content per file and per MiB: no dedup shortcuts
                f.write(i.to_bytes(4, "little") + j.to_bytes(4, "little") + block[8:])
        paths.append(path)
    return paths


def _client(endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def run_studio(paths: list[str], endpoint: str, home: str, queue_size: str) -> tuple[float, float]:
    import fs_tracker
    from studio_run.uploads import api

    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, "config.yaml"), "w") as f:
        f.write(f"store: s3://bench-studio/store\nstore_options:\n  endpoint: {endpoint}\nupload_queue_size: {queue_size}\n")
    os.environ["STUDIOML_HOME"] = home
    fs_tracker.init(experiment="bench")
    blocked = 0.0
    started = time.perf_counter()
    for path in paths:
        t = time.perf_counter()
        fs_tracker.upload_file(f"checkpoints/{os.path.basename(path)}", path)
        blocked += time.perf_counter() - t
    fs_tracker.flush()
    durable = time.perf_counter() - started
    api.shutdown(report=False)
    return blocked, durable


def run_copy2(paths: list[str], endpoint: str, tmp: str) -> tuple[float, float]:
    client = _client(endpoint)
    client.create_bucket(Bucket="bench-copy2")
    handoff = tempfile.mkdtemp(dir=tmp, prefix="copy2-")
    pool = ThreadPoolExecutor(4)
    futures = []
    blocked = 0.0
    started = time.perf_counter()
    for path in paths:
        t = time.perf_counter()
        copy = os.path.join(handoff, os.path.basename(path))
        shutil.copy2(path, copy)
        futures.append(pool.submit(client.upload_file, copy, "bench-copy2", f"checkpoints/{os.path.basename(path)}"))
        blocked += time.perf_counter() - t
    for future in futures:
        future.result()
    durable = time.perf_counter() - started
    pool.shutdown()
    shutil.rmtree(handoff)
    return blocked, durable


def run_boto3(paths: list[str], endpoint: str) -> tuple[float, float]:
    client = _client(endpoint)
    client.create_bucket(Bucket="bench-boto3")
    started = time.perf_counter()
    for path in paths:
        client.upload_file(path, "bench-boto3", f"checkpoints/{os.path.basename(path)}")
    elapsed = time.perf_counter() - started
    return elapsed, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", default="1,100", help="comma-separated file counts (default 1,100)")
    parser.add_argument("--size-mib", type=int, default=64, help="size of each file in MiB (default 64)")
    parser.add_argument("--queue-size", default="2GiB", help="studio's upload_queue_size (default 2GiB)")
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_EC2_METADATA_DISABLED="true")
    proc, endpoint = _start_moto()
    tmp = tempfile.mkdtemp(prefix="studio-upload-bench-")
    try:
        for count in (int(c) for c in args.files.split(",")):
            folder = os.path.join(tmp, f"src-{count}")
            os.makedirs(folder)
            paths = _make_files(folder, count, args.size_mib * MiB)
            results: dict[str, tuple[float, float]] = {}
            runs: dict[str, Callable[[], tuple[float, float]]] = {
                "studio": lambda: run_studio(paths, endpoint, os.path.join(tmp, f"home-{count}"), args.queue_size),
                "copy2": lambda: run_copy2(paths, endpoint, tmp),
                "boto3": lambda: run_boto3(paths, endpoint),
            }
            for name, fn in runs.items():
                _reset(endpoint)
                _warm_up(endpoint, tmp)
                os.sync()  # every contender starts with no dirty pages left by the one before
                results[name] = fn()
            _reset(endpoint)
            shutil.rmtree(folder)
            print(f"\n{count} file(s) of {args.size_mib} MiB to S3 (moto on loopback)")
            print(f"{'approach':<8} {'caller-blocking':>16} {'time-to-durable':>16}")
            for name, (blocked, durable) in results.items():
                print(f"{name:<8} {blocked:>15.3f}s {durable:>15.3f}s")
            sb, sd = results["studio"]
            for name in ("copy2", "boto3"):
                b, d = results[name]
                print(f"{name}/studio ratio: caller-blocking {b / sb:.1f}x, time-to-durable {d / sd:.2f}x")
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
