"""The one training loop: every trainable model (classifier, autoencoder, contrastive encoder, proxy) runs in it.

A model plugs in as a :class:`Task`: it draws its own batch and takes one optimizer step,
says which phase a step belongs to, evaluates when asked, and saves and restores its own
state (weights, optimizer, random generator, batch order). The loop owns everything else,
written once:

* the device and precision set-up (:func:`open_device`);
* the clock: training steps only, excluding warm-up (a few steps whose effect is rolled
  back before timing starts) and evaluation, both recorded separately;
* stopping by steps or by a time budget, and evaluations spread over the run;
* the training log in the run store (``metrics.jsonl``: loss, images/s, phase), read live
  by the app and the CLI through one progress reader (:func:`toolkit.jobs.run_progress`);
* the non-finite check (a NaN loss never reaches a checkpoint);
* checkpoints every K steps or S seconds, and resume: on CPU a resumed run ends with
  exactly the weights of an uninterrupted one;
* the progress bar, and the run's states (:func:`execute`: running, finished, failed,
  interrupted).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from toolkit.device import configure_cuda, configure_threads, describe, resolve_device, resolve_precision, synchronize
from toolkit.errors import NonFiniteLossError, SampleSiftError, is_real, is_whole, require
from toolkit.runs import Run

TIMING_NOTE = (
    "wall_time_s counts training steps only; warm-up steps (rolled back) and evaluations are "
    "excluded and reported as warmup_time_s and eval_time_s"
)


def open_device(device: str, precision: str) -> tuple[torch.device, torch.dtype]:
    """The training device (threads or cuDNN configured) and the compute precision."""
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        configure_cuda()
    else:
        configure_threads()
    return resolved, resolve_precision(resolved, precision)


def check_loop_options(
    *, device: object, precision: object, log_every: object, checkpoint_every: object, checkpoint_every_s: object
) -> None:
    """The options every trainable model shares, checked with messages that name the flag to change."""
    require(
        isinstance(device, str) and (device in ("auto", "cpu") or device.startswith("cuda")),
        f"--device must be auto, cpu or cuda, got {device!r}",
    )
    require(precision in ("auto", "fp32", "bf16"), f"--precision must be auto, fp32 or bf16, got {precision!r}")
    require(is_whole(log_every) and log_every > 0, f"--log-every must be a positive whole number, got {log_every!r}")
    require(
        checkpoint_every is None or (is_whole(checkpoint_every) and checkpoint_every > 0),
        f"--checkpoint-every must be a positive whole number of steps, got {checkpoint_every!r}",
    )
    require(
        is_real(checkpoint_every_s) and checkpoint_every_s > 0,
        f"--checkpoint-seconds must be a positive number, got {checkpoint_every_s!r}",
    )


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


class Task:
    """One model's part of the loop. Subclasses implement :meth:`train_step` and the state methods.

    Attributes:
        model: the network being trained (checked for non-finite weights at checkpoints).
        optimizer: its optimizer (the logged learning rate is its first group's).
        generator: the random generator of batch order and augmentation.
        samplers: the batch samplers by pool name.
        batch: samples per step (for images/s and images seen).
        device, dtype: where and in which precision it computes.

    The default :meth:`state_dict` saves the model, optimizer, generator and samplers;
    a task with more state (weight averages, per-sample statistics) extends it.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    samplers: dict[str, BatchSampler]
    batch: int
    device: torch.device
    dtype: torch.dtype

    def train_step(self, phase: str, fraction: float) -> torch.Tensor:
        """Draw a batch, take one optimizer step, return the loss (detached, on the device).

        ``fraction`` is the share of the run done before this step (steps, or seconds of a
        time budget), for learning-rate schedules.
        """
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Bookkeeping after a counted step (not after warm-up steps): weight averages, say."""

    def phase(self, step: int, elapsed: float) -> str:
        """The phase the next step belongs to (the classifier's ``fast`` or ``full``)."""
        return "train"

    def evaluate(self, final: bool) -> dict[str, Any]:
        """Figures to log at an evaluation point (empty: the task has none)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything that decides the following steps: weights, optimizer, generator, batch order."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "samplers": {name: sampler.state_dict() for name, sampler in self.samplers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        for name, sampler in self.samplers.items():
            sampler.load_state_dict(state["samplers"][name])


@dataclass
class LoopSettings:
    """How long to train, and how often to log, evaluate and checkpoint.

    Attributes:
        steps: total optimizer steps (exclusive with ``time_budget``).
        time_budget: total training seconds (warm-up and evaluation excluded).
        log_every: steps between training-loss records.
        evals: evaluations spread over the run, plus one at the end (0: the end only).
        checkpoint_every: steps between checkpoints (``None``: by time only).
        checkpoint_every_s: training seconds between checkpoints.
        warmup_steps: untimed steps before timing (rolled back, so they change nothing).
    """

    steps: int | None = None
    time_budget: float | None = None
    log_every: int = 10
    evals: int = 0
    checkpoint_every: int | None = None
    checkpoint_every_s: float = 60.0
    warmup_steps: int = 2


@dataclass
class LoopProgress:
    """Where the loop stands; saved in every checkpoint."""

    step: int = 0
    phase_steps: dict[str, int] = field(default_factory=dict)
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

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["loss_history"] = [list(pair) for pair in self.loss_history]
        return record

    @classmethod
    def from_dict(cls, p: dict[str, Any]) -> LoopProgress:
        return cls(
            step=int(p["step"]),
            phase_steps={str(k): int(v) for k, v in p["phase_steps"].items()},
            images_seen=int(p["images_seen"]),
            train_time=float(p["train_time"]),
            eval_time=float(p["eval_time"]),
            evals_done=int(p["evals_done"]),
            last_checkpoint_step=int(p["step"]),
            last_checkpoint_time=float(p["train_time"]),
            loss_history=[(int(a), float(b)) for a, b in p["loss_history"]],
            interval_loss=float(p["interval_loss"]),
            interval_steps=int(p["interval_steps"]),
            interval_images=int(p["interval_images"]),
        )


class TrainingLoop:
    """Runs a :class:`Task` until its steps or time budget run out, logging into ``run``."""

    def __init__(
        self, task: Task, settings: LoopSettings, run: Run, *, progress: bool = True, nonfinite_hint: str = ""
    ) -> None:
        require(
            (settings.steps is None) != (settings.time_budget is None), "give exactly one of --steps or --time-budget"
        )
        self.task, self.settings, self.run = task, settings, run
        self.show_progress = progress
        self.nonfinite_hint = nonfinite_hint or "Lower --lr or check the data"
        self.state = LoopProgress()
        self.warmup_time = 0.0

    # ---- stopping, phases, schedules
    def finished(self, elapsed: float) -> bool:
        if self.settings.steps is not None:
            return self.state.step >= self.settings.steps
        assert self.settings.time_budget is not None
        return elapsed >= self.settings.time_budget

    def fraction_done(self, elapsed: float) -> float:
        """Share of the run done before the next step (for learning-rate schedules)."""
        if self.settings.steps is not None:
            return self.state.step / self.settings.steps
        assert self.settings.time_budget is not None
        return min(elapsed / self.settings.time_budget, 1.0)

    def eval_due(self) -> bool:
        c, s = self.settings, self.state
        if c.evals == 0:
            return False
        if c.steps is not None:
            return s.step >= (s.evals_done + 1) * c.steps / (c.evals + 1) and s.step < c.steps
        assert c.time_budget is not None
        # The final evaluation happens after the loop: none here once the budget is spent.
        return (s.evals_done + 1) * c.time_budget / (c.evals + 1) <= s.train_time < c.time_budget

    def checkpoint_due(self) -> bool:
        s, c = self.state, self.settings
        if c.checkpoint_every is not None and s.step - s.last_checkpoint_step >= c.checkpoint_every:
            return True
        return s.train_time - s.last_checkpoint_time >= c.checkpoint_every_s

    # ---- warm-up, evaluation, checkpoints
    def warm_up(self) -> None:
        """Run untimed steps (kernel selection, compilation), then roll everything back."""
        if not self.settings.warmup_steps:
            return
        saved = copy.deepcopy(self.task.state_dict())
        start = time.perf_counter()
        for _ in range(self.settings.warmup_steps):
            self.task.train_step(self.task.phase(self.state.step, self.state.train_time), 0.0)
        synchronize(self.task.device)
        self.warmup_time = time.perf_counter() - start
        self.task.load_state_dict(saved)

    def run_eval(self, phase: str, final: bool = False) -> dict[str, Any]:
        start = time.perf_counter()
        figures = self.task.evaluate(final)
        record: dict[str, Any] = {
            "kind": "eval",
            "step": self.state.step,
            "phase": phase,
            "wall_time_s": self.state.train_time,
            "images_seen": self.state.images_seen,
            **figures,
        }
        self.state.eval_time += time.perf_counter() - start
        if figures:
            self.run.log(record)
        return record

    def nonfinite_error(self, value: float) -> NonFiniteLossError:
        s = self.state
        return NonFiniteLossError(
            f"the training loss became {value} at step {s.step}; the last good checkpoint "
            f"(step {s.last_checkpoint_step}) was kept. {self.nonfinite_hint}"
        )

    def checkpoint_state(self) -> dict[str, Any]:
        """The task's state (``model``, ``optimizer``, ...) with the loop's ``progress`` beside it."""
        return {**self.task.state_dict(), "progress": self.state.to_dict()}

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Load a checkpoint; one that does not fit this run's model or data is refused."""
        try:
            self.task.load_state_dict({k: v for k, v in checkpoint.items() if k != "progress"})
            self.state = LoopProgress.from_dict(checkpoint["progress"])
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, SampleSiftError) as exc:
            raise SampleSiftError(
                f"the checkpoint of run {self.run.id} does not fit its configuration "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); "
                "delete checkpoint.pt to start the run over"
            ) from None

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
        if not all(bool(torch.isfinite(t).all()) for t in self.task.model.parameters()):
            raise self.nonfinite_error(float("nan"))
        self.run.save_checkpoint(self.checkpoint_state())
        s.last_checkpoint_step = s.step
        s.last_checkpoint_time = s.train_time

    # ---- the loop
    def train(self) -> dict[str, Any]:
        """Train to the end; returns the final evaluation record (the task's figures, if any)."""
        from tqdm.auto import tqdm

        c, s, task = self.settings, self.state, self.task
        task.model.train()
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
        loss_sum = torch.full((), s.interval_loss, device=task.device)
        sync_every = 10 if task.device.type == "cuda" else 1
        segment_start = time.perf_counter()
        base_time = s.train_time
        last_log_time = s.train_time

        def elapsed() -> float:
            return base_time + (time.perf_counter() - segment_start)

        def pause_clock() -> None:
            nonlocal base_time
            synchronize(task.device)
            s.train_time = elapsed()
            base_time = s.train_time

        def resume_clock() -> None:
            nonlocal segment_start
            segment_start = time.perf_counter()

        phase = task.phase(s.step, s.train_time)
        try:
            while not self.finished(s.train_time):
                phase = task.phase(s.step, s.train_time)
                loss_sum += task.train_step(phase, self.fraction_done(s.train_time))
                s.step += 1
                s.phase_steps[phase] = s.phase_steps.get(phase, 0) + 1
                s.images_seen += task.batch
                s.interval_steps += 1
                s.interval_images += task.batch
                task.after_step(s.step)
                if s.step % sync_every == 0 or (c.steps is not None and s.step >= c.steps):
                    synchronize(task.device)
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
                            "lr": task.optimizer.param_groups[0]["lr"],
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

    def summary(self) -> dict[str, Any]:
        """The loop's part of a run summary (steps, images, clock, device)."""
        s = self.state
        return {
            "run_id": self.run.id,
            "device": self.task.device.type,
            "device_name": describe(self.task.device),
            "precision": str(self.task.dtype).replace("torch.", ""),
            "steps": s.step,
            "images_seen": s.images_seen,
            "wall_time_s": s.train_time,
            "images_per_s": s.images_seen / s.train_time if s.train_time > 0 else None,
            "eval_time_s": s.eval_time,
            "warmup_time_s": self.warmup_time,
            "timing_note": TIMING_NOTE,
            "stopped_by": "steps" if self.settings.steps is not None else "time_budget",
            "final_train_loss": s.loss_history[-1][1] if s.loss_history else None,
        }


def run_loop(
    task: Task,
    settings: LoopSettings,
    run: Run,
    *,
    progress: bool,
    checkpoint: dict[str, Any] | None,
    nonfinite_hint: str = "",
) -> tuple[TrainingLoop, dict[str, Any]]:
    """Train ``task`` in ``run`` from the start or from ``checkpoint``; returns the loop and its final evaluation."""
    loop = TrainingLoop(task, settings, run, progress=progress, nonfinite_hint=nonfinite_hint)
    if checkpoint is not None:
        loop.restore(checkpoint)
    run.truncate_metrics(loop.state.step)
    return loop, loop.train()


Result = TypeVar("Result")


def execute(run: Run, body: Callable[[], Result]) -> Result:
    """Run ``body`` as ``run``, recording running / finished / failed / interrupted.

    The caller holds the run's lock (:meth:`Run.lock`). ``body`` trains (and writes the
    run's summary); any error is recorded with its message, so the app and ``samplesift
    runs`` can say why a run stopped.
    """
    run.set_status("running")
    try:
        result = body()
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
    return result
