"""Batched, device-resident data augmentation: the TF tutorial's distortions as tensor ops.

The whole data set lives on the training device as one uint8 tensor (N x H x W x C). Each
batch is cut from it by index: random crop and horizontal flip are a single gather (the
flip is folded into the column index), then brightness, contrast and per-image
standardisation run on the batch in float32. No per-sample Python, no DataLoader workers;
the same code runs on CPU and CUDA. Outputs are (B, C, crop, crop) tensors in channels-last
memory layout, which convolutions on both devices prefer.

Order and constants follow ``cifar10_input.py``: crop, flip, brightness (max delta 63),
contrast (factor in [0.2, 1.8)), standardisation ``(x - mean) / max(std, 1/sqrt(n))``.
Brightness adds one value to every pixel and is cancelled exactly by the standardisation
that follows, so it is off by default (``brightness=0``); set 63 for fidelity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class AugmentConfig:
    """Training distortions.

    Attributes:
        crop: side of the random square crop.
        flip: random horizontal flips with probability 1/2.
        brightness: maximum absolute brightness delta (0 disables; the tutorial uses 63).
        contrast: range of the random contrast factor, or ``None`` to disable.
        standardize: per-image standardisation (always on in the tutorial).
    """

    crop: int = 24
    flip: bool = True
    brightness: float = 0.0
    contrast: tuple[float, float] | None = (0.2, 1.8)
    standardize: bool = True

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Per-image standardisation of a float (B, H, W, C) batch, as ``tf.image.per_image_standardization``."""
    flat = x.reshape(x.shape[0], -1)
    mean = flat.mean(dim=1)
    std = flat.std(dim=1, correction=0)
    floor = torch.rsqrt(torch.tensor(float(flat.shape[1]), device=x.device))
    std = torch.maximum(std, floor)
    return (x - mean[:, None, None, None]) / std[:, None, None, None]


def _nchw(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) contiguous -> (B, C, H, W) view with channels-last strides (no copy)."""
    return x.permute(0, 3, 1, 2)


def random_crop_flip(images: torch.Tensor, crop: int, flip: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Random ``crop`` x ``crop`` windows, optionally mirrored, of a uint8 (B, H, W, C) batch."""
    batch, height, width = images.shape[:3]
    device = images.device
    top = torch.randint(0, height - crop + 1, (batch,), device=device, generator=generator)
    left = torch.randint(0, width - crop + 1, (batch,), device=device, generator=generator)
    steps = torch.arange(crop, device=device)
    rows = top[:, None] + steps[None, :]
    cols = left[:, None] + steps[None, :]
    if flip:
        mirrored = torch.rand(batch, device=device, generator=generator) < 0.5
        cols = torch.where(mirrored[:, None], left[:, None] + (crop - 1 - steps)[None, :], cols)
    index = torch.arange(batch, device=device)[:, None, None]
    return images[index, rows[:, :, None], cols[:, None, :]]


def augment_batch(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Distort a uint8 (B, H, W, C) batch for training; returns float (B, C, crop, crop)."""
    x = random_crop_flip(images, config.crop, config.flip, generator).float()
    batch, device = x.shape[0], x.device
    if config.brightness:
        delta = (torch.rand(batch, device=device, generator=generator) * 2 - 1) * config.brightness
        x = x + delta[:, None, None, None]
    if config.contrast is not None:
        low, high = config.contrast
        factor = low + torch.rand(batch, device=device, generator=generator) * (high - low)
        channel_mean = x.mean(dim=(1, 2), keepdim=True)
        x = (x - channel_mean) * factor[:, None, None, None] + channel_mean
    if config.standardize:
        x = standardize(x)
    return _nchw(x)


def center_crop(images: torch.Tensor, crop: int) -> torch.Tensor:
    """Evaluation input: the central crop, standardised; float (B, C, crop, crop)."""
    height, width = images.shape[1:3]
    top, left = (height - crop) // 2, (width - crop) // 2
    return _nchw(standardize(images[:, top : top + crop, left : left + crop, :].float()))


def to_device_images(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Place a uint8 (N, H, W, C) array on ``device`` as one contiguous tensor."""
    tensor = torch.as_tensor(images)
    if tensor.dtype != torch.uint8:
        raise TypeError(f"images must be uint8, got {tensor.dtype}")
    return tensor.to(device).contiguous()
