"""bench/hlop_pmnist.py without Ray: ``--in-process`` runs its one (method, seed) trial here and writes
the same JSON row as a sweep trial; ``--merge`` combines such files; more than one trial is refused."""
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "hlop_pmnist.py"
TINY = ["--tasks", "2", "--train-subset", "64", "--hidden", "16,16", "--lateral", "2,2,2", "--threads", "1"]


def _bench():
    spec = importlib.util.spec_from_file_location("hlop_pmnist_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    from spiking.data import load_mnist
    try:
        load_mnist()
    except (FileNotFoundError, OSError, ValueError) as exc:
        pytest.skip(f"MNIST not available: {exc}")
    return _bench()


def test_in_process_runs_one_trial_and_merges(bench, tmp_path):
    parts = []
    for seed in (1, 2):
        out = tmp_path / f"s{seed}.json"
        assert bench.main([*TINY, "--seeds", str(seed), "--in-process", "--out", str(out),
                           "--sweep-dir", str(tmp_path / f"sweep{seed}")]) == 0
        info = json.loads(out.read_text())
        assert info["config"]["in_process"] is True and info["config"]["paper_configuration"] is False
        (row,) = info["runs"]
        assert row["method"] == "hlop" and row["seed"] == seed and len(row["acc_matrix"]) == 2
        assert 0 <= row["ACC"] <= 100 and row["wall_s"] >= row["train_s"] > 0
        # the wall time's parts: set-up and the event loop (training, evaluation, checkpoints)
        assert row["setup_s"] > 0 and row["loop_s"] >= row["train_s"] + row["eval_s"]
        assert 0 < row["checkpoint_s"] < row["loop_s"] and row["setup_s"] + row["loop_s"] <= row["wall_s"]
        # the run folder is the sweep's layout: its results.json is the row's source
        res = json.loads((tmp_path / f"sweep{seed}" / "trials" / "pmnist" / "hlop" / "default" / f"seed_{seed}"
                          / "results.json").read_text())
        assert 100 * res["ACC"] == pytest.approx(row["ACC"])
        parts.append(str(out))
    merged = tmp_path / "merged.json"
    assert bench.main(["--merge", *parts, "--out", str(merged)]) == 0
    info = json.loads(merged.read_text())
    assert [r["seed"] for r in info["runs"]] == [1, 2] and info["summary"]["hlop"]["ACC"]["n"] == 2


def test_in_process_refuses_several_trials_and_cpu_graphs(bench, tmp_path):
    with pytest.raises(SystemExit, match="one \\(method, seed\\) trial; this configuration has 2"):
        bench.main([*TINY, "--seeds", "1,2", "--in-process", "--out", str(tmp_path / "x.json"),
                    "--sweep-dir", str(tmp_path / "sw")])
    with pytest.raises(Exception, match="cuda_graph needs a CUDA device"):
        bench.main([*TINY, "--seeds", "1", "--cuda-graph", "--in-process", "--out", str(tmp_path / "y.json"),
                    "--sweep-dir", str(tmp_path / "sw2")])
