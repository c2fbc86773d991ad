"""A Sparsey macrocolumn: Q competitive modules of K binary units over N binary inputs, storing
episodic traces in superposition with single-trial learning and exact forgetting.

    mac = Macrocolumn(784, Q=32, K=16, seed=0)
    code, tid = mac.store(x)            # x [N] (or a batch [B, N]) in {0, 1}
    code, G = mac.recall(x)             # learning off, argmax V; G = familiarity
    x_hat = mac.complete(partial_x)     # pattern completion back to the input space
    mac.forget(tid)                     # exact: weights = what the other traces alone wrote

Signals (see :mod:`spiking.memory.csa`): U from the inputs, H from the MAC's own code at t-1
(sequences, ``horizontal=True``), D from an optional top-down binary vector of size ``n_top``.

Forgetting: the per-synapse counts are kept factorised as the trace table (count_ij = Σ_t [i ∈
code_t] x_tj, see :mod:`spiking.memory.synapses`; ``counts()`` materialises them), so ``forget(id)``
rebuilds the rows of the forgotten codes from the remaining traces and leaves exactly the weights
the remaining traces' codes would have written alone.
What it cannot undo: codes chosen *after* the forgotten trace was stored were selected while its
weights were present (they may differ from the codes a memory that never saw it would have picked),
and traces stored while the MAC was frozen by the critical period wrote nothing.

Critical period: once the fraction of input weights set reaches ``theta_sat`` the MAC stops writing
(``frozen``); stores still return codes and ids (``written`` is False for them).
``theta_sat=None`` switches the critical period off: the MAC keeps writing as its weights fill
up, and past about half fill (the measured capacity, README "Sparsey MAC") the superposed traces
cross-talk, so earlier traces are no longer recalled exactly. Use it only to study that regime.
"""
from __future__ import annotations

import math

import torch

from . import cpu as _cpu
from . import cuda as _cuda
from .csa import CSAParams, code_units, combine, gate, normalise, pack_bits, select, unpack_bits
from .learn import select_sequence_torch
from .synapses import PackedSynapses, trace_counts
from .traces import TraceTable

__all__ = ["Macrocolumn"]

_PARAM_NAMES = set(CSAParams.__dataclass_fields__)


class Macrocolumn:
    """Sparsey MAC. Extra keyword arguments are :class:`CSAParams` fields (``s``, ``c``, ``chi``, ...)."""

    def __init__(self, n_inputs: int, Q: int = 32, K: int = 16, *, n_top: int = 0, horizontal: bool = True,
                 theta_sat: float | None = 0.5, seed: int = 0, device: str | torch.device = "cpu",
                 backend: str = "auto", params: CSAParams | None = None, **csa):
        for name, v in (("n_inputs", n_inputs), ("Q", Q), ("K", K)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if K < 2:
            raise ValueError(f"K must be >= 2, got {K}")
        if not isinstance(n_top, int) or n_top < 0:
            raise ValueError(f"n_top must be an int >= 0, got {n_top!r}")
        if theta_sat is not None and (isinstance(theta_sat, bool) or not isinstance(theta_sat, (int, float))
                                      or not 0.0 < theta_sat <= 1.0):
            raise ValueError(f"theta_sat must lie in (0, 1] or be None (no critical period: recall is "
                             f"no longer exact past about half fill), got {theta_sat!r}")
        if backend not in ("auto", "c", "torch"):
            raise ValueError(f"backend must be 'auto', 'c' or 'torch', got {backend!r}")
        unknown = set(csa) - _PARAM_NAMES
        if unknown:
            raise TypeError(f"unknown CSA parameter(s) {sorted(unknown)}; known: {sorted(_PARAM_NAMES)}")
        if params is not None and csa:
            raise TypeError("pass either params or individual CSA keyword arguments, not both")
        self.params = params if params is not None else CSAParams(**csa)
        self.N, self.Q, self.K, self.n_top = n_inputs, Q, K, n_top
        self.QK = Q * K
        self.horizontal, self.theta_sat, self.seed = horizontal, theta_sat, seed
        self.device = torch.device(device)
        self.backend = backend
        self.U = PackedSynapses(self.N, self.QK, self.device)
        self.H = PackedSynapses(self.QK, self.QK, self.device) if horizontal else None
        self.D = PackedSynapses(n_top, self.QK, self.device) if n_top else None
        self.generator = torch.Generator().manual_seed(seed)
        self.n_set = 0
        nw, nwd = (self.N + 63) // 64, (n_top + 63) // 64
        # trace table (row = id): packed input, code, previous code (-1: none), packed top, flags
        ct = torch.int16 if K < 2**15 else torch.int64
        self.traces = TraceTable({"x": ((nw,), torch.int64), "code": ((Q,), ct),
                                  "prev": ((Q,), ct), "top": ((nwd,), torch.int64),
                                  "written": ((), torch.bool), "alive": ((), torch.bool)})

    _tx = property(lambda self: self.traces["x"])
    _tcode = property(lambda self: self.traces["code"].long())
    _tprev = property(lambda self: self.traces["prev"].long())
    _ttop = property(lambda self: self.traces["top"])
    _twritten = property(lambda self: self.traces["written"])
    _talive = property(lambda self: self.traces["alive"])

    # ------------------------------------------------------------------ properties
    @property
    def cap(self) -> int:
        """Number of set input weights at which the MAC freezes (-1: never)."""
        return -1 if self.theta_sat is None else math.ceil(self.theta_sat * self.N * self.QK)

    @property
    def frozen(self) -> bool:
        return self.cap >= 0 and self.n_set >= self.cap

    def fill(self) -> float:
        """Fraction of input weights set."""
        return self.n_set / (self.N * self.QK)

    def __len__(self) -> int:
        return int(self._talive.sum())

    def ids(self) -> torch.Tensor:
        """Ids of the stored (not forgotten) traces."""
        return torch.nonzero(self._talive).reshape(-1)

    def trace(self, tid: int) -> dict:
        """Input (bool [N]), code [Q] int64, previous code or None, written flag of a stored trace.

        Only row ``tid`` is read and copied (O(N + Q), whatever the number of stored traces)."""
        self._check_ids(tid)
        prev = self.traces["prev"][tid].long()
        return {"x": unpack_bits(self.traces["x"][tid].clone(), self.N),
                "code": self.traces["code"][tid].long(),
                "prev": None if bool((prev < 0).all()) else prev, "written": bool(self._twritten[tid])}

    def nbytes(self) -> int:
        """Bytes held by the synapses (packed binary weights; the trace table is extra, ~M·(8·nw + 4Q))."""
        return sum(s.nbytes() for s in (self.U, self.H, self.D) if s is not None)

    # ------------------------------------------------------------------ validation
    def _pack(self, x, n: int, name: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Validate a binary input ``[n]`` or ``[B, n]``: (packed int64 ``[B, nw]``, |x| int64 ``[B]``,
        single) on the compute device (one C pass on CPU for uint8 / bool / float32 inputs)."""
        if not isinstance(x, torch.Tensor):
            try:
                x = torch.as_tensor(x)
            except (TypeError, ValueError, RuntimeError) as e:
                raise TypeError(f"{name} must be a tensor or array of 0/1 values: {e}") from None
        if x.dim() not in (1, 2) or x.shape[-1] != n:
            raise ValueError(f"{name} must have shape [{n}] or [B, {n}], got {tuple(x.shape)}")
        single = x.dim() == 1
        x = x.reshape(-1, n)
        if x.device.type == "cpu" and x.dtype in _cpu.PACK_DTYPES and _cpu.available():
            xp, nx, bad = _cpu.pack_validate(x)
        else:
            bad = -1 if x.dtype == torch.bool or (not x.is_complex() and bool(((x == 0) | (x == 1)).all())) else 0
            xb = x != 0
            xp, nx = pack_bits(xb), xb.sum(1)
        if bad >= 0:
            raise ValueError(f"{name} must be binary (0/1 or bool)")
        return xp.to(self.device), nx.to(self.device), single

    def _check_ids(self, ids):
        t = torch.as_tensor(ids).reshape(-1)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"id must be an int or ints, got {ids!r}")
        n = len(self._talive)
        bad = [int(i) for i in t.tolist() if not (0 <= i < n) or not bool(self._talive[i])]
        if bad:
            raise ValueError(f"id {bad[0]} is not a stored trace (unknown or already forgotten)")
        return t

    def _top(self, top, B: int):
        """Validated top-down input as (packed ``[B, nwd]``, |top| ``[B]``), or None."""
        if top is None:
            return None
        if self.D is None:
            raise ValueError("top was given but this Macrocolumn has n_top=0")
        tp, nd, _ = self._pack(top, self.n_top, "top")
        if tp.shape[0] == 1 and B > 1:
            tp, nd = tp.expand(B, -1).contiguous(), nd.expand(B).contiguous()
        if tp.shape[0] != B:
            raise ValueError(f"top has {tp.shape[0]} rows for {B} inputs")
        return tp, nd

    def _use_c(self) -> bool:
        if self.backend == "torch" or self.device.type != "cpu":
            return False
        ok = _cpu.available()
        if self.backend == "c" and not ok:
            raise RuntimeError(f"backend='c' but the C fast path is unavailable: {_cpu._ERR}")
        return ok

    def _param_vec(self) -> torch.Tensor:
        p = self.params
        return torch.tensor([p.lambda_u, p.lambda_h, p.lambda_d, p.g_minus, p.gamma, p.chi, p.s, p.c],
                            dtype=torch.float64)

    # ------------------------------------------------------------------ learning
    def _run(self, xp, nx, top, chain: bool, r, learn: bool):
        """Sequential CSA over packed rows ``xp`` (chain: H from the previous row); writes the packed
        weights in place when learning. Returns codes, G, written, ok (CPU)."""
        ok = gate(nx, self.params)
        use_h = chain and self.H is not None
        tp, nd = top if top is not None else (None, None)
        groups = [s for s, on in ((self.U, True), (self.H, use_h), (self.D, top is not None)) if on]
        if self._use_c():
            codes, G, written, self.n_set = _cpu.select_sequence_cpu(
                xp, nx, self.U.packed, self.H.packed if use_h else None, None, tp, nd,
                self.D.packed if top is not None else None, ok.to(torch.uint8), self._param_vec(), r,
                learn, self.n_set, self.cap if learn else -1, self.Q, self.K)
            if learn and bool(written.any()):
                for s in groups:
                    s.changed()
        else:
            dense = [s.binary().to(torch.float64) for s in groups]
            wu, wh = dense[0], dense[1] if use_h else None
            wd = dense[-1] if top is not None else None
            x = unpack_bits(xp, self.N).to(torch.float64)
            t = unpack_bits(tp, self.n_top).to(torch.float64) if top is not None else None
            codes, G, written, self.n_set = select_sequence_torch(
                x, wu, wh, None, t, wd, ok, self.params, None if r is None else r.to(self.device),
                learn, self.n_set, self.cap if learn else -1, self.Q, self.K)
            if learn and bool(written.any()):
                for s, w in zip(groups, dense):
                    s.assign(w)
        return codes.cpu(), G.float().cpu(), written.cpu(), ok.cpu()

    def _record(self, xp, codes, written, ok, top, chain: bool) -> torch.Tensor:
        """Append trace rows for participating queries; returns ids (-1 for gated-out inputs)."""
        B = xp.shape[0]
        n0 = len(self._talive)
        ids = torch.full((B,), -1, dtype=torch.int64)
        keep = torch.nonzero(ok).reshape(-1)
        ids[keep] = torch.arange(n0, n0 + len(keep))
        prev = torch.full((B, self.Q), -1, dtype=torch.int64)
        if chain and self.H is not None and B > 1:
            prev[1:] = codes[:-1]
            prev[1:][~ok[:-1]] = -1
        tp = (top[0].cpu()[keep] if top is not None
              else torch.zeros(len(keep), self._ttop.shape[1], dtype=torch.int64))
        self.traces.append(x=xp.cpu()[keep], code=codes[keep], prev=prev[keep], top=tp, written=written[keep],
                           alive=torch.ones(len(keep), dtype=torch.bool))
        return ids

    def _draws(self, B: int) -> torch.Tensor:
        return torch.rand(B, self.Q, generator=self.generator, dtype=torch.float64)

    def store(self, x, top=None):
        """Store one input ``[N]`` or a batch ``[B, N]`` (sequentially, each row its own trace, no H).

        Returns (code ``[Q]`` / ``[B, Q]`` int64, id int / ``[B]``); gated-out inputs get code -1, id -1."""
        xp, nx, single = self._pack(x, self.N, "x")
        topb = self._top(top, xp.shape[0])
        codes, _, written, ok = self._run(xp, nx, topb, False, self._draws(xp.shape[0]), True)
        ids = self._record(xp, codes, written, ok, topb, False)
        return (codes[0], int(ids[0])) if single else (codes, ids)

    def store_sequence(self, xs, top=None):
        """Store a sequence ``[T, N]``: frame t's code is chosen with H from frame t-1's code and the
        H synapses (code_{t-1} -> code_t) are learned. Returns (codes ``[T, Q]``, ids ``[T]``)."""
        if isinstance(xs, (list, tuple)) and len(xs) == 0:
            raise ValueError("xs is an empty sequence")
        if isinstance(xs, torch.Tensor) and (xs.dim() == 0 or xs.shape[0] == 0):
            raise ValueError("xs is an empty sequence")
        if isinstance(xs, (list, tuple)):
            xs = torch.stack([torch.as_tensor(v) for v in xs])
        xp, nx, single = self._pack(xs, self.N, "xs")
        if single:
            raise ValueError(f"xs must be a sequence [T, {self.N}], got shape {tuple(xs.shape)}")
        topb = self._top(top, xp.shape[0])
        codes, _, written, ok = self._run(xp, nx, topb, True, self._draws(xp.shape[0]), True)
        return codes, self._record(xp, codes, written, ok, topb, True)

    # ------------------------------------------------------------------ retrieval
    def _V(self, x, prev=None, top=None):
        """V ``[B, Q, K]`` and participation mask for a float batch (matmul input sums, float32)."""
        nx = x.sum(1)
        U = normalise(x @ self.U.dense(), nx).view(-1, self.Q, self.K)
        H = D = None
        if prev is not None:
            if self.H is None:
                raise ValueError("prev was given but this Macrocolumn has horizontal=False")
            p = torch.as_tensor(prev, dtype=torch.int64, device=self.device).reshape(-1, self.Q)
            if bool(((p < 0) | (p >= self.K)).any()):
                raise ValueError(f"prev must hold winners in [0, {self.K})")
            onehot = torch.zeros(p.shape[0], self.QK, device=self.device)
            onehot.scatter_(1, code_units(p, self.K), 1.0)
            H = (onehot @ self.H.dense() / self.Q).view(-1, self.Q, self.K)
        if top is not None:
            D = self._top_factor(top)[0].view(-1, self.Q, self.K)
        return combine(U, H, D, self.params), gate(nx, self.params)

    def _top_factor(self, top):
        """D = d / |top| ``[B, QK]`` from packed top (1 where |top| = 0: no top-down signal)."""
        tp, nd = top
        t = unpack_bits(tp, self.n_top).to(torch.float32)
        D = normalise(t @ self.D.dense(), nd)
        return torch.where((nd > 0).view(-1, 1), D, torch.ones_like(D)), nd

    def recall(self, x, prev=None, top=None, sums: str = "auto"):
        """Retrieve with learning off: argmax V per CM. Returns (code, G) for one input or a batch;
        gated-out inputs give code -1 and G = 0. ``prev``: previous code(s) for the H signal.

        ``sums``: "matmul" (float32 BLAS on the cached dense view), "packed" (popcount on the
        bit-packed view: C loop on CPU, CuPy kernel on CUDA) or "auto" = packed whenever the C / CuPy
        path is available and no ``prev`` is given (measured faster in bench/sparsey.py), else matmul."""
        if sums not in ("auto", "matmul", "packed"):
            raise ValueError(f"sums must be 'auto', 'matmul' or 'packed', got {sums!r}")
        xp, nx, single = self._pack(x, self.N, "x")
        topb = self._top(top, xp.shape[0])
        if sums == "auto":
            fast = _cuda.available() if self.device.type == "cuda" else (prev is None and _cpu.available())
            sums = "packed" if fast else "matmul"
        if sums == "packed" and prev is not None:
            raise ValueError("sums='packed' does not take prev (H signals use the matmul path)")
        if sums == "packed":
            code, G = self._recall_packed(xp, nx, topb)
        else:
            code, G = self._recall_matmul(xp, prev, topb)
        return (code[0], float(G[0])) if single else (code, G)

    def _recall_packed(self, xp, nx, topb):
        ok = gate(nx, self.params)
        if self.device.type == "cuda":
            u = _cuda.packed_sums(xp, self.U.packed)
            hd = None
            if topb is not None:
                hd = self._top_factor(topb)[0].pow(self.params.lambda_d)
            code, G = _cuda.select(u, torch.where(ok, nx, torch.zeros_like(nx)), self.Q, self.K, self.params, None, hd)
            return code.cpu(), G.cpu()
        if not _cpu.available():
            raise RuntimeError(f"sums='packed' on CPU needs the C fast path: {_cpu._ERR}")
        tp, nd = topb if topb is not None else (None, None)
        code, G, _, _ = _cpu.select_sequence_cpu(
            xp, nx, self.U.packed, None, None, tp, nd, self.D.packed if topb is not None else None,
            ok.to(torch.uint8), self._param_vec(), None, False, self.n_set, -1, self.Q, self.K)
        return code, G.float()

    def _recall_matmul(self, xp, prev, topb):
        codes, Gs = [], []
        step = 4096
        for i in range(0, xp.shape[0], step):
            pv = None
            if prev is not None:
                pt = torch.as_tensor(prev).reshape(-1, self.Q)
                pv = pt if pt.shape[0] == 1 else pt[i:i + step]
            x = unpack_bits(xp[i:i + step], self.N).to(torch.float32)
            tb = None if topb is None else (topb[0][i:i + step], topb[1][i:i + step])
            V, ok = self._V(x, pv, tb)
            code, G = select(V, self.K, self.params)
            code[~ok] = -1
            G = torch.where(ok, G, torch.zeros_like(G))
            codes.append(code.cpu())
            Gs.append(G.cpu())
        return torch.cat(codes), torch.cat(Gs)

    def familiarity(self, x, top=None):
        """Familiarity G in [0, 1] of one input (float) or a batch (``[B]``)."""
        return self.recall(x, top=top)[1]

    def decode(self, code, min_fraction: float = 1.0) -> torch.Tensor:
        """Input pattern read back from code(s): x̂_j = [Σ_{i∈code} W_ji >= min_fraction · Q]."""
        if not 0.0 < min_fraction <= 1.0:
            raise ValueError(f"min_fraction must lie in (0, 1], got {min_fraction}")
        c = torch.as_tensor(code, dtype=torch.int64)
        single = c.dim() == 1
        c = c.reshape(-1, self.Q).to(self.device)
        valid = c >= 0
        onehot = torch.zeros(c.shape[0], self.QK, device=self.device)
        onehot.scatter_(1, code_units(c.clamp_min(0), self.K), valid.float())
        votes = onehot @ self.U.dense().t()                       # [B, N]
        need = (min_fraction * valid.sum(1, keepdim=True)).ceil().clamp_min(1)
        out = (votes >= need).cpu()
        return out[0] if single else out

    def complete(self, x, min_fraction: float = 1.0, top=None) -> torch.Tensor:
        """Pattern completion: recall the code of a partial/noisy cue, then decode it to inputs."""
        code, _ = self.recall(x, top=top)
        return self.decode(code, min_fraction)

    def replay(self, x_first, steps: int, min_fraction: float = 1.0):
        """Sequence replay from the first frame: code_0 = recall(x_first); code_t = argmax_CM H^λH
        from code_{t-1} (no bottom-up input). Returns (codes ``[steps, Q]``, inputs ``[steps, N]`` bool)."""
        if self.H is None:
            raise ValueError("replay needs horizontal=True")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        code, _ = self.recall(x_first)
        if code.dim() != 1:
            raise ValueError("x_first must be a single input [N]")
        codes = [code]
        Hw = self.H.dense()
        for _ in range(steps - 1):
            if bool((code < 0).any()):
                break
            onehot = torch.zeros(1, self.QK, device=self.device)
            onehot[0, code_units(code.to(self.device), self.K)] = 1.0
            Hs = (onehot @ Hw / self.Q).view(1, self.Q, self.K)
            V = combine(torch.ones_like(Hs), Hs, None, self.params)
            code = select(V, self.K, self.params)[0][0].cpu()
            codes.append(code)
        codes = torch.stack(codes)
        return codes, self.decode(codes, min_fraction)

    # ------------------------------------------------------------------ forgetting
    def _writes(self, name: str, rows=None):
        """(packed pre ``[T, nw]``, winner units ``[T, Q]``) numpy arrays of the alive traces that wrote
        synapse group ``name`` ("U", "H", "D"), restricted to traces whose code meets ``rows`` if given."""
        m = self._talive & self._twritten
        code = self._tcode
        if name == "H":
            m &= (self._tprev >= 0).all(1)
        elif name == "D":
            m &= (self._ttop != 0).any(1)
        if rows is not None:
            sel = torch.zeros(self.QK, dtype=torch.bool)
            sel[rows] = True
            m &= sel[code_units(code.clamp_min(0), self.K)].any(1)
        units = code_units(code[m], self.K)
        if name == "U":
            pre = self._tx[m]
        elif name == "H":
            pre = pack_bits(torch.zeros(len(units), self.QK, dtype=torch.bool)
                            .scatter_(1, code_units(self._tprev[m], self.K), True))
        else:
            pre = self._ttop[m]
        return pre.numpy(), units.numpy()

    def counts(self, name: str = "U") -> torch.Tensor:
        """Exact per-synapse counts ``[QK, n_pre]`` int64 of group "U", "H" or "D":
        count_ij = Σ_{alive written traces t} [i ∈ code_t] · pre_tj (weights = counts > 0)."""
        groups = {"U": self.U, "H": self.H, "D": self.D}
        if name not in groups:
            raise ValueError(f"unknown synapse group {name!r}; expected one of {sorted(groups)}")
        syn = groups[name]
        if syn is None:
            raise ValueError(f"this Macrocolumn has no {name} synapses")
        return trace_counts(*self._writes(name), syn.n_pre, self.QK)

    def forget(self, ids) -> None:
        """Remove stored trace(s) exactly: afterwards every weight equals what the remaining traces'
        codes would have written alone (the rows of the forgotten codes are rebuilt from the
        remaining traces, i.e. their per-synapse counts are decremented)."""
        t = self._check_ids(ids)
        if len(torch.unique(t)) != len(t):
            raise ValueError(f"ids contains duplicates: {t.tolist()}")
        w = t[self._twritten[t]]
        self._talive[t] = False
        if len(w):
            rows = torch.unique(code_units(self._tcode[w], self.K))
            for name, syn in (("U", self.U), ("H", self.H), ("D", self.D)):
                if syn is not None:
                    syn.rebuild_rows(rows.numpy(), *self._writes(name, rows))
        self.n_set = self.U.n_set()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "config": {"n_inputs": self.N, "Q": self.Q, "K": self.K, "n_top": self.n_top,
                       "horizontal": self.horizontal, "theta_sat": self.theta_sat, "seed": self.seed},
            "params": self.params.as_dict(),
            "U": self.U.state_dict(), "H": None if self.H is None else self.H.state_dict(),
            "D": None if self.D is None else self.D.state_dict(),
            "generator": self.generator.get_state(),
            "traces": self.traces.state_dict(),
        }

    def check_state_dict(self, d: dict) -> CSAParams:
        """Validate every key, type and shape of a state dict for this MAC before anything is
        loaded; ``ValueError`` naming the entry. Returns the CSA parameters it holds."""
        def need(mapping, keys, where):
            if not isinstance(mapping, dict):
                raise ValueError(f"state_dict{where} must be a dict, got {type(mapping).__name__}")
            missing = sorted(set(keys) - set(mapping))
            if missing:
                raise ValueError(f"state_dict{where} lacks {missing} (has {sorted(mapping)})")
        need(d, ("config", "params", "U", "H", "D", "generator", "traces"), "")
        cfg = d["config"]
        need(cfg, ("n_inputs", "Q", "K", "n_top", "horizontal", "theta_sat", "seed"), "['config']")
        mine = {"n_inputs": self.N, "Q": self.Q, "K": self.K, "n_top": self.n_top, "horizontal": self.horizontal}
        for k, v in mine.items():
            if cfg[k] != v:
                raise ValueError(f"state_dict has {k}={cfg[k]}, this Macrocolumn has {k}={v}")
        ts = cfg["theta_sat"]
        if ts is not None and not (isinstance(ts, (int, float)) and 0.0 < ts <= 1.0):
            raise ValueError(f"state_dict['config']['theta_sat'] must lie in (0, 1] or be None, got {ts!r}")
        try:
            params = CSAParams(**d["params"])
        except TypeError as exc:
            raise ValueError(f"state_dict['params']: {exc}") from exc
        for name, syn in (("U", self.U), ("H", self.H), ("D", self.D)):
            sd = d[name]
            if syn is None:
                continue
            need(sd, ("n_pre", "n_post"), f"[{name!r}]")
            if (sd["n_pre"], sd["n_post"]) != (syn.n_pre, syn.n_post):
                raise ValueError(f"state_dict[{name!r}] is for {sd['n_pre']}->{sd['n_post']} synapses, "
                                 f"this Macrocolumn has {syn.n_pre}->{syn.n_post}")
            if "packed" in sd:
                want = (syn.n_post, syn.n_words)
                t = sd["packed"]
                if not isinstance(t, torch.Tensor) or tuple(t.shape) != want:
                    got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                    raise ValueError(f"state_dict[{name!r}]['packed'] must have shape {want}, got {got}")
        g = d["generator"]
        if not (isinstance(g, torch.Tensor) and g.dtype == torch.uint8
                and g.shape == self.generator.get_state().shape):
            raise ValueError("state_dict['generator'] is not a torch.Generator state")
        cols = d["traces"]
        need(cols, self.traces.columns(), "['traces']")
        rows = {len(v) for v in cols.values() if isinstance(v, torch.Tensor)}
        if len(rows) > 1:
            raise ValueError(f"state_dict['traces'] columns have different lengths {sorted(rows)}")
        for name, (shape, dtype) in self.traces.columns().items():
            t = cols[name]
            if not isinstance(t, torch.Tensor) or tuple(t.shape[1:]) != shape or t.dtype != dtype:
                got = (tuple(t.shape[1:]), t.dtype) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"state_dict['traces'][{name!r}] must be [M, *{shape}] {dtype}, got {got}")
        return params

    def load_state_dict(self, d: dict) -> None:
        """Load a :meth:`state_dict`; everything is validated first (:meth:`check_state_dict`), so a
        mismatched dict raises ``ValueError`` and leaves this MAC unchanged."""
        params = self.check_state_dict(d)
        cfg = d["config"]
        self.theta_sat, self.seed = cfg["theta_sat"], cfg["seed"]
        self.params = params
        self.U.load_state_dict(d["U"])
        if self.H is not None:
            self.H.load_state_dict(d["H"])
        if self.D is not None:
            self.D.load_state_dict(d["D"])
        self.generator.set_state(d["generator"])
        self.traces.load_state_dict(d["traces"])
        self.n_set = self.U.n_set()

    @classmethod
    def from_state_dict(cls, d: dict, device="cpu", backend="auto") -> "Macrocolumn":
        mac = cls(**d["config"], device=device, backend=backend, params=CSAParams(**d["params"]))
        mac.load_state_dict(d)
        return mac
