"""Fault injection on `spiking run` (tiny permuted-MNIST runs): real SIGKILLs at random moments and
in the middle of config/checkpoint/results writes, flipped bytes, racing writers, stale locks.

Every kill is followed by a ``--resume`` that must give the uninterrupted run's accuracy matrix and
events (which carry every evaluation's loss at full precision)."""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from spiking.cli import main
from spiking.runner.checkpoint import load_checkpoint
from spiking.runner.lock import FolderLock

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
ARGS = ["run", "--tasks", "2", "--train-subset", "300", "--test-subset", "100", "--hidden", "20,20",
        "--T", "2", "--threads", "1", "--seed", "3", "--no-progress"]

# A `spiking run` in a subprocess that SIGKILLs itself in the middle of a file write (KILL_AT =
# "NAME:N": the N-th write of file NAME, half of its temp file written), or that sleeps SLOW_SAVE
# seconds before every checkpoint; with GO_FILE it starts once that file exists.
WORKER = textwrap.dedent("""
    import io, os, signal, sys, time
    from spiking.runner import checkpoint, outputs
    from spiking.cli import main
    kill_at, slow = os.environ.get("KILL_AT", ""), float(os.environ.get("SLOW_SAVE", "0"))
    original, count = checkpoint.atomic_write_bytes, {}
    def write_then_maybe_die(path, write):
        count[path.name] = count.get(path.name, 0) + 1
        if f"{path.name}:{count[path.name]}" == kill_at:
            buf = io.BytesIO()
            write(buf)
            with open(checkpoint.tmp_name(path), "wb") as f:
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        if slow and path.name == "checkpoint.pt":
            time.sleep(slow)
        return original(path, write)
    checkpoint.atomic_write_bytes = outputs.atomic_write_bytes = write_then_maybe_die
    go = os.environ.get("GO_FILE")
    while go and not os.path.exists(go):
        time.sleep(0.01)
    sys.exit(main(sys.argv[1:]))
""")


def _mnist_or_skip():
    from spiking.data import load_mnist
    try:
        load_mnist()
    except (FileNotFoundError, OSError, ValueError) as exc:
        pytest.skip(f"MNIST not available: {exc}")


def _worker(args, **env):
    return subprocess.Popen([sys.executable, "-c", WORKER, *args], env={**ENV, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The uninterrupted run: (accuracy matrix, events.jsonl text)."""
    _mnist_or_skip()
    out = tmp_path_factory.mktemp("clean") / "r"
    assert main(ARGS + ["--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    return res["acc_matrix"], (out / "events.jsonl").read_text()


def _assert_resumes_to(out: Path, clean, capsys):
    assert main(ARGS + ["--out", str(out), "--resume"]) == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["acc_matrix"] == clean[0]
    assert (out / "events.jsonl").read_text() == clean[1]
    assert not [p for p in out.rglob(".*.tmp-*")], "orphaned temp files must be removed"


@pytest.mark.parametrize("kill_at", ["config.json:1", "checkpoint.pt:2",
                                     "results.json:1"])
def test_sigkill_mid_write_then_resume_is_exact(kill_at, clean, tmp_path, capsys):
    out = tmp_path / "r"
    proc = _worker(ARGS + ["--out", str(out)], KILL_AT=kill_at)
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    name = kill_at.split(":")[0]
    assert list(out.glob(f".{name}.tmp-*")), "the kill must leave a half-written temp file"
    if name == "config.json":  # only that temp file (and the lock): the folder counts as empty
        assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == set()
    if name == "checkpoint.pt":
        done = int(kill_at.split(":")[1]) - 1
        assert (done == 0) != (out / "checkpoint.pt").exists()
        assert done == 0 or len(load_checkpoint(out / "checkpoint.pt")["log"]["rows"]) == done
    _assert_resumes_to(out, clean, capsys)


def test_sigkill_at_random_moments_then_resume_is_exact(clean, tmp_path, capsys):
    seed = int(time.time())
    print(f"kill moments drawn with random.Random({seed})")  # shown if the test fails
    rng = random.Random(seed)
    for trial in range(2):
        out = tmp_path / f"r{trial}"
        proc = _worker(ARGS + ["--out", str(out)])
        deadline = time.time() + 300
        while not (out / "config.json").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _assert_resumes_to(out, clean, capsys)


def test_flipped_byte_is_a_clear_error_and_nothing_is_overwritten(clean, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(ARGS + ["--out", str(out)]) == 0
    capsys.readouterr()
    results = out / "results.json"
    text = results.read_text()
    i = text.index('"ACC": ') + len('"ACC": 0.')
    results.write_text(text[:i] + ("1" if text[i] != "1" else "2") + text[i + 1:])
    snapshot = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert main(ARGS + ["--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "results.json" in err and "corrupt" in err
    results.unlink()  # a checkpoint with one flipped byte in its tensor data
    del snapshot[results]
    ck = out / "checkpoint.pt"
    raw = bytearray(ck.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    ck.write_bytes(bytes(raw))
    snapshot[ck] = bytes(raw)
    assert main(ARGS + ["--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint.pt" in err and "corrupt" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == snapshot
    with pytest.raises(ValueError, match="checksum"):
        load_checkpoint(ck)


def test_racing_writers_one_runs_the_others_fail_naming_the_holder(tmp_path):
    _mnist_or_skip()
    out, go = tmp_path / "r", tmp_path / "go"
    procs = {seed: _worker(ARGS + ["--seed", str(seed), "--out", str(out)], GO_FILE=str(go), SLOW_SAVE="2")
             for seed in (1, 2, 3)}
    time.sleep(0.5)
    go.touch()
    codes = {seed: p.wait(timeout=300) for seed, p in procs.items()}
    errs = {seed: p.stderr.read() for seed, p in procs.items()}
    winners = [s for s, c in codes.items() if c == 0]
    assert len(winners) == 1, (codes, errs)
    (win,) = winners
    for seed in set(codes) - {win}:
        assert codes[seed] == 2, errs[seed]
        line = errs[seed].strip().splitlines()[-1]
        assert "in use by another spiking run" in line and f"pid {procs[win].pid} " in line, line
    assert json.loads((out / "config.json").read_text())["config"]["seed"] == win
    assert json.loads((out / "results.json").read_text())["seed"] == win


def test_lock_of_a_live_run_refuses_and_of_a_killed_one_is_taken_over(tmp_path, capsys):
    _mnist_or_skip()
    out = tmp_path / "r"
    out.mkdir()
    with FolderLock(out):  # a live writer (this process)
        assert main(ARGS + ["--out", str(out), "--resume"]) == 2
        err = capsys.readouterr().err
        assert f"pid {os.getpid()} " in err and "in use" in err
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from spiking.runner.lock import "
                               "FolderLock; FolderLock(sys.argv[1]).acquire(); print('held', flush=True); "
                               "time.sleep(600)", str(out)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert main(ARGS + ["--out", str(out)]) == 0  # the kernel released the dead holder's lock


@pytest.mark.parametrize("unseen", [True, False])
def test_multi_seed_runs_resume_in_every_mode(unseen, tmp_path, capsys):
    _mnist_or_skip()
    out = tmp_path / "m"
    args = ARGS + ["--seeds", "1,2", "--out", str(out)] + ([] if unseen else ["--no-eval-unseen"])
    assert main(args) == 0
    first = json.loads((out / "results.json").read_text())
    assert main(args + ["--resume"]) == 0  # a finished run: its stored results
    assert json.loads((out / "results.json").read_text()) == first
    (out / "results.json").unlink()  # killed after seed 1, before seed 2's results
    (out / "seed_2" / "results.json").unlink()
    assert main(args + ["--resume"]) == 0, capsys.readouterr().err
    again = json.loads((out / "results.json").read_text())
    assert again["acc_matrix"] == first["acc_matrix"] and again["ACC"] == first["ACC"]
    assert again["acc_before"] == first["acc_before"]
    assert all(a is None for a in first["acc_before"]) == (not unseen)  # no before-row: nulls
    # results.json of the other seed in seed 1's folder: refused, naming the file
    s1, s2 = out / "seed_1" / "results.json", out / "seed_2" / "results.json"
    (out / "results.json").unlink()
    s1.write_bytes(s2.read_bytes())
    capsys.readouterr()
    assert main(args + ["--resume"]) == 2
    assert "seed_1/results.json belongs to another run" in capsys.readouterr().err


def test_resume_with_other_threads_or_environment_is_refused(tmp_path, capsys):
    from spiking.runner.outputs import read_checked_json, write_checked_json
    _mnist_or_skip()
    out = tmp_path / "r"
    assert main(ARGS + ["--out", str(out)]) == 0
    capsys.readouterr()
    args = list(ARGS)
    args[args.index("--threads") + 1] = "2"
    assert main(args + ["--out", str(out), "--resume"]) == 2
    assert "threads: stored 1, now 2" in capsys.readouterr().err
    marker = read_checked_json(out / "config.json")
    marker["environment"]["torch"] = "0.0.1"
    write_checked_json(out / "config.json", marker)
    assert main(ARGS + ["--out", str(out), "--resume"]) == 2
    assert "torch: stored '0.0.1'" in capsys.readouterr().err
