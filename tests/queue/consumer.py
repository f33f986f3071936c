"""A tiny studio-like worker for the broker contract suite: ``python -m tests.queue.consumer``.

It consumes one studio queue through ``brokers.celery_app`` / ``brokers.worker_options`` (the
settings studio's worker uses) and runs each job in the worker process: it appends
``start ID PID`` to the journal, sleeps ``payload["seconds"]`` (``payload["again"]`` when the
journal shows the job started before: a redelivery) while renewing the job's lease as studio's
worker does, then appends ``done ID PID``. The journal is what the tests assert on.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

from studio_run.queue import brokers

__all__ = ["TASK", "main"]

TASK = "tests.queue.sleep"


def _note(journal: str, line: str) -> None:
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(journal: str) -> str:
    try:
        with open(journal) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("broker")
    parser.add_argument("queue")
    parser.add_argument("journal")
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--no-lease", action="store_true", help="never renew leases (a broker timeout test)")
    args = parser.parse_args()
    app = brokers.celery_app(args.broker)

    @app.task(name=TASK, bind=True)
    def sleep(self, payload: dict) -> None:  # type: ignore[no-untyped-def]
        tag = (self.request.properties or {}).get("delivery_tag")
        seconds = payload.get("seconds", 0)
        if "again" in payload and f"start {payload['id']} " in _read(args.journal):
            seconds = payload["again"]
        _note(args.journal, f"start {payload['id']} {os.getpid()}")
        stop = threading.Event()

        def lease() -> None:
            while not stop.wait(brokers.lease_interval(app)):
                try:
                    brokers.renew_lease(app, tag)
                except Exception as exc:  # noqa: BLE001 - the next renewal may work; the test sees the rest
                    _note(args.journal, f"lease-error {payload['id']} {type(exc).__name__}")

        if not args.no_lease:
            threading.Thread(target=lease, daemon=True).start()
        try:
            time.sleep(float(seconds))
        finally:
            stop.set()
        _note(args.journal, f"done {payload['id']} {os.getpid()}")

    _note(args.journal, f"ready - {os.getpid()}")
    app.Worker(**brokers.worker_options(args.queue, args.slots)).start()


if __name__ == "__main__":
    main()
