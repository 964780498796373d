"""The paper's two networks: the TensorFlow-tutorial classifier and the hourglass autoencoder.

Both follow ``notes/paper-models.md``: TF "SAME" max-pooling (padding only at the bottom and
right), TF truncated-normal initialisation, and for the classifier the tutorial's layer order
(pool1 before norm1, norm2 before pool2). "norm" is batch normalisation by default (what the
paper's text says) or the tutorial's local response normalisation (``norm="lrn"``), computed
exactly but faster than ``nn.LocalResponseNorm`` as a banded matrix product over channels.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.errors import require

Norm = Literal["batch", "lrn"]
EMBEDDING_DIM = 216


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) along one axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def same_output_size(size: int, stride: int = 2) -> int:
    return math.ceil(size / stride)


def _implicit_pad(size: int, kernel: int, stride: int) -> int | None:
    """The ``padding`` with which ``max_pool2d(..., ceil_mode=True)`` equals TF SAME pooling, or None.

    PyTorch pads ``padding`` on both sides, and ``ceil_mode`` lets the last window hang over
    the bottom/right edge: that is TF's one extra pixel there when its total padding is odd.
    Where PyTorch's output size differs (stride 1 with odd padding, windows larger than the
    image), there is no such padding.
    """
    top, _ = _same_pads(size, kernel, stride)
    if top > kernel // 2 or size + 2 * top < kernel:
        return None
    out = math.ceil((size + 2 * top - kernel) / stride) + 1
    if (out - 1) * stride >= size + top:  # PyTorch drops a last window that starts in the padding
        out -= 1
    return top if out == same_output_size(size, stride) else None


class SameMaxPool2d(nn.Module):
    """``tf.nn.max_pool(..., padding="SAME")``: padding only at the bottom/right when it is uneven.

    Without a padded copy where PyTorch's implicit padding gives the same windows
    (:func:`_implicit_pad`; always for the 3x3/2 pools of the classifier): implicit padding
    never wins a max, exactly like TF's -inf, and skipping ``F.pad`` saves a fill and a copy
    of the largest activation, forward and backward (about 15 % of a classifier training
    step on a CPU).
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        pad_h, pad_w = _implicit_pad(x.shape[-2], k, s), _implicit_pad(x.shape[-1], k, s)
        if pad_h is not None and pad_w is not None:
            return F.max_pool2d(x, k, s, padding=(pad_h, pad_w), ceil_mode=True)
        top, bottom = _same_pads(x.shape[-2], k, s)
        left, right = _same_pads(x.shape[-1], k, s)
        return F.max_pool2d(F.pad(x, (left, right, top, bottom), value=float("-inf")), k, s)


class _BandedLRNFunction(torch.autograd.Function):
    """``y = x * d^-beta`` with ``d = bias + alpha * (x^2 @ band)`` over the last axis, and its exact gradient.

    Written out by hand because autograd's version of the same few ops keeps four
    intermediates and takes ``pow`` twice; here the backward pass is one GEMM and a few
    elementwise products (about 4x faster on a CPU, the LRN model's hot spot):
    ``dx = dy * r - 2 * alpha * beta * x * ((dy * x * r / d) @ band)``, with ``r = d^-beta``
    (the band matrix is symmetric).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, band: torch.Tensor, bias: float, alpha: float, beta: float) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        d = torch.addmm(flat.new_full((1,), bias), flat * flat, band, alpha=alpha).view_as(x)
        # d^-0.75 as rsqrt(d * sqrt(d)): the tutorial's beta, several times cheaper than pow.
        r = torch.rsqrt(d * torch.sqrt(d)) if beta == 0.75 else d.pow(-beta)
        ctx.save_for_backward(x, band, d, r)
        ctx.alpha, ctx.beta = alpha, beta
        return x * r

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:
        x, band, d, r = ctx.saved_tensors
        dy_r = dy * r
        g = (dy_r * x / d).reshape(-1, x.shape[-1]) @ band
        return dy_r.addcmul_(x, g.view_as(x), value=-2 * ctx.alpha * ctx.beta), None, None, None, None


class BandedLRN(nn.Module):
    """Local response normalisation across channels, exactly ``tf.nn.lrn``.

    ``y = x / (bias + alpha * sum_{|j-c| <= radius} x_j^2) ** beta`` with TF's defaults of the
    CIFAR-10 tutorial (radius 4, bias 1, alpha 0.001/9, beta 0.75). The windowed sum of
    squares is one matrix product with a 0/1 band matrix over the channel axis; in
    channels-last layout the channel axis is contiguous, so this is a single GEMM instead of
    ``nn.LocalResponseNorm``'s pad/avg-pool/pow chain, and the gradient is written out
    (:class:`_BandedLRNFunction`). Channels beyond the edges count as zero, as in both TF
    and PyTorch.
    """

    def __init__(
        self, channels: int, depth_radius: int = 4, bias: float = 1.0, alpha: float = 0.001 / 9.0, beta: float = 0.75
    ) -> None:
        super().__init__()
        index = torch.arange(channels)
        band = ((index[:, None] - index[None, :]).abs() <= depth_radius).to(torch.float32)
        self.register_buffer("band", band, persistent=False)
        self.bias, self.alpha, self.beta = bias, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalisation math in fp32 even under autocast: x^2 sums lose precision in bf16.
        with torch.autocast(device_type=x.device.type, enabled=False):
            nhwc = x.float().permute(0, 2, 3, 1)
            y = _BandedLRNFunction.apply(nhwc, self.band.to(nhwc.dtype), self.bias, self.alpha, self.beta)
            return y.permute(0, 3, 1, 2).to(x.dtype)


def _norm_layer(norm: Norm, channels: int) -> nn.Module:
    require(norm in ("batch", "lrn"), f"norm must be 'batch' or 'lrn', got {norm!r}")
    return nn.BatchNorm2d(channels) if norm == "batch" else BandedLRN(channels)


def _trunc_normal_(tensor: torch.Tensor, std: float) -> None:
    """TensorFlow's truncated normal: resample beyond two standard deviations."""
    nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


class Classifier(nn.Module):
    """The CIFAR-10 tutorial CNN of the paper's Fig. 2.

    conv5x5-64, 3x3/2 SAME max-pool, norm, conv5x5-64, norm, 3x3/2 pool, FC-384, FC-192,
    logits. With ``norm="lrn"`` on 24x24x3 crops and 10 classes it has exactly 1,068,298
    parameters, like the tutorial. Only the two hidden fully connected weight matrices take
    weight decay (:meth:`decayed_parameters`).

    Args:
        in_channels: image channels (3 for RGB, 1 for grayscale).
        num_classes: number of logits.
        crop: side of the square input crop (24 for 32x32 images).
        norm: ``"batch"`` (default, the paper's text) or ``"lrn"`` (the TF tutorial).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, crop: int = 24, norm: Norm = "batch") -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "crop": crop, "norm": norm}
        self.conv1 = nn.Conv2d(in_channels, 64, 5, padding=2)
        self.pool1 = SameMaxPool2d()
        self.norm1 = _norm_layer(norm, 64)
        self.conv2 = nn.Conv2d(64, 64, 5, padding=2)
        self.norm2 = _norm_layer(norm, 64)
        self.pool2 = SameMaxPool2d()
        side = same_output_size(same_output_size(crop))
        self.local3 = nn.Linear(64 * side * side, 384)
        self.local4 = nn.Linear(384, 192)
        self.logits = nn.Linear(192, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """TF tutorial initialisation (truncated normals; conv2 and FC biases 0.1)."""
        for layer, std, bias in (
            (self.conv1, 5e-2, 0.0),
            (self.conv2, 5e-2, 0.1),
            (self.local3, 0.04, 0.1),
            (self.local4, 0.04, 0.1),
            (self.logits, 1.0 / 192.0, 0.0),
        ):
            _trunc_normal_(layer.weight, std)
            nn.init.constant_(layer.bias, bias)

    def decayed_parameters(self) -> list[nn.Parameter]:
        """The parameters that take weight decay: local3's and local4's weight matrices."""
        return [self.local3.weight, self.local4.weight]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer (local4's 192 activations): the ``proxy`` encoder's embedding."""
        # max-pool and ReLU commute (ReLU is monotonic): pooling first runs ReLU and its
        # gradient on a quarter of the values.
        x = self.norm1(F.relu(self.pool1(self.conv1(x))))
        x = self.pool2(self.norm2(F.relu(self.conv2(x))))
        x = F.relu(self.local3(torch.flatten(x, 1)))
        return F.relu(self.local4(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(x))


def embedding_channels_for(crop: int, embedding_dim: int = EMBEDDING_DIM) -> int:
    """Bottleneck channels so that channels x side x side is (close to) ``embedding_dim``."""
    side = same_output_size(same_output_size(same_output_size(crop)))
    return max(1, round(embedding_dim / (side * side)))


class Autoencoder(nn.Module):
    """The paper's hourglass autoencoder (its Fig. 3), with the guesses of paper-models.md §5.2.

    Encoder: three blocks of conv5x5 (SAME) + ReLU + 3x3/2 SAME max-pool (24 -> 12 -> 6 -> 3),
    widths 64, 64 and ``embedding_channels``, then batch normalisation; the embedding is the
    flattened (channel, row, column) output: 24 x 3 x 3 = 216 values for 24x24 crops.
    Decoder: three 5x5 stride-2 transposed convolutions (3 -> 6 -> 12 -> 24) with ReLU between,
    a linear output cropped to the input size when the input is not a multiple of 8.

    Args:
        in_channels: image channels.
        crop: side of the square input crop.
        embedding_channels: bottleneck channels; default picks the count that gives a
            216-element embedding for this crop (24 for 24x24, 216 for 6x6).
        width: channels of the hidden layers.
    """

    def __init__(
        self, in_channels: int = 3, crop: int = 24, embedding_channels: int | None = None, width: int = 64
    ) -> None:
        super().__init__()
        embedding_channels = embedding_channels or embedding_channels_for(crop)
        self.config = {
            "in_channels": in_channels,
            "crop": crop,
            "embedding_channels": embedding_channels,
            "width": width,
        }
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, padding=2),
            nn.ReLU(),
            SameMaxPool2d(),
            nn.Conv2d(width, width, 5, padding=2),
            nn.ReLU(),
            SameMaxPool2d(),
            nn.Conv2d(width, embedding_channels, 5, padding=2),
            nn.ReLU(),
            SameMaxPool2d(),
            nn.BatchNorm2d(embedding_channels),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(embedding_channels, width, 5, stride=2, padding=2, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(width, width, 5, stride=2, padding=2, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(width, in_channels, 5, stride=2, padding=2, output_padding=1),
        )
        self.latent_side = same_output_size(same_output_size(same_output_size(crop)))
        self.crop = crop

    @property
    def embedding_dim(self) -> int:
        return int(self.config["embedding_channels"]) * self.latent_side**2

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck tensor (B, channels, side, side)."""
        return self.encoder(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding: the bottleneck flattened in (channel, row, column) order."""
        return torch.flatten(self.latent(x), 1)

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(z)
        excess = out.shape[-1] - self.crop
        if excess:
            start = excess // 2
            out = out[..., start : start + self.crop, start : start + self.crop]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_latent(self.latent(x))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class ConvEncoder(nn.Module):
    """A small VGG-style trunk for self-supervised (contrastive) training on a CPU.

    Four conv3x3 + batch-norm + ReLU stages of ``widths`` channels; the stages in
    ``pooled_stages`` (by default the first three) end in a 2x2 max-pool (24 -> 12 -> 6 -> 3
    for a 24x24 view, 32 -> 16 -> 8 -> 4 for a CIFAR-10 image). The embedding is the global
    average of the last two stages' feature maps, concatenated (128 + 256 = 384 values by
    default): pooling makes it independent of the input size, so the encoder trains on small
    views and embeds whole images. About 8.5 M multiply-adds per 24x24 view (15 M per 32x32
    image), some 40-60x less than a CIFAR ResNet-18's 0.56 G, which is what makes a dozen or
    more epochs fit in half an hour on two cores.
    The projection head (Linear-BN-ReLU-Linear, SimCLR's) is used for the loss only.

    Args:
        in_channels: image channels.
        widths: channels of the four stages.
        projection_dim: output size of the projection head.
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: tuple[int, int, int, int] = (32, 64, 128, 256),
        projection_dim: int = 128,
        pooled_stages: tuple[int, ...] = (0, 1, 2),
    ) -> None:
        super().__init__()
        self.config = {
            "in_channels": in_channels,
            "widths": list(widths),
            "projection_dim": projection_dim,
            "pooled_stages": list(pooled_stages),
        }
        layers: list[nn.Module] = []
        channels = in_channels
        self.stages = nn.ModuleList()
        for index, width in enumerate(widths):
            layers = [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            if index in pooled_stages:
                layers.append(nn.MaxPool2d(2))
            self.stages.append(nn.Sequential(*layers))
            channels = width
        hidden = widths[-1]
        self.head = nn.Sequential(
            nn.Linear(widths[-1], hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, projection_dim),
        )

    @property
    def embedding_dim(self) -> int:
        widths = self.config["widths"]
        return int(widths[-2] + widths[-1])

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Globally pooled outputs of the last two stages."""
        for stage in self.stages[:-1]:
            x = stage(x)
        penultimate = x.mean(dim=(2, 3))
        last = self.stages[-1](x).mean(dim=(2, 3))
        return penultimate, last

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding: both pooled stages, concatenated (no projection head)."""
        return torch.cat(self.features(x), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The projection the contrastive loss compares."""
        return self.head(self.features(x)[1])
