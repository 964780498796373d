"""Selections as artifacts: run a selector on a data set's embedding and save a manifest.

A selection manifest (JSON) records everything needed to trust and reproduce it: the
method, its parameters and seed, the budget, the data set's and the embedding's
fingerprints, library versions, the selected indices with their scores and (for
per-dimension rules) the dimension that picked each, the class counts, and coverage
diagnostics (:mod:`toolkit.diagnostics`). :func:`compare_selections` (saved selections) and
:func:`compare_diagnostics` (any) put several selections' diagnostics side by side. Manifests live
in ``<workspace>/datasets/<key>/selections/<name>.json`` and are addressed by name or path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.artifacts import atomic_write_json, fingerprint_arrays, read_json, safe_name, versions
from toolkit.data import ImageDataset
from toolkit.diagnostics import SelectionDiagnostics, class_entropy, jaccard_matrix
from toolkit.embedding import Embedding, current_fingerprint, list_embeddings, load_embedding
from toolkit.errors import SampleSiftError, require
from toolkit.selectors import SelectionResult, get_selector
from toolkit.workspace import Workspace, as_workspace

MANIFEST_FORMAT = "samplesift.selection/1"


def resolve_budget(n: int, size: int | None = None, fraction: float | None = None) -> int:
    """The number of samples to select from ``size`` or ``fraction`` (exactly one given)."""
    require((size is None) != (fraction is None), "give exactly one of --size or --fraction")
    if fraction is not None:
        require(
            0.0 < float(fraction) <= 1.0,
            f"--fraction must be in (0, 1], got {fraction}",
        )
        size = max(1, round(float(fraction) * n))
    assert size is not None
    require(
        isinstance(size, (int, np.integer)) and not isinstance(size, bool) and 1 <= size <= n,
        f"--size must be between 1 and {n} (the training samples), got {size}",
    )
    return int(size)


@dataclass
class Selection:
    """A saved (or ready to save) selection manifest.

    ``result`` is the selector's full output (scores of all N samples) when the selection was
    just made; it is not stored in the manifest (which keeps the selected samples' scores).
    """

    manifest: dict[str, Any]
    path: Path | None = None
    result: SelectionResult | None = None

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def method(self) -> str:
        return str(self.manifest["method"])

    @property
    def indices(self) -> np.ndarray:
        return np.asarray(self.manifest["indices"], dtype=np.int64)

    @property
    def scores(self) -> np.ndarray:
        """The rule's score of each selected sample, aligned with :attr:`indices`."""
        return np.asarray(self.manifest["scores"], dtype=np.float64)

    @property
    def picked_by(self) -> np.ndarray:
        return np.asarray(self.manifest["picked_by"], dtype=np.int64)

    @property
    def size(self) -> int:
        return int(self.manifest["size"])

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def dataset_fingerprint(self) -> str:
        return str(self.manifest["dataset"]["fingerprint"])

    def describe(self) -> dict[str, Any]:
        """What a training run records about the selection it used."""
        m = self.manifest
        return {
            "name": self.name,
            "path": None if self.path is None else str(self.path),
            "method": self.method,
            "size": self.size,
            "balanced": m.get("balanced", False),
            "seed": m.get("seed"),
            "params": m.get("params", {}),
            "fingerprint": self.fingerprint,
            "dataset_fingerprint": self.dataset_fingerprint,
            "embedding": (m.get("embedding") or {}).get("name"),
            "embedding_fingerprint": (m.get("embedding") or {}).get("fingerprint"),
        }

    def _remake_hint(self, dataset: ImageDataset) -> str:
        return (
            f"`samplesift select {' '.join(dataset.cli_arguments())}"
            + (f" --embedding {self.manifest['embedding']['name']}" if self.manifest.get("embedding") else "")
            + f" --method {self.method} --size {self.size}"
            + (" --balanced" if self.manifest.get("balanced") and self.method != "random-balanced" else "")
            + f" --seed {self.manifest.get('seed', 0)} --name {self.name}`"
        )

    def check_dataset(self, dataset: ImageDataset) -> None:
        """Refuse to use this selection with a data set it was not made on."""
        recorded = self.manifest["dataset"]
        if recorded["fingerprint"] != dataset.fingerprint:
            raise SampleSiftError(
                f"selection {self.name!r} was made on data set {recorded.get('key')} "
                f"({recorded.get('spec')}), not on {dataset.key} ({dataset.spec}); "
                f"make a new one with {self._remake_hint(dataset)}"
            )
        # The fingerprint ties the indices to the manifest, not to the data set: a manifest
        # rewritten by hand (indices and fingerprint together) must still index real samples.
        indices = self.indices
        require(
            indices.ndim == 1
            and len(indices) == self.size
            and len(np.unique(indices)) == len(indices)
            and (len(indices) == 0 or (indices.min() >= 0 and indices.max() < dataset.num_train)),
            f"selection {self.name!r} does not hold {self.size} distinct sample indices in [0, {dataset.num_train}); "
            f"remake it with {self._remake_hint(dataset)}",
        )

    def check_embedding_current(self, dataset: ImageDataset, workspace: Workspace | str | Path | None = None) -> None:
        """Refuse a selection whose embedding has been remade since it was made.

        The selection records the name and fingerprint of the embedding it was computed
        from. When the embedding of that name in the workspace now has another fingerprint,
        the selection is stale. (When that embedding is gone, the indices still stand on
        their own and the selection is accepted.)
        """
        embedding = self.manifest.get("embedding")
        if not embedding:
            return
        current = current_fingerprint(dataset, str(embedding["name"]), as_workspace(workspace))
        if current is not None and current != embedding["fingerprint"]:
            raise SampleSiftError(
                f"selection {self.name!r} was made on an earlier version of embedding {embedding['name']!r} "
                f"(fingerprint {str(embedding['fingerprint'])[:10]}), which has since been remade "
                f"(now {str(current)[:10]}); remake the selection with {self._remake_hint(dataset)}"
            )

    def save(self, path: str | Path) -> Path:
        self.path = atomic_write_json(path, self.manifest)
        return self.path

    def save_in(self, workspace: Workspace | str | Path | None = None, name: str | None = None) -> Path:
        """Save among its data set's selections in ``workspace``, optionally under a new name."""
        if name is not None and name != self.name:
            self.manifest = {**self.manifest, "name": safe_name(name, "selection name")}
        ws = as_workspace(workspace)
        return self.save(ws.selection_path(str(self.manifest["dataset"]["key"]), self.name))

    @classmethod
    def from_file(cls, path: str | Path) -> Selection:
        selection = cls.from_manifest(read_json(path, "selection manifest"), where=str(path))
        selection.path = Path(path).resolve()
        return selection

    @classmethod
    def from_manifest(cls, manifest: Any, where: str = "the manifest") -> Selection:
        """Check a manifest read from ``where`` (a file, or a field of an export) and wrap it."""
        require(
            isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT,
            f"{where} is not a SampleSift selection manifest (format {MANIFEST_FORMAT})",
        )
        missing = [k for k in ("name", "method", "indices", "size", "dataset", "fingerprint") if k not in manifest]
        require(not missing, f"selection manifest {where} lacks {', '.join(missing)}; recreate it")
        selection = cls(manifest)
        require(
            fingerprint_arrays(selection.indices) == selection.fingerprint,
            f"selection manifest {where} was edited: its indices do not match its fingerprint; recreate it",
        )
        return selection


def default_name(method: str, size: int, seed: int, balanced: bool) -> str:
    suffix = "-balanced" if balanced and method != "random-balanced" else ""
    return f"{method}{suffix}-k{size}-seed{seed}"


def build_manifest(
    result: SelectionResult,
    dataset: ImageDataset,
    *,
    name: str,
    embedding: dict[str, Any] | None,
    score_meaning: str,
    source: str,
    diagnostics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a selector result on ``dataset`` (with its coverage diagnostics, if given)."""
    indices = result.indices
    counts = np.bincount(dataset.train_labels[indices], minlength=dataset.num_classes)
    return {
        "format": MANIFEST_FORMAT,
        "name": name,
        "method": result.method,
        "params": result.params,
        "seed": result.seed,
        "balanced": result.balanced,
        "size": result.size,
        "fraction": result.size / dataset.num_train,
        "dataset": dataset.describe(),
        "embedding": embedding,
        "score_meaning": score_meaning,
        "source": source,
        "class_counts": {n: int(c) for n, c in zip(dataset.class_names, counts, strict=True)},
        "info": result.info,
        "diagnostics": diagnostics,
        "fingerprint": fingerprint_arrays(indices),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "indices": indices.tolist(),
        "scores": result.scores[indices].tolist(),
        "picked_by": result.picked_by.tolist(),
    }


def make_selection(
    dataset: ImageDataset,
    method: str,
    *,
    size: int | None = None,
    fraction: float | None = None,
    balanced: bool = False,
    seed: int = 0,
    name: str | None = None,
    params: dict[str, Any] | None = None,
    workspace: Workspace | str | Path | None = None,
    embedding: str | None = None,
    save: bool = True,
    diagnostics: bool = True,
) -> Selection:
    """Run a selector on the data set's embedding and (by default) save the manifest.

    Args:
        dataset: the data set to select training samples from.
        method: a registry name (see :func:`toolkit.selectors.available`).
        size, fraction: the budget, as a count or a share of the training set.
        balanced: per-class quotas proportional to class frequency.
        seed: seeds the selector.
        name: manifest name (default ``<method>-k<size>-seed<seed>``).
        params: selector parameters.
        workspace: where the embedding is read and the manifest written.
        embedding: the name of the embedding to select on (default: the newest).
        save: write the manifest into the workspace.
        diagnostics: record coverage diagnostics (:mod:`toolkit.diagnostics`) in the
            manifest, measured on the embedding when there is one (also for rules that do
            not use it, such as random); without one, only the class histogram and entropy.
    """
    ws = as_workspace(workspace)
    selector = get_selector(method, **(params or {}))
    k = resolve_budget(dataset.num_train, size, fraction)
    name = safe_name(name or default_name(method, k, seed, balanced), "selection name")
    used: Embedding | None = None  # the embedding the rule selects on
    if selector.needs_embeddings or selector.needs_sample_scores:
        used = loaded = load_embedding(dataset, workspace=ws, name=embedding)
    else:
        loaded = _optional_embedding(dataset, ws, embedding) if diagnostics else None
    vectors = (
        used.vectors
        if used is not None and selector.needs_embeddings
        else np.zeros((dataset.num_train, 0), dtype=np.float32)
    )
    scores = used.sample_scores() if used is not None and selector.needs_sample_scores else None
    result = selector.select(
        vectors, k, labels=dataset.train_labels, seed=seed, balanced=balanced, sample_scores=scores
    )
    manifest = build_manifest(
        result,
        dataset,
        name=name,
        embedding=used.describe() if used is not None else None,
        score_meaning=selector.score_meaning,
        source=selector.source,
        diagnostics=selection_diagnostics(dataset, result.indices, loaded) if diagnostics else None,
    )
    selection = Selection(manifest, result=result)
    if save:
        selection.save(ws.selection_path(dataset.key, name))
    return selection


def _optional_embedding(dataset: ImageDataset, ws: Workspace, name: str | None) -> Embedding | None:
    """The embedding ``name`` (default: the newest) when there is one and it verifies, else None."""
    if name is None and not list_embeddings(dataset, workspace=ws):
        return None
    try:
        return load_embedding(dataset, workspace=ws, name=name)
    except SampleSiftError:
        return None


def selection_diagnostics(dataset: ImageDataset, indices: np.ndarray, embedding: Embedding | None) -> dict[str, Any]:
    """Coverage diagnostics of a selection on ``embedding`` (class statistics only without one)."""
    if embedding is None:
        counts = np.bincount(dataset.train_labels[indices], minlength=dataset.num_classes)
        return {"size": len(indices), "class_counts": counts.tolist(), "class_entropy": class_entropy(counts)}
    report = SelectionDiagnostics(embedding.vectors, dataset.train_labels, num_classes=dataset.num_classes).evaluate(
        indices
    )
    return {**report, "embedding_fingerprint": embedding.fingerprint}


@dataclass
class Comparison:
    """Diagnostics of several selections side by side (``samplesift compare``).

    Attributes:
        table: one row per selection: method, then the scalar diagnostics.
        overlap: pairwise Jaccard overlaps of the selections' indices.
        embedding: the embedding the diagnostics were measured on (``Embedding.describe()``).
    """

    table: pd.DataFrame
    overlap: pd.DataFrame
    embedding: dict[str, Any]


def compare_selections(
    dataset: ImageDataset,
    selections: Sequence[str | Path],
    *,
    workspace: Workspace | str | Path | None = None,
    embedding: str | None = None,
) -> Comparison:
    """Load saved selections of ``dataset`` and compare their diagnostics on one embedding.

    The embedding is ``embedding``, by default the one the first embedding-based selection
    was made on (else the newest), so every row is measured the same way. Selections made
    on different embeddings can be compared: each is a set of samples, measured here on one
    common embedding.
    """
    loaded = [load_selection(s, dataset, workspace=workspace) for s in selections]
    if embedding is None:
        recorded = [(s.manifest.get("embedding") or {}).get("name") for s in loaded]
        embedding = next((a for a in recorded if a), None)
    return compare_diagnostics(dataset, loaded, load_embedding(dataset, workspace=workspace, name=embedding))


def compare_diagnostics(dataset: ImageDataset, selections: Sequence[Selection], embedding: Embedding) -> Comparison:
    """The diagnostics of selections (saved or just made) side by side, measured on ``embedding``.

    What :func:`compare_selections` reports for saved selections; the dashboard's Selectors
    page calls it on the selections it has just made, before they are saved.
    """
    require(len(selections) >= 1, "name at least one selection to compare")
    names = [s.name for s in selections]
    require(len(set(names)) == len(names), f"the selections to compare repeat a name: {', '.join(names)}")
    diagnostics = SelectionDiagnostics(embedding.vectors, dataset.train_labels, num_classes=dataset.num_classes)
    table = diagnostics.compare({s.name: s.indices for s in selections})
    table.insert(0, "method", [s.method + (" (balanced)" if s.manifest.get("balanced") else "") for s in selections])
    table.insert(1, "selected_on", [(s.manifest.get("embedding") or {}).get("name") or "-" for s in selections])
    overlap = jaccard_matrix({s.name: s.indices for s in selections})
    return Comparison(table, overlap, embedding.describe())


def selection_from_indices(
    dataset: ImageDataset,
    indices: np.ndarray | list[int],
    *,
    name: str,
    method: str = "manual",
    params: dict[str, Any] | None = None,
    embedding: dict[str, Any] | None = None,
    source: str = "picked by hand",
    workspace: Workspace | str | Path | None = None,
    save: bool = True,
) -> Selection:
    """A selection of given samples (a lasso on the embedding map, a list from elsewhere).

    The manifest has the same form as a selector's, with zero scores and no picking rule;
    ``params`` records how the samples were chosen (for a lasso: the polygon and the map).
    """
    idx = np.asarray(indices, dtype=np.int64)
    require(len(idx) > 0, "the selection is empty; pick at least one sample")
    require(len(np.unique(idx)) == len(idx), "the selection lists some samples more than once")
    require(
        idx.min() >= 0 and idx.max() < dataset.num_train,
        f"sample indices must be in [0, {dataset.num_train}), got {idx.min()}..{idx.max()}",
    )
    name = safe_name(name, "selection name")
    result = SelectionResult(
        indices=idx,
        scores=np.zeros(dataset.num_train, dtype=np.float64),
        picked_by=np.full(len(idx), -1, dtype=np.int64),
        method=method,
        params=dict(params or {}),
        seed=0,
    )
    manifest = build_manifest(
        result, dataset, name=name, embedding=embedding, score_meaning="none (samples picked by hand)", source=source
    )
    selection = Selection(manifest, result=result)
    if save:
        selection.save(as_workspace(workspace).selection_path(dataset.key, name))
    return selection


def load_selection(
    selection: str | Path,
    dataset: ImageDataset | None = None,
    *,
    workspace: Workspace | str | Path | None = None,
) -> Selection:
    """A selection by manifest path, or by name among ``dataset``'s saved selections.

    With ``dataset`` given, a selection made on other data is refused.
    """
    ws = as_workspace(workspace)
    text = str(selection)
    path = Path(text).expanduser()
    if not (path.suffix == ".json" or path.exists()):
        require(dataset is not None, f"selection {text!r} is a name; a data set is needed to find it")
        assert dataset is not None
        path = ws.selection_path(dataset.key, text)
        if not path.exists():
            known = sorted(p.stem for p in ws.selections_dir(dataset.key).glob("*.json"))
            raise SampleSiftError(
                f"no selection named {text!r} for data set {dataset.key}; "
                + (f"saved ones: {', '.join(known[:8])}" if known else "make one with `samplesift select`")
            )
    loaded = Selection.from_file(path)
    if dataset is not None:
        loaded.check_dataset(dataset)
    return loaded


def list_selections(dataset: ImageDataset, *, workspace: Workspace | str | Path | None = None) -> list[Selection]:
    """Every saved selection of a data set, oldest first."""
    folder = as_workspace(workspace).selections_dir(dataset.key)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime):
        try:
            found.append(Selection.from_file(path))
        except SampleSiftError:
            continue
    return found
