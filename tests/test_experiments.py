"""Sweeps, executors, statistics and result figures (toolkit.experiments, toolkit.results, toolkit.viz.results).

Real runs on scikit-learn's digits with a few steps each; Ray is started by the test itself
and the Ray test skips with the reason when Ray is not installed.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit.data import ImageDataset
from toolkit.embedding import Embedding
from toolkit.errors import SampleSiftError
from toolkit.experiments import (
    Grid,
    LocalExecutor,
    RayExecutor,
    SweepResult,
    SweepSpec,
    build_sweep,
    plan_sweep,
    run_sweep,
    sweep_executor,
)
from toolkit.results import (
    EQUAL_STEPS,
    EQUAL_TIME,
    FULL_DATA,
    RESULT_COLUMNS,
    mean_interval,
    results_table,
    summarize,
    time_to_target,
)
from toolkit.runs import RunStore
from toolkit.train import TrainConfig
from toolkit.viz.results import accuracy_vs_split, loss_curves, save_figure, time_budget_bars

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY_TRAIN = TrainConfig(batch=32, evals=0, log_every=5)
#: One torch thread per run: steadier on a loaded 2-core machine, and what the Ray tasks use.
ONE_THREAD = LocalExecutor(threads=1)


def tiny_spec(**grid: object) -> SweepSpec:
    values = {"selectors": ("random", "random-balanced"), "sizes": (100,), "splits": (0.0, 1.0), "seeds": (0,)}
    values.update(grid)
    values.setdefault("steps", (20,))
    return SweepSpec(name="tiny", data="digits", grids=(Grid(**values),), train=TINY_TRAIN)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory: pytest.TempPathFactory) -> SweepResult:
    """A real sweep: equal steps at two splits x two seeds, and an equal-time grid with evaluations."""
    spec = SweepSpec(
        name="small",
        data="digits",
        grids=(
            Grid(name="steps", selectors=("random",), sizes=(100,), splits=(0.0, 1.0), seeds=(0, 1), steps=(20,)),
            Grid(
                name="time",
                selectors=("random",),
                sizes=(100,),
                splits=(0.0, 0.5),
                seeds=(0,),
                time_budgets=(0.6,),
                train={"evals": 3},
            ),
        ),
        train=TINY_TRAIN,
    )
    return run_sweep(spec, workspace=tmp_path_factory.mktemp("sweep"), executor=ONE_THREAD)


# --------------------------------------------------------------------------- the run plan


def test_plan_is_the_cross_product_with_one_shared_full_data_run(
    digits: ImageDataset, digits_embedding: Embedding, session_workspace: Path
) -> None:
    spec = SweepSpec(
        data="digits",
        grids=(
            Grid(
                selectors=("random", "random-balanced", "topk-activation"),
                sizes=(50, 100),
                splits=(0.0, 0.5, 1.0),
                seeds=(0, 1),
                steps=(10, 20),
            ),
        ),
        train=TINY_TRAIN,
    )
    plan = plan_sweep(spec, digits, workspace=session_workspace)
    runs = [entry.run for entry in plan.entries]
    # per seed and schedule: one full-data run + 3 selectors x 2 sizes x 2 non-zero splits
    assert len(runs) == 2 * 2 * (1 + 3 * 2 * 2)
    assert len({r.key for r in runs}) == len(runs)
    assert all(entry.state == "new" for entry in plan.entries)
    assert [r.seed for r in runs] == sorted(r.seed for r in runs)  # seed-major order
    full = [r for r in runs if r.selector == FULL_DATA]
    assert len(full) == 4 and all(r.selection_name is None and r.split == 0.0 for r in full)
    cells = {(r.method, r.size, r.split, r.seed, r.config.steps) for r in runs if r.method}
    assert len(cells) == 3 * 2 * 2 * 2 * 2
    # one selection per (method, size, seed), shared by its splits and schedules
    names = {(r.method, r.size, r.seed): r.selection_name for r in runs if r.method}
    assert len(set(names.values())) == 3 * 2 * 2
    for r in runs:
        if r.method:
            assert r.selection_name == names[(r.method, r.size, r.seed)]
            assert r.config.seed == r.seed and r.config.split == r.split


def test_plan_refuses_bad_grids(digits: ImageDataset, session_workspace: Path) -> None:
    with pytest.raises(SampleSiftError, match="exceed the 1437 training samples"):
        plan_sweep(tiny_spec(sizes=(5000,)), digits, workspace=session_workspace)
    with pytest.raises(SampleSiftError, match="splits must be in"):
        plan_sweep(tiny_spec(splits=(1.5,)), digits, workspace=session_workspace)
    with pytest.raises(SampleSiftError, match="unknown selection method"):
        plan_sweep(tiny_spec(selectors=("nope",)), digits, workspace=session_workspace)
    with pytest.raises(SampleSiftError, match="give steps"):
        plan_sweep(tiny_spec(steps=()), digits, workspace=session_workspace)


def test_sweep_skips_finished_runs_and_only_runs_what_is_new(tmp_path: Path) -> None:
    one = tiny_spec(selectors=("random",))
    first = run_sweep(one, workspace=tmp_path, executor=ONE_THREAD)
    assert len(first.outcomes) == 2 and not first.failed
    before = {row.run_id: Path(row.path, "summary.json").stat().st_mtime_ns for row in first.table.itertuples()}
    again = plan_sweep(one, workspace=tmp_path)
    assert again.counts() == {"new": 0, "finished": 2, "resume": 0, "running": 0}
    more = run_sweep(tiny_spec(selectors=("random",), seeds=(0, 1)), workspace=tmp_path, executor=ONE_THREAD)
    assert len(more.outcomes) == 2  # only the new seed's runs were executed
    assert {o.run_id for o in more.outcomes}.isdisjoint(before)
    assert len(more.table) == 4 and set(before) <= set(more.table["run_id"])
    for run_id, mtime in before.items():
        assert Path(tmp_path, "runs", run_id, "summary.json").stat().st_mtime_ns == mtime
    assert len(list(RunStore(tmp_path))) == 4  # no duplicate run folders


def test_runs_queued_by_another_live_sweep_are_left_alone(tmp_path: Path) -> None:
    from toolkit.artifacts import atomic_write_json, read_json

    spec = tiny_spec(selectors=("random",), splits=(1.0,))
    plan = plan_sweep(spec, workspace=tmp_path)
    (task,) = plan.prepare()  # queued by this process: ours to run
    assert plan_sweep(spec, workspace=tmp_path).counts()["resume"] == 1
    status_path = tmp_path / "runs" / task.run_id / "status.json"
    atomic_write_json(status_path, {**read_json(status_path), "pid": os.getppid()})  # a live process, not us
    assert plan_sweep(spec, workspace=tmp_path).counts() == {"new": 0, "finished": 0, "resume": 0, "running": 1}
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    atomic_write_json(status_path, {**read_json(status_path), "pid": dead.pid})  # its sweep was killed
    assert plan_sweep(spec, workspace=tmp_path).counts()["resume"] == 1


def test_an_interrupted_sweep_resumes_without_redoing_finished_runs(tmp_path: Path) -> None:
    workspace, out = tmp_path / "ws", tmp_path / "out"
    args = ["--data", "digits", "--workspace", str(workspace), "--selectors", "random", "--sizes", "100"]
    args += ["--splits", "0,1", "--seeds", "0,1", "--steps", "100", "--batch", "32", "--evals", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "SAMPLESIFT_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "sweep", *args, "--out", str(out), "--no-png"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600  # a safety net only: a loaded machine can be very slow
    try:
        while time.monotonic() < deadline:
            states = [run.status().get("state") for run in RunStore(workspace)]
            if states.count("finished") >= 1 and "running" in states:
                break
            assert process.poll() is None, "the sweep ended before it could be interrupted"
            time.sleep(0.05)
        else:
            pytest.fail("the sweep did not get going in time")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    killed = {run.id: run.status().get("state") for run in RunStore(workspace)}
    finished = {rid for rid, state in killed.items() if state == "finished"}
    assert len(killed) == 4 and "interrupted" in killed.values()  # all queued up front; a dead pid reads interrupted
    mtimes = {rid: (workspace / "runs" / rid / "summary.json").stat().st_mtime_ns for rid in finished}

    spec = build_sweep(
        data="digits",
        grid={"selectors": ("random",), "sizes": (100,), "splits": (0.0, 1.0), "seeds": (0, 1), "steps": (100,)},
        train={"batch": 32, "evals": 0},
    )
    plan = plan_sweep(spec, workspace=workspace)
    assert plan.counts() == {"new": 0, "finished": len(finished), "resume": 4 - len(finished), "running": 0}
    result = run_sweep(spec, workspace=workspace, executor=ONE_THREAD)
    assert {o.run_id for o in result.outcomes} == set(killed) - finished  # the interrupted run continued in place
    assert not result.failed and len(result.table) == 4
    assert set(result.table["run_id"]) == set(killed)
    for rid, mtime in mtimes.items():
        assert (workspace / "runs" / rid / "summary.json").stat().st_mtime_ns == mtime


# --------------------------------------------------------------------------- executors


def test_ray_and_local_executors_agree(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'samplesift[ray]')")
    spec = tiny_spec()
    # one torch thread in this process against Ray tasks of one CPU (one thread) each; the
    # worker-process pool is exercised by tests/test_faults.py (a killed worker, then resume)
    local = run_sweep(spec, workspace=tmp_path / "local", executor=ONE_THREAD)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_sweep(spec, workspace=tmp_path / "ray", executor=RayExecutor(cpus_per_run=1))
    finally:
        ray.shutdown()
    assert not local.failed and not remote.failed
    columns = ["selector", "split", "seed", "steps", "test_accuracy", "final_train_loss", "selection"]
    ours = local.table[columns].sort_values(["selector", "split", "seed"]).reset_index(drop=True)
    theirs = remote.table[columns].sort_values(["selector", "split", "seed"]).reset_index(drop=True)
    assert len(ours) == 3
    pd.testing.assert_frame_equal(ours, theirs)  # same selections, same weights: identical numbers
    assert (local.table["test_accuracy"] > 0.1).any()  # it learned something (10 classes)


def test_ray_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(SampleSiftError, match=r"pip install 'samplesift\[ray\]'"):
        sweep_executor("ray")


# --------------------------------------------------------------------------- statistics


def test_mean_interval_on_known_numbers() -> None:
    stats = mean_interval([0.5, 0.6, 0.7])
    assert stats["n"] == 3
    assert stats["mean"] == pytest.approx(0.6)
    assert stats["std"] == pytest.approx(0.1)  # sample standard deviation (n - 1)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # Student t(0.975, 2 degrees of freedom)
    assert stats["ci_low"] == pytest.approx(0.6 - half) and stats["ci_high"] == pytest.approx(0.6 + half)
    wide = mean_interval([1.0, 2.0, 3.0, 4.0])
    assert wide["std"] == pytest.approx(math.sqrt(5 / 3))
    assert wide["ci_high"] - wide["mean"] == pytest.approx(3.182446305284263 * math.sqrt(5 / 3) / 2)
    single = mean_interval([0.42])
    assert single["mean"] == pytest.approx(0.42) and math.isnan(single["std"]) and math.isnan(single["ci_low"])


def _synthetic_table() -> pd.DataFrame:
    rows = []
    accuracies = {
        (FULL_DATA, 0.0): [0.50, 0.52, 0.54],
        ("random", 0.5): [0.40, 0.44, 0.48],
        ("random", 1.0): [0.30, 0.31, 0.35],
        ("topk-activation", 0.5): [0.45, 0.46, 0.47],
        ("topk-activation", 1.0): [0.36, 0.38, 0.40],
    }
    for (selector, split), values in accuracies.items():
        for seed, accuracy in enumerate(values):
            rows.append(
                {
                    "run_id": f"{selector}-{split}-{seed}",
                    "dataset": "d",
                    "protocol": EQUAL_STEPS,
                    "selector": selector,
                    "size": None if split == 0 else 100,
                    "split": split,
                    "seed": seed,
                    "steps_planned": 400,
                    "steps": 400,
                    "batch": 128,
                    "test_accuracy": accuracy,
                }
            )
    for strategy, split, values, steps in (
        (FULL_DATA, 0.0, [0.20, 0.22], [300, 310]),
        ("topk-activation", 0.5, [0.30, 0.36], [305, 298]),
    ):
        for seed, (accuracy, n) in enumerate(zip(values, steps, strict=True)):
            rows.append(
                {
                    "run_id": f"t-{strategy}-{seed}",
                    "dataset": "d",
                    "protocol": EQUAL_TIME,
                    "selector": strategy,
                    "size": None if split == 0 else 100,
                    "split": split,
                    "seed": seed,
                    "time_budget": 40.0,
                    "steps": n,
                    "batch": 128,
                    "test_accuracy": accuracy,
                }
            )
    table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    table["size"] = table["size"].astype("Int64")
    table["steps_planned"] = table["steps_planned"].astype("Int64")
    return table


def test_summarize_gives_per_cell_statistics() -> None:
    summary = summarize(_synthetic_table())
    row = summary[(summary["selector"] == "random") & (summary["split"] == 0.5)].iloc[0]
    assert row["n"] == 3 and row["mean"] == pytest.approx(0.44) and row["std"] == pytest.approx(0.04)
    assert row["min"] == pytest.approx(0.40) and row["max"] == pytest.approx(0.48) and row["seeds"] == "0,1,2"
    timed = summary[summary["protocol"] == EQUAL_TIME]
    assert len(timed) == 2 and set(timed["n"]) == {2}
    assert len(summary) == 7


def test_time_to_target_reads_the_evaluations(small_sweep: SweepResult) -> None:
    timed = small_sweep.table[small_sweep.table["protocol"] == EQUAL_TIME]
    assert len(timed) == 2
    reached = time_to_target(timed, 0.0)  # every run is at >= 0% at its first evaluation
    for row in reached.itertuples():
        evals = pd.read_json(Path(timed.set_index("run_id").loc[row.run_id, "path"], "metrics.jsonl"), lines=True)
        first = evals[evals["kind"] == "eval"].iloc[0]
        assert row.steps_to_target == first["step"] and row.seconds_to_target == pytest.approx(first["wall_time_s"])
        assert row.evaluations == (evals["kind"] == "eval").sum() >= 1  # those during the run and the final one
    never = time_to_target(timed, 1.01)
    assert never["steps_to_target"].isna().all() and never["seconds_to_target"].isna().all()


def test_results_table_has_one_row_per_finished_run(small_sweep: SweepResult) -> None:
    table = small_sweep.table
    assert list(table.columns) == RESULT_COLUMNS
    assert len(table) == 2 * 2 + 2
    assert set(table["protocol"]) == {EQUAL_STEPS, EQUAL_TIME}
    full = table[table["selector"] == FULL_DATA]
    assert full["size"].isna().all() and (full["split"] == 0).all()
    timed = table[table["protocol"] == EQUAL_TIME]
    assert timed["steps_planned"].isna().all() and (timed["time_budget"] == 0.6).all()
    assert (table["wall_time_s"] > 0).all() and table["test_accuracy"].between(0, 1).all()
    same = results_table(Path(table["path"].iloc[0]).parents[1])  # the workspace's table, read afresh
    pd.testing.assert_frame_equal(
        same.sort_values("run_id").reset_index(drop=True), table.sort_values("run_id").reset_index(drop=True)
    )


# --------------------------------------------------------------------------- figures


def test_accuracy_vs_split_draws_the_table_statistics() -> None:
    table = _synthetic_table()
    figure = accuracy_vs_split(table)
    summary = summarize(table[table["protocol"] == EQUAL_STEPS])
    full = summary[summary["selector"] == FULL_DATA].iloc[0]
    lines = {t.name: t for t in figure.data if t.mode == "lines+markers"}
    assert set(lines) == {"random (mean ± std band)", "topk-activation"}
    for name, selector in (("random (mean ± std band)", "random"), ("topk-activation", "topk-activation")):
        trace = lines[name]
        cells = summary[summary["selector"] == selector].sort_values("split")
        expected = [100 * full["mean"], *(100 * cells["mean"])]
        assert np.allclose(trace.y, expected)  # the shared full-data point, then each split
        assert [c[0] for c in trace.customdata] == ["0/100", "50/50", "100/0"]
    assert np.allclose(lines["topk-activation"].error_y.array, [100 * full["std"], *(100 * cells["std"])])
    band = next(t for t in figure.data if t.name == "random band")
    cells = summary[summary["selector"] == "random"].sort_values("split")
    upper = 100 * np.array([full["mean"] + full["std"], *(cells["mean"] + cells["std"])])
    assert np.allclose(band.y[:3], upper)
    assert (
        "equal steps" in figure.layout.annotations[0].text and "400 steps of 128" in figure.layout.annotations[0].text
    )


def test_time_budget_bars_draw_every_run_and_the_means() -> None:
    figure = time_budget_bars(_synthetic_table())
    bars = next(t for t in figure.data if t.type == "bar")
    assert list(bars.x) == ["full data", "topk-activation 50/50"]
    assert np.allclose(bars.y, [21.0, 33.0]) and np.allclose(
        bars.error_y.array, [100 * np.std([0.2, 0.22], ddof=1), 100 * np.std([0.3, 0.36], ddof=1)]
    )
    dots = next(t for t in figure.data if t.type == "scatter")
    assert sorted(np.round(dots.y, 6)) == [20.0, 22.0, 30.0, 36.0]
    assert "equal wall-clock" in figure.layout.annotations[0].text


def test_loss_curves_follow_the_runs(small_sweep: SweepResult, tmp_path: Path) -> None:
    timed = small_sweep.table[small_sweep.table["protocol"] == EQUAL_TIME]
    figure = loss_curves(timed, x="wall_time_s")
    lines = [t for t in figure.data if t.mode == "lines"]
    assert len(lines) == 2
    for trace, path in zip(lines, timed["path"], strict=True):
        metrics = pd.read_json(Path(path, "metrics.jsonl"), lines=True)
        train = metrics[metrics["kind"] == "train"]
        assert np.allclose(trace.x, train["wall_time_s"]) and np.allclose(trace.y, train["loss"])
    by_step = [t for t in loss_curves(list(timed["path"]), x="step").data if t.mode == "lines"]
    for trace, path in zip(by_step, timed["path"], strict=True):
        metrics = pd.read_json(Path(path, "metrics.jsonl"), lines=True)
        assert list(trace.x) == list(metrics.loc[metrics["kind"] == "train", "step"])
    html, *rest = save_figure(figure, tmp_path / "fig7", formats=("html",))
    assert html.read_text().count("plotly") > 10 and not rest


def test_png_export(tmp_path: Path) -> None:
    import shutil

    if not any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome", "chrome")):
        pytest.skip("PNG export needs Chrome or Chromium (Debian: apt-get install chromium)")
    png, html = save_figure(accuracy_vs_split(_synthetic_table()), tmp_path / "fig5", formats=("png", "html"))
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 1000 and int.from_bytes(data[20:24], "big") == 600
    assert html.stat().st_size > 100_000


# --------------------------------------------------------------------------- the CLI


def test_cli_sweep_writes_table_and_figures(tmp_path: Path, run_cli: Callable[[list[str]], tuple[int, str]]) -> None:
    args = ["sweep", "--data", "digits", "--workspace", str(tmp_path / "ws"), "--selectors", "random"]
    args += ["--sizes", "100", "--splits", "0,1", "--seeds", "0", "--steps", "10", "--batch", "32"]
    assert run_cli([*args, "--out", str(tmp_path / "out"), "--no-png"]) == (0, "")
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(table.columns) == RESULT_COLUMNS and len(table) == 2
    parquet = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert list(parquet["run_id"]) == list(table["run_id"])
    api = results_table(tmp_path / "ws")
    assert list(api["run_id"]) == list(table["run_id"])  # the Python API returns the same table
    assert np.allclose(api["test_accuracy"], table["test_accuracy"])
    assert (tmp_path / "out" / "fig5_accuracy_vs_split.html").exists()
    fig7b = (tmp_path / "out" / "fig7b_loss_vs_step.html").read_text()
    assert fig7b.count('"mode":"lines"') == 2  # Fig. 7b: the loss curves of both runs
    runs_before = sorted(p.name for p in (tmp_path / "ws" / "runs").iterdir())
    assert run_cli([*args, "--out", str(tmp_path / "out2"), "--dry-run"])[0] == 0
    assert sorted(p.name for p in (tmp_path / "ws" / "runs").iterdir()) == runs_before
    assert not (tmp_path / "out2").exists()  # a dry run only prints the plan


def test_cli_sweep_bad_input(tmp_path: Path, run_cli: Callable[[list[str]], tuple[int, str]]) -> None:
    base = ["sweep", "--data", "digits", "--workspace", str(tmp_path), "--out", str(tmp_path / "out")]
    code, err = run_cli([*base, "--selectors", "random"])
    assert code == 2 and "give --steps" in err
    code, err = run_cli([*base, "--preset", "cpu", "--part", "fig9"])
    assert code == 2 and "has no part(s) ['fig9']" in err
    code, err = run_cli([*base, "--steps", "10", "--splits", "0,2"])
    assert code == 2 and "splits must be in [0, 1]" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_presets_state_their_schedules() -> None:
    paper = build_sweep(preset="paper", data="digits")
    fig5 = next(g for g in paper.grids if g.name == "fig5")
    assert fig5.steps == (10_000,) and paper.train.batch == 1024 and fig5.sizes == (4320,)
    assert {"random", "random-balanced", "topk-activation"} <= set(fig5.selectors) and len(fig5.seeds) >= 3
    cpu = build_sweep(preset="cpu", data="digits", parts=["fig6"], grid={"seeds": (0, 1)})
    assert [g.name for g in cpu.grids] == ["fig6"] and cpu.grids[0].seeds == (0, 1)
    assert cpu.grids[0].time_budgets and cpu.grids[0].sizes == (4320,)


# --------------------------------------------------------------------------- embeddings as a sweep axis


@pytest.fixture(scope="module")
def two_embeddings(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ImageDataset]:
    """A workspace with digits and two real embeddings: pixels-pca and a one-epoch autoencoder."""
    from toolkit.data import load_dataset
    from toolkit.encoders import get_encoder

    workspace = tmp_path_factory.mktemp("embeddings")
    digits = load_dataset("digits", workspace=workspace)
    get_encoder("pixels-pca").embed(digits, workspace=workspace, progress=False)
    get_encoder("autoencoder", epochs=1, batch=128, device="cpu").embed(digits, workspace=workspace, progress=False)
    return workspace, digits


def embedding_spec(embeddings: tuple[str | None, ...] = ("pixels-pca", "autoencoder")) -> SweepSpec:
    grid = Grid(
        name="axis",
        selectors=("random-balanced", "k-means"),
        embeddings=embeddings,
        sizes=(100,),
        splits=(0.0, 1.0),
        seeds=(0, 1),
        steps=(10,),
        balanced=True,
    )
    return SweepSpec(name="axis", data="digits", grids=(grid,), train=TINY_TRAIN)


@pytest.fixture(scope="module")
def embedding_sweep(two_embeddings: tuple[Path, ImageDataset]) -> SweepResult:
    workspace, _ = two_embeddings
    return run_sweep(embedding_spec(), workspace=workspace, executor=ONE_THREAD)


def test_each_embedding_gets_its_own_runs_and_random_runs_once(embedding_sweep: SweepResult) -> None:
    plan, table = embedding_sweep.plan, embedding_sweep.table
    assert not embedding_sweep.failed and not plan.skipped
    # per seed: full data, random-balanced once (it uses no embedding), k-means once per embedding
    assert len(plan.entries) == 2 * (1 + 1 + 2) and len(table) == 8
    runs = [entry.run for entry in plan.entries]
    assert len({r.key for r in runs}) == len(runs)
    kmeans = [r for r in runs if r.method == "k-means"]
    assert sorted((r.embedding, r.seed) for r in kmeans) == [
        ("autoencoder", 0),
        ("autoencoder", 1),
        ("pixels-pca", 0),
        ("pixels-pca", 1),
    ]
    assert all(r.embedding in r.selection_name and r.embedding_fingerprint for r in kmeans)
    assert len({r.selection_name for r in kmeans}) == 4  # no two embeddings share a selection
    assert all(r.embedding is None for r in runs if r.method != "k-means")
    # the results table says which embedding each selection was made on
    rows = table[table["selector"] == "k-means+balanced"]
    assert sorted(rows["embedding"]) == ["autoencoder", "autoencoder", "pixels-pca", "pixels-pca"]
    assert table.loc[table["selector"].isin(["random-balanced", FULL_DATA]), "embedding"].isna().all()
    for row in rows.itertuples():
        manifest = RunStore(Path(row.path).parents[1]).get(row.run_id).config["selection"]
        assert manifest["embedding"] == row.embedding and row.embedding in row.selection


def test_finished_runs_are_reused_only_on_the_same_embedding(
    embedding_sweep: SweepResult, two_embeddings: tuple[Path, ImageDataset]
) -> None:
    from toolkit.encoders import get_encoder

    workspace, digits = two_embeddings
    assert plan_sweep(embedding_spec(), workspace=workspace).counts()["new"] == 0  # resumes nothing, reuses all
    one = plan_sweep(embedding_spec(("pixels-pca",)), workspace=workspace)
    assert one.counts() == {"new": 0, "finished": 6, "resume": 0, "running": 0}
    # the same vectors under another name are another embedding: its k-means runs are new
    get_encoder("pixels-pca").embed(digits, workspace=workspace, name="pixels-copy", progress=False)
    three = plan_sweep(embedding_spec(("pixels-pca", "autoencoder", "pixels-copy")), workspace=workspace)
    new = [entry.run for entry in three.entries if entry.state == "new"]
    assert (
        three.counts()["finished"] == 8 and [(r.method, r.embedding) for r in new] == [("k-means", "pixels-copy")] * 2
    )


def test_paired_csv_equals_a_hand_computation_from_the_results_table(
    embedding_sweep: SweepResult, tmp_path: Path
) -> None:
    from scipy import stats

    from toolkit.experiments import write_outputs

    written = {path.name for path in write_outputs(embedding_sweep, tmp_path, png=False)}
    assert {"paired.csv", "gain.csv", "learning_curve.html", "gain_over_random.html"} <= written
    paired = pd.read_csv(tmp_path / "paired.csv", keep_default_na=False)
    table = embedding_sweep.table
    base = table[table["selector"] == "random-balanced"].set_index("seed")["test_accuracy"]
    for embedding in ("pixels-pca", "autoencoder"):
        ours = table[(table["selector"] == "k-means+balanced") & (table["embedding"] == embedding)]
        differences = (ours.set_index("seed")["test_accuracy"] - base).sort_index().to_numpy()
        row = paired[(paired["embedding"] == embedding) & (paired["selector"] == "k-means+balanced")].iloc[0]
        assert row["baseline"] == "random-balanced" and row["n"] == 2 and row["seeds"] == "0,1"
        assert int(row["size"]) == 100 and float(row["split"]) == 1.0
        half = stats.t.ppf(0.975, 1) * differences.std(ddof=1) / math.sqrt(2)
        assert float(row["mean_diff"]) == pytest.approx(differences.mean(), abs=1e-12)
        assert float(row["ci_low"]) == pytest.approx(differences.mean() - half, abs=1e-12)
        assert float(row["ci_high"]) == pytest.approx(differences.mean() + half, abs=1e-12)
    learning = (tmp_path / "learning_curve.html").read_text()
    assert "10 steps of 32" in learning and "k-means+balanced" in learning


def test_compare_prints_a_selections_measured_gain(
    embedding_sweep: SweepResult, two_embeddings: tuple[Path, ImageDataset], capsys: pytest.CaptureFixture[str]
) -> None:
    from toolkit import cli
    from toolkit.selection import make_selection

    workspace, digits = two_embeddings
    table = embedding_sweep.table
    row = table[(table["selector"] == "k-means+balanced") & (table["embedding"] == "pixels-pca")].iloc[0]
    base = table[(table["selector"] == "random-balanced") & (table["seed"] == row["seed"])].iloc[0]
    unused = make_selection(digits, "k-center", size=100, name="unused", workspace=workspace, embedding="pixels-pca")
    capsys.readouterr()
    assert cli.main(["compare", "--data", "digits", "--workspace", str(workspace), row["selection"], unused.name]) == 0
    out = capsys.readouterr().out
    assert "measured gain" in out and "unused: no runs yet" in out
    difference = 100 * (row["test_accuracy"] - base["test_accuracy"])
    expected = (
        f"{row['selection']}: K=100 split 100/0, 10 steps of 32: {100 * row['test_accuracy']:.2f}% over 1 run(s) "
        f"(seeds {row['seed']}); vs random-balanced {difference:+.2f} points (1 pair: no interval)"
    )
    assert expected in out


# --------------------------------------------------------------------------- the cpu-converged preset


def test_cpu_converged_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli, capsys) -> None:
    """The preset's plan on a CIFAR-sized stand-in (4,400 tiny images, four stand-in embeddings)."""
    from toolkit import embedding as embedding_module
    from toolkit.data import load_dataset
    from toolkit.embedding import save_embedding
    from toolkit.experiments import PILOT_SEED

    monkeypatch.setattr(embedding_module, "embedding_quality", lambda *a, **k: {})  # not what is tested here
    rng = np.random.default_rng(0)
    n, data = 4400, tmp_path / "big.npz"
    images = rng.integers(0, 255, (n, 4, 4), dtype=np.uint8)
    np.savez(
        data,
        train_images=images,
        train_labels=np.arange(n) % 10,
        test_images=images[:20],
        test_labels=np.arange(20) % 10,
    )
    dataset = load_dataset(str(data), workspace=tmp_path)
    for name in ("autoencoder", "contrastive", "pixels-pca", "proxy"):
        scores = {"el2n": rng.random(n)} if name == "proxy" else None
        vectors = rng.normal(size=(n, 2)).astype(np.float32)
        save_embedding(
            dataset,
            workspace=tmp_path,
            name=name,
            encoder=name,
            config={},
            seed=0,
            vectors=vectors,
            test_vectors=None,
            sample_scores=scores,
        )

    spec = build_sweep(
        preset="cpu-converged", data=str(data), pairs=["proxy:ccs", "contrastive:typiclust", "pixels-pca:k-means"]
    )
    plan = plan_sweep(spec, dataset, workspace=tmp_path)
    # pilot: 7 embedding rules x 4 embeddings + ccs on proxy + random-balanced + random; final: 22 x (4 pairs + 2) + 5
    assert plan.per_grid() == {"final": 137, "pilot": 31}
    assert sorted((s.method, s.embedding) for s in plan.skipped) == [
        ("ccs", e) for e in ("autoencoder", "contrastive", "pixels-pca")
    ]
    runs = [entry.run for entry in plan.entries]
    assert all(r.config.steps == 1500 and r.config.batch == 128 for r in runs)
    pilot = [r for r in runs if r.grid == "pilot"]
    final = [r for r in runs if r.grid == "final"]
    assert {r.seed for r in pilot} == {PILOT_SEED} and PILOT_SEED not in {r.seed for r in final}
    assert {(r.size, r.split) for r in pilot} == {(1000, 1.0)}
    assert {r.embedding for r in pilot if r.method == "ccs"} == {"proxy"}
    assert all(r.balanced for r in pilot if r.method not in ("random", "random-balanced"))
    # the final grid: the same seeds for every selection, 3 at K = 4,320 and 1,000, 5 at K = 200
    seeds: dict[tuple, set[int]] = {}
    for r in final:
        if r.method is not None:
            seeds.setdefault((r.method, r.embedding, r.size, r.split), set()).add(r.seed)
    selections = {(m, e) for m, e, _, _ in seeds}
    assert selections == {
        ("random", None),
        ("random-balanced", None),
        ("topk-activation", "autoencoder"),
        ("ccs", "proxy"),
        ("typiclust", "contrastive"),
        ("k-means", "pixels-pca"),
    }
    for (_, _, size, split), found in seeds.items():
        assert split in (0.5, 1.0) and found == ({0, 1, 2, 3, 4} if size == 200 else {0, 1, 2})
    assert sorted(r.seed for r in final if r.method is None) == [0, 1, 2, 3, 4]  # full data, once per seed
    final_only = build_sweep(preset="cpu-converged", data=str(data), parts=["final"])
    assert len(final_only.grids) == 4  # the baselines and top-k, per seed group
    assert plan_sweep(final_only, dataset, workspace=tmp_path).per_grid() == {"final": 71}  # 22 x 3 + 5

    from toolkit import cli

    args = ["sweep", "--data", str(data), "--workspace", str(tmp_path), "--out", str(tmp_path / "out")]
    capsys.readouterr()
    assert cli.main([*args, "--preset", "cpu-converged", "--part", "pilot", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "per grid: pilot 31" in out and out.count("skipped   ccs on") == 3
    code, err = run_cli([*args, "--preset", "cpu-converged", "--pairs", "proxy"])
    assert code == 2 and "EMBEDDING:SELECTOR" in err
    code, err = run_cli([*args, "--preset", "cpu", "--pairs", "proxy:ccs"])
    assert code == 2 and "cpu-converged" in err
    code, err = run_cli([*args, "--steps", "10", "--pairs", "proxy:ccs"])
    assert code == 2 and "give --preset too" in err
    code, err = run_cli([*args, "--steps", "10", "--embeddings", "proxy,proxy"])
    assert code == 2 and "repeat" in err
    assert not (tmp_path / "runs").exists()  # nothing was run or queued


def test_sweeps_without_an_embedding_axis_name_their_selections_as_before(
    two_embeddings: tuple[Path, ImageDataset],
) -> None:
    """Presets and sweeps without --embeddings keep their selection names, so earlier runs are reused."""
    import json

    from toolkit.artifacts import fingerprint_bytes
    from toolkit.embedding import load_embedding

    for name in ("paper", "cpu"):
        spec = build_sweep(preset=name, data="digits")
        assert [g.name for g in spec.grids] == ["fig5", "fig6"]
        assert all(g.embeddings == (None,) and g.sizes == (4320,) and g.seeds == (0, 1, 2) for g in spec.grids)
    workspace, digits = two_embeddings
    spec = tiny_spec(selectors=("random", "topk-activation"), splits=(1.0,))
    plan = plan_sweep(replace(spec, embedding="autoencoder"), digits, workspace=workspace)
    fingerprint = load_embedding(digits, workspace=workspace, name="autoencoder").fingerprint
    for run in (entry.run for entry in plan.entries):
        recipe = {"method": run.method, "params": {}, "size": 100, "balanced": False, "seed": 0}
        recipe["embedding"] = fingerprint if run.method == "topk-activation" else None
        digest = fingerprint_bytes(json.dumps(recipe, sort_keys=True))[:8]
        assert run.selection_name == f"{run.method}-k100-seed0-{digest}"  # the formula before the embedding axis


def test_a_sweep_whose_selections_exist_plans_from_the_manifests_alone(
    embedding_sweep: SweepResult, two_embeddings: tuple[Path, ImageDataset], tmp_path: Path
) -> None:
    """Planning reads no embedding vectors: a copy of the workspace without them (all that a GPU
    machine is sent) still matches every run; making a missing selection still needs the vectors."""
    import shutil

    workspace, digits = two_embeddings
    copy = tmp_path / "ws"
    shutil.copytree(workspace, copy)
    removed = list(copy.rglob("embeddings.npy"))
    assert len(removed) >= 2  # pixels-pca and the autoencoder (other tests of this module may add more)
    for path in removed:
        path.unlink()
    plan = plan_sweep(embedding_spec(), digits, workspace=copy)
    assert plan.counts()["finished"] == len(embedding_sweep.table) == 8
    more = replace(embedding_spec(), grids=(replace(embedding_spec().grids[0], seeds=(0, 1, 5)),))
    with pytest.raises(SampleSiftError, match="cannot be read"):
        plan_sweep(more, digits, workspace=copy).prepare()


def test_a_report_writes_the_finished_runs_and_says_what_is_missing(
    embedding_sweep: SweepResult, two_embeddings: tuple[Path, ImageDataset], tmp_path: Path
) -> None:
    from toolkit.experiments import report_sweep, write_outputs

    workspace, _ = two_embeddings
    done = report_sweep(embedding_spec(), workspace=workspace)
    assert set(done.table["run_id"]) == set(embedding_sweep.table["run_id"]) and not done.outcomes
    write_outputs(done, tmp_path / "done", png=False)
    assert json.loads((tmp_path / "done" / "progress.json").read_text())["partial"] is False
    # A third seed planned, nothing run: the report holds the 8 finished runs and names the 4 missing.
    spec = embedding_spec()
    spec = replace(spec, grids=(replace(spec.grids[0], seeds=(0, 1, 2)),))
    partial = report_sweep(spec, workspace=workspace)
    assert len(partial.table) == 8 and len(partial.plan.entries) == 12
    write_outputs(partial, tmp_path / "partial", png=False)
    progress = json.loads((tmp_path / "partial" / "progress.json").read_text())
    assert progress["partial"] is True and (progress["planned"], progress["finished"]) == (12, 8)
    assert len(progress["missing"]) == 4 and all("seed 2" in line for line in progress["missing"])
    assert len(pd.read_csv(tmp_path / "partial" / "results.csv")) == 8
    assert not [r for r in RunStore(workspace) if r.status().get("state") == "queued"]  # nothing was queued
