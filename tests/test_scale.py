"""Data at scale: --image-size, the chunked and resumable decode into a memory-mapped cache,
batches gathered from it, streaming inference, and the CIFAR-10 path left exactly as it was."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import toolkit.augment as augment_module
import toolkit.encoders.pixels as pixels_module
import toolkit.images as images_module
from toolkit.artifacts import fingerprint_arrays, fingerprint_npy_files
from toolkit.augment import DeviceImages
from toolkit.data import load_dataset
from toolkit.encoders import get_encoder
from toolkit.errors import SampleSiftError
from toolkit.images import ImageDataset, fit_square
from toolkit.selectors import available
from toolkit.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
#: The content fingerprint of the shared CIFAR-10 image folder, which experiments in the shared
#: workspace are keyed by (``cifar10-9d1e310bba``), and of its 100-per-class cap (the test fixture).
CIFAR10_FINGERPRINT = "9d1e310bba17fd13adc1ebe324b66f32"
CIFAR10_CAPPED_100_FINGERPRINT = "d0195993bd699dc6b7a31dc6523b28dc"


def write_folder(root: Path, sizes: list[tuple[int, int]], per_class: int = 3, seed: int = 0) -> Path:
    """An image folder of random RGB PNGs: train and test, two classes, image ``i`` of each class sized ``sizes[i]``."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                height, width = sizes[i % len(sizes)]
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


@pytest.mark.cifar
def test_the_cifar10_folder_keeps_its_fingerprint(cifar_root: Path, cifar_small: ImageDataset, session_workspace: Path):
    assert cifar_small.fingerprint == CIFAR10_CAPPED_100_FINGERPRINT
    full = load_dataset(str(cifar_root), workspace=session_workspace)  # the fixture's cache entry: no decode
    assert full.key == "cifar10-9d1e310bba" and full.fingerprint == CIFAR10_FINGERPRINT
    assert full.image_shape == (32, 32, 3) and full.default_crop == 24 and not full.load_options
    assert isinstance(full.train_images, np.memmap)  # the cache is mapped, not read into memory


def test_fit_square_scales_the_shorter_side_and_keeps_the_centre() -> None:
    image = np.zeros((48, 96, 3), np.uint8)
    image[:, 24:72] = 255  # a white middle half, black quarters on either side
    square = fit_square(image, 16)
    assert square.shape == (16, 16, 3)
    assert square[:, 1:-1].min() == 255  # the centre square is the white middle (edges blur in)
    gray = fit_square(np.full((10, 30, 1), 7, np.uint8), 20)  # upscaling, one channel
    assert gray.shape == (20, 20, 1) and np.all(gray == 7)


def test_large_jpegs_are_decoded_at_a_reduced_scale() -> None:
    y, x = np.mgrid[0:160, 0:200]
    smooth = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(smooth).save(encoded, "JPEG", quality=95)
    raw = np.frombuffer(encoded.getvalue(), np.uint8).copy()
    reduced = images_module._decode_jpeg_reduced(raw, 32)
    assert reduced is not None and reduced.shape == (40, 50, 3)  # a quarter: the shorter side still >= 32
    assert images_module._decode_jpeg_reduced(raw, 100) is None  # not twice the size: decoded in full
    full = fit_square(np.asarray(Image.open(encoded)), 32).astype(int)
    assert np.abs(fit_square(reduced, 32).astype(int) - full).mean() < 4


def test_image_size_default_explicit_recorded_and_keyed(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "photos", [(96, 72), (40, 40), (72, 100)])
    workspace = tmp_path / "ws"
    with pytest.warns(UserWarning, match="above 64 px were found, so every image was brought to 64x64"):
        default = load_dataset(str(root), workspace=workspace)
    assert default.image_shape == (64, 64, 3) and default.default_crop == 48 and not default.load_options
    with pytest.warns(UserWarning, match="--image-size 20"):
        small = load_dataset(str(root), workspace=workspace, image_size=20, decode_workers=1)
    assert small.image_shape == (20, 20, 3) and small.default_crop == 15
    assert small.fingerprint != default.fingerprint  # a different size is a different cache entry and data set
    assert small.load_options == {"image_size": 20} and small.cli_arguments()[-2:] == ["--image-size", "20"]
    first = np.asarray(Image.open(root / small.train_files[0]))
    assert np.array_equal(small.train_images[0], fit_square(first, 20))
    native = write_folder(tmp_path / "small", [(24, 24), (24, 24), (30, 20)])
    with pytest.warns(UserWarning, match="differed from the common size 24x24"):
        kept = load_dataset(str(native), workspace=workspace)
    assert kept.image_shape == (24, 24, 3)  # all at most 64 px: the native (most common) size
    with pytest.raises(SampleSiftError, match="--image-size does not apply to --data digits"):
        load_dataset("digits", image_size=32)
    with pytest.raises(SampleSiftError, match="--image-size must be a whole number of pixels from 8 to 1024"):
        load_dataset(str(root), workspace=workspace, image_size=4)


def test_the_models_follow_the_image_size_and_record_the_embedding_size(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "photos", [(50, 60)], per_class=4)
    dataset = load_dataset(str(root), workspace=tmp_path / "ws", image_size=40)
    embedding = get_encoder("autoencoder", epochs=1, batch=4, device="cpu").embed(
        dataset, workspace=tmp_path / "ws", progress=False
    )
    assert embedding.manifest["model"]["crop"] == 30  # the ratio of 24 to 32
    assert embedding.manifest["embedding_dim"] == embedding.dim == embedding.vectors.shape[1]


def test_parallel_chunked_decode_gives_the_same_arrays(tmp_path: Path, monkeypatch) -> None:
    root = write_folder(tmp_path / "photos", [(12, 12), (12, 12), (10, 14)], per_class=12)
    monkeypatch.setattr(images_module, "DECODE_CHUNK_IMAGES", 5)
    with pytest.warns(UserWarning, match="resized"):
        one = load_dataset(str(root), workspace=tmp_path / "one", decode_workers=1)
    with pytest.warns(UserWarning, match="resized"):
        two = load_dataset(str(root), workspace=tmp_path / "two", decode_workers=2)
    assert one.fingerprint == two.fingerprint and one.train_files == two.train_files
    assert np.array_equal(one.test_images, two.test_images)
    assert fingerprint_npy_files(*sorted((tmp_path / "two" / "cache").rglob("train_images.npy"))) == (
        fingerprint_arrays(two.train_images)
    )
    leftovers = [p.name for p in (tmp_path / "two" / "cache" / "datasets").iterdir() if p.name.startswith(".")]
    assert not leftovers  # the chunks are removed once the cache entry is complete


#: Decodes tests' folder in chunks of 4, slowly (a pause per chunk), so that it can be killed part way.
_SLOW_DECODE = textwrap.dedent(
    """
    import sys, time
    import toolkit.data as data
    import toolkit.images as images
    images.DECODE_CHUNK_IMAGES = 4
    real = images._decode_chunk
    def slow(*args):
        real(*args)
        time.sleep(0.3)
    images._decode_chunk = slow
    data.load_dataset(sys.argv[1], workspace=sys.argv[2], decode_workers=1)
    """
)


def test_an_interrupted_decode_resumes_where_it_stopped(tmp_path: Path, monkeypatch) -> None:
    root = write_folder(tmp_path / "photos", [(16, 16)], per_class=20)  # 80 images: 20 chunks of 4
    workspace = tmp_path / "ws"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", _SLOW_DECODE, str(root), str(workspace)], env=env)
    chunks: list[Path] = []
    deadline = time.monotonic() + 120
    while len(chunks) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
        chunks = list((workspace / "cache" / "datasets").glob(".partial-*/chunks/chunk-*.npz"))
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 3 <= len(chunks) < 20, "the decode was not caught part way"
    assert not list((workspace / "cache" / "datasets").glob("photos-*"))  # no cache entry yet

    decoded: list[Path] = []
    real = images_module._decode_chunk
    monkeypatch.setattr(images_module, "DECODE_CHUNK_IMAGES", 4)
    monkeypatch.setattr(images_module, "_decode_chunk", lambda *args: (decoded.append(args[-1]), real(*args)))
    resumed = load_dataset(str(root), workspace=workspace, decode_workers=1)
    assert 0 < len(decoded) <= 20 - len(chunks)  # the chunks written before the kill were kept
    monkeypatch.setattr(images_module, "_decode_chunk", real)
    fresh = load_dataset(str(root), workspace=tmp_path / "fresh", decode_workers=1)
    assert resumed.fingerprint == fresh.fingerprint


def test_batches_gathered_from_the_map_equal_the_resident_ones(digits: ImageDataset, tmp_path: Path, monkeypatch):
    path = tmp_path / "images.npy"
    np.save(path, digits.train_images)
    mapped = np.load(path, mmap_mode="r")
    cpu = torch.device("cpu")
    resident, gathered = DeviceImages(mapped, cpu, resident=True), DeviceImages(mapped, cpu, resident=False)
    assert resident.resident is not None and gathered.resident is None
    index = torch.tensor([5, 3, 900, 3])
    assert torch.equal(resident[index], gathered[index]) and torch.equal(resident[2:9], gathered[2:9])
    config = TrainConfig(steps=6, batch=32, evals=1, warmup_steps=0, device="cpu")
    first = train(digits, config, workspace=tmp_path / "a", progress=False).summary()
    monkeypatch.setattr(augment_module, "RESIDENT_SHARE", 0.0)  # nothing fits: every batch is gathered
    second = train(digits, config, workspace=tmp_path / "b", progress=False).summary()
    assert first["test_accuracy"] == second["test_accuracy"] and first["final_train_loss"] == second["final_train_loss"]


def test_pixels_pca_beyond_its_fit_rows_fits_a_seeded_sample(digits: ImageDataset, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(pixels_module, "FIT_ROWS", 500)
    embedding = get_encoder("pixels-pca", components=16).embed(digits, workspace=tmp_path, progress=False)
    assert embedding.manifest["fit_rows"] == 500 and embedding.vectors.shape == (digits.num_train, 16)
    again = get_encoder("pixels-pca", components=16).embed(digits, workspace=tmp_path, name="again", progress=False)
    assert np.array_equal(embedding.vectors, again.vectors)


def test_the_scale_benchmark_runs_in_smoke_mode(tmp_path: Path) -> None:
    def bench(*options: str) -> dict:
        command = [sys.executable, str(REPO / "bench" / "scale.py"), "--smoke", "--folder", str(tmp_path / "images")]
        command += ["--workspace", str(tmp_path / "workspace"), *options]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "SAMPLESIFT_THREADS": "1"}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    record = bench()
    assert record["benchmark"] == "scale" and record["smoke"] is True
    steps = record["steps"]
    for step in ("decode_cache", "embed_pixels_pca", "embed_autoencoder", "export_csv", "open_map_page"):
        assert steps[step]["seconds"] >= 0 and steps[step]["peak_rss_mb"] > 0
    for method in ("random", "topk-activation", "k-means", "facility-location"):
        assert steps[f"select_{method}"]["seconds"] >= 0 and steps[f"select_{method}"]["k"] == record["k"]
    opened = steps["open_map_page"]  # the app ran, plotted every training image and the lasso found some
    assert opened["plotted"] == 990 and 0 < opened["lasso_selected"] < 990
    # then every other selector on the same workspace, the selections alone
    again = bench("--only-selection", "--selectors", "all")
    assert again["only_selection"] and set(again["steps"]) == {f"select_{m}" for m in available() if m != "ccs"}
    assert again["steps"]["select_probcover"]["info"]["delta_rule"] == "purity"
