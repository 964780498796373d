"""Batched, device-resident data augmentation: the TF tutorial's distortions as tensor ops.

The whole data set lives on the training device as one uint8 tensor (N x H x W x C) where it
fits, else batches are gathered from the memory-mapped cache (:class:`DeviceImages`). Each
batch is cut from it by index: random crop and horizontal flip are a single gather (the
flip is folded into the column index), then brightness, contrast and per-image
standardisation run on the batch in float32 as one fused multiply-add. No per-sample
Python, no DataLoader workers; the same code runs on CPU and CUDA. Outputs are
(B, C, crop, crop) tensors in channels-last memory layout, which convolutions on both
devices prefer.

Order and constants follow ``cifar10_input.py``: crop, flip, brightness (max delta 63),
contrast (factor in [0.2, 1.8)), standardisation ``(x - mean) / max(std, 1/sqrt(n))``.
Brightness adds one value to every pixel and is cancelled exactly by the standardisation
that follows, so it is off by default (``brightness=0``); set 63 for fidelity.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


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
    """Distort a uint8 (B, H, W, C) batch for training; returns float (B, C, crop, crop).

    Brightness, contrast and standardisation are each affine in the pixels of an image
    channel, so their composition is one multiply-add ``x * scale + shift[c]`` whose
    coefficients follow from each channel's mean and variance: the crop is read once for
    its statistics and once for the result, instead of once per distortion and twice for
    the standardisation. With standardisation, brightness cancels exactly, as it does in
    TF up to rounding (its random values are still drawn, so the stream of random numbers is
    the same either way).
    """
    x = random_crop_flip(images, config.crop, config.flip, generator).float()
    batch, device = x.shape[0], x.device
    delta = torch.zeros(batch, 1, device=device)
    if config.brightness:
        delta = (torch.rand(batch, 1, device=device, generator=generator) * 2 - 1) * config.brightness
    factor = torch.ones(batch, 1, device=device)
    if config.contrast is not None:
        low, high = config.contrast
        factor = low + torch.rand(batch, 1, device=device, generator=generator) * (high - low)
    if config.contrast is None and not config.standardize:
        return _nchw(x + delta[:, :, None, None])
    # Brightness then contrast: (x + delta - (m_c + delta)) * f + m_c + delta, m_c the channel's mean.
    var, mean = torch.var_mean(x, dim=(1, 2), correction=0)  # (B, C) per image and channel
    scale, shift = factor, (1 - factor) * mean + delta
    if config.standardize:
        # Mean and variance over all channels of the contrasted image, from the channels' own.
        centre = mean.mean(dim=1, keepdim=True)
        spread = (factor.square() * var + (mean - centre).square()).mean(dim=1, keepdim=True)
        std = torch.clamp(spread.sqrt(), min=1.0 / math.sqrt(x[0].numel()))
        scale, shift = factor / std, ((1 - factor) * mean - centre) / std
    return _nchw(torch.addcmul(shift[:, None, None, :], x, scale[:, None, None, :]))


def center_crop(images: torch.Tensor, crop: int) -> torch.Tensor:
    """Evaluation input: the central crop, standardised; float (B, C, crop, crop)."""
    height, width = images.shape[1:3]
    top, left = (height - crop) // 2, (width - crop) // 2
    return _nchw(standardize(images[:, top : top + crop, left : left + crop, :].float()))


def to_device_images(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Place a uint8 (N, H, W, C) array on ``device`` as one contiguous tensor.

    A read-only array (a memory-mapped cache) is copied: a tensor must own writable memory.
    """
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = np.array(images)
    tensor = torch.as_tensor(images)
    if tensor.dtype != torch.uint8:
        raise TypeError(f"images must be uint8, got {tensor.dtype}")
    return tensor.to(device).contiguous()


#: Share of the device's free memory (or of the machine's available memory, for the CPU) the whole
#: image array may take to be placed there; above it, batches are gathered from the array on demand.
RESIDENT_SHARE = 0.5


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: the GPU's free memory, or the machine's available memory for the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


class DeviceImages:
    """A uint8 (N, H, W, C) image array to cut batches from, on the device when it fits.

    Where the whole array takes at most :data:`RESIDENT_SHARE` of the device's free memory
    (CIFAR-10's 150 MB anywhere), it is placed there once and a batch is an index into it, as
    it always was. Otherwise (a million images in a memory-mapped cache) it stays where it is
    and each batch is gathered from it and moved to the device: the same pixels either way,
    and the random draws that pick the batch do not depend on which.

    Indexing takes a slice or an index tensor (on any device) and returns a uint8 tensor on
    :attr:`device`.
    """

    def __init__(self, images: np.ndarray, device: torch.device, *, resident: bool | None = None) -> None:
        if images.dtype != np.uint8:
            raise TypeError(f"images must be uint8, got {images.dtype}")
        self.device = device
        self.shape = tuple(int(n) for n in images.shape)
        if resident is None:
            resident = images.nbytes <= RESIDENT_SHARE * free_memory(device)
        self.resident = to_device_images(images, device) if resident else None
        self.host = None if resident else images

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice | torch.Tensor) -> torch.Tensor:
        if self.resident is not None:
            return self.resident[key]
        assert self.host is not None
        rows = key if isinstance(key, slice) else key.cpu().numpy()
        return torch.from_numpy(np.array(self.host[rows])).to(self.device)  # a copy: the map is read-only


def image_batches(images: np.ndarray, device: torch.device, batch: int) -> Iterator[torch.Tensor]:
    """Consecutive batches of a uint8 (N, H, W, C) array as tensors on ``device``: streaming inference.

    Only one batch is copied at a time, so a memory-mapped array of any size is embedded in
    the memory of a batch.
    """
    for start in range(0, len(images), batch):
        yield torch.from_numpy(np.array(images[start : start + batch])).to(device)


@dataclass(frozen=True)
class ViewConfig:
    """SimCLR-style views for contrastive training (Chen et al. 2020, CIFAR settings).

    Attributes:
        size: output side of each view (smaller than the image trains faster; the encoder
            pools globally, so it embeds full-size images all the same).
        scale: range of the crop's share of the image area (SimCLR on CIFAR: 0.08-1;
            small-batch reproductions use 0.2-1).
        ratio: range of the crop's aspect ratio (width / height).
        flip: random horizontal flips with probability 1/2.
        jitter: brightness, contrast and saturation strength (SimCLR's colour strength 0.5
            gives 0.4 for each).
        jitter_p: probability of applying the colour jitter to a view.
        gray_p: probability of turning a view grayscale.
    """

    size: int = 24
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    jitter: float = 0.4
    jitter_p: float = 0.8
    gray_p: float = 0.2

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


#: ITU-R 601 luma weights, as torchvision's grayscale.
_LUMA = (0.299, 0.587, 0.114)


def _uniform(
    low: float, high: float, batch: int, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    return low + (high - low) * torch.rand(batch, device=device, generator=generator)


def random_resized_views(
    images: torch.Tensor, config: ViewConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One random view per uint8 (B, H, W, C) image: float (B, C, size, size) in [0, 1], channels last.

    Crop, resize and flip are one batched ``grid_sample`` (bilinear) with a per-sample affine
    grid, so a batch costs one kernel call however different its crops are. Colour jitter
    (brightness, contrast, saturation as torchvision defines them, in random order per
    batch) and grayscale follow on the batch. Hue is left out: it needs an HSV round trip per
    pixel for little gain at 32x32 (SimCLR's ablations credit most of colour distortion's
    effect to the other three and grayscale).
    """
    batch, channels = images.shape[0], images.shape[3]
    device = images.device
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    area = _uniform(*config.scale, batch, device, generator)
    log_ratio = _uniform(math.log(config.ratio[0]), math.log(config.ratio[1]), batch, device, generator)
    aspect = torch.exp(log_ratio)
    # Crop sides as fractions of the image side, clamped inside the image.
    crop_w = torch.sqrt(area * aspect).clamp(max=1.0)
    crop_h = torch.sqrt(area / aspect).clamp(max=1.0)
    centre_x = (torch.rand(batch, device=device, generator=generator) * 2 - 1) * (1 - crop_w)
    centre_y = (torch.rand(batch, device=device, generator=generator) * 2 - 1) * (1 - crop_h)
    sign = torch.ones(batch, device=device)
    if config.flip:
        sign = torch.where(torch.rand(batch, device=device, generator=generator) < 0.5, -sign, sign)
    theta = torch.zeros(batch, 2, 3, device=device)
    theta[:, 0, 0] = crop_w * sign
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = crop_h
    theta[:, 1, 2] = centre_y
    grid = F.affine_grid(theta, [batch, channels, config.size, config.size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if config.jitter and channels == 3:
        x = _colour_jitter(x, config, generator)
    if config.gray_p and channels == 3:
        gray = _grayscale(x)
        to_gray = torch.rand(batch, device=device, generator=generator) < config.gray_p
        x = torch.where(to_gray[:, None, None, None], gray.expand_as(x), x)
    return x.contiguous(memory_format=torch.channels_last)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(_LUMA, device=x.device, dtype=x.dtype)[None, :, None, None]
    return (x * weights).sum(dim=1, keepdim=True)


def _colour_jitter(x: torch.Tensor, config: ViewConfig, generator: torch.Generator | None) -> torch.Tensor:
    batch, device, s = x.shape[0], x.device, config.jitter
    apply = torch.rand(batch, device=device, generator=generator) < config.jitter_p
    ones = torch.ones(batch, device=device)
    factors = [torch.where(apply, _uniform(1 - s, 1 + s, batch, device, generator), ones) for _ in range(3)]
    order = torch.randperm(3, device=device, generator=generator).tolist()
    for which in order:
        f = factors[which][:, None, None, None]
        if which == 0:  # brightness: scale towards black
            x = x * f
        elif which == 1:  # contrast: blend with the image's mean gray level
            mean = _grayscale(x).mean(dim=(2, 3), keepdim=True)
            x = (x - mean) * f + mean
        else:  # saturation: blend with the grayscale image
            gray = _grayscale(x)
            x = (x - gray) * f + gray
        x = x.clamp(0.0, 1.0)
    return x
