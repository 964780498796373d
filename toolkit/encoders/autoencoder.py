"""The paper's encoder: the hourglass autoencoder's bottleneck (216 values for 24x24 crops)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from toolkit.augment import AugmentConfig, DeviceImages, augment_batch, center_crop, image_batches
from toolkit.data import ImageDataset
from toolkit.device import autocast, seeded
from toolkit.embedding import Embedding
from toolkit.encoders.base import Encoder, EncoderOutput, Inference, TrainingOptions, embed_after_training
from toolkit.errors import is_whole, require
from toolkit.loop import BatchSampler, Task, open_device, run_loop
from toolkit.models import EMBEDDING_DIM, Autoencoder, embedding_channels_for
from toolkit.runs import Run


@dataclass
class AutoencoderOptions(TrainingOptions):
    """Autoencoder training settings (the paper's where it gives them).

    Attributes:
        momentum: SGD momentum (the paper says "with momentum"; its value is not given).
        crop: input crop side (``None``: the data set's default, 24 for 32x32).
        embedding_dim: target embedding size (216 in the paper).
    """

    lr: float = 0.1
    momentum: float = 0.9
    crop: int | None = None
    embedding_dim: int = EMBEDDING_DIM

    def validate(self) -> None:
        super().validate()
        require(0.0 <= self.momentum < 1.0, f"--momentum must be in [0, 1), got {self.momentum}")
        require(
            is_whole(self.embedding_dim) and self.embedding_dim > 0,
            f"--embedding-dim must be positive, got {self.embedding_dim}",
        )
        require(
            self.crop is None or (is_whole(self.crop) and self.crop > 0), f"--crop must be positive, got {self.crop}"
        )


#: Crop pixels an inference batch holds: 1,000 CIFAR-10 crops (24 x 24), 250 crops of 64 px images
#: (48 x 48), so that the activations' memory stays the same whatever the image size.
BATCH_PIXELS = 1000 * 24 * 24


def inference_batch(crop: int) -> int:
    """Images per inference batch for crops of ``crop`` pixels: :data:`BATCH_PIXELS` crop pixels' worth."""
    return max(1, BATCH_PIXELS // crop**2)


@torch.inference_mode()
def embed_images(
    model: Autoencoder, images: np.ndarray, *, device: torch.device, batch: int | None = None
) -> np.ndarray:
    """Embeddings (N x d float32) of uint8 images (N x H x W x C), centre-cropped, streamed in batches.

    ``batch`` images at a time (default: :func:`inference_batch`).
    """
    batch = batch or inference_batch(model.crop)
    model = model.to(device, memory_format=torch.channels_last).eval()
    out = np.zeros((len(images), model.embedding_dim), np.float32)
    for start, pixels in zip(range(0, len(images), batch), image_batches(images, device, batch), strict=True):
        out[start : start + len(pixels)] = model.encode(center_crop(pixels, model.crop)).float().cpu().numpy()
    return out


class AutoencoderTask(Task):
    """One SGD step: MSE between the reconstruction and the standardised random crop."""

    def __init__(self, dataset: ImageDataset, options: AutoencoderOptions, crop: int) -> None:
        self.device, self.dtype = open_device(options.device, options.precision)
        self.batch = options.batch
        with seeded(options.seed):
            model = Autoencoder(dataset.channels, crop, embedding_channels_for(crop, options.embedding_dim))
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=options.lr, momentum=options.momentum)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(options.seed)
        self.images = DeviceImages(dataset.train_images, self.device)
        everything = torch.arange(dataset.num_train, device=self.device)
        self.samplers = {"train": BatchSampler(everything, options.batch, self.generator)}
        self.augment = AugmentConfig(crop=crop, contrast=None)

    def train_step(self, phase: str, fraction: float) -> torch.Tensor:
        x = augment_batch(self.images[self.samplers["train"].next()], self.augment, self.generator)
        with autocast(self.device, self.dtype):
            out = self.model(x)
        loss = F.mse_loss(out.float(), x)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


class AutoencoderEncoder(Encoder):
    """The paper's hourglass autoencoder (its Fig. 3), trained on the whole training split.

    Random crops and flips, per-image standardisation, MSE to the standardised crop, SGD with
    momentum at lr 0.1 as the paper says; the embedding is the flattened bottleneck of each
    image's centre crop (24 channels x 3 x 3 = 216 values for 24x24 crops). The paper trained
    for some 800 epochs on a GPU; a few CPU epochs give a usable but weak embedding.
    """

    name = "autoencoder"
    Options = AutoencoderOptions
    trainable = True
    summary = "the paper's hourglass autoencoder bottleneck (216-d)"
    source = "Gonzalez, Landgraf, Miikkulainen: Faster Training by Selecting Samples Using Embeddings (Fig. 3)"

    def crop(self, dataset: ImageDataset) -> int:
        return self.options.crop or dataset.default_crop

    def check(self, dataset: ImageDataset) -> None:
        crop = self.crop(dataset)
        require(
            crop <= min(dataset.image_shape[:2]), f"--crop {crop} is larger than the images {dataset.image_shape[:2]}"
        )

    def compute(
        self,
        dataset: ImageDataset,
        run: Run,
        *,
        progress: bool,
        checkpoint: dict[str, Any] | None,
        inference: Inference,
    ) -> EncoderOutput:
        options = self.options
        task = AutoencoderTask(dataset, options, self.crop(dataset))
        settings = self.loop_settings(dataset)
        assert settings is not None
        loop, _ = run_loop(
            task, settings, run, progress=progress, checkpoint=checkpoint, nonfinite_hint="Lower --lr and rerun"
        )
        batch = inference_batch(task.model.crop)
        return embed_after_training(
            loop,
            run,
            dataset,
            lambda images: inference.map(embed_images, task.model, images, batch=batch, device=task.device),
            model=task.model.config,
            epochs=options.epochs,
        )


@dataclass
class Reconstruction:
    """Inputs, embeddings and reconstructions of a few samples (the paper's Fig. 4).

    Attributes:
        indices: the training-sample indices shown.
        inputs: uint8 centre crops (B, crop, crop, C).
        embeddings: (B, d) float32.
        latents: the bottleneck tensors (B, channels, side, side).
        outputs: uint8 reconstructions (B, crop, crop, C), mapped back from standardised
            units with each input's own mean and standard deviation.
        mse: per-sample mean squared error in standardised units.
    """

    indices: np.ndarray
    inputs: np.ndarray
    embeddings: np.ndarray
    latents: np.ndarray
    outputs: np.ndarray
    mse: np.ndarray


def load_autoencoder(embedding: Embedding, device: str | torch.device = "cpu") -> Autoencoder:
    """The trained autoencoder behind an ``autoencoder`` embedding, in eval mode."""
    require(
        embedding.encoder == AutoencoderEncoder.name,
        f"embedding {embedding.name!r} was made by the {embedding.encoder} encoder; reconstructions (Fig. 4) "
        "need an autoencoder embedding (samplesift embed --encoder autoencoder)",
    )
    model = Autoencoder(**embedding.manifest["model"])
    model.load_state_dict(embedding.load_state())
    return model.to(device).eval()


@torch.inference_mode()
def reconstruct(
    embedding: Embedding, dataset: ImageDataset, indices: np.ndarray | list[int], *, device: str = "cpu"
) -> Reconstruction:
    """Reconstruct the given training samples with the trained autoencoder."""
    idx = np.asarray(indices, dtype=np.int64)
    require(len(idx) > 0, "give at least one sample index to reconstruct")
    require(
        idx.min() >= 0 and idx.max() < dataset.num_train,
        f"sample indices must be in [0, {dataset.num_train}), got {idx.min()}..{idx.max()}",
    )
    model = load_autoencoder(embedding, device)
    crop = model.crop
    raw = torch.as_tensor(np.asarray(dataset.train_images[idx]), device=device)
    top = (raw.shape[1] - crop) // 2
    left = (raw.shape[2] - crop) // 2
    crops = raw[:, top : top + crop, left : left + crop, :].float()
    x = center_crop(raw, crop)
    latent = model.latent(x)
    out = model.decode_latent(latent).permute(0, 2, 3, 1)
    target = x.permute(0, 2, 3, 1)
    flat = crops.reshape(len(idx), -1)
    mean = flat.mean(1)[:, None, None, None]
    std = flat.std(1, correction=0).clamp_min(1.0 / math.sqrt(flat.shape[1]))[:, None, None, None]
    pixels = (out * std + mean).round().clamp(0, 255).to(torch.uint8)
    return Reconstruction(
        indices=idx,
        inputs=crops.to(torch.uint8).cpu().numpy(),
        embeddings=torch.flatten(latent, 1).cpu().numpy(),
        latents=latent.cpu().numpy(),
        outputs=pixels.cpu().numpy(),
        mse=((out - target) ** 2).mean(dim=(1, 2, 3)).cpu().numpy(),
    )
