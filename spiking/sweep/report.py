"""Sweep summaries: mean ± std (ddof = 1) of ACC and BWT per dataset, method and grid point.

Outputs: ``summary(records)`` (the ``summary`` of sweep.json), ``write_csv``, ``table`` (printed),
``plot`` (ACC and BWT with mean ± std error bars, one panel row per dataset).
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from ..runner import outputs
from .spec import point_name

METRICS = ("ACC", "BWT")


def stats(values: list[float]) -> dict:
    vals = [v for v in values if v is not None]
    return {"mean": statistics.fmean(vals) if vals else None,
            "std": statistics.stdev(vals) if len(vals) > 1 else None, "n": len(vals)}


def summary(records: list[dict]) -> list[dict]:
    """One entry per (dataset, method, point) in first-seen order (done trials; ``failed`` counts the rest)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["method"], point_name(r["point"])), []).append(r)
    out = []
    for (dataset, method, name), rs in groups.items():
        done = [r for r in rs if r["status"] == "done"]
        out.append({"dataset": dataset, "method": method, "point": rs[0]["point"], "point_name": name,
                    "seeds": [r["seed"] for r in done], "failed": sum(r["status"] == "failed" for r in rs),
                    **{m: stats([r[m] for r in done]) for m in METRICS}})
    return out


def score(entry: dict, select: str) -> float:
    """The selection criterion of a summary entry: mean ACC, mean BWT, or their sum."""
    parts = [entry[m]["mean"] for m in select.split("+")]
    return -math.inf if any(p is None for p in parts) else sum(parts)


def _pm(s: dict) -> str:
    if s["mean"] is None:
        return "-"
    std = "" if s["std"] is None else f" ± {100 * s['std']:.2f}"
    return f"{100 * s['mean']:.2f}{std}"


def _rows(entries: list[dict], extra=None) -> list[list[str]]:
    rows = []
    for e in entries:
        row = [e["dataset"], e["method"], e["point_name"], str(e["ACC"]["n"]), _pm(e["ACC"]), _pm(e["BWT"])]
        rows.append(row + ([extra(e)] if extra else []))
    return rows


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


HEADER = ["dataset", "method", "point", "n", "ACC % (mean ± std)", "BWT % (mean ± std)"]


def table(result: dict) -> str:
    """The printed report; a reality check leads with phase 2."""
    if "phase2" not in result:
        return format_table(HEADER, _rows(result["summary"]))
    p1, p2, c = result["phase1"], result["phase2"], result.get("contrast")
    lines = [f"phase 2 (reported): each method's point picked on {p1['dataset']} by {result['select']}, "
             f"run unchanged on {p2['dataset']} with fresh seeds {p2['seeds']}",
             format_table(HEADER, _rows(p2["summary"]))]
    if c:
        lines += ["", f"for contrast, tuning directly on {c['dataset']} (seeds {c['seeds']}) would have picked:",
                  format_table(HEADER + ["phase 2 − this ACC"], _rows(
                      c["picked"], lambda e: _gap(p2["summary"], e)))]
    lines += ["", f"phase 1 (tuning on {p1['dataset']}, seeds {p1['seeds']}; * = picked):",
              format_table(HEADER + ["picked"], _rows(
                  p1["summary"], lambda e: "*" if result["selected"][e["method"]]["point"] == e["point"] else ""))]
    return "\n".join(lines)


def _gap(phase2: list[dict], picked: dict) -> str:
    mine = next(e for e in phase2 if e["method"] == picked["method"])
    if mine["ACC"]["mean"] is None or picked["ACC"]["mean"] is None:
        return "-"
    return f"{100 * (mine['ACC']['mean'] - picked['ACC']['mean']):+.2f}"


def write_csv(path: Path, entries: list[dict]) -> None:
    lines = ["dataset,method,point,ACC_mean,ACC_std,ACC_n,BWT_mean,BWT_std,BWT_n,failed"]
    for e in entries:
        cells = [e["dataset"], e["method"], f'"{e["point_name"]}"']
        for m in METRICS:
            cells += ["" if e[m][k] is None else f"{e[m][k]:.6g}" for k in ("mean", "std", "n")]
        lines.append(",".join(cells + [str(e["failed"])]))
    outputs.write_text(path, "\n".join(lines) + "\n")


def plot(path: Path, entries: list[dict], title: str = "") -> bool:
    """ACC and BWT (%) per grid point, one series per method, mean ± std error bars. False: no matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    datasets = list(dict.fromkeys(e["dataset"] for e in entries))
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 3.6 * len(datasets)), squeeze=False)
    for row, dataset in zip(axes, datasets):
        mine = [e for e in entries if e["dataset"] == dataset]  # one x position per (method, point)
        for ax, m in zip(row, METRICS):
            for method in dict.fromkeys(e["method"] for e in mine):
                xs = [i for i, e in enumerate(mine) if e["method"] == method and e[m]["mean"] is not None]
                ax.errorbar(xs, [100 * mine[i][m]["mean"] for i in xs],
                            [100 * (mine[i][m]["std"] or 0) for i in xs], fmt="o", capsize=4, label=method)
            ax.set_xticks(range(len(mine)), [e["point_name"] for e in mine], rotation=30, ha="right", fontsize=7)
            ax.set_ylabel(f"{m} % (mean ± std)")
            ax.set_title(f"{dataset}: {m}")
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
