"""Code paths a GPU session would otherwise be the first to run, exercised on the CPU at tiny sizes.

bf16 autocast (slow on a CPU without native bf16, but the same code), ``torch.compile``
(inductor's C++ backend on CPU), the paper-baseline path of bench/train_throughput.py, the
trainable encoders in bf16, and selectors given torch tensors of every dtype and with
``requires_grad``, which must pick exactly what they pick from the NumPy array. On a CUDA
machine the last test also runs selectors on CUDA tensors.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit.data import ImageDataset
from toolkit.encoders import get_encoder
from toolkit.selectors import available, get_selector
from toolkit.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]


def tiny_config(**changes: object) -> TrainConfig:
    values: dict[str, object] = {"steps": 4, "batch": 32, "evals": 0, "device": "cpu", "warmup_steps": 1}
    values.update(changes)
    return TrainConfig(**values)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- classifier


def test_bf16_autocast_trains_the_classifier(digits: ImageDataset, tmp_path: Path) -> None:
    summary = train(digits, tiny_config(precision="bf16"), workspace=tmp_path, progress=False).summary()
    assert summary["precision"] == "bfloat16"
    assert summary["steps"] == 4 and math.isfinite(summary["final_train_loss"])
    assert 0.0 <= summary["test_accuracy"] <= 1.0


@pytest.mark.parametrize("norm", ["batch", "lrn"])
def test_bf16_autocast_both_norms_stay_close_to_fp32(digits: ImageDataset, tmp_path: Path, norm: str) -> None:
    fp32 = train(digits, tiny_config(norm=norm, precision="fp32"), workspace=tmp_path, progress=False).summary()
    bf16 = train(digits, tiny_config(norm=norm, precision="bf16"), workspace=tmp_path, progress=False).summary()
    # same batches and initialisation; bf16 rounding moves the loss a little, not a lot
    assert abs(bf16["final_train_loss"] - fp32["final_train_loss"]) < 0.25 * fp32["final_train_loss"] + 0.05


def _compile_or_skip(run: object) -> object:
    """Run a compile-using callable; skip (with the reason) only when inductor cannot build here."""
    if shutil.which("gcc") is None and shutil.which("cc") is None and shutil.which("clang") is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler for inductor; none on PATH")
    try:
        return run()  # type: ignore[operator]
    except Exception as exc:  # only a compiler or toolchain failure skips; anything else is a real failure
        text = f"{type(exc).__name__}: {exc}"
        if any(s in text for s in ("CppCompileError", "InvalidCxxCompiler", "C++ compile error", "gcc")):
            pytest.skip(f"inductor cannot compile on this machine: {text.splitlines()[0][:200]}")
        raise


def test_torch_compile_trains_the_classifier(digits: ImageDataset, tmp_path: Path) -> None:
    def run() -> dict:
        config = tiny_config(compile=True, steps=3)
        return train(digits, config, workspace=tmp_path, progress=False).summary()

    summary = _compile_or_skip(run)
    eager = train(digits, tiny_config(steps=3), workspace=tmp_path, progress=False).summary()
    assert isinstance(summary, dict) and summary["steps"] == 3
    # compiled and eager compute the same function: the loss agrees up to float reassociation
    assert summary["final_train_loss"] == pytest.approx(eager["final_train_loss"], rel=1e-3, abs=1e-4)


def _bench_module(name: str) -> object:
    bench = str(REPO / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_baseline_path_runs_at_a_tiny_size(digits: ImageDataset) -> None:
    """bench/train_throughput.py --paper-baseline's code (10,000 x 1,024 on CUDA), here 3 steps of 16 on CPU."""
    module = _bench_module("train_throughput")
    figures = module.paper_baseline(digits, False, steps=3, batch=16, device="cpu")  # type: ignore[attr-defined]
    assert figures["paper_baseline_steps"] == 3 and figures["paper_baseline_batch"] == 16
    assert figures["paper_baseline_wall_time_s"] > 0 and figures["paper_baseline_images_per_s"] > 0
    assert 0.0 <= figures["paper_baseline_test_accuracy"] <= 1.0


# --------------------------------------------------------------------------- encoders


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("autoencoder", {"epochs": 0.2, "batch": 64}),
        ("contrastive", {"epochs": 0.2, "batch": 64}),
        ("proxy", {"epochs": 0.2, "batch": 64}),
    ],
)
def test_encoders_train_and_embed_in_bf16(digits: ImageDataset, tmp_path: Path, name: str, options: dict) -> None:
    embedding = get_encoder(name, device="cpu", precision="bf16", **options).embed(
        digits, workspace=tmp_path, progress=False
    )
    assert embedding.vectors.shape[0] == digits.num_train
    assert embedding.vectors.dtype == np.float32 and np.isfinite(embedding.vectors).all()
    assert embedding.manifest["precision"] == "bfloat16"


# --------------------------------------------------------------------------- selectors on tensors


@pytest.fixture(scope="module")
def points() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """60 x 40 float32 in 3 uneven classes, and a score column for the rules that read one."""
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2], [30, 18, 12])
    x = (rng.normal(size=(60, 40)) + labels[:, None]).astype(np.float32)
    return x, labels, {"el2n": rng.random(60), "forgetting": rng.integers(0, 5, 60).astype(np.float64)}


def _select(name: str, x: object, labels: object, scores: dict, balanced: bool = False) -> np.ndarray:
    selector = get_selector(name)
    columns = scores if selector.needs_sample_scores else None
    return selector.select(x, 12, labels=labels, seed=4, balanced=balanced, sample_scores=columns).indices


@pytest.mark.parametrize("name", available())
def test_selectors_pick_the_same_from_tensors_as_from_numpy(
    name: str, points: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]
) -> None:
    x, labels, scores = points
    expected = _select(name, x, labels, scores)
    as_tensor = torch.from_numpy(x)
    cases = {
        "float32": as_tensor.clone(),
        "float64": as_tensor.double(),
        "requires_grad": as_tensor.clone().requires_grad_(True),
        "non-contiguous": torch.from_numpy(np.asfortranarray(x)).T.contiguous().T,
        "labels and scores as tensors": as_tensor.clone(),
    }
    for case, tensor in cases.items():
        if case == "labels and scores as tensors":
            got = _select(name, tensor, torch.from_numpy(labels), {k: torch.from_numpy(v) for k, v in scores.items()})
        else:
            got = _select(name, tensor, labels, scores)
        np.testing.assert_array_equal(got, expected, err_msg=f"{name}: {case} tensor input")
    # float64 NumPy input is computed in float32 as well
    np.testing.assert_array_equal(_select(name, x.astype(np.float64), labels, scores), expected)
    # bf16 tensors: the same picks as NumPy given the same (bf16-rounded) values
    rounded = as_tensor.to(torch.bfloat16)
    np.testing.assert_array_equal(
        _select(name, rounded, labels, scores),
        _select(name, rounded.float().numpy(), labels, scores),
        err_msg=f"{name}: bf16 tensor input",
    )
    # balanced selection from a tensor
    np.testing.assert_array_equal(
        _select(name, as_tensor.clone().requires_grad_(True), labels, scores, balanced=True),
        _select(name, x, labels, scores, balanced=True),
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine (runs on the GPU machine)")
@pytest.mark.parametrize("name", available())
def test_selectors_on_cuda_tensors_pick_what_cpu_picks(
    name: str, points: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]
) -> None:  # pragma: no cover - the GPU machine
    x, labels, scores = points
    on_gpu = torch.from_numpy(x).cuda()
    np.testing.assert_array_equal(_select(name, on_gpu, labels, scores), _select(name, x, labels, scores))


def test_selectors_compute_at_full_float32_whatever_training_set(
    points: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training on CUDA turns TF32 matmuls on (configure_cuda); a selection must not run in TF32,
    or its picks on a GPU would differ from the same selection on a CPU (seen on an H200)."""
    from toolkit.selectors.geometry import KCenterGreedy

    seen: list[str] = []
    original = KCenterGreedy._select

    def spy(self: KCenterGreedy, x: torch.Tensor, k: int, seed: int) -> tuple:
        seen.append(torch.get_float32_matmul_precision())
        return original(self, x, k, seed)

    monkeypatch.setattr(KCenterGreedy, "_select", spy)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        x, labels, scores = points
        _select("k-center", x, labels, scores, balanced=True)
        assert seen and set(seen) == {"highest"}
        assert torch.get_float32_matmul_precision() == "high"  # restored for the training that set it
    finally:
        torch.set_float32_matmul_precision(before)
