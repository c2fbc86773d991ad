"""Episodic memory with one Sparsey macrocolumn: store sequences in one pass, replay them from a
partial cue of their first frame, compare familiarity of stored / perturbed / novel frames, and
forget one sequence exactly.

    python examples/episodic_memory.py --out out/episodic

Frames are random binary patterns (a of N active); some frames are shared between sequences so
that only the horizontal (H) signal from the previous frame's code tells the continuations apart.
Writes familiarity.png and episodic.json into --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from spiking.memory import Macrocolumn  # noqa: E402


def frames(M, N, a, gen):
    idx = torch.rand(M, N, generator=gen).argsort(1)[:, :a]
    return torch.zeros(M, N).scatter_(1, idx, 1.0)


def perturb(x, frac, gen):
    """Move a fraction of the active bits of each row to random inactive positions."""
    y = x.clone()
    for row in y:
        on, off = torch.nonzero(row).reshape(-1), torch.nonzero(row == 0).reshape(-1)
        m = int(round(frac * len(on)))
        row[on[torch.randperm(len(on), generator=gen)[:m]]] = 0
        row[off[torch.randperm(len(off), generator=gen)[:m]]] = 1
    return y


def auc(pos, neg):
    p, n = pos.double().unsqueeze(1), neg.double().unsqueeze(0)
    return float(((p > n).double() + 0.5 * (p == n).double()).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/episodic")
    ap.add_argument("--n-seq", type=int, default=20)
    ap.add_argument("--length", type=int, default=8)
    ap.add_argument("--N", type=int, default=400)
    ap.add_argument("--a", type=int, default=24)
    ap.add_argument("--Q", type=int, default=32)
    ap.add_argument("--K", type=int, default=16)
    ap.add_argument("--cue", type=float, default=0.5, help="fraction of the first frame's active bits kept")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    S, T = args.n_seq, args.length
    seqs = frames(S * T, args.N, args.a, gen).view(S, T, args.N)
    for s in range(1, S, 2):                    # odd sequences share their middle frame with the previous one
        seqs[s, T // 2] = seqs[s - 1, T // 2]

    mac = Macrocolumn(args.N, args.Q, args.K, seed=args.seed)
    t0 = time.perf_counter()
    stored = [mac.store_sequence(seqs[s]) for s in range(S)]
    t_store = time.perf_counter() - t0

    # replay from a partial cue of the first frame
    t0 = time.perf_counter()
    frame_ok, code_ok = [], []
    for s in range(S):
        cue = seqs[s, 0].clone()
        on = torch.nonzero(cue).reshape(-1)
        cue[on[torch.randperm(len(on), generator=gen)[: int(round((1 - args.cue) * len(on)))]]] = 0
        codes, xs = mac.replay(cue, steps=T)
        code_ok.append(float((codes == stored[s][0]).float().mean()))
        frame_ok.append(float((xs == seqs[s].bool()).all(1).float().mean()))
    t_replay = time.perf_counter() - t0

    flat = seqs.reshape(-1, args.N)
    G_stored = mac.familiarity(flat)
    G_pert = {f: mac.familiarity(perturb(flat, f, gen)) for f in (0.1, 0.25, 0.5)}
    G_novel = mac.familiarity(frames(len(flat), args.N, args.a, gen))

    # exact forgetting of sequence 0: its frames become as unfamiliar as novel ones would be
    mac.forget(stored[0][1])
    G_forgot = mac.familiarity(seqs[0])
    codes1, xs1 = mac.replay(seqs[1, 0], steps=T)
    kept_after = float((xs1 == seqs[1].bool()).all(1).float().mean())

    res = {
        "command": " ".join(["python"] + sys.argv),
        "config": vars(args), "fill": mac.fill(),
        "store_s": t_store, "replay_s": t_replay,
        "replay_code_accuracy": sum(code_ok) / S, "replay_frame_exact_rate": sum(frame_ok) / S,
        "familiarity_mean": {"stored": float(G_stored.mean()), "novel": float(G_novel.mean()),
                             **{f"perturbed_{f}": float(g.mean()) for f, g in G_pert.items()}},
        "auc_stored_vs_novel": auc(G_stored, G_novel),
        **{f"auc_stored_vs_perturbed_{f}": auc(G_stored, g) for f, g in G_pert.items()},
        "forgotten_sequence_mean_G": float(G_forgot.mean()),
        "replay_frame_exact_rate_seq1_after_forgetting_seq0": kept_after,
    }
    (out / "episodic.json").write_text(json.dumps(res, indent=2))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = torch.linspace(0, 1, 41).tolist()
    ax.hist(G_novel.tolist(), bins=bins, alpha=0.6, label="novel")
    for f, g in G_pert.items():
        ax.hist(g.tolist(), bins=bins, alpha=0.5, label=f"stored, {int(100 * f)} % of bits moved")
    ax.hist(G_stored.tolist(), bins=bins, alpha=0.7, label="stored")
    ax.hist(G_forgot.tolist(), bins=bins, alpha=0.9, histtype="step", lw=2, label="forgotten sequence")
    ax.set_xlabel("familiarity G"), ax.set_ylabel("frames")
    ax.set_title(f"{S} sequences x {T} frames, replay exact {res['replay_frame_exact_rate']:.2f}, "
                 f"AUC stored/novel {res['auc_stored_vs_novel']:.3f}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "familiarity.png", dpi=110)
    print(json.dumps(res, indent=2))
    print(f"wrote {out / 'familiarity.png'} and {out / 'episodic.json'}")


if __name__ == "__main__":
    main()
