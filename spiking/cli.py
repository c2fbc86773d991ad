"""``spiking run``: the command line over ``spiking.runner.run``.

    spiking run --method ewc --dataset pmnist --tasks 10 --epochs 1 --batch-size 64 --lr 0.1 \
                --seeds 1,2,3 --eval-every 50 --out runs/ewc

Strategy options (``Strategy.options``) become flags of their own, e.g. ``--ewc-lambda 500``.
Bad input exits with status 2 and a message naming the argument; nothing is overwritten.
"""
from __future__ import annotations

import argparse
import sys
import time


def _int_at_least(name, low):
    def conv(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an int, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{name} must be >= {low}, got {v}")
        return v
    return conv


def _positive(name):
    return _int_at_least(name, 1)


def _nonneg(name):
    return _int_at_least(name, 0)


def _bool(text):
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _unlearn(text):
    try:
        after, target = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--unlearn must be AFTER:TASK (0-based ints), got {text!r}") from None
    return [after, {"task": target}]


def _seeds(text):
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds must be a comma-separated list of ints, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"--seeds must list ints >= 0, got {text!r}")
    return seeds


def _hidden(text):
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden must be comma-separated ints, got {text!r}") from None


def _add_build_command(sub) -> None:
    sub.add_parser("build", help="compile the native code (fused CPU LIF kernel, Sparsey C library) "
                                 "into the build cache ahead of first use (install.sh runs it)")


def _build_command() -> int:
    """``spiking build``: build or find every native library; exit status 1 if one is unavailable."""
    from .build import build_all  # noqa: PLC0415
    results = build_all()
    for name, ok, detail in results:
        print(f"{name}: {'ok' if ok else 'UNAVAILABLE'} ({detail})")
    return 0 if all(ok for _, ok, _ in results) else 1


def build_parser(method: str | None = None) -> argparse.ArgumentParser:
    from .runner.run import DATASETS, MODELS  # noqa: PLC0415
    from .runner.strategies import STRATEGIES  # noqa: PLC0415
    p = argparse.ArgumentParser(prog="spiking", description="spiking neural networks for continual learning")
    sub = p.add_subparsers(dest="command", required=True)
    _add_build_command(sub)
    r = sub.add_parser("run", help="train a strategy over a task stream and write results")
    r.add_argument("--method", default="finetune", choices=sorted(STRATEGIES))
    r.add_argument("--dataset", default="pmnist", choices=DATASETS)
    r.add_argument("--scenario", default=None, choices=("task", "domain", "class"),
                   help="split datasets: task/domain/class-incremental (pmnist is domain)")
    r.add_argument("--tasks", type=_positive("--tasks"), default=None, help="number of tasks (>= 1)")
    r.add_argument("--epochs", type=_positive("--epochs"), default=1)
    r.add_argument("--train-subset", type=_positive("--train-subset"), default=None,
                   help="training samples per task")
    r.add_argument("--batch-size", type=_positive("--batch-size"), default=64)
    r.add_argument("--lr", type=float, default=0.1)
    r.add_argument("--momentum", type=float, default=0.0)
    r.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--seeds", type=_seeds, default=None, help="e.g. 1,2,3 -> mean ± std")
    r.add_argument("--device", default="cpu")
    r.add_argument("--eval-every", type=_nonneg("--eval-every"), default=0,
                   help="continual evaluation every N iterations (0: only after each task)")
    r.add_argument("--eval-subset", type=_positive("--eval-subset"), default=1000,
                   help="test samples per seen task for continual evaluation")
    r.add_argument("--test-subset", type=_positive("--test-subset"), default=None,
                   help="evaluate the accuracy matrix on a fixed n-sample test subset per task "
                        "(default: full test sets)")
    r.add_argument("--no-eval-unseen", dest="eval_unseen", action="store_false",
                   help="after each task evaluate only the tasks seen so far (no FWT; about half the "
                        "evaluation time)")
    r.add_argument("--threads", type=_positive("--threads"), default=None, help="torch threads")
    r.add_argument("--cuda-graph", dest="cuda_graph", action="store_true",
                   help="replay the training step as a CUDA graph (device cuda; methods whose step is "
                        "graph-safe: finetune, ewc, gpm, hlop with dsr/bptt)")
    r.add_argument("--model", default="spiking-mlp", choices=MODELS)
    r.add_argument("--hidden", type=_hidden, default=[800, 800], help="hidden sizes, e.g. 800,800")
    r.add_argument("--T", type=_positive("--T"), default=6, help="time steps of the spiking model")
    r.add_argument("--rehearse-steps", type=_nonneg("--rehearse-steps"), default=0,
                   help="rehearsal steps on old tasks after each task >= 2")
    r.add_argument("--rehearsal", default="uniform", choices=("uniform", "exponential", "power"))
    r.add_argument("--rehearsal-rate", type=float, default=1.0)
    r.add_argument("--unlearn", type=_unlearn, action="append", default=[],
                   help="AFTER:TASK: after task AFTER, a request to forget task TASK (0-based; repeatable)")
    r.add_argument("--data-path", default=None)
    r.add_argument("--out", default=None, help="output folder (default runs/<method>-<dataset>-<time>)")
    r.add_argument("--resume", action="store_true", help="continue the run held in --out")
    r.add_argument("--no-progress", action="store_true")
    if method in STRATEGIES:
        g = r.add_argument_group(f"{method} options")
        for name, (typ, default, text) in STRATEGIES[method].options.items():
            g.add_argument("--" + name.replace("_", "-"), dest="opt_" + name,
                           type=_bool if typ is bool else typ, default=default, help=text)
    return p


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
    options = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_")}
    out = args.out or f"runs/{args.method}-{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = dict(
        method=args.method, dataset=args.dataset, scenario=args.scenario, tasks=args.tasks,
        epochs=args.epochs, train_subset=args.train_subset, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, optimizer=args.optimizer, seed=args.seed, seeds=args.seeds,
        device=args.device, eval_every=args.eval_every, eval_subset=args.eval_subset,
        test_subset=args.test_subset, eval_unseen=args.eval_unseen, threads=args.threads,
        cuda_graph=args.cuda_graph, model=args.model, hidden=args.hidden, T=args.T, options=options,
        rehearse_steps=args.rehearse_steps, rehearsal=args.rehearsal,
        rehearsal_rate=args.rehearsal_rate, unlearn=args.unlearn, data_path=args.data_path, out=out, resume=args.resume,
        progress=not args.no_progress)
    try:
        res = run(config)
    except (ValueError, TypeError, OSError, TrainingDiverged) as exc:
        # bad settings, unusable folders or files, a diverged loss: one line, no traceback
        print(f"spiking run: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spiking run: interrupted; continue with --resume --out {out}", file=sys.stderr)
        return 130
    print(summary_table(res))
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
