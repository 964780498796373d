"""The run store: one folder per training run, readable while the run is going.

A run folder holds::

    config.json      what was asked for: training config, data set, selection, versions
    status.json      state (running, finished, failed, interrupted), pid, error, timestamps
    metrics.jsonl    one JSON record per line: training logs and evaluations
    checkpoint.pt    the latest checkpoint (weights_only-loadable), for --resume
    summary.json     final figures (test_accuracy, steps, wall_time_s, ...), written last
    .lock            held (flock) by the one process executing the run

Every file except the append-only metrics log is replaced atomically. The store lives in
the workspace, not in any process, so the CLI, the app and notebooks all see the same runs.
The process executing a run holds the run's lock; the kernel drops it when that process
dies (``kill -9`` and power loss included), so a run recorded as ``running`` whose lock is
free reads ``interrupted``, never running forever, and two processes (an app session and a
sweep worker) can never execute the same run at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import pickle
import socket
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.artifacts import (
    atomic_write_bytes,
    atomic_write_json,
    exclusive_lock,
    lock_is_held,
    read_json,
    remove_temporaries,
    safe_name,
    to_jsonable,
    utc_now,
)
from toolkit.errors import SampleSiftError
from toolkit.workspace import Workspace, as_workspace

RUN_STATES = ("queued", "running", "finished", "failed", "interrupted")

#: Columns of :func:`list_runs`, in order.
RUN_COLUMNS = [
    "run_id",
    "name",
    "status",
    "dataset",
    "selection",
    "method",
    "selection_size",
    "split",
    "steps",
    "time_budget",
    "batch",
    "seed",
    "norm",
    "test_accuracy",
    "wall_time_s",
    "images_seen",
    "device",
    "created",
]


class Run:
    """One run folder. Cheap to create; every property reads the files afresh."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({self.id!r})"

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def config(self) -> dict[str, Any]:
        return read_json(self.path / "config.json", "run config")

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock: only the holder may execute the run or write its files.

        Raises:
            SampleSiftError: another process is executing the run.
        """
        with exclusive_lock(
            self.lock_path,
            f"run {self.id} is being executed by another process; wait for it or stop it first",
        ):
            # A writer killed mid-write leaves a hidden temporary file; with the lock held
            # no live writer can own one, so they can go.
            remove_temporaries(self.path)
            yield

    def status(self) -> dict[str, Any]:
        """The status record; a ``running`` run whose process is gone reads ``interrupted``.

        "Gone" is decided by the run's lock, not by the recorded pid: a pid is reused by
        unrelated processes (in containers almost at once), a lock dies with its holder.
        """
        try:
            status = read_json(self.path / "status.json", "run status")
        except SampleSiftError:
            return {"state": "unknown"}
        if status.get("state") == "running" and not lock_is_held(self.lock_path):
            status = {**status, "state": "interrupted", "error": "the process running it is gone"}
        return status

    def summary(self) -> dict[str, Any] | None:
        path = self.path / "summary.json"
        return read_json(path, "run summary") if path.exists() else None

    def set_status(self, state: str, **extra: Any) -> None:
        if state not in RUN_STATES:
            raise ValueError(f"unknown run state {state!r}")
        previous: dict[str, Any] = {}
        with contextlib.suppress(SampleSiftError):
            previous = read_json(self.path / "status.json")
        record = {
            "state": state,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": previous.get("started") or utc_now(),
            "updated": utc_now(),
            **extra,
        }
        atomic_write_json(self.path / "status.json", record)

    def log(self, record: dict[str, Any]) -> None:
        """Append one record to metrics.jsonl (one write call, flushed)."""
        line = json.dumps(to_jsonable(record)) + "\n"
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()

    def records(self) -> list[dict[str, Any]]:
        """All metrics records; a torn last line (a killed writer) is ignored."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
        return records

    def metrics(self, kind: str | None = None) -> pd.DataFrame:
        """Metrics as a DataFrame; ``kind`` is ``"train"`` or ``"eval"`` to filter."""
        frame = pd.DataFrame(self.records())
        if kind is not None and not frame.empty:
            frame = frame[frame["kind"] == kind].reset_index(drop=True)
        return frame

    def truncate_metrics(self, last_step: int) -> None:
        """Drop records after ``last_step`` (used when resuming from a checkpoint)."""
        kept = [r for r in self.records() if int(r.get("step", 0)) <= last_step]
        atomic_write_bytes(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept).encode())

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.path / "summary.json", summary)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Save a checkpoint atomically (tensors and plain containers only)."""
        import torch  # here, not at the top: reading the store (the app, job workers) needs no torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.checkpoint_path, buffer.getvalue())

    def load_checkpoint(self) -> dict[str, Any]:
        """Load the checkpoint with ``weights_only=True``: no code in it can run."""
        if not self.checkpoint_path.exists():
            raise SampleSiftError(f"run {self.id} has no checkpoint to resume from; start a new run instead")
        return load_weights_only(self.checkpoint_path)


def load_weights_only(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with a clear error for files that need more.

    The weights-only unpickler builds tensors and plain containers only: a file that asks
    for any other object (the way a malicious pickle runs code) is refused before anything
    in it is executed. A damaged file (cut short by a full disk, say) gets its own message.
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise SampleSiftError(
            f"refused to load {path}: it is not a plain-tensor checkpoint ({str(exc).splitlines()[0]}); "
            "files that need arbitrary code to load are never opened"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SampleSiftError(
            f"the checkpoint {path} is damaged and cannot be read ({type(exc).__name__}); "
            "delete it to start that run over"
        ) from None
    if not isinstance(state, dict):
        raise SampleSiftError(f"the checkpoint {path} holds a {type(state).__name__}, not a checkpoint dictionary")
    return state


class RunStore:
    """All runs of a workspace."""

    def __init__(self, workspace: Workspace | str | Path | None = None) -> None:
        self.workspace = as_workspace(workspace)

    @property
    def root(self) -> Path:
        return self.workspace.runs_dir

    def create(self, config: dict[str, Any], name: str | None = None) -> Run:
        """Make a new run folder with a unique id and write its config and status."""
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        label = safe_name(name, "run name") if name else "run"
        self.root.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            run_id = f"{stamp}-{label}-{uuid.uuid4().hex[:6]}"
            path = self.workspace.run_dir(run_id)
            try:
                path.mkdir()  # fails if another process took this id: ids never collide
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 100 uuid collisions in a row
            raise SampleSiftError("could not allocate a run id")
        run = Run(path)
        run.lock_path.touch()  # exists from the start, so taking the lock later changes no file
        atomic_write_json(path / "config.json", {**config, "run_id": run_id, "name": name, "created": utc_now()})
        run.set_status("queued")
        return run

    def get(self, run: str | Path) -> Run:
        """A run by id, or by the path of its folder."""
        candidate = Path(run)
        if candidate.is_dir() and (candidate / "config.json").exists():
            return Run(candidate.resolve())
        path = self.workspace.run_dir(str(run))
        if not (path / "config.json").exists():
            raise SampleSiftError(f"no run {run!r} in {self.root}; list runs with `samplesift runs`")
        return Run(path)

    def __iter__(self) -> Iterator[Run]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.iterdir()):
            if path.is_dir() and not path.name.startswith(".") and (path / "config.json").exists():
                yield Run(path)

    def table(self, dataset: str | None = None, *, kind: str | None = None) -> pd.DataFrame:
        """One row per run (see :data:`RUN_COLUMNS`), optionally for one data set key and one
        kind of run (``train``: classifier runs, ``embed``: embedding runs)."""
        rows = []
        for run in self:
            try:
                config = run.config
            except SampleSiftError:
                continue
            data = config.get("dataset", {})
            if dataset is not None and data.get("key") != dataset:
                continue
            if kind is not None and config.get("kind", "train") != kind:
                continue
            train = config.get("train", {})
            selection = config.get("selection") or {}
            summary = run.summary() or {}
            rows.append(
                {
                    "run_id": run.id,
                    "name": config.get("name"),
                    "status": run.status().get("state"),
                    "dataset": data.get("key"),
                    "selection": selection.get("name"),
                    "method": selection.get("method"),
                    "selection_size": selection.get("size"),
                    "split": train.get("split"),
                    "steps": summary.get("steps", train.get("steps")),
                    "time_budget": train.get("time_budget"),
                    "batch": train.get("batch"),
                    "seed": train.get("seed"),
                    "norm": train.get("norm"),
                    "test_accuracy": summary.get("test_accuracy"),
                    "wall_time_s": summary.get("wall_time_s"),
                    "images_seen": summary.get("images_seen"),
                    "device": summary.get("device"),
                    "created": config.get("created"),
                }
            )
        return pd.DataFrame(rows, columns=RUN_COLUMNS)


def list_runs(workspace: Workspace | str | Path | None = None, dataset: str | None = None) -> pd.DataFrame:
    """All runs of a workspace as a DataFrame (``dataset`` filters by data set key)."""
    return RunStore(workspace).table(dataset)
