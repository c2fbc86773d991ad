"""Run outputs in the output folder, every file written atomically (temp file + rename).

    config.json        whose run the folder holds (config, seeds, environment) + checksum
    results.json       metrics, acc_matrix, acc_before, timings, config, seed, versions + checksum
    events.jsonl       one line per evaluation: step, trained, task, acc, loss, kind
    acc_matrix.csv     R with a header row of task names
    acc_matrix.png     heatmap of R
    curves.png         accuracy per task against iteration (the stability-gap picture)
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from .checkpoint import IntegrityError, atomic_write_bytes

#: key of the checksum in a checked JSON file (``"sha256:<hex>"``)
CHECKSUM = "checksum"


def clean(obj):
    """JSON-safe copy: NaN/inf → None, numpy/tensor scalars → Python numbers, tuples → lists."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return clean(obj.tolist())
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def is_missing(a) -> bool:
    """An accuracy-matrix entry that was not evaluated (an unseen task): NaN in memory, null in JSON."""
    return a is None or (isinstance(a, float) and math.isnan(a))


def write_text(path, text: str) -> None:
    atomic_write_bytes(Path(path), lambda f: f.write(text.encode()))


def write_json(path, obj) -> None:
    write_text(path, json.dumps(clean(obj), indent=2, allow_nan=False) + "\n")


def json_digest(obj) -> str:
    """``"sha256:<hex>"`` of the canonical JSON (sorted keys, no spaces) of a clean object."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def write_checked_json(path, obj: dict) -> None:
    """``write_json`` of ``obj`` plus a ``"checksum"`` entry over the rest (see :func:`read_checked_json`)."""
    data = clean(obj)
    data.pop(CHECKSUM, None)
    write_json(path, {**data, CHECKSUM: json_digest(data)})


def read_checked_json(path) -> dict:
    """The object of a file written by :func:`write_checked_json`, its checksum verified.

    Raises :class:`~spiking.runner.checkpoint.IntegrityError` (a ``ValueError``) naming the file when
    it is torn or altered, and ``ValueError`` when it is not such a file (no checksum, not an object).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{path} is corrupt: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a spiking file: it holds a JSON {type(data).__name__}, "
                         f"not an object")
    stored = data.pop(CHECKSUM, None)
    if stored is None:
        raise ValueError(f"{path} has no checksum: it was not written by this version of spiking")
    if stored != json_digest(data):
        raise IntegrityError(f"{path} is corrupt: its checksum does not match its content "
                             f"(damaged on disk or edited)")
    return data


def write_events(path, events: list[dict]) -> None:
    write_text(path, "".join(json.dumps(clean(e), allow_nan=False) + "\n" for e in events))


def write_matrix_csv(path, R, names) -> None:
    lines = ["after_task," + ",".join(names)]
    for name, row in zip(names, R):
        lines.append(name + "," + ",".join("" if is_missing(a) else f"{a:.6f}" for a in row))
    write_text(path, "\n".join(lines) + "\n")


def versions() -> dict:
    import spiking  # noqa: PLC0415
    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "spiking": spiking.__version__, "platform": platform.platform(),
            "machine": platform.machine(), "processor": platform.processor() or None}


def _save_figure(fig, path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(Path(path), lambda f: f.write(buf.getvalue()))


def plot_matrix(path, R, title: str = "") -> None:
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    R = np.asarray(R, dtype=np.float64) * 100  # None/NaN (unevaluated) entries stay blank
    T = R.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * T, 0.8 + 0.5 * T))
    im = ax.imshow(R, vmin=0, vmax=100, cmap="viridis")
    for i in range(T):
        for j in range(T):
            if np.isnan(R[i, j]):
                continue
            ax.text(j, i, f"{R[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if R[i, j] < 60 else "black")
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("after training task")
    ax.set_xticks(range(T), [str(j + 1) for j in range(T)])
    ax.set_yticks(range(T), [str(i + 1) for i in range(T)])
    ax.set_title(title or "accuracy (%)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save_figure(fig, path)
    plt.close(fig)


def plot_curves(path, curves: dict, task_end, title: str = "") -> None:
    """Accuracy of every task against the iteration; dashed lines mark task boundaries."""
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    fig, ax = plt.subplots(figsize=(8, 4))
    for j, c in sorted(curves.items()):
        if c:
            steps, accs = zip(*c)
            ax.plot(steps, np.asarray(accs) * 100, label=f"task {j + 1}", lw=1)
    for t in task_end[:-1]:
        ax.axvline(t, color="grey", ls="--", lw=0.6)
    ax.set_xlabel("iteration")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title or "continual evaluation")
    ax.legend(fontsize=7, ncol=2)
    _save_figure(fig, path)
    plt.close(fig)


SUMMARY_KEYS = ("ACC", "BWT", "FWT", "forgetting", "avg_incremental_acc", "min_ACC", "WC_ACC",
                "WF10", "WF100", "WP10", "WP100")


def summary_table(res: dict) -> str:
    """A plain-text table of the headline metrics (percent), with ± std over seeds if present."""
    cfg = res.get("config", {})
    lines = [f"method {cfg.get('method')} · dataset {cfg.get('dataset')} · seed(s) {res.get('seed')}",
             f"{'metric':<22}{'value':>18}"]
    for key in SUMMARY_KEYS:
        v, s = res.get(key), res.get(key + "_std")
        text = "n/a" if v is None else f"{100 * v:.2f}" + (f" ± {100 * s:.2f}" if s is not None else "")
        lines.append(f"{key:<22}{text:>18}")
    lines.append(f"{'wall time (s)':<22}{res.get('wall_time_s', float('nan')):>18.1f}")
    R = res.get("acc_matrix")
    if R:
        lines.append("accuracy matrix (%; row = after task i):")
        lines += ["  " + " ".join("    -" if is_missing(a) else f"{100 * a:5.1f}" for a in row) for row in R]
    return "\n".join(lines)
