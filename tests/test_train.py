"""Two-phase training: phase bookkeeping, time budgets, determinism, averaging, real accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit.data import ImageDataset
from toolkit.errors import SampleSiftError
from toolkit.models import Classifier
from toolkit.runs import RunStore, list_runs
from toolkit.selection import make_selection
from toolkit.train import BatchSampler, TrainConfig, WeightAverage, evaluate, prepare, resume, train


@pytest.fixture(scope="module")
def digits_subset(digits: ImageDataset, session_workspace: Path):
    return make_selection(digits, "random-balanced", size=100, seed=0, workspace=session_workspace)


def test_exact_step_counts_per_phase(digits: ImageDataset, digits_subset, tmp_path: Path) -> None:
    config = TrainConfig(split=0.35, steps=20, batch=32, log_every=1, evals=2, device="cpu")
    run = train(digits, config, selection=digits_subset, workspace=tmp_path, progress=False)
    summary = run.summary()
    assert (summary["steps"], summary["steps_fast"], summary["steps_full"]) == (20, 7, 13)
    assert summary["images_seen"] == 20 * 32
    logs = run.metrics("train")
    assert logs["step"].tolist() == list(range(1, 21))
    assert logs["phase"].tolist() == ["fast"] * 7 + ["full"] * 13
    evals = run.metrics("eval")
    assert len(evals) == 3 and evals["step"].iloc[-1] == 20  # two during the run, one at the end
    assert run.status()["state"] == "finished"


def test_the_time_budget_stops_the_run(digits: ImageDataset, digits_subset, tmp_path: Path) -> None:
    budget = 1.5
    config = TrainConfig(split=0.5, time_budget=budget, batch=32, log_every=1, evals=0, device="cpu")
    run = train(digits, config, selection=digits_subset, workspace=tmp_path, progress=False)
    summary = run.summary()
    assert summary["stopped_by"] == "time_budget" and summary["steps"] > 2
    logs = run.metrics("train")
    times = logs["wall_time_s"].to_numpy()
    assert times[-1] >= budget and np.all(times[:-1] < budget)  # stopped at the first step past it
    first_full = int(np.argmax(logs["phase"].to_numpy() == "full"))
    assert first_full > 0 and times[first_full - 1] >= budget * 0.5  # the fast phase took half
    assert np.all(times[: first_full - 1] < budget * 0.5)
    assert summary["steps_fast"] == first_full


def test_same_seed_gives_the_same_run_on_cpu(digits: ImageDataset, digits_subset, tmp_path: Path) -> None:
    def final(seed: int) -> tuple[float, dict[str, torch.Tensor]]:
        config = TrainConfig(split=0.5, steps=24, batch=32, seed=seed, evals=0, device="cpu")
        run = train(digits, config, selection=digits_subset, workspace=tmp_path, progress=False)
        return run.summary()["final_train_loss"], run.load_checkpoint()["model"]

    loss_a, weights_a = final(5)
    loss_b, weights_b = final(5)
    loss_c, _ = final(6)
    assert loss_a == loss_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert loss_c != loss_a


def test_weight_decay_lands_only_on_the_hidden_fc_weights(digits: ImageDataset, tmp_path: Path) -> None:
    run = train(digits, TrainConfig(steps=2, batch=16, evals=0, device="cpu"), workspace=tmp_path, progress=False)
    groups = run.load_checkpoint()["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.004, 0.0]
    assert len(groups[0]["params"]) == 2 and all(g["lr"] == 0.1 and g["momentum"] == 0.0 for g in groups)


def test_weight_average_follows_tensorflows_ramp() -> None:
    model = torch.nn.Linear(3, 2)
    average = WeightAverage(model)
    assert average.decay(0) == pytest.approx(0.1) and average.decay(10) == pytest.approx(11 / 20)
    assert average.decay(10**6) == 0.9999
    before = average.model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update(0)  # decay 0.1: the average moves 90% of the way
    torch.testing.assert_close(average.model.weight, before + 0.9)


def test_evaluation_uses_the_averaged_weights(digits: ImageDataset, tmp_path: Path) -> None:
    run = train(digits, TrainConfig(steps=40, batch=32, evals=0, device="cpu"), workspace=tmp_path, progress=False)
    checkpoint, summary = run.load_checkpoint(), run.summary()
    images = torch.as_tensor(digits.test_images)
    labels = torch.as_tensor(digits.test_labels)
    for weights, reported in ((checkpoint["average"], "test_accuracy"), (checkpoint["model"], "test_accuracy_raw")):
        model = Classifier(1, 10, crop=6)
        model.load_state_dict(weights)
        assert evaluate(model, images, labels, crop=6)["accuracy"] == summary[reported]
    assert any(not torch.equal(checkpoint["average"][k], checkpoint["model"][k]) for k in checkpoint["model"])


def test_batch_sampler_draws_permutations_of_its_pool_and_resumes_exactly() -> None:
    pool = torch.tensor([3, 9, 11, 20, 42])
    sampler = BatchSampler(pool, batch=3, generator=torch.Generator().manual_seed(0))
    drawn = torch.cat([sampler.next() for _ in range(10)])  # 30 draws = 6 whole epochs
    for epoch in drawn.reshape(6, 5):
        assert sorted(epoch.tolist()) == pool.tolist()
    state, generator_state = sampler.state_dict(), sampler.generator.get_state()
    continued = [sampler.next() for _ in range(4)]
    clone = BatchSampler(pool, batch=3, generator=torch.Generator())
    clone.generator.set_state(generator_state)
    clone.load_state_dict(state)
    assert all(torch.equal(batch, clone.next()) for batch in continued)


def test_a_queued_run_starts_later(digits: ImageDataset, digits_subset, tmp_path: Path) -> None:
    run = prepare(
        digits,
        TrainConfig(split=1.0, steps=6, batch=16, evals=0, device="cpu"),
        selection=digits_subset,
        workspace=tmp_path,
        name="later",
    )
    assert run.status()["state"] == "queued" and run.summary() is None
    table = list_runs(tmp_path)
    assert table["status"].tolist() == ["queued"] and table["selection"].tolist() == [digits_subset.name]
    resume(run.id, workspace=tmp_path, progress=False)
    assert RunStore(tmp_path).get(run.id).summary()["steps_fast"] == 6
    with pytest.raises(SampleSiftError, match="already finished"):
        resume(run.id, workspace=tmp_path, progress=False)


def test_invalid_configs_are_refused_before_anything_is_written(digits: ImageDataset, digits_subset, tmp_path) -> None:
    for config, message in (
        (TrainConfig(steps=0), "--steps must be a positive"),
        (TrainConfig(steps=10, split=1.5), "--split must be between 0 and 1"),
        (TrainConfig(steps=10, split=-0.1), "--split must be between 0 and 1"),
        (TrainConfig(), "exactly one of --steps or --time-budget"),
        (TrainConfig(steps=5, time_budget=3), "exactly one of --steps or --time-budget"),
        (TrainConfig(time_budget=-1), "--time-budget must be a positive"),
        (TrainConfig(steps=5, crop=9), "--crop 9 is larger than the images"),
    ):
        with pytest.raises(SampleSiftError, match=message):
            train(digits, config, selection=digits_subset, workspace=tmp_path, progress=False)
    with pytest.raises(SampleSiftError, match="needs --selection"):
        train(digits, TrainConfig(steps=5, split=0.5), workspace=tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.cifar
def test_a_short_run_on_real_cifar10_learns(cifar_small: ImageDataset, tmp_path: Path) -> None:
    config = TrainConfig(steps=150, batch=64, evals=0, device="cpu")
    run = train(cifar_small, config, workspace=tmp_path, progress=False)
    summary = run.summary()
    # 1,000 training images, 150 steps: chance is 10%; the tutorial CNN gets well above it.
    assert summary["test_accuracy"] > 0.22, summary["test_accuracy"]
    assert summary["device"] == "cpu" and summary["precision"] == "float32"
