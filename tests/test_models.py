"""The paper's networks: shapes, parameter counts and the TF-tutorial details."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from toolkit.models import Autoencoder, BandedLRN, Classifier, SameMaxPool2d, count_parameters


def test_classifier_parameter_counts_match_the_tutorial() -> None:
    # conv1 4,864 + conv2 102,464 + local3 885,120 + local4 73,920 + logits 1,930
    assert count_parameters(Classifier(norm="lrn")) == 1_068_298
    # batch norm adds a scale and a shift for each of 64 channels, twice
    assert count_parameters(Classifier(norm="batch")) == 1_068_298 + 2 * 2 * 64


@pytest.mark.parametrize("norm", ["batch", "lrn"])
def test_classifier_shapes(norm: str) -> None:
    model = Classifier(norm=norm).eval()
    assert model(torch.randn(5, 3, 24, 24)).shape == (5, 10)
    assert model.local3.in_features == 6 * 6 * 64  # 24 -> 12 -> 6 with SAME pooling
    gray = Classifier(in_channels=1, num_classes=4, crop=6, norm=norm).eval()
    assert gray(torch.randn(2, 1, 6, 6)).shape == (2, 4)


def test_autoencoder_has_a_216_element_embedding_and_reconstructs_the_input_size() -> None:
    model = Autoencoder().eval()
    x = torch.randn(3, 3, 24, 24)
    assert model.latent(x).shape == (3, 24, 3, 3)
    assert model.encode(x).shape == (3, 216)
    assert model(x).shape == x.shape
    small = Autoencoder(in_channels=1, crop=6).eval()  # digits: 8x8 images, 6x6 crops
    assert small.embedding_dim == 216
    assert small(torch.randn(2, 1, 6, 6)).shape == (2, 1, 6, 6)


def test_embedding_is_flattened_in_channel_row_column_order() -> None:
    model = Autoencoder().eval()
    x = torch.randn(2, 3, 24, 24)
    latent = model.latent(x)
    assert torch.equal(model.encode(x)[:, 9 * 5 + 3 * 1 + 2], latent[:, 5, 1, 2])


def _tf_lrn(x: np.ndarray, radius: int = 4, bias: float = 1.0, alpha: float = 0.001 / 9, beta: float = 0.75):
    """tf.nn.lrn written out from its definition (NCHW input)."""
    out = np.empty_like(x)
    channels = x.shape[1]
    for c in range(channels):
        lo, hi = max(0, c - radius), min(channels, c + radius + 1)
        sqr_sum = (x[:, lo:hi] ** 2).sum(axis=1)
        out[:, c] = x[:, c] / (bias + alpha * sqr_sum) ** beta
    return out


def test_banded_lrn_equals_tf_lrn_and_torch_local_response_norm_including_edges() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 64, 6, 6) * 20  # large values make the normalisation matter
    ours = BandedLRN(64)(x)
    reference = torch.from_numpy(_tf_lrn(x.double().numpy())).float()
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, nn.LocalResponseNorm(9, 0.001, 0.75, 1.0)(x), rtol=1e-5, atol=1e-5)
    assert (ours - x).abs().max() > 1.0  # it really normalises
    channels_last = BandedLRN(64)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(channels_last, ours)


def test_banded_lrn_gradient_is_exact() -> None:
    """The hand-written backward pass: finite differences, and autograd through torch's LRN."""
    from toolkit.models import _BandedLRNFunction

    torch.manual_seed(0)
    band = BandedLRN(16).band.double()
    x = (torch.randn(2, 16, 4, 4, dtype=torch.float64) * 3).requires_grad_()
    for beta in (0.75, 0.6):  # the tutorial's beta (rsqrt path) and the general pow path
        assert torch.autograd.gradcheck(
            lambda t, b=beta: _BandedLRNFunction.apply(t.permute(0, 2, 3, 1), band, 1.0, 0.3, b), (x,)
        )
    x = torch.randn(4, 64, 6, 6) * 20
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    weights = torch.randn_like(x)
    (BandedLRN(64)(ours) * weights).sum().backward()
    (nn.LocalResponseNorm(9, 0.001, 0.75, 1.0)(theirs) * weights).sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-4, atol=1e-6)


def test_same_max_pool_pads_only_bottom_and_right_like_tensorflow() -> None:
    x = torch.arange(24 * 24, dtype=torch.float32).reshape(1, 1, 24, 24)
    out = SameMaxPool2d()(x)
    assert out.shape == (1, 1, 12, 12)
    # TF SAME for 24 -> 12 with a 3x3/2 window: window i covers rows 2i..2i+2 (no top padding)
    expected = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)
    assert torch.equal(out, expected)
    assert out[0, 0, 0, 0] == x[0, 0, 2, 2]  # PyTorch's padding=1 would give x[0, 0, 1, 1]


def test_same_max_pool_without_a_padded_copy_equals_padding_with_minus_infinity() -> None:
    """The implicit-padding fast path gives TF's windows, values and gradients for every size it takes."""
    torch.manual_seed(0)
    for kernel, stride in ((1, 1), (2, 1), (2, 2), (3, 1), (3, 2), (5, 2), (3, 3)):
        pool = SameMaxPool2d(kernel, stride)
        for height in range(1, 14):
            width = 14 - height
            x = torch.randn(2, 3, height, width, requires_grad=True)
            top = max((math.ceil(height / stride) - 1) * stride + kernel - height, 0)
            left = max((math.ceil(width / stride) - 1) * stride + kernel - width, 0)
            pads = (left // 2, left - left // 2, top // 2, top - top // 2)
            expected = F.max_pool2d(F.pad(x, pads, value=float("-inf")), kernel, stride)
            out = pool(x)
            assert torch.equal(out, expected), (kernel, stride, height, width)
            weights = torch.randn_like(out)
            (ours,) = torch.autograd.grad((out * weights).sum(), x)
            (padded,) = torch.autograd.grad((expected * weights).sum(), x)
            assert torch.equal(ours, padded), (kernel, stride, height, width)


def test_initialisation_follows_the_tutorial() -> None:
    torch.manual_seed(1)
    model = Classifier(norm="lrn")
    assert torch.all(model.conv1.bias == 0)
    assert torch.all(model.conv2.bias == 0.1)
    assert torch.all(model.local3.bias == 0.1) and torch.all(model.local4.bias == 0.1)
    assert torch.all(model.logits.bias == 0)
    for layer, std in ((model.conv1, 5e-2), (model.conv2, 5e-2), (model.local3, 0.04), (model.logits, 1 / 192)):
        weights = layer.weight.detach()
        assert weights.abs().max() <= 2 * std + 1e-7  # truncated at two standard deviations
        assert 0.7 * std < weights.std() < 1.0 * std  # a 2-sigma truncated normal has std 0.88 sigma


def test_only_the_hidden_fc_weight_matrices_take_weight_decay() -> None:
    model = Classifier()
    decayed = model.decayed_parameters()
    assert [p.shape for p in decayed] == [torch.Size([384, 2304]), torch.Size([192, 384])]
    assert decayed[0] is model.local3.weight and decayed[1] is model.local4.weight
