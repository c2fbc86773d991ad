"""The one declaration of run settings: defaults, checks, CLI flags and help, registries."""
import pytest

from spiking import __version__
from spiking.cli import build_parser, main, run_config
from spiking.runner import run
from spiking.runner.config import RUNTIME_KEYS, SETTINGS, RunConfig, check, default_config, parse_text
from spiking.runner.registry import DATASETS, MODELS
from spiking.runner.run import normalize_config
from spiking.runner.strategies import STRATEGIES


def test_runconfig_dataclass_is_the_declaration():
    assert RunConfig().to_dict() == default_config()
    assert set(default_config()) == set(SETTINGS)
    cfg = RunConfig(method="ewc", tasks=3).to_dict()
    assert cfg["method"] == "ewc" and cfg["tasks"] == 3 and cfg["hidden"] == [800, 800]
    assert RunConfig().hidden is not RunConfig().hidden  # fresh list defaults
    with pytest.raises(ValueError, match="tasks must be an int >= 1"):
        RunConfig(tasks=0).to_dict()
    assert set(RUNTIME_KEYS) == {"out", "resume", "progress", "data_path", "seeds"}


def test_cli_defaults_equal_the_declared_defaults():
    args = build_parser("finetune").parse_args(["run"])
    cfg = run_config(args)
    for name, s in SETTINGS.items():
        if name in ("out", "progress", "options"):
            continue
        assert cfg[name] == s.default, name
    assert cfg["progress"] is True and cfg["out"].startswith("runs/finetune-pmnist-")
    assert normalize_config({**cfg, "out": None})["seeds"] == [0]


def test_every_setting_is_a_flag_and_help_shows_defaults_and_method_options(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, s in SETTINGS.items():
        if s.kind != "options":
            assert "--" + name.replace("_", "-") in text, name
    assert "--lr X learning rate (default: 0.1)" in text
    assert "--hidden N,N,... hidden layer sizes, e.g. 800,800 (default: 800,800)" in text
    for method, cls in STRATEGIES.items():
        for opt, (_, default, _) in cls.options.items():
            assert "--" + opt.replace("_", "-") in text, (method, opt)
    assert "--ewc-lambda FLOAT EWC penalty strength λ (default: 1000.0)" in text
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"spiking {__version__}"


def test_method_flags_have_readable_metavars(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--method", "hlop", "--help"])
    text = capsys.readouterr().out
    assert "--hebb-lr FLOAT" in text and "OPT_" not in text


@pytest.mark.parametrize("name, text, value", [
    ("lr", "0.05", 0.05), ("tasks", "none", None), ("hidden", "400,200", [400, 200]),
    ("eval_unseen", "no", False), ("unlearn", "2:0", [[2, {"task": 0}]]), ("seeds", "1,2", [1, 2]),
])
def test_parse_text(name, text, value):
    assert parse_text(name, text) == value


@pytest.mark.parametrize("name, value, needle", [
    ("lr", "0.1", "lr must be a finite number"), ("epochs", 1.5, "epochs must be an int >= 1"),
    ("optimizer", "rmsprop", "optimizer must be one of ['sgd', 'adam']"), ("hidden", [], "hidden"),
    ("eval_unseen", 1, "eval_unseen must be True or False"), ("dataset", "cifar", "module:factory"),
])
def test_check_names_the_setting(name, value, needle):
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        check(name, value)


def test_registries_and_module_factory_strings(tmp_path):
    assert {"pmnist", "fashion-pmnist", "split-mnist", "split-fashion"} <= set(DATASETS.names())
    assert {"spiking-mlp", "mlp"} <= set(MODELS.names())
    cfg = {"dataset": "sweep_streams:synthetic", "model": "sweep_streams:tiny_model", "batch_size": 32,
           "threads": 1, "seed": 3}
    res = run(cfg)
    assert res["config"]["dataset"] == "sweep_streams:synthetic" and len(res["acc_matrix"]) == 3
    assert res["ACC"] > 0.3  # 4 classes: the tiny model learns its teacher tasks
    with pytest.raises(ValueError, match="model: cannot import 'sweep_streams:nope'"):
        run({**cfg, "model": "sweep_streams:nope"})
    DATASETS.register("teacher-test", lambda c, s: __import__("sweep_streams").synthetic(c, s))
    try:
        again = run({**cfg, "dataset": "teacher-test"})
    finally:
        del DATASETS.entries["teacher-test"]
    assert again["acc_matrix"] == res["acc_matrix"]


def test_cli_stream_and_model_flags_take_module_factory(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "--stream", "sweep_streams:synthetic", "--model", "sweep_streams:tiny_model",
                 "--threads", "1", "--no-progress", "--out", str(out)]) == 0
    assert (out / "results.json").exists()
