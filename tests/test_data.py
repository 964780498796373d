"""Data loading: every source format, the decode cache, caps and bad input."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import toolkit.images as images_module
from toolkit.data import ImageDataset, load_dataset
from toolkit.errors import SampleSiftError


def write_image_folder(root: Path, dataset: ImageDataset, per_class: int = 4) -> Path:
    """An image-folder tree of real digits as PNG files: root/{train,test}/<class>/NNNN.png."""
    for split, images, labels in (
        ("train", dataset.train_images, dataset.train_labels),
        ("test", dataset.test_images, dataset.test_labels),
    ):
        for label, name in enumerate(dataset.class_names):
            folder = root / split / f"class_{name}"
            folder.mkdir(parents=True, exist_ok=True)
            for i, index in enumerate(np.flatnonzero(labels == label)[:per_class]):
                Image.fromarray(images[index][..., 0]).save(folder / f"{i:04d}.png")
    return root


def tree_listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def test_digits_is_a_real_offline_dataset(digits: ImageDataset) -> None:
    assert digits.train_images.shape == (1437, 8, 8, 1) and digits.test_images.shape == (360, 8, 8, 1)
    assert digits.train_images.dtype == np.uint8 and digits.train_images.max() == 255
    assert digits.num_classes == 10 and set(np.unique(digits.train_labels)) == set(range(10))
    assert digits.default_crop == 6
    again = load_dataset("digits")
    assert again.fingerprint == digits.fingerprint


def test_image_folder_loads_and_is_cached(tmp_path: Path, digits: ImageDataset, monkeypatch) -> None:
    root = write_image_folder(tmp_path / "folder", digits)
    workspace = tmp_path / "ws"
    first = load_dataset(str(root), workspace=workspace)
    assert first.train_images.shape == (40, 8, 8, 1) and first.num_test == 40
    assert first.class_names == tuple(f"class_{i}" for i in range(10))
    assert first.train_files[0] == "train/class_0/0000.png"
    index = first.train_files.index("train/class_3/0002.png")
    assert first.train_labels[index] == 3
    expected = np.asarray(Image.open(root / first.train_files[index]))
    assert np.array_equal(first.train_images[index][..., 0], expected)

    def no_decoding(raw: np.ndarray) -> np.ndarray:
        raise AssertionError("a cached source was decoded again")

    monkeypatch.setattr(images_module, "_decode_image", no_decoding)
    second = load_dataset(str(root), workspace=workspace)
    assert second.fingerprint == first.fingerprint
    assert np.array_equal(second.train_images, first.train_images)


def test_a_changed_source_file_invalidates_the_cache(tmp_path: Path, digits: ImageDataset) -> None:
    root = write_image_folder(tmp_path / "folder", digits)
    workspace = tmp_path / "ws"
    before = load_dataset(str(root), workspace=workspace)
    changed = root / "train" / "class_5" / "0001.png"
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))  # a different mtime, even on coarse-clock filesystems
    after = load_dataset(str(root), workspace=workspace)
    assert after.fingerprint != before.fingerprint
    index = after.train_files.index("train/class_5/0001.png")
    assert np.all(after.train_images[index] == 7)
    caches = [p for p in (workspace / "cache" / "datasets").iterdir() if not p.name.startswith(".")]
    assert len(caches) == 1  # the stale entry was removed, so it can never be served


def test_per_class_cap_keeps_the_first_images_of_each_class(digits: ImageDataset) -> None:
    capped = digits.capped(7)
    assert capped.num_train == 70 and capped.num_test == 70
    assert np.array_equal(np.bincount(capped.train_labels), np.full(10, 7))
    first_zeros = np.flatnonzero(digits.train_labels == 0)[:7]
    assert np.array_equal(capped.train_images[capped.train_labels == 0], digits.train_images[first_zeros])
    assert capped.fingerprint != digits.fingerprint and capped.key != digits.key
    assert load_dataset("digits", max_per_class=7).fingerprint == capped.fingerprint


def test_npz_source(tmp_path: Path, digits: ImageDataset) -> None:
    path = tmp_path / "mine.npz"
    np.savez(
        path,
        train_images=digits.train_images[..., 0],  # N x H x W grayscale is accepted
        train_labels=digits.train_labels,
        test_images=digits.test_images[..., 0],
        test_labels=digits.test_labels,
        class_names=np.array([f"d{i}" for i in range(10)]),
    )
    loaded = load_dataset(str(path), workspace=tmp_path)
    assert loaded.name == "mine" and loaded.class_names[3] == "d3"
    assert np.array_equal(loaded.train_images, digits.train_images)
    np.savez(tmp_path / "bad.npz", train_images=digits.train_images, train_labels=digits.train_labels)
    with pytest.raises(SampleSiftError, match="lacks the array"):
        load_dataset(str(tmp_path / "bad.npz"))
    np.savez(
        tmp_path / "float.npz",
        train_images=digits.train_images.astype(np.float32),
        train_labels=digits.train_labels,
        test_images=digits.test_images,
        test_labels=digits.test_labels,
    )
    with pytest.raises(SampleSiftError, match="must be uint8"):
        load_dataset(str(tmp_path / "float.npz"))


def test_missing_empty_and_malformed_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SampleSiftError, match="does not exist"):
        load_dataset(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SampleSiftError, match="no train/ and test/"):
        load_dataset(str(tmp_path / "empty"))
    (tmp_path / "noclasses" / "train").mkdir(parents=True)
    (tmp_path / "noclasses" / "test").mkdir()
    with pytest.raises(SampleSiftError, match="no class folders with images"):
        load_dataset(str(tmp_path / "noclasses"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SampleSiftError, match=r"not an \.npz"):
        load_dataset(str(tmp_path / "notes.txt"))
    with pytest.raises(SampleSiftError, match="empty"):
        load_dataset("  ")


def test_corrupt_images_are_refused_by_default_and_skipped_on_request(tmp_path: Path, digits: ImageDataset) -> None:
    root = write_image_folder(tmp_path / "folder", digits)
    (root / "train" / "class_1" / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "train" / "class_2" / "readme.txt").write_text("not an image")
    workspace = tmp_path / "ws"
    with pytest.raises(SampleSiftError, match=r"2 file\(s\) .* are not readable images .*--bad-images skip"):
        load_dataset(str(root), workspace=workspace)
    assert not (workspace / "cache").exists() or not any((workspace / "cache" / "datasets").iterdir())
    with pytest.warns(UserWarning, match="skipped"):
        loaded = load_dataset(str(root), workspace=workspace, bad_files="skip")
    assert sorted(loaded.skipped_files) == ["train/class_1/0001.png", "train/class_2/readme.txt"]
    assert loaded.num_train == 39 and "train/class_1/0001.png" not in loaded.train_files


def test_mixed_modes_sizes_and_empty_classes(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cats", "dogs"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / "rgb.png")
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / "gray.png")
        Image.fromarray(rng.integers(0, 255, (20, 12, 3), dtype=np.uint8)).save(root / split / "cats" / "odd.png")
    (root / "train" / "empty_class").mkdir()
    with pytest.warns(UserWarning) as caught:
        loaded = load_dataset(str(root), workspace=tmp_path / "ws")
    messages = " ".join(str(w.message) for w in caught)
    assert "empty and was left out" in messages and "resized" in messages
    assert loaded.image_shape == (16, 16, 3) and loaded.class_names == ("cats", "dogs")
    gray_index = loaded.train_files.index("train/cats/gray.png")
    gray = loaded.train_images[gray_index]
    assert np.array_equal(gray[..., 0], gray[..., 1])  # grayscale expanded to RGB


def _write_torchvision_batches(root: Path, dataset: ImageDataset) -> None:
    """CIFAR-10's python batches (the format torchvision reads) from real CIFAR-10 images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    chw = dataset.train_images.transpose(0, 3, 1, 2).reshape(dataset.num_train, -1)
    parts = np.array_split(np.arange(dataset.num_train), 5)
    for i, part in enumerate(parts, start=1):
        with open(folder / f"data_batch_{i}", "wb") as handle:
            pickle.dump({"data": chw[part], "labels": dataset.train_labels[part].tolist()}, handle)
    test = dataset.test_images.transpose(0, 3, 1, 2).reshape(dataset.num_test, -1)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({"data": test, "labels": dataset.test_labels.tolist()}, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": list(dataset.class_names)}, handle)


@pytest.mark.cifar
def test_torchvision_format_matches_the_image_folder(tmp_path: Path, cifar_small: ImageDataset, monkeypatch) -> None:
    import torchvision

    root = tmp_path / "tv"
    _write_torchvision_batches(root, cifar_small)
    # These files are rebuilt from the JPEG copy, so torchvision's checksum of the original
    # release cannot match; everything else is torchvision's real loader.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: True)
    for spec in (str(root), f"cifar10:{root}"):
        loaded = load_dataset(spec, workspace=tmp_path / "ws")
        assert loaded.name == "cifar10" and loaded.class_names == cifar_small.class_names
        assert np.array_equal(loaded.train_images, cifar_small.train_images)
        assert np.array_equal(loaded.test_labels, cifar_small.test_labels)


def test_cifar10_offline_gives_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    import urllib.error

    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(SampleSiftError, match=r"could not be downloaded.*../shared/datasets/cifar10"):
        load_dataset("cifar10", workspace=tmp_path)


@pytest.mark.cifar
def test_real_cifar10_folder(cifar_small: ImageDataset) -> None:
    assert cifar_small.image_shape == (32, 32, 3) and cifar_small.default_crop == 24
    assert cifar_small.class_names[0] == "airplane" and cifar_small.class_names[-1] == "truck"
    assert cifar_small.class_counts() == {name: 100 for name in cifar_small.class_names}
    assert cifar_small.train_files[0] == "train/airplane/0000.jpg"
