"""Sweep specs without Ray: CLI/file reading, points and trials, bad specs refused before any trial."""
import json
import sys

import pytest

from spiking.cli import build_parser, main, sweep_spec
from spiking.sweep import SpecError, run_sweep
from spiking.sweep.spec import expand, from_dict, load_spec, validate

TINY = {"dataset": "sweep_streams:synthetic", "model": "mlp", "hidden": [16], "batch_size": 16}


def test_cli_spec_points_and_trials(tmp_path):
    argv = ["sweep", "--methods", "finetune,hlop", "--seeds", "1,2,3", "--grid", "lr=0.05,0.1",
            "--grid", "hlop.hebb_lr=0.01,0.02", "--dataset", "pmnist", "--tasks", "10", "--epochs", "2",
            "--out", str(tmp_path / "s"), "--cpus", "2"]
    spec = sweep_spec(build_parser().parse_args(argv))
    assert spec["methods"] == ["finetune", "hlop"] and spec["seeds"] == [1, 2, 3]
    assert spec["grid"] == {"lr": [0.05, 0.1], "hlop.hebb_lr": ["0.01", "0.02"]}
    assert spec["settings"] == {"dataset": "pmnist", "tasks": 10, "epochs": 2} and spec["cpus"] == 2
    s = validate(from_dict(spec))
    assert s.grid["hlop.hebb_lr"] == [0.01, 0.02]  # typed by the strategy's declaration
    trials = expand(s, "pmnist", s.seeds)
    assert len(trials) == (2 + 4) * 3
    hlop = [t for t in trials if t.method == "hlop"]
    assert {(t.config["lr"], t.config["options"]["hebb_lr"]) for t in hlop} == {
        (a, b) for a in (0.05, 0.1) for b in (0.01, 0.02)}
    assert all(t.config["tasks"] == 10 and t.config["threads"] == 1 for t in trials)
    assert all("hebb_lr" not in t.config["options"] for t in trials if t.method == "finetune")
    assert hlop[0].key == "pmnist/hlop/lr=0.05_hlop.hebb_lr=0.01/seed_1"


def test_spec_files_toml_yaml_json_agree(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('out = "x"\nmethods = ["ewc"]\nseeds = [1, 2]\n[grid]\nlr = [0.05, 0.1]\n'
                    '"ewc.ewc_lambda" = [10.0, 100.0]\n[settings]\ntasks = 3\n')
    yaml = tmp_path / "s.yaml"
    yaml.write_text('out: x\nmethods: [ewc]\nseeds: [1, 2]\ngrid:\n  lr: [0.05, 0.1]\n'
                    '  ewc.ewc_lambda: [10.0, 100.0]\nsettings:\n  tasks: 3\n')
    js = tmp_path / "s.json"
    js.write_text(json.dumps(load_spec(toml)))
    assert load_spec(toml) == load_spec(yaml) == load_spec(js)
    assert len(expand(validate(from_dict(load_spec(toml))), "pmnist", [1, 2])) == 8


@pytest.mark.parametrize("change, needle", [
    ({"grid": {"colour": [1, 2]}}, "grid colour: unknown setting 'colour'"),
    ({"grid": {"lr": []}}, "grid lr: empty grid"),
    ({"methods": ["finetune", "nope"]}, "methods: unknown method 'nope'"),
    ({"grid": {"lr": [0.1, "fast"]}}, "grid lr: lr must be a finite number"),
    ({"grid": {"ewc.ewc_lambda": [1.0, 2.0]}}, "grid ewc.ewc_lambda: method 'ewc' is not among methods"),
    ({"methods": ["ewc"], "grid": {"ewc.ewc_lamda": [1.0, 2.0]}}, "ewc has no option 'ewc_lamda'"),
    ({"methods": ["ewc"], "grid": {"ewc.ewc_lambda": [1.0, "big"]}}, "grid ewc.ewc_lambda"),
    ({"settings": {"tasks": 0}}, "settings tasks: tasks must be an int >= 1"),
    ({"settings": {"seeds": [1, 2]}}, "settings seeds: 'seeds' is set by the sweep"),
    ({"seeds": [1, 1]}, "seeds: seeds must be distinct"),
    ({"tune_on": "pmnist"}, "tune_on / evaluate_on: give both"),
    ({"tune_on": "pmnist", "evaluate_on": "fashion-pmnist", "eval_seeds": [1]}, "eval_seeds must differ"),
    ({"select": "FWT"}, "select must be one of"),
    ({"colour": 1}, "spec: unknown field(s) ['colour']"),
    ({"settings": {**TINY, "dataset": "no_such_module:f"}}, "dataset: cannot import"),
    ({"settings": {**TINY, "dataset": "pmnist", "scenario": "class"}}, "trial pmnist/finetune"),
    ({"settings": {**TINY, "device": "bogus"}}, "device must be a torch device"),
    ({"methods": ["ewc"], "grid": {"ewc.ewc_lambda": [1.0, float("nan")]}}, "ewc_lambda must be a finite"),
])
def test_bad_specs_fail_before_any_trial_naming_the_entry(tmp_path, change, needle):
    spec = {"out": str(tmp_path / "s"), "methods": ["finetune"], "seeds": [1], **change}
    with pytest.raises(SpecError) as exc:
        run_sweep(spec)
    assert needle in str(exc.value)
    assert not (tmp_path / "s").exists()


def test_bad_grid_value_on_the_cli_exits_2_naming_it(tmp_path, capsys):
    assert main(["sweep", "--grid", "lr=0.1,x", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "grid lr" in err and "'x'" in err
    assert not (tmp_path / "s").exists()


def test_without_ray_sweep_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["sweep", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "spiking[sweep]"' in err
    assert not (tmp_path / "s").exists()


def test_a_second_sweep_in_the_same_folder_fails_at_once(tmp_path):
    from spiking.runner.lock import FolderLock
    folder = tmp_path / "s"
    folder.mkdir()
    with FolderLock(folder):  # another process's sweep holding the folder
        with pytest.raises(ValueError, match="in use by another spiking run"):
            run_sweep({"out": str(folder), "methods": ["finetune"], "seeds": [1], "settings": TINY})
    assert [p.name for p in folder.iterdir()] == [".lock"]  # nothing written
