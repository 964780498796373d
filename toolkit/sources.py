"""Data sources beyond image folders: a CSV of image paths (``list:``) and Hugging Face datasets (``hf:``).

``list:FILE.csv``
    One row per image: a path column (``path``, ``file``, ``filename``, ``file_name``,
    ``filepath``, ``image`` or ``image_path``, or the one ``--image-column`` names), a label
    column (``label``, ``labels``, ``class``, ``target``, ``category`` or ``y``, or
    ``--label-column``) and optionally ``split`` (``train`` or ``test``; ``validation``,
    ``valid``, ``val`` or ``dev`` serve as the test split where there is no test). Relative
    paths resolve against the CSV's folder, and a path outside that folder (``..``, an absolute
    path elsewhere) is refused unless ``allow_outside_root``. The check is on the path as
    written, not on where symbolic links lead, so a folder of links (``export --link``) works.
``hf:PATH``
    A ``datasets`` dataset written by ``save_to_disk`` (a ``DatasetDict`` folder with
    ``dataset_dict.json``, or one ``Dataset`` with ``state.json``: one split, train), or a
    folder of ``.parquet`` files, each file's split named by its folder or the first word of
    its name (``train/0.parquet``, ``data/test-00000-of-00001.parquet``; all train when no
    file names one). Read with pyarrow: the ``datasets`` library is not needed. The image
    column is the one whose feature is ``Image`` (else the one struct with ``bytes``, else the
    one binary column), the label column the ``ClassLabel`` one (its names become the class
    names), else one named as above. Images must be embedded in the files, as ``save_to_disk``
    and ``to_parquet`` write them. Splits other than train, test and a validation split standing
    in for test are left out, with a note.

Labels are whole numbers (class ``i`` is named ``"i"`` unless the dataset names its classes)
or class names (sorted, as an image folder's class folders are). Both sources keep the rules
of image folders: the cache key holds every file's path, size and modification time (the
CSV's content and every listed image; every file of the dataset folder) and the options that
change what is decoded, and every image goes through the same checks and decoding
(:func:`toolkit.images.decode_entries`). A source without a test split is refused, naming
``--test-fraction``, unless that option holds one out.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.artifacts import fingerprint_bytes, read_json
from toolkit.errors import SampleSiftError, require
from toolkit.images import (
    DECODER_VERSION,
    ImageDataset,
    ImageFiles,
    SourceOptions,
    UnusableImage,
    cached_decode,
    decode_entries,
    file_listing,
    hold_out_test,
    refuse_unusable,
)
from toolkit.workspace import Workspace

PATH_COLUMNS = ("path", "file", "filename", "file_name", "filepath", "image", "image_path")
LABEL_COLUMNS = ("label", "labels", "class", "target", "category", "y")
_TRAIN_SPLITS = ("train", "training")
_TEST_SPLITS = ("test", "testing")
#: In order of preference: the split that serves as test where a source has no test split.
_VALIDATION_SPLITS = ("validation", "valid", "val", "dev")
_KNOWN_SPLITS = _TRAIN_SPLITS + _TEST_SPLITS + _VALIDATION_SPLITS


# --------------------------------------------------------------------------- shared


def split_roles(names: Sequence[str], where: str) -> tuple[dict[str, str], list[str]]:
    """Which of a source's splits are train and which test (``{split: role}``), and notes on the rest.

    ``train``/``training`` are train and ``test``/``testing`` test; without a test split the
    first of ``validation``, ``valid``, ``val``, ``dev`` stands in for it. Other splits get no
    role (they are left out, and a note says so). A source without a train split is refused.
    """
    roles = {}
    for name in names:
        if name.lower() in _TRAIN_SPLITS:
            roles[name] = "train"
        elif name.lower() in _TEST_SPLITS:
            roles[name] = "test"
    notes = []
    if "test" not in roles.values():
        stand_in = min(
            (n for n in names if n.lower() in _VALIDATION_SPLITS),
            key=lambda n: _VALIDATION_SPLITS.index(n.lower()),
            default=None,
        )
        if stand_in is not None:
            roles[stand_in] = "test"
            notes.append(f"split {stand_in!r} serves as the test split (there is no 'test' split)")
    left_out = [n for n in names if n not in roles]
    if left_out:
        notes.append(f"split(s) {', '.join(map(repr, left_out))} are not train or test and were left out")
    require(
        "train" in roles.values(),
        f"{where} has no train split (its splits: {', '.join(map(repr, names))}); name one 'train'",
    )
    return roles, notes


def parse_labels(
    values: Sequence[Any],
    row: Callable[[int], str],
    where: str,
    column: str,
    names: Sequence[str] | None = None,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices and class names from a label column: whole numbers, or class names.

    Args:
        values: the column's values (numbers, or text as a CSV gives it).
        row: how a message names the ``i``-th value (``row 5``, ``train[3]``).
        where: the source, as messages name it.
        column: the column's name, for messages.
        names: the class names the dataset declares for whole-number labels, if any.

    When every value is a whole number (or text of one), labels are those numbers and class
    ``i`` is ``names[i]``, else ``"i"``; otherwise every value is a class name and the classes
    are the sorted distinct names. Empty values, fractions, negative numbers, booleans and
    other types are refused, naming the row.
    """

    def refuse(i: int, what: str) -> SampleSiftError:
        return SampleSiftError(
            f"{where}: {row(i)} {what} in label column {column!r}; labels must be whole numbers (0, 1, ...) "
            "or class names: fix it, or name the right column with --label-column"
        )

    numbers: list[float | None] = []
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
            raise refuse(i, "has no label")
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise refuse(i, f"has {value!r}, neither a whole number nor a class name")
        numbers.append(_as_number(value))
    if all(n is not None for n in numbers):
        for i, number in enumerate(numbers):
            if not float(number).is_integer():  # type: ignore[arg-type]
                raise refuse(i, f"has {values[i]!r}, a number that is not whole")
            if number < 0:  # type: ignore[operator]
                raise refuse(i, f"has {values[i]!r}, a negative number (an unlabelled row?)")
        labels = np.asarray([int(n) for n in numbers], dtype=np.int64)  # type: ignore[arg-type]
        if names is None:
            return labels, tuple(str(i) for i in range(int(labels.max(initial=-1)) + 1))
        top = int(labels.argmax()) if len(labels) else 0
        if len(labels) and labels[top] >= len(names):
            raise refuse(top, f"has {labels[top]}, but the dataset names only {len(names)} classes")
        return labels, tuple(str(n) for n in names)
    class_names = tuple(sorted({str(v).strip() for v in values}))
    index = {name: i for i, name in enumerate(class_names)}
    return np.asarray([index[str(v).strip()] for v in values], dtype=np.int64), class_names


def _as_number(value: int | float | str) -> float | None:
    """The number ``value`` is or spells, else ``None`` (a class name)."""
    if not isinstance(value, str):
        return float(value) if isinstance(value, float) else value
    try:
        return int(value.strip())
    except ValueError:
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None  # "inf" or "nan" is a (strange) name


def _pick_column(columns: Sequence[str], named: str | None, candidates: Sequence[str], what: str, option: str) -> str:
    """The column ``named`` (which must exist), else the first of ``candidates`` present (any case)."""
    shown = ", ".join(columns)
    if named is not None:
        require(named in columns, f"has no column {named!r} (its columns: {shown}); fix {option}")
        return named
    lower = {c.lower(): c for c in columns}
    found = next((lower[c] for c in candidates if c in lower), None)
    require(
        found is not None,
        f"has no {what} column (looked for {', '.join(candidates)}; its columns: {shown}); name it with {option}",
    )
    return found  # type: ignore[return-value]


def _in(where: str, pick: Callable[[], str]) -> str:
    """``pick()``, with ``where`` put in front of a refusal (the column helpers do not know the source)."""
    try:
        return pick()
    except SampleSiftError as exc:
        raise SampleSiftError(f"{where} {exc}") from None


# --------------------------------------------------------------------------- list:FILE.csv


def load_list(csv_path: Path, spec: str, ws: Workspace, opts: SourceOptions) -> ImageDataset:
    """A ``list:`` data set: the images a CSV names, with their labels (see the module docstring)."""
    import pandas as pd

    where = f"list:{csv_path}"
    require(
        csv_path.is_file(),
        f"{where}: {csv_path} {'is not a file' if csv_path.exists() else 'does not exist'}; "
        "list: takes a CSV with an image path column and a label column (and optionally split)",
    )
    try:
        content = csv_path.read_bytes()
        # Every value as text: labels are read as numbers or names by parse_labels, paths stay paths.
        table = pd.read_csv(io.BytesIO(content), dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SampleSiftError(
            f"cannot read {csv_path} as a CSV ({type(exc).__name__}: {exc}); "
            "list: takes a CSV with a header line, an image path column and a label column"
        ) from None
    require(len(table) > 0, f"{where} has no rows; list at least one image with its label")
    columns = [str(c) for c in table.columns]
    path_column = _in(
        where, lambda: _pick_column(columns, opts.image_column, PATH_COLUMNS, "image path", "--image-column")
    )
    label_column = _in(
        where, lambda: _pick_column(columns, opts.label_column, LABEL_COLUMNS, "label", "--label-column")
    )
    require(path_column != label_column, f"{where}: the image path and label columns are both {path_column!r}")

    def row(i: int) -> str:
        return f"row {i + 2}"  # the CSV's line number: the header is line 1

    notes: list[str] = []
    if "split" in columns:
        splits = [s.strip() for s in table["split"].tolist()]
        unknown = next((i for i, s in enumerate(splits) if s.lower() not in _KNOWN_SPLITS), None)
        require(
            unknown is None,
            f"{where}: {row(unknown or 0)} has split {splits[unknown or 0]!r}; the split column takes train or test "
            "(or validation, valid, val, dev, which serve as test where there is no test)",
        )
        roles, role_notes = split_roles(list(dict.fromkeys(splits)), where)
        notes += role_notes
    else:
        splits, roles = ["train"] * len(table), {"train": "train"}
    kept = [i for i, split in enumerate(splits) if split in roles]  # rows of a left-out split play no part
    values = table[label_column].tolist()
    labels, class_names = parse_labels([values[i] for i in kept], lambda j: row(kept[j]), where, label_column)

    root = csv_path.parent.resolve()
    entries: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    listing = [fingerprint_bytes(content)]
    missing: list[tuple[str, str]] = []
    first_row: dict[str, int] = {}
    paths = table[path_column].tolist()
    for i, label in zip(kept, labels, strict=True):
        text, role = paths[i], roles[splits[i]]
        require(bool(text.strip()), f"{where}: {row(i)} has no path in column {path_column!r}")
        # Lexical: '..' and absolute paths are judged as written (symbolic links inside are the owner's choice).
        full = Path(os.path.normpath(root / Path(text.strip()).expanduser()))
        require(
            root in full.parents or opts.allow_outside_root,
            f"{where}: {row(i)} names {text.strip()}, outside the list's folder {root} (paths are relative to "
            "the CSV's folder); move the images under it, or pass --allow-outside-root if that is intended",
        )
        name = Path(os.path.relpath(full, root)).as_posix()
        require(
            name not in first_row,
            f"{where}: {row(i)} lists {name} again (first on {row(first_row.get(name, 0))}); list each image once",
        )
        first_row[name] = i
        try:
            stat = full.stat()
            listing.append(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}")
        except OSError:
            missing.append((name, ""))
            listing.append(f"{name}\tmissing")
        entries[role].append((name, int(label)))
    if opts.bad_files == "error":
        # Before decoding anything: a typo in a path should not cost a long decode first.
        refuse_unusable(where, {"missing": missing}, None)
    source_key = fingerprint_bytes(DECODER_VERSION, "list", str(csv_path.resolve()), opts.cache_key(), *listing)

    def decode(work: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        held_out = hold_out_test(entries, opts, where, notes=notes, missing_test="add a split column (train, test)")
        paths = [root / name for name, _ in held_out["train"] + held_out["test"]]
        return decode_entries(where, held_out, ImageFiles(paths), class_names, opts, notes=notes, files=True, work=work)

    # The images are relative to the CSV's folder, which is the data set's source (exports copy from it).
    return cached_decode(ws, csv_path.stem, spec, str(root), source_key, decode, origin=f"list:{csv_path.resolve()}")


# --------------------------------------------------------------------------- hf:PATH


def load_hf(path: Path, spec: str, ws: Workspace, opts: SourceOptions) -> ImageDataset:
    """An ``hf:`` data set: a saved Hugging Face dataset or a folder of parquet files (see the module docstring)."""
    where = f"hf:{path}"
    require(
        path.is_dir(),
        f"{where}: {path} {'is not a folder' if path.exists() else 'does not exist'}; hf: takes a folder written "
        "by a datasets Dataset's or DatasetDict's save_to_disk, or a folder of .parquet files",
    )
    root = path.resolve()
    splits = _hf_splits(root, where)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root)))
    source_key = fingerprint_bytes(DECODER_VERSION, "hf", str(root), opts.cache_key(), file_listing(root, files))

    def decode(work: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        import pyarrow as pa

        roles, notes = split_roles(list(splits), where)
        tables = {name: _read_split(splits[name], where) for name in splits if name in roles}
        first = next(iter(tables.values()))
        features = _features(first.schema)
        image_column = _in(where, lambda: _image_column(first.schema, features, opts.image_column))
        label_column = _in(where, lambda: _label_column(first.schema, features, opts.label_column, image_column))
        feature = features.get(label_column) or {}
        names = feature.get("names") if feature.get("_type") == "ClassLabel" else None
        # Train splits first, then test: the order of the rows below.
        used = sorted(tables, key=lambda n: (roles[n] != "train", list(splits).index(n)))
        for name in used:
            for column in (image_column, label_column):
                require(column in tables[name].column_names, f"{where}: split {name!r} has no column {column!r}")
        counts = [tables[name].num_rows for name in used]
        rows = [f"{name}[{i}]" for name, count in zip(used, counts, strict=True) for i in range(count)]
        values = [v for name in used for v in tables[name].column(label_column).to_pylist()]
        labels, class_names = parse_labels(values, lambda i: rows[i], where, label_column, names)
        starts = np.cumsum([0, *counts])
        entries: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
        for name, start, stop in zip(used, starts[:-1], starts[1:], strict=True):
            entries[roles[name]] += [(rows[i], int(labels[i])) for i in range(start, stop)]
        entries = hold_out_test(entries, opts, where, notes=notes, missing_test="save it with a test split")
        blobs = []
        for name in used:
            images = tables[name].column(image_column).combine_chunks()
            blobs.append(images.field("bytes") if pa.types.is_struct(images.type) else images)
        # Where each row's bytes are (which split's array, which row of it), in the order of the entries.
        which = np.repeat(np.arange(len(used)), counts)
        within = np.arange(len(rows)) - starts[which]
        position = {row: i for i, row in enumerate(rows)}
        order = np.asarray([position[row] for row, _ in entries["train"] + entries["test"]], dtype=np.int64)

        def read(i: int) -> np.ndarray:
            blob = blobs[which[order[i]]][int(within[order[i]])].as_py()
            if blob is None:
                raise UnusableImage("unreadable", "no image bytes, only a path")
            return np.frombuffer(bytearray(blob), dtype=np.uint8)  # a writable copy, as the decoder needs

        return decode_entries(where, entries, read, class_names, opts, notes=notes, files=False, work=work)

    return cached_decode(ws, root.name, spec, str(root), source_key, decode, origin=f"hf:{root}")


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _hf_splits(root: Path, where: str) -> dict[str, list[Path]]:
    """``{split: [data file, ...]}`` of a saved dataset or a parquet folder, files in row order."""
    if (root / "dataset_dict.json").is_file():
        record = read_json(root / "dataset_dict.json", "dataset index")
        names = record.get("splits") if isinstance(record, dict) else None
        require(
            isinstance(names, list) and names and all(isinstance(n, str) for n in names),
            f"{where}: dataset_dict.json lists no splits; save the DatasetDict again with save_to_disk",
        )
        return {name: _arrow_files(root / name, where) for name in names}
    if (root / "state.json").is_file():
        return {"train": _arrow_files(root, where)}
    parquet = sorted(p for p in root.rglob("*.parquet") if not _hidden(p.relative_to(root)))
    require(
        bool(parquet),
        f"{where} is neither a saved Hugging Face dataset (no dataset_dict.json or state.json: write it with "
        "save_to_disk) nor a folder of .parquet files",
    )
    named = {p: _split_word(p.relative_to(root)) for p in parquet}
    if not any(word in _KNOWN_SPLITS for word in named.values()):
        return {"train": parquet}
    splits: dict[str, list[Path]] = {}
    for file, word in named.items():
        splits.setdefault(word, []).append(file)
    return splits


def _split_word(relative: Path) -> str:
    """The split a parquet file belongs to: a folder named after a split, else its name's first word."""
    for part in reversed(relative.parts[:-1]):
        if part.lower() in _KNOWN_SPLITS:
            return part.lower()
    return re.split(r"[-_.]", relative.name, maxsplit=1)[0].lower()


def _arrow_files(folder: Path, where: str) -> list[Path]:
    """The data files of one saved ``Dataset``, in order, from its ``state.json``."""
    state = read_json(folder / "state.json", "dataset state")
    files = state.get("_data_files") if isinstance(state, dict) else None
    require(
        isinstance(files, list) and bool(files) and all(isinstance(f, dict) for f in files),
        f"{where}: {folder / 'state.json'} lists no data files; save the dataset again with save_to_disk",
    )
    paths = []
    for entry in files:
        name = entry.get("filename")
        require(
            isinstance(name, str) and Path(name).name == name and (folder / name).is_file(),
            f"{where}: {folder / 'state.json'} names a data file {name!r} that is not in {folder}; "
            "save the dataset again with save_to_disk",
        )
        paths.append(folder / name)
    return paths


def _read_split(files: list[Path], where: str) -> Any:
    """One split's rows as a pyarrow Table (``.arrow`` files memory-mapped, ``.parquet`` read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for file in files:
        try:
            if file.suffix == ".parquet":
                tables.append(pq.read_table(file))
            else:
                tables.append(pa.ipc.open_stream(pa.memory_map(str(file))).read_all())
        except (OSError, pa.ArrowException) as exc:
            raise SampleSiftError(
                f"{where}: cannot read {file} ({type(exc).__name__}: {exc}); is it a complete data file?"
            ) from None
    try:
        return pa.concat_tables(tables)
    except pa.ArrowException as exc:
        raise SampleSiftError(f"{where}: the files of one split disagree in their columns ({exc})") from None


def _features(schema: Any) -> dict[str, dict[str, Any]]:
    """The ``datasets`` features recorded in an Arrow schema (``{}`` where there are none)."""
    try:
        info = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))
        features = info.get("info", {}).get("features", {})
    except (ValueError, AttributeError):
        return {}
    return {k: v for k, v in features.items() if isinstance(v, dict)} if isinstance(features, dict) else {}


def _holds_images(kind: Any) -> bool:
    """Encoded images: binary, or a struct with a binary ``bytes`` field (the ``Image`` feature's storage)."""
    import pyarrow as pa

    if pa.types.is_struct(kind):
        index = kind.get_field_index("bytes")
        return index >= 0 and _holds_images(kind.field(index).type) and not pa.types.is_struct(kind.field(index).type)
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def _image_column(schema: Any, features: dict[str, dict[str, Any]], named: str | None) -> str:
    columns = ", ".join(f"{f.name} ({f.type})" for f in schema)
    if named is not None:
        require(named in schema.names, f"has no column {named!r} (its columns: {columns}); fix --image-column")
        require(
            _holds_images(schema.field(named).type),
            f"column {named!r} holds {schema.field(named).type}, not encoded images; fix --image-column",
        )
        return named
    candidates = [n for n in schema.names if features.get(n, {}).get("_type") == "Image"]
    candidates = candidates or [n for n in schema.names if _holds_images(schema.field(n).type)]
    require(
        bool(candidates),
        f"has no image column (its columns: {columns}); it needs images as an Image feature or encoded bytes: "
        "name such a column with --image-column",
    )
    require(
        len(candidates) == 1,
        f"has {len(candidates)} image columns ({', '.join(candidates)}); choose one with --image-column",
    )
    return candidates[0]


def _label_column(schema: Any, features: dict[str, dict[str, Any]], named: str | None, image_column: str) -> str:
    columns = [n for n in schema.names if n != image_column]
    if named is not None:
        return _pick_column(columns, named, LABEL_COLUMNS, "label", "--label-column")
    labelled = [n for n in columns if features.get(n, {}).get("_type") == "ClassLabel"]
    require(
        len(labelled) <= 1,
        f"has {len(labelled)} ClassLabel columns ({', '.join(labelled)}); choose one with --label-column",
    )
    return labelled[0] if labelled else _pick_column(columns, None, LABEL_COLUMNS, "label", "--label-column")
