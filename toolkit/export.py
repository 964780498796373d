"""Taking a selection to other tools, and bringing a subset chosen elsewhere back.

Export (:func:`export_selection`, ``samplesift export``) writes a saved selection in one of
four formats:

``csv``
    one row per selected sample, in pick order: ``index`` (into the data set's training
    split), ``label``, ``class``, ``score``, ``picked_by``, ``file`` (the source image,
    relative to the data set's source folder; only where the data set has files) and
    ``dataset`` (the data set key, checked when the file is imported again).
``json``
    the selection manifest (method, parameters, seed, budget, data set and embedding
    fingerprints, toolkit and library versions, indices, scores), plus ``files``, the
    source image of each selected sample where the data set has files.
``npz``
    the selected training images and labels, with the full test split and the class names:
    a SampleSift ``.npz`` data spec (``--data subset.npz`` trains on the subset alone and
    tests on the usual test split). It also holds ``indices``, ``scores`` and ``manifest``
    (the manifest as a JSON string).
``folder``
    an image-folder tree ``OUT/<class>/<image>`` that ``torchvision.datasets.ImageFolder(OUT)``
    reads: the source files copied, or symbolic links to them (``link=True``), where the data
    set has files; PNG files named ``<index>.png`` otherwise. ``OUT/selection.json`` holds the
    manifest (ImageFolder ignores files beside the class folders). Only classes with selected
    samples get a folder, so ImageFolder numbers the classes present in sorted order: compare
    classes by name (``ImageFolder.classes``), not by index.

In plain PyTorch a manifest is one line from a :class:`torch.utils.data.Subset` of any data
set that orders the training samples as SampleSift does (torchvision's
``ImageFolder(ROOT / "train")`` of the same image folder, ``CIFAR10(train=True)`` of the same
batches)::

    subset = manifest_subset("selection.json", train_set)  # checks the length, then Subset(...)

Import (:func:`import_selection`, ``samplesift import``) reads any of the four formats back,
or a CSV of indices or of file names made by another tool, and saves it as a selection of the
data set, so ``samplesift train --selection NAME`` can train on it beside SampleSift's own
selections. Before anything is saved the file is checked against the data set: the data set
it records (manifest fingerprint, CSV ``dataset`` key), the class of every row (CSV
``class``/``label``, image-folder class folders), the images themselves (``.npz``), and the
file names (matched by their trailing path components, so ``airplane/0001.jpg`` and an
absolute path both find ``train/airplane/0001.jpg``). A mismatch is refused with a message
naming it; ``allow_mismatch=True`` (``--allow-mismatch``) imports anyway and records the
problems in the new manifest. Where files are known on both sides they decide which sample a
row is, so a subset chosen on one version of an image folder (say a per-class cap) maps onto
another by file name. Indices out of range, duplicates, and file names the data set lacks
are refused always: no override can make them mean something.

Safety: an existing, non-empty target needs ``overwrite=True`` and is otherwise left exactly
as it was; ``overwrite`` replaces a folder only if it is an earlier export (it holds
``selection.json``), never an arbitrary folder. Files are written under a temporary name and
renamed, folders built in a temporary sibling and renamed when complete
(:func:`toolkit.artifacts.atomic_directory`), so an interrupted export leaves nothing under
the final name. The target is resolved first (``..`` and symbolic links), every path inside
it is confined to it (class names and file names from the data cannot climb out), and a
target that is, contains or lies inside the data set's source, or that is the current or
home folder, is refused.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from toolkit.artifacts import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    confined_path,
    json_text,
    read_json,
    safe_name,
    to_jsonable,
)
from toolkit.errors import SampleSiftError, require
from toolkit.images import IMAGE_EXTENSIONS, ImageDataset
from toolkit.selection import MANIFEST_FORMAT, Selection, build_manifest
from toolkit.selectors import SelectionResult
from toolkit.workspace import Workspace, as_workspace

ExportFormat = Literal["csv", "json", "npz", "folder"]
FORMATS: tuple[str, ...] = ("csv", "json", "npz", "folder")
#: The manifest inside a folder export; its presence marks a folder ``overwrite`` may replace.
FOLDER_MANIFEST = "selection.json"
IMPORTED_METHOD = "imported"
_INDEX_COLUMNS = ("index", "idx", "indices", "sample", "sample_index")
_FILE_COLUMNS = ("file", "path", "filename", "file_name", "filepath", "image")


# --------------------------------------------------------------------------- export


def export_selection(
    selection: Selection,
    dataset: ImageDataset,
    out: str | Path,
    fmt: ExportFormat,
    *,
    overwrite: bool = False,
    link: bool = False,
) -> Path:
    """Write ``selection`` (made on ``dataset``) to ``out`` in format ``fmt``.

    Args:
        selection: a selection of ``dataset`` (see :func:`toolkit.selection.load_selection`).
        dataset: the data set it was made on; its images and files are what gets written.
        out: the file to write (``csv``, ``json``, ``npz``; an existing folder receives
            ``<selection name>.<fmt>``), or the folder to create (``folder``).
        fmt: ``csv``, ``json``, ``npz`` or ``folder`` (see the module docstring).
        overwrite: replace an existing file, or an existing non-empty folder that holds an
            earlier export. Without it such a target is refused and left untouched.
        link: in a folder export, symbolic links to the source files instead of copies
            (needs a data set with files).

    Returns:
        The resolved path written.

    Raises:
        SampleSiftError: unknown format, a selection of another data set, a target that
            exists (without ``overwrite``) or is not safe to write (see the module docstring).
    """
    require(fmt in FORMATS, f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    selection.check_dataset(dataset)
    require(not link or fmt == "folder", "--link only applies to --format folder")
    require(
        not link or dataset.train_files is not None,
        f"--link needs a data set loaded from image files; {dataset.name} has none, "
        "so its images are written as PNG files: drop --link",
    )
    target = _export_target(Path(out), fmt, selection.name, dataset, overwrite)
    if fmt == "folder":
        _write_folder(selection, dataset, target, link=link)  # creates missing parent folders itself
    else:
        content = export_bytes(selection, dataset, fmt)  # first: a failure here leaves no new folder behind
        _make_parents(target)
        atomic_write_bytes(target, content)
    return target


def _make_parents(target: Path) -> None:
    """Create ``target``'s missing parent folders, as a folder export does (``--out new/dir/x.csv``)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SampleSiftError(f"cannot create the folder {target.parent} for --out ({exc.strerror or exc})") from None


def export_bytes(selection: Selection, dataset: ImageDataset, fmt: ExportFormat) -> bytes:
    """The content of a ``csv``, ``json`` or ``npz`` export, in memory (what the app downloads).

    Byte for byte the file :func:`export_selection` writes in that format.

    Raises:
        SampleSiftError: ``folder`` or an unknown format, or a selection of another data set.
    """
    require(
        fmt in FORMATS and fmt != "folder",
        f"export format {fmt!r} has no single-file form; choose one of: csv, json, npz",
    )
    selection.check_dataset(dataset)
    if fmt == "csv":
        return export_table(selection, dataset).to_csv(index=False).encode("utf-8")
    if fmt == "json":
        return json_text(export_manifest(selection, dataset)).encode("utf-8")
    return _npz_bytes(selection, dataset)


def export_table(selection: Selection, dataset: ImageDataset) -> pd.DataFrame:
    """The CSV export as a DataFrame: one row per selected sample, in pick order."""
    indices = selection.indices
    labels = dataset.train_labels[indices]
    table = pd.DataFrame(
        {
            "index": indices,
            "label": labels,
            "class": [dataset.class_names[label] for label in labels],
            "score": selection.scores,
            "picked_by": selection.picked_by,
        }
    )
    if dataset.train_files is not None:
        table["file"] = [dataset.train_files[i] for i in indices]
    table["dataset"] = dataset.key
    return table


def export_manifest(selection: Selection, dataset: ImageDataset) -> dict[str, Any]:
    """The JSON export: the selection manifest plus the source file of each selected sample."""
    manifest = dict(selection.manifest)
    if dataset.train_files is not None:
        manifest["files"] = [dataset.train_files[i] for i in selection.indices]
    return manifest


def read_indices(manifest: str | Path | Selection) -> list[int]:
    """The selected training-sample indices of a manifest file (or :class:`Selection`), in pick order."""
    selection = manifest if isinstance(manifest, Selection) else Selection.from_file(manifest)
    return selection.indices.tolist()


def manifest_subset(manifest: str | Path | Selection, train_set: torch.utils.data.Dataset) -> torch.utils.data.Subset:
    """``torch.utils.data.Subset(train_set, indices)`` for a manifest, after checking the length.

    ``train_set`` must order the training samples as SampleSift did when the selection was
    made (see the module docstring); a different length means it cannot be the same data.
    """
    selection = manifest if isinstance(manifest, Selection) else Selection.from_file(manifest)
    expected = int(selection.manifest["dataset"]["num_train"])
    actual = len(train_set)  # type: ignore[arg-type]
    require(
        actual == expected,
        f"selection {selection.name!r} was made on {expected} training samples "
        f"({selection.manifest['dataset'].get('key')}), but this data set has {actual}; "
        "give the training split it was made on",
    )
    return torch.utils.data.Subset(train_set, selection.indices.tolist())


def _export_target(out: Path, fmt: str, name: str, dataset: ImageDataset, overwrite: bool) -> Path:
    """The resolved path to write, after the overwrite and safety checks."""
    target = out.expanduser().resolve()
    if fmt != "folder" and target.is_dir():
        target = confined_path(target, f"{name}.{fmt}")
    _refuse_precious(target, dataset)
    existing = next(p for p in target.parents if p.exists())  # the root always exists
    require(
        existing.is_dir(),
        f"--out {target} lies under {existing}, which is a file, not a folder; choose another --out "
        "(nothing was written)",
    )
    if fmt == "folder":
        if target.exists():
            require(target.is_dir(), f"{target} is a file; --format folder needs a folder path")
            if any(target.iterdir()):
                require(
                    overwrite,
                    f"{target} exists and is not empty; pass --overwrite to replace it (nothing was changed)",
                )
                require(
                    _is_folder_export(target),
                    f"{target} is not an earlier SampleSift export (it has no {FOLDER_MANIFEST}), so even "
                    "--overwrite will not replace it; choose a new or empty folder (nothing was changed)",
                )
    elif target.exists():
        require(target.is_file(), f"{target} exists and is not a file; choose another --out")
        require(overwrite, f"{target} exists; pass --overwrite to replace it (nothing was changed)")
    return target


def _refuse_precious(target: Path, dataset: ImageDataset) -> None:
    """Refuse targets whose replacement would destroy something that is not an export."""
    for place, what in ((Path.cwd(), "the current folder"), (Path.home(), "your home folder")):
        place = place.resolve()
        require(
            target != place and target not in place.parents,
            f"--out {target} is {what} or holds it; export into a new folder inside it instead",
        )
    source = Path(dataset.source)
    if source.exists():
        source = source.resolve()
        require(
            target != source and target not in source.parents and source not in target.parents,
            f"--out {target} overlaps the data set's source {source}; export outside it "
            "(writing there would change the data set)",
        )


def _is_folder_export(folder: Path) -> bool:
    try:
        return read_json(folder / FOLDER_MANIFEST).get("format") == MANIFEST_FORMAT
    except (SampleSiftError, AttributeError):
        return False


def _npz_bytes(selection: Selection, dataset: ImageDataset) -> bytes:
    indices = selection.indices
    buffer = io.BytesIO()
    np.savez(
        buffer,
        train_images=dataset.train_images[indices],
        train_labels=dataset.train_labels[indices],
        test_images=dataset.test_images,
        test_labels=dataset.test_labels,
        class_names=np.asarray(dataset.class_names, dtype=str),
        indices=indices,
        scores=selection.scores,
        # A plain unicode array, so the archive still loads with allow_pickle=False.
        manifest=np.asarray(json.dumps(to_jsonable(export_manifest(selection, dataset)))),
    )
    return buffer.getvalue()


def class_folders(class_names: tuple[str, ...] | list[str]) -> list[str]:
    """A folder name for each class: the class name where it is a plain name, else a cleaned one.

    Class names come from the data (an ``.npz`` may hold ``T-shirt/top``), so characters
    that could nest or escape folders are replaced; collisions get the label appended.
    """
    folders: list[str] = []
    for label, name in enumerate(class_names):
        cleaned = "".join(c if c.isalnum() or c in "-_.+= " else "_" for c in str(name)).strip(". ")
        folder = cleaned or f"class{label}"
        if folder in folders:
            folder = f"{folder}_{label}"
        folders.append(folder)
    return folders


def _write_folder(selection: Selection, dataset: ImageDataset, target: Path, *, link: bool) -> None:
    folders = class_folders(dataset.class_names)
    source = Path(dataset.source)
    with atomic_directory(target, replace=True) as tmp:
        for folder in sorted(set(folders[label] for label in dataset.train_labels[selection.indices])):
            confined_path(tmp, folder).mkdir()
        for index in selection.indices.tolist():
            folder = folders[int(dataset.train_labels[index])]
            if dataset.train_files is None:
                destination = confined_path(tmp, folder, f"{index}.png")
                _write_image(dataset.train_images[index], None, destination, link=False)
            else:
                relative = dataset.train_files[index]
                destination = confined_path(tmp, folder, PurePosixPath(relative).name)
                if destination.exists():  # two classes' files could share a folder after cleaning
                    destination = confined_path(tmp, folder, f"{index}_{PurePosixPath(relative).name}")
                require(
                    (source / relative).is_file(),
                    f"source image {source / relative} is gone; the data set changed since it was loaded: reload it",
                )
                _write_image(None, source / relative, destination, link=link)
        atomic_write_json(tmp / FOLDER_MANIFEST, export_manifest(selection, dataset))


def _write_image(pixels: np.ndarray | None, source: Path | None, destination: Path, *, link: bool) -> None:
    """One image of a folder export: a copy of or link to ``source``, else ``pixels`` as PNG."""
    if source is None:
        from PIL import Image

        assert pixels is not None
        Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(destination, format="PNG")
    elif link:
        os.symlink(source.resolve(), destination)
    else:
        shutil.copyfile(source, destination)


# --------------------------------------------------------------------------- import


@dataclass
class _Claims:
    """What an import file says about each selected sample, before it is checked.

    Every per-row field is aligned with the rows; ``None`` means the file does not say.
    """

    fmt: str
    indices: np.ndarray | None = None
    files: list[str] | None = None
    classes: list[str | None] | None = None
    labels: np.ndarray | None = None
    scores: np.ndarray | None = None
    images: np.ndarray | None = None
    manifest: dict[str, Any] | None = None
    dataset_key: str | None = None
    dataset_fingerprint: str | None = None

    @property
    def rows(self) -> int:
        for values in (self.indices, self.files):
            if values is not None:
                return len(values)
        return 0


def import_selection(
    path: str | Path,
    dataset: ImageDataset,
    *,
    workspace: Workspace | str | Path | None = None,
    name: str | None = None,
    allow_mismatch: bool = False,
    save: bool = True,
) -> Selection:
    """Read an export (or a CSV of indices or file names) as a selection of ``dataset``.

    Args:
        path: a ``.json`` manifest, a ``.csv``, an ``.npz`` export or a folder export.
        dataset: the data set to import it into; the file is checked against it.
        workspace: where the selection is saved.
        name: the selection's name (default: the manifest's name for an unchanged SampleSift
            selection, else ``imported-<file stem>``).
        allow_mismatch: import even though the file records another data set, or its classes
            or images disagree with ``dataset``; the problems are kept in the manifest.
        save: save the selection in the workspace (``samplesift train --selection NAME``).

    Returns:
        The selection. An unchanged SampleSift manifest of this data set comes back as it was
        (method, parameters, seed and scores kept); anything else becomes method
        ``imported``, its origin and any overridden problems under ``info``.

    Raises:
        SampleSiftError: unreadable file, indices out of range or repeated, file names the data
            set lacks, or (without ``allow_mismatch``) evidence of another data set.
    """
    path = Path(path).expanduser()
    require(path.exists(), f"{path} does not exist; give a .json manifest, a .csv, an .npz or an export folder")
    if path.is_dir():
        claims = _read_folder(path, dataset)
    elif path.suffix.lower() == ".json":
        claims = _read_manifest_file(path)
    elif path.suffix.lower() == ".npz":
        claims = _read_npz(path)
    elif path.suffix.lower() in (".csv", ".tsv", ".txt"):
        claims = _read_csv(path)
    else:
        raise SampleSiftError(f"cannot import {path}: give a .json manifest, a .csv, an .npz or an export folder")
    require(claims.rows > 0, f"{path} lists no samples; nothing to import")
    indices, problems = _resolve(claims, dataset)
    if problems and not allow_mismatch:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise SampleSiftError(
            f"{path} does not fit data set {dataset.key} ({dataset.spec}): {problems[0]}{more}; "
            "load the data set it was made on with --data, or pass --allow-mismatch to import it anyway"
        )
    selection = _as_selection(claims, indices, problems, dataset, path, name)
    if save:
        _save_imported(selection, dataset, as_workspace(workspace))
    return selection


def _read_manifest_file(path: Path) -> _Claims:
    return _manifest_claims(Selection.from_file(path).manifest, "json")


def _manifest_claims(manifest: dict[str, Any], fmt: str) -> _Claims:
    record = manifest["dataset"]
    files = manifest.get("files")
    return _Claims(
        fmt=fmt,
        indices=np.asarray(manifest["indices"], dtype=np.int64),
        files=None if files is None else [str(f) for f in files],
        scores=np.asarray(manifest.get("scores", []), dtype=np.float64) if "scores" in manifest else None,
        manifest=manifest,
        dataset_key=record.get("key"),
        dataset_fingerprint=record.get("fingerprint"),
    )


def _read_npz(path: Path) -> _Claims:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as exc:
        raise SampleSiftError(f"cannot read {path} as an .npz archive ({exc})") from None
    require(
        "indices" in arrays,
        f"{path} has no 'indices' array, so it is not a SampleSift export; "
        "to train on it as a data set of its own, pass it as --data",
    )
    if "manifest" in arrays:
        try:
            manifest = json.loads(str(arrays["manifest"]))
        except json.JSONDecodeError as exc:
            raise SampleSiftError(f"{path}: its 'manifest' is not valid JSON ({exc}); export it again") from None
        claims = _manifest_claims(Selection.from_manifest(manifest, where=f"{path} (manifest)").manifest, "npz")
        require(
            np.array_equal(claims.indices, arrays["indices"]),
            f"{path}: its 'indices' differ from its manifest's; export it again",
        )
    else:
        claims = _Claims(fmt="npz", indices=np.asarray(arrays["indices"]).astype(np.int64))
        if "scores" in arrays:
            claims.scores = arrays["scores"].astype(np.float64)
    if "train_images" in arrays:
        claims.images = arrays["train_images"]
        if "class_names" in arrays and "train_labels" in arrays:
            names = [str(n) for n in arrays["class_names"].tolist()]
            labels = arrays["train_labels"].tolist()
            claims.classes = [names[label] if 0 <= label < len(names) else None for label in labels]
    return claims


def _read_csv(path: Path) -> _Claims:
    separator = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, sep=separator)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SampleSiftError(f"cannot read {path} as a CSV table ({exc})") from None
    columns = {str(c).strip().lower(): c for c in table.columns}
    index_column = next((columns[c] for c in _INDEX_COLUMNS if c in columns), None)
    file_column = next((columns[c] for c in _FILE_COLUMNS if c in columns), None)
    if index_column is None and file_column is None:
        require(
            len(table.columns) == 1,
            f"{path} has no column named index or file (its columns: {', '.join(map(str, table.columns))}); "
            "name the column of sample indices 'index' or the column of file names 'file'",
        )
        # A single column without a header: its first value was read as the header.
        table = pd.read_csv(path, dtype=str, keep_default_na=False, header=None, names=["value"], sep=separator)
        values = table["value"].str.strip()
        if values.str.fullmatch(r"-?\d+").all():
            index_column = "value"
        else:
            file_column = "value"
    claims = _Claims(fmt="csv")
    if index_column is not None:
        claims.indices = _parse_integers(table[index_column], path, index_column)
    if file_column is not None:
        claims.files = [str(v).strip() for v in table[file_column]]
        require(all(claims.files), f"{path}: column {file_column!r} has empty cells; every row needs a file name")
    if "class" in columns:
        claims.classes = [str(v) for v in table[columns["class"]]]
    elif "label" in columns:
        claims.labels = _parse_integers(table[columns["label"]], path, "label")
    if "score" in columns:
        claims.scores = pd.to_numeric(table[columns["score"]], errors="coerce").to_numpy(dtype=np.float64)
    if "dataset" in columns:
        keys = sorted(set(table[columns["dataset"]]) - {""})
        require(len(keys) <= 1, f"{path} mixes rows of several data sets ({', '.join(keys[:3])}); split it first")
        claims.dataset_key = keys[0] if keys else None
    return claims


def _parse_integers(column: pd.Series, path: Path, name: str) -> np.ndarray:
    text = column.astype(str).str.strip()
    bad = ~text.str.fullmatch(r"-?\d+")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise SampleSiftError(
            f"{path}: column {name!r} must hold whole numbers; row {row + 1} holds {column.iloc[row]!r}"
        )
    return text.astype(np.int64).to_numpy()


def _read_folder(path: Path, dataset: ImageDataset) -> _Claims:
    manifest_path = path / FOLDER_MANIFEST
    claims = (
        _manifest_claims(Selection.from_file(manifest_path).manifest, "folder")
        if manifest_path.is_file()
        else _Claims(fmt="folder")
    )
    # What is in the folder now decides the rows: an export may have been curated by hand.
    claims.scores, claims.indices, claims.files = None, None, None
    folder_to_class = dict(zip(class_folders(dataset.class_names), dataset.class_names, strict=True))
    classes: list[str | None] = []
    names: list[str] = []
    for class_dir in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for image in sorted(class_dir.iterdir()):
            if image.name.startswith(".") or image.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            classes.append(folder_to_class.get(class_dir.name, class_dir.name))
            names.append(f"{class_dir.name}/{image.name}")
    require(bool(names), f"{path} holds no <class>/<image> files; give a folder export")
    claims.classes = classes
    if dataset.train_files is not None:
        claims.files = names
    else:
        stems = [PurePosixPath(n).stem for n in names]
        bad = [n for n, s in zip(names, stems, strict=True) if not s.isdigit()]
        require(
            not bad,
            f"{path}: cannot tell which sample {bad[0] if bad else ''} is; {dataset.name} has no source files, "
            "so a folder export names its images <index>.png",
        )
        claims.indices = np.asarray([int(s) for s in stems], dtype=np.int64)
    return claims


class _FileIndex:
    """Finds a data set's training sample by file name, matching trailing path components."""

    def __init__(self, dataset: ImageDataset) -> None:
        assert dataset.train_files is not None
        self.files = dataset.train_files
        self.source = PurePosixPath(Path(dataset.source).resolve().as_posix())
        self.exact = {name: i for i, name in enumerate(self.files)}
        self._suffixes: dict[str, int] | None = None

    def suffixes(self) -> dict[str, int]:
        """Every trailing part of every file (-1 where it is shared by several files)."""
        if self._suffixes is None:
            table: dict[str, int] = {}
            for i, name in enumerate(self.files):
                parts = PurePosixPath(name).parts
                for start in range(len(parts)):
                    key = "/".join(parts[start:])
                    table[key] = i if key not in table else -1
            self._suffixes = table
        return self._suffixes

    def find(self, name: str) -> int | None:
        """The index of ``name``; ``None`` if absent; -1 if ambiguous."""
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() and path.is_relative_to(self.source):
            path = path.relative_to(self.source)
        text = path.as_posix()
        if text in self.exact:
            return self.exact[text]
        table = self.suffixes()
        parts = path.parts
        for start in range(len(parts)):
            key = "/".join(parts[start:])
            if key in table:
                return table[key]
        return None


def _resolve(claims: _Claims, dataset: ImageDataset) -> tuple[np.ndarray, list[str]]:
    """The data set's indices of the claimed rows, and the evidence that they do not fit it.

    Problems that no override can fix (out-of-range or repeated indices, unknown or ambiguous
    file names) raise at once; the others are returned for the caller to refuse or record.
    """
    problems: list[str] = []
    if claims.dataset_fingerprint is not None and claims.dataset_fingerprint != dataset.fingerprint:
        made_on = claims.manifest["dataset"] if claims.manifest else {}
        cap = f", max {made_on['max_per_class']} per class" if made_on.get("max_per_class") else ""
        problems.append(f"it was made on data set {made_on.get('key')} ({made_on.get('spec')}{cap})")
    elif claims.dataset_fingerprint is None and claims.dataset_key is not None and claims.dataset_key != dataset.key:
        problems.append(f"it was made on data set {claims.dataset_key}")
    indices = claims.indices
    if claims.files is not None and dataset.train_files is not None:
        by_file = _indices_of_files(claims.files, dataset)
        if indices is not None and not np.array_equal(indices, by_file):
            differ = int((indices != by_file).sum())
            problems.append(f"{differ} of its {len(by_file)} indices point at other files than it names")
        indices = by_file
    elif claims.files is not None and indices is None:
        raise SampleSiftError(
            f"it names files, but data set {dataset.key} was not loaded from files, so they cannot be matched; "
            "give indices instead"
        )
    elif claims.files is not None:
        problems.append(f"it names source files, but data set {dataset.key} has none")
    assert indices is not None
    outside = indices[(indices < 0) | (indices >= dataset.num_train)]
    require(
        len(outside) == 0,
        f"index {int(outside[0]) if len(outside) else 0} is outside data set {dataset.key}, "
        f"which has {dataset.num_train} training samples (0 to {dataset.num_train - 1}); "
        + (problems[0] if problems else "is it the data set the subset was chosen from?"),
    )
    values, counts = np.unique(indices, return_counts=True)
    require(
        bool((counts == 1).all()),
        f"sample {int(values[counts > 1][0]) if (counts > 1).any() else 0} is listed more than once; "
        "a selection lists every sample once",
    )
    if claims.classes is not None or claims.labels is not None:
        expected = [dataset.class_names[label] for label in dataset.train_labels[indices]]
        if claims.classes is not None:
            recorded = claims.classes
        else:
            assert claims.labels is not None
            recorded = [dataset.class_names[v] if 0 <= v < dataset.num_classes else f"label {v}" for v in claims.labels]
        wrong = [i for i, (r, e) in enumerate(zip(recorded, expected, strict=True)) if r != e]
        if wrong:
            first = wrong[0]
            problems.append(
                f"{len(wrong)} of its {len(indices)} rows name another class than the data set's "
                f"(sample {int(indices[first])}: {recorded[first]!r}, the data set says {expected[first]!r})"
            )
    if claims.images is not None:
        if claims.images.shape != (len(indices), *dataset.image_shape):
            problems.append(
                f"its images are {claims.images.shape[1:]}, the data set's {dataset.image_shape}, so they differ"
            )
        elif not np.array_equal(claims.images, dataset.train_images[indices]):
            problems.append("its images differ from the data set's images at those indices")
    return indices.astype(np.int64), problems


def _indices_of_files(files: list[str], dataset: ImageDataset) -> np.ndarray:
    finder = _FileIndex(dataset)
    found = [finder.find(name) for name in files]
    missing = [name for name, i in zip(files, found, strict=True) if i is None]
    require(
        not missing,
        f"{len(missing)} file name(s) are not training images of data set {dataset.key} "
        f"(e.g. {missing[0] if missing else ''}); is --data the data set the subset was chosen from?",
    )
    ambiguous = [name for name, i in zip(files, found, strict=True) if i == -1]
    require(
        not ambiguous,
        f"{len(ambiguous)} file name(s) match several training images of {dataset.key} "
        f"(e.g. {ambiguous[0] if ambiguous else ''}); give them with their class folder, e.g. <class>/<file>",
    )
    return np.asarray(found, dtype=np.int64)


def _as_selection(
    claims: _Claims,
    indices: np.ndarray,
    problems: list[str],
    dataset: ImageDataset,
    path: Path,
    name: str | None,
) -> Selection:
    manifest = claims.manifest
    # The same samples as an intact manifest of this data set (a folder export lists them in
    # folder order): that selection itself, with its provenance and pick order.
    if manifest is not None and not problems and np.array_equal(np.sort(indices), np.sort(manifest["indices"])):
        kept = dict(manifest)
        kept.pop("files", None)  # export-only: the data set's own files say it
        if name is not None:
            kept["name"] = safe_name(name, "selection name")
        return Selection(kept)
    scores = np.full(dataset.num_train, np.nan)
    if claims.scores is not None and len(claims.scores) == len(indices):
        scores[indices] = claims.scores
    origin = None
    if manifest is not None:
        origin = {
            key: manifest.get(key) for key in ("name", "method", "params", "seed", "balanced", "size", "fingerprint")
        }
        origin["dataset"] = manifest["dataset"].get("key")
        origin["embedding"] = manifest.get("embedding")
    result = SelectionResult(
        indices=indices,
        scores=scores,
        picked_by=np.full(len(indices), -1, dtype=np.int64),
        method=IMPORTED_METHOD,
        params={"format": claims.fmt, "file": path.name},
        seed=None,  # type: ignore[arg-type]  # the choice was made elsewhere; no seed of ours applies
        info={
            "imported_from": str(path.resolve()),
            "origin": origin,
            "mismatch_allowed": problems,
        },
    )
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in path.stem).strip(".-") or "selection"
    return Selection(
        build_manifest(
            result,
            dataset,
            name=safe_name(name or f"imported-{stem}", "selection name"),
            embedding=None,
            score_meaning="the score recorded in the imported file (empty where it had none)",
            source=f"imported from a {claims.fmt} file",
        )
    )


def _save_imported(selection: Selection, dataset: ImageDataset, workspace: Workspace) -> None:
    target = workspace.selection_path(dataset.key, selection.name)
    if target.exists():
        try:
            existing = Selection.from_file(target).fingerprint
        except SampleSiftError:
            existing = None
        require(
            existing == selection.fingerprint,
            f"data set {dataset.key} already has a different selection named {selection.name!r}; choose another --name",
        )
    selection.save(target)
