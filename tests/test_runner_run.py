"""End-to-end runs of the runner on tiny synthetic streams (from_datasets)."""
import hashlib
import json

import numpy as np
import pytest
import torch
from torch import nn

from spiking.data import from_datasets
from spiking.models import SpikingMLP
from spiking.runner import run
from spiking.runner.evaluation import Evaluator, spiking_layers

REQUIRED = ["acc_matrix", "acc_before", "ACC", "BWT", "FWT", "forgetting", "avg_incremental_acc",
            "min_ACC", "WC_ACC", "WF10", "WF100", "wall_time_s", "config", "seed", "versions"]


def synth_stream(n_tasks=3, scenario="domain", d=16, n_train=96, n_test=64, seed=0):
    """Tasks whose 4 labels are the argmax of a task-specific random linear teacher."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for t in range(n_tasks):
        W = torch.randn(d, 4, generator=g)
        off = 0 if scenario == "domain" else 4 * t

        def draw(n):
            x = torch.randn(n, d, generator=g)
            return x, (x @ W).argmax(1) + off
        parts.append((draw(n_train), draw(n_test)))
    return from_datasets(parts, scenario=scenario, name="synth")


def small_snn(stream):
    return SpikingMLP([16, 24, stream.n_outputs], T=3, v_threshold=0.5)


BASE = dict(epochs=1, batch_size=16, lr=0.1, threads=1)  # 1 thread: fast on a loaded machine


def test_end_to_end_writes_all_outputs(tmp_path):
    stream = synth_stream()
    res = run({**BASE, "eval_every": 2, "eval_subset": 32, "out": str(tmp_path / "r")},
              stream=stream, model_fn=small_snn)
    out = tmp_path / "r"
    for name in ("results.json", "events.jsonl", "acc_matrix.csv", "acc_matrix.png", "curves.png",
                 "config.json", "checkpoint.pt"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert set(REQUIRED) <= set(saved)
    R = np.array(saved["acc_matrix"])
    assert R.shape == (3, 3) and np.allclose(R, res["acc_matrix"])
    assert saved["ACC"] == pytest.approx(R[-1].mean())
    assert len(saved["train_time_s"]) == 3 and saved["peak_rss_mb"] > 0
    assert saved["eval_batch_size_used"] == (BASE.get("eval_batch_size") or 256)  # the CPU default
    # events: 3 'before' + 9 'full' rows + continual evaluations of the seen tasks
    ev = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert {"step", "trained", "task", "acc", "loss"} <= set(ev[0])
    assert sum(e["kind"] == "before" for e in ev) == 3 and sum(e["kind"] == "full" for e in ev) == 9
    subset = [e for e in ev if e["kind"] == "subset"]
    # 6 steps per task, every 2 -> 3 evaluations per task of the seen tasks: 3*1 + 3*2 + 3*3
    assert len(subset) == 18 and all(e["task"] <= e["trained"] for e in subset)
    assert saved["task_end_steps"] == [6, 12, 18]
    csv = (out / "acc_matrix.csv").read_text().splitlines()
    assert len(csv) == 4 and csv[0].startswith("after_task,")
    assert (out / "acc_matrix.png").read_bytes()[:4] == b"\x89PNG"
    # spikes per sample for each LIF layer, from forward hooks
    assert set(saved["spikes_per_sample"]) == {"lifs.0"}
    assert saved["spikes_per_sample"]["lifs.0"] > 0


def test_same_seed_same_matrix_other_seed_differs():
    stream = synth_stream()
    a = run({**BASE, "seed": 5}, stream=stream, model_fn=small_snn)["acc_matrix"]
    b = run({**BASE, "seed": 5}, stream=stream, model_fn=small_snn)["acc_matrix"]
    c = run({**BASE, "seed": 6}, stream=stream, model_fn=small_snn)["acc_matrix"]
    assert a == b
    assert a != c


def test_seeds_give_mean_and_std(tmp_path):
    res = run({**BASE, "seeds": [1, 2], "out": str(tmp_path / "m")}, stream=synth_stream(2),
              model_fn=small_snn)
    per = [json.loads((tmp_path / "m" / f"seed_{s}" / "results.json").read_text()) for s in (1, 2)]
    accs = [p["ACC"] for p in per]
    assert res["ACC"] == pytest.approx(np.mean(accs))
    assert res["ACC_std"] == pytest.approx(np.std(accs, ddof=1))
    assert res["seed"] == [1, 2]
    saved = json.loads((tmp_path / "m" / "results.json").read_text())
    assert set(REQUIRED) <= set(saved)


def _digest(folder):
    """Every file but the lock (whose holder line each attempt rewrites)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.name != ".lock"}


def test_output_folder_of_another_run_is_refused_and_untouched(tmp_path):
    out = tmp_path / "r"
    stream = synth_stream(2)
    first = run({**BASE, "out": str(out)}, stream=stream, model_fn=small_snn)
    before = _digest(out)
    with pytest.raises(ValueError, match="another run.*lr"):
        run({**BASE, "lr": 0.05, "out": str(out)}, stream=stream, model_fn=small_snn)
    with pytest.raises(ValueError, match="resume"):
        run({**BASE, "out": str(out)}, stream=stream, model_fn=small_snn)
    assert _digest(out) == before
    again = run({**BASE, "out": str(out), "resume": True}, stream=stream, model_fn=small_snn)
    assert again["acc_matrix"] == first["acc_matrix"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        run({**BASE, "out": str(foreign)}, stream=stream, model_fn=small_snn)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    out = tmp_path / "r"
    stream = synth_stream(2)
    run({**BASE, "out": str(out)}, stream=stream, model_fn=small_snn)
    (out / "results.json").unlink()  # as if the run had stopped before finishing
    ck = out / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    before = _digest(out)
    with pytest.raises(ValueError, match="corrupt"):
        run({**BASE, "out": str(out), "resume": True}, stream=stream, model_fn=small_snn)
    assert _digest(out) == before


@pytest.mark.parametrize("bad, match", [
    ({"method": "nope"}, "method"), ({"dataset": "cifar"}, "dataset"), ({"tasks": 0}, "tasks"),
    ({"lr": -1}, "lr"), ({"seeds": [1, 1]}, "seeds"), ({"colour": 1}, "colour"),
    ({"method": "ewc", "options": {"ewc_lamda": 1.0}}, "ewc_lamda"),
])
def test_bad_config(bad, match):
    with pytest.raises(ValueError, match=match):
        run(bad)


class ConstantLogits(nn.Module):
    """Ignores x; class 3 always has the largest logit, class 1 the second largest."""

    def __init__(self):
        super().__init__()
        self.register_buffer("z", torch.tensor([0.0, 5.0, 0.0, 9.0]))

    def forward(self, x):
        return self.z.expand(x.shape[0], 4)


def test_task_incremental_evaluation_masks_logits():
    parts = [((torch.randn(4, 3), torch.tensor([0, 1, 0, 1])), (torch.randn(4, 3), torch.ones(4, dtype=torch.long))),
             ((torch.randn(4, 3), torch.tensor([2, 3, 2, 3])), (torch.randn(4, 3), torch.full((4,), 3)))]
    model = ConstantLogits()
    task_il = from_datasets(parts, scenario="task")
    class_il = from_datasets(parts, scenario="class")
    # task 0 (classes 0, 1): masked argmax is class 1 = every label; unmasked argmax is class 3
    assert Evaluator(task_il).full(model, task_il[0])[0] == 1.0
    assert Evaluator(class_il).full(model, class_il[0])[0] == 0.0
    assert Evaluator(class_il).full(model, class_il[1])[0] == 1.0


def test_snntorch_model_runs_and_its_spikes_are_counted():
    snn = pytest.importorskip("snntorch")

    class LeakyNet(nn.Module):
        def __init__(self, n_out, T=3):
            super().__init__()
            self.T = T
            self.fc1, self.fc2 = nn.Linear(16, 24), nn.Linear(24, n_out)
            self.lif1 = snn.Leaky(beta=0.8, threshold=0.5)

        def forward(self, x):
            mem = self.lif1.init_leaky()
            out = 0
            cur = self.fc1(x)
            for _ in range(self.T):
                spk, mem = self.lif1(cur, mem)
                out = out + self.fc2(spk)
            return out / self.T

    stream = synth_stream(2)
    assert list(spiking_layers(LeakyNet(4))) == ["lif1"]
    res = run({**BASE, "method": "ewc", "options": {"fisher_samples": 16}}, stream=stream,
              model_fn=lambda s: LeakyNet(s.n_outputs))
    assert np.array(res["acc_matrix"]).shape == (2, 2)
    assert res["spikes_per_sample"]["lif1"] > 0


def test_finding_spiking_layers_imports_no_peer():
    """A model of ours is evaluated without importing snnTorch or Norse (their import time per run)."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    code = ("import sys; from spiking.models import SpikingMLP; from spiking.runner.evaluation import spiking_layers;"
            "names = list(spiking_layers(SpikingMLP((8, 6, 3), T=2)));"
            "print(names, [m for m in ('snntorch', 'norse') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]") and "lif" in out.lower()


def test_norse_model_runs_and_its_spikes_are_counted():
    norse = pytest.importorskip("norse.torch")

    class NorseNet(nn.Module):
        def __init__(self, n_out, T=3):
            super().__init__()
            self.T = T
            self.fc1, self.fc2 = nn.Linear(16, 24), nn.Linear(24, n_out)
            self.lif = norse.LIF()

        def forward(self, x):
            cur = 50 * self.fc1(x)
            spikes, _ = self.lif(cur.unsqueeze(0).expand(self.T, *cur.shape))
            return self.fc2(spikes.mean(0))

    stream = synth_stream(2)
    res = run({**BASE, "method": "gpm"}, stream=stream, model_fn=lambda s: NorseNet(s.n_outputs))
    assert np.array(res["acc_matrix"]).shape == (2, 2)
    assert res["spikes_per_sample"]["lif"] > 0


def test_rehearse_events_add_steps_on_old_tasks():
    stream = synth_stream(3)
    res = run({**BASE, "rehearse_steps": 3, "rehearsal": "power", "rehearsal_rate": 2.0,
               "eval_every": 4, "eval_subset": 16}, stream=stream, model_fn=small_snn)
    # 6 steps per task plus 3 rehearsal steps after tasks 2 and 3
    assert res["task_end_steps"] == [6, 15, 24] and res["steps"] == 24
    assert res["min_ACC"] is not None and res["WC_ACC"] is not None


def test_eval_unseen_false_skips_unseen_tasks_and_keeps_acc_bwt(tmp_path):
    stream = synth_stream()
    full = run({**BASE, "seed": 3}, stream=stream, model_fn=small_snn)
    seen = run({**BASE, "seed": 3, "eval_unseen": False, "out": str(tmp_path / "s")}, stream=stream,
               model_fn=small_snn)
    R, Rs = np.array(full["acc_matrix"]), np.array(seen["acc_matrix"], dtype=float)
    lower = np.tril(np.ones((3, 3), dtype=bool))
    assert np.isnan(Rs[~lower]).all() and np.array_equal(Rs[lower], R[lower])
    assert np.isnan(np.array(seen["acc_before"], dtype=float)).all()
    assert seen["ACC"] == full["ACC"] and seen["BWT"] == full["BWT"]
    assert seen["forgetting"] == pytest.approx(full["forgetting"])
    assert full["FWT"] is not None and seen["FWT"] is None
    saved = json.loads((tmp_path / "s" / "results.json").read_text())  # NaN is written as null
    assert saved["acc_matrix"][0][1] is None and saved["ACC"] == pytest.approx(seen["ACC"])
    ev = [json.loads(line) for line in (tmp_path / "s" / "events.jsonl").read_text().splitlines()]
    assert sum(e["kind"] == "before" for e in ev) == 0 and sum(e["kind"] == "full" for e in ev) == 6
    csv = (tmp_path / "s" / "acc_matrix.csv").read_text().splitlines()
    assert csv[1].endswith(",,")  # row after task 1: tasks 2 and 3 not evaluated
    with pytest.raises(ValueError, match="eval_unseen"):
        run({**BASE, "eval_unseen": "no"}, stream=stream, model_fn=small_snn)
