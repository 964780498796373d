"""Encoders by name: ``get_encoder("contrastive").embed(dataset)`` makes a named embedding.

The registry names are stable: the CLI (``samplesift embed --encoder NAME``), the app and
sweeps refer to encoders by them.

* ``autoencoder``: the paper's hourglass autoencoder (:mod:`.autoencoder`);
* ``contrastive``: SimCLR on a small conv trunk, trained on the data set (:mod:`.contrastive`);
* ``pixels-pca``: PCA of the centre-crop pixels, no learning (:mod:`.pixels`);
* ``proxy``: the classifier trained briefly, with per-sample training dynamics (:mod:`.proxy`);
* ``file``: your own N x d array from a file (:mod:`.file`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.data import load_recorded
from toolkit.embedding import Embedding
from toolkit.encoders.autoencoder import AutoencoderEncoder
from toolkit.encoders.base import Encoder, EncoderOutput, Inference, Options, TrainingOptions
from toolkit.encoders.contrastive import ContrastiveEncoder
from toolkit.encoders.file import FileEncoder
from toolkit.encoders.pixels import PixelsPCAEncoder
from toolkit.encoders.proxy import ProxyEncoder
from toolkit.errors import SampleSiftError, require
from toolkit.runs import RunStore
from toolkit.workspace import Workspace, as_workspace

ENCODERS: dict[str, type[Encoder]] = {
    cls.name: cls for cls in (AutoencoderEncoder, ContrastiveEncoder, PixelsPCAEncoder, ProxyEncoder, FileEncoder)
}


def available() -> list[str]:
    """Registered encoder names."""
    return list(ENCODERS)


def get_encoder(name: str, **options: Any) -> Encoder:
    """An encoder instance by registry name, with its options checked."""
    try:
        cls = ENCODERS[name]
    except KeyError:
        raise SampleSiftError(f"unknown encoder {name!r}; choose one of: {', '.join(ENCODERS)}") from None
    return cls(**options)


def resume_embedding(
    run: str | Path,
    *,
    workspace: Workspace | str | Path | None = None,
    progress: bool = True,
    inference: Inference | None = None,
) -> Embedding:
    """Start a queued embedding run, or continue an interrupted one from its last checkpoint.

    The data set is reloaded from the recorded spec and must have the recorded fingerprint;
    the encoder is rebuilt from the recorded options. The run's lock is held throughout.
    ``inference`` says where the images are embedded (default: here).
    """
    ws = as_workspace(workspace)
    run_obj = RunStore(ws).get(run)
    config = run_obj.config
    require(config.get("kind") == "embed", f"run {run_obj.id} is not an embedding run; resume it with samplesift train")
    status = run_obj.status()
    require(status.get("state") != "finished", f"run {run_obj.id} has already finished; make a new embedding instead")
    require(
        status.get("state") != "running",
        f"run {run_obj.id} is still running (pid {status.get('pid')}); wait for it or stop it first",
    )
    with run_obj.lock():
        require(run_obj.summary() is None, f"run {run_obj.id} has already finished; make a new embedding instead")
        broken = f"run {run_obj.id}'s config.json was edited or damaged"
        try:
            data, options = config["dataset"], dict(config["options"])
            encoder = get_encoder(str(config["encoder"]), **options)
        except (KeyError, TypeError) as exc:
            raise SampleSiftError(f"{broken} (missing or bad {exc}); make a new embedding") from None
        dataset = load_recorded(data, workspace=ws, owner=f"run {run_obj.id}")
        checkpoint = run_obj.load_checkpoint() if run_obj.checkpoint_path.exists() else None
        return encoder._execute(run_obj, dataset, ws, progress, checkpoint, inference or Inference())


__all__ = [
    "ENCODERS",
    "Encoder",
    "EncoderOutput",
    "Inference",
    "Options",
    "TrainingOptions",
    "available",
    "get_encoder",
    "resume_embedding",
]
