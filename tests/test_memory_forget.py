"""Exact forgetting: per-synapse counts under the binary view."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from spiking.memory import Macrocolumn
from spiking.memory.csa import code_units
from spiking.memory.synapses import CountedSynapses

N, Q, K = 96, 8, 8


def patterns(M, a=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.rand(M, N, generator=g).argsort(1)[:, :a]
    return torch.zeros(M, N).scatter_(1, idx, 1.0)


def written_alone(xs, codes):
    """Synapses that only the given (input, code) traces wrote."""
    s = CountedSynapses(N, Q * K)
    s.add(xs, code_units(codes, K))
    return s


def test_store_a_c_then_b_forget_b_equals_memory_of_a_c():
    A, B, C = patterns(3, seed=1)
    mac = Macrocolumn(N, Q, K, seed=7)
    (ca, ia), (cc, ic), (cb, ib) = mac.store(A), mac.store(C), mac.store(B)
    mac.forget(ib)
    ref = Macrocolumn(N, Q, K, seed=7)
    ref.store(A), ref.store(C)
    assert torch.equal(mac.U.counts, ref.U.counts) and torch.equal(mac.U.packed, ref.U.packed)
    assert torch.equal(mac.U.binary(), ref.U.binary())
    assert mac.n_set == ref.n_set and len(mac) == 2


def test_store_a_b_c_forget_b_weights_equal_a_c_codes_alone_and_recall_unchanged():
    X = patterns(3, seed=2)
    mac = Macrocolumn(N, Q, K, seed=3)
    codes, ids = mac.store(X)
    rec_before, _ = mac.recall(X[[0, 2]])
    mac.forget(int(ids[1]))
    alone = written_alone(X[[0, 2]], codes[[0, 2]])
    assert torch.equal(mac.U.counts, alone.counts) and torch.equal(mac.U.packed, alone.packed)
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
    alone = written_alone(X[keep], codes[keep]) if keep else CountedSynapses(N, Q * K)
    assert torch.equal(mac.U.counts, alone.counts)
    assert torch.equal(mac.U.binary(), mac.U.counts > 0) and torch.equal(mac.U.packed, alone.packed)
    assert mac.ids().tolist() == keep


def test_forget_sequence_frame_removes_its_h_synapses():
    X = patterns(4, seed=5)
    mac = Macrocolumn(N, Q, K, seed=0)
    codes, ids = mac.store_sequence(X)
    mac.forget(int(ids[2]))                         # removes U(x2 -> c2) and H(c1 -> c2)
    h = CountedSynapses(Q * K, Q * K)
    for t in (1, 3):
        pre = torch.zeros(1, Q * K).scatter_(1, code_units(codes[t - 1:t], K), 1.0)
        h.add(pre, code_units(codes[t:t + 1], K))
    assert torch.equal(mac.H.counts, h.counts)


def test_counts_beyond_uint8_are_exact():
    x = patterns(1)[0]
    mac = Macrocolumn(N, Q, K, seed=0, theta_sat=None)
    _, ids = mac.store(x.expand(300, N))
    tot = mac.U.total_counts()
    assert int(tot.max()) > 255 and mac.U.overflow       # re-presentation reuses (most of) the code
    assert int(tot.sum()) == 300 * Q * int(x.sum())
    mac.forget(ids[:299])
    last = written_alone(x[None], mac.trace(int(ids[299]))["code"][None])
    assert torch.equal(mac.U.total_counts(), last.total_counts()) and not mac.U.overflow
    mac.forget(ids[299])
    assert mac.U.n_set() == 0 and mac.n_set == 0


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
