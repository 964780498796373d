"""``list:`` and ``hf:`` sources: what they load, their test split, their cache, and what they refuse.

Every data set here is made in the test (a few 8 x 8 PNGs), so the module takes seconds. The
refusals that go through the command line (and leave the workspace untouched) are in the
bad-input suite, ``tests/test_bad_input.py``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import toolkit.images as images_module
from toolkit.data import ImageDataset, load_dataset, load_recorded
from toolkit.errors import SampleSiftError
from toolkit.runs import RunStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def images(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(count)]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_list(folder: Path, rows: list[tuple[str, str, str | None]], header: str = "path,label,split") -> Path:
    """A CSV in ``folder`` with one line per ``(path, label, split)`` (``split=None``: no split column)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [header] + [",".join(v for v in row if v is not None) for row in rows]
    (folder / "list.csv").write_text("\n".join(lines) + "\n")
    return folder / "list.csv"


def pictures(folder: Path, per_class: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """``per_class`` PNGs under ``folder/<class>/<i>.png``; returns their pixels by path relative to ``folder``."""
    made = {}
    for offset, (name, count) in enumerate(per_class.items()):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i, array in enumerate(images(count, seed + offset)):
            (folder / name / f"{i}.png").write_bytes(png(array))
            made[f"{name}/{i}.png"] = array
    return made


# --------------------------------------------------------------------------- list:


def test_list_reads_paths_relative_to_the_csv_with_class_names_and_splits(tmp_path: Path, monkeypatch) -> None:
    made = pictures(tmp_path / "data" / "imgs", {"dog": 3, "cat": 3})
    rows = [(f"imgs/{rel}", rel.split("/")[0], "test" if rel.endswith("2.png") else "train") for rel in made]
    csv = write_list(tmp_path / "data", rows)
    ws = tmp_path / "ws"
    dataset = load_dataset(f"list:{csv}", workspace=ws)
    assert dataset.class_names == ("cat", "dog")  # sorted, as class folders are
    assert dataset.num_train == 4 and dataset.num_test == 2
    assert Path(dataset.source) == csv.parent.resolve() and dataset.name == "list"
    for split in ("train", "test"):
        files, pixels, labels = (getattr(dataset, f"{split}_{k}") for k in ("files", "images", "labels"))
        for file, image, label in zip(files, pixels, labels, strict=True):
            np.testing.assert_array_equal(image, made[file.removeprefix("imgs/")])
            assert dataset.class_names[label] == file.split("/")[1]

    def no_decoding(raw: np.ndarray) -> np.ndarray:
        raise AssertionError("a cached source was decoded again")

    with monkeypatch.context() as patch:
        patch.setattr(images_module, "_decode_image", no_decoding)
        assert load_dataset(f"list:{csv}", workspace=ws).fingerprint == dataset.fingerprint
    changed = tmp_path / "data" / "imgs" / "cat" / "0.png"
    changed.write_bytes(png(np.zeros((8, 8, 3), np.uint8)))
    os.utime(changed, ns=(1, 1))  # a different mtime, even on coarse-clock filesystems
    assert load_dataset(f"list:{csv}", workspace=ws).fingerprint != dataset.fingerprint


def test_list_without_a_test_split_holds_one_out_seeded_stratified_and_recorded(tmp_path: Path) -> None:
    made = pictures(tmp_path / "imgs", {"0": 8, "1": 8, "2": 8})
    csv = write_list(tmp_path, [(f"imgs/{rel}", rel.split("/")[0], None) for rel in made], header="file,label")
    ws = tmp_path / "ws"
    with pytest.raises(SampleSiftError, match=r"has no test split; .*--test-fraction F"):
        load_dataset(f"list:{csv}", workspace=ws)
    first = load_dataset(f"list:{csv}", workspace=ws, test_fraction=0.25, test_seed=1)
    assert first.class_names == ("0", "1", "2")  # whole-number labels
    assert first.class_counts("test") == {"0": 2, "1": 2, "2": 2}
    assert first.describe()["load_options"] == {"test_fraction": 0.25, "test_seed": 1}
    assert any("6 of 24 training images were held out" in note for note in first.notes)
    again = load_dataset(f"list:{csv}", workspace=tmp_path / "other-ws", test_fraction=0.25, test_seed=1)
    assert again.test_files == first.test_files and again.fingerprint == first.fingerprint
    other_seed = load_dataset(f"list:{csv}", workspace=ws, test_fraction=0.25, test_seed=2)
    assert other_seed.test_files != first.test_files
    # A run records the options, and loads the same data again from its record.
    record = {**first.describe(), "bad_files": "error"}
    assert load_recorded(record, workspace=ws, owner="run x").fingerprint == first.fingerprint
    assert first.cli_arguments()[-4:] == ["--test-fraction", "0.25", "--test-seed", "1"]
    with pytest.raises(SampleSiftError, match="already has a test split"):
        load_dataset(str(_folder_with_test(tmp_path / "folder")), workspace=ws, test_fraction=0.25)


def _folder_with_test(root: Path) -> Path:
    for split in ("train", "test"):
        pictures(root / split, {"a": 2})
    return root


def test_an_image_folder_without_test_gets_one_with_test_fraction(tmp_path: Path) -> None:
    pictures(tmp_path / "folder" / "train", {"a": 4, "b": 4})
    with pytest.raises(SampleSiftError, match=r"has train/ but no test/ split; .*--test-fraction F"):
        load_dataset(str(tmp_path / "folder"), workspace=tmp_path / "ws")
    dataset = load_dataset(str(tmp_path / "folder"), workspace=tmp_path / "ws", test_fraction=0.5)
    assert dataset.num_train == 4 and dataset.num_test == 4
    assert all(file.startswith("train/") for file in dataset.test_files)  # held out of train/


def test_list_paths_outside_its_folder_need_allow_outside_root(tmp_path: Path) -> None:
    made = pictures(tmp_path / "imgs", {"a": 2, "b": 2})
    rows = [(f"../imgs/{rel}", rel[0], "test" if rel.endswith("1.png") else "train") for rel in made]
    csv = write_list(tmp_path / "lists", rows)
    with pytest.raises(SampleSiftError, match=r"row 2 names ../imgs/a/0.png, outside the list's folder"):
        load_dataset(f"list:{csv}", workspace=tmp_path / "ws")
    dataset = load_dataset(f"list:{csv}", workspace=tmp_path / "ws", allow_outside_root=True)
    assert dataset.train_files == ("../imgs/a/0.png", "../imgs/b/0.png")
    assert dataset.load_options == {"allow_outside_root": True}


def test_list_missing_files_are_skipped_and_listed_with_skip(tmp_path: Path) -> None:
    made = pictures(tmp_path / "imgs", {"a": 2, "b": 2})
    rows = [(f"imgs/{rel}", rel[0], "test" if rel.endswith("1.png") else "train") for rel in made]
    csv = write_list(tmp_path, [*rows, ("imgs/a/gone.png", "a", "train")])
    with pytest.raises(SampleSiftError, match=r"1 listed file\(s\) of list:.* do not exist \(imgs/a/gone.png\)"):
        load_dataset(f"list:{csv}", workspace=tmp_path / "ws")
    with pytest.warns(UserWarning, match=r"1 listed file\(s\) that do not exist were skipped: imgs/a/gone.png"):
        dataset = load_dataset(f"list:{csv}", workspace=tmp_path / "ws", bad_files="skip")
    assert dataset.skipped_files == ("imgs/a/gone.png",) and dataset.num_train == 2


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["cat", ""], r"row 3 has no label in label column 'label'"),
        (["1", "-1"], r"row 3 has '-1', a negative number"),
        (["1", "2.5"], r"row 3 has '2.5', a number that is not whole"),
    ],
)
def test_list_labels_must_be_whole_numbers_or_class_names(tmp_path: Path, labels: list[str], message: str) -> None:
    pictures(tmp_path / "imgs", {"a": 2})
    csv = write_list(tmp_path, [("imgs/a/0.png", labels[0], "train"), ("imgs/a/1.png", labels[1], "test")])
    with pytest.raises(SampleSiftError, match=message):
        load_dataset(f"list:{csv}", workspace=tmp_path / "ws")


def test_list_refuses_a_listed_image_twice_and_an_unknown_split(tmp_path: Path) -> None:
    pictures(tmp_path / "imgs", {"a": 2})
    twice = write_list(tmp_path, [("imgs/a/0.png", "a", "train"), ("./imgs/a/0.png", "a", "test")])
    with pytest.raises(SampleSiftError, match=r"row 3 lists imgs/a/0.png again \(first on row 2\)"):
        load_dataset(f"list:{twice}", workspace=tmp_path / "ws")
    typo = write_list(tmp_path, [("imgs/a/0.png", "a", "train"), ("imgs/a/1.png", "a", "tset")])
    with pytest.raises(SampleSiftError, match=r"row 3 has split 'tset'; the split column takes train or test"):
        load_dataset(f"list:{typo}", workspace=tmp_path / "ws")


def test_list_validation_rows_are_left_out_where_there_is_a_test_split(tmp_path: Path) -> None:
    pictures(tmp_path / "imgs", {"a": 3})
    rows = [("imgs/a/0.png", "a", "train"), ("imgs/a/1.png", "a", "test"), ("imgs/a/2.png", "zebra", "validation")]
    with pytest.warns(UserWarning, match=r"split\(s\) 'validation' are not train or test and were left out"):
        dataset = load_dataset(f"list:{write_list(tmp_path, rows)}", workspace=tmp_path / "ws")
    assert dataset.class_names == ("a",) and dataset.num_train == dataset.num_test == 1


def test_train_on_a_list_records_its_options_and_resumes_from_them(tmp_path: Path, run_cli) -> None:
    made = pictures(tmp_path / "imgs", {"a": 4, "b": 4})
    csv = write_list(tmp_path, [(f"imgs/{rel}", rel[0], None) for rel in made], header="path,label")
    ws = tmp_path / "ws"
    argv = ["train", "--data", f"list:{csv}", "--test-fraction", "0.25", "--steps", "2", "--batch", "4"]
    code, err = run_cli([*argv, "--workspace", str(ws), "--quiet"])
    assert code == 0, err
    (run,) = RunStore(ws)
    assert run.config["dataset"]["load_options"] == {"test_fraction": 0.25, "test_seed": 0}
    assert load_recorded(run.config["dataset"], workspace=ws, owner="the run").num_test == 2


# --------------------------------------------------------------------------- hf:


def _check_pixels_and_labels(dataset: ImageDataset, split: str, arrays: list[np.ndarray], names: list[str]) -> None:
    pixels, labels = getattr(dataset, f"{split}_images"), getattr(dataset, f"{split}_labels")
    assert len(pixels) == len(arrays)
    for image, label, array, name in zip(pixels, labels, arrays, names, strict=True):
        np.testing.assert_array_equal(image, array)
        assert dataset.class_names[label] == name


def test_hf_saved_dataset_dict_with_class_labels_and_validation_as_test(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    train, valid = images(6, 0), images(2, 1)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])})

    def split(arrays: list[np.ndarray]) -> object:
        rows = {"img": [Image.fromarray(a) for a in arrays], "label": [i % 2 for i in range(len(arrays))]}
        return datasets.Dataset.from_dict(rows, features=features)

    datasets.DatasetDict({"train": split(train), "validation": split(valid)}).save_to_disk(str(tmp_path / "saved"))
    with pytest.warns(UserWarning, match="split 'validation' serves as the test split"):
        dataset = load_dataset(f"hf:{tmp_path / 'saved'}", workspace=tmp_path / "ws")
    assert dataset.class_names == ("cat", "dog") and dataset.train_files is None
    _check_pixels_and_labels(dataset, "train", train, ["cat", "dog"] * 3)
    _check_pixels_and_labels(dataset, "test", valid, ["cat", "dog"])
    # One saved Dataset is one split, train: the test split is held out on request.
    split(train).save_to_disk(str(tmp_path / "single"))
    with pytest.raises(SampleSiftError, match=r"has no test split; .*--test-fraction"):
        load_dataset(f"hf:{tmp_path / 'single'}", workspace=tmp_path / "ws")
    held = load_dataset(f"hf:{tmp_path / 'single'}", workspace=tmp_path / "ws", test_fraction=1 / 3)
    assert held.num_train == 4 and held.num_test == 2


def _image_column(arrays: list[np.ndarray]) -> pa.Array:
    """What ``datasets`` stores for an ``Image`` feature: a struct of encoded bytes and a path."""
    return pa.array([{"bytes": png(a), "path": None} for a in arrays])


def test_hf_parquet_folder_splits_by_file_name_with_text_labels(tmp_path: Path) -> None:
    folder = tmp_path / "pq" / "data"
    folder.mkdir(parents=True)
    train, test = images(4, 0), images(2, 1)
    names = {"train": ["bird", "ant", "bird", "ant"], "test": ["ant", "bird"], "unsupervised": ["ant"]}
    for split, arrays in (("train", train), ("test", test), ("unsupervised", images(1, 2))):
        table = pa.table({"picture": _image_column(arrays), "category": names[split]})
        pq.write_table(table, folder / f"{split}-00000-of-00001.parquet")
    with pytest.warns(UserWarning, match="split\\(s\\) 'unsupervised' are not train or test and were left out"):
        dataset = load_dataset(f"hf:{tmp_path / 'pq'}", workspace=tmp_path / "ws")
    assert dataset.class_names == ("ant", "bird")
    _check_pixels_and_labels(dataset, "train", train, names["train"])
    _check_pixels_and_labels(dataset, "test", test, names["test"])


def test_hf_refusals_name_the_column_and_the_row(tmp_path: Path) -> None:
    def write(name: str, **columns: object) -> str:
        (tmp_path / name).mkdir()
        for split in ("train", "test"):
            pq.write_table(pa.table(columns), tmp_path / name / f"{split}.parquet")
        return f"hf:{tmp_path / name}"

    two = _image_column(images(2, 0))
    floats = write("floats", image=two, label=[0.0, 0.5])
    with pytest.raises(SampleSiftError, match=r"train\[1\] has 0.5, a number that is not whole in label column"):
        load_dataset(floats, workspace=tmp_path / "ws")
    unlabelled = write("unlabelled", image=two, caption=["a", "b"])
    with pytest.raises(SampleSiftError, match=r"has no label column .*name it with --label-column"):
        load_dataset(unlabelled, workspace=tmp_path / "ws")
    named = load_dataset(unlabelled, workspace=tmp_path / "ws", label_column="caption")
    assert named.class_names == ("a", "b") and named.load_options == {"label_column": "caption"}
    with pytest.raises(SampleSiftError, match=r"column 'caption' holds string, not encoded images"):
        load_dataset(unlabelled, workspace=tmp_path / "ws", image_column="caption", label_column="caption")
    storage = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # the Image feature's, with no bytes
    paths_only = write("paths", image=pa.array([{"bytes": None, "path": "a.png"}] * 2, type=storage), label=[0, 1])
    with pytest.raises(SampleSiftError, match=r"4 image\(s\) in hf:.* are not readable images \(train\[0\]: no image"):
        load_dataset(paths_only, workspace=tmp_path / "ws")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SampleSiftError, match=r"neither a saved Hugging Face dataset .* nor a folder of .parquet"):
        load_dataset(f"hf:{tmp_path / 'empty'}", workspace=tmp_path / "ws")


def test_a_sweep_loads_its_data_with_the_same_options(tmp_path: Path, run_cli) -> None:
    made = pictures(tmp_path / "imgs", {"a": 4, "b": 4})
    csv = write_list(tmp_path, [(f"imgs/{rel}", rel[0], None) for rel in made], header="path,label")
    argv = ["sweep", "--data", f"list:{csv}", "--test-fraction", "0.25", "--selectors", "random", "--sizes", "2"]
    argv += ["--splits", "0.5", "--steps", "2", "--out", str(tmp_path / "out"), "--dry-run"]
    code, err = run_cli([*argv, "--workspace", str(tmp_path / "ws")])
    assert code == 0, err
