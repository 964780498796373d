"""The "no learning" baseline: PCA of the pixels of each image's centre crop."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from toolkit.augment import center_crop, image_batches
from toolkit.data import ImageDataset
from toolkit.encoders.base import Encoder, EncoderOutput, Inference, Options
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


#: Rows PCA is fitted on: every image up to this many (CIFAR-10's 50,000 training images), beyond
#: it a seeded sample of this many, so that a million images take the memory of 50,000; every
#: image is then projected in batches.
FIT_ROWS = 50_000


def crop_pixels(images: np.ndarray, crop: int, batch: int = 5000) -> np.ndarray:
    """Standardised centre crops, flattened: what the classifier sees at test time (N x crop*crop*C)."""
    cpu = torch.device("cpu")
    parts = [center_crop(pixels, crop).flatten(1).numpy() for pixels in image_batches(images, cpu, batch)]
    return np.concatenate(parts) if parts else np.zeros((0, crop * crop * images.shape[-1]), np.float32)


def project(pca: Any, images: np.ndarray, crop: int, batch: int = FIT_ROWS) -> np.ndarray:
    """The fitted ``pca``'s rows (N x components float32) of ``images``, streamed in batches.

    Batches of :data:`FIT_ROWS`: CIFAR-10's 10,000 test images are one, transformed exactly as
    before streaming.
    """
    out = np.zeros((len(images), pca.n_components_), np.float32)
    for start in range(0, len(images), batch):
        out[start : start + batch] = pca.transform(crop_pixels(images[start : start + batch], crop))
    return out


class PixelsPCAEncoder(Encoder):
    """PCA (optionally whitened) of the per-image standardised centre crops.

    Fitted on the training images (a seeded sample of :data:`FIT_ROWS` beyond that many) with
    a seeded randomized SVD (scikit-learn), applied to training and test images alike. Seconds
    on CIFAR-10, no training: the honest baseline that tells whether a learned embedding knows
    more than the pixels.
    """

    name = "pixels-pca"
    Options = PixelsPCAOptions
    summary = "principal components of the standardised centre-crop pixels (no learning)"
    source = "Pearson 1901; Halko, Martinsson, Tropp 2011 (randomized SVD)"

    def compute(
        self,
        dataset: ImageDataset,
        run: Run,
        *,
        progress: bool,
        checkpoint: dict[str, Any] | None,
        inference: Inference,
    ) -> EncoderOutput:
        """Fit here (PCA needs every row at once); project, the inference, where ``inference`` says.

        Up to :data:`FIT_ROWS` training images, their rows are the fit's own; the test images,
        and the training images beyond that many, are projected in batches of :data:`FIT_ROWS`.
        """
        from sklearn.decomposition import PCA

        start = time.perf_counter()
        crop = dataset.default_crop
        images = dataset.train_images
        sample = None
        if len(images) > FIT_ROWS:
            rng = np.random.default_rng(self.options.seed)
            sample = np.sort(rng.choice(len(images), FIT_ROWS, replace=False))
        train = crop_pixels(images if sample is None else images[sample], crop)
        components = min(self.options.components, train.shape[1], train.shape[0])
        pca = PCA(components, whiten=self.options.whiten, svd_solver="randomized", random_state=self.options.seed)
        fitted = pca.fit_transform(train).astype(np.float32)
        # A strided view of the SVD's output, and BLAS rounds a strided and a contiguous matrix differently:
        # made contiguous here, it is the same array a Ray worker unpickles, so projections are the same anywhere.
        pca.components_ = np.ascontiguousarray(pca.components_)
        del train  # the fit's pixels: the largest array here
        fit_time = time.perf_counter() - start
        start = time.perf_counter()
        vectors = fitted if sample is None else inference.map(project, pca, images, batch=FIT_ROWS, crop=crop)
        test = inference.map(project, pca, dataset.test_images, batch=FIT_ROWS, crop=crop) if dataset.num_test else None
        return EncoderOutput(
            vectors=vectors,
            test_vectors=test,
            facts={
                "train_time_s": fit_time,
                "embed_time_s": time.perf_counter() - start,
                "crop": crop,
                "components": int(components),
                "fit_rows": len(fitted),
                "explained_variance": float(pca.explained_variance_ratio_.sum()),
            },
        )
