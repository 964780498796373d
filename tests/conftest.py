"""Shared fixtures: real data (scikit-learn digits, capped CIFAR-10) and trained artifacts.

CIFAR-10 is read from ``$SAMPLESIFT_CIFAR10`` (default ``../shared/datasets/cifar10`` beside the
repository); tests that need it skip with the reason when it is absent. Session-scoped
workspaces keep the decode cache and trained embeddings across tests, so each is made once.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from toolkit.data import ImageDataset, load_dataset
from toolkit.embedding import Embedding
from toolkit.encoders import get_encoder

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
    encoder = get_encoder("autoencoder", epochs=4, batch=128, device="cpu")
    return encoder.embed(digits, workspace=session_workspace, progress=False)


@pytest.fixture(scope="session")
def gain_runs(digits: ImageDataset, digits_embedding: Embedding, session_workspace: Path) -> list[Path]:
    """Finished runs that answer "does it beat random?" on digits, in the session workspace.

    Two budgets (K = 50, 100) x two seeds of k-means (balanced) and random-balanced at 100/0, and
    full data, all evaluated at steps 3, 6 (half-way: the time-to-accuracy target) and 9 and at
    the end (evaluations fall on log points, hence ``log_every=1``). About 20 s on one core.
    """
    from toolkit.selection import make_selection
    from toolkit.train import TrainConfig, train

    schedule = {"steps": 12, "batch": 32, "evals": 3, "log_every": 1, "device": "cpu"}
    runs = []
    for seed in (0, 1):
        for size in (50, 100):
            for method, balanced in (("random-balanced", False), ("k-means", True)):
                selection = make_selection(
                    digits,
                    method,
                    size=size,
                    balanced=balanced,
                    seed=seed,
                    workspace=session_workspace,
                    embedding=digits_embedding.name,
                    name=f"gain-{method}-{size}-{seed}",
                )
                config = TrainConfig(split=1.0, seed=seed, **schedule)
                runs.append(train(digits, config, selection=selection, workspace=session_workspace, progress=False))
        config = TrainConfig(split=0.0, seed=seed, **schedule)
        runs.append(train(digits, config, workspace=session_workspace, progress=False))
    return [run.path for run in runs]


@pytest.fixture(scope="session")
def cifar_small(cifar_root: Path, session_workspace: Path) -> ImageDataset:
    """Real CIFAR-10 capped at 100 images per class (1,000 train, 1,000 test)."""
    return load_dataset(str(cifar_root), workspace=session_workspace, max_per_class=100)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Train with one torch thread for a module (``pytestmark = pytest.mark.usefixtures(...)``).

    On a loaded 2-core machine two torch threads were measured about 10x slower than one
    for these small models (the threads wait on each other). The previous count is restored.
    """
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAMPLESIFT_THREADS", "1")
        yield
    torch.set_num_threads(threads)


def _snapshot(root: Path) -> dict[str, tuple[int, str] | str]:
    tree: dict[str, tuple[int, str] | str] = {}
    if not root.exists():
        return tree
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            tree[rel] = f"link -> {path.readlink()}"
        elif path.is_dir():
            tree[rel] = "dir"
        else:
            data = path.read_bytes()
            tree[rel] = (len(data), hashlib.sha256(data).hexdigest())
    return tree


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, tuple[int, str] | str]]:
    """``snapshot(root)``: every folder and file under ``root`` (hidden ones too) with size and
    SHA-256; symlinks by target. Two equal snapshots mean nothing was added, removed or changed.
    """
    return _snapshot


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], tuple[int, str]]:
    """``run_cli(argv)``: run ``samplesift ARGV`` in this process; return (exit code, stderr)."""
    from toolkit import cli

    def run(argv: list[str]) -> tuple[int, str]:
        capsys.readouterr()
        previous = signal.getsignal(signal.SIGTERM)  # main() installs its own handler
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse's own errors
            code = int(exc.code or 0)
        finally:
            signal.signal(signal.SIGTERM, previous)
        return code, capsys.readouterr().err

    return run


#: Debian's Chromium (``apt-get install -y chromium``; .ci/run installs it), for the browser tests.
CHROMIUM = Path(os.environ.get("SAMPLESIFT_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, Any]:
    """pytest-playwright's launch arguments: Debian's Chromium, headless, no network chatter.

    Every browser test uses pytest-playwright's one session-wide browser: Playwright's sync API
    keeps an event loop running for the whole session, so a second ``sync_playwright()`` fails.
    """
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    args += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    return {"executable_path": str(CHROMIUM), "args": args}
