"""Two-phase classifier training: the selected subset first ("fast phase"), then the full set.

The paper's recipe (§IV-A, §IV-D): SGD at a constant learning rate of 0.1 (the tutorial's
decay would fire only after 350 epochs), weight decay 0.004 on the two hidden fully
connected weight matrices only, and test accuracy measured with an exponential moving
average of the weights (decay ``min(0.9999, (1 + t) / (10 + t))``, batch-norm statistics
included). A run trains ``round(split * steps)`` steps on the subset and the rest on the full
set, or, with a time budget, spends ``split`` of the budget on the subset.

Data stays on the device as one uint8 tensor; batches are index tensors drawn from a
shuffled order that is refreshed every epoch of the active pool, and augmented in one batched
call. Wall-clock is reported the way fast-training work reports it: training steps only,
excluding warm-up (a few steps whose effect is rolled back before timing starts) and
evaluation; both are recorded separately.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from toolkit.artifacts import versions
from toolkit.augment import AugmentConfig, augment_batch, center_crop, to_device_images
from toolkit.data import ImageDataset, load_dataset
from toolkit.device import (
    autocast,
    configure_cuda,
    configure_threads,
    describe,
    resolve_device,
    resolve_precision,
    seeded,
    synchronize,
)
from toolkit.errors import NonFiniteLossError, SampleSiftError, require
from toolkit.models import Classifier
from toolkit.runs import Run, RunStore
from toolkit.selection import Selection, load_selection
from toolkit.workspace import Workspace, as_workspace

Phase = Literal["fast", "full"]
TIMING_NOTE = (
    "wall_time_s counts training steps only; warm-up steps (rolled back) and evaluations are "
    "excluded and reported as warmup_time_s and eval_time_s"
)


# --------------------------------------------------------------------------- building blocks


class BatchSampler:
    """Endless shuffled batches of indices from a pool, epoch after epoch.

    Each epoch is a fresh permutation of the pool drawn from ``generator``; a batch that
    reaches the end of an epoch continues into the next one, so every batch has exactly
    ``batch`` indices even when the pool is smaller than a batch. Its state (current order
    and position) is saved in checkpoints so a resumed run draws the same batches.
    """

    def __init__(self, pool: torch.Tensor, batch: int, generator: torch.Generator) -> None:
        require(len(pool) > 0, "cannot sample batches from an empty pool of samples")
        self.pool = pool
        self.batch = batch
        self.generator = generator
        self.order = pool[:0]
        self.position = 0
        self.epochs = 0

    def next(self) -> torch.Tensor:
        parts = []
        need = self.batch
        while need:
            if self.position == len(self.order):
                perm = torch.randperm(len(self.pool), generator=self.generator, device=self.pool.device)
                self.order = self.pool[perm]
                self.position = 0
                self.epochs += 1
            take = min(need, len(self.order) - self.position)
            parts.append(self.order[self.position : self.position + take])
            self.position += take
            need -= take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order.cpu(), "position": self.position, "epochs": self.epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        order = state["order"].to(self.pool.device)
        position = int(state["position"])
        # A checkpoint of another run or data set would index the wrong samples: refuse it.
        require(
            0 <= position <= len(order) and bool(torch.isin(order, self.pool).all()),
            "the checkpoint's batch order does not belong to this run's samples",
        )
        self.order, self.position, self.epochs = order, position, int(state["epochs"])


class WeightAverage:
    """Exponential moving average of a model's parameters and batch-norm statistics.

    TensorFlow's ``ExponentialMovingAverage(0.9999, num_updates=step)``: the decay ramps as
    ``min(0.9999, (1 + t) / (10 + t))`` so early weights are not frozen in (a flat 0.9999
    would still weigh the initial weights by 37% after 10,000 steps).
    """

    def __init__(self, model: nn.Module, max_decay: float = 0.9999) -> None:
        self.model = copy.deepcopy(model).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.max_decay = max_decay
        self._pairs = [
            (avg, live)
            for avg, live in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True)
            if avg.is_floating_point()
        ]
        self._counters = [
            (avg, live)
            for avg, live in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True)
            if not avg.is_floating_point()
        ]

    def decay(self, step: int) -> float:
        return min(self.max_decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, step: int) -> None:
        weight = 1.0 - self.decay(step)
        averages = [a for a, _ in self._pairs]
        torch._foreach_lerp_(averages, [live for _, live in self._pairs], weight)
        for avg, live in self._counters:
            avg.copy_(live)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    crop: int,
    *,
    batch: int = 1000,
    dtype: torch.dtype = torch.float32,
) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy on centre crops (no flip, no distortion)."""
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    for start in range(0, len(images), batch):
        x = center_crop(images[start : start + batch], crop)
        y = labels[start : start + batch]
        with autocast(images.device, dtype):
            logits = model(x).float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    model.train(was_training)
    total = max(len(images), 1)
    return {"accuracy": correct / total, "loss": loss_sum / total}


# --------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Everything that decides a training run. Defaults follow the paper where it says.

    Attributes:
        split: share of the steps (or of the time budget) trained on the selected subset.
        steps: total optimizer steps (exclusive with ``time_budget``).
        time_budget: total training seconds (warm-up and evaluation excluded).
        batch: samples per step (the paper: 1,024; the tutorial: 128).
        lr: learning rate (constant, the paper's 0.1).
        momentum: SGD momentum (0: the tutorial's plain gradient descent).
        weight_decay: L2 on the hidden FC weight matrices (0.004).
        norm: ``batch`` or ``lrn`` (see :class:`toolkit.models.Classifier`).
        crop: input crop side; ``None`` picks the data set's default (24 for 32x32).
        brightness: max brightness delta (0 = off; it is a no-op before standardisation).
        contrast: contrast factor range, ``None`` to disable.
        seed: seeds initialisation, batch order and augmentation.
        evals: number of evaluations spread over the run (plus one at the end).
        log_every: steps between training-loss records.
        checkpoint_every: steps between checkpoints (``None``: by time only).
        checkpoint_every_s: training seconds between checkpoints.
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: ``auto`` (bf16 on CUDA, fp32 on CPUs without native bf16), ``fp32``, ``bf16``.
        compile: ``torch.compile`` the model (worth it on CUDA; slower to start on CPU).
        warmup_steps: untimed steps before timing (rolled back, so they change nothing).
        eval_batch: batch size for evaluation.
    """

    split: float = 0.0
    steps: int | None = None
    time_budget: float | None = None
    batch: int = 128
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.004
    norm: Literal["batch", "lrn"] = "batch"
    crop: int | None = None
    brightness: float = 0.0
    contrast: tuple[float, float] | None = (0.2, 1.8)
    seed: int = 0
    evals: int = 5
    log_every: int = 10
    checkpoint_every: int | None = None
    checkpoint_every_s: float = 60.0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    warmup_steps: int = 2
    eval_batch: int = 1000

    def validate(self) -> None:
        """Check every value up front, with a message that says what to change.

        Types are checked too: a config read back from an edited ``config.json`` (``--resume``)
        must fail here with a clear message, not deep inside training.
        """
        require(
            (self.steps is None) != (self.time_budget is None),
            "give exactly one of --steps or --time-budget",
        )
        if self.steps is not None:
            require(
                _is_whole(self.steps) and self.steps > 0,
                f"--steps must be a positive whole number, got {self.steps!r}",
            )
        if self.time_budget is not None:
            require(
                _is_real(self.time_budget) and self.time_budget > 0,
                f"--time-budget must be a positive number of seconds, got {self.time_budget!r}",
            )
        require(
            _is_real(self.split) and 0.0 <= self.split <= 1.0,
            f"--split must be between 0 and 1 (the share of steps on the subset), got {self.split!r}",
        )
        require(
            _is_whole(self.batch) and self.batch > 0, f"--batch must be a positive whole number, got {self.batch!r}"
        )
        require(_is_real(self.lr) and self.lr > 0, f"--lr must be a positive number, got {self.lr!r}")
        require(
            _is_real(self.momentum) and 0.0 <= self.momentum < 1.0,
            f"--momentum must be in [0, 1), got {self.momentum!r}",
        )
        require(
            _is_real(self.weight_decay) and self.weight_decay >= 0,
            f"--weight-decay must be a number >= 0, got {self.weight_decay!r}",
        )
        require(self.norm in ("batch", "lrn"), f"--norm must be batch or lrn, got {self.norm!r}")
        require(
            self.crop is None or (_is_whole(self.crop) and self.crop > 0),
            f"--crop must be a positive whole number, got {self.crop!r}",
        )
        require(
            _is_real(self.brightness) and self.brightness >= 0,
            f"brightness must be a number >= 0, got {self.brightness!r}",
        )
        contrast = self.contrast
        require(
            contrast is None
            or (
                isinstance(contrast, (tuple, list))
                and len(contrast) == 2
                and all(_is_real(v) for v in contrast)
                and 0 <= contrast[0] <= contrast[1]
            ),
            f"contrast must be None or a pair (low, high) with 0 <= low <= high, got {contrast!r}",
        )
        require(
            _is_whole(self.seed) and 0 <= self.seed < 2**63,
            f"--seed must be a whole number in [0, 2**63), got {self.seed!r}",
        )
        require(_is_whole(self.evals) and self.evals >= 0, f"--evals must be a whole number >= 0, got {self.evals!r}")
        require(
            _is_whole(self.log_every) and self.log_every > 0,
            f"--log-every must be a positive whole number, got {self.log_every!r}",
        )
        require(
            self.checkpoint_every is None or (_is_whole(self.checkpoint_every) and self.checkpoint_every > 0),
            f"--checkpoint-every must be a positive whole number of steps, got {self.checkpoint_every!r}",
        )
        require(
            _is_real(self.checkpoint_every_s) and self.checkpoint_every_s > 0,
            f"--checkpoint-seconds must be a positive number, got {self.checkpoint_every_s!r}",
        )
        require(
            isinstance(self.device, str) and (self.device in ("auto", "cpu") or self.device.startswith("cuda")),
            f"--device must be auto, cpu or cuda, got {self.device!r}",
        )
        require(
            self.precision in ("auto", "fp32", "bf16"),
            f"--precision must be auto, fp32 or bf16, got {self.precision!r}",
        )
        require(isinstance(self.compile, bool), f"compile must be true or false, got {self.compile!r}")
        require(
            _is_whole(self.warmup_steps) and self.warmup_steps >= 0,
            f"warmup_steps must be a whole number >= 0, got {self.warmup_steps!r}",
        )
        require(
            _is_whole(self.eval_batch) and self.eval_batch > 0,
            f"eval_batch must be a positive whole number, got {self.eval_batch!r}",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The config recorded by :meth:`to_dict` (unknown keys ignored); call :meth:`validate`."""
        require(isinstance(values, dict), f"a training config must be a JSON object, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in known})
        if isinstance(config.contrast, list) and len(config.contrast) == 2:
            config.contrast = (config.contrast[0], config.contrast[1])
        return config


def _is_whole(value: Any) -> bool:
    """An integer, and not a bool (JSON ``true`` must not pass for 1)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A finite real number (not a bool, not NaN or infinite)."""
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


# --------------------------------------------------------------------------- the trainer


@dataclass
class _Progress:
    step: int = 0
    fast_steps_done: int = 0
    images_seen: int = 0
    train_time: float = 0.0
    eval_time: float = 0.0
    evals_done: int = 0
    last_checkpoint_step: int = 0
    last_checkpoint_time: float = 0.0
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    # The logging interval in progress: checkpoints may fall inside one, and a resumed run
    # must log exactly the losses the uninterrupted run logs.
    interval_loss: float = 0.0
    interval_steps: int = 0
    interval_images: int = 0


class _Trainer:
    """Holds the live state of one run; ``run()`` trains until the steps or time run out."""

    def __init__(
        self, dataset: ImageDataset, selection: Selection | None, config: TrainConfig, run: Run, progress: bool
    ) -> None:
        self.dataset, self.selection, self.config, self.run = dataset, selection, config, run
        self.show_progress = progress
        self.device = resolve_device(config.device)
        if self.device.type == "cuda":
            configure_cuda()
        else:
            configure_threads()
        self.dtype = resolve_precision(self.device, config.precision)
        self.crop = config.crop or dataset.default_crop  # checked against the image size by prepare()
        self.augment = AugmentConfig(crop=self.crop, brightness=config.brightness, contrast=config.contrast)
        self.images = to_device_images(dataset.train_images, self.device)
        self.labels = torch.as_tensor(dataset.train_labels, device=self.device)
        self.test_images = to_device_images(dataset.test_images, self.device)
        self.test_labels = torch.as_tensor(dataset.test_labels, device=self.device)

        with seeded(config.seed):
            model = Classifier(dataset.channels, dataset.num_classes, self.crop, config.norm)
        self.model = model.to(self.device, memory_format=torch.channels_last)
        decayed = {id(p) for p in self.model.decayed_parameters()}
        groups = [
            {"params": [p for p in self.model.parameters() if id(p) in decayed], "weight_decay": config.weight_decay},
            {"params": [p for p in self.model.parameters() if id(p) not in decayed], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
        self.average = WeightAverage(self.model)
        self.forward = torch.compile(self.model) if config.compile else self.model

        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.seed)
        full_pool = torch.arange(dataset.num_train, device=self.device)
        subset_pool = torch.as_tensor(selection.indices, device=self.device) if selection is not None else full_pool
        self.samplers = {
            "fast": BatchSampler(subset_pool, config.batch, self.generator),
            "full": BatchSampler(full_pool, config.batch, self.generator),
        }
        self.state = _Progress()
        self.warmup_time = 0.0

    # ---- phase bookkeeping
    @property
    def fast_steps(self) -> int | None:
        steps = self.config.steps
        return None if steps is None else round(self.config.split * steps)

    def phase(self, elapsed: float) -> Phase:
        if self.config.steps is not None:
            return "fast" if self.state.step < (self.fast_steps or 0) else "full"
        assert self.config.time_budget is not None
        return "fast" if elapsed < self.config.split * self.config.time_budget else "full"

    def finished(self, elapsed: float) -> bool:
        if self.config.steps is not None:
            return self.state.step >= self.config.steps
        assert self.config.time_budget is not None
        return elapsed >= self.config.time_budget

    # ---- one optimizer step
    def train_step(self, indices: torch.Tensor) -> torch.Tensor:
        x = augment_batch(self.images[indices], self.augment, self.generator)
        y = self.labels[indices]
        with autocast(self.device, self.dtype):
            logits = self.forward(x)
        loss = F.cross_entropy(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def warm_up(self) -> None:
        """Run untimed steps (kernel selection, compilation), then roll everything back."""
        if not self.config.warmup_steps:
            return
        saved_model = copy.deepcopy(self.model.state_dict())
        saved_optimizer = copy.deepcopy(self.optimizer.state_dict())
        saved_generator = self.generator.get_state()
        start = time.perf_counter()
        scratch = torch.Generator(device=self.device)
        scratch.manual_seed(0)
        for _ in range(self.config.warmup_steps):
            indices = torch.randint(
                0, self.dataset.num_train, (self.config.batch,), device=self.device, generator=scratch
            )
            self.train_step(indices)
        synchronize(self.device)
        self.warmup_time = time.perf_counter() - start
        self.model.load_state_dict(saved_model)
        self.optimizer.load_state_dict(saved_optimizer)
        self.generator.set_state(saved_generator)

    # ---- checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        s = self.state
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "average": self.average.model.state_dict(),
            "generator": self.generator.get_state(),
            "samplers": {name: sampler.state_dict() for name, sampler in self.samplers.items()},
            "progress": {
                "step": s.step,
                "fast_steps_done": s.fast_steps_done,
                "images_seen": s.images_seen,
                "train_time": s.train_time,
                "eval_time": s.eval_time,
                "evals_done": s.evals_done,
                "loss_history": [list(pair) for pair in s.loss_history],
                "interval_loss": s.interval_loss,
                "interval_steps": s.interval_steps,
                "interval_images": s.interval_images,
            },
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a checkpoint; one that does not fit this run's model or data is refused."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.average.model.load_state_dict(state["average"])
            self.generator.set_state(state["generator"])
            for name, sampler in self.samplers.items():
                sampler.load_state_dict(state["samplers"][name])
            p = state["progress"]
            self.state = _Progress(
                step=int(p["step"]),
                fast_steps_done=int(p["fast_steps_done"]),
                images_seen=int(p["images_seen"]),
                train_time=float(p["train_time"]),
                eval_time=float(p["eval_time"]),
                evals_done=int(p["evals_done"]),
                last_checkpoint_step=int(p["step"]),
                last_checkpoint_time=float(p["train_time"]),
                loss_history=[(int(a), float(b)) for a, b in p["loss_history"]],
                # Checkpoints written before these were recorded fell on log points: interval 0.
                interval_loss=float(p.get("interval_loss", 0.0)),
                interval_steps=int(p.get("interval_steps", 0)),
                interval_images=int(p.get("interval_images", 0)),
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise SampleSiftError(
                f"the checkpoint of run {self.run.id} does not fit its configuration "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); delete checkpoint.pt to start the run over"
            ) from None

    def nonfinite_error(self, value: float) -> NonFiniteLossError:
        s = self.state
        return NonFiniteLossError(
            f"the training loss became {value} at step {s.step}; the last good checkpoint "
            f"(step {s.last_checkpoint_step}) was kept. Lower --lr or check the data"
        )

    def save_checkpoint(self, loss_sum: torch.Tensor | None = None) -> None:
        """Checkpoint the run, never with a non-finite loss or weights.

        ``loss_sum`` is the loss summed over the logging interval in progress. A NaN can
        appear between two logged losses; checking here keeps it out of the checkpoint, so
        the last checkpoint is always a good one to resume from.
        """
        s = self.state
        s.interval_loss = 0.0 if loss_sum is None else float(loss_sum)
        if not math.isfinite(s.interval_loss):
            raise self.nonfinite_error(s.interval_loss / max(s.interval_steps, 1))
        if not all(bool(torch.isfinite(t).all()) for t in self.model.parameters()):
            raise self.nonfinite_error(float("nan"))
        self.run.save_checkpoint(self.checkpoint_state())
        s.last_checkpoint_step = s.step
        s.last_checkpoint_time = s.train_time

    def checkpoint_due(self) -> bool:
        s, c = self.state, self.config
        if c.checkpoint_every is not None and s.step - s.last_checkpoint_step >= c.checkpoint_every:
            return True
        return s.train_time - s.last_checkpoint_time >= c.checkpoint_every_s

    # ---- evaluation
    def eval_due(self) -> bool:
        c, s = self.config, self.state
        if c.evals == 0:
            return False
        if c.steps is not None:
            return s.step >= (s.evals_done + 1) * c.steps / (c.evals + 1) and s.step < c.steps
        assert c.time_budget is not None
        # The final evaluation happens after the loop: none here once the budget is spent.
        return (s.evals_done + 1) * c.time_budget / (c.evals + 1) <= s.train_time < c.time_budget

    def run_eval(self, phase: Phase, final: bool = False) -> dict[str, Any]:
        start = time.perf_counter()
        averaged = evaluate(
            self.average.model,
            self.test_images,
            self.test_labels,
            self.crop,
            batch=self.config.eval_batch,
            dtype=self.dtype,
        )
        record: dict[str, Any] = {
            "kind": "eval",
            "step": self.state.step,
            "phase": phase,
            "wall_time_s": self.state.train_time,
            "images_seen": self.state.images_seen,
            "test_accuracy": averaged["accuracy"],
            "test_loss": averaged["loss"],
        }
        if final:
            raw = evaluate(
                self.model,
                self.test_images,
                self.test_labels,
                self.crop,
                batch=self.config.eval_batch,
                dtype=self.dtype,
            )
            record["test_accuracy_raw"] = raw["accuracy"]
            record["test_loss_raw"] = raw["loss"]
        self.state.eval_time += time.perf_counter() - start
        self.run.log(record)
        return record

    # ---- the loop
    def train(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        c, s = self.config, self.state
        self.model.train()
        self.warm_up()
        total = c.steps if c.steps is not None else c.time_budget
        bar = tqdm(
            total=total,
            initial=s.step if c.steps is not None else min(s.train_time, c.time_budget or 0),
            disable=not self.show_progress,
            unit="step" if c.steps is not None else "s",
            desc=self.run.id,
            leave=True,
        )
        loss_sum = torch.full((), s.interval_loss, device=self.device)
        sync_every = 10 if self.device.type == "cuda" else 1
        segment_start = time.perf_counter()
        base_time = s.train_time
        last_log_time = s.train_time

        def elapsed() -> float:
            return base_time + (time.perf_counter() - segment_start)

        def pause_clock() -> None:
            nonlocal base_time
            synchronize(self.device)
            s.train_time = elapsed()
            base_time = s.train_time

        def resume_clock() -> None:
            nonlocal segment_start
            segment_start = time.perf_counter()

        phase: Phase = self.phase(s.train_time)
        try:
            while not self.finished(s.train_time):
                phase = self.phase(s.train_time)
                indices = self.samplers[phase].next()
                loss_sum += self.train_step(indices)
                s.step += 1
                s.fast_steps_done += phase == "fast"
                s.images_seen += c.batch
                s.interval_steps += 1
                s.interval_images += c.batch
                self.average.update(s.step)
                if s.step % sync_every == 0 or (c.steps is not None and s.step >= c.steps):
                    synchronize(self.device)
                    s.train_time = elapsed()
                if s.interval_steps >= c.log_every or self.finished(s.train_time):
                    pause_clock()
                    mean_loss = float(loss_sum) / s.interval_steps
                    if not math.isfinite(mean_loss):
                        raise self.nonfinite_error(mean_loss)
                    interval_rate = s.interval_images / max(s.train_time - last_log_time, 1e-9)
                    last_log_time = s.train_time
                    self.run.log(
                        {
                            "kind": "train",
                            "step": s.step,
                            "phase": phase,
                            "wall_time_s": s.train_time,
                            "images_seen": s.images_seen,
                            "loss": mean_loss,
                            "lr": self.optimizer.param_groups[0]["lr"],
                            "images_per_s": interval_rate,
                        }
                    )
                    s.loss_history.append((s.step, mean_loss))
                    bar.set_postfix(phase=phase, loss=f"{mean_loss:.3f}", img_s=f"{interval_rate:.0f}")
                    loss_sum.zero_()
                    s.interval_steps = s.interval_images = 0
                    if self.eval_due():
                        self.run_eval(phase)
                        s.evals_done += 1
                    resume_clock()
                # Checked after every step (not only at log points), so --checkpoint-every K
                # means every K steps.
                if self.checkpoint_due():
                    pause_clock()
                    self.save_checkpoint(loss_sum)
                    resume_clock()
                if c.steps is not None:
                    bar.update(1)
                else:
                    bar.n = min(round(s.train_time, 1), c.time_budget or 0)
                    bar.refresh()
        finally:
            bar.close()
        pause_clock()
        final = self.run_eval(phase, final=True)
        self.save_checkpoint()
        return final

    def summary(self, final: dict[str, Any]) -> dict[str, Any]:
        s, c = self.state, self.config
        return {
            "run_id": self.run.id,
            "test_accuracy": final["test_accuracy"],
            "test_loss": final["test_loss"],
            "test_accuracy_raw": final["test_accuracy_raw"],
            "steps": s.step,
            "steps_fast": s.fast_steps_done,
            "steps_full": s.step - s.fast_steps_done,
            "images_seen": s.images_seen,
            "wall_time_s": s.train_time,
            "images_per_s": s.images_seen / s.train_time if s.train_time > 0 else None,
            "eval_time_s": s.eval_time,
            "warmup_time_s": self.warmup_time,
            "timing_note": TIMING_NOTE,
            "stopped_by": "steps" if c.steps is not None else "time_budget",
            "split": c.split,
            "seed": c.seed,
            "batch": c.batch,
            "selection": None if self.selection is None else self.selection.name,
            "dataset": self.dataset.key,
            "device": self.device.type,
            "device_name": describe(self.device),
            "precision": str(self.dtype).replace("torch.", ""),
            "final_train_loss": s.loss_history[-1][1] if s.loss_history else None,
            "versions": versions(),
        }


# --------------------------------------------------------------------------- public API


def prepare(
    dataset: ImageDataset,
    config: TrainConfig,
    *,
    selection: Selection | str | Path | None = None,
    workspace: Workspace | str | Path | None = None,
    name: str | None = None,
) -> Run:
    """Validate a run and record it in the run store as ``queued``, without training.

    Everything is checked up front (config values, the selection's data set), so a queued
    run can be started later by any process with :func:`resume` (``samplesift train
    --resume RUN``): that is how the app and sweeps hand runs to background workers.
    """
    config.validate()
    ws = as_workspace(workspace)
    if selection is not None and not isinstance(selection, Selection):
        selection = load_selection(selection, dataset, workspace=ws)
    require(
        selection is not None or config.split == 0,
        f"--split {config.split} trains on a subset first, so it needs --selection NAME|PATH (or use --split 0)",
    )
    if selection is not None:
        selection.check_dataset(dataset)
        selection.check_embedding_current(dataset, ws)
    resolve_device(config.device)  # --device cuda without a GPU: say so before recording the run
    crop, side = config.crop or dataset.default_crop, min(dataset.image_shape[:2])
    require(crop <= side, f"--crop {crop} is larger than the images ({side} pixels); choose at most {side}")
    require(
        dataset.num_test > 0,
        f"data set {dataset.key} has no test images, and training reports test accuracy; "
        "add images under test/<class>/ (or test_images to the .npz)",
    )
    run_config = {
        "kind": "train",
        "train": config.to_dict(),
        "dataset": {**dataset.describe(), "bad_files": "skip" if dataset.skipped_files else "error"},
        "selection": None if selection is None else selection.describe(),
        "versions": versions(),
    }
    return RunStore(ws).create(run_config, name=name)


def train(
    dataset: ImageDataset,
    config: TrainConfig,
    *,
    selection: Selection | str | Path | None = None,
    workspace: Workspace | str | Path | None = None,
    name: str | None = None,
    progress: bool = True,
) -> Run:
    """Train the classifier in two phases and record the run in the workspace.

    Args:
        dataset: the data set (train split for training, test split for evaluation).
        config: the run's settings; ``split`` > 0 needs a selection.
        selection: a :class:`Selection`, or the name or path of a saved one. It must have been
            made on ``dataset`` (same fingerprint).
        workspace: where the run folder goes.
        name: a label for the run (part of its id).
        progress: show a progress bar.

    Returns:
        The finished :class:`Run`; ``run.summary()`` has the final figures.
    """
    ws = as_workspace(workspace)
    if selection is not None and not isinstance(selection, Selection):
        selection = load_selection(selection, dataset, workspace=ws)
    run = prepare(dataset, config, selection=selection, workspace=ws, name=name)
    with run.lock():
        return _execute(run, dataset, selection, config, progress, checkpoint=None)


def resume(run: str | Path, *, workspace: Workspace | str | Path | None = None, progress: bool = True) -> Run:
    """Start a queued run, or continue an interrupted or failed one from its last checkpoint.

    The data set is reloaded from the recorded spec and must have the recorded fingerprint;
    the selection likewise. On CPU a resumed run ends with exactly the weights an
    uninterrupted run would have. A run without a checkpoint starts from step 0.

    Everything (the recorded config, data, selection, checkpoint) is checked before the run
    is touched: a run that cannot be resumed is left exactly as it was. The run's lock is
    held throughout, so two processes can never execute the same run.
    """
    ws = as_workspace(workspace)
    run_obj = RunStore(ws).get(run)
    status = run_obj.status()
    require(
        status.get("state") != "finished",
        f"run {run_obj.id} has already finished; start a new run instead",
    )
    require(
        status.get("state") != "running",
        f"run {run_obj.id} is still running (pid {status.get('pid')}); wait for it or stop it first",
    )
    with run_obj.lock():
        # It may have finished between the status check and taking the lock.
        require(run_obj.summary() is None, f"run {run_obj.id} has already finished; start a new run instead")
        config, data, selection_record = _recorded_run(run_obj)
        dataset = load_dataset(
            data["spec"],
            workspace=ws,
            max_per_class=data.get("max_per_class"),
            bad_files=data.get("bad_files", "error"),
        )
        require(
            dataset.fingerprint == data["fingerprint"],
            f"the data behind run {run_obj.id} changed (fingerprint {dataset.fingerprint[:10]}, "
            f"recorded {data['fingerprint'][:10]}); it cannot be resumed, start a new run",
        )
        selection = None
        if selection_record:
            selection = load_selection(selection_record["path"], dataset, workspace=ws)
            require(
                selection.fingerprint == selection_record["fingerprint"],
                f"selection {selection.name} changed since run {run_obj.id} was made; it cannot be resumed",
            )
        checkpoint = run_obj.load_checkpoint() if run_obj.checkpoint_path.exists() else None
        return _execute(run_obj, dataset, selection, config, progress, checkpoint=checkpoint)


def _recorded_run(run: Run) -> tuple[TrainConfig, dict[str, Any], dict[str, Any] | None]:
    """The validated training config, data set record and selection record of a run."""
    record = run.config
    broken = f"run {run.id}'s config.json was edited or damaged"
    try:
        data, selection = record["dataset"], record.get("selection")
        require(
            isinstance(data, dict) and isinstance(data["spec"], str) and isinstance(data["fingerprint"], str),
            f"{broken}: its data set record is incomplete; it cannot be resumed, start a new run",
        )
        require(
            selection is None or (isinstance(selection, dict) and {"path", "fingerprint"} <= selection.keys()),
            f"{broken}: its selection record is incomplete; it cannot be resumed, start a new run",
        )
        config = TrainConfig.from_dict(record["train"])
    except (KeyError, TypeError) as exc:
        raise SampleSiftError(f"{broken} (missing or bad {exc}); it cannot be resumed, start a new run") from None
    try:
        config.validate()
    except SampleSiftError as exc:
        raise SampleSiftError(f"{broken}: {exc}; it cannot be resumed, start a new run") from None
    return config, data, selection


def _execute(
    run: Run,
    dataset: ImageDataset,
    selection: Selection | None,
    config: TrainConfig,
    progress: bool,
    checkpoint: dict[str, Any] | None,
) -> Run:
    """Train ``run`` to the end, recording running / finished / failed / interrupted.

    The caller holds the run's lock (:meth:`Run.lock`).
    """
    run.set_status("running")
    try:
        trainer = _Trainer(dataset, selection, config, run, progress)
        if checkpoint is not None:
            trainer.restore(checkpoint)
        run.truncate_metrics(trainer.state.step)
        final = trainer.train()
        run.write_summary(trainer.summary(final))
    except KeyboardInterrupt:
        run.set_status("interrupted", error="stopped by the user (interrupt or terminate)")
        raise
    except SampleSiftError as exc:
        run.set_status("failed", error=str(exc))
        raise
    except Exception as exc:
        run.set_status("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    run.set_status("finished")
    return run
