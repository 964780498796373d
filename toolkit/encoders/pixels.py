"""The "no learning" baseline: PCA of the pixels of each image's centre crop."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from toolkit.augment import center_crop
from toolkit.data import ImageDataset
from toolkit.encoders.base import Encoder, EncoderOutput, Options
from toolkit.errors import is_whole, require
from toolkit.runs import Run


@dataclass
class PixelsPCAOptions(Options):
    """Attributes:
    components: principal components kept (capped by the pixel count and the images).
    whiten: scale every component to unit variance (Euclidean distances then weigh each
        direction of variation equally instead of by its variance).
    """

    components: int = 216
    whiten: bool = False

    def validate(self) -> None:
        super().validate()
        require(
            is_whole(self.components) and self.components > 0,
            f"--components must be a positive whole number, got {self.components!r}",
        )
        require(isinstance(self.whiten, bool), f"--whiten must be true or false, got {self.whiten!r}")


def crop_pixels(images: np.ndarray, crop: int, batch: int = 5000) -> np.ndarray:
    """Standardised centre crops, flattened: what the classifier sees at test time (N x crop*crop*C)."""
    tensor = torch.as_tensor(images)
    parts = [center_crop(tensor[s : s + batch], crop).flatten(1).numpy() for s in range(0, len(tensor), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, crop * crop * images.shape[-1]), np.float32)


class PixelsPCAEncoder(Encoder):
    """PCA (optionally whitened) of the per-image standardised centre crops.

    Fitted on the training images with a seeded randomized SVD (scikit-learn), applied to
    training and test images alike. Seconds on CIFAR-10, no training: the honest baseline
    that tells whether a learned embedding knows more than the pixels.
    """

    name = "pixels-pca"
    Options = PixelsPCAOptions
    summary = "principal components of the standardised centre-crop pixels (no learning)"
    source = "Pearson 1901; Halko, Martinsson, Tropp 2011 (randomized SVD)"

    def compute(
        self, dataset: ImageDataset, run: Run, *, progress: bool, checkpoint: dict[str, Any] | None
    ) -> EncoderOutput:
        from sklearn.decomposition import PCA

        start = time.perf_counter()
        crop = dataset.default_crop
        train = crop_pixels(dataset.train_images, crop)
        components = min(self.options.components, train.shape[1], train.shape[0])
        pca = PCA(components, whiten=self.options.whiten, svd_solver="randomized", random_state=self.options.seed)
        vectors = pca.fit_transform(train).astype(np.float32)
        fit_time = time.perf_counter() - start
        start = time.perf_counter()
        test = pca.transform(crop_pixels(dataset.test_images, crop)).astype(np.float32) if dataset.num_test else None
        return EncoderOutput(
            vectors=vectors,
            test_vectors=test,
            facts={
                "train_time_s": fit_time,
                "embed_time_s": time.perf_counter() - start,
                "crop": crop,
                "components": int(components),
                "explained_variance": float(pca.explained_variance_ratio_.sum()),
            },
        )
