"""Turn a run's results into ``latest.md`` (the table people read) and ``latest.json`` (everything)."""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["render", "write"]

MiB = 1 << 20


def _size(n: float) -> str:
    if n == 0:
        return "0 B"
    if abs(n) < MiB:
        return f"{n / 1024:.1f} KiB"
    if abs(n) < 1 << 30:
        return f"{n / MiB:.1f} MiB"
    return f"{n / (1 << 30):.2f} GiB"


def _secs(s: float) -> str:
    return f"{s:.3f}" if s < 10 else f"{s:.2f}"


def _cpu(summary: dict[str, float]) -> str:
    return f"{summary['cpu']:.2f}" if "cpu" in summary else "-"  # rows from runs before CPU was recorded


def render(result: dict[str, Any]) -> str:
    """The markdown report: machine, goals, then one table per workload."""
    out = [
        "# Studio benchmarks",
        "",
        f"`{result['command']}` ({result['mode']}), {result['started']}, {result['minutes']:.1f} min. "
        f"{result['reps']} repetitions per contender (W7, W8: {result['noop_reps']}), the contenders "
        "alternated between repetitions (each repetition starts with a different one). Reproduce: "
        "see `benchmarks/README.md`.",
        "",
    ]
    if result.get("updated"):
        out += [f"Updated: {result['updated']}; each workload below says when it was measured.", ""]
    if result["mode"] != "full":
        out += ["**Quick mode: about 1/8 of the data, shorter training. The goals are stated for the full "
                "sizes, so the met column here only shows that the harness works.**", ""]
    out += ["## Machine", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in result["machine"].items()]
    out += ["", "## Goals (studio over baseline; lower is better)", "",
            "| id | workload | goal | measured | met |", "|---|---|---|---|---|"]
    for w in result["workloads"]:
        for g in w["goals"]:
            met = {True: "yes", False: "**no**", None: "n/a"}[g["met"]]
            out.append(f"| {w['id']} | {w['title']} | {g['text']} | {g['shown']} | {met} |")
    for g in result.get("w9", {}).get("goals", []):
        met = {True: "yes", False: "**no**", None: "n/a"}[g["met"]]
        out.append(f"| W9 | growth with the file count | {g['text']} | {g['shown']} | {met} |")
    if result.get("w9"):
        out += _w9(result["w9"])
    out += ["", "## Results", ""]
    for w in result["workloads"]:
        when = f" Measured {w['measured']['started']}." if result.get("updated") and "measured" in w else ""
        out += [f"### {w['id']}: {w['title']}", "", w["data"] + when, ""]
        out += ["| contender | median s | min s | max s | written | content | peak RSS | CPU s | studio / this |",
                "|---|---|---|---|---|---|---|---|---|"]
        primary = next((c["summary"] for c in w["contenders"] if c["label"] == w["primary"] and c["summary"]), None)
        for c in w["contenders"]:
            s = c["summary"]
            if not s:
                out.append(f"| {c['label']} | {c['status']}: {c['reason']} | | | | | | | |")
                continue
            ratio = f"{primary['seconds'] / s['seconds']:.2f}" if primary and c["label"] != w["primary"] else ""
            out.append(f"| {c['label']} | {_secs(s['seconds'])} | {_secs(s['min'])} | {_secs(s['max'])} | "
                       f"{_size(s['written'])} | {_size(s['content'])} | {_size(s['peak_rss'])} | {_cpu(s)} | {ratio} |")
        out += [""] + [f"- {n}" for n in w["notes"]] + ([""] if w["notes"] else [])
    out += ["## How it was measured", ""] + [f"- {m}" for m in result["method"]] + [""]
    return "\n".join(out)


def _w9(summary: dict[str, Any]) -> list[str]:
    """W9's curves: the plot, then each row's points and fitted per-file cost."""
    sizes = summary["sizes"]
    out = ["", "## W9: time and memory against the number of files", "",
           "![W9: median time and peak RSS against the file count](w9.png)", "",
           "Per-file cost: slope of a least-squares line through the medians (µs per file; memory: bytes "
           "per file); fixed cost: its intercept. Sections W9/N/PHASE below hold every sample.", "",
           "| phase | contender | " + " | ".join(f"{n:,} files" for n in sizes)
           + " | µs per file | fixed s | peak RSS | RSS bytes per file |",
           "|---|---|" + "---|" * len(sizes) + "---|---|---|---|"]
    for r in summary["rows"]:
        cells = [_secs(r["seconds"][r["sizes"].index(n)]) if n in r["sizes"] else "" for n in sizes]
        slope = f"{r['slope'] * 1e6:.1f}" if "slope" in r else ""
        fixed = f"{r['intercept']:.2f}" if "intercept" in r else ""
        rss = " / ".join(_size(v) for v in r["peak_rss"])
        per = f"{r['rss_slope']:.0f}" if "rss_slope" in r else ""
        out.append(f"| {r['phase']} | {r['label']} | " + " | ".join(cells) + f" | {slope} | {fixed} | {rss} | {per} |")
    return out


def write(out_dir: str, result: dict[str, Any]) -> str:
    """Write ``latest.md`` and ``latest.json`` into ``out_dir`` (atomically); returns the markdown."""
    os.makedirs(out_dir, exist_ok=True)
    text = render(result)
    for name, body in (("latest.md", text), ("latest.json", json.dumps(result, indent=1, sort_keys=True) + "\n")):
        tmp = os.path.join(out_dir, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(body)
        os.replace(tmp, os.path.join(out_dir, name))
    return text
