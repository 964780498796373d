"""Where SampleSift keeps what it computes.

A workspace is one folder (``--workspace DIR``, else ``$SAMPLESIFT_WORKSPACE``, else
``./workspace``)::

    workspace/
      cache/datasets/<source-key>/      decoded uint8 arrays of a data source
      datasets/<dataset-key>/           everything derived from one data set version
        embeddings/<name>/              an embedding: vectors, manifest, quality, weights if trained
        selections/<name>.json          selection manifests
        projections/<method>-<key>.npy  2-d maps (UMAP, PCA) of an embedding, with a .json record
      runs/<run-id>/                    training runs of classifiers and encoders (config, metrics, summary,
                                        checkpoint)
      jobs/<job-id>.json                background processes started by the app (pid, command, log)
      downloads/                        torchvision downloads, when the user asks for them

A data set's key is its name plus the first characters of its content fingerprint, so a
changed source gets a fresh folder and stale artifacts are never picked up by accident.

Every path handed out is resolved and confined to the workspace root: a name with ``..``
or a symbolic link planted inside the workspace (``runs -> /somewhere/else``) is refused
rather than followed out of it.
"""

from __future__ import annotations

import os
from pathlib import Path

from toolkit.artifacts import confined_path, safe_name
from toolkit.errors import require

DEFAULT_WORKSPACE = "workspace"


class Workspace:
    """Paths inside a workspace folder; creates nothing until something is written."""

    def __init__(self, root: str | Path | None = None) -> None:
        chosen = root or os.environ.get("SAMPLESIFT_WORKSPACE") or DEFAULT_WORKSPACE
        self.root = Path(chosen).expanduser().resolve()
        require(
            not self.root.exists() or self.root.is_dir(),
            f"workspace {self.root} is a file, not a folder; give --workspace a folder (it is created if missing)",
        )

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    @property
    def cache_dir(self) -> Path:
        return confined_path(self.root, "cache", "datasets")

    @property
    def downloads_dir(self) -> Path:
        return confined_path(self.root, "downloads")

    @property
    def runs_dir(self) -> Path:
        return confined_path(self.root, "runs")

    def dataset_dir(self, dataset_key: str) -> Path:
        return confined_path(self.root, "datasets", safe_name(dataset_key, "data set key"))

    def embeddings_dir(self, dataset_key: str) -> Path:
        return confined_path(self.dataset_dir(dataset_key), "embeddings")

    def embedding_dir(self, dataset_key: str, name: str) -> Path:
        return confined_path(self.embeddings_dir(dataset_key), safe_name(name, "embedding name"))

    def selections_dir(self, dataset_key: str) -> Path:
        return confined_path(self.dataset_dir(dataset_key), "selections")

    def selection_path(self, dataset_key: str, name: str) -> Path:
        return confined_path(self.selections_dir(dataset_key), f"{safe_name(name, 'selection name')}.json")

    def projections_dir(self, dataset_key: str) -> Path:
        return confined_path(self.dataset_dir(dataset_key), "projections")

    @property
    def jobs_dir(self) -> Path:
        return confined_path(self.root, "jobs")

    def run_dir(self, run_id: str) -> Path:
        return confined_path(self.runs_dir, safe_name(run_id, "run id"))


def as_workspace(workspace: Workspace | str | Path | None) -> Workspace:
    """Accept a :class:`Workspace`, a path or ``None`` (the default workspace)."""
    return workspace if isinstance(workspace, Workspace) else Workspace(workspace)
