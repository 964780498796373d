"""Background jobs: real processes started through the toolkit, state read back from files."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from toolkit import jobs
from toolkit.artifacts import lock_is_held
from toolkit.data import ImageDataset, load_dataset
from toolkit.embedding import Embedding
from toolkit.encoders import get_encoder
from toolkit.errors import SampleSiftError
from toolkit.projection import find_projection
from toolkit.runs import RunStore
from toolkit.selection import make_selection
from toolkit.train import TrainConfig

#: Background training processes inherit SAMPLESIFT_THREADS=1 (much faster on a loaded 2-core machine).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def wait_for(condition, timeout: float = 120.0, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(every)


@pytest.fixture(scope="module")
def digits_selection(digits: ImageDataset, digits_embedding: Embedding, session_workspace: Path):
    return make_selection(digits, "topk-activation", size=120, workspace=session_workspace, name="jobs-topk")


@pytest.fixture(scope="module", autouse=True)
def umap_job(digits: ImageDataset, digits_embedding: Embedding, session_workspace: Path) -> jobs.Job:
    """A UMAP job started first: numba compiles for a while, in parallel with the other tests."""
    return jobs.start_projection(
        digits,
        "umap",
        seed=0,
        params={"n_neighbors": 10},
        workspace=session_workspace,
        embedding=digits_embedding.name,
    )


def test_embedding_run_reports_progress_and_cancels_keeping_a_checkpoint(session_workspace: Path) -> None:
    small = load_dataset("digits", workspace=session_workspace, max_per_class=30)
    # 400 epochs of 300 images in steps of 32: 3,750 steps, far more than the test waits for
    encoder = get_encoder("autoencoder", epochs=400, batch=32, device="cpu", log_every=2, checkpoint_every=3)
    run, job = jobs.start_embedding(small, encoder, workspace=session_workspace)
    assert job.kind == "train" and job.record["pid"] > 0 and run.config["kind"] == "embed"
    with pytest.raises(SampleSiftError, match="already being made"):
        jobs.start_embedding(small, encoder, workspace=session_workspace)
    # Progress is read from the run store's files, which the other process writes.
    wait_for(lambda: jobs.run_progress(run).step >= 4)
    progress = jobs.run_progress(run)
    assert progress.state == "running" and progress.stage == "training"
    assert run.config["loop"]["steps"] == 3750 and progress.images_per_s > 0 and progress.loss > 0
    assert progress.eta_s is not None and progress.eta_s > 0
    assert jobs.find_embedding_run(small, "autoencoder", workspace=session_workspace).id == run.id
    assert [r.id for r in jobs.active_embedding_runs(small, workspace=session_workspace)] == [run.id]
    assert jobs.cancel_run(run) == "interrupted"
    assert job.wait(60) == "finished", job.log_tail()
    stopped = jobs.run_progress(run)
    assert stopped.state == "interrupted" and 4 <= stopped.step < 4_000
    # Nothing half-made is published; the checkpoint (every 3 steps) stays for `samplesift embed --resume RUN`.
    assert not session_workspace.joinpath("datasets", small.key, "embeddings", "autoencoder").exists()
    assert run.checkpoint_path.is_file()


def test_queued_runs_train_in_order_and_a_cancelled_one_is_skipped_until_requeued(
    digits: ImageDataset, digits_selection, session_workspace: Path
) -> None:
    configs = [TrainConfig(split=split, steps=12, batch=32, evals=1, seed=1, device="cpu") for split in (1.0, 0.3, 0.5)]
    runs, job = jobs.queue_runs(digits, configs, selection=digits_selection, workspace=session_workspace)
    assert [run.status()["state"] for run in runs] == ["queued"] * 3
    # The worker needs seconds to reach the second run: cancelling it now is race-free.
    assert jobs.cancel_run(runs[1], workspace=session_workspace) == "cancelled"
    assert job.wait(240) == "finished", job.log_tail()
    assert f"skipping run {runs[1].id}" in job.log_tail()
    assert runs[1].status()["error"] == jobs.CANCELLED_BEFORE_START and runs[1].summary() is None
    first, third = runs[0].summary(), runs[2].summary()
    assert (first["steps"], first["steps_fast"], third["steps"], third["steps_fast"]) == (12, 12, 12, 6)
    assert runs[0].status()["started"] <= runs[2].status()["started"]
    progress = jobs.run_progress(runs[2])
    assert progress.state == "finished" and progress.fraction == 1.0 and progress.step == 12
    assert progress.accuracy == third["test_accuracy"]

    again = jobs.requeue(runs[1], workspace=session_workspace)
    assert again.wait(120) == "finished", again.log_tail()
    assert runs[1].status()["state"] == "finished" and runs[1].summary()["steps_fast"] == 4
    assert jobs.cancel_run(runs[1], workspace=session_workspace) == "nothing"
    with pytest.raises(SampleSiftError, match="only queued, interrupted or failed"):
        jobs.requeue(runs[1], workspace=session_workspace)


def test_cancel_stops_the_running_run_and_the_rest_of_the_queue(digits: ImageDataset, session_workspace: Path) -> None:
    configs = [TrainConfig(split=0.0, steps=100_000, batch=16, evals=0, device="cpu", log_every=1)] * 2
    runs, job = jobs.queue_runs(digits, configs, workspace=session_workspace, name="to-cancel")
    wait_for(lambda: jobs.run_progress(runs[0]).step >= 3)
    running = jobs.run_progress(runs[0])
    assert running.state == "running" and 0 < running.fraction < 0.01 and running.eta_s > 0
    job.cancel()
    assert job.wait(60) == "cancelled"
    assert runs[0].status()["state"] == "interrupted"
    second = runs[1].status()
    assert second["state"] == "interrupted" and second["error"] == jobs.CANCELLED_BEFORE_START


def test_a_refused_batch_queues_nothing(digits: ImageDataset, session_workspace: Path) -> None:
    before = {run.id for run in RunStore(session_workspace)}
    with pytest.raises(SampleSiftError, match="--steps must be a positive whole number"):
        jobs.queue_runs(digits, [TrainConfig(split=0.0, steps=0)], workspace=session_workspace)
    configs = [TrainConfig(split=0.0, steps=5), TrainConfig(split=0.5, steps=5)]
    with pytest.raises(SampleSiftError, match="needs --selection"):
        jobs.queue_runs(digits, configs, workspace=session_workspace)
    assert {run.id for run in RunStore(session_workspace)} == before
    with pytest.raises(SampleSiftError, match="unknown job kind"):
        jobs.start_job("sleep", [], workspace=session_workspace)


def test_projection_job_computes_and_caches_a_umap(
    digits: ImageDataset, digits_embedding: Embedding, session_workspace: Path, umap_job: jobs.Job
) -> None:
    assert umap_job.wait(300) == "finished", umap_job.log_tail()
    found = find_projection(digits_embedding, "umap", params={"n_neighbors": 10}, workspace=session_workspace)
    assert found is not None and found.coords.shape == (digits.num_train, 2)
    assert np.isfinite(found.coords).all() and found.params == {"n_neighbors": 10, "min_dist": 0.1}
    # UMAP keeps neighbourhoods: nearby points on the map mostly share a class (chance is 10%).
    d = ((found.coords[:, None, :] - found.coords[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    agreement = (digits.train_labels[d.argmin(1)] == digits.train_labels).mean()
    assert agreement > 0.5
    assert (
        jobs.find_projection_job(digits, "umap", workspace=session_workspace, embedding=digits_embedding.name).id
        == umap_job.id
    )
    listed = jobs.list_jobs(session_workspace)
    assert umap_job.id in {job.id for job in listed} and all(job.kind in jobs.JOB_KINDS for job in listed)


def test_a_job_killed_hard_reads_lost_not_running(
    digits: ImageDataset, digits_embedding: Embedding, session_workspace: Path
) -> None:
    job = jobs.start_projection(digits, "pca", seed=7, workspace=session_workspace, embedding=digits_embedding.name)
    wait_for(lambda: lock_is_held(job.lock_path))  # the wrapper runs and holds its lock
    assert job.state() == "running"
    os.killpg(job.record["pid"], signal.SIGKILL)  # the wrapper and its command, no chance to clean up
    wait_for(lambda: job.state() != "running", timeout=30)
    assert job.state() == "lost" and job.end() is None
