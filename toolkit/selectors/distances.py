"""Blocked distance primitives shared by the selectors and the diagnostics.

Everything here runs in torch on the input's device and never materialises an N x N (or
N x K) matrix: rows are processed in blocks whose size follows a memory budget
(:data:`BLOCK_BYTES`). Squared Euclidean distances use the expansion
``|a|^2 - 2 a.b + |b|^2`` (one GEMM per block) and are clamped at zero against rounding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

BLOCK_BYTES = 64 * 2**20
"""Memory for one block of a distance matrix (64 MiB: a few cache-friendly GEMMs per second
on a CPU, large enough to keep a GPU busy)."""


@contextlib.contextmanager
def sequential_loop(device: torch.device) -> Iterator[None]:
    """Run a greedy loop of many small dependent steps with one intra-op thread on a CPU.

    Each step of k-center, herding or a greedy submodular pick is a few operations over N
    rows taking well under a millisecond, so thread hand-offs dominate: on the project's
    shared 2-core CPU (load average ~10) 500 k-center picks on 50,000 x 32 took 6.6-13 s
    with 2 threads and 0.9-1.2 s with 1. The previous thread count is restored afterwards
    (torch's setting is process-wide). CUDA runs are unaffected.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def rows_per_block(columns: int, budget_bytes: int = BLOCK_BYTES) -> int:
    """How many rows of a float32 matrix with ``columns`` columns fit in ``budget_bytes``."""
    return max(1, budget_bytes // (4 * max(1, columns)))


def generator(seed: int) -> torch.Generator:
    """A CPU torch generator seeded with ``seed``.

    Draws are made on the CPU and moved to the embeddings' device: CUDA's generator gives
    other numbers for the same seed, and a seed must pick the same samples on any device.
    """
    return torch.Generator().manual_seed(int(seed))


def squared_norms(x: torch.Tensor) -> torch.Tensor:
    """Row-wise squared Euclidean norms, (N,)."""
    return torch.einsum("ij,ij->i", x, x)


def random_projection(x: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """Gaussian random projection of the rows of ``x`` to ``dim`` dimensions.

    The Johnson-Lindenstrauss map ``x @ R / sqrt(dim)`` with R ~ N(0, 1) preserves pairwise
    distances up to a factor 1 +- O(1/sqrt(dim)) in expectation; a data set with at most
    ``dim`` dimensions is returned unchanged.
    """
    if x.shape[1] <= dim:
        return x
    matrix = torch.randn(x.shape[1], dim, generator=generator(seed)).to(x.device)
    return (x @ matrix).mul_(dim**-0.5)


class DistancesToRow:
    """Squared distances from every row of ``z`` to one of its rows: one fused GEMV per call.

    The rows are stored with an extra column of ones, so ``|z|^2 - 2 z.c + |c|^2`` is a
    single ``addmv`` into a preallocated buffer (no N-sized temporaries per step). The
    returned tensor is that buffer: consume it before the next call.
    """

    def __init__(self, z: torch.Tensor) -> None:
        self.augmented = torch.cat([z, torch.ones(z.shape[0], 1, device=z.device, dtype=z.dtype)], dim=1)
        self.sq = squared_norms(z)
        self.out = torch.empty_like(self.sq)

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        center = self.augmented.index_select(0, index)[0, :-1]
        vector = torch.cat([center * -2.0, (center @ center).view(1)])
        return torch.addmv(self.sq, self.augmented, vector, out=self.out).clamp_(min=0.0)


def nearest(
    x: torch.Tensor, centers: torch.Tensor, *, budget_bytes: int = BLOCK_BYTES
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every row of ``x``, the squared distance to its nearest row of ``centers`` and its index.

    Blocked over the rows of ``x``: memory is one block x len(centers) matrix at a time.
    """
    center_sq = squared_norms(centers)
    best = torch.empty(x.shape[0], device=x.device)
    which = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    step = rows_per_block(len(centers), budget_bytes)
    for start in range(0, x.shape[0], step):
        block = x[start : start + step]
        partial = torch.addmm(center_sq, block, centers.T, alpha=-2.0)  # |c|^2 - 2 x.c
        value, index = partial.min(dim=1)
        best[start : start + step] = value + squared_norms(block)
        which[start : start + step] = index
    return best.clamp_(min=0.0), which


def knn(
    x: torch.Tensor, k: int, *, exclude_self: bool = False, budget_bytes: int = BLOCK_BYTES
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest rows of every row of ``x`` (exact brute force, blocked over rows).

    Returns (squared distances (N, k) ascending, indices (N, k)). With ``exclude_self`` a row
    is never its own neighbour; otherwise it normally is its own first neighbour (distance 0).
    ``k`` is clamped to the number of candidates. Memory is one block x N matrix at a time.
    (Computing only the blocks above the diagonal was measured no faster on this CPU: the
    transposed block's copy and second top-k cost as much as the GEMM it saves.)
    """
    n = x.shape[0]
    k = max(0, min(k, n - 1 if exclude_self else n))
    sq = squared_norms(x)
    dist = torch.empty(n, k, device=x.device)
    index = torch.empty(n, k, dtype=torch.long, device=x.device)
    if k == 0:
        return dist, index
    step = rows_per_block(n, budget_bytes)
    for start in range(0, n, step):
        block = x[start : start + step]
        partial = torch.addmm(sq, block, x.T, alpha=-2.0)  # |y|^2 - 2 x.y: the row's |x|^2 is added after
        if exclude_self:
            rows = torch.arange(len(block), device=x.device)
            partial[rows, rows + start] = torch.inf
        value, found = torch.topk(partial, k, dim=1, largest=False)
        dist[start : start + step] = value + sq[start : start + step, None]
        index[start : start + step] = found
    return dist.clamp_(min=0.0), index


def knn_of(x: torch.Tensor, rows: torch.Tensor, k: int, *, budget_bytes: int = BLOCK_BYTES) -> torch.Tensor:
    """Squared distances (len(rows), k) from the given rows of ``x`` to their k nearest other rows."""
    k = max(0, min(k, x.shape[0] - 1))
    sq = squared_norms(x)
    out = torch.empty(len(rows), k, device=x.device)
    step = rows_per_block(x.shape[0], budget_bytes)
    for start in range(0, len(rows), step):
        chosen = rows[start : start + step]
        block = torch.addmm(sq, x[chosen], x.T, alpha=-2.0).add_(sq[chosen, None])
        block[torch.arange(len(chosen), device=x.device), chosen] = torch.inf  # not its own neighbour
        out[start : start + step] = torch.topk(block, k, dim=1, largest=False).values
    return out.clamp_(min=0.0)


def stable_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores; ties keep the lower index first (deterministic)."""
    return torch.sort(scores, descending=True, stable=True).indices[:k]
