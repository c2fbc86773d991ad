"""PatchHierarchy over 28×28 binary images and code-overlap k-NN."""
import pytest
import torch

from spiking.memory import PatchHierarchy
from spiking.memory.classify import code_overlap, knn_predict
from spiking.memory.hierarchy import one_hot_codes


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
        assert torch.equal(a.U.counts, b.U.counts)
