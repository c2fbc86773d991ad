"""spiking.linear.Linear computes nn.Linear's outputs and gradients bit for bit."""
import pytest
import torch

from spiking.linear import Linear


@pytest.mark.parametrize("shape,bias", [((16, 30), False), ((3, 5, 30), False), ((16, 30), True)])
def test_linear_matches_nn_linear_exactly(shape, bias):
    torch.manual_seed(0)
    ref = torch.nn.Linear(30, 20, bias=bias)
    fast = Linear(30, 20, bias=bias)
    fast.load_state_dict(ref.state_dict())
    x1 = torch.randn(*shape, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y1, y2 = ref(x1), fast(x2)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    assert torch.equal(y1, y2) and torch.equal(x1.grad, x2.grad)
    for p1, p2 in zip(ref.parameters(), fast.parameters()):
        assert torch.equal(p1.grad, p2.grad)
    with torch.no_grad():  # the kept transpose follows in-place updates of the weight
        fast.weight.add_(1.0)
        ref.weight.add_(1.0)
    assert torch.equal(fast(x2), ref(x1))
    with torch.inference_mode():
        assert torch.equal(fast(x2.detach()), ref(x1.detach()))


def test_linear_copies_after_in_place_updates():
    import copy

    fast = Linear(6, 3)
    fast(torch.randn(2, 6)).sum().backward()
    with torch.no_grad():
        fast.weight.sub_(0.1 * fast.weight.grad)
    twin = copy.deepcopy(fast)
    x = torch.randn(4, 6)
    assert torch.equal(twin(x), fast(x))
    with torch.no_grad():
        twin.weight.add_(1.0)
    assert not torch.equal(twin(x), fast(x))  # the copy's kept transpose is its own weight's


def test_contiguous_transpose_is_kept_until_the_weight_changes():
    torch.manual_seed(1)
    layer = Linear(7, 5, bias=False)
    first = layer.weight_t_contiguous()
    assert first.is_contiguous() and torch.equal(first, layer.weight.detach().t())
    assert layer.weight_t_contiguous() is first  # kept: no copy per call
    with torch.inference_mode():
        assert layer.weight_t_contiguous() is first
    with torch.no_grad():
        layer.weight.mul_(2.0)  # an optimizer-like in-place update
    second = layer.weight_t_contiguous()
    assert second is not first and torch.equal(second, layer.weight.detach().t())
    with torch.inference_mode():
        layer.load_state_dict({"weight": torch.ones(5, 7)})
        third = layer.weight_t_contiguous()
    assert not third.is_inference() and torch.equal(third, torch.ones(7, 5))
