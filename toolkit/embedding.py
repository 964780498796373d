"""Embeddings as named artifacts: one folder per embedding of a data set, whatever made it.

Every encoder (:mod:`toolkit.encoders`) ends by writing the same kind of folder::

    <workspace>/datasets/<key>/embeddings/<name>/
        embeddings.npy        N x d float32, one row per training sample
        test_embeddings.npy   the test images' rows (absent when the source had none)
        sample_scores.npz     per-sample scores (the proxy's training dynamics), if any
        model.safetensors     the trained weights (trainable encoders; no pickle)
        training_log.jsonl    the training loss log (trainable encoders)
        manifest.json         encoder, config, seed, data set and file fingerprints,
                              quality figures, training time, versions, the run that made it

The folder is built under a temporary name and renamed when complete, so a reader sees a
whole embedding or none. Selections record the name and fingerprint of the embedding they
were made on (:meth:`Embedding.describe`); a selection whose embedding has since been
remade is refused.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.artifacts import (
    atomic_directory,
    atomic_save_npy,
    atomic_write_json,
    fingerprint_arrays,
    fingerprint_bytes,
    read_json,
    versions,
)
from toolkit.data import ImageDataset
from toolkit.errors import SampleSiftError, require
from toolkit.quality import embedding_quality
from toolkit.workspace import Workspace, as_workspace

MANIFEST_FORMAT = "samplesift.embedding/1"

#: Columns of :func:`embedding_table`, in order.
EMBEDDING_COLUMNS = [
    "name",
    "encoder",
    "dim",
    "knn_accuracy",
    "linear_probe_accuracy",
    "train_time_s",
    "embed_time_s",
    "steps",
    "images_per_s",
    "load_average",
    "seed",
    "created",
]


@dataclass
class Embedding:
    """A saved embedding of a data set's training samples (and, usually, its test samples)."""

    path: Path
    manifest: dict[str, Any]
    vectors: np.ndarray

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def encoder(self) -> str:
        return str(self.manifest["encoder"])

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["embedding_fingerprint"])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def quality(self) -> dict[str, Any]:
        return dict(self.manifest.get("quality") or {})

    def describe(self) -> dict[str, Any]:
        """What selections record about the embedding they used."""
        return {
            "name": self.name,
            "encoder": self.encoder,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "weights_fingerprint": self.manifest.get("weights_fingerprint"),
            "path": str(self.path),
        }

    def test_vectors(self) -> np.ndarray | None:
        """The test images' embeddings, or ``None`` when the embedding has none."""
        path = self.path / "test_embeddings.npy"
        if not path.exists():
            return None
        vectors = _read_npy(path, self.manifest["test_fingerprint"], self.hint)
        return vectors

    def sample_scores(self) -> dict[str, np.ndarray]:
        """Named per-sample scores (e.g. the proxy's ``el2n`` and ``forgetting``); empty if none."""
        path = self.path / "sample_scores.npz"
        if not path.exists():
            return {}
        try:
            with np.load(path, allow_pickle=False) as archive:
                scores = {k: archive[k] for k in archive.files}
        except (OSError, ValueError) as exc:
            raise SampleSiftError(f"the sample scores in {path} cannot be read ({exc}); {self.hint}") from None
        require(
            fingerprint_arrays(*(scores[k] for k in sorted(scores))) == self.manifest.get("scores_fingerprint"),
            f"the sample scores in {path} do not match their recorded fingerprint; {self.hint}",
        )
        return scores

    def load_state(self) -> dict[str, Any]:
        """The trained weights (safetensors), verified against the manifest's fingerprint."""
        from safetensors.torch import load_file

        path = self.path / "model.safetensors"
        require(path.exists(), f"embedding {self.name!r} was made by {self.encoder}, which has no trained weights")
        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises its own SafetensorError, OSError, ...
            raise SampleSiftError(f"the weights {path} cannot be read ({type(exc).__name__}); {self.hint}") from None
        require(
            state_fingerprint(state) == self.manifest.get("weights_fingerprint"),
            f"the weights {path} are not the ones embedding {self.name!r} was made with; {self.hint}",
        )
        return state

    @property
    def hint(self) -> str:
        return f"remake it with `samplesift embed --encoder {self.manifest.get('encoder')} --name {self.name}`"


def state_fingerprint(state: Mapping[str, Any]) -> str:
    """Fingerprint of a model's weights (a state dict of tensors)."""
    return fingerprint_bytes(*(f"{k}:{fingerprint_arrays(v.cpu().numpy())}" for k, v in sorted(state.items())))


def _read_npy(path: Path, fingerprint: str | None, hint: str) -> np.ndarray:
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SampleSiftError(f"the embeddings in {path} cannot be read ({exc}); {hint}") from None
    require(
        fingerprint_arrays(vectors) == fingerprint,
        f"the embeddings in {path} do not match their recorded fingerprint; {hint}",
    )
    return vectors


def check_vectors(vectors: np.ndarray, rows: int, what: str) -> np.ndarray:
    """A finite float32 ``rows`` x d matrix, or a clear refusal naming ``what`` is wrong."""
    array = np.asarray(vectors)
    require(np.issubdtype(array.dtype, np.number), f"{what} must be numeric, got dtype {array.dtype}")
    require(array.ndim == 2, f"{what} must be a 2-d rows x dimensions array, got shape {array.shape}")
    require(array.shape[1] >= 1, f"{what} have no dimensions (shape {array.shape})")
    require(array.shape[0] == rows, f"{what} have {array.shape[0]} rows, but the data set has {rows} samples to match")
    array = array.astype(np.float32, copy=False)
    bad = ~np.isfinite(array)
    if bad.any():
        rows_bad = np.flatnonzero(bad.any(axis=1))
        raise SampleSiftError(
            f"{what} hold NaN or infinite values in {len(rows_bad)} row(s) (first: row {rows_bad[0]}); "
            "fix or drop them before importing"
        )
    return np.ascontiguousarray(array)


def save_embedding(
    dataset: ImageDataset,
    *,
    workspace: Workspace | str | Path | None,
    name: str,
    encoder: str,
    config: dict[str, Any],
    seed: int | None,
    vectors: np.ndarray,
    test_vectors: np.ndarray | None,
    sample_scores: Mapping[str, np.ndarray] | None = None,
    state: Mapping[str, Any] | None = None,
    training_log: list[dict[str, Any]] | None = None,
    facts: dict[str, Any] | None = None,
) -> Embedding:
    """Measure the embedding's quality and write its folder atomically.

    Args:
        dataset: the data set the rows belong to.
        workspace: where the folder goes.
        name: the embedding's name within the data set (an existing one is replaced).
        encoder: the registry name of the encoder that made it.
        config: the encoder's settings.
        seed: the seed it was made with (``None`` when nothing was random).
        vectors: training rows, N x d.
        test_vectors: test rows, or ``None``.
        sample_scores: named per-sample scores (length N each).
        state: trained weights (tensors), saved as safetensors.
        training_log: the loss log of the training run.
        facts: more manifest fields (training time, run id, model config, ...).
    """
    ws = as_workspace(workspace)
    vectors = check_vectors(vectors, dataset.num_train, f"the {encoder} embeddings")
    if test_vectors is not None:
        test_vectors = check_vectors(test_vectors, dataset.num_test, f"the {encoder} test embeddings")
        require(
            test_vectors.shape[1] == vectors.shape[1],
            f"the {encoder} test embeddings have {test_vectors.shape[1]} dimensions, the training ones "
            f"{vectors.shape[1]}",
        )
    scores = {k: np.asarray(v, dtype=np.float32) for k, v in (sample_scores or {}).items()}
    for key, column in scores.items():
        require(
            column.shape == (dataset.num_train,) and bool(np.isfinite(column).all()),
            f"sample score {key!r} must hold one finite value per training sample",
        )
    quality = embedding_quality(
        vectors, dataset.train_labels, test_vectors, dataset.test_labels if test_vectors is not None else None
    )
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "encoder": encoder,
        "config": config,
        "seed": seed,
        "dataset": dataset.describe(),
        "embedding_dim": int(vectors.shape[1]),
        "embedding_fingerprint": fingerprint_arrays(vectors),
        "test_fingerprint": None if test_vectors is None else fingerprint_arrays(test_vectors),
        "scores": sorted(scores),
        "scores_fingerprint": fingerprint_arrays(*(scores[k] for k in sorted(scores))) if scores else None,
        "quality": quality,
        **(facts or {}),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
        "versions": versions(),
    }
    final = ws.embedding_dir(dataset.key, name)
    with atomic_directory(final) as tmp:
        atomic_save_npy(tmp / "embeddings.npy", vectors)
        if test_vectors is not None:
            atomic_save_npy(tmp / "test_embeddings.npy", test_vectors)
        if scores:
            np.savez(tmp / "sample_scores.npz", **scores)
        if state is not None:
            from safetensors.torch import save_file

            tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
            save_file(tensors, str(tmp / "model.safetensors"))
            manifest["weights_fingerprint"] = state_fingerprint(tensors)
        if training_log:
            (tmp / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in training_log))
        atomic_write_json(tmp / "manifest.json", manifest)
    return Embedding(final, manifest, vectors)


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = read_json(folder / "manifest.json", "embedding manifest")
    except SampleSiftError:
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return None
    return manifest


def list_embeddings(dataset: ImageDataset, *, workspace: Workspace | str | Path | None = None) -> list[dict[str, Any]]:
    """Manifests of the data set's embeddings, oldest first (unreadable folders are left out)."""
    folder = as_workspace(workspace).embeddings_dir(dataset.key)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if path.is_dir() and not path.name.startswith("."):
            manifest = _read_manifest(path)
            if manifest is not None and (manifest.get("dataset") or {}).get("fingerprint") == dataset.fingerprint:
                found.append(manifest)
    return sorted(found, key=lambda m: (str(m.get("created")), str(m.get("name"))))


def embedding_table(dataset: ImageDataset, *, workspace: Workspace | str | Path | None = None) -> pd.DataFrame:
    """One row per embedding of the data set with its quality figures (:data:`EMBEDDING_COLUMNS`)."""
    rows = [
        {
            "name": m["name"],
            "encoder": m["encoder"],
            "dim": m.get("embedding_dim"),
            "knn_accuracy": (m.get("quality") or {}).get("knn_accuracy"),
            "linear_probe_accuracy": (m.get("quality") or {}).get("linear_probe_accuracy"),
            "train_time_s": m.get("train_time_s"),
            "embed_time_s": m.get("embed_time_s"),
            "steps": m.get("steps"),
            "images_per_s": m.get("images_per_s"),
            # The 1-minute load average when training ended (trainable encoders; a shared CPU trains slower).
            "load_average": (m.get("load_average") or [None])[0],
            "seed": m.get("seed"),
            "created": m.get("created"),
        }
        for m in list_embeddings(dataset, workspace=workspace)
    ]
    return pd.DataFrame(rows, columns=EMBEDDING_COLUMNS)


def load_embedding_manifest(
    dataset: ImageDataset, *, workspace: Workspace | str | Path | None = None, name: str | None = None
) -> tuple[Path, dict[str, Any]]:
    """The folder and manifest of embedding ``name`` of ``dataset`` (default: the newest), without its vectors.

    What planning needs (name, encoder, fingerprints): the manifest is checked to be whole and
    made on this data; the vectors are read and verified only by :func:`load_embedding`.

    Raises:
        SampleSiftError: there is none, it was made on other data, or its manifest is damaged.
    """
    ws = as_workspace(workspace)
    make = f"`samplesift embed {' '.join(dataset.cli_arguments())}`"
    if name is None:
        known = list_embeddings(dataset, workspace=ws)
        if not known:
            raise SampleSiftError(f"data set {dataset.key} has no embedding yet; make one with {make}")
        name = str(known[-1]["name"])
    folder = ws.embedding_dir(dataset.key, name)
    if not (folder / "manifest.json").exists():
        known_names = [m["name"] for m in list_embeddings(dataset, workspace=ws)]
        raise SampleSiftError(
            f"data set {dataset.key} has no embedding named {name!r}; "
            + (f"it has: {', '.join(known_names)}" if known_names else f"make one with {make}")
        )
    manifest = _read_manifest(folder)
    require(
        manifest is not None
        and isinstance(manifest.get("dataset"), dict)
        and all(k in manifest for k in ("name", "encoder", "embedding_fingerprint")),
        f"the embedding manifest in {folder} is damaged or edited; remake the embedding with {make}",
    )
    assert manifest is not None
    require(
        manifest["dataset"].get("fingerprint") == dataset.fingerprint,
        f"embedding {name!r} in {folder} was made on other data; remake it with {make}",
    )
    return folder, manifest


def load_embedding(
    dataset: ImageDataset, *, workspace: Workspace | str | Path | None = None, name: str | None = None
) -> Embedding:
    """The embedding ``name`` of ``dataset`` (default: the newest), verified.

    Raises:
        SampleSiftError: there is none, it was made on other data, or its files do not match
            their recorded fingerprints.
    """
    folder, manifest = load_embedding_manifest(dataset, workspace=workspace, name=name)
    embedding = Embedding(folder, manifest, np.zeros((0, 0), np.float32))
    vectors = _read_npy(folder / "embeddings.npy", manifest["embedding_fingerprint"], embedding.hint)
    require(
        vectors.ndim == 2 and vectors.shape[0] == dataset.num_train,
        f"the embeddings in {folder} have {vectors.shape[0]} rows for {dataset.num_train} samples; {embedding.hint}",
    )
    embedding.vectors = vectors
    return embedding


def current_fingerprint(
    dataset: ImageDataset, name: str, workspace: Workspace | str | Path | None = None
) -> str | None:
    """The recorded fingerprint of embedding ``name`` now (``None`` when it no longer exists)."""
    manifest = _read_manifest(as_workspace(workspace).embedding_dir(dataset.key, name))
    return None if manifest is None else manifest.get("embedding_fingerprint")


def latest_of(dataset: ImageDataset, encoder: str, *, workspace: Workspace | str | Path | None = None) -> str:
    """The name of the newest embedding ``encoder`` made of ``dataset`` (refused when there is none)."""
    names = [m["name"] for m in list_embeddings(dataset, workspace=workspace) if m.get("encoder") == encoder]
    require(
        bool(names),
        f"data set {dataset.key} has no {encoder} embedding; make one with `samplesift embed --encoder {encoder}`",
    )
    return str(names[-1])
