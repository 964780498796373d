"""Two-phase classifier training: the selected subset first ("fast phase"), then the full set.

The paper's recipe (§IV-A, §IV-D): SGD at a constant learning rate of 0.1 (the tutorial's
decay would fire only after 350 epochs), weight decay 0.004 on the two hidden fully
connected weight matrices only, and test accuracy measured with an exponential moving
average of the weights (decay ``min(0.9999, (1 + t) / (10 + t))``, batch-norm statistics
included). A run trains ``round(split * steps)`` steps on the subset and the rest on the full
set, or, with a time budget, spends ``split`` of the budget on the subset.

Data stays on the device as one uint8 tensor where it fits (else batches are gathered from the
memory-mapped cache: :class:`toolkit.augment.DeviceImages`); batches are index tensors drawn
from a shuffled order that is refreshed every epoch of the active pool, and augmented in one
batched call. Wall-clock is reported the way fast-training work reports it: training steps only,
excluding warm-up (a few steps whose effect is rolled back before timing starts) and
evaluation; both are recorded separately.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.artifacts import versions
from toolkit.augment import AugmentConfig, DeviceImages, augment_batch, center_crop
from toolkit.data import ImageDataset, load_recorded
from toolkit.device import autocast, resolve_device, seeded
from toolkit.errors import SampleSiftError, is_real, is_whole, require
from toolkit.loop import (
    BatchSampler,
    LoopSettings,
    Task,
    TrainingLoop,
    check_loop_options,
    execute,
    open_device,
    run_loop,
)
from toolkit.models import Classifier
from toolkit.runs import Run, RunStore
from toolkit.selection import Selection, load_selection
from toolkit.workspace import Workspace, as_workspace

# --------------------------------------------------------------------------- building blocks


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
    images: torch.Tensor | DeviceImages,
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
                is_whole(self.steps) and self.steps > 0,
                f"--steps must be a positive whole number, got {self.steps!r}",
            )
        if self.time_budget is not None:
            require(
                is_real(self.time_budget) and self.time_budget > 0,
                f"--time-budget must be a positive number of seconds, got {self.time_budget!r}",
            )
        require(
            is_real(self.split) and 0.0 <= self.split <= 1.0,
            f"--split must be between 0 and 1 (the share of steps on the subset), got {self.split!r}",
        )
        require(is_whole(self.batch) and self.batch > 0, f"--batch must be a positive whole number, got {self.batch!r}")
        require(is_real(self.lr) and self.lr > 0, f"--lr must be a positive number, got {self.lr!r}")
        require(
            is_real(self.momentum) and 0.0 <= self.momentum < 1.0,
            f"--momentum must be in [0, 1), got {self.momentum!r}",
        )
        require(
            is_real(self.weight_decay) and self.weight_decay >= 0,
            f"--weight-decay must be a number >= 0, got {self.weight_decay!r}",
        )
        require(self.norm in ("batch", "lrn"), f"--norm must be batch or lrn, got {self.norm!r}")
        require(
            self.crop is None or (is_whole(self.crop) and self.crop > 0),
            f"--crop must be a positive whole number, got {self.crop!r}",
        )
        require(
            is_real(self.brightness) and self.brightness >= 0,
            f"brightness must be a number >= 0, got {self.brightness!r}",
        )
        contrast = self.contrast
        require(
            contrast is None
            or (
                isinstance(contrast, (tuple, list))
                and len(contrast) == 2
                and all(is_real(v) for v in contrast)
                and 0 <= contrast[0] <= contrast[1]
            ),
            f"contrast must be None or a pair (low, high) with 0 <= low <= high, got {contrast!r}",
        )
        require(
            is_whole(self.seed) and 0 <= self.seed < 2**63,
            f"--seed must be a whole number in [0, 2**63), got {self.seed!r}",
        )
        require(is_whole(self.evals) and self.evals >= 0, f"--evals must be a whole number >= 0, got {self.evals!r}")
        check_loop_options(
            device=self.device,
            precision=self.precision,
            log_every=self.log_every,
            checkpoint_every=self.checkpoint_every,
            checkpoint_every_s=self.checkpoint_every_s,
        )
        require(isinstance(self.compile, bool), f"compile must be true or false, got {self.compile!r}")
        require(
            is_whole(self.warmup_steps) and self.warmup_steps >= 0,
            f"warmup_steps must be a whole number >= 0, got {self.warmup_steps!r}",
        )
        require(
            is_whole(self.eval_batch) and self.eval_batch > 0,
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


# --------------------------------------------------------------------------- the classifier's task


class ClassifierTask(Task):
    """The classifier's part of the shared loop (:mod:`toolkit.loop`): two pools, weight averaging, test evaluation."""

    def __init__(self, dataset: ImageDataset, selection: Selection | None, config: TrainConfig) -> None:
        self.dataset, self.selection, self.config = dataset, selection, config
        self.device, self.dtype = open_device(config.device, config.precision)
        self.batch = config.batch
        self.crop = config.crop or dataset.default_crop  # checked against the image size by prepare()
        self.augment = AugmentConfig(crop=self.crop, brightness=config.brightness, contrast=config.contrast)
        self.images = DeviceImages(dataset.train_images, self.device)
        self.labels = torch.as_tensor(dataset.train_labels, device=self.device)
        self.test_images = DeviceImages(dataset.test_images, self.device)
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

    def phase(self, step: int, elapsed: float) -> str:
        c = self.config
        if c.steps is not None:
            return "fast" if step < round(c.split * c.steps) else "full"
        assert c.time_budget is not None
        return "fast" if elapsed < c.split * c.time_budget else "full"

    def train_step(self, phase: str, fraction: float) -> torch.Tensor:
        return self.step_on(self.samplers[phase].next())[0]

    def step_on(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on the given training samples; returns the loss and the logits (detached)."""
        x = augment_batch(self.images[indices], self.augment, self.generator)
        y = self.labels[indices]
        with autocast(self.device, self.dtype):
            logits = self.forward(x)
        loss = F.cross_entropy(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), logits.detach()

    def after_step(self, step: int) -> None:
        self.average.update(step)

    def evaluate(self, final: bool) -> dict[str, Any]:
        """Test accuracy of the averaged weights (and, at the end, of the raw ones too)."""
        c = self.config
        averaged = evaluate(
            self.average.model, self.test_images, self.test_labels, self.crop, batch=c.eval_batch, dtype=self.dtype
        )
        figures = {"test_accuracy": averaged["accuracy"], "test_loss": averaged["loss"]}
        if final:
            raw = evaluate(
                self.model, self.test_images, self.test_labels, self.crop, batch=c.eval_batch, dtype=self.dtype
            )
            figures.update(test_accuracy_raw=raw["accuracy"], test_loss_raw=raw["loss"])
        return figures

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "average": self.average.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.average.model.load_state_dict(state["average"])


def _summary(loop: TrainingLoop, task: ClassifierTask, final: dict[str, Any]) -> dict[str, Any]:
    s, c = loop.state, task.config
    return {
        **loop.summary(),
        "test_accuracy": final["test_accuracy"],
        "test_loss": final["test_loss"],
        "test_accuracy_raw": final["test_accuracy_raw"],
        "steps_fast": s.phase_steps.get("fast", 0),
        "steps_full": s.phase_steps.get("full", 0),
        "split": c.split,
        "seed": c.seed,
        "batch": c.batch,
        "selection": None if task.selection is None else task.selection.name,
        "dataset": task.dataset.key,
        "versions": versions(),
    }


def loop_settings(config: TrainConfig) -> LoopSettings:
    """The shared loop's settings of a classifier run."""
    return LoopSettings(
        steps=config.steps,
        time_budget=config.time_budget,
        log_every=config.log_every,
        evals=config.evals,
        checkpoint_every=config.checkpoint_every,
        checkpoint_every_s=config.checkpoint_every_s,
        warmup_steps=config.warmup_steps,
    )


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
        "add images under test/<class>/ (or test_images to the .npz), or hold some out with --test-fraction F",
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
        dataset = load_recorded(data, workspace=ws, owner=f"run {run_obj.id}")
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
    """Train ``run`` to the end in the shared loop; the caller holds the run's lock."""

    def body() -> None:
        task = ClassifierTask(dataset, selection, config)
        loop, final = run_loop(task, loop_settings(config), run, progress=progress, checkpoint=checkpoint)
        run.write_summary(_summary(loop, task, final))

    execute(run, body)
    return run
