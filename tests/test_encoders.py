"""Encoders: every one on real data (digits), the shared loop's resume, the file encoder's refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from toolkit.augment import ViewConfig, random_resized_views
from toolkit.data import ImageDataset, load_dataset
from toolkit.embedding import embedding_table, list_embeddings, load_embedding
from toolkit.encoders import ENCODERS, available, get_encoder, resume_embedding
from toolkit.encoders.contrastive import ContrastiveTask, nt_xent
from toolkit.errors import SampleSiftError
from toolkit.quality import knn_accuracy, linear_probe_accuracy
from toolkit.runs import RunStore
from toolkit.selection import compare_selections, make_selection
from toolkit.selectors import SELECTORS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUICK = {
    "autoencoder": {"epochs": 2, "batch": 128, "device": "cpu"},
    "contrastive": {"epochs": 2, "batch": 128, "device": "cpu"},
    "pixels-pca": {"components": 20},
    "proxy": {"epochs": 2, "batch": 64, "device": "cpu"},
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("encoders")


@pytest.fixture(scope="module")
def embedded(digits: ImageDataset, workspace: Path) -> dict[str, object]:
    """One embedding of digits by every encoder (the file encoder imports the proxy's rows)."""
    made = {
        name: get_encoder(name, **options).embed(digits, workspace=workspace, progress=False)
        for name, options in QUICK.items()
    }
    path = workspace / "outside.npy"
    np.save(path, np.concatenate([made["proxy"].vectors, made["proxy"].test_vectors()]))
    made["file"] = get_encoder("file", path=str(path)).embed(digits, workspace=workspace, progress=False)
    return made


def test_the_registry_holds_the_five_encoders_and_refuses_unknown_names_and_options() -> None:
    assert available() == ["autoencoder", "contrastive", "pixels-pca", "proxy", "file"]
    with pytest.raises(SampleSiftError, match="unknown encoder 'clip'; choose one of: autoencoder"):
        get_encoder("clip")
    with pytest.raises(SampleSiftError, match=r"encoder 'pixels-pca' has no option.*epochs.*it takes components"):
        get_encoder("pixels-pca", epochs=3)
    with pytest.raises(SampleSiftError, match="give exactly one of --epochs or --time-budget"):
        get_encoder("contrastive", time_budget=10)
    with pytest.raises(SampleSiftError, match="--temperature must be positive"):
        get_encoder("contrastive", temperature=0)
    for cls in ENCODERS.values():
        assert cls.summary and cls.source and cls.__doc__


def test_every_encoder_makes_a_verified_artifact_with_quality_figures(
    digits: ImageDataset, embedded: dict, workspace: Path
) -> None:
    dims = {"autoencoder": 216, "contrastive": 128 + 256, "pixels-pca": 20, "proxy": 192, "file": 192}
    for name, embedding in embedded.items():
        loaded = load_embedding(digits, workspace=workspace, name=name)
        assert loaded.vectors.shape == (digits.num_train, dims[name]) and loaded.encoder == name
        assert loaded.fingerprint == embedding.fingerprint
        assert loaded.test_vectors().shape == (digits.num_test, dims[name])
        manifest = loaded.manifest
        assert manifest["dataset"]["fingerprint"] == digits.fingerprint and manifest["versions"]["torch"]
        assert manifest["seed"] == 0 == manifest["config"]["seed"] and manifest["encoder"] == name
        assert all(manifest["config"][k] == v for k, v in QUICK.get(name, {}).items())
        quality = loaded.quality
        # Digits are easy: every embedding, even the untrained pixels, classifies well above chance (10 %).
        assert quality["protocol"] == "train -> test" and 0.5 < quality["knn_accuracy"] <= 1.0, (name, quality)
        assert 0.5 < quality["linear_probe_accuracy"] <= 1.0, (name, quality)
        if ENCODERS[name].trainable:
            log = (loaded.path / "training_log.jsonl").read_text().splitlines()
            assert json.loads(log[-1])["step"] == manifest["steps"] and manifest["train_time_s"] > 0
            assert (loaded.path / "model.safetensors").exists() and loaded.load_state()
            run = RunStore(workspace).get(manifest["run_id"])
            assert run.status()["state"] == "finished" and run.summary()["knn_accuracy"] == quality["knn_accuracy"]
    table = embedding_table(digits, workspace=workspace)
    assert list(table["name"]) == ["autoencoder", "contrastive", "pixels-pca", "proxy", "file"]
    assert table["knn_accuracy"].between(0.5, 1.0).all()


def test_the_proxy_records_training_dynamics_and_ccs_selects_on_them(
    digits: ImageDataset, embedded: dict, workspace: Path
) -> None:
    scores = embedded["proxy"].sample_scores()
    assert set(scores) == {"el2n", "forgetting"}
    assert ((scores["el2n"] >= 0) & (scores["el2n"] <= np.sqrt(2) + 1e-6)).all()
    assert (scores["forgetting"] >= 0).all() and scores["forgetting"].dtype == np.float32
    # Harder samples (by EL2N) are misclassified more often by the proxy's own model.
    selection = make_selection(digits, "ccs", size=200, workspace=workspace, embedding="proxy", save=False)
    assert selection.manifest["embedding"]["name"] == "proxy" and len(np.unique(selection.indices)) == 200
    hardest = np.argsort(-scores["el2n"])[: int(0.1 * digits.num_train)]
    assert not np.isin(selection.indices, hardest).any(), "ccs drops the hardest 10 % first"
    with pytest.raises(SampleSiftError, match="ccs ranks samples by the training-dynamics score 'el2n'"):
        make_selection(digits, "ccs", size=50, workspace=workspace, embedding="pixels-pca", save=False)


def test_every_selector_selects_on_every_encoders_embedding(
    digits: ImageDataset, embedded: dict, workspace: Path
) -> None:
    for name in embedded:
        for method in SELECTORS:
            if method == "ccs" and name != "proxy":
                continue  # needs training dynamics: only the proxy records them (refusal tested above)
            selection = make_selection(
                digits, method, size=40, seed=1, workspace=workspace, embedding=name, save=False, diagnostics=False
            )
            assert len(np.unique(selection.indices)) == 40, (name, method)
            needs = SELECTORS[method].needs_embeddings or SELECTORS[method].needs_sample_scores
            assert (selection.manifest["embedding"] or {}).get("name") == (name if needs else None), (name, method)


def test_selections_on_different_embeddings_compare_on_one(
    digits: ImageDataset, embedded: dict, workspace: Path
) -> None:
    a = make_selection(digits, "k-means", size=60, workspace=workspace, embedding="contrastive", name="km-contrastive")
    b = make_selection(digits, "k-means", size=60, workspace=workspace, embedding="pixels-pca", name="km-pixels")
    comparison = compare_selections(digits, [a.name, b.name], workspace=workspace)
    assert list(comparison.table["selected_on"]) == ["contrastive", "pixels-pca"]
    assert comparison.embedding["name"] == "contrastive"  # measured on the first selection's embedding
    again = compare_selections(digits, [a.name, b.name], workspace=workspace, embedding="pixels-pca")
    assert again.embedding["name"] == "pixels-pca" and not again.table.equals(comparison.table)


def test_select_defaults_to_the_newest_embedding(digits: ImageDataset, embedded: dict, workspace: Path) -> None:
    newest = list_embeddings(digits, workspace=workspace)[-1]["name"]
    selection = make_selection(digits, "k-center", size=10, workspace=workspace, save=False)
    assert selection.manifest["embedding"]["name"] == newest == "file"


def test_an_interrupted_contrastive_training_resumes_bit_identical(digits: ImageDataset, tmp_path: Path) -> None:
    """Killed mid-training (after a checkpoint), then resumed: the weights and rows of an uninterrupted run."""
    small = digits.capped(40)
    options = {"epochs": 3, "batch": 32, "device": "cpu", "checkpoint_every": 3, "log_every": 2}
    reference = get_encoder("contrastive", **options).embed(small, workspace=tmp_path / "reference", progress=False)

    calls = {"n": 0}
    original = ContrastiveTask.train_step

    def stop_at_step_8(self: ContrastiveTask, phase: str, fraction: float) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 2 + 8:  # after the two (rolled back) warm-up steps and seven counted ones
            raise KeyboardInterrupt
        return original(self, phase, fraction)

    ws = tmp_path / "interrupted"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ContrastiveTask, "train_step", stop_at_step_8)
        with pytest.raises(KeyboardInterrupt):
            get_encoder("contrastive", **options).embed(small, workspace=ws, progress=False)
    (run,) = RunStore(ws)
    assert run.status()["state"] == "interrupted" and run.load_checkpoint()["progress"]["step"] == 6
    assert not (ws / "datasets" / small.key / "embeddings" / "contrastive").exists(), "nothing half-made is published"
    resumed = resume_embedding(run.id, workspace=ws, progress=False)
    for file in ("model.safetensors", "embeddings.npy", "test_embeddings.npy"):
        assert (resumed.path / file).read_bytes() == (reference.path / file).read_bytes(), file
    losses = [r["loss"] for r in run.records() if r["kind"] == "train"]
    reference_run = RunStore(tmp_path / "reference").get(reference.manifest["run_id"])
    assert losses == [r["loss"] for r in reference_run.records() if r["kind"] == "train"]


def test_nt_xent_is_low_for_matching_views_and_high_for_random_ones() -> None:
    torch.manual_seed(0)
    z = torch.randn(16, 8)
    matched = nt_xent(torch.cat([z, z + 0.01 * torch.randn_like(z)]), temperature=0.1)
    shuffled = nt_xent(torch.cat([z, torch.randn_like(z)]), temperature=0.1)
    assert float(matched) < 0.2 and float(shuffled) > 2.0, (float(matched), float(shuffled))


def test_random_resized_views_are_seeded_batched_and_in_range() -> None:
    images = torch.randint(0, 256, (6, 32, 32, 3), dtype=torch.uint8)
    config = ViewConfig(size=24)
    a = random_resized_views(images, config, torch.Generator().manual_seed(3))
    b = random_resized_views(images, config, torch.Generator().manual_seed(3))
    c = random_resized_views(images, config, torch.Generator().manual_seed(4))
    assert a.shape == (6, 3, 24, 24) and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    # Full-area crop, no flip, no colour change: the view is the image resized.
    plain = ViewConfig(size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, jitter=0.0, gray_p=0.0)
    same = random_resized_views(images, plain, torch.Generator().manual_seed(0))
    assert torch.allclose(same * 255, images.permute(0, 3, 1, 2).float(), atol=1e-3)
    gray = random_resized_views(images, ViewConfig(size=24, gray_p=1.0, jitter=0.0), torch.Generator())
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])


def test_quality_figures_have_known_answers() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(4) * 10
    labels = np.repeat(np.arange(4), 50)
    points = centres[labels] + rng.normal(0, 0.5, (200, 4))
    test_labels = np.repeat(np.arange(4), 10)
    test = centres[test_labels] + rng.normal(0, 0.5, (40, 4))
    assert knn_accuracy(points, labels, test, test_labels) == 1.0
    assert linear_probe_accuracy(points, labels, test, test_labels) == 1.0
    shuffled = rng.permutation(labels)  # labels unrelated to the points: chance level
    assert knn_accuracy(points, shuffled, test, test_labels) < 0.6
    one_row_chunks = knn_accuracy(points, shuffled, test, test_labels, chunk_bytes=4 * len(points))
    assert one_row_chunks == knn_accuracy(points, shuffled, test, test_labels)  # the memory bound changes nothing


# --------------------------------------------------------------------------- the file encoder


def _image_folder(root: Path, digits: ImageDataset, per_class: int = 6) -> ImageDataset:
    for split, images, labels in (
        ("train", digits.train_images, digits.train_labels),
        ("test", digits.test_images, digits.test_labels),
    ):
        for cls in range(3):
            folder = root / split / str(cls)
            folder.mkdir(parents=True)
            for i, index in enumerate(np.flatnonzero(labels == cls)[:per_class]):
                Image.fromarray(images[index][..., 0]).save(folder / f"{i}.png")
    return load_dataset(str(root), workspace=root.parent / "ws")


@pytest.fixture
def folder(digits: ImageDataset, tmp_path: Path) -> ImageDataset:
    return _image_folder(tmp_path / "images", digits)


def test_the_file_encoder_matches_rows_by_name_in_any_order(folder: ImageDataset, tmp_path: Path) -> None:
    assert folder.train_files is not None and folder.test_files is not None
    names = [*folder.train_files, *folder.test_files]
    vectors = np.arange(len(names) * 3, dtype=np.float64).reshape(len(names), 3)
    order = np.random.default_rng(0).permutation(len(names))
    table = pd.DataFrame(vectors[order], columns=["a", "b", "c"]).assign(file=[names[i] for i in order])
    table.to_parquet(tmp_path / "features.parquet")
    made = get_encoder("file", path=str(tmp_path / "features.parquet")).embed(
        folder, workspace=tmp_path / "ws", progress=False
    )
    assert np.array_equal(made.vectors, vectors[: folder.num_train].astype(np.float32))
    assert np.array_equal(made.test_vectors(), vectors[folder.num_train :].astype(np.float32))
    assert made.manifest["matched_by"] == "name" and made.quality["protocol"] == "train -> test"
    # Names relative to the split folder (class/file) and absolute paths match too.
    short = table.assign(
        file=[f.split("/", 1)[1] if f.startswith("train/") else str(Path(folder.source) / f) for f in table["file"]]
    )
    short.to_csv(tmp_path / "features.csv", index=False)
    again = get_encoder("file", path=str(tmp_path / "features.csv"), match="name").embed(
        folder, workspace=tmp_path / "ws", name="again", progress=False
    )
    assert np.array_equal(again.vectors, made.vectors)


def test_the_file_encoder_reads_npz_with_train_and_test(folder: ImageDataset, tmp_path: Path) -> None:
    train = np.ones((folder.num_train, 2)) * np.arange(folder.num_train)[:, None]
    np.savez(tmp_path / "f.npz", embeddings=train, test=np.zeros((folder.num_test, 2)))
    made = get_encoder("file", path=str(tmp_path / "f.npz")).embed(folder, workspace=tmp_path / "ws", progress=False)
    assert made.manifest["matched_by"] == "order" and np.array_equal(made.vectors, train.astype(np.float32))


def _refusal_cases(folder: ImageDataset, tmp: Path) -> list[tuple[str, dict, str]]:
    n, m = folder.num_train, folder.num_test
    np.save(tmp / "short.npy", np.zeros((n - 1, 4)))
    nan = np.zeros((n, 4))
    nan[3, 1] = np.nan
    np.save(tmp / "nan.npy", nan)
    inf = np.zeros((n, 4))
    inf[5, 0] = np.inf
    np.save(tmp / "inf.npy", inf)
    assert folder.train_files is not None
    unknown = pd.DataFrame({"file": [*folder.train_files[:-1], "train/0/ghost.png"], "x": np.zeros(n)})
    unknown.to_csv(tmp / "unknown.csv", index=False)
    missing = pd.DataFrame({"file": list(folder.train_files[:-1]), "x": np.zeros(n - 1)})
    missing.to_csv(tmp / "missing.csv", index=False)
    text = pd.DataFrame({"file": list(folder.train_files), "x": np.zeros(n), "note": ["hi"] * n})
    text.to_parquet(tmp / "text.parquet")
    repeated = pd.DataFrame({"file": [folder.train_files[0]] * n, "x": np.zeros(n)})
    repeated.to_csv(tmp / "repeated.csv", index=False)
    (tmp / "broken.npy").write_bytes(b"not an array")
    (tmp / "vectors.txt").write_text("1 2 3")
    return [
        ("short.npy", {}, f"has {n - 1} rows, but data set .* has {n} training images \\({n + m} with the test"),
        ("nan.npy", {}, r"NaN or infinite values in 1 row\(s\) \(first: row 3\)"),
        ("inf.npy", {}, r"NaN or infinite values in 1 row\(s\) \(first: row 5\)"),
        ("unknown.csv", {}, "names 1 file\\(s\\) that are not in data set .* e.g. train/0/ghost.png"),
        ("missing.csv", {}, "has no row for 1 of the .* training images"),
        ("text.parquet", {}, "non-numeric column\\(s\\) note"),
        ("repeated.csv", {}, "lists some files more than once"),
        ("broken.npy", {}, "cannot be read as .npy"),
        ("vectors.txt", {}, "is a .txt file; the file encoder reads .npy, .npz, .parquet, .csv"),
        ("absent.npy", {}, "embedding file .*absent.npy does not exist"),
        ("short.npy", {"match": "name"}, "--match name needs file names"),
    ]


def test_the_file_encoder_refuses_bad_files_naming_the_problem_and_writing_nothing(
    folder: ImageDataset, tmp_path: Path, run_cli, snapshot
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    ws = tmp_path / "ws"
    for file, extra, message in _refusal_cases(folder, inputs):
        before = snapshot(ws)
        argv = [
            "embed",
            "--data",
            folder.spec,
            "--workspace",
            str(ws),
            "--encoder",
            "file",
            "--path",
            str(inputs / file),
        ]
        for key, value in extra.items():
            argv += [f"--{key}", value]
        code, err = run_cli(argv)
        assert code == 2, (file, err)
        assert err.startswith("samplesift: error: ") and len(err.strip().splitlines()) == 1, err
        assert re.search(message, err), (file, err)
        assert snapshot(ws) == before, f"{file}: the refused import changed the workspace"


def test_the_cli_lists_embeddings_with_their_quality(
    embedded: dict, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from toolkit.cli import main

    capsys.readouterr()
    assert main(["embeddings", "--workspace", str(workspace), "--format", "json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(embedded)
    for name, embedding in embedded.items():
        assert rows[name]["knn_accuracy"] == embedding.quality["knn_accuracy"]
        assert rows[name]["encoder"] == name
    assert main(["embeddings", "--workspace", str(workspace)]) == 0
    table = capsys.readouterr().out
    assert "knn_accuracy" in table and "%" in table and "contrastive" in table
