"""Event timeline and rehearsal schedules."""
import pytest
import torch

from spiking.runner.rehearsal import RehearsalSchedule
from spiking.runner.timeline import Schedule, build_timeline


def kinds(events):
    return [(e.kind, e.task) for e in events]


def test_plain_timeline_orders_learn_and_evaluate():
    ev = build_timeline(3, Schedule(epochs=2))
    assert kinds(ev) == [("evaluate", -1), ("learn", 0), ("evaluate", 0), ("learn", 1),
                         ("evaluate", 1), ("learn", 2), ("evaluate", 2)]
    assert all(e.epochs == 2 for e in ev if e.kind == "learn")
    # one checkpoint per task, right after its evaluation row
    assert [e.task for e in ev if e.checkpoint] == [0, 1, 2]


def test_rehearse_and_unlearn_events():
    sched = Schedule(rehearse_steps=5, unlearn=((1, {"task": 0}), (2, {"classes": [3]})))
    ev = build_timeline(3, sched)
    assert kinds(ev) == [
        ("evaluate", -1), ("learn", 0), ("evaluate", 0),
        ("learn", 1), ("rehearse", 1), ("evaluate", 1), ("unlearn", 1), ("evaluate", 1),
        ("learn", 2), ("rehearse", 2), ("evaluate", 2), ("unlearn", 2), ("evaluate", 2)]
    assert ev[6].target == {"task": 0} and ev[7].target == {"task": 0}
    assert ev[4].steps == 5
    # the checkpoint of task 1 moves after its unlearning request
    assert [i for i, e in enumerate(ev) if e.checkpoint] == [2, 7, 12]


@pytest.mark.parametrize("n, sched, match", [
    (0, Schedule(), "tasks"),
    (2, Schedule(epochs=0), "epochs"),
    (2, Schedule(rehearse_steps=-1), "rehearse_steps"),
    (2, Schedule(unlearn=((5, {"task": 0}),)), "after_task"),
    (2, Schedule(unlearn=((0, {"task": 1}),)), "unseen task"),
    (2, Schedule(unlearn=((1, {"sample": 3}),)), "target"),
])
def test_bad_timelines(n, sched, match):
    with pytest.raises(ValueError, match=match):
        build_timeline(n, sched)


def test_schedule_shares():
    # phase 4, old tasks 0..3 have ages 4, 3, 2, 1
    u = RehearsalSchedule("uniform").weights(4, [0, 1, 2, 3])
    assert torch.allclose(u, torch.full((4,), 0.25, dtype=torch.float64))
    e = RehearsalSchedule("exponential", rate=1.0).weights(4, [0, 1, 2, 3])
    assert e[3] / e[2] == pytest.approx(torch.e) and e.sum() == pytest.approx(1.0)
    p = RehearsalSchedule("power", rate=2.0).weights(4, [0, 1, 2, 3])
    # (k - j)^-2: ages 4, 3, 2, 1 -> 1/16, 1/9, 1/4, 1
    w = torch.tensor([1 / 16, 1 / 9, 1 / 4, 1.0], dtype=torch.float64)
    assert torch.allclose(p, w / w.sum())


def test_schedule_sampling_follows_shares_and_rejects_bad_input():
    g = torch.Generator().manual_seed(0)
    picks = RehearsalSchedule("power", rate=3.0).sample_tasks(3, [0, 1, 2], 20000, g)
    frac = torch.bincount(picks, minlength=3).double() / 20000
    w = torch.tensor([1 / 27, 1 / 8, 1.0], dtype=torch.float64)
    assert torch.allclose(frac, w / w.sum(), atol=0.02)
    with pytest.raises(ValueError, match="kind"):
        RehearsalSchedule("linear")
    with pytest.raises(ValueError, match="rate"):
        RehearsalSchedule("power", rate=-1)
    with pytest.raises(ValueError, match="older"):
        RehearsalSchedule().weights(2, [2])
