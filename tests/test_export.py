"""Export and import of selections: round trips, verification on load, and safe writing."""

from __future__ import annotations

import collections
import filecmp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import ImageFolder

import toolkit.export as export_module
from toolkit.cli import main
from toolkit.data import ImageDataset, load_dataset
from toolkit.errors import SampleSiftError
from toolkit.export import (
    FORMATS,
    export_bytes,
    export_selection,
    export_table,
    import_selection,
    manifest_subset,
    read_indices,
)
from toolkit.selection import Selection, load_selection, make_selection

REPO = Path(__file__).resolve().parents[1]
SUFFIX = {"csv": ".csv", "json": ".json", "npz": ".npz", "folder": ""}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links as their target path) and its content."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(folder))] = os.readlink(path).encode()
        elif path.is_file():
            found[str(path.relative_to(folder))] = path.read_bytes()
    return found


@pytest.fixture(scope="module")
def topk(digits: ImageDataset, digits_embedding, session_workspace: Path) -> Selection:
    """A real top-k activation selection of digits (scores, picked_by and an embedding record)."""
    return make_selection(
        digits,
        "topk-activation",
        size=60,
        seed=3,
        name="export-topk",
        workspace=session_workspace,
        embedding=digits_embedding.name,  # by name: other tests add embeddings to the shared workspace
    )


@pytest.fixture(scope="module")
def cifar_pick(cifar_small: ImageDataset) -> Selection:
    return make_selection(cifar_small, "random", size=150, seed=1, save=False)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_then_import_gives_the_same_indices(fmt: str, topk: Selection, digits, tmp_path: Path) -> None:
    out = export_selection(topk, digits, tmp_path / f"sel{SUFFIX[fmt]}", fmt)
    back = import_selection(out, digits, workspace=tmp_path / "ws", name=f"back-{fmt}")
    np.testing.assert_array_equal(back.indices, topk.indices)  # same samples, same pick order
    saved = load_selection(f"back-{fmt}", digits, workspace=tmp_path / "ws")
    np.testing.assert_array_equal(saved.indices, topk.indices)
    if fmt == "csv":  # a table carries no provenance: it becomes an imported selection with the scores
        assert back.method == "imported"
        np.testing.assert_allclose(back.scores, topk.scores, rtol=1e-12)
    else:  # an intact manifest comes back as the selection it was
        assert back.method == "topk-activation"
        for key in ("params", "seed", "fingerprint", "embedding", "dataset", "picked_by", "scores", "versions"):
            assert back.manifest[key] == topk.manifest[key], key


@pytest.mark.parametrize("fmt", ["csv", "json", "npz"])
def test_in_memory_export_is_the_file_byte_for_byte(fmt: str, topk: Selection, digits, tmp_path: Path) -> None:
    # What the app's download buttons serve is what `samplesift export` writes.
    written = export_selection(topk, digits, tmp_path / f"sel{SUFFIX[fmt]}", fmt)
    assert export_bytes(topk, digits, fmt) == written.read_bytes()


def test_in_memory_export_refuses_a_folder_and_another_data_set(topk, digits, session_workspace: Path) -> None:
    with pytest.raises(SampleSiftError, match="has no single-file form"):
        export_bytes(topk, digits, "folder")
    capped = load_dataset("digits", workspace=session_workspace, max_per_class=20)
    with pytest.raises(SampleSiftError, match="was made on data set"):
        export_bytes(topk, capped, "csv")


def test_csv_columns_and_json_manifest_hold_what_reproduces_the_selection(topk, digits, tmp_path: Path) -> None:
    table = export_table(topk, digits)
    assert list(table.columns) == ["index", "label", "class", "score", "picked_by", "dataset"]  # digits has no files
    assert (table["class"] == [digits.class_names[i] for i in digits.train_labels[topk.indices]]).all()
    assert (table["picked_by"].to_numpy() == topk.picked_by).all() and (table["picked_by"] >= 0).all()
    path = export_selection(topk, digits, tmp_path / "m.json", "json")
    manifest = Selection.from_file(path).manifest
    assert manifest["method"] == "topk-activation" and manifest["seed"] == 3 and manifest["size"] == 60
    assert manifest["dataset"]["fingerprint"] == digits.fingerprint
    assert manifest["embedding"]["fingerprint"] and manifest["embedding"]["weights_fingerprint"]
    assert {"toolkit", "torch", "numpy"} <= set(manifest["versions"])
    assert read_indices(path) == topk.indices.tolist()


def test_npz_export_is_a_samplesift_data_spec(topk, digits, tmp_path: Path) -> None:
    path = export_selection(topk, digits, tmp_path / "subset.npz", "npz")
    subset = load_dataset(str(path), workspace=tmp_path / "ws")
    np.testing.assert_array_equal(subset.train_images, digits.train_images[topk.indices])
    np.testing.assert_array_equal(subset.train_labels, digits.train_labels[topk.indices])
    np.testing.assert_array_equal(subset.test_images, digits.test_images)
    assert subset.class_names == digits.class_names and subset.num_train == 60


def test_digits_folder_export_is_read_by_imagefolder(topk, digits, tmp_path: Path) -> None:
    out = export_selection(topk, digits, tmp_path / "folder", "folder")
    folder = ImageFolder(str(out))
    expected = collections.Counter(digits.class_names[label] for label in digits.train_labels[topk.indices])
    assert collections.Counter(folder.classes[t] for t in folder.targets) == expected
    image, _ = folder[0]  # PNGs of the original pixels, grey converted to RGB by ImageFolder's loader
    index = int(Path(folder.samples[0][0]).stem)
    np.testing.assert_array_equal(np.asarray(image)[..., 0], digits.train_images[index][..., 0])


def test_curated_folder_export_imports_what_is_left(topk, digits, tmp_path: Path) -> None:
    out = export_selection(topk, digits, tmp_path / "folder", "folder")
    removed = sorted(p for p in out.rglob("*.png"))[:5]
    for path in removed:
        path.unlink()
    back = import_selection(out, digits, workspace=tmp_path / "ws", save=False)
    gone = {int(p.stem) for p in removed}
    assert set(back.indices.tolist()) == set(topk.indices.tolist()) - gone and back.size == 55
    assert back.method == "imported" and back.manifest["info"]["origin"]["method"] == "topk-activation"


def test_csv_of_indices_from_another_tool(digits, tmp_path: Path) -> None:
    plain = tmp_path / "ids.csv"
    plain.write_text("17\n3\n250\n")  # no header at all
    assert import_selection(plain, digits, workspace=tmp_path, save=False).indices.tolist() == [17, 3, 250]
    named = tmp_path / "picked.csv"
    labels = digits.train_labels[[5, 9]]
    named.write_text(f"idx,label\n5,{labels[0]}\n9,{labels[1]}\n")
    selection = import_selection(named, digits, workspace=tmp_path)
    assert selection.indices.tolist() == [5, 9] and selection.name == "imported-picked"
    assert np.isnan(selection.scores).all()


def test_imported_csv_trains_with_the_selection(digits, tmp_path: Path) -> None:
    ids = tmp_path / "chosen.csv"
    ids.write_text("index\n" + "\n".join(str(i) for i in range(0, 400, 5)) + "\n")
    ws = str(tmp_path / "ws")
    assert main(["import", "--workspace", ws, str(ids), "--name", "mine"]) == 0
    train_args = ["--selection", "mine", "--split", "1", "--steps", "6", "--batch", "16", "--evals", "0"]
    code = main(["train", "--workspace", ws, *train_args, "--device", "cpu", "--quiet"])
    assert code == 0
    from toolkit.runs import list_runs

    runs = list_runs(ws)
    assert runs["selection"].tolist() == ["mine"]


def test_manifest_subset_in_plain_pytorch(topk, digits, tmp_path: Path) -> None:
    path = export_selection(topk, digits, tmp_path / "m.json", "json")
    full = torch.utils.data.TensorDataset(torch.from_numpy(digits.train_images), torch.from_numpy(digits.train_labels))
    subset = manifest_subset(path, full)
    assert len(subset) == 60
    image, label = subset[7]
    assert torch.equal(image, torch.from_numpy(digits.train_images[topk.indices[7]]))
    assert int(label) == int(digits.train_labels[topk.indices[7]])
    with pytest.raises(SampleSiftError, match="made on 1437 training samples"):
        manifest_subset(path, torch.utils.data.Subset(full, range(100)))


# --------------------------------------------------------------------------- real CIFAR-10


@pytest.mark.cifar
@pytest.mark.parametrize("link", [False, True])
def test_cifar_folder_export_is_read_by_imagefolder(cifar_small, cifar_pick, tmp_path: Path, link: bool) -> None:
    out = export_selection(cifar_pick, cifar_small, tmp_path / "subset", "folder", link=link)
    folder = ImageFolder(str(out))
    expected = collections.Counter(
        cifar_small.class_names[label] for label in cifar_small.train_labels[cifar_pick.indices]
    )
    counted = collections.Counter(folder.classes[t] for t in folder.targets)
    assert counted == expected and sum(counted.values()) == 150
    for sample_path, target in folder.samples:  # every image is the source file itself, in its class
        relative = f"train/{folder.classes[target]}/{Path(sample_path).name}"
        source = Path(cifar_small.source) / relative
        assert relative in cifar_small.train_files
        if link:
            assert Path(sample_path).is_symlink() and Path(sample_path).resolve() == source.resolve()
        else:
            assert not Path(sample_path).is_symlink() and filecmp.cmp(sample_path, source, shallow=False)
    back = import_selection(out, cifar_small, workspace=tmp_path / "ws", save=False)
    np.testing.assert_array_equal(back.indices, cifar_pick.indices)


@pytest.mark.cifar
def test_cifar_csv_of_file_names_maps_to_indices(cifar_small, cifar_pick, tmp_path: Path) -> None:
    chosen = cifar_pick.indices[::-1][:40]
    lines = [str(Path(cifar_small.source) / cifar_small.train_files[i]) for i in chosen[:20]]  # absolute paths
    lines += ["/".join(Path(cifar_small.train_files[i]).parts[-2:]) for i in chosen[20:]]  # class/file.jpg
    names = tmp_path / "files.csv"
    names.write_text("file\n" + "\n".join(lines) + "\n")
    back = import_selection(names, cifar_small, workspace=tmp_path, save=False)
    np.testing.assert_array_equal(back.indices, chosen)
    ambiguous = tmp_path / "bare.csv"
    ambiguous.write_text("file\n" + Path(cifar_small.train_files[int(chosen[0])]).name + "\n")
    with pytest.raises(SampleSiftError, match="match several training images"):
        import_selection(ambiguous, cifar_small, workspace=tmp_path, allow_mismatch=True)


@pytest.mark.cifar
def test_cifar_selection_of_another_cap_is_refused_then_mapped_by_file(
    cifar_root: Path, cifar_small, session_workspace: Path, tmp_path: Path
) -> None:
    smaller = load_dataset(str(cifar_root), workspace=session_workspace, max_per_class=50)
    picked = make_selection(smaller, "random", size=80, seed=2, save=False)
    manifest = export_selection(picked, smaller, tmp_path / "cap50.json", "json")
    with pytest.raises(SampleSiftError, match=f"made on data set {smaller.key}"):
        import_selection(manifest, cifar_small, workspace=tmp_path)
    assert not (tmp_path / "datasets").exists()  # nothing saved
    mapped = import_selection(manifest, cifar_small, workspace=tmp_path, allow_mismatch=True)
    assert [cifar_small.train_files[i] for i in mapped.indices] == [smaller.train_files[i] for i in picked.indices]
    assert not np.array_equal(mapped.indices, picked.indices)  # the caps order the files differently
    assert mapped.method == "imported" and mapped.manifest["info"]["mismatch_allowed"]


# --------------------------------------------------------------------------- verification on load


@pytest.fixture(scope="module")
def capped_digits(session_workspace: Path) -> ImageDataset:
    return load_dataset("digits", workspace=session_workspace, max_per_class=50)


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_of_another_data_set_is_refused(fmt: str, capped_digits, digits, tmp_path: Path) -> None:
    other = make_selection(capped_digits, "random", size=40, seed=0, save=False)
    out = export_selection(other, capped_digits, tmp_path / f"other{SUFFIX[fmt]}", fmt)
    with pytest.raises(SampleSiftError, match=f"does not fit data set {digits.key}.*{capped_digits.key}"):
        import_selection(out, digits, workspace=tmp_path)
    assert not (tmp_path / "datasets").exists()
    forced = import_selection(out, digits, workspace=tmp_path, allow_mismatch=True, name=f"forced-{fmt}")
    assert sorted(forced.indices.tolist()) == sorted(other.indices.tolist())
    assert forced.manifest["dataset"]["fingerprint"] == digits.fingerprint
    assert any(capped_digits.key in p for p in forced.manifest["info"]["mismatch_allowed"])


def test_cli_refuses_a_foreign_manifest_with_a_clear_message(capped_digits, tmp_path: Path, capsys) -> None:
    other = make_selection(capped_digits, "random", size=10, seed=0, save=False)
    path = export_selection(other, capped_digits, tmp_path / "other.json", "json")
    assert main(["import", "--workspace", str(tmp_path / "ws"), str(path)]) == 2
    message = capsys.readouterr().err
    assert message.startswith("samplesift: error:") and "--allow-mismatch" in message and capped_digits.key in message
    assert main(["import", "--workspace", str(tmp_path / "ws"), str(path), "--allow-mismatch"]) == 0
    assert "warning: imported despite" in capsys.readouterr().err


def test_wrong_classes_and_unfixable_rows_are_refused(digits, tmp_path: Path) -> None:
    label = int(digits.train_labels[4])
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(f"index,class\n4,{digits.class_names[(label + 1) % 10]}\n")
    with pytest.raises(SampleSiftError, match="1 of its 1 rows name another class"):
        import_selection(wrong, digits, workspace=tmp_path)
    for name, text, message in [
        ("range.csv", "index\n3\n1437\n", "index 1437 is outside"),
        ("negative.csv", "index\n-1\n", "index -1 is outside"),
        ("twice.csv", "index\n3\n8\n3\n", "sample 3 is listed more than once"),
        ("words.csv", "index\n3\nfour\n", "row 2 holds 'four'"),
        ("files.csv", "file\na.png\n", "not loaded from files"),
        ("empty.csv", "index\n", "lists no samples"),
    ]:
        (tmp_path / name).write_text(text)
        with pytest.raises(SampleSiftError, match=message):
            import_selection(tmp_path / name, digits, workspace=tmp_path, allow_mismatch=True)
    assert not (tmp_path / "datasets").exists()


def test_a_different_selection_under_the_same_name_is_not_replaced(digits, tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("index\n1\n2\n")
    (tmp_path / "b.csv").write_text("index\n1\n5\n")
    import_selection(tmp_path / "a.csv", digits, workspace=tmp_path, name="mine")
    import_selection(tmp_path / "a.csv", digits, workspace=tmp_path, name="mine")  # the same again is fine
    with pytest.raises(SampleSiftError, match="already has a different selection named 'mine'"):
        import_selection(tmp_path / "b.csv", digits, workspace=tmp_path, name="mine")
    assert load_selection("mine", digits, workspace=tmp_path).indices.tolist() == [1, 2]


# --------------------------------------------------------------------------- safe writing


def test_non_empty_folder_needs_overwrite_and_is_otherwise_unchanged(topk, digits, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    args = ["export", "--workspace", str(topk.path.parents[3]), "--selection", "export-topk"]
    assert main([*args, "--format", "folder", "--out", str(out)]) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert snapshot(out) == before
    # --overwrite replaces only an earlier export, never an arbitrary folder.
    assert main([*args, "--format", "folder", "--out", str(out), "--overwrite"]) == 2
    assert "not an earlier SampleSift export" in capsys.readouterr().err
    assert snapshot(out) == before
    earlier = tmp_path / "earlier"
    assert main([*args, "--format", "folder", "--out", str(earlier)]) == 0
    first = snapshot(earlier)
    assert main([*args, "--format", "folder", "--out", str(earlier)]) == 2
    assert snapshot(earlier) == first
    assert main([*args, "--format", "folder", "--out", str(earlier), "--overwrite"]) == 0
    assert snapshot(earlier) == first and sorted(p.name for p in tmp_path.iterdir()) == ["earlier", "out"]
    (tmp_path / "sel.csv").write_text("someone else's")
    assert main([*args, "--format", "csv", "--out", str(tmp_path / "sel.csv")]) == 2
    assert (tmp_path / "sel.csv").read_text() == "someone else's"
    assert main([*args, "--format", "csv", "--out", str(tmp_path / "sel.csv"), "--overwrite"]) == 0
    assert (tmp_path / "sel.csv").read_text().startswith("index,label,class")


def test_interrupted_export_leaves_no_folder_under_the_final_name(topk, digits, tmp_path: Path, monkeypatch) -> None:
    written = []
    real_write = export_module._write_image

    def write_then_interrupt(*args, **kwargs) -> None:
        if len(written) == 10:
            raise KeyboardInterrupt
        written.append(args[2])
        real_write(*args, **kwargs)

    monkeypatch.setattr(export_module, "_write_image", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        export_selection(topk, digits, tmp_path / "fresh", "folder")
    assert len(written) == 10 and all(not p.exists() for p in written)
    assert list(tmp_path.iterdir()) == []  # neither the final name nor the temporary folder
    monkeypatch.setattr(export_module, "_write_image", real_write)
    previous = export_selection(
        make_selection(digits, "random", size=12, seed=0, save=False), digits, tmp_path / "old", "folder"
    )
    before = snapshot(previous)
    written.clear()
    monkeypatch.setattr(export_module, "_write_image", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        export_selection(topk, digits, previous, "folder", overwrite=True)
    assert snapshot(previous) == before and [p.name for p in tmp_path.iterdir()] == ["old"]


def test_killed_export_process_leaves_no_folder_under_the_final_name(topk, digits, tmp_path: Path) -> None:
    script = f"""
import os, signal
import toolkit.export as e
from toolkit.data import load_dataset
from toolkit.selection import Selection
real, count = e._write_image, [0]
def write(*args, **kwargs):
    count[0] += 1
    if count[0] == 20:
        os.kill(os.getpid(), signal.SIGKILL)
    real(*args, **kwargs)
e._write_image = write
e.export_selection(Selection.from_file({str(topk.path)!r}), load_dataset("digits", workspace={str(tmp_path / "ws")!r}),
                   {str(tmp_path / "out")!r}, "folder")
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr.decode()
    assert not (tmp_path / "out").exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert len(leftovers) == 1 and len(list(leftovers[0].rglob("*.png"))) == 19  # the kill came midway


def test_names_from_the_data_cannot_leave_the_export_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 4, 4, 3), dtype=np.uint8)
    labels = np.arange(12) % 3
    np.savez(
        tmp_path / "odd.npz",
        train_images=images,
        train_labels=labels,
        test_images=images[:3],
        test_labels=labels[:3],
        class_names=np.asarray(["../../escape", "T-shirt/top", ".."]),
    )
    dataset = load_dataset(str(tmp_path / "odd.npz"), workspace=tmp_path / "ws")
    selection = make_selection(dataset, "random", size=9, seed=0, save=False)
    out = export_selection(selection, dataset, tmp_path / "exports" / "odd", "folder")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["T-shirt_top", "_.._escape", "class2"]
    assert all(out in p.resolve().parents for p in out.rglob("*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exports", "odd.npz"]
    back = import_selection(out, dataset, workspace=tmp_path / "ws", save=False)
    np.testing.assert_array_equal(back.indices, selection.indices)


def test_targets_that_would_destroy_data_are_refused(topk, digits, tmp_path: Path, monkeypatch) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, cls, i in [(s, c, i) for s in ("train", "test") for c in ("a", "b") for i in range(3)]:
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    folder_data = load_dataset(str(root), workspace=tmp_path / "ws")
    selection = make_selection(folder_data, "random", size=3, seed=0, save=False)
    before = snapshot(root)
    for out in [root, tmp_path, root / "train" / "c"]:  # the source, a folder holding it, a folder inside it
        with pytest.raises(SampleSiftError, match="overlaps the data set's source"):
            export_selection(selection, folder_data, out, "folder", overwrite=True)
    images = rng.integers(0, 256, size=(6, 4, 4, 1), dtype=np.uint8)
    npz = tmp_path / "set.npz"
    np.savez(npz, train_images=images, train_labels=np.arange(6) % 2, test_images=images, test_labels=np.arange(6) % 2)
    npz_data = load_dataset(str(npz), workspace=tmp_path / "ws")
    with pytest.raises(SampleSiftError, match="overlaps the data set's source"):
        export_selection(
            make_selection(npz_data, "random", size=3, seed=0, save=False), npz_data, npz, "npz", overwrite=True
        )
    monkeypatch.chdir(root)
    with pytest.raises(SampleSiftError, match="is the current folder"):
        export_selection(topk, digits, "..", "folder", overwrite=True)
    with pytest.raises(SampleSiftError, match="--link needs a data set loaded from image files"):
        export_selection(topk, digits, tmp_path / "x", "folder", link=True)
    assert snapshot(root) == before and sorted(p.name for p in tmp_path.iterdir()) == ["data", "set.npz", "ws"]
