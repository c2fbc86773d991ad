"""PatchHierarchy over 28×28 binary images and code-overlap k-NN."""
import pytest
import torch

from spiking.memory import PatchHierarchy
from spiking.memory.classify import code_overlap, knn_predict, knn_votes, overlap_votes
from spiking.memory.features import deskew
from spiking.memory.hierarchy import one_hot_codes, translate


def images(B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 28, 28, generator=g) < 0.2


def test_patches_are_the_receptive_fields():
    h = PatchHierarchy(patch=7, stride=7, Q=4, K=4)
    x = images(3)
    P = h.patches(x)
    assert P.shape == (3, 16, 49) and h.n_macs == 16
    r, c = h.positions[5]
    assert torch.equal(P[:, 5], x[:, r:r + 7, c:c + 7].reshape(3, -1))


def test_store_encode_shapes_and_recall_of_stored_images():
    h = PatchHierarchy(patch=7, stride=7, Q=6, K=8, top=(12, 8), theta_sat=None)
    x = images(5)
    s = h.store(x)
    assert s["level1"].shape == (5, 16, 6) and s["top"].shape == (5, 12)
    e = h.encode(x)
    assert torch.equal(e["level1"], s["level1"]) and torch.equal(e["top"], s["top"])
    assert torch.allclose(e["G"], torch.ones(5))
    assert s["level1_ids"].shape == (5, 16)
    h2 = PatchHierarchy(patch=7, stride=7, Q=6, K=8, top=(12, 8), theta_sat=None)
    h2.load_state_dict(h.state_dict())
    assert torch.equal(h2.encode(x)["top"], e["top"])


def test_knn_on_code_overlap():
    codes = torch.tensor([[0, 1, 2], [3, 3, 3], [0, 1, 3]])
    y = torch.tensor([0, 1, 0])
    assert torch.equal(code_overlap(codes, codes, 4), torch.tensor([[3., 0, 2], [0, 3, 1], [2, 1, 3]]))
    test = torch.tensor([[0, 1, 1], [3, 3, 2]])
    assert knn_predict(codes, y, test, K=4, k=1).tolist() == [0, 1]
    assert one_hot_codes(torch.tensor([[-1, 0]]), 2).tolist() == [[0., 0., 1., 0.]]
    with pytest.raises(ValueError, match="k must"):
        knn_predict(codes, y, test, K=4, k=0)


def test_errors():
    with pytest.raises(ValueError, match="patch"):
        PatchHierarchy(patch=40)
    h = PatchHierarchy(patch=7, stride=7, Q=4, K=4)
    with pytest.raises(ValueError, match="images must have shape"):
        h.store(torch.zeros(2, 27, 28))
    with pytest.raises(ValueError, match="images must be binary"):
        h.store(torch.full((2, 28, 28), 0.5))


def test_forget_images_exactly():
    x = images(6)
    h = PatchHierarchy(patch=7, stride=7, Q=6, K=8, theta_sat=None, seed=1)
    s = h.store(x)
    ref = PatchHierarchy(patch=7, stride=7, Q=6, K=8, theta_sat=None, seed=1)
    ref.store(x[:3])
    h.forget(s["level1_ids"][3:])
    for a, b in zip(h.macs, ref.macs):
        assert torch.equal(a.U.packed, b.U.packed) and torch.equal(a.counts(), b.counts())


def test_translate_shifts_with_zero_fill():
    x = images(2)
    y = translate(x, 2, -1)
    assert torch.equal(y[:, 2:, :-1], x[:, :-2, 1:])
    assert not y[:, :2].any() and not y[:, :, -1:].any()
    assert torch.equal(translate(x, 0, 0), x)


def test_encode_translated_is_union_over_shifts():
    x = images(4, seed=3)
    h = PatchHierarchy(patch=7, stride=7, Q=6, K=8, theta_sat=None, seed=2)
    h.store(x)
    u0 = h.encode_translated(x, 0)
    assert torch.equal(u0, one_hot_codes(h.encode(x)["level1"], 8) > 0)
    u1 = h.encode_translated(x, 1)
    assert u1.shape == u0.shape and bool((u1 | u0).eq(u1).all()) and int(u1.sum()) > int(u0.sum())
    shifted = one_hot_codes(h.encode(translate(x, -1, 1))["level1"], 8) > 0
    assert bool((u1 | shifted).eq(u1).all())
    with pytest.raises(ValueError, match="radius"):
        h.encode_translated(x, -1)


def test_overlap_votes_equal_knn_votes_and_count_shared_units():
    g = torch.Generator().manual_seed(0)
    tr, te = torch.randint(0, 4, (30, 5, 3), generator=g), torch.randint(0, 4, (7, 5, 3), generator=g)
    y = torch.arange(30) % 3
    a = knn_votes(tr, y, te, K=4, k=4)
    b = overlap_votes(one_hot_codes(tr, 4) > 0, y, one_hot_codes(te, 4) > 0, k=4)
    assert torch.equal(a, b)
    ov = code_overlap(te, tr, 4)
    assert torch.allclose(a.sum(1), ov.topk(4, 1).values.sum(1))
    with pytest.raises(ValueError, match="differ in size"):
        overlap_votes(one_hot_codes(tr, 4) > 0, y, one_hot_codes(te[:, :2], 4) > 0)


def test_deskew_removes_slant():
    """A slanted bar: after deskewing the intensity-weighted cov(row, col) is ~0 and mass is kept."""
    x = torch.zeros(1, 28, 28)
    for r in range(4, 24):
        c = 8 + (r - 4) // 2                        # leans right going down: cov(r, c) > 0
        x[0, r, c:c + 3] = 1.0
    y = deskew(x)

    def cov(img):
        r = torch.arange(28.).view(28, 1)
        c = torch.arange(28.).view(1, 28)
        m = img.sum()
        rb, cb = (img * r).sum() / m, (img * c).sum() / m
        return float((img * (r - rb) * (c - cb)).sum() / m)
    assert cov(x[0]) > 5 and abs(cov(y[0])) < 0.1 * cov(x[0])
    assert float(y.sum()) == pytest.approx(float(x.sum()), rel=0.05)
    with pytest.raises(ValueError, match="shape"):
        deskew(torch.zeros(28, 28))
