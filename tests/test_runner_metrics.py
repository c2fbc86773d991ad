"""Metrics on hand-made matrices and curves (values computed by hand in the comments)."""
import math

import numpy as np
import pytest
import torch

from spiking.runner import metrics as M

# rows: after task i; cols: task j
R = np.array([[0.90, 0.20, 0.10],
              [0.95, 0.80, 0.30],
              [0.60, 0.70, 0.85]])
B = np.array([0.10, 0.15, 0.20])


def test_acc_bwt_fwt():
    assert M.acc(R) == pytest.approx((0.60 + 0.70 + 0.85) / 3)
    # ((0.6 - 0.9) + (0.7 - 0.8)) / (T - 1) with T - 1 = 2 (not T)
    assert M.bwt(R) == pytest.approx(-0.2)
    # ((0.2 - 0.15) + (0.3 - 0.2)) / 2
    assert M.fwt(R, B) == pytest.approx(0.075)


def test_max_based_forgetting_differs_from_minus_bwt():
    # task 0 peaked after task 1 (0.95), not right after its own training (0.90)
    # f_0 = 0.95 - 0.6 = 0.35, f_1 = 0.8 - 0.7 = 0.1  -> 0.225, while -BWT = 0.2
    assert M.forgetting(R) == pytest.approx(0.225)
    assert M.forgetting(R) != pytest.approx(-M.bwt(R))


def test_forgetting_equals_minus_bwt_when_diagonal_is_the_peak():
    R2 = np.array([[0.9, 0.1], [0.5, 0.8]])
    assert M.forgetting(R2) == pytest.approx(0.4) == pytest.approx(-M.bwt(R2))


def test_avg_incremental_acc():
    expected = (0.9 + (0.95 + 0.8) / 2 + (0.6 + 0.7 + 0.85) / 3) / 3
    assert M.avg_incremental_acc(R) == pytest.approx(expected)


def test_single_task_undefined_metrics_are_nan():
    R1 = np.array([[0.7]])
    assert M.acc(R1) == pytest.approx(0.7)
    assert math.isnan(M.bwt(R1)) and math.isnan(M.fwt(R1, [0.1])) and math.isnan(M.forgetting(R1))


def test_bad_shapes_name_the_argument():
    with pytest.raises(ValueError, match="R must"):
        M.acc(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="b must"):
        M.fwt(R, [0.1, 0.2])
    with pytest.raises(ValueError, match="window w"):
        M.windowed_forgetting({0: [(0, 1.0), (1, 0.5)]}, 1)


CURVES = {
    0: [(1, .5), (2, .8), (3, .9), (4, .4), (5, .6), (6, .7), (7, .75)],
    1: [(4, .2), (5, .5), (6, .7), (7, .8)],
}
TASK_END = [3, 7]


def test_min_acc_and_wc_acc():
    # task 0 after its end (n in (3, 7]): min(0.4, 0.6, 0.7, 0.75) = 0.4
    assert M.min_acc(CURVES, TASK_END) == pytest.approx(0.4)
    # (1/2) * 0.8 + (1/2) * 0.4
    assert M.wc_acc(CURVES, TASK_END) == pytest.approx(0.6)
    # at t = 5 (during task 2): min over n in (3, 5] = 0.4, current acc 0.5
    assert M.wc_acc(CURVES, TASK_END, k=2, t=5) == pytest.approx(0.5 / 2 + 0.4 / 2)
    # k = 1: just the current task's accuracy at t_1
    assert M.wc_acc(CURVES, TASK_END, k=1) == pytest.approx(0.9)
    assert math.isnan(M.min_acc(CURVES, TASK_END, k=1))


def test_windowed_forgetting_and_plasticity():
    # task 0 drops 0.9 -> 0.4 between neighbours; task 1 never drops
    assert M.windowed_forgetting(CURVES, 2) == pytest.approx((0.5 + 0.0) / 2)
    # rises: task 0 adjacent max 0.3 (0.5->0.8), task 1 adjacent 0.3 (0.2->0.5)
    assert M.windowed_plasticity(CURVES, 2) == pytest.approx(0.3)
    # wider window: task 0 0.5 -> 0.9 = 0.4, task 1 0.2 -> 0.8 = 0.6
    assert M.windowed_plasticity(CURVES, 10) == pytest.approx(0.5)


def test_window_size_limits_the_drop():
    steady = {0: [(i, 0.9 - 0.1 * i) for i in range(4)]}  # 0.9 0.8 0.7 0.6
    assert M.windowed_forgetting(steady, 2) == pytest.approx(0.1)
    assert M.windowed_forgetting(steady, 3) == pytest.approx(0.2)
    assert M.windowed_forgetting(steady, 10) == pytest.approx(0.3)
    assert M.windowed_forgetting(steady, 100) == pytest.approx(0.3)


def test_summarize_falls_back_to_task_boundaries():
    s = M.summarize(R, B)
    # boundary min-ACC: task 0 min(R[1,0], R[2,0]) = 0.6; task 1 R[2,1] = 0.7
    assert s["min_ACC"] == pytest.approx(0.65)
    assert s["WC_ACC"] == pytest.approx(0.85 / 3 + (2 / 3) * 0.65)
    # boundary curves: task 0 0.9 0.95 0.6 (drop 0.35), task 1 0.8 0.7 (0.1), task 2 none
    assert s["WF10"] == pytest.approx((0.35 + 0.1) / 2)
    assert s["BWT"] == pytest.approx(-0.2) and s["forgetting"] == pytest.approx(0.225)
    assert M.summarize([[0.5]], [0.1])["BWT"] is None  # NaN -> JSON null


def test_curves_missing_evaluations_are_an_error():
    with pytest.raises(ValueError, match="no evaluation of task 0"):
        M.min_acc({0: [(1, 0.5)], 1: [(5, 0.4)]}, [3, 7])
    with pytest.raises(ValueError, match="iteration order"):
        M.min_acc({0: [(2, 0.5), (1, 0.4)]}, [3])


def test_forgetting_ignores_rows_before_a_task_was_learned():
    # a high (or missing) entry before task 1 was trained must not count as its peak
    R_hi = np.array([[0.9, 0.99, 0.1], [0.8, 0.7, 0.1], [0.6, 0.5, 0.9]])
    R_nan = np.array([[0.9, np.nan, np.nan], [0.8, 0.7, np.nan], [0.6, 0.5, 0.9]])
    # f_0 = 0.9 - 0.6, f_1 = 0.7 - 0.5
    assert M.forgetting(R_hi) == pytest.approx(0.25) == pytest.approx(M.forgetting(R_nan))
    assert M.bwt(R_nan) == pytest.approx(M.bwt(R_hi)) and M.acc(R_nan) == pytest.approx(M.acc(R_hi))
    assert math.isnan(M.fwt(R_nan, [0.1, np.nan, np.nan]))


def test_spike_counter_counts_exactly_in_float32_and_float64():
    """SpikeCounter sums 0/1 spikes exactly (float32 partial sums stay integers below 2^24)."""
    from spiking.runner.evaluation import SpikeCounter

    class Spiker(torch.nn.Module):
        is_spiking = True

        def forward(self, s):
            return s

    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(Spiker())
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        s = (torch.rand(20, 300, 800, generator=g) < 0.37).to(dtype)
        with SpikeCounter(model) as counter:
            model(s)
            model(s[:5])
        exact = int((s != 0).sum()) + int((s[:5] != 0).sum())
        assert counter.counts["0"] == exact, dtype
