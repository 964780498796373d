"""Train the paper's autoencoder, embed every training sample, reconstruct on demand.

``train_autoencoder`` fits the hourglass autoencoder on the whole training split (random
crops and flips, per-image standardisation; MSE to the standardised crop; SGD with
momentum at lr 0.1, as the paper says), then writes one folder per data set and name::

    <workspace>/datasets/<key>/autoencoders/<name>/
        model.safetensors   weights and batch-norm statistics (no pickle)
        embeddings.npy      N x 216 float32, one row per training sample (centre crop)
        metrics.jsonl       training loss log
        manifest.json       config, seed, fingerprints of data/weights/embeddings, versions

The folder is built under a temporary name and renamed when complete. While training, a
hidden ``.<name>.partial`` sibling holds ``progress.json`` (step, loss, images/s, time left;
what the app polls) and periodic checkpoints, so ``resume=True`` can continue an interrupted
run.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from toolkit.artifacts import (
    atomic_directory,
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_json,
    exclusive_lock,
    fingerprint_arrays,
    fingerprint_bytes,
    lock_is_held,
    read_json,
    versions,
)
from toolkit.augment import AugmentConfig, augment_batch, center_crop, to_device_images
from toolkit.data import ImageDataset
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
from toolkit.models import EMBEDDING_DIM, Autoencoder, embedding_channels_for
from toolkit.runs import load_weights_only
from toolkit.train import BatchSampler
from toolkit.workspace import Workspace, as_workspace


@dataclass
class AutoencoderConfig:
    """Autoencoder training settings.

    Attributes:
        epochs: passes over the training split (the paper: ~800; a few suffice on a CPU).
        batch: samples per step.
        lr: learning rate (the paper's 0.1).
        momentum: SGD momentum (the paper says "with momentum"; its value is not given).
        seed: seeds initialisation, batch order and augmentation.
        crop: input crop side (``None``: the data set's default, 24 for 32x32).
        embedding_dim: target embedding size (216 in the paper).
        device, precision: as for classifier training.
        log_every: steps between loss records.
        checkpoint_every: steps between resumable checkpoints (``None``: by time only).
        checkpoint_every_s: seconds between resumable checkpoints.
    """

    epochs: int = 5
    batch: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    seed: int = 0
    crop: int | None = None
    embedding_dim: int = EMBEDDING_DIM
    device: str = "auto"
    precision: str = "auto"
    log_every: int = 20
    checkpoint_every: int | None = None
    checkpoint_every_s: float = 60.0

    def validate(self) -> None:
        require(self.epochs > 0, f"--epochs must be positive, got {self.epochs}")
        require(self.batch > 0, f"--batch must be positive, got {self.batch}")
        require(math.isfinite(self.lr) and self.lr > 0, f"--lr must be positive, got {self.lr}")
        require(0.0 <= self.momentum < 1.0, f"--momentum must be in [0, 1), got {self.momentum}")
        require(self.embedding_dim > 0, f"--embedding-dim must be positive, got {self.embedding_dim}")
        require(self.crop is None or self.crop > 0, f"--crop must be positive, got {self.crop}")
        require(self.log_every > 0, f"--log-every must be positive, got {self.log_every}")
        require(0 <= self.seed < 2**63, f"--seed must be a whole number in [0, 2**63), got {self.seed}")
        require(
            self.checkpoint_every is None or self.checkpoint_every > 0,
            f"--checkpoint-every must be positive, got {self.checkpoint_every}",
        )
        require(
            math.isfinite(self.checkpoint_every_s) and self.checkpoint_every_s > 0,
            f"--checkpoint-seconds must be positive, got {self.checkpoint_every_s}",
        )

    def identity(self) -> dict[str, Any]:
        """The settings that decide the trained weights (a checkpoint resumes only under them)."""
        return {k: v for k, v in asdict(self).items() if k not in ("checkpoint_every", "checkpoint_every_s")}


@dataclass
class Embedding:
    """A trained autoencoder and the embedding of every training sample."""

    path: Path
    manifest: dict[str, Any]
    vectors: np.ndarray

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["embedding_fingerprint"])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def describe(self) -> dict[str, Any]:
        """What selections record about the embedding they used."""
        return {
            "fingerprint": self.fingerprint,
            "autoencoder": self.manifest["name"],
            "weights_fingerprint": self.manifest["weights_fingerprint"],
            "dim": self.dim,
            "path": str(self.path),
        }

    def load_model(self, device: str | torch.device = "cpu") -> Autoencoder:
        """The autoencoder with its trained weights (loaded from safetensors), in eval mode.

        Raises:
            SampleSiftError: the weights file is damaged, or is not the one the manifest
                (and so the embedding) was made with.
        """
        from safetensors.torch import load_file

        path = self.path / "model.safetensors"
        hint = "recompute it with `samplesift embed`"
        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises its own SafetensorError, OSError, ...
            raise SampleSiftError(
                f"the autoencoder weights {path} cannot be read ({type(exc).__name__}); {hint}"
            ) from None
        require(
            _state_fingerprint(state) == self.manifest["weights_fingerprint"],
            f"the autoencoder weights {path} are not the ones its embedding was made with; {hint}",
        )
        model = Autoencoder(**self.manifest["model"])
        model.load_state_dict(state)
        return model.to(device).eval()


@torch.inference_mode()
def embed_images(
    model: Autoencoder, images: np.ndarray | torch.Tensor, *, device: str | torch.device = "cpu", batch: int = 1000
) -> np.ndarray:
    """Embeddings (N x d float32) of uint8 images (N x H x W x C), centre-cropped."""
    device = torch.device(device)
    model = model.to(device, memory_format=torch.channels_last).eval()
    data = to_device_images(images, device)
    out = [model.encode(center_crop(data[s : s + batch], model.crop)).float().cpu() for s in range(0, len(data), batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, model.embedding_dim), np.float32)


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
    model = embedding.load_model(device)
    crop = model.crop
    raw = torch.as_tensor(dataset.train_images[idx], device=device)
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


def _partial_dir(ws: Workspace, dataset_key: str, name: str) -> Path:
    final = ws.autoencoder_dir(dataset_key, name)
    return final.parent / f".{final.name}.partial"


def _lock_path(ws: Workspace, dataset_key: str, name: str) -> Path:
    # Beside the partial folder, not in it: the folder is deleted at the end, the lock file
    # stays, so a waiting process never locks a file that is already unlinked.
    final = ws.autoencoder_dir(dataset_key, name)
    return final.parent / f".{final.name}.lock"


#: Progress states of a training that is still going (if its process is).
_ACTIVE_STATES = ("starting", "training", "embedding")


def training_progress(
    dataset: ImageDataset, *, workspace: Workspace | str | Path | None = None, name: str = "default"
) -> dict[str, Any] | None:
    """The progress record of an autoencoder being trained (by any process), or ``None``.

    ``state`` is starting, training, embedding, failed (with ``error``) or interrupted; an
    active state whose process died (its lock is free) reads ``interrupted``.
    """
    ws = as_workspace(workspace)
    path = _partial_dir(ws, dataset.key, name) / "progress.json"
    try:
        record = read_json(path, "progress record")
    except SampleSiftError:
        return None
    if record.get("state") in _ACTIVE_STATES and not lock_is_held(_lock_path(ws, dataset.key, name)):
        record = {**record, "state": "interrupted", "error": "the process training it is gone"}
    return record


def _state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    return fingerprint_bytes(*(f"{k}:{fingerprint_arrays(v.cpu().numpy())}" for k, v in sorted(state.items())))


def train_autoencoder(
    dataset: ImageDataset,
    config: AutoencoderConfig | None = None,
    *,
    workspace: Workspace | str | Path | None = None,
    name: str = "default",
    resume: bool = False,
    progress: bool = True,
) -> Embedding:
    """Train the autoencoder on ``dataset``'s training split and embed every sample.

    Args:
        dataset: the data set.
        config: training settings (defaults: 5 epochs, batch 256, SGD lr 0.1 momentum 0.9).
        workspace: where the artifact folder goes.
        name: the autoencoder's name within the data set (several can coexist).
        resume: continue from the checkpoint of an interrupted call with the same settings.
        progress: show a progress bar with loss and images/s.

    Returns:
        The saved :class:`Embedding`.
    """
    config = config or AutoencoderConfig()
    config.validate()
    ws = as_workspace(workspace)
    final_dir = ws.autoencoder_dir(dataset.key, name)
    partial = _partial_dir(ws, dataset.key, name)
    crop = config.crop or dataset.default_crop
    require(
        crop <= min(dataset.image_shape[:2]),
        f"--crop {crop} is larger than the images {dataset.image_shape[:2]}",
    )
    device = resolve_device(config.device)  # before the lock file: a bad --device changes nothing
    with exclusive_lock(
        _lock_path(ws, dataset.key, name),
        f"autoencoder {name!r} of {dataset.key} is being trained by another process; "
        "wait for it, or choose another --name",
    ):
        return _train_autoencoder_locked(dataset, config, ws, name, final_dir, partial, crop, device, resume, progress)


def _train_autoencoder_locked(
    dataset: ImageDataset,
    config: AutoencoderConfig,
    ws: Workspace,
    name: str,
    final_dir: Path,
    partial: Path,
    crop: int,
    device: torch.device,
    resume: bool,
    progress: bool,
) -> Embedding:
    """The body of :func:`train_autoencoder`, run while holding the autoencoder's lock."""
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    identity = {"config": config.identity(), "dataset": dataset.fingerprint}
    checkpoint_path = partial / "checkpoint.pt"
    saved = load_weights_only(checkpoint_path) if resume and checkpoint_path.exists() else None
    if saved is not None:
        recorded = json.loads(saved["identity"]) if isinstance(saved.get("identity"), str) else None
        if recorded and isinstance(recorded.get("config"), dict):
            # Older checkpoints recorded the checkpoint interval too; it does not decide the weights.
            recorded["config"] = {k: v for k, v in recorded["config"].items() if k in identity["config"]}
        if recorded != identity:
            # Resuming under other settings would silently train a different model.
            changed = sorted(
                k
                for k in set(identity["config"]) | set((recorded or {}).get("config", {}))
                if identity["config"].get(k) != (recorded or {}).get("config", {}).get(k)
            )
            what = "other data" if recorded and recorded.get("dataset") != dataset.fingerprint else "other settings"
            raise SampleSiftError(
                f"the interrupted training in {partial} used {what}"
                + (f" ({', '.join(changed)} differ)" if changed else "")
                + "; rerun with the same settings to resume it, or without --resume to start over"
            )
    if device.type == "cuda":
        configure_cuda()
    else:
        configure_threads()
    dtype = resolve_precision(device, config.precision)
    channels = embedding_channels_for(crop, config.embedding_dim)
    with seeded(config.seed):
        model = Autoencoder(dataset.channels, crop, channels)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    images = to_device_images(dataset.train_images, device)
    sampler = BatchSampler(torch.arange(dataset.num_train, device=device), config.batch, generator)
    augment = AugmentConfig(crop=crop, contrast=None)
    steps_per_epoch = math.ceil(dataset.num_train / config.batch)
    total_steps = config.epochs * steps_per_epoch
    step, train_time, history = 0, 0.0, []
    # The logging interval in progress (a checkpoint may fall inside one).
    interval, interval_loss = 0, 0.0

    if saved is not None:
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            generator.set_state(saved["generator"])
            sampler.load_state_dict(saved["sampler"])
            step, train_time = int(saved["step"]), float(saved["train_time"])
            history = [tuple(h) for h in saved["history"]]
            # Checkpoints written before these were recorded fell on log points: interval 0.
            interval, interval_loss = int(saved.get("interval", 0)), float(saved.get("interval_loss", 0.0))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise SampleSiftError(
                f"the checkpoint in {partial} does not fit this autoencoder ({type(exc).__name__}); "
                "rerun without --resume to start over"
            ) from None
    partial.mkdir(parents=True, exist_ok=True)

    def write_progress(state: str, **values: Any) -> None:
        # Read by the app (and anyone else) while training runs in another process.
        record = {"state": state, "total_steps": total_steps, "pid": os.getpid(), "wall_time_s": train_time, **values}
        atomic_write_json(partial / "progress.json", record)

    write_progress("starting", step=step)

    def checkpoint() -> None:
        # Never checkpoint a diverged model: the last checkpoint must be a good one.
        partial_loss = float(loss_sum)
        if not math.isfinite(partial_loss) or not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise NonFiniteLossError(
                f"the autoencoder loss became non-finite before step {step}; lower --lr "
                "(the last good checkpoint was kept; rerun with --resume after fixing)"
            )
        buffer = io.BytesIO()
        torch.save(
            {
                "identity": json.dumps(identity),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "sampler": sampler.state_dict(),
                "step": step,
                "train_time": train_time,
                "history": [list(h) for h in history],
                "interval": interval,
                "interval_loss": partial_loss,
            },
            buffer,
        )
        atomic_write_bytes(checkpoint_path, buffer.getvalue())

    model.train()
    bar = tqdm(total=total_steps, initial=step, disable=not progress, desc=f"autoencoder {dataset.key}", unit="step")
    loss_sum = torch.full((), interval_loss, device=device)
    last_checkpoint_step, last_checkpoint_time = step, train_time
    start = time.perf_counter()
    base = train_time
    last_log_time = train_time
    try:
        while step < total_steps:
            x = augment_batch(images[sampler.next()], augment, generator)
            with autocast(device, dtype):
                out = model(x)
            loss = F.mse_loss(out.float(), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            step += 1
            interval += 1
            if interval >= config.log_every or step == total_steps:
                synchronize(device)
                mean_loss = float(loss_sum) / interval
                if not math.isfinite(mean_loss):
                    raise NonFiniteLossError(
                        f"the autoencoder loss became {mean_loss} at step {step}; lower --lr "
                        "(the last good checkpoint was kept; rerun with --resume after fixing)"
                    )
                train_time = base + time.perf_counter() - start
                rate = interval * config.batch / max(train_time - last_log_time, 1e-9)
                last_log_time = train_time
                history.append((step, mean_loss, train_time))
                bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{rate:.0f}")
                remaining = (total_steps - step) * config.batch / rate
                write_progress("training", step=step, loss=mean_loss, images_per_s=rate, eta_s=remaining)
                loss_sum.zero_()
                interval = 0
            # Checked every step, so --checkpoint-every K means every K steps. (No checkpoint
            # is written on an interrupt: it can land mid-step, and such a checkpoint would
            # not resume to the same weights.)
            train_time = base + time.perf_counter() - start
            if (config.checkpoint_every is not None and step - last_checkpoint_step >= config.checkpoint_every) or (
                train_time - last_checkpoint_time >= config.checkpoint_every_s
            ):
                synchronize(device)
                checkpoint()
                last_checkpoint_step, last_checkpoint_time = step, train_time
            bar.update(1)
    except KeyboardInterrupt:
        write_progress("interrupted", step=step, error="stopped by the user (interrupt or terminate)")
        raise
    except Exception as exc:
        write_progress("failed", step=step, error=str(exc) if isinstance(exc, SampleSiftError) else repr(exc))
        raise
    finally:
        bar.close()
    write_progress("embedding", step=step)
    model.eval()
    embed_start = time.perf_counter()
    vectors = embed_images(model, dataset.train_images, device=device)
    embed_time = time.perf_counter() - embed_start
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    manifest = {
        "kind": "autoencoder",
        "name": name,
        "dataset": dataset.describe(),
        "model": model.config,
        "embedding_dim": int(vectors.shape[1]),
        "train": asdict(config),
        "steps": step,
        "epochs": config.epochs,
        "final_loss": history[-1][1] if history else None,
        "wall_time_s": train_time,
        "images_per_s": step * config.batch / train_time if train_time > 0 else None,
        "embed_time_s": embed_time,
        "device": device.type,
        "device_name": describe(device),
        "precision": str(dtype).replace("torch.", ""),
        "weights_fingerprint": _state_fingerprint(state),
        "embedding_fingerprint": fingerprint_arrays(vectors),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": versions(),
    }
    with atomic_directory(final_dir) as tmp:
        save_file(state, str(tmp / "model.safetensors"))
        atomic_save_npy(tmp / "embeddings.npy", vectors)
        (tmp / "metrics.jsonl").write_text(
            "".join(json.dumps({"step": s, "loss": loss, "wall_time_s": t}) + "\n" for s, loss, t in history)
        )
        atomic_write_json(tmp / "manifest.json", manifest)
    shutil.rmtree(partial, ignore_errors=True)
    return Embedding(final_dir, manifest, vectors)


def load_embedding(
    dataset: ImageDataset, *, workspace: Workspace | str | Path | None = None, name: str = "default"
) -> Embedding:
    """The saved autoencoder ``name`` of ``dataset`` and its embedding, verified.

    Raises:
        SampleSiftError: none was trained for this data set version, or its files do not
            match their recorded fingerprints (recompute with ``samplesift embed``).
    """
    folder = as_workspace(workspace).autoencoder_dir(dataset.key, name)
    hint = f"run `samplesift embed --data {dataset.spec}" + (
        f" --max-per-class {dataset.max_per_class}`" if dataset.max_per_class else "`"
    )
    if not (folder / "manifest.json").exists():
        raise SampleSiftError(f"no autoencoder {name!r} has been trained for data set {dataset.key}; {hint}")
    manifest = read_json(folder / "manifest.json", "autoencoder manifest")
    require(
        isinstance(manifest, dict)
        and isinstance(manifest.get("dataset"), dict)
        and all(k in manifest for k in ("name", "model", "embedding_fingerprint", "weights_fingerprint")),
        f"the autoencoder manifest in {folder} is incomplete (edited or damaged); {hint} again",
    )
    require(
        manifest["dataset"].get("fingerprint") == dataset.fingerprint,
        f"autoencoder {name!r} in {folder} was trained on other data; {hint} again",
    )
    try:
        vectors = np.load(folder / "embeddings.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SampleSiftError(f"the embeddings in {folder} cannot be read ({exc}); {hint} again") from None
    require(
        fingerprint_arrays(vectors) == manifest["embedding_fingerprint"],
        f"the embeddings in {folder} do not match their recorded fingerprint; {hint} again",
    )
    require(
        vectors.shape[0] == dataset.num_train,
        f"the embeddings in {folder} have {vectors.shape[0]} rows for {dataset.num_train} samples; {hint} again",
    )
    return Embedding(folder, manifest, vectors)


def list_autoencoders(dataset: ImageDataset, *, workspace: Workspace | str | Path | None = None) -> list[str]:
    """Names of the autoencoders trained for ``dataset``."""
    folder = as_workspace(workspace).dataset_dir(dataset.key) / "autoencoders"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "manifest.json").exists())
