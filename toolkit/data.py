"""Loading image data sets into uint8 arrays, once, with an on-disk cache.

A *data spec* names where images come from:

``digits``
    scikit-learn's 8x8 grayscale digits (ships with scikit-learn: works offline). Split into
    train/test with a fixed, stratified 80/20 split (seed 0).
``cifar10`` or ``cifar10:ROOT``
    CIFAR-10 in torchvision's own format under ``ROOT`` (default ``<workspace>/downloads``),
    downloaded by torchvision when absent and the network allows it.
``path/to/folder``
    an image-folder tree ``folder/train/<class>/*.jpg`` and ``folder/test/<class>/*.jpg``
    (the layout ``torchvision.datasets.ImageFolder`` reads), or a folder holding
    torchvision's ``cifar-10-batches-py``.
``path/to/file.npz``
    a NumPy archive with ``train_images``/``test_images`` (uint8, N x H x W x C or N x H x W),
    ``train_labels``/``test_labels`` (integers) and optionally ``class_names``.
``list:FILE.csv``
    a CSV of image paths and labels (see :mod:`toolkit.sources`).
``hf:PATH``
    a Hugging Face ``datasets`` dataset saved with ``save_to_disk``, or a folder of parquet
    files (see :mod:`toolkit.sources`).

Every source becomes an :class:`~toolkit.images.ImageDataset`; image files (folders, ``list:``
and ``hf:``) are decoded and cached by the one pipeline in :mod:`toolkit.images`.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.artifacts import (
    fingerprint_bytes,
)
from toolkit.errors import SampleSiftError, require
from toolkit.images import (
    DECODER_VERSION,
    LOAD_OPTIONS,
    BadFiles,
    ImageDataset,
    ImageFiles,
    SourceOptions,
    _make_dataset,
    cached_decode,
    decode_entries,
    file_listing,
    hold_out_test,
)
from toolkit.workspace import Workspace, as_workspace


#: Bump when decoding changes, so caches written by older code are not reused.
#: 2: palette and 16-bit PNGs and CMYK JPEGs are converted to colours (1 decoded them raw).
#: 3: images above the pixel limit are refused or skipped (2 decoded them, however large).
def load_dataset(
    spec: str = "digits",
    *,
    workspace: Workspace | str | Path | None = None,
    max_per_class: int | None = None,
    bad_files: BadFiles = "error",
    progress: bool = False,
    max_pixels: int | None = None,
    test_fraction: float | None = None,
    test_seed: int = 0,
    allow_outside_root: bool = False,
    image_column: str | None = None,
    label_column: str | None = None,
    image_size: int | None = None,
    decode_workers: int | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> ImageDataset:
    """Load a data set from a spec (see the module docstring), decoding at most once.

    Args:
        spec: ``digits``, ``cifar10[:ROOT]``, an image-folder path, an ``.npz`` path,
            ``list:FILE.csv`` or ``hf:PATH``.
        workspace: where the decode cache (and torchvision downloads) live.
        max_per_class: keep only the first N images of each class (train and test): quick
            subsets for trying things out.
        bad_files: what to do with unusable images (unreadable, truncated, non-image, missing
            or above the pixel limit): ``"error"`` refuses the source and names them, ``"skip"``
            leaves them out and lists them in :attr:`ImageDataset.skipped_files`.
        progress: show a progress bar while decoding.
        max_pixels, image_size, test_fraction, test_seed, allow_outside_root, image_column,
        label_column: see :class:`SourceOptions`. The ones that are set are recorded in
            :attr:`ImageDataset.load_options`.
        decode_workers, executor, ray_address: where a new source is decoded (local worker
            processes, or tasks on a Ray cluster); see :class:`SourceOptions`. The arrays are the
            same wherever, so these are not recorded.

    Raises:
        SampleSiftError: the source is missing, empty, malformed, lacks a test split (without
            ``test_fraction``) or (with ``bad_files="error"``) holds unusable images.
    """
    opts = SourceOptions(
        bad_files=bad_files,
        max_pixels=max_pixels,
        test_fraction=test_fraction,
        test_seed=test_seed,
        allow_outside_root=allow_outside_root,
        image_column=image_column,
        label_column=label_column,
        progress=progress,
        image_size=image_size,
        decode_workers=decode_workers,
        executor=executor,
        ray_address=ray_address,
    )
    opts.validate()
    ws = as_workspace(workspace)
    spec = str(spec).strip()
    require(
        bool(spec), "the data spec is empty; use digits, cifar10, a folder path, an .npz path, list:FILE.csv or hf:PATH"
    )
    kind, _, rest = spec.partition(":")
    _refuse_unused_options(spec, kind, opts)
    if spec == "digits":
        dataset = _load_digits()
    elif kind == "cifar10":
        root = Path(rest or ws.downloads_dir).expanduser()
        dataset = _load_torchvision_cifar10(root, spec, ws, download=True, progress=progress)
    elif kind in ("list", "hf"):
        require(bool(rest), f"--data {spec} names nothing; give list:FILE.csv or hf:PATH")
        from toolkit import sources

        load = sources.load_list if kind == "list" else sources.load_hf
        dataset = load(Path(rest).expanduser(), spec, ws, opts)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise SampleSiftError(
                f"data path {path} does not exist; give an image folder with train/ and test/, "
                "an .npz file, list:FILE.csv, hf:PATH, 'cifar10' or 'digits'"
            )
        if path.is_file():
            require(
                path.suffix == ".npz",
                f"data file {path} is not an .npz archive; give an image folder, an .npz file, "
                "list:FILE.csv for a CSV of image paths and labels, 'cifar10' or 'digits'",
            )
            dataset = _load_npz(path, spec, ws)
        elif (path / "cifar-10-batches-py").is_dir():
            dataset = _load_torchvision_cifar10(path, spec, ws, download=False, progress=progress)
        else:
            dataset = _load_image_folder(path, spec, ws, opts)
    if opts.recorded():
        dataset = replace(dataset, load_options=opts.recorded())
    if max_per_class is not None:
        dataset = dataset.capped(int(max_per_class))
    return dataset


def _refuse_unused_options(spec: str, kind: str, opts: SourceOptions) -> None:
    """Say so when an option is given that the source never reads, rather than ignore it.

    ``--max-pixels`` is the exception: a source of decoded arrays has no image to hold to it
    (so no limit is broken), and the app keeps one limit across the sources it switches between.
    """
    encoded = not (spec == "digits" or kind == "cifar10" or spec.endswith(".npz"))  # sources of image files
    unused = []
    if not encoded:
        unused += ["--test-fraction"] * (opts.test_fraction is not None)
        unused += ["--image-size"] * (opts.image_size is not None)
    if kind != "list":
        unused += ["--allow-outside-root"] * opts.allow_outside_root
    if kind not in ("list", "hf"):
        unused += ["--image-column"] * (opts.image_column is not None)
        unused += ["--label-column"] * (opts.label_column is not None)
    require(
        not unused,
        f"{', '.join(unused)} does not apply to --data {spec} (--test-fraction and --image-size apply to image "
        "folders, list: and hf: sources, whose images are decoded; --image-column and --label-column to list: and hf:; "
        "--allow-outside-root to list:); leave it out",
    )


# --------------------------------------------------------------------------- digits


def load_recorded(record: dict[str, Any], *, workspace: Workspace | str | Path | None, owner: str) -> ImageDataset:
    """The data set ``owner`` (a run) recorded: its spec, cap, bad-file rule and load options, refused if its
    content changed."""
    options = record.get("load_options") or {}
    require(
        isinstance(options, dict) and set(options) <= set(LOAD_OPTIONS),
        f"the data record of {owner} was edited or damaged: load_options must hold only {', '.join(LOAD_OPTIONS)}",
    )
    dataset = load_dataset(
        record["spec"],
        workspace=workspace,
        max_per_class=record.get("max_per_class"),
        bad_files=record.get("bad_files", "error"),
        **options,
    )
    require(
        dataset.fingerprint == record["fingerprint"],
        f"the data behind {owner} changed (fingerprint {dataset.fingerprint[:10]}, "
        f"recorded {str(record['fingerprint'])[:10]}); it cannot be resumed, start a new run",
    )
    return dataset


def _load_digits() -> ImageDataset:
    import sklearn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    # Pixel values are 0..16; stretch them to the uint8 range the pipeline expects.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=0, stratify=labels)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return _make_dataset(
        "digits",
        "digits",
        f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__})",
        (images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]),
        tuple(str(i) for i in range(10)),
    )


# --------------------------------------------------------------------------- .npz


def _load_npz(path: Path, spec: str, ws: Workspace) -> ImageDataset:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            required = {"train_images", "train_labels", "test_images", "test_labels"}
            missing = sorted(required - keys)
            require(
                not missing,
                f"{path} lacks the array(s) {', '.join(missing)}; an .npz data set needs "
                "train_images, train_labels, test_images, test_labels (and optionally class_names)",
            )
            arrays = [archive[k] for k in ("train_images", "train_labels", "test_images", "test_labels")]
            names = archive["class_names"] if "class_names" in keys else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, SampleSiftError):
            raise
        # A truncated or damaged archive raises BadZipFile/EOFError, not OSError.
        raise SampleSiftError(f"cannot read {path} as an .npz archive ({type(exc).__name__}: {exc})") from None
    images = []
    for split, image_array in (("train", arrays[0]), ("test", arrays[2])):
        require(
            image_array.dtype == np.uint8,
            f"{path}: {split}_images must be uint8 (got {image_array.dtype}); scale to 0..255 and cast",
        )
        if image_array.ndim == 3:
            image_array = image_array[..., None]
        require(
            image_array.ndim == 4 and image_array.shape[3] in (1, 3),
            f"{path}: {split}_images must be N x H x W x C with C = 1 or 3 (got shape {image_array.shape})",
        )
        images.append(np.ascontiguousarray(image_array))
    require(
        images[0].shape[1:] == images[1].shape[1:],
        f"{path}: train and test images differ in shape ({images[0].shape[1:]} vs {images[1].shape[1:]})",
    )
    labels = []
    for split, label_array, image_array in (("train", arrays[1], images[0]), ("test", arrays[3], images[1])):
        require(
            np.issubdtype(label_array.dtype, np.integer) and label_array.ndim == 1,
            f"{path}: {split}_labels must be a 1-d integer array (got {label_array.dtype}, shape {label_array.shape})",
        )
        require(
            len(label_array) == len(image_array),
            f"{path}: {len(image_array)} {split} images but {len(label_array)} {split} labels",
        )
        require(
            len(label_array) == 0 or label_array.min() >= 0,
            f"{path}: {split}_labels has negative values",
        )
        labels.append(label_array.astype(np.int64))
    require(len(labels[0]) > 0, f"{path}: train_images is empty")
    num_classes = int(max(labels[0].max(), labels[1].max(initial=0))) + 1
    if names is None:
        class_names = tuple(str(i) for i in range(num_classes))
    else:
        class_names = tuple(str(n) for n in names.tolist())
        require(
            len(class_names) >= num_classes,
            f"{path}: labels go up to {num_classes - 1} but class_names has {len(class_names)} entries",
        )
    return _make_dataset(
        path.stem, spec, str(path.resolve()), (images[0], labels[0], images[1], labels[1]), class_names
    )


# --------------------------------------------------------------------------- torchvision CIFAR-10


def _load_torchvision_cifar10(root: Path, spec: str, ws: Workspace, *, download: bool, progress: bool) -> ImageDataset:
    batches = root / "cifar-10-batches-py"
    if not batches.is_dir():
        if not download:
            raise SampleSiftError(f"{root} holds no cifar-10-batches-py folder")
        _download_cifar10(root)
    listing = file_listing(batches, sorted(p for p in batches.iterdir() if p.is_file()))
    source_key = fingerprint_bytes(DECODER_VERSION, "torchvision-cifar10", str(batches.resolve()), listing)

    def decode(_work: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:  # decoded in memory: no work folder
        import torchvision

        try:
            train = torchvision.datasets.CIFAR10(str(root), train=True, download=False)
            test = torchvision.datasets.CIFAR10(str(root), train=False, download=False)
        except RuntimeError as exc:
            raise SampleSiftError(
                f"the CIFAR-10 files in {batches} failed torchvision's integrity check ({exc}); "
                "delete the folder and download again, or point --data at an image-folder copy"
            ) from None
        arrays = {
            "train_images": np.ascontiguousarray(train.data),
            "train_labels": np.asarray(train.targets, dtype=np.int64),
            "test_images": np.ascontiguousarray(test.data),
            "test_labels": np.asarray(test.targets, dtype=np.int64),
        }
        return arrays, {"class_names": list(train.classes)}

    return cached_decode(ws, "cifar10", spec, str(root.resolve()), source_key, decode)


def _download_cifar10(root: Path) -> None:
    import torchvision

    try:
        root.mkdir(parents=True, exist_ok=True)
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
    except Exception as exc:  # torchvision raises URLError, OSError, RuntimeError...
        raise SampleSiftError(
            f"CIFAR-10 is not in {root} and could not be downloaded ({type(exc).__name__}: {exc}); "
            "point --data at a local copy: an image-folder tree such as ../shared/datasets/cifar10, "
            "or cifar10:DIR where DIR holds torchvision's cifar-10-batches-py"
        ) from None


# --------------------------------------------------------------------------- image folders


def _scan_split(split_dir: Path) -> tuple[list[str], dict[str, list[tuple[str, int, int]]]]:
    """Class folders of one split and their non-hidden files (name, size, mtime), sorted."""
    classes: dict[str, list[tuple[str, int, int]]] = {}
    loose: list[str] = []
    current = split_dir
    try:
        with os.scandir(split_dir) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    files = []
                    current = Path(entry.path)
                    with os.scandir(entry.path) as children:
                        for child in children:
                            if not child.name.startswith(".") and child.is_file():
                                stat = child.stat()
                                files.append((child.name, stat.st_size, stat.st_mtime_ns))
                    classes[entry.name] = sorted(files)
                elif entry.is_file():
                    loose.append(entry.name)
    except OSError as exc:  # a folder we may not list: say which, before decoding anything
        raise SampleSiftError(
            f"cannot list {current} ({exc.strerror or exc}); fix its permissions or remove it"
        ) from None
    return sorted(loose), dict(sorted(classes.items()))


def _load_image_folder(root: Path, spec: str, ws: Workspace, opts: SourceOptions) -> ImageDataset:
    train_dir, test_dir = root / "train", root / "test"
    if not train_dir.is_dir():
        raise SampleSiftError(
            f"folder {root} has no train/ and test/ subfolders; expected {root}/train/<class>/<image> "
            f"and {root}/test/<class>/<image> (the shared copy's layout)"
        )
    require(
        test_dir.is_dir() or opts.test_fraction is not None,
        f"folder {root} has train/ but no test/ split; add {root}/test/<class>/<image>, or pass "
        "--test-fraction F (e.g. 0.2) to hold out a seeded share of each class of train/ as the test split",
    )
    loose_train, train_classes = _scan_split(train_dir)
    loose_test, test_classes = _scan_split(test_dir) if test_dir.is_dir() else ([], {})
    notes: list[str] = []
    class_names = tuple(name for name, files in train_classes.items() if files)
    for name, files in train_classes.items():
        if not files:
            notes.append(f"class folder train/{name} is empty and was left out")
    require(
        bool(class_names),
        f"{train_dir} has no class folders with images; expected {train_dir}/<class>/<image>",
    )
    foreign = sorted(name for name, files in test_classes.items() if files and name not in class_names)
    require(
        not foreign,
        f"test/ has classes that train/ lacks: {', '.join(foreign[:5])}; both splits must use the same class folders",
    )
    entries: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    listing_lines = []
    for split, classes in (("train", train_classes), ("test", test_classes)):
        for label, name in enumerate(class_names):
            for file, size, mtime in classes.get(name, []):
                rel = f"{split}/{name}/{file}"
                entries[split].append((rel, label))
                listing_lines.append(f"{rel}\t{size}\t{mtime}")
    loose = [f"train/{f}" for f in loose_train] + [f"test/{f}" for f in loose_test]
    if loose:
        notes.append(f"{len(loose)} file(s) directly under train/ or test/ (not in a class folder) were ignored")
    listing = "\n".join(listing_lines)
    source_key = fingerprint_bytes(DECODER_VERSION, "image-folder", str(root.resolve()), opts.cache_key(), listing)

    def decode(work: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        held_out = hold_out_test(entries, opts, str(root), notes=notes)
        # Absolute: a Ray task reads them in its own working folder (on another node, over a shared file system).
        paths = [root.resolve() / rel for rel, _ in held_out["train"] + held_out["test"]]
        return decode_entries(
            str(root),
            held_out,
            ImageFiles(paths),
            class_names,
            opts,
            notes=notes,
            files=True,
            work=work,
        )

    return cached_decode(ws, root.resolve().name, spec, str(root.resolve()), source_key, decode)
