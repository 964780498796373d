"""Bring your own embedding: an N x d array computed elsewhere (CLIP, DINO, a model zoo)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.artifacts import fingerprint_bytes
from toolkit.data import ImageDataset
from toolkit.embedding import check_vectors
from toolkit.encoders.base import Encoder, EncoderOutput, Inference, Options
from toolkit.errors import SampleSiftError, require
from toolkit.runs import Run

FORMATS = (".npy", ".npz", ".parquet", ".csv")
#: Column (table) or array (.npz) names that hold each row's image file name.
NAME_KEYS = ("file", "path", "filename", "file_name", "image", "name")
#: .npz array names for the vectors, in order of preference.
VECTOR_KEYS = ("embeddings", "train", "vectors", "features")


@dataclass
class FileOptions(Options):
    """Attributes:
    path: the file: ``.npy``, ``.npz``, ``.parquet`` or ``.csv``.
    match: ``auto`` (by file name when the file names its rows, else by order), ``order``
        or ``name``.
    """

    path: str = ""
    match: str = "auto"

    def validate(self) -> None:
        super().validate()
        require(bool(self.path), "the file encoder needs --path FILE (.npy, .npz, .parquet or .csv)")
        require(self.match in ("auto", "order", "name"), f"--match must be auto, order or name, got {self.match!r}")
        suffix = Path(self.path).suffix.lower()
        require(
            suffix in FORMATS,
            f"{self.path} is a {suffix or 'suffix-less'} file; the file encoder reads {', '.join(FORMATS)}",
        )
        require(Path(self.path).expanduser().is_file(), f"embedding file {self.path} does not exist")


def _read(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """(vectors, test vectors or None, row names or None) from any supported file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), None, None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
            return _from_npz(path, arrays)
        table = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    except SampleSiftError:
        raise
    except Exception as exc:  # numpy, pandas and pyarrow each raise their own errors on a bad file
        raise SampleSiftError(f"{path} cannot be read as {suffix} ({type(exc).__name__}: {exc})") from None
    return _from_table(path, table)


def _from_npz(path: Path, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    names = next((arrays[k] for k in NAME_KEYS if k in arrays), None)
    key = next((k for k in VECTOR_KEYS if k in arrays), None)
    numeric = [k for k, v in arrays.items() if k not in NAME_KEYS and k != "test"]
    if key is None and len(numeric) == 1:
        key = numeric[0]
    require(
        key is not None,
        f"{path} holds arrays {', '.join(arrays) or 'none'}; name the embedding array one of {', '.join(VECTOR_KEYS)}",
    )
    assert key is not None
    return arrays[key], arrays.get("test"), None if names is None else [str(n) for n in names]


def _from_table(path: Path, table: pd.DataFrame) -> tuple[np.ndarray, None, list[str] | None]:
    name_column = next((c for c in table.columns if str(c).lower() in NAME_KEYS), None)
    features = table.drop(columns=[name_column]) if name_column is not None else table
    bad = [str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    require(
        not bad,
        f"{path} has non-numeric column(s) {', '.join(bad[:5])}; keep only numeric embedding columns"
        + f" and one file-name column (named one of {', '.join(NAME_KEYS)})",
    )
    require(len(features.columns) > 0, f"{path} has no numeric columns to use as embedding dimensions")
    names = None if name_column is None else [str(n) for n in table[name_column]]
    return features.to_numpy(dtype=np.float64), None, names


def _normalise(name: str, source: str) -> str:
    """A file name as the data set lists it: relative to the source folder, forward slashes."""
    text = name.replace("\\", "/")
    if os.path.isabs(text):
        try:
            text = os.path.relpath(text, source)
        except ValueError:
            return text
    return text.removeprefix("./")


def _match_by_name(
    names: list[str], vectors: np.ndarray, dataset: ImageDataset, path: Path
) -> tuple[np.ndarray, np.ndarray | None]:
    require(
        dataset.train_files is not None,
        f"{path} names its rows by file, but data set {dataset.key} has no files to match them to; "
        "use --match order (rows in the data set's order)",
    )
    assert dataset.train_files is not None
    normalised = [_normalise(n, dataset.source) for n in names]
    counts = pd.Series(normalised).value_counts()
    repeated = list(counts[counts > 1].index[:3])
    require(not repeated, f"{path} lists some files more than once, e.g. {', '.join(repeated)}")
    row_of = {n: i for i, n in enumerate(normalised)}
    by_basename: dict[str, str] = {}
    for split_files in (dataset.train_files, dataset.test_files or ()):
        for f in split_files:
            by_basename.setdefault(f.split("/", 1)[-1], f)  # "airplane/0000.jpg" for "train/airplane/0000.jpg"
    # Names may also be given relative to the split folder (class/file): map them onto the full ones.
    row_of = {by_basename.get(n, n): i for n, i in row_of.items()}
    known = set(dataset.train_files) | set(dataset.test_files or ())
    unknown = [n for n in row_of if n not in known]
    require(
        not unknown,
        f"{path} names {len(unknown)} file(s) that are not in data set {dataset.key}, e.g. {', '.join(unknown[:3])}; "
        "names must be relative to the data folder (e.g. train/<class>/<file>) or absolute",
    )
    missing = [f for f in dataset.train_files if f not in row_of]
    require(
        not missing,
        f"{path} has no row for {len(missing)} of the {dataset.num_train} training images, "
        f"e.g. {', '.join(missing[:3])}; every training image needs an embedding",
    )
    train = vectors[[row_of[f] for f in dataset.train_files]]
    test_files = dataset.test_files or ()
    test = vectors[[row_of[f] for f in test_files]] if test_files and all(f in row_of for f in test_files) else None
    return train, test


class FileEncoder(Encoder):
    """An embedding computed in another tool, read from a file and matched to the data set.

    Rows are matched by file name when the file names them (a column ``file``, ``path``,
    ``filename``, ``file_name``, ``image`` or ``name`` in a table, or such an array in an
    ``.npz``), else by order: N rows are the training images in the data set's order, N +
    M rows the training then the test images (an ``.npz`` may also hold ``test``
    separately). Quality figures use the test rows when there are any. Refused, with a
    message naming the problem and nothing written: a wrong row count, unknown or repeated
    file names, training images without a row, NaN or infinite values, non-numeric columns.
    """

    name = "file"
    Options = FileOptions
    summary = "your own N x d embedding from a file (CLIP, DINO, ...), matched by row order or file name"
    source = "any tool that writes .npy, .npz, .parquet or .csv"

    def check(self, dataset: ImageDataset) -> None:
        self.read(dataset)  # every refusal happens before the run is recorded

    def read(self, dataset: ImageDataset) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        path = Path(self.options.path).expanduser().resolve()
        vectors, test, names = _read(path)
        vectors = np.asarray(vectors)
        require(
            np.issubdtype(vectors.dtype, np.number),
            f"{path} holds {vectors.dtype} values; the embedding must be numeric",
        )
        require(vectors.ndim == 2, f"{path} holds an array of shape {vectors.shape}; expected rows x dimensions")
        match = self.options.match
        if match == "auto":
            match = "name" if names is not None else "order"
        if match == "name":
            require(
                names is not None,
                f"--match name needs file names in {path} (a column named one of {', '.join(NAME_KEYS)})",
            )
            assert names is not None
            require(len(names) == len(vectors), f"{path} has {len(names)} names for {len(vectors)} rows")
            train, test = _match_by_name(names, vectors, dataset, path)
        else:
            n, m = dataset.num_train, dataset.num_test
            if len(vectors) == n + m and m and test is None:
                train, test = vectors[:n], vectors[n:]
            else:
                require(
                    len(vectors) == n,
                    f"{path} has {len(vectors)} rows, but data set {dataset.key} has {n} training images"
                    + (f" ({n + m} with the test images)" if m else "")
                    + "; export one row per image in the data set's order, or add file names to match by",
                )
                train = vectors
        # NaN, infinite values and shapes are refused here, before a run is recorded.
        train = check_vectors(train, dataset.num_train, f"the embeddings in {path}")
        if test is not None:
            test = check_vectors(test, dataset.num_test, f"the test embeddings in {path}")
        facts = {
            "source_file": str(path),
            "source_fingerprint": fingerprint_bytes(path.read_bytes()),
            "matched_by": match,
        }
        return train, test, facts

    def compute(
        self,
        dataset: ImageDataset,
        run: Run,
        *,
        progress: bool,
        checkpoint: dict[str, Any] | None,
        inference: Inference,
    ) -> EncoderOutput:
        """The file's rows: nothing is inferred, so ``inference`` has nothing to place."""
        train, test, facts = self.read(dataset)
        return EncoderOutput(vectors=train, test_vectors=test, facts={**facts, "train_time_s": 0.0})
