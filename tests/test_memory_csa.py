"""Pure CSA functions (spiking.memory.csa)."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from spiking.memory.csa import (CSAParams, code_units, draw, expansivity, mu, pack_bits,
                                rho, select, unpack_bits)


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 5), Q=st.integers(1, 6), K=st.integers(2, 9), seed=st.integers(0, 2**16), learn=st.booleans())
def test_exactly_one_winner_per_cm(B, Q, K, seed, learn):
    g = torch.Generator().manual_seed(seed)
    V = torch.rand(B, Q, K, generator=g, dtype=torch.float64)
    r = torch.rand(B, Q, generator=g, dtype=torch.float64) if learn else None
    code, G = select(V, K, CSAParams(), r)
    assert code.shape == (B, Q) and code.dtype == torch.int64
    assert bool(((code >= 0) & (code < K)).all())
    units = code_units(code, K)
    onehot = torch.zeros(B, Q * K).scatter_(1, units, 1.0).view(B, Q, K)
    assert torch.equal(onehot.sum(-1), torch.ones(B, Q))
    assert torch.allclose(G, V.amax(-1).mean(-1))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 200), B=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_pack_unpack_roundtrip(n, B, seed):
    x = torch.rand(B, n, generator=torch.Generator().manual_seed(seed)) < 0.3
    p = pack_bits(x)
    assert p.shape == (B, (n + 63) // 64)
    assert torch.equal(unpack_bits(p, n), x)


def test_expansivity_and_mu_floor():
    p = CSAParams(g_minus=0.1, gamma=2.0, chi=100.0)
    G = torch.tensor([0.0, 0.1, 0.55, 1.0])
    eta = expansivity(G, 16, p)
    want = [1.0, 1.0, 1 + (0.45 / 0.9) ** 2 * 1600, 1 + 1600]
    assert torch.allclose(eta, torch.tensor(want))
    V = torch.tensor([[[0.0, 0.5, 1.0]]])
    m = mu(V, torch.tensor([1.0]), p)
    assert torch.equal(m, torch.ones_like(m))          # η = 1: uniform choice for a novel input
    m = mu(V, torch.tensor([1601.0]), p)
    assert m[0, 0, 2] == pytest.approx(1601 / (1 + math.exp(-p.s * (1 - p.c))))
    assert torch.allclose(rho(m).sum(-1), torch.ones(1, 1))


def test_draw_inverse_cdf():
    p = torch.tensor([[[1.0, 2.0, 1.0]]])             # cdf 1, 3, 4 (of 4)
    for r, want in [(0.0, 0), (0.249, 0), (0.25, 1), (0.74, 1), (0.75, 2), (0.999, 2)]:
        assert int(draw(p, torch.tensor([[r]]))[0, 0]) == want


def test_draw_frequencies_follow_rho():
    g = torch.Generator().manual_seed(0)
    V = torch.tensor([[[1.0, 0.95, 0.2, 0.0]]]).expand(20000, 1, 4)
    code, _ = select(V, 4, CSAParams(), torch.rand(20000, 1, generator=g, dtype=torch.float64))
    m = mu(V[:1], expansivity(torch.tensor([1.0]), 4, CSAParams()), CSAParams())
    freq = torch.bincount(code[:, 0], minlength=4).double() / 20000
    assert torch.allclose(freq, rho(m)[0, 0].double(), atol=0.02)


def test_params_validation():
    with pytest.raises(ValueError, match="g_minus"):
        CSAParams(g_minus=1.0)
    with pytest.raises(ValueError, match="chi"):
        CSAParams(chi=-1)
    with pytest.raises(ValueError, match="pi_minus"):
        CSAParams(pi_minus=5, pi_plus=2)
