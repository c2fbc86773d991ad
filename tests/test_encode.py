import pytest
import torch

from spiking import encode


def test_direct_repeats_the_current():
    x = torch.rand(4, 7)
    d = encode.direct(x, 5)
    assert d.shape == (5, 4, 7)
    assert all(torch.equal(d[t], x) for t in range(5))


def test_rate_bernoulli_is_seeded_and_matches_probability():
    x = torch.tensor([[0.0, 0.25, 0.9, 1.0]]).expand(2000, 4).contiguous()
    a = encode.rate(x, 10, generator=torch.Generator().manual_seed(1))
    b = encode.rate(x, 10, generator=torch.Generator().manual_seed(1))
    c = encode.rate(x, 10, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    p = a.mean(dim=(0, 1))
    assert p[0] == 0 and p[3] == 1
    assert abs(p[1] - 0.25) < 0.02 and abs(p[2] - 0.9) < 0.02


def test_rate_poisson_probability():
    x = torch.full((5000, 1), 0.5)
    s = encode.rate(x, 4, method="poisson", gain=2.0, generator=torch.Generator().manual_seed(0))
    assert abs(s.mean().item() - (1 - torch.exp(torch.tensor(-1.0))).item()) < 0.02


def test_latency_one_spike_earlier_for_brighter():
    x = torch.tensor([[1.0, 0.5, 0.0, 0.005]])
    s = encode.latency(x, 11)
    assert s.shape == (11, 1, 4)
    counts = s.sum(0)[0]
    assert counts.tolist() == [1.0, 1.0, 0.0, 0.0]  # at or below the threshold: silent
    first = s[:, 0, :2].argmax(0).tolist()
    assert first == [0, 5]
    log = encode.latency(torch.tensor([[0.9, 0.3]]), 50, method="log", tau=5.0, threshold=0.2)
    t = log[:, 0].argmax(0).tolist()
    assert t[0] < t[1]


@pytest.mark.parametrize(
    "call,exc,word",
    [
        (lambda: encode.direct(torch.rand(3), 0), ValueError, "T"),
        (lambda: encode.direct(torch.rand(3), 2.5), TypeError, "T"),
        (lambda: encode.rate(torch.rand(3) + 1.5, 4), ValueError, r"\[0, 1\]"),
        (lambda: encode.rate(torch.rand(3), 4, method="gauss"), ValueError, "method"),
        (lambda: encode.rate(torch.rand(3), 4, gain=0), ValueError, "gain"),
        (lambda: encode.latency(torch.tensor([float("nan")]), 4), ValueError, "NaN"),
        (lambda: encode.latency(torch.rand(3), 4, method="exp"), ValueError, "method"),
        (lambda: encode.rate(torch.zeros(0, 3), 4), ValueError, "empty"),
        (lambda: encode.rate(torch.ones(2, 3, dtype=torch.uint8), 4), TypeError, "floating"),
    ],
)
def test_bad_input(call, exc, word):
    with pytest.raises(exc, match=word):
        call()
