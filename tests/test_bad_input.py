"""Bad input never corrupts the workspace: a clear one-line error, exit code 2, nothing written.

Every case of the suite starts from a copy of one real workspace (a trained digits
autoencoder, two selections, a finished run, an interrupted run with its checkpoint, an
interrupted autoencoder training), applies one piece of bad input (a file, a command-line
value, an edited configuration, a damaged or foreign artifact), runs the command line as a
user would, and asserts three things: the message names the problem, the exit code is 2,
and the workspace tree (every file's path, size and SHA-256, every folder) is exactly what
it was before.

The second half checks the data problems that must be *handled* rather than refused: bad
files skipped and listed with ``--bad-images skip``, empty classes, a single class, mixed
sizes, grayscale mixed with colour, palette and 16-bit PNGs.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import toolkit.images as images_module
from toolkit.artifacts import atomic_write_json, fingerprint_arrays
from toolkit.data import load_dataset
from toolkit.encoders import get_encoder
from toolkit.errors import SampleSiftError
from toolkit.runs import RunStore
from toolkit.selection import make_selection
from toolkit.train import TrainConfig, prepare, train
from toolkit.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RunCli = Callable[[list[str]], tuple[int, str]]
Snapshot = Callable[[Path], dict]

# --------------------------------------------------------------------------- helpers


def write_folder(
    root: Path, images: dict[str, list[np.ndarray]], test: dict[str, list[np.ndarray]] | None = None
) -> Path:
    """An image-folder data set: ``{class: [uint8 arrays]}`` saved as PNG under train/ (and test/)."""
    for split, classes in (("train", images), ("test", test if test is not None else images)):
        for name, arrays in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, array in enumerate(arrays):
                Image.fromarray(array).save(folder / f"{i}.png")
    return root


def noise(shape: tuple[int, ...], seed: int, count: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb(side: int = 20_000) -> bytes:
    """A valid black 8-bit grayscale PNG of ``side`` x ``side``: ~0.4 MB that decodes to ``side**2`` bytes.

    Made in a fraction of a second without holding the pixels: one compressed block of 100 rows,
    ended with a full flush (byte-aligned, no history), is repeated as often as the rows need.
    8-bit grayscale is what torchvision's decoder (which has no pixel limit) takes itself.
    """
    rows_per_block = 100
    block = bytes(1 + side) * rows_per_block  # each row: filter byte 0, then black pixels
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    checksum = 1
    for _ in range(side // rows_per_block):
        checksum = zlib.adler32(block, checksum)
    stream = b"\x78\xda" + piece * (side // rows_per_block) + compressor.flush() + struct.pack(">I", checksum)
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", stream) + _png_chunk(b"IEND", b"")


def test_the_decompression_bomb_is_a_valid_png(tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    small.write_bytes(decompression_bomb(300))
    with Image.open(small) as image:
        assert image.size == (300, 300) and np.asarray(image).max() == 0


# --------------------------------------------------------------------------- the workspace


@pytest.fixture(scope="module")
def base_workspace(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> Path:
    """A workspace holding one of every artifact, built once with the Python API."""
    root = tmp_path_factory.mktemp("base-workspace")
    ws = Workspace(root)
    digits = load_dataset("digits", workspace=ws)
    get_encoder("autoencoder", epochs=1, batch=128, device="cpu").embed(digits, workspace=ws, progress=False)
    make_selection(digits, "topk-activation", size=50, name="topk50", workspace=ws)
    make_selection(digits, "random", size=30, name="rand30", workspace=ws)
    quick = TrainConfig(steps=3, batch=16, evals=0, device="cpu", checkpoint_every=1)
    train(digits, quick, workspace=ws, name="done", progress=False)
    # An interrupted run and an interrupted autoencoder training, as Ctrl-C leaves them.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("toolkit.train.ClassifierTask.evaluate", _interrupt)
        with pytest.raises(KeyboardInterrupt):
            train(digits, quick, workspace=ws, name="halfway", progress=False)
        patch.setattr("toolkit.encoders.autoencoder.embed_images", _interrupt)
        with pytest.raises(KeyboardInterrupt):
            encoder = get_encoder("autoencoder", epochs=1, batch=128, device="cpu", checkpoint_every=1)
            encoder.embed(digits, workspace=ws, name="half", progress=False)
    return root


def _interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


def _run(ws: Path, name: str) -> Path:
    return next(r.path for r in RunStore(ws) if r.config["name"] == name)


def _digits_key() -> str:
    return load_dataset("digits").key


# --------------------------------------------------------------------------- the cases


@dataclass
class Case:
    """One piece of bad input: ``setup(ws, tmp)`` prepares it and returns the CLI arguments."""

    id: str
    kind: str  # files | arguments | configurations | artifacts
    setup: Callable[[Path, Path], list[str]]
    message: str  # a regular expression the error line must match


def _args(*argv: str) -> Callable[[Path, Path], list[str]]:
    return lambda ws, tmp: list(argv)


def _truncated_image_folder(ws: Path, tmp: Path) -> list[str]:
    root = write_folder(tmp / "imgs", {"a": noise((8, 8, 3), 0), "b": noise((8, 8, 3), 1)})
    good = (root / "train" / "a" / "0.png").read_bytes()
    (root / "train" / "b" / "cut.png").write_bytes(good[: len(good) // 2])
    return ["train", "--data", str(root), "--steps", "2"]


def _non_image_file(ws: Path, tmp: Path) -> list[str]:
    root = write_folder(tmp / "imgs", {"a": noise((8, 8, 3), 0), "b": noise((8, 8, 3), 1)})
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    (root / "test" / "b" / "empty.jpg").write_bytes(b"")
    return ["select", "--data", str(root), "--method", "random", "--size", "2"]


def _unreadable_file(ws: Path, tmp: Path) -> list[str]:
    root = write_folder(tmp / "imgs", {"a": noise((8, 8, 3), 0), "b": noise((8, 8, 3), 1)})
    # Reading /proc/self/mem from its start fails with EIO, for root too (chmod would not).
    (root / "train" / "a" / "unreadable.png").symlink_to("/proc/self/mem")
    return ["train", "--data", str(root), "--steps", "2"]


def _npz(ws: Path, tmp: Path, **arrays: np.ndarray) -> str:
    path = tmp / "data.npz"
    np.savez(path, **arrays)
    return str(path)


def _npz_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "train_images": rng.integers(0, 256, (20, 8, 8, 1), dtype=np.uint8),
        "train_labels": np.arange(20) % 2,
        "test_images": rng.integers(0, 256, (6, 8, 8, 1), dtype=np.uint8),
        "test_labels": np.arange(6) % 2,
    }


def _npz_missing(ws: Path, tmp: Path) -> list[str]:
    arrays = _npz_arrays()
    del arrays["test_labels"]
    return ["train", "--data", _npz(ws, tmp, **arrays), "--steps", "2"]


def _npz_float(ws: Path, tmp: Path) -> list[str]:
    arrays = _npz_arrays()
    arrays["train_images"] = arrays["train_images"].astype(np.float32) / 255
    return ["train", "--data", _npz(ws, tmp, **arrays), "--steps", "2"]


def _npz_truncated(ws: Path, tmp: Path) -> list[str]:
    path = Path(_npz(ws, tmp, **_npz_arrays()))
    path.write_bytes(path.read_bytes()[:300])
    return ["select", "--data", str(path), "--method", "random", "--size", "3"]


def _npz_object_array(ws: Path, tmp: Path) -> list[str]:
    arrays = _npz_arrays()
    path = tmp / "data.npz"
    np.savez(path, **arrays, class_names=np.array([{"a": 1}, {"b": 2}], dtype=object))
    return ["train", "--data", str(path), "--steps", "2"]


def _npz_no_test(ws: Path, tmp: Path) -> list[str]:
    arrays = _npz_arrays()
    arrays["test_images"], arrays["test_labels"] = arrays["test_images"][:0], arrays["test_labels"][:0]
    return ["train", "--data", _npz(ws, tmp, **arrays), "--steps", "2"]


def _bomb_in_folder(ws: Path, tmp: Path) -> list[str]:
    root = write_folder(tmp / "imgs", {"a": noise((8, 8, 3), 0), "b": noise((8, 8, 3), 1)})
    (root / "train" / "b" / "bomb.png").write_bytes(decompression_bomb())
    return ["select", "--data", str(root), "--method", "random", "--size", "2"]


def _list_csv(tmp: Path, rows: list[str], header: str = "path,label,split") -> str:
    """``list:CSV`` over two classes of 8 x 8 PNGs under ``tmp/imgs`` (a/0.png ... b/3.png)."""
    write_folder(tmp / "imgs", {"a": noise((8, 8, 3), 0), "b": noise((8, 8, 3), 1)}, test={})
    (tmp / "list.csv").write_text("\n".join([header, *rows]) + "\n")
    return f"list:{tmp / 'list.csv'}"


def _list_case(rows: list[str], header: str = "path,label,split") -> Callable[[Path, Path], list[str]]:
    good = ["imgs/train/a/0.png,a,train", "imgs/train/b/0.png,b,train", "imgs/train/a/1.png,a,test"]
    return lambda ws, tmp: [
        "select",
        "--data",
        _list_csv(tmp, good + rows, header),
        "--method",
        "random",
        "--size",
        "2",
    ]


def _hf_without_images(ws: Path, tmp: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp / "hf").mkdir()
    for split in ("train", "test"):
        pq.write_table(pa.table({"text": ["a", "b"], "label": [0, 1]}), tmp / "hf" / f"{split}.parquet")
    return ["select", "--data", f"hf:{tmp / 'hf'}", "--method", "random", "--size", "1"]


def _out_under_a_file(ws: Path, tmp: Path) -> list[str]:
    (tmp / "a-file").write_text("x")
    return ["export", "--selection", "topk50", "--format", "csv", "--out", str(tmp / "a-file" / "x.csv")]


def _workspace_file(ws: Path, tmp: Path) -> list[str]:
    (tmp / "a-file").write_text("x")
    return ["select", "--method", "random", "--size", "3", "--workspace", str(tmp / "a-file")]


def _edit_run_config(name: str, edit: Callable[[dict], object]) -> Callable[[Path, Path], list[str]]:
    def setup(ws: Path, tmp: Path) -> list[str]:
        path = _run(ws, name) / "config.json"
        record = json.loads(path.read_text())
        edit(record)
        atomic_write_json(path, record)
        return ["train", "--resume", path.parent.name]

    return setup


def _run_config_not_json(ws: Path, tmp: Path) -> list[str]:
    path = _run(ws, "halfway") / "config.json"
    path.write_text(path.read_text()[:40])
    return ["train", "--resume", path.parent.name]


def _damaged_checkpoint(ws: Path, tmp: Path) -> list[str]:
    path = _run(ws, "halfway") / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:1000])
    return ["train", "--resume", path.parent.name]


def _foreign_selection(ws: Path, tmp: Path) -> list[str]:
    path = Workspace(ws).selection_path(_digits_key(), "topk50")
    return ["train", "--max-per-class", "50", "--selection", str(path), "--split", "0.5", "--steps", "2"]


def _edited_selection(ws: Path, tmp: Path) -> list[str]:
    path = Workspace(ws).selection_path(_digits_key(), "topk50")
    manifest = json.loads(path.read_text())
    manifest["indices"][0] = (manifest["indices"][0] + 1) % 1000
    path.write_text(json.dumps(manifest))
    return ["train", "--selection", "topk50", "--split", "0.5", "--steps", "2"]


def _forged_selection(ws: Path, tmp: Path) -> list[str]:
    # Indices and fingerprint rewritten together: the fingerprint matches, the indices are bogus.
    path = Workspace(ws).selection_path(_digits_key(), "rand30")
    manifest = json.loads(path.read_text())
    manifest["indices"][0] = 10**6
    manifest["fingerprint"] = fingerprint_arrays(np.asarray(manifest["indices"], dtype=np.int64))
    path.write_text(json.dumps(manifest))
    return ["train", "--selection", "rand30", "--split", "0.5", "--steps", "2"]


def _selection_not_json(ws: Path, tmp: Path) -> list[str]:
    path = Workspace(ws).selection_path(_digits_key(), "rand30")
    path.write_text("{ half a manifest")
    return ["train", "--selection", "rand30", "--split", "1", "--steps", "2"]


def _stale_selection(ws: Path, tmp: Path) -> list[str]:
    # The autoencoder now has another (valid, self-consistent) embedding, as after retraining.
    folder = Workspace(ws).embedding_dir(_digits_key(), "autoencoder")
    vectors = np.load(folder / "embeddings.npy") + 1.0
    np.save(folder / "embeddings.npy", vectors)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["embedding_fingerprint"] = fingerprint_arrays(vectors)
    atomic_write_json(folder / "manifest.json", manifest)
    return ["train", "--selection", "topk50", "--split", "0.5", "--steps", "2"]


def _truncated_embeddings(ws: Path, tmp: Path) -> list[str]:
    path = Workspace(ws).embedding_dir(_digits_key(), "autoencoder") / "embeddings.npy"
    path.write_bytes(path.read_bytes()[:500])
    return ["select", "--method", "topk-activation", "--size", "10", "--name", "fresh"]


def _replaced_embeddings(ws: Path, tmp: Path) -> list[str]:
    path = Workspace(ws).embedding_dir(_digits_key(), "autoencoder") / "embeddings.npy"
    np.save(path, np.load(path)[::-1].copy())
    return ["select", "--method", "topk-activation", "--size", "10", "--name", "fresh"]


def _swapped_weights(ws: Path, tmp: Path) -> list[str]:
    from safetensors.torch import load_file, save_file

    path = Workspace(ws).embedding_dir(_digits_key(), "autoencoder") / "model.safetensors"
    state = load_file(str(path))
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, str(path))
    return ["reconstruct", "--indices", "1,2", "--out", str(tmp / "figure.png")]


def _foreign_autoencoder(ws: Path, tmp: Path) -> list[str]:
    # An embedding folder copied over from another data set (its manifest says so).
    path = Workspace(ws).embedding_dir(_digits_key(), "autoencoder") / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["dataset"]["fingerprint"] = "0" * 32
    atomic_write_json(path, manifest)
    return ["select", "--method", "topk-activation", "--size", "10", "--name", "fresh", "--embedding", "autoencoder"]


def _resume_run_as_embed(ws: Path, tmp: Path) -> list[str]:
    return ["embed", "--resume", _run(ws, "halfway").name]


def _changed_data_behind_run(ws: Path, tmp: Path) -> list[str]:
    data = _npz(ws, tmp, **_npz_arrays())
    run = prepare(load_dataset(data), TrainConfig(steps=2, batch=4), workspace=ws, name="queued-on-npz")
    arrays = _npz_arrays()
    arrays["train_images"][0] = 255 - arrays["train_images"][0]  # one image edited since
    np.savez(data, **arrays)
    return ["train", "--resume", run.id]


CASES = [
    # files
    Case("missing-data-path", "files", _args("train", "--data", "/no/such/folder", "--steps", "2"), "does not exist"),
    Case("folder-without-splits", "files", lambda ws, tmp: ["train", "--data", str(tmp), "--steps", "2"], "no train/"),
    Case(
        "truncated-image", "files", _truncated_image_folder, r"1 file\(s\) .* not readable images \(train/b/cut.png\)"
    ),
    Case("non-image-and-empty-files", "files", _non_image_file, r"2 file\(s\).*notes.txt.*--bad-images skip"),
    Case("unreadable-file", "files", _unreadable_file, r"not readable images \(train/a/unreadable.png\)"),
    Case("npz-missing-array", "files", _npz_missing, "lacks the array"),
    Case("npz-float-images", "files", _npz_float, "must be uint8"),
    Case("npz-truncated", "files", _npz_truncated, "cannot read .* as an .npz archive"),
    Case("npz-pickled-objects", "files", _npz_object_array, "allow_pickle=False"),
    Case("npz-no-test-images", "files", _npz_no_test, "has no test images"),
    Case("not-an-npz", "files", lambda ws, tmp: ["train", "--data", __file__, "--steps", "2"], "not an .npz archive"),
    Case(
        "decompression-bomb",
        "files",
        _bomb_in_folder,
        r"1 image\(s\) in .* exceed the limit of [\d,]+ pixels, .*train/b/bomb.png: 20000 x 20000.*--max-pixels",
    ),
    Case(
        "list-missing-path",
        "files",
        _list_case(["imgs/train/b/nope.png,b,train"]),
        r"1 listed file\(s\) of list:.* do not exist \(imgs/train/b/nope.png\).*--bad-images skip",
    ),
    Case(
        "list-outside-root",
        "files",
        _list_case(["../elsewhere.png,a,train"]),
        r"row 5 names ../elsewhere.png, outside the list's folder .*--allow-outside-root",
    ),
    Case(
        "list-fractional-labels",
        "files",
        lambda ws, tmp: [
            "select",
            "--data",
            _list_csv(tmp, ["imgs/train/a/0.png,0,train", "imgs/train/b/0.png,0.5,test"]),
            "--method",
            "random",
            "--size",
            "1",
        ],
        r"row 3 has '0.5', a number that is not whole in label column 'label'; labels must be whole numbers",
    ),
    Case(
        "list-no-path-column",
        "files",
        _list_case([], header="picture,label,split"),
        r"has no image path column \(looked for path, .*columns: picture, label, split\); name it with --image-column",
    ),
    Case(
        "list-no-test-split",
        "files",
        lambda ws, tmp: [
            "select",
            "--data",
            _list_csv(tmp, ["imgs/train/a/0.png,a", "imgs/train/b/0.png,b"], "path,label"),
            "--method",
            "random",
            "--size",
            "1",
        ],
        r"has no test split; .*--test-fraction",
    ),
    Case(
        "hf-no-image-column", "files", _hf_without_images, r"has no image column \(its columns: text \(string\), label"
    ),
    Case("export-out-under-a-file", "files", _out_under_a_file, r"lies under .*a-file, which is a file, not a folder"),
    Case(
        "image-size-too-small",
        "files",
        lambda ws, tmp: ["select", "--data", str(tmp), "--image-size", "4", "--method", "random", "--size", "1"],
        r"--image-size must be a whole number of pixels from 8 to 1024, got 4",
    ),
    Case(
        "image-size-on-arrays",
        "files",
        _args("select", "--data", "digits", "--image-size", "32", "--method", "random", "--size", "1"),
        r"--image-size does not apply to --data digits",
    ),
    # arguments
    Case("steps-zero", "arguments", _args("train", "--steps", "0"), "--steps must be a positive whole number"),
    Case("no-length", "arguments", _args("train"), "exactly one of --steps or --time-budget"),
    Case("steps-and-budget", "arguments", _args("train", "--steps", "3", "--time-budget", "9"), "not allowed with"),
    Case("split-above-one", "arguments", _args("train", "--steps", "2", "--split", "1.5"), "--split must be between"),
    Case("split-nan", "arguments", _args("train", "--steps", "2", "--split", "nan"), "--split must be between"),
    Case("lr-infinite", "arguments", _args("train", "--steps", "2", "--lr", "inf"), "--lr must be a positive"),
    Case("batch-zero", "arguments", _args("train", "--steps", "2", "--batch", "0"), "--batch: must be positive"),
    Case("seed-negative", "arguments", _args("train", "--steps", "2", "--seed", "-1"), r"--seed must be"),
    Case("crop-too-large", "arguments", _args("train", "--steps", "2", "--crop", "9"), "larger than the images"),
    Case("split-without-selection", "arguments", _args("train", "--steps", "2", "--split", "0.5"), "needs --selection"),
    Case("size-zero", "arguments", _args("select", "--method", "random", "--size", "0"), "--size must be between 1"),
    Case("size-above-n", "arguments", _args("select", "--method", "random", "--size", "99999"), "--size must be"),
    Case("fraction-nan", "arguments", _args("select", "--method", "random", "--fraction", "nan"), "--fraction must"),
    Case("unknown-method", "arguments", _args("select", "--method", "best", "--size", "5"), "unknown selection method"),
    Case(
        "unknown-parameter",
        "arguments",
        _args("select", "--method", "random", "--size", "5", "--param", "x=1"),
        "no parameter",
    ),
    Case(
        "select-seed-negative",
        "arguments",
        _args("select", "--method", "random", "--size", "5", "--seed", "-2"),
        "seed must",
    ),
    Case(
        "name-escapes",
        "arguments",
        _args("select", "--method", "random", "--size", "5", "--name", "../../x"),
        "not allowed",
    ),
    Case(
        "run-name-slash", "arguments", _args("train", "--steps", "2", "--name", "a/b"), "run name 'a/b' is not allowed"
    ),
    Case("resume-unknown", "arguments", _args("train", "--resume", "nope"), "no run 'nope'"),
    Case("resume-traversal", "arguments", _args("train", "--resume", "../../etc"), "run id '../../etc' is not allowed"),
    Case("workspace-is-a-file", "arguments", _workspace_file, "is a file, not a folder"),
    Case("bad-images-choice", "arguments", _args("train", "--steps", "2", "--bad-images", "maybe"), "invalid choice"),
    Case("max-pixels-zero", "arguments", _args("train", "--steps", "2", "--max-pixels", "0"), "must be positive"),
    Case(
        "test-fraction-one",
        "arguments",
        _args("select", "--method", "random", "--size", "5", "--data", "/tmp", "--test-fraction", "1"),
        r"--test-fraction must be between 0 and 1",
    ),
    Case(
        "test-fraction-on-digits",
        "arguments",
        _args("select", "--method", "random", "--size", "5", "--test-fraction", "0.2"),
        r"--test-fraction does not apply to --data digits",
    ),
    Case(
        "reconstruct-index",
        "arguments",
        _args("reconstruct", "--indices", "5000", "--out", "/tmp/never.png"),
        r"indices must be in \[0, 1437\)",
    ),
    Case("embed-resume-unknown", "arguments", _args("embed", "--resume", "nope"), "no run 'nope'"),
    Case("embed-resume-classifier-run", "arguments", _resume_run_as_embed, "is not an embedding run"),
    Case("embed-unknown-encoder", "arguments", _args("embed", "--encoder", "clip"), "unknown encoder 'clip'"),
    Case(
        "embed-option-not-taken",
        "arguments",
        _args("embed", "--encoder", "pixels-pca", "--epochs", "2"),
        "encoder 'pixels-pca' has no option.*epochs",
    ),
    Case(
        "ray-address-without-ray",
        "arguments",
        _args("embed", "--encoder", "pixels-pca", "--ray-address", "auto"),
        r"--ray-address auto applies to --executor ray only",
    ),
    Case(
        "decode-workers-on-ray",
        "arguments",
        _args("select", "--method", "random", "--size", "5", "--executor", "ray", "--decode-workers", "2"),
        r"--decode-workers sets the local worker processes; on --executor ray the cluster's CPUs decode",
    ),
    Case(
        "embed-unknown-embedding",
        "arguments",
        _args("select", "--method", "k-means", "--size", "5", "--embedding", "nope"),
        "has no embedding named 'nope'",
    ),
    # configurations
    Case(
        "config-steps-negative",
        "configurations",
        _edit_run_config("halfway", lambda r: r["train"].update(steps=-5)),
        "edited or damaged: --steps must be",
    ),
    Case(
        "config-steps-text",
        "configurations",
        _edit_run_config("halfway", lambda r: r["train"].update(steps="many")),
        "--steps must be a positive whole number, got 'many'",
    ),
    Case(
        "config-batch-bool",
        "configurations",
        _edit_run_config("halfway", lambda r: r["train"].update(batch=True)),
        "--batch must be",
    ),
    Case(
        "config-no-dataset",
        "configurations",
        _edit_run_config("halfway", lambda r: r.pop("dataset")),
        "missing or bad 'dataset'",
    ),
    Case("config-not-json", "configurations", _run_config_not_json, "is not valid JSON"),
    Case(
        "resume-finished",
        "configurations",
        lambda ws, tmp: ["train", "--resume", _run(ws, "done").name],
        "already finished",
    ),
    # artifacts
    Case("checkpoint-damaged", "artifacts", _damaged_checkpoint, "is damaged and cannot be read"),
    Case("selection-other-dataset", "artifacts", _foreign_selection, "was made on data set digits-"),
    Case("selection-edited", "artifacts", _edited_selection, "do not match its fingerprint"),
    Case(
        "selection-forged", "artifacts", _forged_selection, r"does not hold 30 distinct sample indices in \[0, 1437\)"
    ),
    Case("selection-not-json", "artifacts", _selection_not_json, "is not valid JSON"),
    Case(
        "selection-stale",
        "artifacts",
        _stale_selection,
        "earlier version of embedding 'autoencoder'.*samplesift select",
    ),
    Case("embeddings-truncated", "artifacts", _truncated_embeddings, "cannot be read.*samplesift embed"),
    Case(
        "embeddings-replaced",
        "artifacts",
        _replaced_embeddings,
        "do not match their recorded fingerprint.*samplesift embed",
    ),
    Case("weights-swapped", "artifacts", _swapped_weights, "not the ones embedding 'autoencoder' was made with"),
    Case(
        "embedding-other-data",
        "artifacts",
        _foreign_autoencoder,
        "was made on other data; remake it with `samplesift embed",
    ),
    Case("data-changed-under-run", "artifacts", _changed_data_behind_run, "the data behind run .* changed"),
]
if torch.cuda.is_available():  # pragma: no cover - the GPU machine
    CASES = [c for c in CASES if c.id != "device-cuda"]
else:
    CASES.append(Case("device-cuda", "arguments", _args("train", "--steps", "2", "--device", "cuda"), "no CUDA GPU"))


@pytest.fixture
def case_workspace(base_workspace: Path, tmp_path: Path) -> Iterator[Path]:
    ws = tmp_path / "ws"
    shutil.copytree(base_workspace, ws, symlinks=True)
    yield ws


def test_the_suite_covers_every_kind_of_bad_input() -> None:
    kinds = {kind: sum(c.kind == kind for c in CASES) for kind in ("files", "arguments", "configurations", "artifacts")}
    assert len({c.id for c in CASES}) == len(CASES) >= 20
    assert all(count >= 5 for count in kinds.values()), kinds
    print(f"bad-input cases: {len(CASES)} ({kinds})")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_with_a_clear_message_and_changes_nothing(
    case: Case, case_workspace: Path, tmp_path: Path, run_cli: RunCli, snapshot: Snapshot
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    argv = case.setup(case_workspace, inputs)
    if "--workspace" not in argv:
        argv += ["--workspace", str(case_workspace)]
    before, inputs_before = snapshot(case_workspace), snapshot(inputs)
    code, err = run_cli(argv)
    assert code == 2, f"exit code {code}, stderr: {err}"
    assert "Traceback" not in err, err
    message = err.strip().splitlines()[-1]  # argparse prints its usage lines first
    assert re.match(r"samplesift( \w+)?: error: ", message), err
    assert re.search(case.message, message), f"{message!r} does not match {case.message!r}"
    assert snapshot(case_workspace) == before, "the workspace changed"
    assert snapshot(inputs) == inputs_before, "the input folder changed"
    assert not Path("/tmp/never.png").exists()


# --------------------------------------------------------------------------- handled, not refused


def _bad_files_folder(root: Path) -> tuple[Path, set[str]]:
    """Four good PNGs per class (two classes) and four kinds of bad file."""
    write_folder(root, {"cat": noise((8, 8, 3), 0), "dog": noise((8, 8, 3), 1)})
    good = (root / "train" / "cat" / "0.png").read_bytes()
    (root / "train" / "cat" / "cut.png").write_bytes(good[: len(good) // 2])
    (root / "train" / "dog" / "readme.txt").write_text("hello")
    (root / "test" / "dog" / "empty.jpg").write_bytes(b"")
    (root / "train" / "dog" / "io-error.png").symlink_to("/proc/self/mem")
    return root, {"train/cat/cut.png", "train/dog/readme.txt", "test/dog/empty.jpg", "train/dog/io-error.png"}


def test_bad_files_are_skipped_and_listed_with_bad_images_skip(tmp_path: Path, run_cli: RunCli) -> None:
    root, bad = _bad_files_folder(tmp_path / "imgs")
    with pytest.warns(UserWarning, match="4 unreadable or non-image file"):
        dataset = load_dataset(str(root), workspace=tmp_path / "ws", bad_files="skip")
    assert set(dataset.skipped_files) == bad
    assert dataset.num_train == 8 and dataset.num_test == 8
    assert set(dataset.train_files) == {f"train/{c}/{i}.png" for c in ("cat", "dog") for i in range(4)}
    # End to end through the CLI, and the run it records resumes with the same choice.
    ws = tmp_path / "ws"
    code, err = run_cli(
        [
            "train",
            "--data",
            str(root),
            "--bad-images",
            "skip",
            "--steps",
            "2",
            "--batch",
            "4",
            "--workspace",
            str(ws),
            "--quiet",
        ]
    )
    assert code == 0, err
    (run,) = RunStore(ws)
    assert run.config["dataset"]["bad_files"] == "skip"
    assert run.summary()["steps"] == 2


def test_an_empty_class_folder_is_left_out_with_a_note(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "imgs", {"a": noise((8, 8, 3), 0), "b": noise((8, 8, 3), 1)})
    (root / "train" / "empty").mkdir()
    with pytest.warns(UserWarning, match="class folder train/empty is empty and was left out"):
        dataset = load_dataset(str(root), workspace=tmp_path / "ws")
    assert dataset.class_names == ("a", "b")


def test_a_single_class_data_set_trains_and_selects(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "imgs", {"only": noise((8, 8), 0, count=12)})
    ws = tmp_path / "ws"
    dataset = load_dataset(str(root), workspace=ws)
    assert dataset.class_names == ("only",) and dataset.num_train == 12
    selection = make_selection(dataset, "random-balanced", size=5, workspace=ws)
    assert len(selection.indices) == 5
    run = train(
        dataset, TrainConfig(split=0.5, steps=4, batch=4, evals=1), selection=selection, workspace=ws, progress=False
    )
    summary = run.summary()
    assert summary["steps"] == 4 and summary["steps_fast"] == 2
    assert summary["test_accuracy"] == 1.0  # one class: every prediction is right


def test_mixed_sizes_and_grayscale_with_colour_are_unified(tmp_path: Path) -> None:
    gray = noise((8, 8), 0, count=3)
    colour = noise((8, 8, 3), 1, count=3)
    odd = noise((12, 10, 3), 2, count=1)  # another size: resized to the common 8 x 8
    root = write_folder(tmp_path / "imgs", {"g": gray, "c": colour + odd})
    with pytest.warns(UserWarning, match=r"image\(s\) differed from the common size 8x8 and were resized"):
        dataset = load_dataset(str(root), workspace=tmp_path / "ws")
    assert dataset.image_shape == (8, 8, 3)
    gray_rows = [i for i, f in enumerate(dataset.train_files) if f.startswith("train/g/")]
    first = dataset.train_images[gray_rows[0]]
    np.testing.assert_array_equal(first, np.repeat(gray[0][..., None], 3, axis=2))  # gray copied to R, G, B


def test_palette_16_bit_and_cmyk_images_decode_to_their_colours(tmp_path: Path) -> None:
    """torchvision's raw decode returns palette indices, uint16 and CMYK; we get true pixels."""
    rgb = noise((8, 8, 3), 3, count=1)[0]
    root = tmp_path / "imgs"
    for split in ("train", "test"):
        folder = root / split / "x"
        folder.mkdir(parents=True)
        palette = Image.fromarray(rgb).convert("P")
        palette.save(folder / "palette.png")
        Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=100)
        Image.fromarray(rgb).save(folder / "plain.png")
    wide = rgb[..., 0].astype(np.uint16) * 257
    Image.fromarray(wide).save(root / "train" / "x" / "sixteen.png")
    dataset = load_dataset(str(root), workspace=tmp_path / "ws")
    images = dict(zip(dataset.train_files, dataset.train_images, strict=True))
    np.testing.assert_array_equal(images["train/x/palette.png"], np.asarray(palette.convert("RGB")))
    np.testing.assert_array_equal(images["train/x/plain.png"], rgb)
    np.testing.assert_array_equal(images["train/x/sixteen.png"][..., 0], rgb[..., 0])  # 16 bits scaled, not clipped
    cmyk_error = np.abs(images["train/x/cmyk.jpg"].astype(int) - rgb.astype(int)).mean()
    assert cmyk_error < 8, f"CMYK JPEG decoded {cmyk_error:.1f} grey levels away from its colours"


def test_an_image_folder_without_test_images_loads_and_training_says_why_not(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "imgs", {"a": noise((8, 8, 3), 0), "b": noise((8, 8, 3), 1)}, test={})
    (root / "test").mkdir()
    dataset = load_dataset(str(root), workspace=tmp_path / "ws")
    assert dataset.num_test == 0 and dataset.num_train == 8
    with pytest.raises(SampleSiftError, match="has no test images"):
        train(dataset, TrainConfig(steps=2, batch=4), workspace=tmp_path / "ws", progress=False)
    assert not (tmp_path / "ws" / "runs").exists()


def test_a_decompression_bomb_is_skipped_and_listed_without_being_decoded(tmp_path: Path, monkeypatch) -> None:
    root = write_folder(tmp_path / "imgs", {"a": noise((8, 8, 3), 0), "b": noise((8, 8, 3), 1)})
    bomb = decompression_bomb()
    (root / "train" / "b" / "bomb.png").write_bytes(bomb)
    real_decode = images_module._decode_image

    def decode(raw: np.ndarray) -> np.ndarray:
        assert len(raw) != len(bomb), "the bomb reached the decoder"
        return real_decode(raw)

    monkeypatch.setattr(images_module, "_decode_image", decode)
    with pytest.warns(
        UserWarning, match=r"1 image\(s\) above the limit of [\d,]+ pixels were skipped: .*20000 x 20000"
    ):
        dataset = load_dataset(str(root), workspace=tmp_path / "ws", bad_files="skip")
    assert dataset.skipped_files == ("train/b/bomb.png",)
    assert dataset.num_train == 8 and "train/b/bomb.png" not in dataset.train_files


def test_max_pixels_sets_the_limit_and_is_recorded(tmp_path: Path) -> None:
    root = write_folder(
        tmp_path / "imgs", {"a": noise((8, 8, 3), 0), "b": noise((8, 8, 3), 1) + noise((12, 10, 3), 2, 1)}
    )
    with pytest.raises(
        SampleSiftError,
        match=r"2 image\(s\) in .* exceed the limit of 100 pixels, .* \(train/b/4.png: 10 x 12 = 120 pixels, test/b/4",
    ):
        load_dataset(str(root), workspace=tmp_path / "ws", max_pixels=100)
    dataset = load_dataset(str(root), workspace=tmp_path / "ws", max_pixels=120)
    assert dataset.num_train == 9 and dataset.load_options == {"max_pixels": 120}
    assert dataset.describe()["load_options"] == {"max_pixels": 120}
    assert "--max-pixels" in dataset.cli_arguments()  # the app's background jobs load the same data


def test_a_raised_max_pixels_lets_pillow_open_what_it_admits(tmp_path: Path, monkeypatch) -> None:
    """Pillow's own guard refuses above twice its limit: a raised --max-pixels lifts it while decoding, then back.

    Shown at small scale: Pillow's limit set to 50 pixels, BMP images (Pillow decodes them, not torchvision) of 120.
    """
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    root = tmp_path / "imgs"
    for split in ("train", "test"):
        (root / split / "a").mkdir(parents=True)
        for i, array in enumerate(noise((12, 10, 3), 4, count=2)):
            Image.fromarray(array).save(root / split / "a" / f"{i}.bmp")
    with pytest.raises(SampleSiftError, match=r"exceed the limit of 50 pixels"):  # the default: Pillow's limit
        load_dataset(str(root), workspace=tmp_path / "ws")
    dataset = load_dataset(str(root), workspace=tmp_path / "ws", max_pixels=120)
    assert dataset.image_shape == (12, 10, 3) and dataset.num_train == 2
    assert Image.MAX_IMAGE_PIXELS == 50  # put back


def test_export_to_a_missing_folder_creates_it(tmp_path: Path, run_cli: RunCli) -> None:
    ws = tmp_path / "ws"
    make_selection(load_dataset("digits", workspace=ws), "random", size=5, name="five", workspace=ws)
    out = tmp_path / "new" / "deeper" / "five.csv"
    code, err = run_cli(["export", "--selection", "five", "--format", "csv", "--out", str(out), "--workspace", str(ws)])
    assert code == 0, err
    assert len(out.read_text().splitlines()) == 6  # a header and five rows
