"""Draw W9's curves: median time and peak memory of each row against the file count.

    python benchmarks/plot.py RESULTS/latest.json RESULTS/w9.png

A script of its own so that ``run.py`` can run it with whichever interpreter has matplotlib (the
baselines' environment installs it from ``requirements.txt``; studio's own environment need not).
One panel per phase for time, one for memory; straight lines are the least-squares fits.
"""

from __future__ import annotations

import json
import sys

__all__ = ["draw", "main"]

_MIB = 1 << 20


def draw(summary: dict, title: str, out: str) -> None:
    """Write the PNG at ``out`` from ``summary`` (``latest.json``'s ``w9``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    thousands = FuncFormatter(_thousands)  # 300k, not 300000 run into the next tick

    phases = [p for p in ("first", "unchanged", "changed", "read") if any(r["phase"] == p for r in summary["rows"])]
    fig, axes = plt.subplots(2, len(phases), figsize=(4.2 * len(phases), 7.5), squeeze=False)
    for col, phase in enumerate(phases):
        rows = [r for r in summary["rows"] if r["phase"] == phase]
        for row in rows:
            style = "-" if row["label"].startswith("studio") else "--"
            xs = row["sizes"]
            line, = axes[0][col].plot(xs, row["seconds"], "o" + style, label=row["label"], markersize=4)
            if "slope" in row:
                axes[0][col].plot([0, xs[-1]], [row["intercept"], row["intercept"] + row["slope"] * xs[-1]],
                                  ":", color=line.get_color(), linewidth=0.8)
            if row["peak_rss"]:
                axes[1][col].plot(xs, [v / _MIB for v in row["peak_rss"]], "o" + style, label=row["label"],
                                  color=line.get_color(), markersize=4)
        axes[0][col].set_title(phase)
        axes[0][col].set_ylabel("median seconds")
        axes[1][col].set_ylabel("peak RSS, MiB")
        axes[1][col].axhline(200, color="grey", linewidth=0.6)
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xlabel("files")
            ax.xaxis.set_major_formatter(thousands)
            ax.grid(alpha=0.3)
            ax.set_xlim(left=0)
            ax.set_ylim(bottom=0)
        axes[0][col].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def _thousands(x: float, _pos: int) -> str:
    return f"{x / 1000:.0f}k" if x else "0"


def main(argv: list[str]) -> int:
    """Read the results file, draw its W9 summary; 2 when it has none."""
    with open(argv[0]) as f:
        result = json.load(f)
    if not result.get("w9"):
        print(f"{argv[0]} has no W9 results", file=sys.stderr)
        return 2
    when = sorted({w["measured"]["started"] for w in result["workloads"]
                   if w["id"].startswith("W9/") and "measured" in w}) or [result["started"]]
    title = f"W9: time and peak memory against file count ({result['mode']} run, {', '.join(when)})"
    draw(result["w9"], title, argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
