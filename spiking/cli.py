"""``spiking run`` / ``spiking sweep`` / ``spiking build``: the command line over the library.

    spiking run --method ewc --dataset pmnist --tasks 10 --epochs 1 --batch-size 64 --lr 0.1 \
                --seeds 1,2,3 --eval-every 50 --out runs/ewc
    spiking sweep --methods finetune,ewc --seeds 1,2,3 --grid lr=0.05,0.1 --tasks 10 --out sweeps/lr

The run flags are generated from the settings declaration (``spiking.runner.config.SETTINGS``),
each help line showing the default; strategy options (``Strategy.options``) become flags of their
own after ``--method NAME`` (e.g. ``--ewc-lambda 500``) and are listed for every method in the help.
Bad input exits with status 2 and a message naming the argument; nothing is overwritten.
"""
from __future__ import annotations

import argparse
import sys
import time

from . import __version__
from .runner.config import SETTINGS, parse_text
from .runner.strategies import STRATEGIES
from .sweep.spec import SWEEP_OWNED


def _converter(flag: str, name: str):
    """argparse type: the setting's text reading (``config.parse_text``), errors naming the flag."""
    def conv(text):
        try:
            value = parse_text(name, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{flag}: {exc}") from None
        return value[0] if SETTINGS[name].kind == "unlearn" else value  # append: one pair per flag
    return conv


_METAVAR = {"int": "N", "float": "X", "ints": "N,N,...", "seeds": "S,S,...", "unlearn": "AFTER:TASK"}


def _shown(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) if value else "none"
    return "none" if value is None else str(value)


def _with_default(text: str, default) -> str:
    return text if "default" in text.lower() else f"{text} (default: {_shown(default)})"


def add_run_settings(parser, skip=(), defaults=True, overrides=None) -> None:
    """One flag per run setting (``config.SETTINGS``), help showing its default and allowed values.

    ``defaults=False``: unset flags stay absent from the namespace (a sweep's overrides);
    ``overrides``: defaults of this command that differ from the setting's (``progress`` on the CLI).
    """
    for name, s in SETTINGS.items():
        if name in skip or s.kind == "options":
            continue
        default = (overrides or {}).get(name, s.default)
        flag = "--" + name.replace("_", "-")
        kw = {"dest": name, "help": _with_default(s.help, default)}
        if not defaults:
            kw["default"] = argparse.SUPPRESS
        allowed = s.allowed()
        if s.kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                **({"default": default} if defaults else {}), **kw)
            continue
        if allowed and not s.open_choices:
            kw["choices"] = list(allowed) + (["none"] if s.optional else [])
        elif allowed:
            kw["metavar"] = "{" + ",".join(allowed) + "}|MODULE:FACTORY"
        else:
            kw["metavar"] = _METAVAR.get(s.kind, "PATH" if name in ("out", "data_path") else "TEXT")
        if s.kind == "unlearn":
            kw["action"] = "append"
        parser.add_argument(flag, type=_converter(flag, name),
                            **({"default": [] if s.kind == "unlearn" else default} if defaults else {}), **kw)
        if name == "dataset":
            parser.add_argument("--stream", dest=name, type=_converter("--stream", name), metavar="MODULE:FACTORY",
                                help="your own task stream: factory(cfg, seed) -> TaskStream (same as "
                                     "--dataset MODULE:FACTORY)",
                                **({} if defaults else {"default": argparse.SUPPRESS}))


def method_options_text() -> str:
    """Every strategy's options, for the help epilog."""
    lines = ["method options (give them after --method NAME; `spiking run --method NAME --help` lists "
             "them as flags; in a sweep: --grid NAME.OPTION=V1,V2):"]
    for method, cls in sorted(STRATEGIES.items()):
        if not cls.options or method != cls.name:
            continue
        lines.append(f"  {method}:")
        for opt, (typ, default, text) in cls.options.items():
            flag = f"--{opt.replace('_', '-')} {getattr(typ, '__name__', 'value').upper()}"
            lines.append(f"    {flag:<28} {_with_default(text, default)}")
    return "\n".join(lines)


def add_sweep_arguments(sw) -> None:
    sw.add_argument("--spec", default=None, metavar="FILE",
                    help="sweep spec (.toml, .yaml or .json); flags given here override it")
    sw.add_argument("--methods", default=None, metavar="M,M,...", help="methods (default: finetune)")
    sw.add_argument("--seeds", default=None, metavar="S,S,...", help="seeds of every grid point (default: 0)")
    sw.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                    help="values of a run setting (lr=0.05,0.1) or of a method's option "
                         "(hlop.hebb_lr=0.01,0.02); points of list settings split by ';' "
                         "(hidden=400,400;800,800); one value fixes it; repeatable")
    sw.add_argument("--out", default=None, metavar="DIR", help="the sweep's folder (required)")
    sw.add_argument("--cpus", type=int, default=None, metavar="N", help="local Ray: CPUs to use (default: all)")
    sw.add_argument("--gpus-per-trial", type=float, default=None, metavar="X", help="GPUs per trial (default: 0)")
    sw.add_argument("--address", default=None, metavar="HOST:PORT",
                    help="join this Ray cluster (ray start --head prints it)")
    sw.add_argument("--resume", action="store_true", default=None,
                    help="continue the sweep in --out: finished trials are kept, killed ones resume")
    sw.add_argument("--max-retries", type=int, default=None, metavar="N",
                    help="re-runs of a trial whose worker died (default: 3)")
    sw.add_argument("--tune-on", default=None, metavar="DATASET",
                    help="reality check: phase 1 (grid, pick per method) on this dataset")
    sw.add_argument("--evaluate-on", default=None, metavar="DATASET",
                    help="reality check: phase 2 (the picks, unchanged, fresh seeds) on this dataset")
    sw.add_argument("--select", default=None, choices=("ACC", "BWT", "ACC+BWT"),
                    help="reality check: criterion of the pick (default: ACC)")
    sw.add_argument("--eval-seeds", default=None, metavar="S,S,...",
                    help="reality check: phase 2 seeds (default: the next len(seeds) after the largest seed)")
    sw.add_argument("--no-contrast", dest="contrast", action="store_false", default=None,
                    help="reality check: skip the grid on the evaluation dataset (the tuned-on-test contrast)")
    sw.add_argument("--isolate", action="store_true", default=None,
                    help="each trial in a fresh worker process (its own peak memory; a worker start per trial)")
    sw.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                    help="no progress bar over trials")
    g = sw.add_argument_group("run settings of every trial (default: the spiking run defaults; "
                              "threads is per trial, default 1)")
    add_run_settings(g, skip=SWEEP_OWNED, defaults=False)


def _add_build_command(sub) -> None:
    sub.add_parser("build", help="compile the native code (fused CPU LIF and neuron kernels, event-driven "
                                 "spike matmul, Sparsey C library; with a CUDA torch the C++ launcher of the "
                                 "CUDA kernels) into the build cache ahead of first use (install.sh runs it)")


def _build_command() -> int:
    """``spiking build``: build or find every native library; exit status 1 if one is unavailable."""
    from .build import build_all  # noqa: PLC0415
    results = build_all()
    for name, ok, detail in results:
        print(f"{name}: {'ok' if ok else 'UNAVAILABLE'} ({detail})")
    return 0 if all(ok for _, ok, _ in results) else 1


def build_parser(method: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spiking", description="spiking neural networks for continual learning")
    p.add_argument("--version", action="version", version=f"spiking {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_build_command(sub)
    r = sub.add_parser("run", help="train a strategy over a task stream and write results",
                       epilog=method_options_text(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_settings(r, overrides={"progress": True})
    if method in STRATEGIES:
        g = r.add_argument_group(f"{method} options")
        for name, (typ, default, text) in STRATEGIES[method].options.items():
            g.add_argument("--" + name.replace("_", "-"), dest="opt_" + name,
                           metavar=getattr(typ, "__name__", "VALUE").upper(),
                           type=_bool if typ is bool else typ, default=default,
                           help=_with_default(text, default))
    sw = sub.add_parser("sweep", help="many runs (methods x grid x seeds, or the reality check) on Ray",
                        epilog=method_options_text(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweep_arguments(sw)
    return p


def _bool(text):
    try:
        return parse_text("eval_unseen", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_config(args) -> dict:
    """The run config of parsed ``spiking run`` arguments."""
    config = {name: getattr(args, name) for name in SETTINGS if hasattr(args, name)}
    config["options"] = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_")}
    if config["out"] is None:
        config["out"] = f"runs/{args.method}-{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    return config


def sweep_spec(args) -> dict:
    """The sweep spec of parsed ``spiking sweep`` arguments (flags override ``--spec``)."""
    from .sweep.spec import grid_values, load_spec  # noqa: PLC0415
    spec = load_spec(args.spec) if args.spec else {}
    settings = dict(spec.get("settings", {}))
    settings.update({name: getattr(args, name) for name in SETTINGS
                     if name not in SWEEP_OWNED and hasattr(args, name)})
    if settings:
        spec["settings"] = settings
    grid = dict(spec.get("grid", {}))
    for entry in args.grid:
        name, sep, values = entry.partition("=")
        if not sep:
            raise ValueError(f"--grid needs NAME=V1,V2, got {entry!r}")
        grid[name.strip()] = grid_values(name.strip(), values)
    if grid:
        spec["grid"] = grid
    for key in ("methods", "seeds", "eval_seeds"):
        text = getattr(args, key)
        if text is not None:
            spec[key] = [t.strip() for t in text.split(",") if t.strip()]
            if key != "methods":
                spec[key] = [parse_text("seed", t) if t.isdigit() else t for t in spec[key]]
    for key in ("out", "cpus", "gpus_per_trial", "address", "resume", "max_retries", "tune_on",
                "evaluate_on", "select", "contrast", "isolate", "progress"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    return spec


def sweep_main(args) -> int:
    from .sweep import run_sweep  # noqa: PLC0415
    from .sweep.engine import INSTALL_HINT, import_ray  # noqa: PLC0415
    from .sweep.report import table  # noqa: PLC0415
    try:
        import_ray()
    except ImportError:
        print(f"spiking sweep: error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        result = run_sweep(sweep_spec(args))
    except (ValueError, TypeError, FileNotFoundError, ConnectionError) as exc:
        print(f"spiking sweep: error: {exc}", file=sys.stderr)
        return 2
    print(table(result))
    failed = sum(t["status"] != "done" for t in result["trials"])
    print(f"{len(result['trials'])} trials ({failed} failed); results in {args.out or result['spec']['out']}")
    return 1 if failed else 0


def main(argv=None) -> int:
    from .runner.outputs import summary_table  # noqa: PLC0415
    from .runner.run import TrainingDiverged, run  # noqa: PLC0415
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method", default="finetune")
    known, _ = pre.parse_known_args(argv)
    parser = build_parser(known.method)
    args = parser.parse_args(argv)
    if args.command == "build":
        return _build_command()
    if args.command == "sweep":
        return sweep_main(args)
    config = run_config(args)
    try:
        res = run(config)
    except (ValueError, TypeError, OSError, TrainingDiverged) as exc:
        # bad settings, unusable folders or files, a diverged loss: one line, no traceback
        print(f"spiking run: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spiking run: interrupted; continue with --resume --out {config['out']}", file=sys.stderr)
        return 130
    print(summary_table(res))
    print(f"results in {config['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
