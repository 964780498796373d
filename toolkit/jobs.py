"""Background work as separate processes, with all state in files.

Long work (making an embedding, a UMAP of 50,000 points, classifier runs) never runs inside
the app's script thread. It runs as the toolkit's own commands in separate processes, so the
app stays responsive and a terminal user gets exactly the same results:

``project``
    ``python -m toolkit project ...``: computes and caches a map (see :mod:`toolkit.projection`).
``train``
    a worker that starts queued runs one after another: ``python -m toolkit train --resume
    RUN`` for classifier runs, ``python -m toolkit embed --resume RUN`` for embedding runs
    (every encoder, trained or not). Runs are recorded first (state ``queued``) with
    :func:`toolkit.train.prepare` or :meth:`toolkit.encoders.Encoder.prepare`; the progress
    of both kinds is the run store's ``status.json`` and ``metrics.jsonl``, read by one
    reader (:func:`run_progress`). Workers of one workspace take turns through a lock file,
    so runs never compete for the CPU or GPU and execute in the order they were queued.

Every job is one wrapper process (``python -m toolkit.jobs JOB_FILE``) started in its own
session, so it outlives the app (a browser refresh or an app restart loses nothing). It is
recorded in ``<workspace>/jobs/<id>.json`` (kind, pid, command, targets); its output goes to
``<id>.log``, it holds a lock on ``<id>.lock`` while it runs, and it writes its end (state,
exit code, time) to ``<id>.end.json``. :meth:`Job.cancel` sends SIGTERM to the wrapper,
which passes it on to the command it is running; the CLI turns SIGTERM into an interrupted
state (a run keeps its checkpoint and can be resumed), and the worker marks the runs it had
not started yet as cancelled.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.artifacts import atomic_write_json, exclusive_lock, lock_is_held, pid_alive, read_json, safe_name, utc_now
from toolkit.errors import SampleSiftError, require
from toolkit.workspace import Workspace, as_workspace

if TYPE_CHECKING:  # runtime imports are local: the wrapper process should not load torch to start
    from toolkit.data import ImageDataset
    from toolkit.encoders import Encoder
    from toolkit.runs import Run
    from toolkit.selection import Selection
    from toolkit.train import TrainConfig

JOB_KINDS = ("project", "train")
#: States of a job. ``lost``: its process is gone without recording an end (killed hard).
JOB_STATES = ("running", "finished", "failed", "cancelled", "lost")
CANCELLED_BEFORE_START = "cancelled before it started"

# Processes this interpreter started, so they can be reaped (a finished child that is never
# waited for stays a zombie, and a zombie still "exists" for os.kill(pid, 0)).
_children: dict[int, subprocess.Popen] = {}


def _pid_alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None  # also reaps it, so a finished child is not a zombie
    return pid_alive(pid)


@dataclass
class Job:
    """One background process and its record file."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.stem

    @property
    def record(self) -> dict[str, Any]:
        return read_json(self.path, "job record")

    @property
    def kind(self) -> str:
        return str(self.record["kind"])

    @property
    def log_path(self) -> Path:
        return self.path.with_suffix(".log")

    @property
    def end_path(self) -> Path:
        return self.path.with_suffix(".end.json")

    def end(self) -> dict[str, Any] | None:
        """The end record the wrapper wrote (state, return code, time), or ``None``."""
        try:
            return read_json(self.end_path, "job end record")
        except SampleSiftError:
            return None

    @property
    def lock_path(self) -> Path:
        return self.path.with_suffix(".lock")

    def state(self) -> str:
        """``running``, or how it ended: ``finished``, ``failed``, ``cancelled``, ``lost``.

        A started wrapper holds a lock on ``<id>.lock`` until it exits (the kernel drops it
        even on ``kill -9``), so liveness never depends on a pid that may be reused. Before
        the lock file exists the wrapper is still starting, and its pid decides.
        """
        end = self.end()
        if end is not None:
            return str(end["state"])
        if self.lock_path.exists():
            if lock_is_held(self.lock_path):
                return "running"
        else:
            record = self.record
            pid = int(record.get("pid", -1))
            if pid <= 0 or record.get("host") != socket.gethostname() or _pid_alive(pid):
                return "running"  # being started (or on another host, where it cannot be checked)
        end = self.end()  # it may have recorded its end between the reads
        return "lost" if end is None else str(end["state"])

    def alive(self) -> bool:
        return self.state() == "running"

    def cancel(self) -> None:
        """Ask the job to stop (SIGTERM to its wrapper, which stops its command cleanly)."""
        record = self.record
        pid = int(record.get("pid", -1))
        if pid <= 0 or self.state() != "running" or record.get("host") != socket.gethostname():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> str:
        """Block until the job ends (for scripts and tests); returns its final state."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.alive():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} still running after {timeout} s")
            time.sleep(0.1)
        return self.state()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the job's output (stdout and stderr of its commands)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        # tqdm redraws with carriage returns; keep the last state of each line.
        cleaned = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
        return "\n".join(cleaned[-lines:])


def _toolkit_env() -> dict[str, str]:
    """The environment for child processes: this very toolkit importable, unbuffered output."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_job(
    kind: str,
    command: Sequence[str],
    *,
    workspace: Workspace | str | Path | None = None,
    targets: dict[str, Any] | None = None,
    label: str = "",
    env: dict[str, str] | None = None,
) -> Job:
    """Record a job and start its wrapper process in a new session.

    Args:
        kind: ``project`` or ``train``.
        command: for ``project``, the toolkit CLI arguments after ``python -m toolkit``;
            for ``train``, the run ids to start in order.
        workspace: the workspace the job works in (its record goes to ``<ws>/jobs``).
        targets: what the job works on (data set key, embedding name, run ids), for
            finding it again.
        label: a short description for listings.
        env: extra environment variables for the job's processes.
    """
    require(kind in JOB_KINDS, f"unknown job kind {kind!r}; choose one of {', '.join(JOB_KINDS)}")
    ws = as_workspace(workspace)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    job_id = safe_name(f"{stamp}-{kind}-{uuid.uuid4().hex[:6]}", "job id")
    path = ws.jobs_dir / f"{job_id}.json"
    record: dict[str, Any] = {
        "id": job_id,
        "kind": kind,
        "label": label,
        "command": list(command),
        "workspace": str(ws.root),
        "cwd": os.getcwd(),
        "targets": targets or {},
        "host": socket.gethostname(),
        "pid": -1,
        "created": utc_now(),
    }
    atomic_write_json(path, record)
    log = open(path.with_suffix(".log"), "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "toolkit.jobs", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**_toolkit_env(), **(env or {})},
            cwd=os.getcwd(),
            start_new_session=True,  # outlives the app; Ctrl-C in the app's terminal does not reach it
        )
    finally:
        log.close()
    _children[process.pid] = process
    # Only this process writes the record; the wrapper writes its end to a separate file.
    atomic_write_json(path, {**record, "pid": process.pid})
    return Job(path)


def list_jobs(
    workspace: Workspace | str | Path | None = None, *, kind: str | None = None, running_only: bool = False
) -> list[Job]:
    """Jobs of a workspace, newest first."""
    folder = as_workspace(workspace).jobs_dir
    if not folder.is_dir():
        return []
    jobs = []
    for path in sorted(folder.glob("*.json"), reverse=True):
        if path.name.endswith(".end.json"):
            continue  # a job's end record, not a job
        job = Job(path)
        try:
            if kind is not None and job.kind != kind:
                continue
            if running_only and not job.alive():
                continue
        except (SampleSiftError, KeyError):
            continue
        jobs.append(job)
    return jobs


# --------------------------------------------------------------------------- data spec


# --------------------------------------------------------------------------- embeddings


def start_embedding(
    dataset: ImageDataset,
    encoder: Encoder,
    *,
    workspace: Workspace | str | Path | None = None,
    name: str | None = None,
) -> tuple[Run, Job]:
    """Record an embedding run (queued) and start a worker for it: any encoder, trained or not."""
    ws = as_workspace(workspace)
    run = encoder.prepare(dataset, workspace=ws, name=name)  # refuses a name another run is making now
    return run, start_worker([run.id], workspace=ws)


def embedding_runs(dataset: ImageDataset, *, workspace: Workspace | str | Path | None = None) -> list[Run]:
    """The runs that make (or made) embeddings of ``dataset``, oldest first."""
    from toolkit.runs import RunStore

    found = []
    for run in RunStore(workspace):  # run ids start with their creation time: in creation order
        with contextlib.suppress(SampleSiftError):
            config = run.config
            if config.get("kind") == "embed" and (config.get("dataset") or {}).get("key") == dataset.key:
                found.append(run)
    return found


def find_embedding_run(
    dataset: ImageDataset, name: str | None, *, workspace: Workspace | str | Path | None = None
) -> Run | None:
    """The latest run that makes (or made) embedding ``name`` (any name: ``None``) of ``dataset``."""
    runs = [
        r for r in embedding_runs(dataset, workspace=workspace) if name is None or r.config.get("embedding") == name
    ]
    return runs[-1] if runs else None


def active_embedding_runs(dataset: ImageDataset, *, workspace: Workspace | str | Path | None = None) -> list[Run]:
    """Embedding runs of ``dataset`` that are queued or running."""
    return [r for r in embedding_runs(dataset, workspace=workspace) if r.status().get("state") in ("queued", "running")]


# --------------------------------------------------------------------------- projections


def start_projection(
    dataset: ImageDataset,
    method: str = "umap",
    *,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    workspace: Workspace | str | Path | None = None,
    embedding: str,
) -> Job:
    """Compute (and cache) a map of the data set's embedding ``embedding`` in the background."""
    from toolkit.projection import _resolve_params

    resolved = _resolve_params(method, params)
    ws = as_workspace(workspace)
    command = ["project", *dataset.cli_arguments(), "--workspace", str(ws.root), "--method", method]
    command += ["--seed", str(seed), "--embedding", embedding]
    for key, value in resolved.items():
        command += ["--param", f"{key}={value}"]
    return start_job(
        "project",
        command,
        workspace=ws,
        targets={"dataset": dataset.key, "embedding": embedding, "method": method, "seed": seed, **resolved},
        label=f"{method} map of {dataset.key}",
        env={"NUMBA_CACHE_DIR": str(numba_cache_dir(ws))},
    )


def numba_cache_dir(workspace: Workspace | str | Path | None = None) -> Path:
    """Where map jobs keep numba's compiled kernels (UMAP's first run is mostly compiling them),
    so later jobs, in new processes, reuse them."""
    return as_workspace(workspace).cache_dir / "numba"


def find_projection_job(
    dataset: ImageDataset,
    method: str = "umap",
    *,
    seed: int = 0,
    workspace: Workspace | str | Path | None = None,
    embedding: str,
) -> Job | None:
    """The latest projection job for these settings, if any."""
    for job in list_jobs(workspace, kind="project"):
        t = job.record.get("targets", {})
        if (t.get("dataset"), t.get("embedding"), t.get("method"), t.get("seed")) == (
            dataset.key,
            embedding,
            method,
            seed,
        ):
            return job
    return None


# --------------------------------------------------------------------------- training runs


def start_worker(run_ids: Sequence[str], *, workspace: Workspace | str | Path | None = None) -> Job:
    """Start a worker that executes the given queued runs (classifier or embedding) one after another."""
    from toolkit.runs import RunStore

    require(len(run_ids) > 0, "no runs to start")
    ws = as_workspace(workspace)
    store = RunStore(ws)
    for run_id in run_ids:
        store.get(run_id)  # unknown ids are refused here, not later in the background
    return start_job(
        "train",
        list(run_ids),
        workspace=ws,
        targets={"runs": list(run_ids)},
        label=f"{len(run_ids)} run(s)",
    )


def queue_runs(
    dataset: ImageDataset,
    configs: Sequence[TrainConfig],
    *,
    selection: Selection | str | Path | None = None,
    workspace: Workspace | str | Path | None = None,
    name: str | None = None,
) -> tuple[list[Run], Job]:
    """Record one queued run per config (all validated first) and start a worker for them.

    Every config is validated before any run is recorded, and runs recorded before a refusal
    (a split that needs a selection, say) are removed again, so a bad batch queues nothing.
    """
    from toolkit.selection import load_selection

    require(len(configs) > 0, "no runs to queue")
    for config in configs:
        config.validate()
    ws = as_workspace(workspace)
    if selection is not None and not isinstance(selection, (str, Path)):
        selection.check_dataset(dataset)
    elif selection is not None:
        selection = load_selection(selection, dataset, workspace=ws)
    from toolkit.train import prepare

    runs: list[Run] = []
    try:
        for config in configs:
            runs.append(prepare(dataset, config, selection=selection, workspace=ws, name=name))
    except SampleSiftError:
        for run in runs:  # never started: remove them, so a refused batch leaves nothing behind
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    return runs, start_worker([run.id for run in runs], workspace=ws)


def requeue(run: Run | str, *, workspace: Workspace | str | Path | None = None) -> Job:
    """Start an interrupted, failed or cancelled run again (from its checkpoint, if any)."""
    from toolkit.runs import Run, RunStore

    ws = as_workspace(workspace)
    run_obj = run if isinstance(run, Run) else RunStore(ws).get(run)
    state = run_obj.status().get("state")
    require(
        state in ("queued", "interrupted", "failed"),
        f"run {run_obj.id} is {state}; only queued, interrupted or failed runs can be started again",
    )
    run_obj.set_status("queued")
    return start_worker([run_obj.id], workspace=ws)


def cancel_run(run: Run | str, *, workspace: Workspace | str | Path | None = None) -> str:
    """Stop a running run (SIGTERM: it ends ``interrupted`` with its checkpoint) or cancel a queued one.

    Returns what was done: ``interrupted``, ``cancelled`` or ``nothing`` (already ended).
    """
    from toolkit.runs import Run, RunStore

    run_obj = run if isinstance(run, Run) else RunStore(as_workspace(workspace)).get(run)
    status = run_obj.status()
    if status.get("state") == "queued":
        run_obj.set_status("interrupted", error=CANCELLED_BEFORE_START, cancelled=True)
        return "cancelled"
    if status.get("state") == "running" and status.get("host") == socket.gethostname():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(status["pid"]), signal.SIGTERM)
        return "interrupted"
    return "nothing"


def running_run(workspace: Workspace | str | Path | None = None) -> str | None:
    """The id of the run a worker of this workspace is executing now (queued runs wait for it)."""
    from toolkit.runs import RunStore

    for run in RunStore(workspace):
        with contextlib.suppress(SampleSiftError):
            if run.status().get("state") == "running":
                return run.id
    return None


@dataclass
class RunProgress:
    """How far a run is, read from its files (any process may be training it).

    Attributes:
        state: the run's status (queued, running, finished, failed, interrupted).
        stage: what a running run does now: ``training``, or for embedding runs
            ``embedding`` and ``measuring`` (quality figures) after training.
        step: optimizer steps logged so far.
        fraction: share of the run done (steps, or seconds of a time budget), 0..1.
        loss: the latest training loss.
        accuracy: the latest test accuracy (averaged weights).
        images_per_s: the latest training throughput.
        eta_s: estimated training seconds left (``None`` before the first log).
        error: why it failed or stopped, when it did.
    """

    state: str
    stage: str
    step: int
    fraction: float
    loss: float | None
    accuracy: float | None
    images_per_s: float | None
    eta_s: float | None
    error: str | None


def run_progress(run: Run) -> RunProgress:
    """The progress of a run from its status, config and metrics files."""
    status = run.status()
    # Classifier runs record their schedule under "train", embedding runs under "loop" (None
    # for encoders that do not train).
    schedule = run.config.get("loop") or run.config.get("train") or {}
    records = run.records()
    logs = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    stages = [r for r in records if r.get("kind") == "stage"]
    last = logs[-1] if logs else {}
    step = int(last.get("step", 0))
    wall = float(last.get("wall_time_s", 0.0))
    if schedule.get("steps"):
        total = float(schedule["steps"])
        fraction = step / total
        eta = (total - step) * wall / step if step else None
    else:
        total = float(schedule.get("time_budget") or 1.0)
        fraction = wall / total
        eta = max(total - wall, 0.0) if logs else None
    state = str(status.get("state"))
    if state == "finished":
        fraction, eta = 1.0, 0.0
    return RunProgress(
        state=state,
        stage=str(stages[-1]["stage"]) if stages else "training",
        step=step,
        fraction=min(max(fraction, 0.0), 1.0),
        loss=last.get("loss"),
        accuracy=evals[-1]["test_accuracy"] if evals else None,
        images_per_s=last.get("images_per_s"),
        eta_s=eta,
        error=status.get("error"),
    )


# --------------------------------------------------------------------------- the wrapper process


class _Wrapper:
    """The body of ``python -m toolkit.jobs JOB_FILE``: runs the job's command(s), records the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.record = read_json(path, "job record")
        self.workspace = Workspace(self.record["workspace"])
        self.cancelled = False
        self.current: subprocess.Popen | None = None

    def on_terminate(self, signum: int, frame: object) -> None:
        self.cancelled = True
        if self.current is not None and self.current.poll() is None:
            self.current.send_signal(signal.SIGTERM)

    def toolkit(self, args: list[str]) -> int:
        if self.cancelled:
            return 130
        self.current = subprocess.Popen([sys.executable, "-m", "toolkit", *args], stdin=subprocess.DEVNULL)
        return self.current.wait()

    def train_runs(self, run_ids: list[str]) -> int:
        import fcntl
        import time

        from toolkit.runs import RunStore

        store = RunStore(self.workspace)
        with open(self.workspace.jobs_dir / "train.lock", "a+") as lock:
            # Workers of one workspace take turns: one run trains at a time, in queue order.
            # (Polled rather than blocking, so a cancel while waiting takes effect at once.)
            while not self.cancelled:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(0.2)
            failures = 0
            for run_id in run_ids:
                run = store.get(run_id)
                if self.cancelled:
                    if run.status().get("state") == "queued":
                        run.set_status("interrupted", error=CANCELLED_BEFORE_START, cancelled=True)
                    continue
                if run.status().get("state") != "queued":
                    print(f"samplesift worker: skipping run {run_id} ({run.status().get('state')})", flush=True)
                    continue
                print(f"samplesift worker: starting run {run_id}", flush=True)
                command = "embed" if run.config.get("kind") == "embed" else "train"
                self.toolkit([command, "--resume", run_id, "--workspace", str(self.workspace.root), "--quiet"])
                failures += run.status().get("state") == "failed"
        return 130 if self.cancelled else (1 if failures else 0)

    def main(self) -> int:
        signal.signal(signal.SIGTERM, self.on_terminate)
        with exclusive_lock(self.path.with_suffix(".lock"), f"job {self.path.stem} is already running", wait_s=0):
            return self.run()

    def run(self) -> int:
        try:
            if self.record["kind"] == "train":
                code = self.train_runs(list(self.record["command"]))
            else:
                code = self.toolkit(list(self.record["command"]))
        except Exception as exc:  # recorded, so the app can show why the job failed
            print(f"samplesift worker: {type(exc).__name__}: {exc}", flush=True)
            code = 1
        state = "cancelled" if self.cancelled else ("finished" if code == 0 else "failed")
        atomic_write_json(self.path.with_suffix(".end.json"), {"state": state, "returncode": code, "ended": utc_now()})
        return code


if __name__ == "__main__":  # pragma: no cover - exercised through start_job in tests
    raise SystemExit(_Wrapper(Path(sys.argv[1])).main())
