"""Image data sets as uint8 arrays, and the one pipeline that turns image files into them.

:class:`ImageDataset` is what every other module reads: training and test images (N x H x W x C,
uint8) with labels, class names and a *content* fingerprint of the arrays. Embeddings,
selections and runs record the fingerprint, and refuse to mix artifacts from different data.
:mod:`toolkit.data` says where images come from (``load_dataset``); this module decodes them.

Decoding happens once per source version: the arrays are cached under
``<workspace>/cache/datasets`` keyed by a fingerprint of the source (every file's path, size
and modification time) and of the options that change what is decoded, so a changed source
is decoded again and never served stale. The cached images are read memory-mapped, so a set
larger than the memory loads at once. Encoded images are decoded in chunks by parallel worker
processes, or by tasks on a Ray cluster (``executor="ray"``: the same chunks, the same arrays); each
chunk is kept as it is done, so an interrupted decode resumes where it stopped.
They are brought to one size while they are decoded: ``image_size`` S (shorter side to S,
then the centre square), by default their native size when none is above
:data:`AUTO_IMAGE_SIZE` pixels, else that size.

Every encoded image (image folders, ``list:`` and ``hf:``) goes through one pipeline
(:func:`decode_entries`): its size is read from its header before it is decoded, and an
image above the pixel limit (``max_pixels``, default Pillow's ``Image.MAX_IMAGE_PIXELS``) is
refused or, with ``bad_files="skip"``, left out and listed, as unreadable files are. A source
without a test split gets one only on request (``test_fraction``), held out seeded and
stratified by class, and recorded.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from toolkit.artifacts import (
    atomic_directory,
    atomic_save_npz,
    atomic_write_json,
    exclusive_lock,
    fingerprint_arrays,
    fingerprint_bytes,
    fingerprint_npy_files,
    read_json,
    safe_name,
)
from toolkit.cluster import check_executor, ray_session, run_tasks
from toolkit.errors import SampleSiftError, is_real, is_whole, require
from toolkit.workspace import Workspace

#: Bump when decoding changes, so caches written by older code are not reused.
#: 2: palette and 16-bit PNGs and CMYK JPEGs are converted to colours (1 decoded them raw).
#: 3: images above the pixel limit are refused or skipped (2 decoded them, however large).
DECODER_VERSION = "3"
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
BadFiles = Literal["error", "skip"]
#: Load options a data set records when they are set, so that a run resumed in another process
#: (:func:`load_recorded`) or a job started by the app loads exactly the same data. Each is also
#: the CLI flag of the same name (``max_pixels`` is ``--max-pixels``).
LOAD_OPTIONS = (
    "max_pixels",
    "image_size",
    "test_fraction",
    "test_seed",
    "allow_outside_root",
    "image_column",
    "label_column",
)


@dataclass(frozen=True)
class SourceOptions:
    """How a source's files become a data set, beyond the spec and the per-class cap.

    Attributes:
        bad_files: unusable images (unreadable, missing, above the pixel limit): ``"error"``
            refuses the source naming them, ``"skip"`` leaves them out and lists them.
        max_pixels: the most pixels (width x height) an image may have, read from its header
            before decoding; ``None`` is Pillow's limit (``Image.MAX_IMAGE_PIXELS``).
        image_size: bring every image to ``image_size`` x ``image_size`` while decoding
            (shorter side, then the centre square); ``None``: the native size when no image is
            above :data:`AUTO_IMAGE_SIZE` pixels on a side, else that size.
        test_fraction: for a source without a test split, the share of each class's training
            images held out as the test split; ``None`` refuses such a source, naming the option.
        test_seed: the seed of that hold-out.
        allow_outside_root: ``list:`` only, let the CSV name images outside its own folder.
        image_column, label_column: ``list:`` and ``hf:`` only, the columns to read (default:
            found by name or type).
        progress: show a progress bar while decoding.
        decode_workers: processes that decode in parallel (``None``: :func:`default_decode_workers`);
            the arrays are the same for any number, so it is neither recorded nor in the cache key.
        executor: ``"local"`` decodes in this machine's worker processes, ``"ray"`` as tasks on a
            Ray cluster (:func:`_decode_on_ray`). Like ``decode_workers`` it only says where the
            same chunks are decoded, so it is neither recorded nor in the cache key. Sources that
            are not decoded (``digits``, ``cifar10``, ``.npz``) have nothing to send; the option is
            accepted all the same, as the CLI's ``--executor`` also places a command's other work
            (inference, a sweep's runs).
        ray_address: with ``executor="ray"``, the cluster to join (``auto``, ``ray://host:10001``);
            ``None`` starts a local instance, unless this process has joined one already.
    """

    bad_files: BadFiles = "error"
    max_pixels: int | None = None
    image_size: int | None = None
    test_fraction: float | None = None
    test_seed: int = 0
    allow_outside_root: bool = False
    image_column: str | None = None
    label_column: str | None = None
    progress: bool = False
    decode_workers: int | None = None
    executor: str = "local"
    ray_address: str | None = None

    def validate(self) -> None:
        require(self.bad_files in ("error", "skip"), f"bad_files must be 'error' or 'skip', got {self.bad_files!r}")
        require(
            self.max_pixels is None or (is_whole(self.max_pixels) and self.max_pixels >= 1),
            f"--max-pixels must be a positive whole number, got {self.max_pixels!r}",
        )
        require(
            self.image_size is None or (is_whole(self.image_size) and 8 <= self.image_size <= 1024),
            f"--image-size must be a whole number of pixels from 8 to 1024, got {self.image_size!r}",
        )
        require(
            self.decode_workers is None or (is_whole(self.decode_workers) and self.decode_workers >= 1),
            f"--decode-workers must be a positive whole number, got {self.decode_workers!r}",
        )
        require(
            self.decode_workers is None or self.executor != "ray",
            "--decode-workers sets the local worker processes; on --executor ray the cluster's CPUs decode, "
            "so leave it out",
        )
        check_executor(self.executor, self.ray_address)
        require(
            self.test_fraction is None or (is_real(self.test_fraction) and 0 < float(self.test_fraction) < 1),
            f"--test-fraction must be between 0 and 1 (exclusive), got {self.test_fraction!r}",
        )
        require(
            is_whole(self.test_seed) and self.test_seed >= 0,
            f"--test-seed must be a whole number of at least 0, got {self.test_seed!r}",
        )

    def recorded(self) -> dict[str, Any]:
        """The :data:`LOAD_OPTIONS` set away from their defaults (the seed only with a fraction)."""
        values = {
            "max_pixels": self.max_pixels,
            "image_size": self.image_size,
            "test_fraction": self.test_fraction,
            "test_seed": self.test_seed if self.test_fraction is not None else None,
            "allow_outside_root": self.allow_outside_root or None,
            "image_column": self.image_column,
            "label_column": self.label_column,
        }
        return {k: v for k, v in values.items() if v is not None}

    def pixel_limit(self) -> int | None:
        """``max_pixels``, else Pillow's limit as it stands (``None`` if Pillow's check is off)."""
        if self.max_pixels is not None:
            return int(self.max_pixels)
        from PIL import Image

        with _PILLOW_LIMIT_LOCK:  # not while another decode has raised it (see _pillow_admits)
            return Image.MAX_IMAGE_PIXELS

    def cache_key(self) -> str:
        """The part of a source's cache key that these options change (what gets decoded)."""
        return f"bad={self.bad_files};max_pixels={self.pixel_limit()};" + ";".join(
            f"{k}={v}" for k, v in sorted(self.recorded().items()) if k != "max_pixels"
        )


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image data set held as uint8 arrays (N x H x W x C).

    Attributes:
        name: short name (``digits``, ``cifar10`` or the folder/file stem).
        spec: the data spec it was loaded from.
        source: the resolved source location (a path, or a description for built-ins).
        train_images, test_images: uint8 arrays, N x H x W x C (C is 1 or 3).
        train_labels, test_labels: int64 arrays of class indices.
        class_names: one name per class index.
        fingerprint: content hash of the arrays and class names (after any cap).
        train_files, test_files: source file of each image, relative to ``source``, where the
            data set has files.
        skipped_files: files left out while decoding, when skipping is on (the notes give the reasons).
        max_per_class: the per-class cap this data set was cut to, if any.
        notes: what loading changed or left out, in words.
        load_options: the :data:`LOAD_OPTIONS` it was loaded with (see :meth:`SourceOptions.recorded`).
    """

    name: str
    spec: str
    source: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    fingerprint: str
    train_files: tuple[str, ...] | None = None
    test_files: tuple[str, ...] | None = None
    skipped_files: tuple[str, ...] = ()
    max_per_class: int | None = None
    notes: tuple[str, ...] = field(default=())
    load_options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Folder name for this data set version inside a workspace."""
        return f"{self.name}-{self.fingerprint[:10]}"

    @property
    def num_train(self) -> int:
        return int(self.train_images.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.test_images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of every image."""
        return tuple(int(s) for s in self.train_images.shape[1:])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[3])

    @property
    def default_crop(self) -> int:
        """The paper's crop rule scaled to this image size: 24 for 32x32, 6 for 8x8."""
        side = min(self.image_shape[:2])
        return max(1, side - side // 4)

    def class_counts(self, split: Literal["train", "test"] = "train") -> dict[str, int]:
        labels = self.train_labels if split == "train" else self.test_labels
        counts = np.bincount(labels, minlength=self.num_classes)
        return {name: int(c) for name, c in zip(self.class_names, counts, strict=True)}

    def describe(self) -> dict[str, Any]:
        """The facts about this data set that manifests and run records store."""
        return {
            "name": self.name,
            "spec": self.spec,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "key": self.key,
            "num_train": self.num_train,
            "num_test": self.num_test,
            "image_shape": list(self.image_shape),
            "class_names": list(self.class_names),
            "max_per_class": self.max_per_class,
            # Only when set, so the records of data loaded without options stay as they were.
            **({"load_options": dict(self.load_options)} if self.load_options else {}),
        }

    def cli_arguments(self) -> list[str]:
        """The ``samplesift`` arguments that load this data set again: spec, cap, bad-file rule, load options.

        What another process (the app's background jobs) is started with, and what the hints in
        messages (``make one with samplesift embed --data ...``) show.
        """
        args = ["--data", self.spec]
        if self.max_per_class:
            args += ["--max-per-class", str(self.max_per_class)]
        if self.skipped_files:
            args += ["--bad-images", "skip"]
        for key, value in self.load_options.items():  # each option is the flag of the same name
            flag = "--" + key.replace("_", "-")
            args += [flag] if value is True else [flag, str(value)]
        return args

    def capped(self, max_per_class: int) -> ImageDataset:
        """The first ``max_per_class`` images of every class, in train and in test."""
        require(max_per_class >= 1, f"--max-per-class must be at least 1, got {max_per_class}")
        train_keep = _first_per_class(self.train_labels, max_per_class)
        test_keep = _first_per_class(self.test_labels, max_per_class)
        return replace(
            self,
            train_images=self.train_images[train_keep],
            train_labels=self.train_labels[train_keep],
            test_images=self.test_images[test_keep],
            test_labels=self.test_labels[test_keep],
            train_files=None if self.train_files is None else tuple(self.train_files[i] for i in train_keep),
            test_files=None if self.test_files is None else tuple(self.test_files[i] for i in test_keep),
            fingerprint=fingerprint_bytes(self.fingerprint, f"max_per_class={max_per_class}"),
            max_per_class=max_per_class,
        )


def _first_per_class(labels: np.ndarray, cap: int) -> np.ndarray:
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.arange(len(labels)) - starts
    return np.sort(order[rank < cap])


def content_fingerprint(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    class_names: tuple[str, ...],
) -> str:
    return _names_fingerprint(fingerprint_arrays(train_images, train_labels, test_images, test_labels), class_names)


def _names_fingerprint(arrays_fingerprint: str, class_names: tuple[str, ...] | list[str]) -> str:
    """A data set's fingerprint from its arrays' fingerprint and its class names."""
    return fingerprint_bytes(arrays_fingerprint, "\n".join(class_names))


def _make_dataset(
    name: str,
    spec: str,
    source: str,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    class_names: tuple[str, ...],
    **extra: Any,
) -> ImageDataset:
    train_images, train_labels, test_images, test_labels = arrays
    return ImageDataset(
        name=name,
        spec=spec,
        source=source,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        class_names=class_names,
        fingerprint=extra.pop("fingerprint", None)
        or content_fingerprint(train_images, train_labels, test_images, test_labels, class_names),
        **extra,
    )


# --------------------------------------------------------------------------- public entry


def file_listing(base: Path, files: list[Path]) -> str:
    """Path, size and mtime of every file: the input of a source fingerprint."""
    lines = []
    for file in files:
        stat = file.stat()
        lines.append(f"{file.relative_to(base)}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return "\n".join(lines)


_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _torchvision_decodes_faithfully(head: bytes) -> bool:
    """True for the files torchvision's UNCHANGED mode turns into the right 8-bit pixels.

    That is JPEG and 8-bit non-palette PNG. Its UNCHANGED mode returns a palette PNG's
    palette *indices* as if they were gray levels, a 16-bit PNG as uint16 and a CMYK JPEG
    as four channels; those (and every other format) go through Pillow, which converts them.
    """
    if head.startswith(_JPEG_MAGIC):
        return True
    # PNG: the IHDR chunk's bit depth is byte 24, its colour type byte 25 (3 = palette).
    return head.startswith(_PNG_MAGIC) and len(head) >= 26 and head[24] == 8 and head[25] != 3


class UnusableImage(Exception):
    """One image that cannot go into the data set; ``kind`` is what :func:`decode_entries` reports.

    Kinds: ``unreadable`` (not an image, truncated, an I/O error), ``missing`` (a listed file
    that does not exist) and ``too-large`` (above the pixel limit; ``detail`` says its size).
    """

    def __init__(self, kind: Literal["unreadable", "missing", "too-large"], detail: str = "") -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail


_PILLOW_LIMIT_LOCK = threading.RLock()  # re-entrant: a thread that raised the limit may read it


@contextmanager
def _pillow_admits(limit: int | None) -> Iterator[None]:
    """While active, Pillow opens images of up to ``limit`` pixels.

    Our header check (:func:`_check_pixels`) is the guard against decompression bombs. Pillow
    has its own, global one (``Image.MAX_IMAGE_PIXELS``; it refuses above twice that) and it
    would refuse images that a raised ``max_pixels`` admits, so only then is it raised, and put
    back afterwards, under a lock: two decodes in one process (the app's threads) cannot
    interleave their changes, and no default limit is read while it is raised.
    """
    from PIL import Image

    with _PILLOW_LIMIT_LOCK:
        current = Image.MAX_IMAGE_PIXELS
    if limit is None or current is None or limit <= current:
        yield
        return
    with _PILLOW_LIMIT_LOCK:
        Image.MAX_IMAGE_PIXELS = limit
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = current


def _check_pixels(raw: np.ndarray, limit: int | None) -> tuple[int, int]:
    """The encoded image's (width, height); :class:`UnusableImage` (``too-large``) above ``limit`` pixels.

    Only the header is read (Pillow's ``Image.open`` is lazy), so a decompression bomb (a few MB
    that decode to gigabytes; torchvision's decoder has no limit) is caught before it is decoded.
    """
    from PIL import Image

    size = _png_or_jpeg_size(memoryview(raw))
    if size is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit decides, below
                with Image.open(io.BytesIO(raw)) as image:
                    size = image.size
        except Image.DecompressionBombError:  # above twice Pillow's own limit, so above ours too
            raise UnusableImage("too-large", f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels") from None
    width, height = size
    if limit is not None and width * height > limit:
        raise UnusableImage("too-large", f"{width} x {height} = {width * height:,} pixels")
    return width, height


def _png_or_jpeg_size(data: memoryview) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk or a JPEG's frame header; ``None`` for anything else.

    The formats torchvision decodes, read directly: Pillow's ``Image.open`` was measured at
    ~80 us an image here, more than half of decoding a CIFAR JPEG. Anything this does not
    recognise (or a JPEG whose height comes later, in a DNL marker) is left to Pillow.
    """
    if data[:8] == _PNG_MAGIC and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:3] != _JPEG_MAGIC:
        return None
    i = 2
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # a fill byte before the marker
            i += 1
        elif marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame (not DHT, JPG, DAC)
            height, width = int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
            return (width, height) if height else None
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _decode_image(raw: np.ndarray) -> np.ndarray:
    """Decode one encoded image (a writable uint8 buffer) to H x W x C uint8, C in {1, 2, 3, 4}; raise on failure."""
    import torch
    from torchvision.io import ImageReadMode, decode_image

    head = raw[:26].tobytes()
    if _torchvision_decodes_faithfully(head):
        try:
            tensor = decode_image(torch.from_numpy(raw), mode=ImageReadMode.UNCHANGED)
            cmyk = tensor.shape[0] == 4 and head.startswith(_JPEG_MAGIC)
            if tensor.dtype == torch.uint8 and tensor.ndim == 3 and not cmyk:
                return tensor.permute(1, 2, 0).numpy()
        except (RuntimeError, ValueError, TypeError):
            pass  # let Pillow try, and raise its (clear) error if it cannot either
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as image:
        image.load()
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
            # 16-bit gray: scale to 8 bits (Pillow's own conversion would clip at 255).
            wide = np.asarray(image).astype(np.float64)
            return np.rint(wide / 257.0).clip(0, 255).astype(np.uint8)[..., None]
        if image.mode in ("1", "F"):  # bilevel and float gray stay one channel
            image = image.convert("L")
        elif image.mode not in ("L", "LA", "RGB", "RGBA"):
            has_alpha = "A" in image.getbands() or "transparency" in image.info
            image = image.convert("RGBA" if has_alpha else "RGB")
        array = np.asarray(image)
    return array if array.ndim == 3 else array[..., None]


def _decode_jpeg_reduced(raw: np.ndarray, side: int) -> np.ndarray | None:
    """A large JPEG decoded at a reduced scale whose shorter side is still at least ``side``; else ``None``.

    libjpeg scales by 1/2, 1/4 or 1/8 while decoding (Pillow's ``draft``), several times
    faster than decoding every pixel of a photo that :func:`fit_square` then shrinks anyway.
    Only plain RGB and gray JPEGs at least twice ``side`` on their shorter side; the rest (and
    every other format) are left to :func:`_decode_image`.
    """
    if raw[:3].tobytes() != _JPEG_MAGIC:
        return None
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as image:
        width, height = image.size
        if image.mode not in ("RGB", "L") or min(width, height) < 2 * side:
            return None
        scale = side / min(width, height)
        image.draft(image.mode, (math.ceil(width * scale), math.ceil(height * scale)))
        array = np.asarray(image)
    return array if array.ndim == 3 else array[..., None]


@dataclass(frozen=True)
class ImageFiles:
    """A reader of image files by index (``reader(i)`` is file ``i``'s encoded bytes) that pickles.

    :func:`decode_entries` hands a worker process the files of its chunk (:meth:`part`), and
    the worker reads them itself: the encoded bytes of a chunk of large photos (gigabytes)
    never pass through, or wait in, the process that hands out the chunks.
    """

    paths: Sequence[Path]

    def __call__(self, index: int) -> np.ndarray:
        return read_image_file(self.paths[index])

    def __len__(self) -> int:
        return len(self.paths)

    def part(self, start: int, stop: int) -> ImageFiles:
        return ImageFiles(tuple(self.paths[start:stop]))


def read_image_file(path: Path) -> np.ndarray:
    """The encoded bytes of an image file; :class:`UnusableImage` for a missing or non-image file."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise UnusableImage("unreadable")
    if not path.exists():
        raise UnusableImage("missing")
    # np.fromfile gives a writable buffer: torch.from_numpy takes it without a copy.
    return np.fromfile(path, dtype=np.uint8)


def _to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    if image.shape[2] in (2, 4):  # drop alpha
        image = image[..., : image.shape[2] - 1]
    if image.shape[2] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=2)
    # RGB to gray with the ITU-R 601 weights Pillow uses.
    gray = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.rint(gray).clip(0, 255).astype(np.uint8)[..., None]


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    squeezed = image[..., 0] if image.shape[2] == 1 else image
    resized = np.asarray(Image.fromarray(squeezed).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return resized if resized.ndim == 3 else resized[..., None]


def hold_out_test(
    entries: dict[str, list[tuple[str, int]]],
    opts: SourceOptions,
    where: str,
    *,
    notes: list[str],
    missing_test: str | None = None,
) -> dict[str, list[tuple[str, int]]]:
    """``entries`` (split -> (name, label)) with a test split held out of train when asked.

    With ``opts.test_fraction`` and no test entries, each class gives ``round(fraction x n)``
    of its training entries, drawn with ``opts.test_seed`` (stratified, so every class with
    enough images is tested; the order within each split is kept). Without it, a missing test
    split is refused where ``missing_test`` says how to add one, naming the option too; a
    fraction given to a source that has a test split is refused, rather than silently ignored.
    """
    if opts.test_fraction is None:
        require(
            bool(entries["test"]) or missing_test is None,
            f"{where} has no test split; {missing_test}, or pass --test-fraction F (e.g. 0.2) to hold out "
            "a seeded share of each class of the training images as the test split",
        )
        return entries
    require(
        not entries["test"],
        f"{where} already has a test split ({len(entries['test'])} images); drop --test-fraction",
    )
    labels = np.asarray([label for _, label in entries["train"]], dtype=np.int64)
    rng = np.random.default_rng(int(opts.test_seed))
    test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):  # sorted: the draws do not depend on the entries' order
        members = np.flatnonzero(labels == label)
        count = round(float(opts.test_fraction) * len(members))
        test[rng.choice(members, size=count, replace=False)] = True
    require(
        bool(test.any()) and not test.all(),
        f"--test-fraction {opts.test_fraction} of {len(labels)} training images leaves "
        f"{'no test' if not test.any() else 'no training'} images; choose another fraction",
    )
    notes.append(
        f"{int(test.sum())} of {len(labels)} training images were held out as the test split "
        f"(--test-fraction {opts.test_fraction}, --test-seed {opts.test_seed}, stratified by class)"
    )
    return {
        "train": [e for e, t in zip(entries["train"], test, strict=True) if not t],
        "test": [e for e, t in zip(entries["train"], test, strict=True) if t],
    }


_progress_hooks = threading.local()


@contextmanager
def decode_progress(report: Callable[[int, int, float], None]) -> Iterator[None]:
    """While active (in this thread), decoding an image folder calls ``report(done, total, elapsed_s)``
    about twice a second: how a front end shows a first load's progress (the app's progress bar)."""
    previous = getattr(_progress_hooks, "report", None)
    _progress_hooks.report = report
    try:
        yield
    finally:
        _progress_hooks.report = previous


#: How :func:`decode_entries` words each kind of unusable image, in its error and its notes.
_UNUSABLE_WORDS = {
    "unreadable": ("{noun} in {where} are not readable images", "unreadable or non-image {noun}"),
    "missing": ("listed file(s) of {where} do not exist", "listed file(s) that do not exist"),
    "too-large": (
        "image(s) in {where} exceed the limit of {limit} pixels, possible decompression bombs",
        "image(s) above the limit of {limit} pixels",
    ),
}


def refuse_unusable(
    where: str, bad: dict[str, list[tuple[str, str]]], limit: int | None, noun: str = "file(s)"
) -> None:
    """Raise the one-line error that names unusable images (``{kind: [(name, detail)]}``), if there are any.

    ``noun`` is what the names are: ``file(s)``, or ``image(s)`` for rows of a dataset.
    """
    problems = []
    for kind, items in bad.items():
        if items:
            shown = ", ".join(f"{n}: {d}" if d else n for n, d in items[:3])
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            words = _UNUSABLE_WORDS[kind][0].format(
                where=where, limit="no" if limit is None else f"{limit:,}", noun=noun
            )
            problems.append(f"{len(items)} {words} ({shown}{more})")
    require(
        not problems,
        "; ".join(problems)
        + "; fix or remove them, or pass --bad-images skip to leave them out"
        + (" (or --max-pixels N to raise the limit)" if bad.get("too-large") else ""),
    )


def decode_entries(
    where: str,
    entries: dict[str, list[tuple[str, int]]],
    read: Callable[[int], np.ndarray],
    class_names: tuple[str, ...],
    opts: SourceOptions,
    *,
    notes: list[str],
    files: bool,
    work: Path,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Decode every image of a source into the cached arrays: the one pipeline of folders, ``list:`` and ``hf:``.

    Args:
        where: the source, as messages name it.
        entries: ``{"train": [(name, label), ...], "test": [...]}``; a name identifies its
            image in messages (a path relative to the source, or a row).
        read: ``read(i)`` is the encoded bytes (writable uint8) of the ``i``-th entry, train
            entries first; it raises :class:`UnusableImage` or ``OSError`` for one it cannot give.
        class_names: the names of the labels.
        opts: the bad-file rule, the pixel limit, the image size, the decode workers and the
            progress bar.
        notes: what loading changed, extended here (resized images, skipped files).
        files: record the names as the data set's source files (``train_files``).
        work: this decode's own folder (kept across an interrupted decode): the decoded chunks,
            then the four ``.npy`` files (returned memory-mapped), which :func:`cached_decode`
            moves into the cache entry.

    The images are decoded in chunks (:func:`_decode_chunks`: in parallel worker processes,
    each chunk written once, so an interrupted decode resumes at the first missing chunk) and
    then written, chunk by chunk, into the ``.npy`` files: no step holds more than a chunk in
    memory. Every image's size is checked from its header before it is decoded
    (:func:`_check_pixels`); unusable images refuse the source, grouped by kind and named, or
    are left out with ``bad_files="skip"``. Images are converted to one channel count (colour
    if any is) and brought to one size: ``opts.image_size`` (shorter side to S, then the
    centre S x S), else the native size when no image is above :data:`AUTO_IMAGE_SIZE` pixels
    on a side (the most common size, the others resized to it), else :data:`AUTO_IMAGE_SIZE`.
    """
    names = [name for name, _ in entries["train"] + entries["test"]]
    limit = opts.pixel_limit()
    chunk_paths = _decode_chunks(len(names), read, limit, opts, work / "chunks")
    statuses = [_chunk_status(path) for path in chunk_paths]
    kinds = np.concatenate([k for k, _, _, _ in statuses])
    details = [d for _, d, _, _ in statuses for d in d.tolist()]
    shapes = np.concatenate([sh for _, _, sh, _ in statuses])
    large = bool(any(big.any() for _, _, _, big in statuses))
    bad = {
        kind: [(names[i], details[i]) for i in np.flatnonzero(kinds == code)]
        for kind, code in _KIND_CODES.items()
        if kind != "ok"
    }
    noun = "file(s)" if files else "image(s)"
    if opts.bad_files == "error":
        refuse_unusable(where, bad, limit, noun)
    good = kinds == 0
    require(bool(good.any()), f"no readable images in {where}")
    channels = 3 if bool((shapes[good, 2] >= 3).any()) else 1
    side = opts.image_size or (AUTO_IMAGE_SIZE if large else None)
    if side is not None:
        size = (int(side), int(side))
    else:  # every image at most AUTO_IMAGE_SIZE: the most common native size (ties: the first seen)
        size = Counter(tuple(hw) for hw in shapes[good, :2].tolist()).most_common(1)[0][0]
    out = work / f"out-{uuid.uuid4().hex[:8]}"  # this process's own (see cached_decode's lock)
    out.mkdir(parents=True)
    num_train = len(entries["train"])
    kept = {"train": np.flatnonzero(good[:num_train]), "test": num_train + np.flatnonzero(good[num_train:])}
    resized = _write_images(chunk_paths, len(names), kept, size, channels, square=side is not None, out=out)
    labels = np.asarray([label for _, label in entries["train"] + entries["test"]], dtype=np.int64)
    for split in ("train", "test"):
        np.save(out / f"{split}_labels.npy", labels[kept[split]], allow_pickle=False)
    require(len(kept["train"]) > 0, f"no readable training images in {where}")
    if opts.image_size is not None:
        notes.append(
            f"images were brought to {side}x{side} as --image-size {side} asks (shorter side to {side}, "
            "then the centre square)"
        )
    elif side is not None:
        notes.append(
            f"images above {AUTO_IMAGE_SIZE} px were found, so every image was brought to {side}x{side} (shorter "
            f"side to {side}, then the centre square), the default; --image-size S chooses another size"
        )
    elif resized:
        notes.append(f"{resized} image(s) differed from the common size {size[0]}x{size[1]} and were resized to it")
    shown_limit = "no" if limit is None else f"{limit:,}"
    for kind, items in bad.items():
        if items:
            listed = ", ".join(f"{n} ({d})" if d else n for n, d in items[:3]) + (", ..." if len(items) > 3 else "")
            words = _UNUSABLE_WORDS[kind][1].format(limit=shown_limit, noun=noun)
            notes.append(f"{len(items)} {words} were skipped: {listed}")
    meta = {
        "class_names": list(class_names),
        "train_files": [names[i] for i in kept["train"]] if files else None,
        "test_files": [names[i] for i in kept["test"]] if files else None,
        "skipped_files": [name for items in bad.values() for name, _ in items],
        "notes": notes,
        "image_size": side,
        "fingerprint": _names_fingerprint(
            fingerprint_npy_files(*(out / f"{key}.npy" for key in _ARRAY_NAMES)), class_names
        ),
    }
    return {key: _load_array(out / f"{key}.npy") for key in _ARRAY_NAMES}, meta


#: Images at most this many pixels on a side keep their native size unless ``--image-size`` says
#: otherwise; a source with larger ones is brought to this size (the models' cost grows with it).
AUTO_IMAGE_SIZE = 64
#: Images per decoded chunk: the unit one worker decodes and writes, and that a resumed decode skips.
DECODE_CHUNK_IMAGES = 2048
#: How a chunk records each entry's outcome (``ok`` or an :class:`UnusableImage` kind).
_KIND_CODES = {"ok": 0, "unreadable": 1, "missing": 2, "too-large": 3}


def default_decode_workers() -> int:
    """Worker processes of a decode: one per core, at most 8 (reading the files becomes the limit)."""
    return max(1, min(8, os.cpu_count() or 1))


#: The arguments of :func:`_decode_chunk` for one chunk: its reader (files) or encoded bytes, the
#: pixel limit, the image size and the chunk file to write.
ChunkJob = tuple[ImageFiles | list[np.ndarray | tuple[str, str]], int | None, int | None, Path]
#: Runs the chunks ``todo`` (their jobs made by ``job(i)``), calling ``finished(i)`` here as each is written.
ChunkDispatch = Callable[[list[int], Callable[[int], ChunkJob], Callable[[int], None]], None]


def _decode_chunks(
    total: int, read: Callable[[int], np.ndarray], limit: int | None, opts: SourceOptions, folder: Path
) -> list[Path]:
    """Decode the ``total`` entries into chunk files in ``folder`` (those already there are kept); their paths.

    Worker processes, or Ray tasks (``opts.executor``; :func:`_chunk_dispatcher` chooses), decode
    the chunks (:func:`_decode_chunk`), at most two per worker or cluster CPU in flight; an
    :class:`ImageFiles` reader gives each worker its chunk's files to read, any
    other (``read`` need not pickle: a table in memory) is read here and its bytes sent. A
    chunk file is written atomically once decoded, so a decode killed at any point restarts
    at its first missing chunk; ``plan.json`` holds what the chunks were cut for, and chunks
    of another plan are discarded.
    """
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    plan = {"images": total, "chunk_images": DECODE_CHUNK_IMAGES, "image_size": opts.image_size, "limit": limit}
    plan_path = folder / "plan.json"
    try:
        same_plan = read_json(plan_path) == plan
    except SampleSiftError:
        same_plan = False
    if not same_plan:
        for stale in folder.glob("chunk-*.npz"):
            stale.unlink()
        atomic_write_json(plan_path, plan)
    starts = range(0, total, DECODE_CHUNK_IMAGES)
    paths = [folder / f"chunk-{i:06d}.npz" for i in range(len(starts))]
    todo = [i for i, path in enumerate(paths) if not path.is_file()]

    def size(i: int) -> int:
        return min(DECODE_CHUNK_IMAGES, total - starts[i])

    def job(i: int) -> ChunkJob:
        stop = starts[i] + size(i)
        if isinstance(read, ImageFiles):
            return read.part(starts[i], stop), limit, opts.image_size, paths[i]
        return [_read_raw(read, j) for j in range(starts[i], stop)], limit, opts.image_size, paths[i]

    done = total - sum(size(i) for i in todo)
    report = getattr(_progress_hooks, "report", None)
    start = time.monotonic()
    with tqdm(total=total, initial=done, disable=not opts.progress, desc="decode", unit="img") as bar:

        def finished(i: int) -> None:
            nonlocal done
            done += size(i)
            bar.update(size(i))
            if report is not None:
                report(done, total, time.monotonic() - start)

        if todo:
            _chunk_dispatcher(opts, len(todo))(todo, job, finished)
    return paths


def _chunk_dispatcher(opts: SourceOptions, chunks: int) -> ChunkDispatch:
    """How the chunk jobs are run (``chunks`` of them): the one thing the executor and the worker count change.

    Every dispatcher runs the same :func:`_decode_chunk` on the same jobs, which write the same
    chunk files, so the arrays are identical whichever decodes them; which chunks are done
    already (the resume) and the progress are :func:`_decode_chunks`' own, for all of them.
    """
    if opts.executor == "ray":
        return partial(_decode_on_ray, address=opts.ray_address)
    workers = min(opts.decode_workers or default_decode_workers(), chunks)
    return _decode_here if workers <= 1 else partial(_decode_in_workers, workers=workers)


def _decode_here(todo: list[int], job: Callable[[int], ChunkJob], finished: Callable[[int], None]) -> None:
    """Decode the chunks of ``todo`` one after another in this process (one worker, or one chunk)."""
    for i in todo:
        _decode_chunk(*job(i))
        finished(i)


def _decode_on_ray(
    todo: list[int], job: Callable[[int], ChunkJob], finished: Callable[[int], None], *, address: str | None
) -> None:
    """Decode the chunks of ``todo`` as Ray tasks (one CPU each) on the cluster at ``address``.

    Each task runs :func:`_decode_chunk` and writes its chunk file itself, as a local worker
    does, so on a cluster of several machines the workspace (its ``cache/`` folder) and the
    source's files must be on a file system every node mounts at the same path: only their
    paths are sent (the encoded bytes of a reader that is not :class:`ImageFiles` are sent as
    they are). A task is retried if its worker dies (a chunk is written atomically, so twice
    is harmless); at most two tasks per cluster CPU wait at a time (:func:`toolkit.cluster.run_tasks`).
    """
    with ray_session(address) as ray:
        run_tasks(ray, _decode_chunk, ((i, job(i)) for i in todo), lambda i, _: finished(i))


def _decode_in_workers(
    todo: list[int],
    job: Callable[[int], ChunkJob],
    finished: Callable[[int], None],
    *,
    workers: int,
) -> None:
    """Run :func:`_decode_chunk` on every chunk of ``todo`` in ``workers`` spawned processes."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    # Spawned, not forked: a fork of a process running torch's thread pools can deadlock.
    context = multiprocessing.get_context("spawn")
    pending: dict[Future[None], int] = {}
    queue = iter(todo)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_decode_worker) as pool:
        try:
            for i in queue:
                pending[pool.submit(_decode_chunk, *job(i))] = i
                if len(pending) >= 2 * workers:  # bound the encoded bytes held for the workers
                    ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in ready:
                        future.result()
                        finished(pending.pop(future))
            for future in list(pending):
                future.result()
                finished(pending.pop(future))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _init_decode_worker() -> None:
    """A decode worker uses one thread: the workers are the parallelism."""
    import torch

    torch.set_num_threads(1)


def _read_raw(read: Callable[[int], np.ndarray], index: int) -> np.ndarray | tuple[str, str]:
    """The encoded bytes of entry ``index``, or ``(kind, detail)`` of why it cannot be read."""
    try:
        return read(index)
    except UnusableImage as exc:
        return exc.kind, exc.detail
    except Exception:  # any reader failure means the image is unusable
        return "unreadable", ""


def _decode_chunk(
    source: ImageFiles | list[np.ndarray | tuple[str, str]], limit: int | None, image_size: int | None, path: Path
) -> None:
    """Decode one chunk's images (its files, or their encoded bytes) and write them to ``path`` (atomically).

    Each image is checked against the pixel limit from its header, decoded, and resized at
    once when it has to be (``image_size``, or above :data:`AUTO_IMAGE_SIZE` on a side when no
    size is given), so a chunk of large photos never holds them at full size. The archive
    holds the pixels of the usable images back to back, each entry's shape, outcome
    (:data:`_KIND_CODES`) and detail, and whether it was above :data:`AUTO_IMAGE_SIZE`.
    """
    pixels, shapes, kinds, details, large = [], [], [], [], []
    with warnings.catch_warnings(), _pillow_admits(limit):
        # torchvision 0.29 deprecates its decoders in favour of torchcodec; they still work and
        # are 3-4x faster than Pillow here. Pillow remains the fallback for other formats.
        warnings.simplefilter("ignore", DeprecationWarning)
        # Files are read one at a time, as they are decoded.
        raws = (_read_raw(source, j) for j in range(len(source))) if isinstance(source, ImageFiles) else source
        for raw in raws:
            kind, detail, image, above, side = "ok", "", None, False, None
            if isinstance(raw, tuple):
                kind, detail = raw
            else:
                try:
                    width, height = _check_pixels(raw, limit)
                    above = max(width, height) > AUTO_IMAGE_SIZE
                    side = image_size or (AUTO_IMAGE_SIZE if above else None)
                    image = _decode_jpeg_reduced(raw, side) if side is not None else None
                    if image is None:
                        image = _decode_image(raw)
                except UnusableImage as exc:
                    kind, detail = exc.kind, exc.detail
                except Exception:  # any decoder failure means the image is unusable
                    kind = "unreadable"
            if image is not None:
                if side is not None and image.shape[:2] != (side, side):
                    image = fit_square(image, side)
                pixels.append(image.reshape(-1))
            shapes.append(image.shape if image is not None else (0, 0, 0))
            kinds.append(_KIND_CODES[kind])
            details.append(detail)
            large.append(above)
    atomic_save_npz(
        path,
        pixels=np.concatenate(pixels) if pixels else np.zeros(0, np.uint8),
        shapes=np.asarray(shapes, dtype=np.int64).reshape(-1, 3),
        kinds=np.asarray(kinds, dtype=np.int8),
        details=np.asarray(details, dtype=str),
        large=np.asarray(large, dtype=bool),
    )


def _chunk_status(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A chunk's outcomes, details, shapes and above-the-default flags (not its pixels)."""
    with np.load(path, allow_pickle=False) as archive:
        return archive["kinds"], archive["details"], archive["shapes"], archive["large"]


def _write_images(
    chunk_paths: list[Path],
    total: int,
    kept: dict[str, np.ndarray],
    size: tuple[int, int],
    channels: int,
    *,
    square: bool,
    out: Path,
) -> int:
    """Write the kept entries (of ``total``) of each split to ``out/<split>_images.npy``; how many were resized.

    Images of another size are brought to ``size`` with :func:`fit_square` when ``square``
    (a chosen image size), else stretched to it (the common native size). Written chunk by
    chunk with plain file writes (the header first), not through a memory map, so the pages
    written do not count against this process's memory.
    """
    shape = (*size, channels)
    resized = 0
    handles = {}
    try:
        for split, indices in kept.items():
            handles[split] = open(out / f"{split}_images.npy", "wb")  # noqa: SIM115 (closed below)
            header = {"descr": np.dtype(np.uint8).str, "fortran_order": False, "shape": (len(indices), *shape)}
            np.lib.format.write_array_header_1_0(handles[split], header)
        splits = list(kept)
        owner = np.full(total, -1, dtype=np.int64)  # the split each entry goes to (-1: left out)
        for code, split in enumerate(splits):
            owner[kept[split]] = code
        offset = 0
        for path in chunk_paths:
            with np.load(path, allow_pickle=False) as archive:
                pixels, shapes = archive["pixels"], archive["shapes"]
            ends = np.cumsum(np.prod(shapes, axis=1))
            blocks: dict[str, list[bytes]] = {split: [] for split in splits}
            for j, image_shape in enumerate(shapes.tolist()):
                entry = offset + j
                if owner[entry] < 0:
                    continue
                image = pixels[ends[j] - np.prod(image_shape) : ends[j]].reshape(image_shape)
                image = _to_channels(image, channels)
                if image.shape[:2] != size:
                    image = fit_square(image, size[0]) if square else _resize(image, size)
                    resized += 1
                blocks[splits[owner[entry]]].append(image.tobytes())
            offset += len(shapes)
            for split, parts in blocks.items():
                handles[split].write(b"".join(parts))
    finally:
        for handle in handles.values():
            handle.close()
    return resized


def fit_square(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` (H x W x C uint8) with its shorter side scaled to ``side``, then its centre ``side`` x ``side``.

    Bilinear with Pillow, which widens its filter when it shrinks (no aliasing from skipped
    pixels); the crop keeps the middle, as the classifier's evaluation crop does.
    """
    height, width = image.shape[:2]
    scale = side / min(height, width)
    new_h, new_w = max(side, round(height * scale)), max(side, round(width * scale))
    if (new_h, new_w) != (height, width):
        image = _resize(image, (new_h, new_w))
    top, left = (new_h - side) // 2, (new_w - side) // 2
    return np.ascontiguousarray(image[top : top + side, left : left + side])


# --------------------------------------------------------------------------- the decode cache

_ARRAY_NAMES = ("train_images", "train_labels", "test_images", "test_labels")


def cached_decode(
    ws: Workspace,
    name: str,
    spec: str,
    source: str,
    source_key: str,
    decode: Callable[[Path], tuple[dict[str, np.ndarray], dict[str, Any]]],
    *,
    origin: str | None = None,
) -> ImageDataset:
    """Return the cached decode of a source, decoding (and caching) it when absent or stale.

    Args:
        ws: the workspace whose cache holds it.
        name: the data set's name (also the start of the cache folder's name).
        spec: the data spec it was loaded from.
        source: the folder the data set's files are relative to (:attr:`ImageDataset.source`).
        source_key: the fingerprint of everything that decides the arrays (files, options,
            decoder version); a cache entry with another key is never served.
        decode: on a miss, ``decode(work)`` makes the arrays and the cache record (class names,
            files, notes, the fingerprint where it computed it); ``work`` is its own folder,
            kept when it is interrupted (a resumable decode's chunks); arrays memory-mapped from
            files in it are moved into the cache entry, not copied.
        origin: what identifies the source among cache entries, when ``source`` does not (two
            ``list:`` CSVs in one folder): a new entry replaces the older ones of its origin.
    """
    origin = origin or source
    cache_name = safe_name(f"{_slug(name)}-{source_key[:16]}", "cache name")
    folder = ws.cache_dir / cache_name
    cached = _read_cache(folder, source_key, name, spec, source)
    if cached is not None:
        return cached
    # One decoder per source at a time (two sweep workers may start on the same new source):
    # the second waits, then finds the first one's cache entry.
    # The lock is outside the workspace, so that a refused source leaves nothing behind in it.
    lock = Path(tempfile.gettempdir()) / "samplesift-locks" / f"{fingerprint_bytes(str(folder.resolve()))[:20]}.lock"
    with exclusive_lock(lock, "unused: waits for the lock", wait_s=math.inf):
        try:
            cached = _read_cache(folder, source_key, name, spec, source)
            if cached is not None:
                return cached
            work = ws.cache_dir / f".partial-{cache_name}"  # hidden: never taken for a stale entry
            try:
                arrays, meta = decode(work)
            except SampleSiftError:
                _remove_work(work, ws)  # refused (bad files, no test split): nothing to resume
                raise
            if "fingerprint" not in meta:  # sources decoded in memory (decode_entries fingerprints its files)
                meta["fingerprint"] = content_fingerprint(
                    *(arrays[k] for k in _ARRAY_NAMES), tuple(meta["class_names"])
                )
            meta.update(source_key=source_key, source=source, origin=origin)
            with atomic_directory(folder) as tmp:
                for key in _ARRAY_NAMES:
                    written = getattr(arrays[key], "filename", None)  # decode_entries' memory-mapped files
                    if written is not None and Path(written).resolve().is_relative_to(work.resolve()):
                        os.replace(written, tmp / f"{key}.npy")  # moved, not copied (a map of it stays valid)
                    else:
                        np.save(tmp / f"{key}.npy", arrays[key], allow_pickle=False)
                atomic_write_json(tmp / "meta.json", meta)
            shutil.rmtree(work, ignore_errors=True)
        finally:
            # Tidy the temporary folder. A process already waiting on this file still gets its lock and
            # finds the entry; only after a refusal could it and a newcomer (a new file) both decode.
            lock.unlink(missing_ok=True)
    _remove_stale_caches(ws, folder, origin)
    dataset = _read_cache(folder, source_key, name, spec, source)
    require(dataset is not None, f"the decoded cache entry {folder} cannot be read back; check the disk and retry")
    assert dataset is not None
    return dataset


def _remove_work(work: Path, ws: Workspace) -> None:
    """Delete a refused decode's folder, and the cache folders it created if they are left empty."""
    shutil.rmtree(work, ignore_errors=True)
    for parent in (ws.cache_dir, ws.cache_dir.parent):
        try:
            parent.rmdir()  # only an empty folder: another source's entries stay
        except OSError:
            break


def _read_cache(folder: Path, source_key: str, name: str, spec: str, source: str) -> ImageDataset | None:
    """The data set in cache entry ``folder`` if it was decoded from ``source_key`` (images memory-mapped)."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = read_json(meta_path, "cache record")
        if meta.get("source_key") != source_key:
            return None
        arrays = {key: _load_array(folder / f"{key}.npy") for key in _ARRAY_NAMES}
    except (SampleSiftError, OSError, ValueError):
        return None  # a damaged cache entry is simply decoded again
    return _dataset_from_cache(name, spec, source, arrays, meta)


def _load_array(path: Path) -> np.ndarray:
    """A cached array: images memory-mapped read-only (they need not fit in memory), labels read."""
    return np.load(path, mmap_mode="r" if path.stem.endswith("_images") else None, allow_pickle=False)


def _remove_stale_caches(ws: Workspace, keep: Path, origin: str) -> None:
    """Delete older cache entries of the same source (``origin``): they can never be served again."""

    for other in ws.cache_dir.iterdir():
        # Hidden entries are other processes' folders under construction or being swapped
        # out (see atomic_directory): deleting one would crash that process.
        if other == keep or other.name.startswith(".") or not (other / "meta.json").is_file():
            continue
        try:
            meta = read_json(other / "meta.json")
            if meta.get("origin", meta.get("source")) == origin:  # entries from before origins: their source
                shutil.rmtree(other, ignore_errors=True)
        except SampleSiftError:
            continue


def _dataset_from_cache(
    name: str, spec: str, source: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]
) -> ImageDataset:
    train_files = meta.get("train_files")
    test_files = meta.get("test_files")
    notes = tuple(meta.get("notes", ()))
    skipped = tuple(meta.get("skipped_files", ()))
    for note in notes:
        warnings.warn(f"{source}: {note}", stacklevel=4)
    return _make_dataset(
        _slug(name),
        spec,
        source,
        tuple(arrays[k] for k in _ARRAY_NAMES),  # type: ignore[arg-type]
        tuple(meta["class_names"]),
        fingerprint=meta["fingerprint"],
        train_files=None if train_files is None else tuple(train_files),
        test_files=None if test_files is None else tuple(test_files),
        skipped_files=skipped,
        notes=notes,
    )


def _slug(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-_")
    return cleaned or "data"
