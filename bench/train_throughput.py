"""Classifier training throughput: SampleSift's device-resident pipeline vs the textbook port.

Reference: the way most PyTorch users would port the TF tutorial: an in-memory
``torchvision`` CIFAR-10-style dataset returning PIL images, per-sample torchvision transforms
(RandomCrop, RandomHorizontalFlip, ColorJitter, ToTensor, per-image standardisation), a
``DataLoader`` with worker processes, and the network in NCHW with ``nn.BatchNorm2d`` (or
``nn.LocalResponseNorm``) and ``nn.MaxPool2d(3, 2, padding=1)``.

Ours: ``toolkit.train.train``, the product path itself (uint8 data on the device, batched
augmentation, channels-last, banded-matrix LRN, averaged weights), whose reported
``images_per_s`` excludes warm-up and evaluation. The reference is timed the same way: a few
warm-up steps first (worker start-up included there), then the timed steps.

Both sides do the same augmentation work by default: crop, flip, a random contrast factor in
[0.2, 1.8) and per-image standardisation, no brightness (SampleSift's default; earlier README
figures were measured while only the reference added brightness). The contrast step blends
each pixel with a mean on both sides (TF's channel mean in ours, torchvision's grayscale mean
in the reference): the same work per pixel. ``--brightness on`` adds a random brightness per
image on both sides (ours: TF's additive delta of up to 63; the reference: ColorJitter's
factor in 1 +- 63/255); ours folds it into its one fused multiply-add, where the
standardisation cancels it, so there it costs nothing, while the reference pays a pass.
Both run with the same batch size and torch threads, alternately, in one process, for both
norm choices, the default (batch norm) first; the figure of merit is the ratio of the
medians over ``--repeats`` (default 4 repeats of ``--steps`` 30 timed steps). The load
average is printed and recorded at the start and the end. The CPU's fp32 matmul peak
is measured in the same run (a large ``torch.mm``), and the default model's share of it is
reported as ``peak_fraction``. GFLOP/s count the network's convolutions and matrix products
(forward and backward, ``torch.utils.flop_counter``), the same for both norms. Usage::

    python bench/train_throughput.py [--data PATH|digits] [--batch 256] [--steps 30] [--repeats 4] [--out]
    python bench/train_throughput.py --quick            # digits, tiny: checks the script only
    python bench/train_throughput.py --paper-baseline   # on a CUDA machine: 10,000 steps of 1,024

The last line printed is one JSON object with every figure (machine, load average, versions,
date); ``--out`` also writes it to docs/bench/train_throughput.json.
"""

from __future__ import annotations

import argparse
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

from benchmeta import add_out_argument, count_flops, finish, header

from toolkit.data import ImageDataset, load_dataset
from toolkit.train import TrainConfig, train

BRIGHTNESS = 63  # the tutorial's max brightness delta, in 0-255 pixel units


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


def textbook_transform(crop: int, brightness: bool) -> Callable[[Any], torch.Tensor]:
    """The per-sample transforms; ``brightness`` adds the tutorial's random brightness (as ours does with it)."""
    import torchvision.transforms as T

    jitter = (
        T.ColorJitter(brightness=BRIGHTNESS / 255, contrast=(0.2, 1.8))
        if brightness
        else T.ColorJitter(contrast=(0.2, 1.8))
    )
    return T.Compose(
        [
            T.RandomCrop(crop),
            T.RandomHorizontalFlip(),
            jitter,
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


def model_flops_per_image(dataset: ImageDataset, batch: int) -> float:
    """FLOPs of one training image (forward + backward, conv and matmul) of the tutorial network.

    Counted on the textbook batch-norm port, so the figure is the network's arithmetic, not
    an implementation's (our banded LRN is a matrix product, PyTorch's LRN is not).
    """
    crop = dataset.default_crop
    model = TextbookClassifier(dataset.channels, dataset.num_classes, crop, "batch")
    x = torch.randn(batch, dataset.channels, crop, crop)
    y = torch.zeros(batch, dtype=torch.long)
    return count_flops(lambda: F.cross_entropy(model(x), y).backward()) / batch


def matmul_peak_gflop_per_s(size: int = 2048, repeats: int = 5) -> float:
    """The CPU's fp32 matmul rate in this run: the best of ``repeats`` products of two size x size matrices."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def reference_images_per_s(
    dataset: ImageDataset, norm: str, batch: int, steps: int, warmup: int, workers: int, brightness: bool
) -> float:
    crop = dataset.default_crop
    loader = torch.utils.data.DataLoader(
        TextbookCIFAR(dataset.train_images, dataset.train_labels, textbook_transform(crop, brightness)),
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


def ours_images_per_s(dataset: ImageDataset, norm: str, batch: int, steps: int, warmup: int, brightness: bool) -> float:
    with tempfile.TemporaryDirectory() as workspace:
        config = TrainConfig(
            steps=steps,
            batch=batch,
            norm=norm,
            evals=0,
            warmup_steps=warmup,
            device="auto",
            brightness=float(BRIGHTNESS) if brightness else 0.0,
        )
        run = train(dataset, config, workspace=workspace, progress=False)
        return float(run.summary()["images_per_s"])


def paper_baseline(
    dataset: ImageDataset, compile_model: bool, *, steps: int = 10_000, batch: int = 1024, device: str = "cuda"
) -> dict[str, float]:
    """The paper's full-data baseline, 10,000 steps of 1,024, on the GPU (paper: 736 s on a P100).

    ``steps``, ``batch`` and ``device`` are there for the CPU test of this code path
    (tests/test_device_paths.py), which runs it at a tiny size.
    """
    with tempfile.TemporaryDirectory() as workspace:
        config = TrainConfig(steps=steps, batch=batch, evals=0, device=device, compile=compile_model, warmup_steps=3)
        summary = train(dataset, config, workspace=workspace, progress=False).summary()
    return {
        "paper_baseline_steps": steps,
        "paper_baseline_batch": batch,
        "paper_baseline_compile": compile_model,
        "paper_baseline_precision": summary["precision"],
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
    parser.add_argument("--repeats", type=int, default=4, help="repeats; the figures are their medians")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference")
    parser.add_argument(
        "--brightness",
        choices=("off", "on"),
        default="off",
        help="random brightness on both sides (off: SampleSift's default; on: the tutorial's)",
    )
    parser.add_argument("--paper-baseline", action="store_true", help="also run 10,000 steps of 1,024 (CUDA only)")
    parser.add_argument("--compile", action="store_true", help="torch.compile for the paper baseline")
    parser.add_argument("--quick", action="store_true", help="digits, tiny sizes, no workers: checks the script only")
    add_out_argument(parser, "train_throughput")
    args = parser.parse_args()
    if args.quick:
        args.data = "digits"
        args.batch, args.steps, args.warmup, args.repeats, args.workers = 32, 2, 1, 1, 0

    os.environ["SAMPLESIFT_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    figures = header("train_throughput", smoke=args.quick)
    dataset = load_dataset(args.data, workspace=args.workspace, progress=not args.quick)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    brightness = args.brightness == "on"
    load = figures["load_average_start"]
    print(
        f"data {dataset.key}: {dataset.num_train} images {dataset.image_shape}, batch {args.batch}, "
        f"{args.threads} threads, reference with {args.workers} DataLoader workers, device {device}, "
        f"brightness {args.brightness} on both sides; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
    )
    flops = model_flops_per_image(dataset, args.batch)
    peak = matmul_peak_gflop_per_s(512 if args.quick else 2048)
    print(f"model: {flops / 1e6:.1f} MFLOP per training image; fp32 matmul peak in this run: {peak:.1f} GFLOP/s")
    figures.update(
        data=dataset.key,
        batch=args.batch,
        threads=args.threads,
        workers=args.workers,
        timed_steps=args.steps,
        warmup_steps=args.warmup,
        repeats=args.repeats,
        device=device,
        augmentation="crop, flip, contrast [0.2, 1.8), per-image standardisation"
        + (", brightness (max delta 63)" if brightness else "; no brightness")
        + " (both sides)",
        load_average=load[0],
        mflop_per_image=flops / 1e6,
        matmul_peak_gflop_per_s=peak,
        speedup_vs_reference={},
    )
    for norm in ("batch", "lrn"):
        ours, reference = [], []
        for _ in range(args.repeats):
            reference.append(
                reference_images_per_s(dataset, norm, args.batch, args.steps, args.warmup, args.workers, brightness)
            )
            ours.append(ours_images_per_s(dataset, norm, args.batch, args.steps, args.warmup, brightness))
            print(f"  {norm}: reference {reference[-1]:8.1f} img/s   ours {ours[-1]:8.1f} img/s", flush=True)
        ours_median, reference_median = statistics.median(ours), statistics.median(reference)
        ratio = ours_median / reference_median
        gflops = ours_median * flops / 1e9
        ratios = sorted(o / r for o, r in zip(ours, reference, strict=True))
        print(
            f"{norm}: ours {ours_median:.1f} img/s ({gflops:.1f} GFLOP/s, {gflops / peak:.0%} of the matmul peak) "
            f"vs reference {reference_median:.1f} img/s: {ratio:.2f}x (median of {args.repeats}; per repeat "
            f"{ratios[0]:.2f}-{ratios[-1]:.2f}x)"
        )
        figures[f"ours_{norm}_images_per_s"] = ours_median
        figures[f"reference_{norm}_images_per_s"] = reference_median
        figures[f"ours_{norm}_images_per_s_all"] = ours
        figures[f"reference_{norm}_images_per_s_all"] = reference
        figures[f"speedup_{norm}"] = ratio
        figures[f"speedup_{norm}_per_repeat_range"] = [ratios[0], ratios[-1]]
        figures[f"ours_{norm}_gflop_per_s"] = gflops
        figures["speedup_vs_reference"][norm] = ratio
    figures["peak_fraction"] = figures["ours_batch_gflop_per_s"] / peak
    if args.paper_baseline:
        if device != "cuda":
            print("--paper-baseline needs a CUDA GPU; skipped")
        else:
            figures.update(paper_baseline(dataset, args.compile))
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the end")
    finish(figures, args.out)


if __name__ == "__main__":
    main()
