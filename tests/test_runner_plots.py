"""Plots a researcher can read: fitted colour and y ranges, one-decimal labels, markers, and the
mean ± std outputs at the top level of a multi-seed run."""
import csv

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from spiking.runner import outputs, run  # noqa: E402
from test_runner_run import synth_stream  # noqa: E402


@pytest.fixture
def figures(monkeypatch):
    """Keep the figures the plot functions save instead of writing PNGs."""
    saved = []
    monkeypatch.setattr(outputs, "_save_figure", lambda fig, path: saved.append(fig))
    monkeypatch.setattr("matplotlib.pyplot.close", lambda fig=None: None)
    return saved


def test_fitted_range_shows_small_differences_and_stays_in_bounds():
    lo, hi = outputs.fitted_range([86.0, 94.0])
    assert 80 < lo < 86 and 94 < hi < 100
    lo, hi = outputs.fitted_range([99.5, 100.0])                 # widened to the minimum span, clipped
    assert 98 < lo < 99.5 and hi == 100.0
    assert outputs.fitted_range([float("nan")]) == (0.0, 100.0)


def test_heatmap_colour_scale_fits_the_data_with_one_decimal_labels(figures):
    R = [[0.955, float("nan")], [0.9425, 0.97]]
    outputs.plot_matrix("unused.png", R, "t")
    ax = figures[0].axes[0]
    assert ax.images[0].get_clim() == (pytest.approx(94.25), pytest.approx(97.0))
    assert sorted(t.get_text() for t in ax.texts) == ["94.2", "95.5", "97.0"]   # NaN stays blank


def test_heatmap_with_std_labels_mean_and_spread(figures):
    outputs.plot_matrix("unused.png", [[0.9, 0.5], [0.8, 0.7]], std=[[0.01, 0.0], [0.02, 0.005]])
    assert "90.0\n±1.0" in [t.get_text() for t in figures[0].axes[0].texts]


def test_curves_have_markers_so_a_single_point_task_shows(figures):
    curves = {0: [(10, 0.95), (20, 0.93)], 1: [(20, 0.96)]}
    outputs.plot_curves("unused.png", curves, [10, 20], std={0: [0.01, 0.02], 1: [0.01]})
    ax = figures[0].axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_label().startswith("task")]
    assert [len(ln.get_xdata()) for ln in lines] == [2, 1]
    assert all(ln.get_marker() not in (None, "None", "", " ") for ln in lines)
    lo, hi = ax.get_ylim()
    assert 85 < lo < 92 and 97 <= hi <= 100                      # fitted around 91–97 (± std), not 0–100
    from matplotlib.collections import LineCollection, PolyCollection
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 2      # one ± std band per task
    assert sum(isinstance(c, LineCollection) for c in ax.collections) == 2      # and its error bars


def _read(path):
    rows = list(csv.reader(path.open()))
    return np.array([[float(v) if v else np.nan for v in r[1:]] for r in rows[1:]])


def test_multi_seed_run_writes_mean_and_std_outputs_at_top_level(tmp_path):
    out = tmp_path / "r"
    res = run({"epochs": 1, "batch_size": 16, "threads": 1, "seeds": [1, 2], "out": str(out)},
              stream=synth_stream(2), model_fn=lambda s: torch.nn.Linear(16, s.n_outputs))
    for name in ("acc_matrix_mean.csv", "acc_matrix_std.csv", "acc_matrix.png", "curves.png", "results.json"):
        assert (out / name).exists(), name
    per_seed = np.stack([_read(out / f"seed_{s}" / "acc_matrix.csv") for s in (1, 2)])
    np.testing.assert_allclose(_read(out / "acc_matrix_mean.csv"), per_seed.mean(0), atol=1e-6)
    np.testing.assert_allclose(_read(out / "acc_matrix_std.csv"), per_seed.std(0, ddof=1), atol=1e-6)
    np.testing.assert_allclose(res["acc_matrix"], per_seed.mean(0), atol=1e-6)
    assert (out / "acc_matrix.png").read_bytes()[:4] == b"\x89PNG"
