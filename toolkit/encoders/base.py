"""The encoder interface: a data set in, a named embedding artifact out.

Every encoder is a small class with one uniform interface, in the spirit of scikit-learn
(and of :mod:`toolkit.selectors`)::

    encoder = get_encoder("contrastive", epochs=20, seed=1)
    embedding = encoder.embed(dataset, workspace="workspace", name="simclr-20ep")
    embedding.vectors          # N x d float32, one row per training sample
    embedding.quality          # k-NN and linear-probe accuracy, measured once

Options are a dataclass per encoder (:attr:`Encoder.Options`), checked in the base class:
an unknown option is refused naming the ones the encoder takes, and every value is
validated before anything is written. Making an embedding is a run in the run store (kind
``embed``), like a classifier run: it is queued, running, finished, failed or interrupted;
trainable encoders train in the shared loop (:mod:`toolkit.loop`) with its log, progress,
checkpoints and resume, so the app and the CLI follow and cancel every encoder the same way.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from toolkit.artifacts import safe_name, versions
from toolkit.cluster import check_executor, ray_session, run_tasks
from toolkit.data import ImageDataset
from toolkit.device import configure_cuda
from toolkit.embedding import Embedding, save_embedding
from toolkit.errors import SampleSiftError, is_real, is_whole, require
from toolkit.loop import LoopSettings, TrainingLoop, check_loop_options, execute
from toolkit.runs import Run, RunStore
from toolkit.workspace import Workspace, as_workspace


@dataclass
class Options:
    """Options every encoder takes."""

    seed: int = 0

    def validate(self) -> None:
        require(
            is_whole(self.seed) and 0 <= self.seed < 2**63,
            f"--seed must be a whole number in [0, 2**63), got {self.seed!r}",
        )


@dataclass
class TrainingOptions(Options):
    """Options of encoders trained in the shared loop.

    Attributes:
        epochs: passes over the training split (exclusive with ``time_budget``).
        time_budget: training seconds instead of epochs (warm-up excluded).
        batch: images per step.
        lr: peak learning rate.
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: ``auto``, ``fp32`` or ``bf16``.
        log_every: steps between loss records.
        checkpoint_every: steps between resumable checkpoints (``None``: by time only).
        checkpoint_every_s: training seconds between checkpoints.
    """

    epochs: float | None = 5
    time_budget: float | None = None
    batch: int = 256
    lr: float = 0.1
    device: str = "auto"
    precision: str = "auto"
    log_every: int = 20
    checkpoint_every: int | None = None
    checkpoint_every_s: float = 60.0

    def validate(self) -> None:
        super().validate()
        require(
            (self.epochs is None) != (self.time_budget is None),
            "give exactly one of --epochs or --time-budget",
        )
        require(
            self.epochs is None or (is_real(self.epochs) and self.epochs > 0),
            f"--epochs must be a positive number, got {self.epochs!r}",
        )
        require(
            self.time_budget is None or (is_real(self.time_budget) and self.time_budget > 0),
            f"--time-budget must be a positive number of seconds, got {self.time_budget!r}",
        )
        require(is_whole(self.batch) and self.batch > 0, f"--batch must be a positive whole number, got {self.batch!r}")
        require(is_real(self.lr) and self.lr > 0, f"--lr must be a positive number, got {self.lr!r}")
        check_loop_options(
            device=self.device,
            precision=self.precision,
            log_every=self.log_every,
            checkpoint_every=self.checkpoint_every,
            checkpoint_every_s=self.checkpoint_every_s,
        )

    def loop_settings(self, num_train: int) -> LoopSettings:
        """The shared loop's settings: epochs become steps of ``batch`` over ``num_train`` images."""
        steps = None if self.epochs is None else max(1, math.ceil(self.epochs * num_train / self.batch))
        return LoopSettings(
            steps=steps,
            time_budget=self.time_budget,
            log_every=self.log_every,
            checkpoint_every=self.checkpoint_every,
            checkpoint_every_s=self.checkpoint_every_s,
        )


#: Bytes of images one Ray inference task is sent, rounded down to whole batches (at least one): the
#: work of a task, and what waits in the object store for it (two tasks per cluster CPU at most).
INFERENCE_SLICE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Inference:
    """Where an encoder's inference over the images runs (``samplesift embed --executor``).

    ``local`` runs it in this process, streaming the images in batches. ``ray`` sends it to a
    Ray cluster as tasks over consecutive slices of the images, each a whole number of the same
    batches, so every image is embedded in the batch it would be embedded in here: CPU kernels
    may round differently at another batch size, and with the same batches the rows are
    identical. The model goes to the cluster once (``ray.put``, in main memory), each slice goes
    with its task (the images need not be on a shared file system) and the rows come back in
    order. Training stays in this process: only the inference is spread.

    Attributes:
        executor: ``"local"`` or ``"ray"``.
        address: with ``ray``, the cluster to join (``auto``, ``ray://host:10001``); ``None``
            starts a local instance unless this process has joined one already.
    """

    executor: str = "local"
    address: str | None = None

    def __post_init__(self) -> None:
        check_executor(self.executor, self.address)

    def map(self, infer: Callable[..., Any], model: Any, *rows: np.ndarray | None, batch: int, **settings: Any) -> Any:
        """``infer(model, *rows, batch=batch, **settings)``, here or over slices of the rows on Ray.

        ``rows`` are the images and any other per-image arrays (labels; ``None`` stays
        ``None``); ``infer`` must stream them in batches of ``batch`` and return an array of one
        row per image, or a tuple of such arrays (or ``None``), which are joined slice by slice.
        A ``device`` setting on a GPU makes each task ask the cluster for one GPU (and use its own).
        On the CPU the rows are identical to the local ones; on GPUs they are as close as two
        local runs are (cuDNN picks its kernels by timing them).
        """
        images = rows[0]
        assert images is not None
        if self.executor == "local" or len(images) == 0:
            return infer(model, *rows, batch=batch, **settings)
        device = settings.get("device")
        gpu = isinstance(device, torch.device) and device.type == "cuda"
        if gpu:
            settings["device"] = torch.device("cuda")  # the one GPU Ray gives the task
        image_bytes = max(1, images[:1].nbytes)
        step = batch * max(1, INFERENCE_SLICE_BYTES // (batch * image_bytes))
        parts: dict[int, Any] = {}

        def job(start: int) -> tuple[int, tuple[Any, ...]]:
            piece = (None if row is None else np.array(row[start : start + step]) for row in rows)
            return start, (infer, shared, *piece)

        with ray_session(self.address) as ray:
            shared = ray.put(_in_main_memory(model))
            jobs = (job(start) for start in range(0, len(images), step))
            run_tasks(
                ray, _infer_in_task, jobs, parts.__setitem__, kwargs={"batch": batch, **settings}, num_gpus=int(gpu)
            )
        ordered = [parts[start] for start in sorted(parts)]
        if isinstance(ordered[0], tuple):
            return tuple(None if column[0] is None else np.concatenate(column) for column in zip(*ordered, strict=True))
        return np.concatenate(ordered)


def _infer_in_task(infer: Callable[..., Any], model: Any, *rows: np.ndarray | None, **settings: Any) -> Any:
    """``infer`` in a Ray task, on a GPU with the settings this process trains and infers with (TF32 matmuls)."""
    device = settings.get("device")
    if isinstance(device, torch.device) and device.type == "cuda":
        configure_cuda()
    return infer(model, *rows, **settings)


def _in_main_memory(model: Any) -> Any:
    """``model`` (a module, a tensor, or a tuple of them and other values) with its tensors copied to main memory.

    What a Ray worker can unpickle whatever devices it has; the caller's model is left where it is.
    """
    if isinstance(model, torch.nn.Module):
        return copy.deepcopy(model).cpu()
    if isinstance(model, torch.Tensor):
        return model.cpu()
    if isinstance(model, tuple):
        return tuple(_in_main_memory(part) for part in model)
    return model


@dataclass
class EncoderOutput:
    """What an encoder computes; the base class measures and saves it.

    Attributes:
        vectors: training rows, N x d.
        test_vectors: test rows (``None`` when the encoder cannot embed the test images).
        sample_scores: named per-sample scores (training dynamics), if any.
        state: trained weights, if any.
        facts: manifest fields (model config, training time, images/s, ...).
    """

    vectors: np.ndarray
    test_vectors: np.ndarray | None
    sample_scores: dict[str, np.ndarray] | None = None
    state: dict[str, Any] | None = None
    facts: dict[str, Any] | None = None


class Encoder:
    """Base class: subclasses set the class attributes and implement :meth:`compute`.

    Class attributes:
        name: the registry name.
        Options: the options dataclass (defaults are the recommended settings).
        trainable: trains a network in the shared loop (has checkpoints and resume).
        summary: one line saying what the embedding is.
        source: where the method comes from.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = Options
    trainable: ClassVar[bool] = False
    summary: ClassVar[str] = ""
    source: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        known = {f.name for f in fields(self.Options)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise SampleSiftError(
                f"encoder {self.name!r} has no option(s) {', '.join(unknown)}; it takes {', '.join(sorted(known))}"
            )
        self.options = self.Options(**options)
        self.options.validate()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in asdict(self.options).items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return asdict(cls.Options())

    def check(self, dataset: ImageDataset) -> None:
        """Refuse a data set this encoder cannot embed, before anything is written."""

    def loop_settings(self, dataset: ImageDataset) -> LoopSettings | None:
        """The loop's schedule (``None`` for encoders that do not train)."""
        if isinstance(self.options, TrainingOptions):
            return self.options.loop_settings(dataset.num_train)
        return None

    def compute(
        self,
        dataset: ImageDataset,
        run: Run,
        *,
        progress: bool,
        checkpoint: dict[str, Any] | None,
        inference: Inference,
    ) -> EncoderOutput:
        """Train (if the encoder trains) and embed the training and test images (where ``inference`` says)."""
        raise NotImplementedError

    # ---- the uniform path: record a run, compute, measure, save
    def prepare(
        self, dataset: ImageDataset, *, workspace: Workspace | str | Path | None = None, name: str | None = None
    ) -> Run:
        """Check everything and record the embedding's run as ``queued`` (started by :func:`resume_embedding`)."""
        ws = as_workspace(workspace)
        name = safe_name(name or self.name, "embedding name")
        self.check(dataset)
        ws.embedding_dir(dataset.key, name)  # a bad name is refused before the run is recorded
        for other in RunStore(ws):
            config = other.config
            if (
                config.get("kind") == "embed"
                and config.get("embedding") == name
                and (config.get("dataset") or {}).get("key") == dataset.key
                and other.status().get("state") in ("queued", "running")
            ):
                raise SampleSiftError(
                    f"embedding {name!r} of {dataset.key} is already being made (run {other.id}); "
                    "wait for it, cancel it, or choose another --name"
                )
        settings = self.loop_settings(dataset)
        config = {
            "kind": "embed",
            "encoder": self.name,
            "options": asdict(self.options),
            "embedding": name,
            "loop": None if settings is None else {"steps": settings.steps, "time_budget": settings.time_budget},
            "dataset": {**dataset.describe(), "bad_files": "skip" if dataset.skipped_files else "error"},
            "versions": versions(),
        }
        return RunStore(ws).create(config, name=f"embed-{name}")

    def embed(
        self,
        dataset: ImageDataset,
        *,
        workspace: Workspace | str | Path | None = None,
        name: str | None = None,
        progress: bool = True,
        inference: Inference | None = None,
    ) -> Embedding:
        """Make the embedding of ``dataset`` and save it as ``name`` (default: the encoder's name).

        ``inference`` says where the images are embedded (default: here); the rows are the same
        wherever, so it is not recorded.
        """
        ws = as_workspace(workspace)
        run = self.prepare(dataset, workspace=ws, name=name)
        with run.lock():
            return self._execute(run, dataset, ws, progress, checkpoint=None, inference=inference or Inference())

    def _execute(
        self,
        run: Run,
        dataset: ImageDataset,
        ws: Workspace,
        progress: bool,
        checkpoint: dict[str, Any] | None,
        inference: Inference,
    ) -> Embedding:
        def body() -> Embedding:
            output = self.compute(dataset, run, progress=progress, checkpoint=checkpoint, inference=inference)
            run.log({"kind": "stage", "stage": "measuring", "step": _last_step(run)})
            train_log = [r for r in run.records() if r.get("kind") == "train"]
            embedding = save_embedding(
                dataset,
                workspace=ws,
                name=str(run.config["embedding"]),
                encoder=self.name,
                config=asdict(self.options),
                seed=self.options.seed,
                vectors=output.vectors,
                test_vectors=output.test_vectors,
                sample_scores=output.sample_scores,
                state=output.state,
                training_log=train_log,
                facts={"run_id": run.id, **(output.facts or {})},
            )
            run.write_summary(
                {
                    "run_id": run.id,
                    "kind": "embed",
                    "encoder": self.name,
                    "embedding": embedding.name,
                    "path": str(embedding.path),
                    "dim": embedding.dim,
                    **embedding.quality,
                    **{k: v for k, v in (output.facts or {}).items() if not isinstance(v, (dict, list))},
                }
            )
            return embedding

        return execute(run, body)


def loop_facts(loop: TrainingLoop) -> dict[str, Any]:
    """Manifest fields of a trained encoder: its clock (warm-up excluded), throughput and device."""
    summary = loop.summary()
    return {
        "train_time_s": summary["wall_time_s"],
        "steps": summary["steps"],
        "images_seen": summary["images_seen"],
        "images_per_s": summary["images_per_s"],
        "warmup_time_s": summary["warmup_time_s"],
        "timing_note": summary["timing_note"],
        "final_loss": summary["final_train_loss"],
        "device": summary["device"],
        "device_name": summary["device_name"],
        "precision": summary["precision"],
        # What else the machine was doing: a shared CPU trains slower (1, 5 and 15-minute averages).
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def embed_after_training(
    loop: TrainingLoop,
    run: Run,
    dataset: ImageDataset,
    embed: Callable[[np.ndarray], np.ndarray],
    **facts: Any,
) -> EncoderOutput:
    """A trained encoder's output: its rows for the training and test images, its weights and the loop's facts."""
    run.log({"kind": "stage", "stage": "embedding", "step": loop.state.step})
    start = time.perf_counter()
    vectors = embed(dataset.train_images)
    test_vectors = embed(dataset.test_images) if dataset.num_test else None
    return EncoderOutput(
        vectors=vectors,
        test_vectors=test_vectors,
        state=loop.task.model.state_dict(),
        facts={**loop_facts(loop), "embed_time_s": time.perf_counter() - start, **facts},
    )


def _last_step(run: Run) -> int:
    steps = [int(r.get("step", 0)) for r in run.records()]
    return max(steps) if steps else 0
