"""Nothing untrusted executes, nothing is written outside the workspace, nothing is downloaded.

* A checkpoint crafted to run code when unpickled is refused by every loader (run resume,
  autoencoder resume, the weights-only loader) and the code never runs: the payload would
  create a marker file, and the marker is never there. A positive control shows that the
  same file *does* run its payload when loaded the unsafe way, so the test can fail.
* Workspace paths are resolved and confined: ``..`` in names and symbolic links planted in
  the workspace cannot lead a write outside it.
* The app binds to localhost (checked in ``.streamlit/config.toml`` where the app exists).
* A whole pipeline (load, embed, select, train, reconstruct) opens no network connection;
  only an explicit ``cifar10`` spec reaches the network, through torchvision's downloader.
"""

from __future__ import annotations

import io
import pathlib
import pickle
import re
import socket
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit.artifacts import confined_path
from toolkit.data import load_dataset
from toolkit.embedding import load_embedding
from toolkit.encoders import get_encoder, resume_embedding
from toolkit.encoders.autoencoder import reconstruct
from toolkit.errors import SampleSiftError
from toolkit.runs import RunStore, load_weights_only
from toolkit.selection import make_selection
from toolkit.train import TrainConfig, train
from toolkit.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")
RunCli = Callable[[list[str]], tuple[int, str]]
Snapshot = Callable[[Path], dict]


# --------------------------------------------------------------------------- malicious pickles


class Payload:
    """Unpickling this object calls ``Path.touch(marker)``: code execution, made visible."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return pathlib.Path.touch, (self.marker,)


def malicious_checkpoint(marker: Path, template: dict[str, object] | None = None) -> bytes:
    """A real-looking torch checkpoint (tensors included) with the payload hidden inside."""
    state = dict(template or {"model": {"weight": torch.ones(3)}})
    state["progress"] = Payload(marker)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_the_payload_is_live_when_loaded_the_unsafe_way(tmp_path: Path) -> None:
    """Positive control: without weights_only the crafted file runs its code."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(malicious_checkpoint(marker))
    torch.load(path, weights_only=False)
    assert marker.exists(), "the payload did not run: the tests below would prove nothing"


@pytest.mark.parametrize("form", ["torch-zip", "plain-pickle"])
def test_the_weights_only_loader_refuses_a_malicious_pickle(tmp_path: Path, form: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if form == "torch-zip":
        path.write_bytes(malicious_checkpoint(marker))
    else:  # the legacy format: a bare pickle stream
        path.write_bytes(pickle.dumps({"model": Payload(marker)}))
    with pytest.raises(SampleSiftError, match=r"refused to load .*never opened"):
        load_weights_only(path)
    assert not marker.exists(), "the payload ran"


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> tuple[Path, str]:
    """A workspace with an interrupted run (and its genuine checkpoint)."""
    ws = tmp_path_factory.mktemp("ws")
    digits = load_dataset("digits")
    config = TrainConfig(steps=2, batch=8, evals=0, checkpoint_every=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("toolkit.train.ClassifierTask.evaluate", _interrupt)
        with pytest.raises(KeyboardInterrupt):
            train(digits, config, workspace=ws, progress=False)
    (run,) = RunStore(ws)
    return ws, run.id


def _interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


def test_resuming_a_run_with_a_malicious_checkpoint_is_refused_and_runs_nothing(
    interrupted_run: tuple[Path, str], tmp_path: Path, run_cli: RunCli, snapshot: Snapshot
) -> None:
    ws, run_id = interrupted_run
    run = RunStore(ws).get(run_id)
    genuine = run.load_checkpoint()
    marker = tmp_path / "pwned"
    run.checkpoint_path.write_bytes(malicious_checkpoint(marker, genuine))
    before = snapshot(ws)
    code, err = run_cli(["train", "--resume", run_id, "--workspace", str(ws), "--quiet"])
    assert code == 2
    assert re.search(r"samplesift: error: refused to load .*checkpoint.pt: it is not a plain-tensor checkpoint", err)
    assert not marker.exists(), "the payload ran"
    assert snapshot(ws) == before, "the refused resume changed the workspace"
    assert run.status()["state"] == "interrupted"


def test_resuming_an_embedding_with_a_malicious_checkpoint_is_refused(tmp_path: Path) -> None:
    digits = load_dataset("digits")
    ws = Workspace(tmp_path / "ws")
    encoder = get_encoder("autoencoder", epochs=1, device="cpu", checkpoint_every=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("toolkit.encoders.autoencoder.embed_images", _interrupt)
        with pytest.raises(KeyboardInterrupt):
            encoder.embed(digits, workspace=ws, progress=False)
    (run,) = RunStore(ws)
    marker = tmp_path / "pwned"
    run.checkpoint_path.write_bytes(malicious_checkpoint(marker, run.load_checkpoint()))
    with pytest.raises(SampleSiftError, match="refused to load"):
        resume_embedding(run.id, workspace=ws, progress=False)
    assert not marker.exists()
    assert not ws.embedding_dir(digits.key, "autoencoder").exists()


def test_pickled_embeddings_are_refused_without_unpickling(tmp_path: Path) -> None:
    digits = load_dataset("digits")
    ws = Workspace(tmp_path / "ws")
    embedding = get_encoder("autoencoder", epochs=1, batch=256).embed(digits, workspace=ws, progress=False)
    marker = tmp_path / "pwned"
    np.save(embedding.path / "embeddings.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(SampleSiftError, match=r"cannot be read .*allow_pickle=False"):
        load_embedding(digits, workspace=ws)
    assert not marker.exists()


# --------------------------------------------------------------------------- confined paths


def test_confined_path_refuses_dot_dot_and_symlink_escapes(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    assert confined_path(root, "a", "b.json") == root.resolve() / "a" / "b.json"
    with pytest.raises(SampleSiftError, match="outside"):
        confined_path(root, "..", "outside", "x.json")
    with pytest.raises(SampleSiftError, match="outside"):
        confined_path(root, "/etc/passwd")
    (root / "link").symlink_to(outside)
    with pytest.raises(SampleSiftError, match="outside"):
        confined_path(root, "link", "x.json")


@pytest.mark.parametrize("planted", ["runs", "selections", "embeddings", "datasets"])
def test_a_symlink_planted_in_the_workspace_cannot_lead_writes_outside(
    planted: str, tmp_path: Path, run_cli: RunCli, snapshot: Snapshot
) -> None:
    digits = load_dataset("digits")
    ws, outside = Workspace(tmp_path / "ws"), tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    link = {
        "runs": ws.root / "runs",
        "selections": ws.root / "datasets" / digits.key / "selections",
        "embeddings": ws.root / "datasets" / digits.key / "embeddings",
        "datasets": ws.root / "datasets" / digits.key,
    }[planted]
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    commands = {
        "runs": ["train", "--steps", "2"],
        "selections": ["select", "--method", "random", "--size", "5"],
        "embeddings": ["embed", "--epochs", "1"],
        "datasets": ["select", "--method", "random", "--size", "5"],
    }
    argv = [*commands[planted], "--workspace", str(ws.root)]
    if planted in ("runs", "embeddings"):
        argv.append("--quiet")
    code, err = run_cli(argv)
    assert code == 2 and re.search(r"samplesift: error: path .* resolves to .*outside .*use a plain name", err), err
    assert snapshot(outside) == before, "something was written outside the workspace"


# --------------------------------------------------------------------------- the app


def test_the_app_binds_to_localhost() -> None:
    config = REPO / ".streamlit" / "config.toml"
    if not config.exists():
        pytest.skip("no .streamlit/config.toml on this branch: the app (branch app) has not been merged yet")
    tomllib = pytest.importorskip("tomllib", reason="reading TOML needs Python 3.11+")
    settings = tomllib.loads(config.read_text())
    assert settings.get("server", {}).get("address") in ("localhost", "127.0.0.1"), settings
    assert settings.get("browser", {}).get("gatherUsageStats") is False, "streamlit must not phone home"


# --------------------------------------------------------------------------- no downloads


class NetworkBlocked:
    """Replaces every way Python opens a connection; records who tried."""

    def __init__(self, patch: pytest.MonkeyPatch) -> None:
        self.attempts: list[str] = []
        for name in ("getaddrinfo", "create_connection"):
            patch.setattr(socket, name, self._refuse)
        patch.setattr(socket.socket, "connect", self._refuse)
        patch.setattr(socket.socket, "connect_ex", self._refuse)

    def _refuse(self, *args: object, **kwargs: object) -> None:
        self.attempts.append("".join(traceback.format_stack(limit=25)))
        raise OSError("network access disabled by the test")


def test_the_whole_pipeline_opens_no_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    network = NetworkBlocked(monkeypatch)
    ws = tmp_path / "ws"
    digits = load_dataset("digits", workspace=ws)
    embedding = get_encoder("autoencoder", epochs=1, batch=256).embed(digits, workspace=ws, progress=False)
    selection = make_selection(digits, "topk-activation", size=40, workspace=ws)
    run = train(
        digits, TrainConfig(split=0.5, steps=4, batch=16, evals=1), selection=selection, workspace=ws, progress=False
    )
    reconstruct(embedding, digits, [0, 1])
    assert run.summary()["steps"] == 4
    assert network.attempts == [], f"a connection was attempted:\n{network.attempts[0]}"


def test_only_an_explicit_cifar10_spec_downloads_and_through_torchvision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    network = NetworkBlocked(monkeypatch)
    with pytest.raises(SampleSiftError, match=r"could not be downloaded .*point --data at a local copy"):
        load_dataset(f"cifar10:{tmp_path / 'cifar'}", workspace=tmp_path / "ws")
    assert network.attempts, "the explicit download request never reached the network"
    assert all("torchvision/datasets/utils.py" in stack for stack in network.attempts), network.attempts[0]


def test_no_module_of_the_toolkit_imports_a_network_client() -> None:
    """Downloads are torchvision's job alone: no HTTP client anywhere in the toolkit."""
    pattern = re.compile(r"^\s*(import|from)\s+(urllib|requests|http|httpx|aiohttp|huggingface_hub)\b", re.M)
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "toolkit").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
    hub = [str(p.relative_to(REPO)) for p in (REPO / "toolkit").rglob("*.py") if "torch.hub" in p.read_text()]
    assert hub == []
