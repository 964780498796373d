"""Decoding and embedding inference on a Ray cluster (``--executor ray``) give exactly what the local path gives.

One local Ray instance (two CPUs) serves the module; the folder is 60 small PNGs of three classes
with a test split, cut into several chunks (decode) and slices (inference) so that several tasks
run and come back in any order.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import toolkit.encoders.autoencoder as autoencoder_module
import toolkit.encoders.base as base_module
import toolkit.encoders.contrastive as contrastive_module
import toolkit.encoders.pixels as pixels_module
import toolkit.encoders.proxy as proxy_module
import toolkit.images as images_module
from toolkit.cli import build_parser, main
from toolkit.cluster import run_tasks
from toolkit.data import load_dataset
from toolkit.embedding import load_embedding
from toolkit.encoders import Inference, get_encoder
from toolkit.errors import SampleSiftError
from toolkit.images import ImageDataset, ImageFiles, SourceOptions, decode_progress

ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'samplesift[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def write_photos(root: Path) -> Path:
    """60 random 16 x 16 RGB PNGs: three classes, 16 training and 4 test images each."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("test", 4)):
        for name in ("cat", "dog", "owl"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def photos_dataset(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> ImageDataset:
    return load_dataset(str(photos), workspace=tmp_path_factory.mktemp("ws"), decode_workers=1)


def test_a_decode_on_ray_equals_the_local_one(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_ray: None
) -> None:
    monkeypatch.setattr(images_module, "DECODE_CHUNK_IMAGES", 8)  # 8 chunks: 8 Ray tasks, at most 4 in flight
    local = load_dataset(str(photos), workspace=tmp_path / "local", decode_workers=1)
    reports: list[tuple[int, int]] = []
    with decode_progress(lambda done, total, _elapsed: reports.append((done, total))):
        remote = load_dataset(str(photos), workspace=tmp_path / "ray", executor="ray")
    done = [d for d, _ in reports]  # once per chunk, in the order the tasks finish
    assert len(done) == 8 and done == sorted(done) and done[-1] == 60 and {t for _, t in reports} == {60}
    assert remote.fingerprint == local.fingerprint and remote.key == local.key
    for name in ARRAYS:
        assert np.array_equal(getattr(remote, name), getattr(local, name)), name
    assert remote.train_files == local.train_files and remote.test_files == local.test_files
    assert remote.num_train == 48 and remote.num_test == 12 and remote.class_names == ("cat", "dog", "owl")
    # Where it was decoded is not recorded and not in the cache key: the same cache entry, the same CLI arguments.
    assert not remote.load_options and remote.cli_arguments() == local.cli_arguments()
    entries = [sorted(p.name for p in (tmp_path / ws / "cache" / "datasets").iterdir()) for ws in ("local", "ray")]
    assert entries[0] == entries[1] and len(entries[0]) == 1


def test_a_decode_on_ray_resumes_at_its_missing_chunks(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_ray: None
) -> None:
    monkeypatch.setattr(images_module, "DECODE_CHUNK_IMAGES", 8)
    files = ImageFiles(sorted(photos.rglob("*.png")))
    folder = tmp_path / "chunks"
    chunks = images_module._decode_chunks(len(files), files, None, SourceOptions(decode_workers=1), folder)
    before = {path: path.stat().st_mtime_ns for path in chunks}
    expected = {path: images_module._chunk_status(path) for path in chunks}
    chunks[2].unlink()
    chunks[7].unlink()  # the last chunk: 4 images
    reports: list[int] = []
    with decode_progress(lambda done, _total, _elapsed: reports.append(done)):
        again = images_module._decode_chunks(len(files), files, None, SourceOptions(executor="ray"), folder)
    assert again == chunks
    assert sorted(reports) == [52, 60] or sorted(reports) == [56, 60]  # it starts at the 48 kept, in any order
    for path in chunks:
        if path not in (chunks[2], chunks[7]):
            assert path.stat().st_mtime_ns == before[path]  # kept, not decoded again
        for ours, theirs in zip(images_module._chunk_status(path), expected[path], strict=True):
            assert np.array_equal(ours, theirs)


def _small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inference in batches of 16 (crops of 12 px for the autoencoder), each Ray task one batch: several slices."""
    monkeypatch.setattr(base_module, "INFERENCE_SLICE_BYTES", 1)
    monkeypatch.setattr(autoencoder_module, "BATCH_PIXELS", 16 * 12 * 12)
    monkeypatch.setattr(contrastive_module, "EMBED_BATCH", 16)
    monkeypatch.setattr(proxy_module, "EMBED_BATCH", 16)
    monkeypatch.setattr(pixels_module, "FIT_ROWS", 20)  # 48 training images: fitted on 20, all projected


@pytest.mark.parametrize(
    ("encoder", "options"),
    [
        ("pixels-pca", {"components": 8}),
        ("autoencoder", {"epochs": 1, "batch": 16, "device": "cpu"}),
        ("contrastive", {"epochs": 1, "batch": 16, "device": "cpu"}),
        ("proxy", {"epochs": 1, "batch": 16, "device": "cpu"}),
    ],
)
def test_inference_on_ray_equals_the_local_one(
    encoder: str,
    options: dict[str, Any],
    photos_dataset: ImageDataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    local_ray: None,
) -> None:
    _small_batches(monkeypatch)
    slices: list[int] = []

    def counted(ray: Any, function: Any, jobs: Any, done: Any, **kwargs: Any) -> None:
        jobs = list(jobs)
        slices.append(len(jobs))
        run_tasks(ray, function, jobs, done, **kwargs)

    monkeypatch.setattr(base_module, "run_tasks", counted)
    local = get_encoder(encoder, **options).embed(photos_dataset, workspace=tmp_path, name="local", progress=False)
    assert not slices
    remote = get_encoder(encoder, **options).embed(
        photos_dataset, workspace=tmp_path, name="ray", progress=False, inference=Inference("ray")
    )
    assert slices[0] == 3 and slices[-1] == 1  # the 48 training images in 3 tasks, the 12 test images in 1
    assert remote.vectors.dtype == local.vectors.dtype == np.float32
    assert np.array_equal(remote.vectors, local.vectors)
    assert np.array_equal(remote.test_vectors(), local.test_vectors())
    assert remote.fingerprint == local.fingerprint
    ours, theirs = remote.sample_scores(), local.sample_scores()
    assert ours.keys() == theirs.keys()
    for key in ours:  # the proxy's EL2N comes from the same tasks
        assert np.array_equal(ours[key], theirs[key]), key
    assert remote.manifest["config"] == local.manifest["config"]  # where it ran is not recorded


def test_the_cli_decodes_and_embeds_on_ray(
    photos: Path, photos_dataset: ImageDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str], local_ray: None
) -> None:
    argv = ["embed", "--data", str(photos), "--encoder", "pixels-pca", "--components", "8", "--quiet"]
    assert main([*argv, "--workspace", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    assert "embedding 'pixels-pca'" in capsys.readouterr().out
    remote = load_dataset(str(photos), workspace=tmp_path / "ray")  # the cache entry the Ray decode wrote
    assert remote.fingerprint == photos_dataset.fingerprint
    local = get_encoder("pixels-pca", components=8).embed(photos_dataset, workspace=tmp_path / "local", progress=False)
    assert np.array_equal(load_embedding(remote, workspace=tmp_path / "ray").vectors, local.vectors)
    # Every command that reads data takes the flags (the shared load options), the sweep included.
    for command in (["select", "--method", "random", "--size", "5"], ["train"], ["sweep", "--out", "x"]):
        args = build_parser().parse_args([*command, "--executor", "ray", "--ray-address", "auto"])
        assert args.executor == "ray" and args.ray_address == "auto"


def test_bad_executor_options_are_refused_before_any_work(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SampleSiftError, match="--executor must be local or ray, got 'spark'"):
        load_dataset(str(photos), workspace=tmp_path, executor="spark")
    with pytest.raises(SampleSiftError, match="--ray-address auto applies to --executor ray only"):
        load_dataset(str(photos), workspace=tmp_path, ray_address="auto")
    with pytest.raises(SampleSiftError, match="--executor must be local or ray"):
        Inference("spark")
    with pytest.raises(SampleSiftError, match="--decode-workers sets the local worker processes"):
        load_dataset(str(photos), workspace=tmp_path, executor="ray", decode_workers=2)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    code = main(["embed", "--data", str(photos), "--workspace", str(tmp_path), "--executor", "ray", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("samplesift: error: --executor ray needs Ray") and "pip install 'samplesift[ray]'" in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()  # refused before any work
