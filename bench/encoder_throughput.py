"""Encoder training throughput: images/s and GFLOP/s of each trainable encoder's step.

For ``autoencoder``, ``contrastive`` and ``proxy`` the script builds the encoder's own
:class:`toolkit.loop.Task` (the object the shared training loop drives, with the encoder's
default options: batch, precision, augmentation) on the real data set and times its
``train_step`` directly: the batch draw, the device-side augmentation (two views per image
for ``contrastive``), forward, loss, backward and optimizer step. Excluded from the timing:
``--warmup`` steps first (one-time costs: kernel selection, allocator growth, lazy
initialisation), and the loop's logging and checkpoints. Each of ``--repeats`` repeats times
``--steps`` steps; the figure is the median over repeats.

FLOPs per image are counted from the model by ``torch.utils.flop_counter.FlopCounterMode``
over one training step (forward and backward: convolutions and matrix products, 2 FLOPs per
multiply-add; element-wise work uncounted), divided by the images in the step. An image of
``contrastive`` is two views, and its count covers both. GFLOP/s = images/s x FLOPs/image.

Usage::

    python bench/encoder_throughput.py [--data PATH] [--repeats 4] [--steps 20] [--out]
    python bench/encoder_throughput.py --quick      # digits, tiny: checks the script only

The last line printed is one JSON object with every figure; ``--out`` also writes it to
docs/bench/encoder_throughput.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from benchmeta import ROOT, add_out_argument, count_flops, finish, header

from toolkit.data import ImageDataset, load_dataset
from toolkit.device import configure_threads, synchronize
from toolkit.encoders import get_encoder
from toolkit.loop import Task

ENCODERS = ("autoencoder", "contrastive", "proxy")


def build_task(name: str, dataset: ImageDataset, options: dict[str, Any]) -> Task:
    """The Task the encoder trains in the shared loop, with its default (or the given) options."""
    from toolkit.encoders.autoencoder import AutoencoderTask
    from toolkit.encoders.contrastive import ContrastiveTask
    from toolkit.encoders.proxy import ProxyTask

    encoder: Any = get_encoder(name, **options)
    encoder.check(dataset)
    if name == "autoencoder":
        return AutoencoderTask(dataset, encoder.options, encoder.crop(dataset))
    if name == "contrastive":
        return ContrastiveTask(dataset, encoder.options, encoder.view_size(dataset))
    if name == "proxy":
        return ProxyTask(dataset, encoder.train_config())
    raise ValueError(f"no trainable encoder {name!r}")


def time_steps(task: Task, steps: int) -> float:
    """Seconds for ``steps`` training steps, the device synchronised at both ends."""
    phase = task.phase(0, 0.0)
    synchronize(task.device)
    start = time.perf_counter()
    loss = None
    for i in range(steps):
        loss = task.train_step(phase, i / max(steps, 1))
    synchronize(task.device)
    seconds = time.perf_counter() - start
    if loss is not None and not torch.isfinite(loss):
        raise RuntimeError(f"the training loss became {float(loss)} while timing; the figures would be meaningless")
    return seconds


def measure(name: str, dataset: ImageDataset, args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"device": args.device, "precision": args.precision}
    if args.batch:
        options["batch"] = args.batch
    task = build_task(name, dataset, options)
    task.model.train()
    phase = task.phase(0, 0.0)
    start = time.perf_counter()
    for _ in range(args.warmup):
        task.train_step(phase, 0.0)
    synchronize(task.device)
    warmup_s = time.perf_counter() - start
    flops_per_step = count_flops(lambda: task.train_step(phase, 0.0))
    views = 2 if name == "contrastive" else 1
    flops_per_image = flops_per_step / task.batch
    repeats = []
    for _ in range(args.repeats):
        seconds = time_steps(task, args.steps)
        repeats.append(args.steps * task.batch / seconds)
    images_per_s = statistics.median(repeats)
    return {
        "batch": task.batch,
        "views_per_image": views,
        "device": task.device.type,
        "precision": str(task.dtype).replace("torch.", ""),
        "parameters": sum(p.numel() for p in task.model.parameters()),
        "warmup_steps": args.warmup,
        "warmup_s": round(warmup_s, 3),
        "timed_steps": args.steps,
        "repeats": args.repeats,
        "images_per_s": images_per_s,
        "images_per_s_all": repeats,
        "mflop_per_image": flops_per_image / 1e6,
        "gflop_per_s": images_per_s * flops_per_image / 1e9,
    }


def main() -> None:
    default_data = os.environ.get("SAMPLESIFT_CIFAR10", str(ROOT.parent / "shared" / "datasets" / "cifar10"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_data, help="the data set (default: real CIFAR-10 beside the repo)")
    parser.add_argument("--max-per-class", type=int, help="cap the data set (a capped CIFAR-10 for smoke tests)")
    parser.add_argument("--workspace", default=os.environ.get("SAMPLESIFT_WORKSPACE", str(ROOT / "workspace")))
    parser.add_argument("--encoders", default=",".join(ENCODERS), help="comma-separated, from " + ", ".join(ENCODERS))
    parser.add_argument("--batch", type=int, help="images per step (default: each encoder's own default)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--repeats", type=int, default=4, help="repeats; the figure is their median")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", help="auto (the encoders' default), fp32 or bf16")
    parser.add_argument("--quick", action="store_true", help="digits, 2 steps, 1 repeat: checks the script only")
    add_out_argument(parser, "encoder_throughput")
    args = parser.parse_args()
    if args.quick:
        if args.data == default_data:
            args.data = "digits"
        args.steps, args.warmup, args.repeats = 2, 1, 1
        args.batch = args.batch or 32
    names = [n.strip() for n in args.encoders.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ENCODERS))
    if unknown:
        sys.exit(f"unknown encoder(s) {', '.join(unknown)}; choose from {', '.join(ENCODERS)}")
    if args.data not in ("digits",) and not Path(args.data).exists():
        sys.exit(f"no data set at {args.data}; pass --data or set SAMPLESIFT_CIFAR10 (--quick uses digits)")

    os.environ["SAMPLESIFT_THREADS"] = str(args.threads)
    configure_threads(args.threads)
    figures = header("encoder_throughput", smoke=args.quick)
    dataset = load_dataset(args.data, workspace=args.workspace, max_per_class=args.max_per_class)
    load = figures["load_average_start"]
    print(
        f"data {dataset.key}: {dataset.num_train} training images {dataset.image_shape}; {args.threads} threads; "
        f"torch {torch.__version__}; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at start"
    )
    print(
        f"timing: Task.train_step only, after {args.warmup} untimed warm-up steps (excluded); "
        f"median of {args.repeats} repeats of {args.steps} steps"
    )
    figures.update(
        data=dataset.key,
        num_train=dataset.num_train,
        threads=args.threads,
        timing_method=(
            "Task.train_step wall-clock (batch draw, device augmentation, forward, loss, backward, optimizer step), "
            "device synchronised; warm-up steps excluded; median over repeats"
        ),
        flop_method=(
            "torch.utils.flop_counter.FlopCounterMode over one training step (forward + backward; conv and matmul, "
            "2 per multiply-add), divided by the images in the step; contrastive images count both views"
        ),
        encoders={},
    )
    print(f"\n{'encoder':12s} {'batch':>6s} {'img/s':>9s} {'MFLOP/img':>10s} {'GFLOP/s':>8s}  per repeat (img/s)")
    for name in names:
        result = measure(name, dataset, args)
        figures["encoders"][name] = result
        per_repeat = ", ".join(f"{v:.0f}" for v in result["images_per_s_all"])
        print(
            f"{name:12s} {result['batch']:6d} {result['images_per_s']:9.1f} {result['mflop_per_image']:10.1f} "
            f"{result['gflop_per_s']:8.2f}  {per_repeat}",
            flush=True,
        )
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the end")
    finish(figures, args.out)


if __name__ == "__main__":
    main()
