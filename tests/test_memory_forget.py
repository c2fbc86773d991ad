"""Exact forgetting: per-synapse counts (kept factorised as the trace table) under the packed binary view.

The reference is computed independently of the library's storage: dense counts
count_ij = Σ_t [i ∈ code_t] x_tj of the given traces, weights = counts > 0."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from spiking.memory import Macrocolumn
from spiking.memory.csa import code_units, pack_bits

N, Q, K = 96, 8, 8


def patterns(M, a=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.rand(M, N, generator=g).argsort(1)[:, :a]
    return torch.zeros(M, N).scatter_(1, idx, 1.0)


def written_alone(xs, codes, n_pre=N):
    """Dense int64 counts ``[Q*K, n_pre]`` that only the given (input, code) traces wrote."""
    onehot = torch.zeros(len(codes), Q * K, dtype=torch.float64)
    onehot.scatter_(1, code_units(torch.as_tensor(codes).reshape(-1, Q), K), 1.0)
    return (onehot.t() @ torch.as_tensor(xs).reshape(-1, n_pre).double()).long()


def assert_weights(syn, counts):
    """The packed view, its unpacked bool view and the dense cache all equal counts > 0."""
    assert torch.equal(syn.binary(), counts > 0)
    assert torch.equal(syn.packed, pack_bits(counts > 0))
    assert torch.equal(syn.dense(), (counts > 0).t().float())


def test_store_a_c_then_b_forget_b_equals_memory_of_a_c():
    A, B, C = patterns(3, seed=1)
    mac = Macrocolumn(N, Q, K, seed=7)
    (ca, ia), (cc, ic), (cb, ib) = mac.store(A), mac.store(C), mac.store(B)
    mac.forget(ib)
    ref = Macrocolumn(N, Q, K, seed=7)
    ref.store(A), ref.store(C)
    assert torch.equal(mac.counts(), ref.counts()) and torch.equal(mac.U.packed, ref.U.packed)
    assert torch.equal(mac.counts(), written_alone(torch.stack([A, C]), torch.stack([ca, cc])))
    assert mac.n_set == ref.n_set == int((mac.counts() > 0).sum()) and len(mac) == 2


def test_store_a_b_c_forget_b_weights_equal_a_c_codes_alone_and_recall_unchanged():
    X = patterns(3, seed=2)
    mac = Macrocolumn(N, Q, K, seed=3)
    codes, ids = mac.store(X)
    rec_before, _ = mac.recall(X[[0, 2]])
    mac.forget(int(ids[1]))
    alone = written_alone(X[[0, 2]], codes[[0, 2]])
    assert torch.equal(mac.counts(), alone)
    assert_weights(mac.U, alone)
    rec_after, _ = mac.recall(X[[0, 2]])
    assert torch.equal(rec_after, rec_before) and torch.equal(rec_after, codes[[0, 2]])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), M=st.integers(2, 25), data=st.data())
def test_forget_invariant_weights_equal_remaining_traces(seed, M, data):
    X = patterns(M, seed=seed)
    mac = Macrocolumn(N, Q, K, seed=seed, theta_sat=None)
    codes, ids = mac.store(X)
    gone = data.draw(st.lists(st.integers(0, M - 1), unique=True, min_size=1, max_size=M))
    split = data.draw(st.integers(0, len(gone)))
    if gone[:split]:
        mac.forget(gone[:split])
    for i in gone[split:]:
        mac.forget(i)
    keep = [i for i in range(M) if i not in gone]
    alone = written_alone(X[keep], codes[keep])
    assert torch.equal(mac.counts(), alone)
    assert_weights(mac.U, alone)
    assert mac.n_set == int((alone > 0).sum())
    assert mac.ids().tolist() == keep


def test_forget_sequence_frame_removes_its_h_synapses():
    X = patterns(4, seed=5)
    mac = Macrocolumn(N, Q, K, seed=0)
    codes, ids = mac.store_sequence(X)
    mac.forget(int(ids[2]))                         # removes U(x2 -> c2) and H(c1 -> c2)
    prev = torch.zeros(2, Q * K).scatter_(1, code_units(codes[[0, 2]], K), 1.0)
    h = written_alone(prev, codes[[1, 3]], n_pre=Q * K)
    assert torch.equal(mac.counts("H"), h)
    assert_weights(mac.H, h)
    assert_weights(mac.U, written_alone(X[[0, 1, 3]], codes[[0, 1, 3]]))


def test_forget_top_down_synapses():
    X = patterns(5, seed=8)
    T = (torch.rand(5, 10, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    T[2] = 0                                            # no top-down signal: writes no D synapses
    mac = Macrocolumn(N, Q, K, n_top=10, seed=2)
    codes, ids = mac.store(X, top=T)
    mac.forget(ids[[1, 3]])
    assert_weights(mac.D, written_alone(T[[0, 2, 4]], codes[[0, 2, 4]], n_pre=10))
    assert torch.equal(mac.counts("D"), written_alone(T[[0, 2, 4]], codes[[0, 2, 4]], n_pre=10))


def test_many_repeats_counts_are_exact():
    """300 traces writing the same synapses (counts far beyond any small counter) forget exactly."""
    x = patterns(1)[0]
    mac = Macrocolumn(N, Q, K, seed=0, theta_sat=None)
    codes, ids = mac.store(x.expand(300, N))
    tot = mac.counts()
    assert int(tot.max()) > 255                        # re-presentation reuses (most of) the code
    assert int(tot.sum()) == 300 * Q * int(x.sum())
    assert torch.equal(tot, written_alone(x.expand(300, N), codes))
    mac.forget(ids[:299])
    last = written_alone(x[None], codes[299:])
    assert torch.equal(mac.counts(), last)
    assert_weights(mac.U, last)
    mac.forget(ids[299])
    assert mac.U.n_set() == 0 and mac.n_set == 0 and not mac.U.binary().any()


def test_forget_errors():
    mac = Macrocolumn(N, Q, K)
    _, i = mac.store(patterns(1)[0])
    with pytest.raises(ValueError, match="id 5"):
        mac.forget(5)
    with pytest.raises(ValueError, match="duplicates"):
        mac.forget([i, i])
    mac.forget(i)
    with pytest.raises(ValueError, match=f"id {i}"):
        mac.forget(i)
    with pytest.raises(TypeError, match="id must be"):
        mac.forget(0.5)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), T=st.integers(2, 12), data=st.data())
def test_forget_invariant_sequences_with_top_down(seed, T, data):
    """U, H (code_{t-1} -> code_t) and D synapses all equal what the remaining frames alone wrote."""
    X = patterns(T, seed=seed)
    top = (torch.rand(T, 10, generator=torch.Generator().manual_seed(seed)) < 0.3).float()
    mac = Macrocolumn(N, Q, K, n_top=10, seed=seed, theta_sat=None)
    codes, ids = mac.store_sequence(X, top=top)
    gone = data.draw(st.lists(st.integers(0, T - 1), unique=True, min_size=1, max_size=T))
    mac.forget(gone)
    keep = [t for t in range(T) if t not in gone]
    assert_weights(mac.U, written_alone(X[keep], codes[keep]))
    hk = [t for t in keep if t > 0]
    prev = torch.zeros(len(hk), Q * K).scatter_(1, code_units(codes[[t - 1 for t in hk]], K), 1.0)
    assert_weights(mac.H, written_alone(prev, codes[hk], n_pre=Q * K))
    assert_weights(mac.D, written_alone(top[keep], codes[keep], n_pre=10))
