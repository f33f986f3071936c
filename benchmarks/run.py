"""Compare studio with what people use instead, on one machine, in one run.

    python benchmarks/run.py [--quick] [--only W1,W3] [--out DIR] [--reps N] [--tools VENV]
                             [--w9-sizes 10000,100000] [--w9-large-mib MIB]

Generates its own data in a temporary folder, runs every contender of each workload on the same
data, alternating contenders between repetitions, and writes ``latest.md`` and ``latest.json``
to ``--out`` (default ``benchmarks/results``, the committed full run; with ``--quick`` a scratch
folder in the system's temporary folder, so a quick run never overwrites it). Exit code 1 when a contender failed to run (a
missed goal is a result, not a failure); a baseline that is not installed is listed as such.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run as a script from anywhere
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/servers.py

import report  # noqa: E402
from backup_tools import tool_version  # noqa: E402
from contenders import S3, Contender, Ctx, Tools, remove  # noqa: E402
from measure import CommandFailed, CpuClock, Sample, can_drop_caches, drop_caches, machine_description, run_command  # noqa: E402
from scale import PHASES, run_w9, summary  # noqa: E402
from suite import WORKLOADS, Data, Workload, summarize  # noqa: E402
from workloads import FULL, QUICK, MiB, Scale, describe  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
QUICK_RESULTS = os.path.join(tempfile.gettempdir(), "studio-bench-quick")  # never the committed full run


def _parse(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="1/8 of the data, 3 repetitions, only the rows the goals compare: under 2 minutes")
    p.add_argument("--only", metavar="IDS", help="comma-separated workloads, e.g. W1,W3")
    p.add_argument("--out", metavar="DIR",
                   help=f"where latest.md/.json go (default {RESULTS}; with --quick {QUICK_RESULTS}, so a quick "
                        "run never overwrites the committed full run)")
    p.add_argument("--reps", type=int, help="repetitions per contender (default 5, quick 3; at least 3)")
    p.add_argument("--tools", metavar="VENV", help="environment with the baselines (default ~/.cache/studio-bench)")
    p.add_argument("--workdir", metavar="DIR", help="where the temporary data folder is made")
    p.add_argument("--no-drop-caches", action="store_true", help="keep the page cache between repetitions")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    p.add_argument("--w9-sizes", metavar="N,N", type=_sizes,
                   help="W9's file counts, e.g. 10000,100000 (default 10000,100000,300000; quick 1000,2000,4000)")
    p.add_argument("--w9-large-mib", metavar="MIB", type=int,
                   help="size of each of W9's 4 large files (default W1's: 192, quick 24; 0: none)")
    p.add_argument("--update", action="store_true",
                   help="replace only the workloads run now in the existing latest.json/.md (re-run some rows)")
    args = p.parse_args(argv)
    known = {w.id for w in WORKLOADS} | {"W9"}
    args.ids = [i.strip().upper() for i in args.only.split(",")] if args.only else sorted(known)
    unknown = sorted(set(args.ids) - known)
    if unknown:
        p.error(f"unknown workload {unknown[0]}; choose from {', '.join(sorted(known))}")
    if args.reps is not None and args.reps < 3:
        p.error("--reps must be at least 3")
    if args.w9_large_mib is not None and args.w9_large_mib < 0:
        p.error("--w9-large-mib must be 0 or more")
    if args.out is None:
        args.out = QUICK_RESULTS if args.quick else RESULTS
    return args


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give file counts separated by commas, e.g. 10000,100000")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one file count of 1 or more")
    return sorted(set(sizes))


def _measure(c: Contender, cold: bool, log: str) -> Sample:
    c.before()
    if cold:
        drop_caches()  # and load the contender's own code again: only the data stays cold
        if c.warm():
            run_command(c.warm(), log)  # type: ignore[arg-type]
    else:
        os.sync()  # a timed sync must flush only what the contender wrote
    written0, content0 = c.usage()
    wall, peak, reported, cpu = run_command(c.command(), log)
    written1, content1 = c.usage()
    return Sample(reported if reported is not None else wall, wall, written1 - written0, content1 - content0, peak,
                  cpu)


def _run_workload(w: Workload, scale: Scale, reps: int, tools: Tools, data: Data, workdir: str,
                  drop: bool, quick: bool) -> dict[str, Any]:
    clock, began = CpuClock(), time.time()
    root = os.path.join(workdir, w.id)
    os.makedirs(root, exist_ok=True)
    log = os.path.join(workdir, f"{w.id}.log")
    s3, s3_missing = None, None
    if w.s3:
        try:
            s3 = S3.start()
        except Exception as exc:  # noqa: BLE001 - report why, run the rest
            s3_missing = f"S3 test server did not start ({exc}); pip install 'moto[s3]' flask flask-cors"
    ctx = Ctx(root, tools, log, s3)
    contenders = w.build(ctx, scale, data)
    compared = {w.primary} | {label for g in w.goals(scale) for label in (g.subject, g.other)}
    rows: dict[str, dict[str, Any]] = {}
    runnable = []
    for c in contenders:
        reason = s3_missing or c.missing()
        if quick and c.label not in compared and not w.quick_all_rows:
            reason = "--quick runs only the rows the goals compare"
        rows[c.label] = {"label": c.label, "status": "skipped" if reason else "ok", "reason": reason or "",
                         "samples": [], "summary": None}
        if not reason:
            runnable.append(c)
    try:
        for c in runnable:
            c.stage()
        for c in list(runnable):
            try:
                c.prepare()
            except Exception as exc:  # noqa: BLE001 - one broken contender must not end the run
                rows[c.label].update(status="failed", reason=f"setup: {_why(exc)}")
                runnable.remove(c)
        for rep in range(reps):
            if w.per_rep:
                w.per_rep(ctx, data, scale, rep)
            k = rep % max(1, len(runnable))
            for c in runnable[k:] + runnable[:k]:
                row = rows[c.label]
                if row["status"] != "ok":
                    continue
                cold = (w.cold if c.cold is None else c.cold) and drop
                try:
                    sample = _measure(c, cold, log)
                except Exception as exc:  # noqa: BLE001
                    row.update(status="failed", reason=_why(exc))
                    continue
                row["samples"].append(sample.to_dict())
                print(f"{w.id} {rep + 1}/{reps} {c.label}: {sample.seconds:.3f} s, "
                      f"{sample.written / (1 << 20):.1f} MiB written", file=sys.stderr, flush=True)
    finally:
        for c in runnable:
            c.cleanup()
        if s3:
            s3.stop()
    for row in rows.values():
        if row["samples"]:
            row["summary"] = summarize(row["samples"])
    result = _workload_result(w, scale, reps, rows, cold=w.cold and drop)
    if any(c.cold for c in contenders) and not drop:
        result["notes"].append("The page cache could not be dropped here: the cold rows ran warm.")
    others, elapsed = clock.others(), time.time() - began
    result["other_cpu_seconds"] = round(others, 1)
    result["notes"].append(f"Other processes (other sessions, kernel write-back) used {others:.0f} CPU-seconds of "
                           f"the {elapsed * (os.cpu_count() or 1):.0f} the machine had during this workload.")
    return result


def _why(exc: Exception) -> str:
    return str(exc) if isinstance(exc, CommandFailed) else f"{type(exc).__name__}: {exc}"


def _workload_result(w: Workload, scale: Scale, reps: int, rows: dict[str, dict[str, Any]],
                     cold: bool) -> dict[str, Any]:
    medians = {label: row["summary"] for label, row in rows.items() if row["summary"] and row["status"] == "ok"}
    goals = []
    for g in w.goals(scale):
        value, shown = g.evaluate(medians)
        met = None if value is None else value <= g.limit
        goals.append({"text": g.text, "value": value, "shown": shown, "met": met, "limit": g.limit})
    notes = list(w.notes)
    if cold:
        notes.append("Page cache dropped before each timed run (`echo 3 > /proc/sys/vm/drop_caches`), then each "
                     "contender's own program loaded once untimed, so the data is read cold and the code warm.")
    for row in rows.values():
        s = row["summary"]
        if s and abs(s["wall"] - s["seconds"]) > 0.01:
            notes.append(f"{row['label']}: seconds as reported by the command itself; its median wall time, "
                         f"start to exit, was {s['wall']:.2f} s.")
    return {"id": w.id, "title": w.title, "primary": w.primary, "reps": reps,
            "data": _data_text(w.id, scale),
            "contenders": list(rows.values()), "goals": goals, "notes": notes}


def _data_text(wid: str, scale: Scale) -> str:
    parts = wid.split("/")  # W9's phases: W9/FILES/PHASE
    text = describe(scale)[parts[0]]
    return text.replace("N random", f"{int(parts[1]):,} random") if len(parts) == 3 else text


def _order(w: dict[str, Any]) -> tuple[str, int, int]:
    """W1 ... W8, then W9's phases by size, in the order they run."""
    parts = w["id"].split("/")
    if len(parts) != 3:
        return (parts[0], 0, 0)
    return (parts[0], int(parts[1]), PHASES.index(parts[2]) if parts[2] in PHASES else 99)


def _versions(tools: Tools) -> dict[str, str]:
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    def here(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    tar = subprocess.run(["tar", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    base = {"studio-run": here("studio-run"), "blake3": here("blake3"), "tar": tar}
    base.update({f"{n} (baselines)": tools.version(n) for n in ("dvc", "dvc-s3", "mlflow", "boto3")})
    base["moto (S3 server)"] = here("moto")
    base.update({f"{n} (apt)": tool_version(n) for n in ("restic", "borg")})
    return base


def main(argv: Optional[list[str]] = None) -> int:
    """Run the selected workloads, write the report after each one, print it; 1 if a contender failed."""
    args = _parse(argv)
    scale = QUICK if args.quick else FULL
    reps = args.reps or scale.reps
    drop = can_drop_caches() and not args.no_drop_caches
    base = _base(args.out) if args.update else None
    workdir = tempfile.mkdtemp(prefix="studio-bench-", dir=args.workdir)
    tools = Tools.find(args.tools, os.path.join(workdir, "pycache"))
    started = time.time()
    print(f"working in {workdir}; baselines from {tools.python}", file=sys.stderr)
    results: list[dict[str, Any]] = []
    head = {
        "command": "python benchmarks/run.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
        "mode": "quick" if args.quick else "full",
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "reps": reps, "noop_reps": max(reps, scale.noop_reps),
        "machine": machine_description(args.workdir or tempfile.gettempdir(), _versions(tools)),
        "scale": scale.__dict__, "drop_caches": drop, "method": _method(drop),
    }

    def measure(w: Workload, scale: Scale, n: int) -> dict[str, Any]:
        """Run one workload and keep it: a run stopped later still leaves what it measured in ``latest``."""
        began = time.time()
        done = _run_workload(w, scale, n, tools, data, workdir, drop, args.quick)
        done["seconds"] = round(time.time() - began, 1)
        print(f"{w.id} done in {done['seconds']:.0f} s", file=sys.stderr, flush=True)
        done["measured"] = {"command": head["command"], "started": head["started"]}
        results.append(done)
        _write(args.out, head, results, base, (time.time() - started) / 60)
        return done

    try:
        data = Data(workdir, scale)
        for w in WORKLOADS:
            if w.id in args.ids:
                measure(w, scale, reps if w.quick_reps else max(reps, scale.noop_reps))
        if "W9" in args.ids:
            w9_reps = args.reps or scale.w9_reps
            w9_scale = scale if args.w9_large_mib is None else replace(scale, big_size=args.w9_large_mib * MiB)

            def phase(w: Workload, _tree: str) -> dict[str, Any]:
                return measure(w, w9_scale, w9_reps)

            run_w9(args.w9_sizes or list(scale.w9_sizes), w9_scale, workdir, phase,
                   lambda text: print(text, file=sys.stderr, flush=True))
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            remove(workdir)
    result = _write(args.out, head, results, base, (time.time() - started) / 60)
    print(report.render(result))
    if result.get("w9"):
        print(_plot(args.out, tools), file=sys.stderr)
    print(f"wrote {os.path.join(args.out, 'latest.md')} and latest.json", file=sys.stderr)
    failed = [c["label"] for w in results for c in w["contenders"] if c["status"] == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)} (see the table)", file=sys.stderr)
    return 1 if failed else 0


def _write(out: str, head: dict[str, Any], results: list[dict[str, Any]], base: Optional[dict[str, Any]],
           minutes: float) -> dict[str, Any]:
    """``latest.md``/``.json`` from the workloads finished so far (merged into ``base`` with --update)."""
    result = dict(head, minutes=minutes, workloads=list(results))
    w9 = [w for w in results if w["id"].startswith("W9/")]
    if w9:
        result["w9"] = summary(w9)
    if base is not None:
        result = _merged(base, result)
    report.write(out, result)
    return result


def _plot(out: str, tools: Tools) -> str:
    """Draw ``out/w9.png`` with an interpreter that has matplotlib (this one, else the baselines')."""
    import subprocess

    script, png = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plot.py"), os.path.join(out, "w9.png")
    for python in dict.fromkeys([sys.executable, tools.python]):
        has = subprocess.run([python, "-c", "import matplotlib"], capture_output=True).returncode == 0
        if has:
            done = subprocess.run([python, script, os.path.join(out, "latest.json"), png], capture_output=True, text=True)
            return f"drew {png}" if done.returncode == 0 else f"plot failed: {done.stderr.strip()[-500:]}"
    return "no plot: matplotlib is not installed (pip install -r benchmarks/requirements.txt)"


def _base(out: str) -> Optional[dict[str, Any]]:
    """The latest.json an --update run merges into, read once before the run changes it."""
    import json

    try:
        with open(os.path.join(out, "latest.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _merged(old: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """``result``'s workloads put in place of the same ones in ``old`` (same mode only)."""
    import copy

    if old.get("mode") != result["mode"]:
        raise SystemExit(f"--update: latest.json is a {old.get('mode')} run, this one is {result['mode']}")
    old = copy.deepcopy(old)
    new = {w["id"]: w for w in result["workloads"]}
    for w in old["workloads"]:
        w.setdefault("measured", {"command": old["command"], "started": old["started"]})
    ids = ", ".join(sorted(new))
    workloads = [new.pop(w["id"], w) for w in old["workloads"]] + list(new.values())
    if "w9" not in result and old.get("w9"):
        result = dict(result, w9=old["w9"])
    elif any(w["id"].startswith("W9/") for w in result["workloads"]):
        result = dict(result, w9=summary([w for w in workloads if w["id"].startswith("W9/")]))
    updated = f"{ids} re-run {result['started']} (`{result['command']}`)"
    if old.get("updated"):  # a run completed in several steps keeps every step's line
        updated = f"{old['updated']}; {updated}"
    return dict(result, workloads=sorted(workloads, key=_order), minutes=old["minutes"] + result["minutes"],
                command=old["command"], started=old["started"], updated=updated)


def _method(drop: bool) -> list[str]:
    return [
        "Every contender, studio included, runs as a child process, as a user runs it; time is fork to exit "
        "(`time.perf_counter`), unless the command reports its own (W5's script, studio's in-process snapshot).",
        "Median, min and max over the repetitions; the ratio column is the workload's main studio row over "
        "that row (below 1: studio is faster).",
        "written: growth of the destination's disk usage (allocated blocks, like `du`), plus the bytes of the "
        "objects put in S3; content: of which file content (studio's `store/objects`; for baselines, all of it).",
        "peak RSS: `ru_maxrss` of the child from `wait4`, which covers every descendant it waited for.",
        "Durability is equal: studio `syncfs`-es its store before it records a snapshot, so every baseline that "
        "writes a local destination ends with `sync -f DEST` inside its timed command (W6 restores are not synced "
        "by studio, nor by the baselines).",
        "Page cache: " + ("dropped before each timed run of W1, W2 and W6's cold rows." if drop else
                          "not dropped (not permitted here, or --no-drop-caches)."),
        "studio runs from this checkout (PYTHONPATH) with its bytecode cached in the work folder "
        "(PYTHONPYCACHEPREFIX), as a pip install would have compiled it; the baselines load the bytecode "
        "pip compiled in their environment.",
        f"Host: {platform.node()}; the harness's own data generation is not timed.",
    ]


if __name__ == "__main__":
    sys.exit(main())
