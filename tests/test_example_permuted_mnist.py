"""The main job (examples/permuted_mnist.py) end to end on a tiny permuted-MNIST setting."""
import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "permuted_mnist.py"


def _example():
    spec = importlib.util.spec_from_file_location("permuted_mnist_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_main_job_prints_matrices_and_table_and_saves_outputs(tmp_path, capsys):
    from spiking.data import load_mnist
    try:
        load_mnist()
    except (FileNotFoundError, OSError, ValueError) as exc:
        pytest.skip(f"MNIST not available: {exc}")
    out = tmp_path / "pm"
    assert _example().main(["--tasks", "2", "--train-subset", "128", "--threads", "1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    text = captured.out
    # progress (on by default): training steps and the evaluation after each task, for both methods
    for m in ("hlop", "finetune"):
        assert f"{m} seed 2022: evaluate after task 2" in captured.err
        assert f"{m} seed 2022:" in captured.err.replace(f"{m} seed 2022: evaluate", "")
    # one matrix per method; after task 1 the unseen task 2 is not evaluated
    assert sum(line.startswith("T1 ") for line in text.splitlines()) == 2
    hlop_part = text.split("== hlop")[1].split("== finetune")[0]
    assert next(line for line in hlop_part.splitlines() if line.startswith("T1 ")).split()[2] == "-"
    assert "paper ACC" in text and "95.15" in text
    summary = json.loads((out / "summary.json").read_text())
    for m in ("hlop", "finetune"):
        R = summary["results"][m]["acc_matrix"]
        assert R[0][1] is None and R[1][0] is not None and R[1][1] is not None
        assert summary["results"][m]["BWT"] is not None
    assert (out / "permuted_mnist.png").read_bytes()[:4] == b"\x89PNG"
