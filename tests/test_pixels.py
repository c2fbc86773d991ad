"""The one-pass pixel transform (spiking.kernels.pixels) against its torch reference."""
from __future__ import annotations

import pytest
import torch

from spiking.data.streams import MNIST_MEAN, MNIST_STD
from spiking.kernels import pixels as px

native = pytest.mark.skipif(not px.extension().available(), reason="no C++ toolchain")


@native
@pytest.mark.parametrize("shape", [(7, 784), (5, 28, 28), (3, 1), (9, 13)])
@pytest.mark.parametrize("affine", [(1.0, 0.0), (1 / 255, 0.0), (1 / (255 * MNIST_STD), -MNIST_MEAN / MNIST_STD)])
@pytest.mark.parametrize("permuted", [False, True])
def test_native_equals_the_torch_ops(shape, affine, permuted):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    images.view(-1)[:256] = torch.arange(256, dtype=torch.uint8)[:images.numel()]  # every value, where room
    n_pixels = images[0].numel()
    perm = torch.randperm(n_pixels, generator=g) if permuted else None
    rows = torch.tensor([shape[0] - 1, 0, 1, 0], dtype=torch.long)
    got = px.pixels(images, rows, perm, *affine)
    want = px.pixels_reference(images, rows, perm, *affine)
    assert got.dtype == torch.float32 and got.shape == (4, n_pixels)
    assert torch.equal(got, want)
    assert torch.equal(px.pixels(images, rows[:0], perm, *affine), want[:0])


@native
def test_all_256_values_and_strided_rows():
    images = torch.arange(256, dtype=torch.uint8).repeat(3, 1)
    rows = torch.arange(6)[::2] // 2  # a strided index tensor
    scale, shift = 1 / (255 * MNIST_STD), -MNIST_MEAN / MNIST_STD
    assert torch.equal(px.pixels(images, rows, None, scale, shift),
                       px.pixels_reference(images, rows, None, scale, shift))


def test_other_dtypes_take_the_reference():
    images = torch.rand(4, 6, dtype=torch.float64)
    rows = torch.tensor([3, 1])
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    out = px.pixels(images, rows, perm, 2.0, 1.0)
    assert out.dtype == torch.float32
    assert torch.equal(out, (images[rows].float().flip(1) * 2.0 + 1.0))


@native
def test_bad_input_is_refused_by_name():
    images = torch.zeros(3, 4, dtype=torch.uint8)
    with pytest.raises(IndexError, match="row 3 out of range"):
        px.pixels(images, torch.tensor([0, 3]))
    with pytest.raises(IndexError, match="perm entry 4 out of range"):
        px.pixels(images, torch.tensor([0]), torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="perm must be int64 \\[4\\]"):
        px.pixels(images, torch.tensor([0]), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="rows must be a 1-d int64"):
        px.pixels(images, torch.tensor([[0]]))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "2"])
def test_a_scale_or_shift_that_is_not_a_finite_number_is_refused(bad):
    images = torch.zeros(3, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="scale and shift must be finite"):
        px.pixels(images, torch.tensor([0]), None, bad, 0.0)
    with pytest.raises(ValueError, match="scale and shift must be finite"):
        px.pixels(images, torch.tensor([0]), None, 1.0, bad)
