"""`spiking run` command line: bad input, resume after SIGKILL mid-task (tiny MNIST subsets)."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spiking.cli import main
from spiking.runner.checkpoint import load_checkpoint


def _mnist_or_skip():
    from spiking.data import load_mnist
    try:
        load_mnist()
    except (FileNotFoundError, OSError, ValueError) as exc:
        pytest.skip(f"MNIST not available: {exc}")


TINY = ["run", "--dataset", "pmnist", "--tasks", "2", "--train-subset", "64", "--model", "mlp",
        "--hidden", "16", "--batch-size", "32", "--threads", "1", "--no-progress"]


@pytest.mark.parametrize("argv, needle", [
    (["run", "--method", "nope"], "--method"),
    (["run", "--dataset", "cifar"], "--dataset"),
    (["run", "--tasks", "0"], "--tasks"),
    (["run", "--seeds", "1,x"], "--seeds"),
])
def test_bad_arguments_exit_2_naming_the_argument(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_run_then_refuse_other_config_in_same_folder(tmp_path, capsys):
    _mnist_or_skip()
    out = tmp_path / "r"
    assert main(TINY + ["--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ACC" in text and "accuracy matrix" in text
    def digest():  # every file but the lock, whose holder line each attempt rewrites
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir() if p.name != ".lock"}
    before = digest()
    assert main(TINY + ["--out", str(out), "--lr", "0.01"]) == 2
    assert "another run" in capsys.readouterr().err
    assert digest() == before
    assert main(["run", "--method", "ewc", "--tasks", "2", "--out", str(out), "--ewc-lambda", "5"]) == 2


def _checkpoint_rows(path: Path) -> int:
    return len(load_checkpoint(path)["log"]["rows"])


def test_resume_after_sigkill_mid_task_matches_uninterrupted(tmp_path):
    _mnist_or_skip()
    args = ["run", "--dataset", "pmnist", "--tasks", "3", "--train-subset", "1000", "--model", "mlp",
            "--hidden", "32", "--batch-size", "4", "--eval-every", "50", "--eval-subset", "100",
            "--seed", "7", "--threads", "1", "--no-progress"]
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "spiking.cli", *args, "--out", str(killed)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ck = killed / "checkpoint.pt"
    deadline = time.time() + 120
    try:
        while not ck.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "no checkpoint after 120 s"
            time.sleep(0.005)
        time.sleep(0.05)  # inside task 2 (250 steps)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert _checkpoint_rows(ck) == 1, "the kill must land in the middle of the second task"
    assert not (killed / "results.json").exists()
    assert main(args + ["--out", str(killed), "--resume"]) == 0
    assert main(args + ["--out", str(tmp_path / "clean")]) == 0
    resumed = json.loads((killed / "results.json").read_text())
    clean = json.loads((tmp_path / "clean" / "results.json").read_text())
    assert resumed["acc_matrix"] == clean["acc_matrix"]
    assert len(resumed["acc_matrix"]) == 3
    ev_resumed = (killed / "events.jsonl").read_text()
    assert ev_resumed == (tmp_path / "clean" / "events.jsonl").read_text()


def test_no_eval_unseen_prints_dashes_for_unseen_tasks(tmp_path, capsys):
    _mnist_or_skip()
    out = tmp_path / "r"
    assert main(TINY + ["--no-eval-unseen", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rows = text.split("accuracy matrix")[1].splitlines()[1:3]
    assert rows[0].split()[1] == "-" and rows[1].split()[1] != "-"
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["eval_unseen"] is False and saved["acc_matrix"][0][1] is None
    assert saved["FWT"] is None and saved["BWT"] is not None
