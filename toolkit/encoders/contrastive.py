"""A self-supervised encoder trained in the project: SimCLR on a small convolutional trunk."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from toolkit.augment import DeviceImages, ViewConfig, image_batches, random_resized_views
from toolkit.data import ImageDataset
from toolkit.device import autocast, seeded
from toolkit.encoders.base import Encoder, EncoderOutput, Inference, TrainingOptions, embed_after_training
from toolkit.errors import is_real, is_whole, require
from toolkit.loop import BatchSampler, Task, open_device, run_loop
from toolkit.models import ConvEncoder
from toolkit.runs import Run


@dataclass
class ContrastiveOptions(TrainingOptions):
    """SimCLR settings (defaults: the recipe in :class:`ContrastiveEncoder`'s docstring).

    Attributes:
        epochs: passes over the training split (each image gives two views per pass).
        lr: peak learning rate of SGD with Nesterov momentum 0.9; linear warm-up over the
            first ``warmup`` share of the run, then a cosine decay to zero.
        weight_decay: L2 penalty (5e-4, as the small-batch CIFAR reproductions use).
        temperature: NT-Xent temperature.
        view_size: side of the training views (``None``: three quarters of the image side,
            at least 8; the encoder pools globally, so it embeds full-size images).
        scale: range of a view's share of the image area.
        widths: channels of the trunk's four stages.
        warmup: share of the run spent warming the learning rate up.
    """

    epochs: float | None = 15
    batch: int = 256
    lr: float = 0.3
    weight_decay: float = 5e-4
    temperature: float = 0.2
    view_size: int | None = None
    scale: tuple[float, float] = (0.2, 1.0)
    widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    warmup: float = 0.02
    log_every: int = 10

    def validate(self) -> None:
        super().validate()
        require(is_real(self.weight_decay) and self.weight_decay >= 0, "--weight-decay must be a number >= 0")
        require(
            is_real(self.temperature) and self.temperature > 0,
            f"--temperature must be positive, got {self.temperature!r}",
        )
        require(
            self.view_size is None or (is_whole(self.view_size) and self.view_size >= 8),
            f"--view-size must be a whole number of pixels >= 8, got {self.view_size!r}",
        )
        require(
            isinstance(self.scale, (tuple, list))
            and len(self.scale) == 2
            and all(is_real(v) for v in self.scale)
            and 0 < self.scale[0] <= self.scale[1] <= 1,
            f"scale must be a pair 0 < low <= high <= 1, got {self.scale!r}",
        )
        require(
            isinstance(self.widths, (tuple, list))
            and len(self.widths) == 4
            and all(is_whole(w) and w > 0 for w in self.widths),
            f"widths must be four positive channel counts, got {self.widths!r}",
        )
        require(is_real(self.warmup) and 0 <= self.warmup < 1, f"warmup must be in [0, 1), got {self.warmup!r}")
        require(self.batch >= 2, "--batch must be at least 2: each image's partner view is contrasted with the others")
        self.scale = (float(self.scale[0]), float(self.scale[1]))
        self.widths = tuple(int(w) for w in self.widths)  # type: ignore[assignment]


def nt_xent(projections: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss for 2B projections, rows i and i + B being two views of one image.

    Each view must pick its partner out of the other 2B - 2 views: cross-entropy over
    cosine similarities divided by the temperature, the view's own similarity masked.
    """
    z = F.normalize(projections.float(), dim=1)
    half = z.shape[0] // 2
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(half, 2 * half), torch.arange(0, half)]).to(z.device)
    return F.cross_entropy(logits, partner)


def channel_statistics(images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 images, in [0, 1] units."""
    sample = torch.as_tensor(np.array(images[:: max(1, len(images) // 10_000)])).float().div(255.0)
    flat = sample.reshape(-1, sample.shape[-1])
    return flat.mean(0), flat.std(0).clamp_min(1e-3)


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (B, C, H, W) standardised by the training images' channel statistics, channels-last."""
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


#: Images per inference batch.
EMBED_BATCH = 1000


@torch.inference_mode()
def embed_whole_images(
    trained: tuple[ConvEncoder, torch.Tensor, torch.Tensor],
    images: np.ndarray,
    *,
    device: torch.device,
    dtype: torch.dtype,
    batch: int = EMBED_BATCH,
) -> np.ndarray:
    """Embeddings of whole uint8 images (no crop), N x d float32, streamed in batches.

    ``trained`` is the trunk with the channel mean and standard deviation it was trained with
    (each ``1 x C x 1 x 1``): one value, so that :class:`~toolkit.encoders.base.Inference` sends it
    to a cluster at once.
    """
    model, mean, std = trained
    model = model.to(device, memory_format=torch.channels_last)
    mean, std = mean.to(device), std.to(device)
    was_training = model.training
    model.eval()
    out = []
    for pixels in image_batches(images, device, batch):
        x = pixels.permute(0, 3, 1, 2).float().div(255.0)
        with autocast(device, dtype):
            out.append(model.encode(normalise(x, mean, std)).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, model.embedding_dim), np.float32)


class ContrastiveTask(Task):
    """One SimCLR step: two random views of each image in the batch, NT-Xent on their projections."""

    def __init__(self, dataset: ImageDataset, options: ContrastiveOptions, view_size: int) -> None:
        self.options = options
        self.device, self.dtype = open_device(options.device, options.precision)
        self.batch = options.batch
        with seeded(options.seed):
            model = ConvEncoder(dataset.channels, widths=options.widths)
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=options.lr, momentum=0.9, nesterov=True, weight_decay=options.weight_decay
        )
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(options.seed)
        self.images = DeviceImages(dataset.train_images, self.device)
        everything = torch.arange(dataset.num_train, device=self.device)
        self.samplers = {"train": BatchSampler(everything, options.batch, self.generator)}
        self.views = ViewConfig(size=view_size, scale=options.scale)
        mean, std = channel_statistics(dataset.train_images)
        self.mean, self.std = mean.to(self.device)[None, :, None, None], std.to(self.device)[None, :, None, None]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return normalise(x, self.mean, self.std)

    def learning_rate(self, fraction: float) -> float:
        warmup = self.options.warmup
        if fraction < warmup:
            return self.options.lr * (fraction + 1e-3) / warmup
        return self.options.lr * 0.5 * (1.0 + math.cos(math.pi * (fraction - warmup) / (1.0 - warmup)))

    def train_step(self, phase: str, fraction: float) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(fraction)
        batch = self.images[self.samplers["train"].next()]
        views = torch.cat([random_resized_views(batch, self.views, self.generator) for _ in range(2)])
        with autocast(self.device, self.dtype):
            projections = self.model(self.normalise(views))
        loss = nt_xent(projections, self.options.temperature)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


class ContrastiveEncoder(Encoder):
    """SimCLR (Chen et al. 2020) with a small VGG-style trunk, sized for a 2-core CPU.

    Why this recipe. The research summarised in ``notes/embeddings-and-low-budget.md``
    (§3) finds SimCLR and MoCo learn fastest early (BYOL, SimSiam and NNCLR warm up slowly
    and catch up only after hundreds of epochs), and SimCLR barely changes between batch 128
    and 512, so a contrastive loss with in-batch negatives suits a short CPU budget. A CIFAR
    ResNet-18 costs some 0.56 G multiply-adds per image, hours per epoch on two cores; the
    trunk here (:class:`toolkit.models.ConvEncoder`, four conv3x3-BN-ReLU stages of 32-256
    channels with early pooling) costs some 40-60x less and still reaches a dozen or more
    epochs in half an hour. Settings follow the small-batch CIFAR reproductions (lightly's
    benchmarks, dkobak/simclr-cifar10): SGD with Nesterov momentum 0.9, weight decay 5e-4,
    linear warm-up then cosine decay; crops of 20-100 % of the area, flips, colour jitter of
    strength 0.5 (0.4 brightness/contrast/saturation, p = 0.8) and grayscale (p = 0.2), all
    batched on the device (:func:`toolkit.augment.random_resized_views`; hue is left out).
    Two departures for short schedules: temperature 0.2 (solo-learn's; sharper than the
    paper's 0.5, which learns more slowly early) and 24x24 views (the trunk pools globally,
    so it embeds the full 32x32 images; training below the test resolution also helps
    accuracy, the "FixRes" effect). The embedding is the globally pooled output of the last
    two stages (384 values), before the projection head, as SimCLR prescribes.
    """

    name = "contrastive"
    Options = ContrastiveOptions
    trainable = True
    summary = "SimCLR features of a small conv trunk trained on the data set itself (384-d)"
    source = "Chen, Kornblith, Norouzi, Hinton: A Simple Framework for Contrastive Learning (SimCLR), ICML 2020"

    def view_size(self, dataset: ImageDataset) -> int:
        return self.options.view_size or max(8, dataset.default_crop)

    def check(self, dataset: ImageDataset) -> None:
        require(
            min(dataset.image_shape[:2]) >= 8,
            f"the contrastive encoder needs images of at least 8x8 pixels, got {dataset.image_shape[:2]}",
        )
        require(dataset.num_train >= 2, "the contrastive encoder needs at least two training images to contrast")

    def compute(
        self,
        dataset: ImageDataset,
        run: Run,
        *,
        progress: bool,
        checkpoint: dict[str, Any] | None,
        inference: Inference,
    ) -> EncoderOutput:
        task = ContrastiveTask(dataset, self.options, self.view_size(dataset))
        settings = self.loop_settings(dataset)
        assert settings is not None
        loop, _ = run_loop(
            task,
            settings,
            run,
            progress=progress,
            checkpoint=checkpoint,
            nonfinite_hint="Lower --lr or raise --temperature and rerun",
        )
        return embed_after_training(
            loop,
            run,
            dataset,
            lambda images: inference.map(
                embed_whole_images,
                (task.model, task.mean, task.std),
                images,
                batch=EMBED_BATCH,
                device=task.device,
                dtype=task.dtype,
            ),
            model=task.model.config,
            epochs=self.options.epochs,
            normalisation={"mean": task.mean.flatten().tolist(), "std": task.std.flatten().tolist()},
        )
