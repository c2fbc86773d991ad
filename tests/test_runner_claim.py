"""Validate, then claim: every bad setting or unusable folder is a one-line error (exit 2) before the
output folder is touched; leftovers of killed runs do not lock a folder; a diverged loss stops the
run naming the steps and the option, keeping the last checkpoint."""
import json
import os

import pytest
import torch
from torch import nn

from spiking.cli import main
from spiking.models import SpikingMLP
from spiking.runner import run
from spiking.runner.checkpoint import load_checkpoint
from spiking.runner.run import TrainingDiverged

from test_runner_run import BASE, synth_stream

TINY = ["run", "--tasks", "2", "--train-subset", "100", "--test-subset", "50", "--hidden", "8",
        "--T", "2", "--threads", "1", "--no-progress"]


def _mnist_or_skip():
    from spiking.data import load_mnist
    try:
        load_mnist()
    except (FileNotFoundError, OSError, ValueError) as exc:
        pytest.skip(f"MNIST not available: {exc}")


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("spiking run: error: "), err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.parametrize("extra, needle", [
    (["--device", "bogus"], "device"),
    (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "device 'cuda"),
    (["--lr", "nan"], "lr"),
    (["--method", "ewc", "--ewc-lambda", "nan"], "ewc_lambda"),
    (["--method", "ewc", "--ewc-lambda", "inf"], "ewc_lambda"),
    (["--method", "hlop", "--hebb-lr", "inf"], "hebb_lr"),
    (["--method", "hlop", "--optimizer", "adam"], "optimizer"),
    (["--train-subset", "100000"], "train_subset"),
    (["--data-path", "/nonexistent-spiking-data"], "/nonexistent-spiking-data"),
])
def test_config_errors_exit_2_before_the_folder_is_touched(extra, needle, tmp_path, capsys):
    if "--data-path" not in extra:
        _mnist_or_skip()
    out = tmp_path / "r"
    try:
        code = main(TINY + extra + ["--out", str(out)])
    except SystemExit as exc:  # refused by the argument parser itself
        assert exc.code == 2 and needle in capsys.readouterr().err
    else:
        assert code == 2
        _one_line_error(capsys, needle)
    assert not out.exists()


def test_unusable_out_paths_exit_2(tmp_path, capsys):
    _mnist_or_skip()
    a_file = tmp_path / "file.txt"
    a_file.write_text("mine")
    for out, needle in ((a_file, "is a file"), (a_file / "sub", "which is a file")):
        assert main(TINY + ["--out", str(out)]) == 2
        _one_line_error(capsys, str(out), needle)
    assert a_file.read_text() == "mine"
    listed = tmp_path / "listed"
    listed.mkdir()
    (listed / "config.json").write_text("[1, 2]\n")
    assert main(TINY + ["--out", str(listed)]) == 2
    _one_line_error(capsys, "config.json", "JSON list")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o555)
        assert main(TINY + ["--out", str(locked / "r")]) == 2
        _one_line_error(capsys, "cannot create")


def test_leftovers_of_killed_runs_count_as_empty_and_are_removed(tmp_path, capsys):
    _mnist_or_skip()
    out = tmp_path / "r"
    out.mkdir()
    (out / ".config.json.tmp-12345").write_text('{"con')
    (out / ".checkpoint.pt.tmp-999").write_bytes(b"\0" * 1000)
    assert main(TINY + ["--out", str(out)]) == 0
    assert not list(out.glob(".*.tmp-*"))
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "config.json").write_text('{"config": {"meth')
    assert main(TINY + ["--out", str(torn)]) == 0
    assert json.loads((torn / "config.json").read_text())["config"]["method"] == "finetune"
    # a torn config.json next to a run's files is not reused
    (torn / "config.json").write_text('{"config": {"meth')
    assert main(TINY + ["--out", str(torn), "--resume"]) == 2
    _one_line_error(capsys, "config.json", "corrupt")


def test_a_claimed_folder_without_results_is_free_for_a_corrected_rerun(tmp_path, capsys):
    _mnist_or_skip()
    out = tmp_path / "r"
    assert main(TINY + ["--out", str(out), "--lr", "1e30"]) == 2  # diverges in task 1
    _one_line_error(capsys, "steps 1-2", "task 1", "lr=1e+30", "nothing was computed")
    assert main(TINY + ["--out", str(out), "--lr", "0.05"]) == 0
    assert json.loads((out / "results.json").read_text())["config"]["lr"] == 0.05


class NaNAfter(nn.Module):
    """A spiking MLP (or a Linear layer) whose logits turn NaN once it has trained ``steps`` batches."""

    def __init__(self, stream, steps, spiking=True):
        super().__init__()
        self.net = (SpikingMLP([16, 24, stream.n_outputs], T=3, v_threshold=0.5) if spiking
                    else nn.Linear(16, stream.n_outputs))
        self.steps, self.seen = steps, 0

    def forward(self, x):
        z = self.net(x)
        if self.training:
            self.seen += 1
        return z * float("nan") if self.seen > self.steps else z


def test_diverged_loss_stops_naming_steps_and_option_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "r"
    stream = synth_stream(3)  # 6 steps per task; NaN from step 8 (task 2)
    with pytest.raises(TrainingDiverged, match=r"NaN/inf by step 9 \(task 2, seed 0; x contains NaN.*lr=0.1"
                       ) as info:  # step 8's NaN loss made NaN weights; step 9's LIF input check fails
        run({**BASE, "out": str(out)}, stream=stream, model_fn=lambda s: NaNAfter(s, 7))
    assert "checkpoint.pt keeps the state before this task" in str(info.value)
    ck = load_checkpoint(out / "checkpoint.pt")
    assert len(ck["log"]["rows"]) == 1 and ck["log"]["task_end"] == [6]
    assert not (out / "results.json").exists()


def test_non_finite_task_loss_stops_at_the_task_end_naming_its_steps(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"mean loss over steps 7-12 \(task 2, seed 0\) is nan"):
        run({**BASE, "out": str(tmp_path / "r")}, stream=synth_stream(3),
            model_fn=lambda s: NaNAfter(s, 7, spiking=False))
    assert len(load_checkpoint(tmp_path / "r" / "checkpoint.pt")["log"]["rows"]) == 1
