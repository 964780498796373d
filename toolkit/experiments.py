"""Experiments: sweeps of selectors x budgets x splits x seeds, their run plans and executors.

A :class:`SweepSpec` names one or more :class:`Grid` s; each grid is a cross product of
selectors, budgets (subset sizes K), splits, seeds and schedules. A schedule is either a
number of optimizer steps (the **equal-steps** protocol of the paper's Fig. 5) or a
wall-clock budget in seconds (the **equal-time** protocol of Fig. 6). Both protocols measure
time the same way, with the core trainer's clock: training steps only, warm-up and
evaluation excluded. Accuracy is always that of the averaged (EMA) weights on the full test
set, at the end of the run.

A sweep runs in three stages:

1. :func:`plan_sweep` expands the grids into planned runs and matches each against the run
   store by its *configuration key* (data set fingerprint, selection recipe, complete
   training config). Finished runs are reused, queued or interrupted ones are resumed from
   their checkpoint (:func:`toolkit.train.resume`), so a killed sweep picks up where it
   stopped without redoing finished runs.
2. :meth:`RunPlan.prepare` makes the selections it needs (saved once, named by a hash of
   their recipe) and records each new run as ``queued`` (:func:`toolkit.train.prepare`).
3. An :class:`Executor` starts the queued runs: :class:`LocalExecutor` in this process or in
   N worker processes, :class:`RayExecutor` as Ray tasks (the optional ``[ray]`` extra).
   Every executor calls the same :func:`execute_task`, so results do not depend on the
   executor (the tests check Ray against local).

Split 0 trains on the full data only, so it does not depend on the selector: it is planned
once per seed and schedule (selector label ``full-data``) and shared by every selector's
curve. Likewise a rule that uses no embedding (random, random-balanced) is planned once per
cell whatever the grid's embeddings; every other run records the embedding its selection is
made on, and its selection's name carries the embedding's name and (in its hash) fingerprint,
so one selector on two embeddings never shares a run, and a finished run is reused only for
the same embedding.

A sweep's results table and statistics come from :mod:`toolkit.results`; :func:`write_outputs`
writes them with the figures of :mod:`toolkit.viz.results`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

import pandas as pd

from toolkit.artifacts import atomic_write_json, atomic_write_text, fingerprint_bytes, pid_alive, to_jsonable
from toolkit.cluster import import_ray, ray_session
from toolkit.data import ImageDataset, load_dataset
from toolkit.embedding import load_embedding_manifest
from toolkit.errors import SampleSiftError, require, terminate_as_interrupt
from toolkit.results import (
    EQUAL_STEPS,
    EQUAL_TIME,
    config_key,
    gain_table,
    paired_differences,
    results_table,
    run_config_key,
    selector_label,
    summarize,
    time_to_accuracy,
    write_table,
)
from toolkit.runs import Run, RunStore
from toolkit.selection import Selection, default_name, load_selection, make_selection
from toolkit.selectors import get_selector
from toolkit.train import TrainConfig, prepare, resume
from toolkit.workspace import Workspace, as_workspace

#: The paper's subset: 4,320 samples, 8.64% of CIFAR-10's 50,000 training images.
PAPER_SUBSET = 4320
#: The baseline a sweep's paired differences are read against.
BASELINE = "random-balanced"


# --------------------------------------------------------------------------- sweep specification


@dataclass
class Grid:
    """One cross product of runs: selectors x embeddings x sizes x splits x seeds x schedules.

    Attributes:
        name: a label for this part of a sweep (``fig5``, ``fig6``, ...); several grids may
            share one (a preset's part made of more than one cross product).
        selectors: selector registry names (``samplesift methods``).
        embeddings: embedding names the selectors run on; ``None`` is the sweep's
            :attr:`SweepSpec.embedding` (itself the newest by default). Selectors that use
            no embedding (``random``, ``random-balanced``) are planned once per cell, not once
            per embedding; a selector that reads per-sample scores (``ccs``) is skipped, with
            the reason recorded in the plan, on an embedding that does not record them.
        sizes: subset budgets K (the paper: 4,320).
        splits: shares of the run spent on the subset, each in [0, 1]; 0 is the full-data
            baseline, planned once per seed and schedule whatever the selectors.
        seeds: each seed seeds the selection (for random rules) and the training run.
        steps: equal-steps schedules (total optimizer steps).
        time_budgets: equal-time schedules (training seconds, warm-up and evaluation excluded).
        balanced: run every selector with per-class quotas.
        params: selector parameters by selector name.
        train: training settings for this grid only (e.g. ``{"evals": 6}``), over the sweep's.
    """

    name: str = "grid"
    selectors: tuple[str, ...] = ("random", "random-balanced", "topk-activation")
    embeddings: tuple[str | None, ...] = (None,)
    sizes: tuple[int, ...] = (PAPER_SUBSET,)
    splits: tuple[float, ...] = (0.0, 0.5, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: tuple[int, ...] = ()
    time_budgets: tuple[float, ...] = ()
    balanced: bool = False
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Check the grid up front, with messages that say what to change."""
        require(bool(self.selectors) or set(self.splits) <= {0.0}, f"grid {self.name}: give at least one selector")
        for name in self.selectors:
            get_selector(name, **self.params.get(name, {}))  # unknown names and bad params fail here
        require(bool(self.embeddings), f"grid {self.name}: give at least one embedding (None: the sweep's default)")
        require(
            all(e is None or (isinstance(e, str) and e.strip()) for e in self.embeddings),
            f"grid {self.name}: embeddings are embedding names (or None for the default), got {self.embeddings}",
        )
        require(
            len(set(self.embeddings)) == len(self.embeddings),
            f"grid {self.name}: embeddings repeat a name: {self.embeddings}",
        )
        require(bool(self.sizes), f"grid {self.name}: give at least one subset size")
        require(all(int(k) >= 1 for k in self.sizes), f"grid {self.name}: sizes must be positive, got {self.sizes}")
        require(bool(self.splits), f"grid {self.name}: give at least one split")
        require(
            all(0.0 <= float(s) <= 1.0 for s in self.splits),
            f"grid {self.name}: splits must be in [0, 1] (the share of the run on the subset), got {self.splits}",
        )
        require(bool(self.seeds), f"grid {self.name}: give at least one seed")
        require(
            bool(self.steps) or bool(self.time_budgets),
            f"grid {self.name}: give steps (equal-steps protocol) or time budgets (equal-time protocol)",
        )
        require(all(int(n) > 0 for n in self.steps), f"grid {self.name}: steps must be positive, got {self.steps}")
        require(
            all(float(t) > 0 and math.isfinite(float(t)) for t in self.time_budgets),
            f"grid {self.name}: time budgets must be positive seconds, got {self.time_budgets}",
        )
        unknown = set(self.train) - {f.name for f in fields(TrainConfig)}
        require(not unknown, f"grid {self.name}: unknown training settings {sorted(unknown)}")

    def schedules(self) -> list[tuple[int | None, float | None]]:
        """``(steps, None)`` for each step count, then ``(None, seconds)`` for each time budget."""
        return [(int(n), None) for n in self.steps] + [(None, float(t)) for t in self.time_budgets]


@dataclass
class SweepSpec:
    """A whole sweep: the data, the grids, and the training settings they share.

    Attributes:
        name: a label (part of every run's name).
        data: the data spec (``load_dataset``): a folder, an ``.npz``, ``cifar10`` or ``digits``.
        max_per_class: optional per-class cap of the data set.
        data_options: the other ``load_dataset`` keywords the data needs (``bad_files``,
            ``max_pixels``, ``test_fraction``, ...).
        grids: the cross products to run (their runs are pooled and de-duplicated).
        train: the base training config; each run sets its own split, steps or time budget
            and seed on a copy of it.
        embedding: the embedding the embedding-based selectors use (``None``: the newest).
    """

    name: str = "sweep"
    data: str = "digits"
    max_per_class: int | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    grids: tuple[Grid, ...] = (Grid(steps=(200,)),)
    train: TrainConfig = field(default_factory=TrainConfig)
    embedding: str | None = None

    def validate(self) -> None:
        require(bool(self.grids), "a sweep needs at least one grid")
        for grid in self.grids:
            grid.validate()
        probe = replace(self.train, steps=1, time_budget=None)
        probe.validate()

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SweepSpec:
        grids = tuple(
            Grid(**{k: tuple(v) if isinstance(v, list) else v for k, v in grid.items()}) for grid in values["grids"]
        )
        train = TrainConfig.from_dict(values.get("train", {}))
        rest = {k: v for k, v in values.items() if k not in ("grids", "train")}
        return cls(grids=grids, train=train, **rest)

    def with_overrides(self, grid: dict[str, Any] | None = None, train: dict[str, Any] | None = None) -> SweepSpec:
        """A copy with some grid fields replaced in every grid and some training settings changed.

        Used by the CLI: ``--preset cpu --seeds 0,1,2,3,4`` keeps the preset and adds seeds.
        """
        grid_values = {k: v for k, v in (grid or {}).items() if v is not None}
        train_values = {k: v for k, v in (train or {}).items() if v is not None}
        unknown = set(train_values) - {f.name for f in fields(TrainConfig)}
        require(not unknown, f"unknown training settings {sorted(unknown)}")
        grids = tuple(replace(g, **grid_values) for g in self.grids)
        # A value set explicitly wins over a grid's own setting.
        grids = tuple(replace(g, train={k: v for k, v in g.train.items() if k not in train_values}) for g in grids)
        return replace(self, grids=grids, train=replace(self.train, **train_values))


#: The CPU preset's schedule: 100 steps of 128 (12,800 images, a quarter epoch of CIFAR-10;
#: 3 epochs of the 4,320-sample subset at 100/0) and an 80 s equal-time budget: 57% (the
#: paper's 7 of ~12.3 minutes) of the 141 s that a 100-step full-data run took here with two
#: single-threaded workers on a shared, heavily loaded 2-core machine.
CPU_STEPS, CPU_BATCH, CPU_TIME_BUDGET = 100, 128, 80.0
#: Splits of Fig. 5 (fast/full: 0/100 ... 100/0); the paper's differences show at the high end.
PAPER_SPLITS = (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0)
CPU_SPLITS = (0.0, 0.5, 0.9, 1.0)
#: The paper's fixed budget: 7 minutes against a full run of about 12.3 (736 s).
PAPER_TIME_BUDGET = 420.0
#: The named sweeps of :func:`preset_sweep`.
PRESETS = ("paper", "cpu", "cpu-converged")


#: The ``cpu-converged`` protocol: every run is 1,500 steps of 128 (192,000 images, ~3.8 epochs of
#: CIFAR-10), so at 100/0 the subset is seen ~44 times at K = 4,320, ~190 at K = 1,000 and ~960 at
#: K = 200: long enough for it to be learned, the regime where the choice of samples can show.
CONVERGED_STEPS, CONVERGED_BATCH = 1500, 128
#: Evaluations during each final run (every 250 steps), for the time-to-accuracy view.
CONVERGED_EVALS = 5
#: Budgets K of ``cpu-converged``: the paper's 8.64 %, 2 % and 0.4 % (20 per class) of CIFAR-10.
CONVERGED_SIZES = (PAPER_SUBSET, 1000, 200)
#: Seeds of the final grid: 3 at K = 4,320 and 1,000; 5 at K = 200, where one seed swings 2-3 points.
CONVERGED_SEEDS, CONVERGED_SEEDS_SMALL = (0, 1, 2), (0, 1, 2, 3, 4)
#: The pilot's seed: not one of the final seeds, so the pairs it picks are measured on fresh seeds.
PILOT_SEED, PILOT_SIZE = 100, 1000
#: The pilot's embeddings and selectors (each run balanced; plain random is added unbalanced).
PILOT_EMBEDDINGS = ("autoencoder", "contrastive", "pixels-pca", "proxy")
PILOT_SELECTORS = (
    "random-balanced",
    "topk-activation",
    "k-means",
    "facility-location",
    "prototype-easy",
    "typiclust",
    "probcover",
    "ccs",
    "moderate",
)
#: Pairs the final grid always runs: the paper's rule on the paper's embedding (unbalanced, as in the paper).
CONVERGED_PAIRS = ("autoencoder:topk-activation",)
#: Baselines the final grid always runs (they use no embedding), with the full-data run.
CONVERGED_BASELINES = ("random", "random-balanced")


def parse_pairs(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """``["proxy:ccs", ...]`` as ``[("proxy", "ccs"), ...]``, checked (selector names must be known)."""
    parsed = []
    for text in pairs:
        embedding, sep, selector = str(text).strip().partition(":")
        require(
            bool(sep) and bool(embedding.strip()) and bool(selector.strip()),
            f"--pairs takes EMBEDDING:SELECTOR items (e.g. proxy:ccs,contrastive:typiclust), got {text!r}",
        )
        get_selector(selector.strip())  # an unknown selector fails here, with the list of known ones
        pair = (embedding.strip(), selector.strip())
        if pair not in parsed:
            parsed.append(pair)
    return parsed


def _converged_sweep(data: str, selectors: Sequence[str] | None, pairs: Sequence[str] | None) -> SweepSpec:
    # Final runs evaluate every 250 steps: the full-data run's half-way accuracy (step 750) is the
    # target of the time-to-accuracy view, and every run's curve says when it got there.
    common = {"splits": (0.0, 0.5, 1.0), "steps": (CONVERGED_STEPS,), "train": {"evals": CONVERGED_EVALS}}
    pilot_run = {"sizes": (PILOT_SIZE,), "splits": (1.0,), "seeds": (PILOT_SEED,), "steps": (CONVERGED_STEPS,)}
    pilot_selectors = tuple(dict.fromkeys((*PILOT_SELECTORS, *(selectors or ()))))
    grids = [
        Grid(name="pilot", selectors=pilot_selectors, embeddings=PILOT_EMBEDDINGS, balanced=True, **pilot_run),
        Grid(name="pilot", selectors=("random",), **pilot_run),
    ]
    chosen = [pair for pair in parse_pairs(pairs or ()) if pair not in parse_pairs(CONVERGED_PAIRS)]
    by_embedding: dict[str, list[str]] = {}
    for embedding, selector in chosen:
        by_embedding.setdefault(embedding, []).append(selector)
    for sizes, seeds in (((PAPER_SUBSET, 1000), CONVERGED_SEEDS), ((200,), CONVERGED_SEEDS_SMALL)):
        grids.append(Grid(name="final", selectors=CONVERGED_BASELINES, sizes=sizes, seeds=seeds, **common))
        for embedding, selector in parse_pairs(CONVERGED_PAIRS):  # the paper's rule, as the paper ran it: unbalanced
            grids.append(
                Grid(name="final", selectors=(selector,), embeddings=(embedding,), sizes=sizes, seeds=seeds, **common)
            )
        for embedding, chosen_selectors in by_embedding.items():
            grids.append(
                Grid(
                    name="final",
                    selectors=tuple(chosen_selectors),
                    embeddings=(embedding,),
                    sizes=sizes,
                    seeds=seeds,
                    balanced=True,
                    **common,
                )
            )
    return SweepSpec(
        name="cpu-converged",
        data=data,
        grids=tuple(grids),
        train=TrainConfig(batch=CONVERGED_BATCH, evals=0, log_every=10),
    )


def preset_sweep(
    name: str,
    data: str = "cifar10",
    *,
    selectors: Sequence[str] | None = None,
    pairs: Sequence[str] | None = None,
) -> SweepSpec:
    """A named sweep: ``paper`` (for a GPU), ``cpu`` (scaled for a 2-core CPU) or ``cpu-converged``.

    ``paper`` and ``cpu`` both use the paper's 4,320-sample subset and hold two grids:

    * ``fig5``: equal steps, splits 0/100 ... 100/0, random, balanced random, top-k activation
      (plus ``selectors``), 3 seeds.
    * ``fig6``: equal wall-clock, full data against subset-first at 50/50 (top-k activation and
      random), 3 seeds, evaluated along the way for time-to-target; its runs also give Fig. 7.

    ``paper``: 10,000 steps of 1,024, splits 0, 25, 50, 75, 90, 95 and 100%, and the paper's
    420 s budget (its 7 minutes; on other hardware use about 57% of your full run's time).
    ``cpu``: 100 steps of 128 at splits 0, 50, 90 and 100% and an 80 s budget (see
    :data:`CPU_STEPS`). Measured here with two single-threaded workers at a load average of
    2-4: 213 steps of 128 in 80 s per worker, plus about 95 s per run for loading and three
    passes over the 10,000 test images. A 100-step run thus costs about 110 s of one worker,
    so Fig. 5 takes about half an hour with three selectors (30 runs) and about an hour with
    six (57 runs) on two workers; the whole preset adds 9 runs of Fig. 6 (about 15 minutes).
    On the shared machine the committed results came from (load average 8-13 most of the
    time), runs took 5-15 minutes each.

    ``cpu-converged`` (any ``data``; written for CIFAR-10 on a 2-core CPU) asks whether any
    embedding and selector beats random once the subset has been learned. Equal steps: every
    run is 1,500 steps of 128 (:data:`CONVERGED_STEPS`). Two parts:

    * ``pilot``: 1 seed (100, not a final seed), K = 1,000, 100/0 only; embeddings
      autoencoder, contrastive, pixels-pca and proxy x selectors random-balanced,
      topk-activation, k-means, facility-location, prototype-easy, typiclust, probcover, ccs
      and moderate, all balanced (plus ``selectors``), and plain random. ``ccs`` reads the
      proxy's per-sample scores, so it runs on ``proxy`` only (the other three combinations
      are skipped, with the reason, in the plan). random-balanced and random use no
      embedding and run once: 28 + 1 + 2 = **31 runs**.
    * ``final``: splits 0/100 (full data), 50/50 and 100/0 at K = 4,320 and 1,000 with seeds
      0, 1, 2 and at K = 200 with seeds 0-4; the same seeds for every selection, so
      differences pair by seed. It runs random, random-balanced, the full-data run (one per
      seed: 5), the paper's ``autoencoder:topk-activation`` (unbalanced, as the paper ran it)
      and the ``pairs`` chosen from the pilot (``EMBEDDING:SELECTOR``, balanced), each
      evaluated every 250 steps for the time-to-accuracy view: 22 x (P + 2) + 5 runs for P pairs
      (topk-activation counted), i.e. **71 runs** with no pair added and **137** with three.

    The four embeddings must exist under those names (``samplesift embed --encoder NAME``
    names each after its encoder). Run times measured on a 2-core CPU and an H200 are in
    docs/results.md ("Protocol: cpu-converged").
    """
    if name == "cpu-converged":
        return _converged_sweep(data, selectors, pairs)
    require(not pairs, f"pairs choose the final grid of preset cpu-converged; preset {name} has none")
    fig5_selectors = ("random", "random-balanced", "topk-activation", *tuple(selectors or ()))
    if name == "paper":
        steps, batch, budget, evals, splits = 10_000, 1024, PAPER_TIME_BUDGET, 10, PAPER_SPLITS
    elif name == "cpu":
        steps, batch, budget, evals, splits = CPU_STEPS, CPU_BATCH, CPU_TIME_BUDGET, 1, CPU_SPLITS
    else:
        raise SampleSiftError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return SweepSpec(
        name=name,
        data=data,
        grids=(
            Grid(name="fig5", selectors=fig5_selectors, splits=splits, seeds=(0, 1, 2), steps=(steps,)),
            Grid(
                name="fig6",
                selectors=("topk-activation", "random"),
                splits=(0.0, 0.5),
                seeds=(0, 1, 2),
                time_budgets=(budget,),
                train={"evals": evals},
            ),
        ),
        train=TrainConfig(batch=batch, evals=0, log_every=10),
    )


def build_sweep(
    *,
    preset: str | None = None,
    parts: Sequence[str] | None = None,
    add_selectors: Sequence[str] | None = None,
    name: str | None = None,
    data: str = "digits",
    max_per_class: int | None = None,
    data_options: dict[str, Any] | None = None,
    embedding: str | None = None,
    pairs: Sequence[str] | None = None,
    grid: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
) -> SweepSpec:
    """A sweep from a preset (some of its ``parts``) and/or explicit values; ``None`` values are unset.

    With a preset, ``add_selectors`` join its Fig. 5 grid (``cpu-converged``: its pilot
    matrix), ``pairs`` (``EMBEDDING:SELECTOR``, ``cpu-converged`` only) join its final grid,
    the ``grid`` values replace the same fields of each of its grids and the ``train`` values
    its training settings; without one, they make a single grid.
    """
    grid_values = {k: v for k, v in (grid or {}).items() if v is not None}
    if preset is not None:
        spec = preset_sweep(preset, data, selectors=add_selectors, pairs=pairs)
        if parts:
            known = list(dict.fromkeys(g.name for g in spec.grids))
            unknown = sorted(set(parts) - set(known))
            require(not unknown, f"preset {preset} has no part(s) {unknown}; its parts are {', '.join(known)}")
            spec = replace(spec, grids=tuple(g for g in spec.grids if g.name in parts))
        spec = spec.with_overrides(grid_values, train)
    else:
        require(
            not parts and not add_selectors and not pairs,
            "--part, --add-selectors and --pairs change a preset; give --preset too",
        )
        require(
            bool(grid_values.get("steps")) or bool(grid_values.get("time_budgets")),
            "give --steps (equal-steps protocol) and/or --time-budgets (equal-time protocol), or use --preset",
        )
        spec = SweepSpec(data=data, grids=(Grid(name="grid", **grid_values),)).with_overrides(None, train)
    spec = replace(spec, name=name or spec.name, max_per_class=max_per_class, data_options=dict(data_options or {}))
    if embedding is not None:
        spec = replace(spec, embedding=embedding)
    spec.validate()
    return spec


def sweep_executor(
    kind: str,
    *,
    workers: int = 1,
    threads: int | None = None,
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
) -> Executor:
    """The executor named ``local`` or ``ray`` with its settings."""
    if kind == "local":
        return LocalExecutor(workers=workers, threads=threads)
    if kind == "ray":
        import_ray()  # fail now, with the install hint, rather than after planning
        return RayExecutor(address=address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run)
    raise SampleSiftError(f"unknown executor {kind!r}; use local or ray")


# --------------------------------------------------------------------------- the run plan


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep, before or after it exists in the run store."""

    grid: str
    method: str | None
    balanced: bool
    params: tuple[tuple[str, Any], ...]
    size: int | None
    split: float
    seed: int
    config: TrainConfig
    selection_name: str | None
    key: str
    embedding: str | None = None
    embedding_fingerprint: str | None = None

    @property
    def selector(self) -> str:
        return selector_label(self.method, self.balanced, self.split)

    def describe(self) -> str:
        schedule = f"{self.config.steps} steps" if self.config.steps is not None else f"{self.config.time_budget:g} s"
        size = "" if self.size is None else f" K={self.size}"
        on = "" if self.embedding is None else f" on {self.embedding}"
        return f"{self.selector}{on}{size} split {self.split:g} seed {self.seed} ({schedule} of {self.config.batch})"


@dataclass
class SkippedRuns:
    """Runs a sweep leaves out, and why (a selector that cannot run on an embedding)."""

    grid: str
    method: str
    embedding: str
    reason: str
    runs: int = 0

    def describe(self) -> str:
        return f"{self.method} on {self.embedding} (grid {self.grid}, {self.runs} run(s)): {self.reason}"


PlanState = Literal["new", "finished", "resume", "running"]


@dataclass
class PlanEntry:
    """A planned run and what the run store already holds for it."""

    run: PlannedRun
    state: PlanState
    run_id: str | None = None


@dataclass
class RunPlan:
    """The runs of a sweep in execution order (seed-major, so early results cover every cell)."""

    spec: SweepSpec
    dataset: ImageDataset
    workspace: Workspace
    entries: list[PlanEntry]
    skipped: list[SkippedRuns] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many planned runs are new, finished, to resume, or running elsewhere."""
        out = {"new": 0, "finished": 0, "resume": 0, "running": 0}
        for entry in self.entries:
            out[entry.state] += 1
        return out

    def describe(self) -> str:
        c = self.counts()
        return (
            f"{len(self.entries)} runs: {c['finished']} finished (reused), {c['resume']} to resume, "
            f"{c['new']} new, {c['running']} running in another process"
            + (
                f"; {sum(s.runs for s in self.skipped)} skipped ({len(self.skipped)} selector-embedding combination(s) "
                "that cannot run)"
                if self.skipped
                else ""
            )
        )

    def per_grid(self) -> dict[str, int]:
        """Planned runs per grid name (a run shared by several grids counts for the first)."""
        out: dict[str, int] = {}
        for entry in self.entries:
            out[entry.run.grid] = out.get(entry.run.grid, 0) + 1
        return out

    def prepare(self) -> list[RunTask]:
        """Make missing selections, queue new runs, claim those to resume, and return the runs to execute."""
        selections: dict[str, Selection] = {}
        tasks = []
        root = str(self.workspace.root)
        for entry in self.entries:
            if entry.state == "new":
                planned = entry.run
                selection = None
                if planned.selection_name is not None:
                    if planned.selection_name not in selections:
                        selections[planned.selection_name] = self._selection(planned)
                    selection = selections[planned.selection_name]
                run = prepare(
                    self.dataset,
                    planned.config,
                    selection=selection,
                    workspace=self.workspace,
                    name=_run_name(self.spec.name, planned),
                )
                entry.run_id, entry.state = run.id, "resume"
            if entry.state == "resume":
                assert entry.run_id is not None
                # Claim the run: queued under this process's id, other sweeps now leave it alone.
                Run(self.workspace.run_dir(entry.run_id)).set_status("queued")
                tasks.append(RunTask(root, entry.run_id, entry.run.describe()))
        return tasks

    def _selection(self, planned: PlannedRun) -> Selection:
        assert planned.selection_name is not None and planned.method is not None and planned.size is not None
        path = self.workspace.selection_path(self.dataset.key, planned.selection_name)
        if path.exists():
            return load_selection(path, self.dataset, workspace=self.workspace)
        selection = make_selection(
            self.dataset,
            planned.method,
            size=planned.size,
            balanced=planned.balanced,
            seed=planned.seed,
            name=planned.selection_name,
            params=dict(planned.params),
            workspace=self.workspace,
            embedding=planned.embedding if planned.embedding is not None else self.spec.embedding,
        )
        made_on = (selection.manifest.get("embedding") or {}).get("fingerprint")
        require(
            planned.embedding_fingerprint is None or made_on == planned.embedding_fingerprint,
            f"embedding {planned.embedding!r} changed while the sweep was being planned; run the sweep again",
        )
        return selection


def _run_name(sweep: str, planned: PlannedRun) -> str:
    schedule = f"n{planned.config.steps}" if planned.config.steps is not None else f"t{planned.config.time_budget:g}"
    size = "" if planned.size is None else f"-k{planned.size}"
    on = "" if planned.embedding is None else f"-{planned.embedding}"
    return f"{sweep}-{planned.selector}{on}{size}-s{planned.split:g}-{schedule}-seed{planned.seed}"


@dataclass(frozen=True)
class EmbeddingRef:
    """What a sweep needs to know of an embedding: its name, encoder, fingerprints and score columns."""

    name: str
    encoder: str
    fingerprint: str
    scores: tuple[str, ...]
    scores_fingerprint: str | None


def embedding_ref(dataset: ImageDataset, ws: Workspace, name: str | None) -> EmbeddingRef:
    """The embedding ``name`` of ``dataset`` (default: the newest) as an :class:`EmbeddingRef`.

    Reads the manifest alone: a plan needs the fingerprints, and a sweep whose selections are
    already made never reads the vectors (they are read and verified when a selection is made).
    """
    _, m = load_embedding_manifest(dataset, workspace=ws, name=name)
    return EmbeddingRef(
        str(m["name"]),
        str(m["encoder"]),
        str(m["embedding_fingerprint"]),
        tuple(m.get("scores") or ()),
        m.get("scores_fingerprint"),
    )


def plan_sweep(
    spec: SweepSpec,
    dataset: ImageDataset | None = None,
    *,
    workspace: Workspace | str | Path | None = None,
) -> RunPlan:
    """Expand a sweep into runs and match them against the run store (nothing is run or written).

    Runs are ordered seed-major (all cells of the first seed, then the next seed), so a
    sweep stopped early still covers every cell. A planned run whose configuration key
    matches a finished run is ``finished`` (reused); one matching a queued, interrupted or
    failed run is ``resume`` (continued from its checkpoint); one matching a run still
    alive in another process is ``running`` (left alone); anything else is ``new``.

    Embeddings are read once each, and only when a selector needs one. A selector that reads
    per-sample scores the embedding does not record (``ccs`` on anything but ``proxy``) is
    left out and listed in :attr:`RunPlan.skipped` with the reason, not an error.
    """
    spec.validate()
    ws = as_workspace(workspace)
    if dataset is None:
        dataset = load_dataset(spec.data, workspace=ws, max_per_class=spec.max_per_class, **spec.data_options)
    for grid in spec.grids:
        too_big = [k for k in grid.sizes if int(k) > dataset.num_train and any(float(s) > 0 for s in grid.splits)]
        require(
            not too_big,
            f"grid {grid.name}: subset sizes {too_big} exceed the {dataset.num_train} training samples of "
            f"{dataset.key}; choose --sizes of at most {dataset.num_train}",
        )
    refs: dict[str | None, EmbeddingRef] = {}

    def ref_of(name: str | None) -> EmbeddingRef:
        if name not in refs:
            refs[name] = embedding_ref(dataset, ws, name if name is not None else spec.embedding)
        return refs[name]

    planned: dict[str, tuple[int, PlannedRun]] = {}
    skipped: dict[tuple[str, str, str], SkippedRuns] = {}
    for grid in spec.grids:
        base = replace(spec.train, **grid.train)
        # A grid without an embedding axis names its selections as before the axis existed,
        # so the runs of earlier sweeps are still found and reused.
        named = grid.embeddings != (None,)
        cells = itertools.product(
            grid.seeds, grid.schedules(), grid.sizes, grid.selectors or (None,), grid.embeddings, grid.splits
        )
        for seed, (steps, budget), size, method, embedding, split in cells:
            seed, split = int(seed), float(split)
            config = replace(base, split=split, steps=steps, time_budget=budget, seed=seed)
            run_method: str | None = None
            run_size: int | None = None
            params: dict[str, Any] = {}
            selection_name = None
            ref: EmbeddingRef | None = None
            if split > 0.0 and method is not None:  # at split 0 (full data) the selector plays no part
                run_method, run_size, params = method, int(size), grid.params.get(method, {})
                selector = get_selector(method, **params)
                if selector.needs_embeddings or selector.needs_sample_scores:
                    ref = ref_of(embedding)
                if selector.needs_sample_scores:
                    assert ref is not None
                    missing = [c for c in selector.score_columns() if c not in ref.scores]
                    if missing:
                        where = (grid.name, method, ref.name)
                        if where not in skipped:
                            reason = (
                                f"{method} reads the per-sample score(s) {', '.join(missing)}, which embedding "
                                f"{ref.name!r} ({ref.encoder}) does not record"
                                + (f" (it has: {', '.join(ref.scores)})" if ref.scores else "")
                                + "; the proxy encoder records them"
                            )
                            skipped[where] = SkippedRuns(grid.name, method, ref.name, reason)
                        skipped[where].runs += 1
                        continue
                recipe = {
                    "method": method,
                    "params": params,
                    "size": run_size,
                    "balanced": grid.balanced,
                    "seed": seed,
                    "embedding": None if ref is None else ref.fingerprint,
                }
                if selector.needs_sample_scores:
                    assert ref is not None
                    recipe["scores"] = ref.scores_fingerprint
                digest = fingerprint_bytes(json.dumps(to_jsonable(recipe), sort_keys=True))[:8]
                on = f"-{ref.name}" if named and ref is not None else ""
                selection_name = f"{default_name(method, run_size, seed, grid.balanced)}{on}-{digest}"
            key = config_key(dataset.fingerprint, selection_name, config.to_dict())
            if key not in planned:
                run = PlannedRun(
                    grid=grid.name,
                    method=run_method,
                    balanced=grid.balanced and run_method is not None,
                    params=tuple(sorted(params.items())),
                    size=run_size,
                    split=split,
                    seed=seed,
                    config=config,
                    selection_name=selection_name,
                    key=key,
                    embedding=None if ref is None else ref.name,
                    embedding_fingerprint=None if ref is None else ref.fingerprint,
                )
                planned[key] = (seed, run)
    existing = _existing_runs(ws, dataset.key)
    ordered = sorted(planned.values(), key=lambda pair: pair[0])  # stable: seed-major, grid order within
    entries = []
    for _, run in ordered:
        found = existing.get(run.key, [])
        entries.append(_match(run, found))
    return RunPlan(spec=spec, dataset=dataset, workspace=ws, entries=entries, skipped=list(skipped.values()))


def _existing_runs(ws: Workspace, dataset_key: str) -> dict[str, list[tuple[Run, str]]]:
    found: dict[str, list[tuple[Run, str]]] = {}
    for run in RunStore(ws):
        try:
            if run.config.get("dataset", {}).get("key") != dataset_key:
                continue
            key = run_config_key(run)
        except (SampleSiftError, KeyError):
            continue  # an unreadable run folder is not one of ours
        if key is not None:
            found.setdefault(key, []).append((run, _state(run.status())))
    return found


def _state(status: dict[str, Any]) -> str:
    """A run's state, where a run queued by another sweep process that is still alive counts as running."""
    state = str(status.get("state"))
    pid = int(status.get("pid", -1))
    if state == "queued" and status.get("host") == socket.gethostname() and pid != os.getpid() and pid_alive(pid):
        return "running"
    return state


def _match(planned: PlannedRun, found: list[tuple[Run, str]]) -> PlanEntry:
    for wanted, outcome in (("finished", "finished"), ("running", "running")):
        for run, state in reversed(found):  # the latest first
            if state == wanted:
                return PlanEntry(planned, outcome, run.id)  # type: ignore[arg-type]
    for run, state in reversed(found):
        if state in ("queued", "interrupted", "failed"):
            return PlanEntry(planned, "resume", run.id)
    return PlanEntry(planned, "new")


# --------------------------------------------------------------------------- executors


@dataclass(frozen=True)
class RunTask:
    """A queued run for an executor: where it lives and how to show it."""

    workspace: str
    run_id: str
    label: str = ""


@dataclass(frozen=True)
class TaskOutcome:
    """What became of a task. ``seconds`` is real time, loading and evaluation included."""

    run_id: str
    label: str
    state: Literal["finished", "failed"]
    error: str | None
    seconds: float


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Let the trainer use ``threads`` torch threads (it reads SAMPLESIFT_THREADS)."""
    if threads is None:
        yield
        return
    previous = os.environ.get("SAMPLESIFT_THREADS")
    os.environ["SAMPLESIFT_THREADS"] = str(threads)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("SAMPLESIFT_THREADS", None)
        else:
            os.environ["SAMPLESIFT_THREADS"] = previous


def execute_task(task: RunTask, threads: int | None = None) -> TaskOutcome:
    """Start or continue one queued run (:func:`toolkit.train.resume`); every executor calls this.

    A failing run records its error in its status and is reported as ``failed``; the other
    runs of the sweep go on. An interrupt is not caught: it stops the sweep.
    """
    start = time.perf_counter()
    try:
        with _torch_threads(threads):
            resume(task.run_id, workspace=task.workspace, progress=False)
    except Exception as exc:
        message = str(exc) if isinstance(exc, SampleSiftError) else f"{type(exc).__name__}: {exc}"
        return TaskOutcome(task.run_id, task.label, "failed", message, time.perf_counter() - start)
    return TaskOutcome(task.run_id, task.label, "finished", None, time.perf_counter() - start)


def _execute_in_worker(task: RunTask, threads: int | None = None) -> TaskOutcome:
    """:func:`execute_task` in a pool worker, where an interrupt (the sweep stopping) ends the process.

    ``concurrent.futures`` keeps a worker alive after any exception its task raises, so a
    terminated worker would record its run ``interrupted`` and then start the runs already
    handed to it: a stopped sweep went on training. The run's status and checkpoint are
    written before the interrupt reaches here.
    """
    try:
        return execute_task(task, threads)
    except KeyboardInterrupt:
        os._exit(130)


OnDone = Callable[[TaskOutcome], None]


class Executor(Protocol):
    """Runs queued tasks and reports each outcome as it arrives."""

    def execute(self, tasks: Sequence[RunTask], on_done: OnDone | None = None) -> list[TaskOutcome]:
        """Run every task; call ``on_done`` after each; return the outcomes."""
        ...


def _worker_init() -> None:
    # A terminated worker marks its run "interrupted" (as the CLI does) instead of dying silently.
    signal.signal(signal.SIGTERM, terminate_as_interrupt)


@dataclass
class LocalExecutor:
    """Runs on this machine: in this process (``workers=1``) or in N worker processes.

    Attributes:
        workers: runs at the same time. Above 1, each run gets its own process (spawned, so
            no torch state is shared) with ``threads`` torch threads.
        threads: torch threads per run; default all cores when sequential, 1 per worker.
    """

    workers: int = 1
    threads: int | None = None

    def __post_init__(self) -> None:
        require(self.workers >= 1, f"--workers must be at least 1, got {self.workers}")
        require(self.threads is None or self.threads >= 1, f"threads must be at least 1, got {self.threads}")

    def execute(self, tasks: Sequence[RunTask], on_done: OnDone | None = None) -> list[TaskOutcome]:
        outcomes: list[TaskOutcome] = []
        if self.workers == 1 or len(tasks) <= 1:
            for task in tasks:
                outcomes.append(execute_task(task, self.threads))
                if on_done:
                    on_done(outcomes[-1])
            return outcomes
        threads = self.threads or 1
        pool = ProcessPoolExecutor(
            min(self.workers, len(tasks)), mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init
        )
        try:
            futures = {pool.submit(_execute_in_worker, task, threads): task for task in tasks}
            for future in as_completed(futures):
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    raise SampleSiftError(
                        f"a worker process died while running {futures[future].label or futures[future].run_id} "
                        "(killed, or out of memory); finished runs are kept: run the same sweep again to resume "
                        "the others"
                    ) from None
                outcomes.append(outcome)
                if on_done:
                    on_done(outcome)
        except BaseException:
            _terminate_workers(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return outcomes


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    """Stop a pool's workers now (their runs record ``interrupted``); Python < 3.14 has no public call."""
    for process in list(getattr(pool, "_processes", {}).values()):
        process.terminate()


@dataclass
class RayExecutor:
    """One Ray task per run, with its CPU and GPU share (the optional ``[ray]`` extra).

    Fractional GPUs let several of these small models share one GPU (``gpus_per_run=0.25``
    runs four at a time per GPU). Workers must see the same workspace path (a shared file
    system on a multi-node cluster). Ray is imported only when a sweep uses it.

    Attributes:
        address: the cluster to join (``auto``, ``ray://...``); ``None`` starts a local one
            unless Ray is already initialised in this process.
        cpus_per_run: CPUs reserved per run; it also sets the run's torch threads.
        gpus_per_run: GPUs per run, fractional allowed; 0 trains on the CPU.
    """

    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0

    def __post_init__(self) -> None:
        require(self.cpus_per_run > 0, f"--cpus-per-run must be positive, got {self.cpus_per_run}")
        require(self.gpus_per_run >= 0, f"--gpus-per-run must be >= 0, got {self.gpus_per_run}")

    def execute(self, tasks: Sequence[RunTask], on_done: OnDone | None = None) -> list[TaskOutcome]:
        with ray_session(self.address) as ray:
            resources = ray.cluster_resources()
            for name, need in (("CPU", self.cpus_per_run), ("GPU", self.gpus_per_run)):
                require(
                    need == 0 or resources.get(name, 0) >= need,
                    f"each run asks for {need:g} {name}(s) but the Ray cluster has {resources.get(name, 0):g}; "
                    f"lower --{name.lower()}s-per-run",
                )
            remote = ray.remote(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=0)(execute_task)
            threads = max(1, int(self.cpus_per_run))
            pending = {remote.remote(task, threads): task for task in tasks}
            outcomes: list[TaskOutcome] = []
            try:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1)
                    for ref in done:
                        pending.pop(ref)
                        outcomes.append(ray.get(ref))
                        if on_done:
                            on_done(outcomes[-1])
            except BaseException:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise
            return outcomes


# --------------------------------------------------------------------------- running a sweep


@dataclass
class SweepResult:
    """A finished (or partly finished) sweep: its plan, outcomes and results table."""

    spec: SweepSpec
    plan: RunPlan
    outcomes: list[TaskOutcome]
    table: pd.DataFrame
    seconds: float

    @property
    def failed(self) -> list[TaskOutcome]:
        return [o for o in self.outcomes if o.state == "failed"]


def run_sweep(
    spec: SweepSpec,
    *,
    workspace: Workspace | str | Path | None = None,
    executor: Executor | None = None,
    log: Callable[[str], None] | None = None,
) -> SweepResult:
    """Plan, prepare and execute a sweep; return its results table (one row per finished run).

    Finished runs with the same configuration are reused, interrupted ones resumed, so
    running the same sweep again only does what is missing.
    """
    ws = as_workspace(workspace)
    start = time.perf_counter()
    plan = plan_sweep(spec, workspace=ws)
    say = log or (lambda _message: None)
    say(f"sweep {spec.name} on {plan.dataset.key}: {plan.describe()}")
    tasks = plan.prepare()
    done = 0

    def report(outcome: TaskOutcome) -> None:
        nonlocal done
        done += 1
        if outcome.state == "finished":
            summary = Run(ws.run_dir(outcome.run_id)).summary() or {}
            detail = (
                f"{100 * summary.get('test_accuracy', float('nan')):.2f}% after {summary.get('steps')} steps, "
                f"{summary.get('wall_time_s', float('nan')):.1f} s training ({outcome.seconds:.0f} s in all)"
            )
        else:
            detail = f"FAILED: {outcome.error}"
        say(f"[{done}/{len(tasks)}] {outcome.label}: {detail}")

    outcomes = (executor or LocalExecutor()).execute(tasks, on_done=report)
    ids = {entry.run_id for entry in plan.entries if entry.run_id is not None}
    table = results_table(ws, plan.dataset.key)
    table = table[table["run_id"].isin(ids)].reset_index(drop=True)
    return SweepResult(spec, plan, outcomes, table, time.perf_counter() - start)


def report_sweep(spec: SweepSpec, *, workspace: Workspace | str | Path | None = None) -> SweepResult:
    """A sweep's results so far, without running anything: the table of its finished runs.

    For committing partial results of a long sweep while it runs (or between sessions):
    :func:`write_outputs` then writes ``progress.json`` saying how many of the planned runs
    the table holds, and which are missing.
    """
    ws = as_workspace(workspace)
    start = time.perf_counter()
    plan = plan_sweep(spec, workspace=ws)
    ids = {entry.run_id for entry in plan.entries if entry.state == "finished"}
    table = results_table(ws, plan.dataset.key)
    table = table[table["run_id"].isin(ids)].reset_index(drop=True)
    return SweepResult(spec, plan, [], table, time.perf_counter() - start)


# --------------------------------------------------------------------------- outputs


def write_outputs(result: SweepResult, folder: str | Path, *, png: bool = True) -> list[Path]:
    """Write a sweep's table, statistics, spec and figures (HTML, and PNG unless ``png=False``).

    Tables: ``results`` (one row per run), ``summary`` (per cell, over seeds), ``paired``
    (:func:`~toolkit.results.paired_differences` against random-balanced: per embedding, K,
    split and schedule, the mean paired difference with its 95% interval) and ``gain``
    (:func:`~toolkit.results.gain_table`: the same, one row per pair) and ``time_to_accuracy``
    (:func:`~toolkit.results.time_to_accuracy`: steps to the full-data run's half-way accuracy,
    when the runs were evaluated along the way), each as CSV and Parquet.

    ``progress.json`` says how many planned runs the table holds (``partial`` when some are
    missing, as after ``--report`` on a sweep still running), and lists the missing ones.

    Figures: Fig. 5 (accuracy vs split) and Fig. 7b (training loss vs step of the first
    seed's runs at 0/100 and 100/0) from the equal-steps runs, Fig. 6 (fixed time budget) and
    Fig. 7 (loss vs time) from the equal-time runs, the learning curve (accuracy vs K at
    100/0: the best pair, random-balanced, random and full data) and the gain over random,
    each when there is data.
    """
    from toolkit.viz.results import (
        accuracy_vs_split,
        gain_figure,
        learning_curve_figure,
        loss_curves,
        save_figure,
        stamp_hardware,
        time_budget_bars,
    )

    folder = Path(folder)
    table = result.table
    written = write_table(table, folder)
    finished = set(table["run_id"])
    missing = [entry.run.describe() for entry in result.plan.entries if entry.run_id not in finished]
    progress = {
        "planned": len(result.plan.entries),
        "finished": len(result.plan.entries) - len(missing),
        "partial": bool(missing),
        "missing": missing,
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    written.append(atomic_write_json(folder / "progress.json", progress))
    written += write_table(summarize(table), folder, stem="summary")
    written.append(atomic_write_json(folder / "spec.json", result.spec.to_dict()))
    figures = {}
    try:
        paired = paired_differences(table, baseline=BASELINE)
    except SampleSiftError as exc:  # runs that cannot be paired unambiguously: say so, write the rest
        written.append(atomic_write_text(folder / "paired.txt", f"no paired differences: {exc}\n"))
        paired = None
    if paired is not None:
        written += write_table(paired, folder, stem="paired")
        written += write_table(gain_table(paired), folder, stem="gain")
        if ((paired["n"] > 0) & (paired["protocol"] == EQUAL_STEPS)).any():
            figures["gain_over_random"] = gain_figure(paired, split=None)
    with contextlib.suppress(SampleSiftError):  # no full-data run evaluated half-way: no race to report
        written += write_table(time_to_accuracy(table), folder, stem="time_to_accuracy")
    stepped = table[table["protocol"] == EQUAL_STEPS]
    if not stepped.empty:
        figures["fig5_accuracy_vs_split"] = accuracy_vs_split(table)
        extremes = stepped[stepped["split"].isin([0.0, 1.0]) & (stepped["seed"] == stepped["seed"].min())]
        if not extremes.empty:
            figures["fig7b_loss_vs_step"] = loss_curves(extremes, x="step")
        if (stepped["split"] == 1.0).any() and paired is not None:
            with contextlib.suppress(SampleSiftError):  # no baseline or pair at 100/0: nothing to draw
                figures["learning_curve"] = learning_curve_figure(table)
    timed = table[table["protocol"] == EQUAL_TIME]
    if not timed.empty:
        figures["fig6_time_budget"] = time_budget_bars(table)
        figures["fig7_loss_vs_time"] = loss_curves(timed, x="wall_time_s")
    for stem, figure in figures.items():
        written += save_figure(
            stamp_hardware(figure, table), folder / stem, formats=("html", "png") if png else ("html",)
        )
    return written
