"""Classifier training throughput: SampleSift's device-resident pipeline vs the textbook port.

Reference: the way most PyTorch users would port the TF tutorial: an in-memory
``torchvision`` CIFAR-10-style dataset returning PIL images, per-sample torchvision transforms
(RandomCrop, RandomHorizontalFlip, ColorJitter, ToTensor, per-image standardisation), a
``DataLoader`` with worker processes, and the network in NCHW with ``nn.LocalResponseNorm``
(or ``nn.BatchNorm2d``) and ``nn.MaxPool2d(3, 2, padding=1)``.

Ours: ``toolkit.train.train``, the product path itself (uint8 data on the device, batched
augmentation, channels-last, banded-matrix LRN, averaged weights), whose reported
``images_per_s`` excludes warm-up and evaluation. The reference is timed the same way: a few
warm-up steps first (worker start-up included there), then the timed steps.

Both run with the same batch size and torch threads, alternately, in one process, for both
norm choices; the figure of merit is the ratio. Usage::

    python bench/train_throughput.py [--data PATH|digits] [--batch 256] [--steps 30] [--repeats 2]
    python bench/train_throughput.py --paper-baseline   # on a CUDA machine: 10,000 steps of 1,024

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toolkit.data import ImageDataset, load_dataset
from toolkit.train import TrainConfig, train

MFLOP_PER_TRAINING_IMAGE = 111.0  # forward + backward of the tutorial CNN on a 24x24x3 crop


class TextbookCIFAR(torch.utils.data.Dataset):
    """What ``torchvision.datasets.CIFAR10`` does per item: uint8 HWC -> PIL -> transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable[[Any], torch.Tensor]) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        image = Image.fromarray(self.images[index].squeeze(-1) if self.images.shape[-1] == 1 else self.images[index])
        return self.transform(image), int(self.labels[index])


def per_image_standardization(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / torch.clamp(x.std(correction=0), min=1.0 / x.numel() ** 0.5)


def textbook_transform(crop: int) -> Callable[[Any], torch.Tensor]:
    import torchvision.transforms as T

    return T.Compose(
        [
            T.RandomCrop(crop),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=63 / 255, contrast=(0.2, 1.8)),
            T.ToTensor(),
            T.Lambda(per_image_standardization),
        ]
    )


class TextbookClassifier(nn.Module):
    """The tutorial CNN as commonly ported: NCHW, PyTorch's own LRN/BN and padded max-pool."""

    def __init__(self, in_channels: int, num_classes: int, crop: int, norm: str) -> None:
        super().__init__()

        def make_norm() -> nn.Module:
            return nn.LocalResponseNorm(9, 0.001, 0.75, 1.0) if norm == "lrn" else nn.BatchNorm2d(64)

        side = math.ceil(math.ceil(crop / 2) / 2)  # two 3x3/2 pools with padding 1
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, padding=1),
            make_norm(),
            nn.Conv2d(64, 64, 5, padding=2),
            nn.ReLU(),
            make_norm(),
            nn.MaxPool2d(3, 2, padding=1),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 384),
            nn.ReLU(),
            nn.Linear(384, 192),
            nn.ReLU(),
            nn.Linear(192, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def reference_images_per_s(
    dataset: ImageDataset, norm: str, batch: int, steps: int, warmup: int, workers: int
) -> float:
    crop = dataset.default_crop
    loader = torch.utils.data.DataLoader(
        TextbookCIFAR(dataset.train_images, dataset.train_labels, textbook_transform(crop)),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
    )
    torch.manual_seed(0)
    model = TextbookClassifier(dataset.channels, dataset.num_classes, crop, norm)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = iter(loader)
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    elapsed = time.perf_counter() - start
    del batches, loader
    return steps * batch / elapsed


def ours_images_per_s(dataset: ImageDataset, norm: str, batch: int, steps: int, warmup: int) -> float:
    with tempfile.TemporaryDirectory() as workspace:
        config = TrainConfig(steps=steps, batch=batch, norm=norm, evals=0, warmup_steps=warmup, device="auto")
        run = train(dataset, config, workspace=workspace, progress=False)
        return float(run.summary()["images_per_s"])


def paper_baseline(dataset: ImageDataset, compile_model: bool) -> dict[str, float]:
    """The paper's full-data baseline, 10,000 steps of 1,024, on the GPU (paper: 736 s on a P100)."""
    with tempfile.TemporaryDirectory() as workspace:
        config = TrainConfig(steps=10_000, batch=1024, evals=0, device="cuda", compile=compile_model, warmup_steps=3)
        summary = train(dataset, config, workspace=workspace, progress=False).summary()
    return {
        "paper_baseline_wall_time_s": summary["wall_time_s"],
        "paper_baseline_test_accuracy": summary["test_accuracy"],
        "paper_baseline_images_per_s": summary["images_per_s"],
    }


def main() -> None:
    default_data = os.environ.get("SAMPLESIFT_CIFAR10", str(ROOT.parent / "shared" / "datasets" / "cifar10"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_data if Path(default_data).is_dir() else "digits")
    parser.add_argument("--workspace", default=os.environ.get("SAMPLESIFT_WORKSPACE", str(ROOT / "workspace")))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference")
    parser.add_argument("--paper-baseline", action="store_true", help="also run 10,000 steps of 1,024 (CUDA only)")
    parser.add_argument("--compile", action="store_true", help="torch.compile for the paper baseline")
    args = parser.parse_args()

    os.environ["SAMPLESIFT_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data, workspace=args.workspace, progress=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"data {dataset.key}: {dataset.num_train} images {dataset.image_shape}, batch {args.batch}, "
        f"{args.threads} threads, reference with {args.workers} DataLoader workers, device {device}"
    )
    figures: dict[str, object] = {
        "data": dataset.key,
        "batch": args.batch,
        "threads": args.threads,
        "workers": args.workers,
        "timed_steps": args.steps,
        "device": device,
        "load_average": os.getloadavg()[0],
    }
    for norm in ("lrn", "batch"):
        ours, reference = [], []
        for _ in range(args.repeats):
            reference.append(reference_images_per_s(dataset, norm, args.batch, args.steps, args.warmup, args.workers))
            ours.append(ours_images_per_s(dataset, norm, args.batch, args.steps, args.warmup))
            print(f"  {norm}: reference {reference[-1]:8.1f} img/s   ours {ours[-1]:8.1f} img/s")
        ours_median, reference_median = statistics.median(ours), statistics.median(reference)
        ratio = ours_median / reference_median
        gflops = ours_median * MFLOP_PER_TRAINING_IMAGE / 1000
        print(
            f"{norm}: ours {ours_median:.1f} img/s ({gflops:.1f} GFLOP/s) vs reference {reference_median:.1f} "
            f"img/s: {ratio:.2f}x"
        )
        figures[f"ours_{norm}_images_per_s"] = ours_median
        figures[f"reference_{norm}_images_per_s"] = reference_median
        figures[f"speedup_{norm}"] = ratio
        figures[f"ours_{norm}_gflop_per_s"] = gflops
    figures["speedup_vs_reference"] = figures["speedup_lrn"]
    if args.paper_baseline:
        if device != "cuda":
            print("--paper-baseline needs a CUDA GPU; skipped")
        else:
            figures.update(paper_baseline(dataset, args.compile))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
