"""Shared fixtures: real data (scikit-learn digits, capped CIFAR-10) and trained artifacts.

CIFAR-10 is read from ``$SAMPLESIFT_CIFAR10`` (default ``../shared/datasets/cifar10`` beside the
repository); tests that need it skip with the reason when it is absent. Session-scoped
workspaces keep the decode cache and trained autoencoders across tests, so each is made once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from toolkit.data import ImageDataset, load_dataset
from toolkit.embed import AutoencoderConfig, Embedding, train_autoencoder

REPO = Path(__file__).resolve().parents[1]


def cifar10_root() -> Path:
    return Path(os.environ.get("SAMPLESIFT_CIFAR10", REPO.parent / "shared" / "datasets" / "cifar10"))


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    root = cifar10_root()
    if not (root / "train").is_dir():
        pytest.skip(f"real CIFAR-10 not found at {root}; set SAMPLESIFT_CIFAR10 to its image-folder copy")
    return root


@pytest.fixture(scope="session")
def session_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One workspace for the whole session: decode caches and trained models are shared."""
    return tmp_path_factory.mktemp("workspace")


@pytest.fixture(scope="session")
def digits(session_workspace: Path) -> ImageDataset:
    return load_dataset("digits", workspace=session_workspace)


@pytest.fixture(scope="session")
def digits_embedding(digits: ImageDataset, session_workspace: Path) -> Embedding:
    """A small autoencoder trained on digits (a few seconds on CPU)."""
    config = AutoencoderConfig(epochs=4, batch=128, device="cpu")
    return train_autoencoder(digits, config, workspace=session_workspace, progress=False)


@pytest.fixture(scope="session")
def cifar_small(cifar_root: Path, session_workspace: Path) -> ImageDataset:
    """Real CIFAR-10 capped at 100 images per class (1,000 train, 1,000 test)."""
    return load_dataset(str(cifar_root), workspace=session_workspace, max_per_class=100)
