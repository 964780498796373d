"""Ray, for the steps that can leave this process for a cluster (``--executor ray``).

Three steps run on a Ray cluster when asked: a sweep's runs
(:class:`toolkit.experiments.RayExecutor`), the decoding of a new source's images
(:mod:`toolkit.images`) and an encoder's inference over the images
(:class:`toolkit.encoders.base.Inference`). They share what is here: the one check of the
option, the install hint when Ray is missing (it is the optional ``[ray]`` extra, imported only
when used), joining and leaving a cluster, and a bounded stream of tasks. This module imports
no other of the package's modules but :mod:`toolkit.errors`, so any module may use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from toolkit.errors import SampleSiftError, require

#: Where the heavy steps run: in this machine's processes, or as tasks on a Ray cluster.
EXECUTORS = ("local", "ray")

Key = TypeVar("Key")


def import_ray() -> Any:
    """The ``ray`` module, or the one-line install hint when it is missing."""
    try:
        import ray
    except ImportError:
        raise SampleSiftError(
            "--executor ray needs Ray, which is not installed; install it with "
            "`pip install 'samplesift[ray]'` (or use --executor local)"
        ) from None
    return ray


def check_executor(executor: str, address: str | None) -> None:
    """Refuse an unknown executor, an address without Ray, and Ray when it is not installed (before any work)."""
    require(executor in EXECUTORS, f"--executor must be local or ray, got {executor!r}")
    require(
        address is None or executor == "ray",
        f"--ray-address {address} applies to --executor ray only; add --executor ray or leave it out",
    )
    if executor == "ray":
        import_ray()


@contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray, joined to the cluster at ``address`` for the block, unless this process has joined one already.

    ``address`` is what ``ray.init`` takes (``auto``, ``ray://host:10001``); ``None`` starts a
    local instance. A session started here is left when the block ends; one that was already
    open (a caller's ``ray.init``, a sweep's run inside a Ray task) is used as it is and kept.
    """
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def run_tasks(
    ray: Any,
    function: Callable[..., Any],
    jobs: Iterable[tuple[Key, tuple[Any, ...]]],
    done: Callable[[Key, Any], None],
    *,
    kwargs: dict[str, Any] | None = None,
    num_gpus: float = 0,
) -> None:
    """Run ``function(*args, **kwargs)`` as one Ray task (one CPU) per job ``(key, args)``; ``done(key, result)`` here.

    At most two tasks per CPU of the cluster are in flight, and ``jobs`` is read only as tasks
    are sent, so the data a job carries (encoded images, a slice of images) waits in the object
    store only while its task is pending: a source of any size streams through in bounded
    memory. ``done`` is called in this process as each task finishes, in the order they finish.
    A task is retried by Ray if its worker dies, so ``function`` must be safe to run twice
    (writing a file atomically, computing a value). An error, or an interrupt, cancels the
    tasks still pending and is raised.
    """
    remote = ray.remote(num_cpus=1, num_gpus=num_gpus)(function)
    in_flight = max(1, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending: dict[Any, Key] = {}

    def collect() -> None:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            done(pending.pop(ref), ray.get(ref))

    try:
        for key, args in jobs:
            pending[remote.remote(*args, **(kwargs or {}))] = key
            if len(pending) >= in_flight:
                collect()
        while pending:
            collect()
    except BaseException:
        for ref in pending:
            ray.cancel(ref)
        raise
