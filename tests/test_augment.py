"""Batched augmentation: statistics of crops, flips and standardisation."""

from __future__ import annotations

import numpy as np
import torch

from toolkit.augment import AugmentConfig, augment_batch, center_crop, random_crop_flip, standardize


def _coordinate_images(n: int, size: int = 32) -> torch.Tensor:
    """Images whose channel 0 holds 8 x column and channel 1 holds 8 x row."""
    cols = torch.arange(size).repeat(size, 1) * 8
    rows = cols.T
    image = torch.stack([cols, rows, torch.zeros_like(cols)], dim=-1).to(torch.uint8)
    return image.expand(n, size, size, 3).contiguous()


def test_crop_offsets_are_uniform_and_flips_happen_half_the_time() -> None:
    n = 9000
    generator = torch.Generator().manual_seed(0)
    out = random_crop_flip(_coordinate_images(n), 24, True, generator).long()
    first_col, last_col = out[:, 0, 0, 0], out[:, 0, -1, 0]
    flipped = first_col > last_col
    left = torch.minimum(first_col, last_col) // 8
    top = out[:, 0, 0, 1] // 8
    for offsets in (left, top):
        counts = np.bincount(offsets.numpy(), minlength=9)
        assert len(counts) == 9 and counts.min() > 0  # every offset 0..8 occurs, nothing else
        expected = n / 9
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 26.1  # 8 degrees of freedom, p = 0.001
    assert abs(float(flipped.float().mean()) - 0.5) < 0.03
    # a flipped crop is the exact mirror of the unflipped window
    assert torch.all((first_col - last_col).abs() == 23 * 8)


def test_standardized_batches_have_zero_mean_and_unit_std(digits) -> None:
    images = torch.as_tensor(digits.train_images[:512])
    x = augment_batch(images, AugmentConfig(crop=6), torch.Generator().manual_seed(1))
    assert x.shape == (512, 1, 6, 6)
    flat = x.reshape(512, -1)
    assert flat.mean(1).abs().max() < 1e-5
    nonconstant = flat.std(1, correction=0) > 0
    assert torch.allclose(flat.std(1, correction=0)[nonconstant], torch.ones(int(nonconstant.sum())), atol=1e-4)
    assert x.is_contiguous(memory_format=torch.channels_last) or x.shape[1] == 1


def test_standardization_clamps_the_std_of_flat_images() -> None:
    flat = torch.full((2, 24, 24, 3), 100.0)
    out = standardize(flat)
    assert torch.isfinite(out).all() and torch.all(out == 0)


def test_brightness_is_cancelled_by_standardization_but_contrast_is_not() -> None:
    images = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8)
    plain = augment_batch(images, AugmentConfig(contrast=None), torch.Generator().manual_seed(3))
    bright = augment_batch(images, AugmentConfig(brightness=63.0, contrast=None), torch.Generator().manual_seed(3))
    torch.testing.assert_close(bright, plain, atol=2e-4, rtol=1e-4)
    contrasted = augment_batch(images, AugmentConfig(), torch.Generator().manual_seed(3))
    assert (contrasted - plain).abs().max() > 0.1


def test_center_crop_takes_the_middle_without_flipping() -> None:
    images = _coordinate_images(2)
    x = center_crop(images, 24)
    reference = standardize(images[:, 4:28, 4:28, :].float()).permute(0, 3, 1, 2)
    torch.testing.assert_close(x, reference)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_same_generator_seed_gives_the_same_batch() -> None:
    images = torch.randint(0, 256, (32, 32, 32, 3), dtype=torch.uint8)
    a = augment_batch(images, AugmentConfig(), torch.Generator().manual_seed(7))
    b = augment_batch(images, AugmentConfig(), torch.Generator().manual_seed(7))
    c = augment_batch(images, AugmentConfig(), torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
