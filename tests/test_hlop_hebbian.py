"""Pure HLOP functions: Oja-subspace learning finds the principal subspace; projection forms agree."""

import math

import pytest
import torch

from spiking.plasticity.hebbian import (cheaper_form, dense_projector, frozen_residual, hebbian_update, oja_delta,
                                        orthogonal_rows, principal_angles, principal_rows, project_input, project_weight_grad,
                                        quantise_lateral, subspace_energy)
from spiking.plasticity.projector import Projector


def _source(N=40, spectrum=(6.0, 5.0, 4.0, 2.0, 1.6), noise=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=torch.float64))[0].float()
    s = torch.cat([torch.tensor(spectrum), noise * torch.ones(N - len(spectrum))])

    def batch(B=64):
        return (torch.randn(B, N, generator=g) * s) @ U.t()

    return U, batch, g


def test_oja_learns_top_principal_subspace_and_new_rows_learn_the_next():
    U, batch, g = _source()
    H = orthogonal_rows(3, 40, g)
    m = torch.zeros_like(H)
    for lr in [0.01] * 300 + [0.002] * 200:  # fixed rate, then a smaller one to settle the noise
        hebbian_update(H, m, batch(), n_frozen=0, lr=lr)
    assert principal_angles(H, U[:, :3].t()).max() < 0.05
    assert torch.allclose(H @ H.t(), torch.eye(3), atol=0.03)  # Oja rows are ~orthonormal
    # freeze the 3 rows, add 2: the bank must then span the top-5 subspace, old rows untouched
    old = H.clone()
    H2 = torch.cat([H, orthogonal_rows(2, 40, g)])
    m2 = torch.zeros_like(H2)
    for lr in [0.01] * 300 + [0.002] * 200:
        hebbian_update(H2, m2, batch(), n_frozen=3, lr=lr)
    assert torch.equal(H2[:3], old)
    assert torch.count_nonzero(m2[:3]) == 0
    assert principal_angles(H2, U[:, :5].t()).max() < 0.05
    # random rows of the same size are far from it: the bound is meaningful
    assert principal_angles(orthogonal_rows(5, 40, g), U[:, :5].t()).max() > 1.0


def test_oja_delta_matches_the_full_rule_on_the_learning_rows():
    g = torch.Generator().manual_seed(1)
    H, X = torch.randn(7, 12, generator=g), torch.randn(30, 12, generator=g)
    Y = X @ H.t()
    full = (Y.t() @ X - Y.t() @ Y @ H) / 30  # ΔH = (YᵀX − YᵀYH)/B over all rows
    X_hat_old = (X @ H[:4].t()) @ H[:4]
    assert torch.allclose(oja_delta(H[4:], X, X_hat_old), full[4:], atol=1e-4)
    assert torch.allclose(oja_delta(H, X), full, atol=1e-4)


def test_hebbian_update_clip_and_momentum_follow_the_equations():
    g = torch.Generator().manual_seed(2)
    H, X = torch.randn(3, 5, generator=g) * 10, torch.randn(8, 5, generator=g) * 10
    m = torch.randn(3, 5, generator=g)
    H0, m0 = H.clone(), m.clone()
    hebbian_update(H, m, X, n_frozen=1, lr=0.5, iters=1, clip=10.0, momentum=0.9)
    delta = oja_delta(H0[1:], X, (X @ H0[:1].t()) @ H0[:1]).clamp(-10, 10)
    assert delta.abs().max() == 10.0  # the clip is active in this case
    m_exp = 0.9 * m0[1:] + 0.1 * delta
    assert torch.allclose(m[1:], m_exp, atol=1e-4)
    assert torch.allclose(H[1:], H0[1:] + 0.5 * m_exp, atol=1e-3)
    assert torch.equal(H[:1], H0[:1]) and torch.equal(m[:1], m0[:1])


def test_projection_forms_agree_for_non_orthonormal_H():
    g = torch.Generator().manual_seed(3)
    H = torch.randn(6, 20, generator=g, dtype=torch.float64) * 0.4  # far from orthonormal
    x, d = torch.randn(50, 20, generator=g, dtype=torch.float64), torch.randn(50, 9, generator=g, dtype=torch.float64)
    P = torch.eye(20, dtype=torch.float64) - H.t() @ H
    xp = project_input(x, H)
    assert torch.allclose(xp, x @ P)
    assert torch.allclose(dense_projector(H), P)
    ref = d.t() @ xp
    assert torch.allclose(project_weight_grad(d.t() @ x, H), ref, atol=1e-10)
    assert cheaper_form(5, 9) == "input" and cheaper_form(50, 9) == "grad"
    for dense in (False, True):  # factored x − (xHᵀ)H and dense x P: the same map
        proj = Projector(H, dense=dense)
        assert (proj.P is not None) == dense
        assert torch.allclose(proj.input(x), xp, atol=1e-12)
        g_grad, kept = proj.weight_grad(d, x)                     # gradient form (50 rows > 9 outputs)
        assert kept is None and torch.allclose(g_grad, ref, atol=1e-10)
        g_in, kept = proj.weight_grad(d, x, keep_input=True)     # input form, x⊥ handed over
        assert torch.allclose(g_in, ref, atol=1e-10) and torch.allclose(kept, xp, atol=1e-12)
        # conv-shaped gradient [out, C, kh, kw] is projected over C·kh·kw
        G = torch.randn(4, 5, 2, 2, generator=g, dtype=torch.float64)
        assert torch.allclose(proj.grad(G), (G.reshape(4, 20) @ P).reshape(G.shape), atol=1e-12)
    assert Projector(torch.randn(12, 20, dtype=torch.float64)).P is not None  # 2n > N: dense by cost
    assert Projector(H).P is None


def test_orthonormal_projector_is_the_exact_orthogonal_projection():
    g = torch.Generator().manual_seed(5)
    H = torch.randn(6, 20, generator=g, dtype=torch.float64) * 0.7
    H[5] = H[0] + H[1]  # rank 5: the basis has 5 rows
    proj = Projector(H, orthonormal=True)
    assert proj.shape == (5, 20)
    in_span = torch.randn(30, 6, generator=g, dtype=torch.float64) @ H
    assert proj.input(in_span).abs().max() < 1e-12                      # old inputs fully removed
    x = torch.randn(30, 20, generator=g, dtype=torch.float64)
    assert torch.allclose(proj.input(proj.input(x)), proj.input(x), atol=1e-12)  # idempotent
    assert project_input(in_span, H).abs().max() > 0.1                   # the paper's I − HᵀH leaks here


def _oja_reference(H, m, X, n_frozen, lr, iters, clip=10.0, momentum=0.9):
    """The rule as written: Y = XHᵀ over all rows, ΔH = (YᵀX − YᵀYH)/B, frozen rows' ΔH zeroed."""
    H, m = H.clone(), m.clone()
    for _ in range(iters):
        Y = X @ H.t()
        D = ((Y.t() @ X - Y.t() @ Y @ H) / X.shape[0]).clamp(-clip, clip)
        D[:n_frozen] = 0
        m = momentum * m + (1 - momentum) * D
        m[:n_frozen] = 0
        H = H + lr * m
    return H, m


@pytest.mark.parametrize("n_frozen", [0, 7])
def test_hebbian_update_equals_the_full_rule_restricted_to_learning_rows(n_frozen):
    """The per-batch residual form (frozen rows once, O(M_new·N·B) per iteration) is the same update."""
    g = torch.Generator().manual_seed(6)
    H = torch.randn(11, 30, generator=g, dtype=torch.float64) * 0.3
    m = torch.randn(11, 30, generator=g, dtype=torch.float64) * 0.01
    m[:n_frozen] = 0
    X = torch.randn(64, 30, generator=g, dtype=torch.float64) * 2
    H_ref, m_ref = _oja_reference(H, m, X, n_frozen, lr=0.05, iters=5)
    H1, m1 = H.clone(), m.clone()
    hebbian_update(H1, m1, X, n_frozen, lr=0.05, iters=5)
    assert torch.allclose(H1, H_ref, rtol=0, atol=1e-12) and torch.allclose(m1, m_ref, rtol=0, atol=1e-12)
    if n_frozen:  # the residual handed over by the projection (x⊥, dense or factored) gives the same
        for dense in (False, True):
            H2, m2 = H.clone(), m.clone()
            X_res = Projector(H[:n_frozen], dense=dense).input(X)
            hebbian_update(H2, m2, X, n_frozen, lr=0.05, iters=5, X_res=X_res)
            assert torch.allclose(H2, H_ref, rtol=0, atol=1e-12)
        assert torch.allclose(frozen_residual(X, H[:n_frozen]), project_input(X, H[:n_frozen]))
    # a different learning rate gives a different result: the comparison is not vacuous
    H3, m3 = H.clone(), m.clone()
    hebbian_update(H3, m3, X, n_frozen, lr=0.06, iters=5)
    assert (H3 - H_ref).abs().max() > 1e-6


def test_quantise_lateral():
    y = torch.tensor([-30.0, -0.26, 0.0, 0.24, 0.26, 7.3, 25.0])
    q = quantise_lateral(y, scale=20.0, timesteps=40.0)  # step 0.5, range ±20
    assert torch.equal(q, torch.tensor([-20.0, -0.5, 0.0, 0.0, 0.5, 7.5, 20.0]))
    with pytest.raises(ValueError, match="scale"):
        quantise_lateral(y, scale=0.0)


def test_principal_rows_are_the_exact_subspace_the_oja_rows_approach():
    U, batch, g = _source()
    X = batch(4000)
    C = X.double().t() @ X.double()
    top3 = principal_rows(C, 3)
    assert top3.shape == (3, 40) and top3.dtype == torch.float64
    assert torch.allclose(top3 @ top3.t(), torch.eye(3, dtype=torch.float64), atol=1e-12)
    # the same directions as the eigen-decomposition of the sample second moment, largest first
    w, V = torch.linalg.eigh(C)
    for i in range(3):
        assert abs(float(top3[i] @ V[:, -1 - i])) == pytest.approx(1.0, abs=1e-9)
    assert principal_angles(top3.float(), U[:, :3].t()).max() < 0.1  # and near the source's top-3
    # with frozen rows: the next directions, orthogonal to them (not the top-2 of C again)
    nxt = principal_rows(C, 2, basis=top3)
    assert (nxt @ top3.t()).abs().max() < 1e-12
    assert principal_angles(nxt, torch.stack([V[:, -4], V[:, -5]])).max() < 1e-6
    # Oja's rule on the same data ends close to it
    H, m = orthogonal_rows(3, 40, g), torch.zeros(3, 40)
    for lr in [0.01] * 300 + [0.002] * 200:
        hebbian_update(H, m, batch(), n_frozen=0, lr=lr)
    assert principal_angles(H, top3.float()).max() < 0.1
    with pytest.raises(ValueError, match="k must"):
        principal_rows(C, 38, basis=top3)
    with pytest.raises(ValueError, match="square"):
        principal_rows(X, 2)
    with pytest.raises(ValueError, match="basis"):
        principal_rows(C, 2, basis=torch.zeros(2, 39))
    with pytest.raises(ValueError, match="NaN"):
        principal_rows(C.clone().fill_(float("nan")), 2)


def test_subspace_energy_and_angles():
    g = torch.Generator().manual_seed(4)
    Q = orthogonal_rows(3, 10, g)
    X = torch.randn(100, 3, generator=g) @ Q
    assert subspace_energy(X, 2.0 * Q) == pytest.approx(1.0)  # span, not scale
    Xo = torch.randn(100, 10, generator=g)
    Xo = Xo - (Xo @ Q.t()) @ Q
    assert subspace_energy(Xo, Q) == pytest.approx(0.0, abs=1e-10)
    assert principal_angles(Q, Q[[2, 0, 1]] * 3).max() < 1e-6
    assert principal_angles(Q[:1], Q[1:2]).max() == pytest.approx(math.pi / 2, abs=1e-6)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="n_frozen"):
        hebbian_update(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(4, 3), n_frozen=3, lr=0.1)
    with pytest.raises(ValueError, match="momentum_buf"):
        hebbian_update(torch.zeros(2, 3), torch.zeros(1, 3), torch.zeros(4, 3), n_frozen=0, lr=0.1)
    with pytest.raises(ValueError, match="features"):
        project_input(torch.zeros(4, 5), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="k must"):
        orthogonal_rows(4, 3)
