"""The data every contender is run on, made by the harness itself, the same for all of them.

Nothing is downloaded: folders are written from ``os.urandom`` (incompressible, like model
weights and shuffled shards) and from a seeded word generator (compressible text, like logs,
configs and CSVs), so any machine reproduces the same shape of data. ``Scale`` holds every size;
``--quick`` uses ``QUICK``: an eighth of the folder, a twentieth of the small files and of the
training time.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass

__all__ = [
    "FULL",
    "NOOP_SCRIPT",
    "QUICK",
    "Scale",
    "TRAIN_SCRIPT",
    "calibrate_work",
    "describe",
    "make_folder",
    "make_records",
    "make_small_files",
    "mutate",
    "write_script",
]

MiB = 1 << 20
KiB = 1 << 10
_CHUNK = 16 * MiB


@dataclass(frozen=True)
class Scale:
    """Sizes and counts of every workload; the goals in the issue are stated for ``FULL``."""

    big_files: int = 4
    big_size: int = 192 * MiB
    text_files: int = 5000
    text_min: int = 20 * KiB
    text_max: int = 60 * KiB
    change: int = 64 * MiB  # W2: bytes rewritten in one big file
    small_files: int = 20_000  # W4
    small_size: int = 4 * KiB
    ckpt_size: int = 64 * MiB  # W5
    ckpt_every: float = 2.0
    train_seconds: float = 60.0
    capture_interval: float = 5.0
    experiments: int = 10_000  # W8
    w9_sizes: tuple[int, ...] = (10_000, 100_000, 300_000)  # W9: small files per tree
    w9_reps: int = 3  # W9's phases take minutes at 300,000 files
    reps: int = 5
    noop_reps: int = 10  # W7 and W8 cost well under a second: more repetitions, same budget


FULL = Scale()
QUICK = Scale(
    big_size=24 * MiB, text_files=625, change=8 * MiB, small_files=1000, ckpt_size=8 * MiB,
    ckpt_every=0.5, train_seconds=3.0, capture_interval=1.25, experiments=1250, reps=3, noop_reps=3,
    w9_sizes=(1_000, 2_000, 4_000),
)

NOOP_SCRIPT = "# does nothing: measures what studio adds around a script\n"

# W5's training script: fixed CPU work on one core (like a GPU trainer's host thread), then a
# checkpoint of fresh content, every ``every`` seconds. It reports its own wall time.
TRAIN_SCRIPT = '''\
import json, os, sys, time

def work(n):
    x = 0
    for i in range(n):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x

def main():
    out, size, steps, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    for step in range(steps):
        work(n)
        weights = os.urandom(size)  # every weight changes between checkpoints: nothing to deduplicate
        with open(os.path.join(out, f"step-{step:03d}.pt"), "wb") as f:
            f.write(weights)
    seconds = time.perf_counter() - start
    report = os.environ.get("BENCH_REPORT")
    if report:
        with open(report, "w") as f:
            json.dump({"seconds": seconds}, f)
    print(f"{steps} checkpoints in {seconds:.2f} s")

if __name__ == "__main__":
    main()
'''


def write_script(folder: str, name: str, text: str) -> str:
    """Write a script into ``folder`` (created) and return its path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def make_folder(root: str, scale: Scale, seed: int = 1) -> int:
    """W1's folder: ``big_files`` random files and ``text_files`` text files in 50 folders; returns bytes."""
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    total = 0
    for i in range(scale.big_files):
        total += _write_random(os.path.join(root, f"weights-{i}.bin"), scale.big_size)
    corpus = _corpus(rng, 2 * scale.text_max)
    for i in range(scale.text_files):
        folder = os.path.join(root, "text", f"part-{i % 50:02d}")
        if i < 50:
            os.makedirs(folder, exist_ok=True)
        size = rng.randint(scale.text_min, scale.text_max)
        start = rng.randrange(len(corpus) - size)
        body = f"record {i} seed {seed}\n".encode() + corpus[start:start + size]
        with open(os.path.join(folder, f"doc-{i:05d}.txt"), "wb") as f:
            f.write(body[:size])
        total += size
    return total


def make_small_files(root: str, count: int, size: int) -> int:
    """W4's folder: ``count`` distinct files of ``size`` bytes, 1,000 to a folder; returns bytes."""
    for i in range(count):
        folder = os.path.join(root, f"shard-{i // 1000:03d}")
        if i % 1000 == 0:
            os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"item-{i:06d}.bin"), "wb") as f:
            f.write(os.urandom(size))
    return count * size


def mutate(paths: list[str], nbytes: int, rep: int) -> None:
    """W2's change: rewrite ``nbytes`` in the middle of one big file, the same bytes in every copy.

    The file keeps its size and inode, as when a training job updates a weights file in place.
    Each repetition changes another file (``rep`` picks it) with new random content.
    """
    payload = os.urandom(nbytes)
    for root in paths:
        names = sorted(n for n in os.listdir(root) if n.startswith("weights-"))
        path = os.path.join(root, names[rep % len(names)])
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.seek(max(0, (size - nbytes) // 2 - 12_345))  # off any power-of-two chunk boundary
            f.write(payload)


def calibrate_work(seconds: float) -> int:
    """Iterations of the training script's ``work`` that take about ``seconds`` here."""
    scope: dict[str, object] = {}
    exec(compile(TRAIN_SCRIPT, "train.py", "exec"), scope)
    work = scope["work"]
    n = 200_000
    while True:
        start = time.perf_counter()
        work(n)  # type: ignore[operator]
        took = time.perf_counter() - start
        if took > 0.2:
            return max(1, int(n * seconds / took))
        n *= 4


def make_records(store_root: str, experiments: int) -> None:
    """W8's store: one finished run (record and environment) for each of ``experiments`` experiments.

    Written with studio's own record classes, without fsync (setup, not measured), so the
    layout is exactly what ``studio run`` leaves behind.
    """
    from studio_run.storage.local import LocalStorage
    from studio_run.store.records import ArtifactRecord, RecordStore, RunRecord, new_run_id

    records = RecordStore(LocalStorage(store_root, fsync=False))
    now = time.time() - experiments
    env = {"host": {"python_version": "3.11"}, "packages": [f"pkg{i}==1.0" for i in range(150)], "git": None}
    for i in range(experiments):
        name = f"exp-{i:05d}"
        started = now + i
        run_id = new_run_id(started)
        arts = {
            tag: ArtifactRecord(tag, kind, digest=f"{i:060d}{n:04d}", size=1000 * n, files=n, snapshots=1,
                                updated_at=started + 5)
            for n, (tag, kind) in enumerate((("workspace", "workspace"), ("output", "output"),
                                             ("modeldir", "modeldir"), ("data", "capture-once")), 1)
        }
        record = RunRecord(name, run_id, status="finished", exit_code=0, started_at=started,
                           ended_at=started + 30, command=["studio", "run", "train.py"], script="train.py",
                           host="bench", user="bench", python="3.11", artifacts=arts)
        records.write(record)
        records.write_environment(name, run_id, env)


def _write_random(path: str, size: int) -> int:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(_CHUNK, left)
            f.write(os.urandom(n))
            left -= n
    return size


def _corpus(rng: random.Random, size: int) -> bytes:
    """Word-like text, compressible about 3:1 like real logs and CSVs."""
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
             for _ in range(4000)]
    out: list[str] = []
    length = 0
    while length < size:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(5, 15))) + f", {rng.random():.6f}\n"
        out.append(line)
        length += len(line)
    return "".join(out).encode()[:size]


def describe(scale: Scale) -> dict[str, str]:
    """What each workload runs on, in words, for the report."""
    folder = scale.big_files * scale.big_size + scale.text_files * (scale.text_min + scale.text_max) // 2
    w1 = (f"{scale.big_files} x {scale.big_size // MiB} MiB random files + {scale.text_files} text files of "
          f"{scale.text_min // KiB}-{scale.text_max // KiB} KiB in 50 folders (~{folder / (1 << 30):.2f} GiB)")
    return {
        "W1": f"Data: {w1}.",
        "W2": f"Data: W1's folder; before each repetition {scale.change // MiB} MiB of new random bytes are "
              f"written in place near the middle of one {scale.big_size // MiB} MiB file, at an offset that is "
              "no multiple of a power of two (size and inode kept).",
        "W3": "Data: W1's folder, already captured once, unchanged.",
        "W4": f"Data: {scale.small_files} files of {scale.small_size // KiB} KiB in folders of 1,000, to moto's "
              "S3 server on 127.0.0.1 (started by the harness, emptied before each repetition).",
        "W5": f"A script doing {scale.train_seconds:g} s of single-core work, writing a new "
              f"{scale.ckpt_size // MiB} MiB checkpoint file of all-new random bytes every {scale.ckpt_every:g} s; "
              "studio captures its "
              f"checkpoint folder every {scale.capture_interval:g} s. Time is the script's own wall time.",
        "W6": "Data: W1's folder captured by studio (or tarred, pushed, logged by the baselines); cold: an empty "
              "blob cache and a dropped page cache; warm: the cache already holds the artifact.",
        "W7": "A script with one comment line, run from a folder holding only it.",
        "W8": f"A store with {scale.experiments} experiments of one finished run each (record and environment).",
        "W9": "Data: N random files of 0.5-4 KiB in folders of 1,000" + (
            f", plus {scale.big_files} x {scale.big_size // MiB} MiB random files (W1's large ones)."
            if scale.big_size else " (no large files: --w9-large-mib 0)."),
    }
