"""2-d maps of an embedding (UMAP, PCA), cached on disk, and picking points on them.

``project`` turns N x d embeddings into N x 2 coordinates. ``load_or_compute_projection``
does the same for a trained :class:`~toolkit.embedding.Embedding` and caches the result in the
workspace::

    <workspace>/datasets/<key>/projections/<method>-<cache key>.npy   N x 2 float32
    <workspace>/datasets/<key>/projections/<method>-<cache key>.json  method, params, seed,
                                                                      embedding fingerprint,
                                                                      compute time, versions

The cache key is a hash of the embedding's fingerprint, the method, its parameters and the
seed, so a remade embedding or other parameters never reuse a stale map, and the app, the
CLI (``samplesift project``) and notebooks share every map computed once.

Maps of 50,000 points are too heavy for a browser scatter plot (it freezes at about 30,000);
``stratified_subsample`` picks at most ``max_points`` with every class kept in proportion.
Selections drawn on the plot (a lasso polygon or a box, in data coordinates) are applied to
*all* points with ``points_in_polygon`` / ``points_in_box``, so a lasso selects every sample
inside it, plotted or not.
"""

from __future__ import annotations

import datetime as dt
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.artifacts import atomic_save_npy, atomic_write_json, fingerprint_bytes, read_json, versions
from toolkit.errors import SampleSiftError, require
from toolkit.selectors.base import class_quotas
from toolkit.workspace import Workspace, as_workspace

if TYPE_CHECKING:
    from toolkit.embedding import Embedding

#: Projection methods and their default parameters.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "umap": {"n_neighbors": 15, "min_dist": 0.1},
    "pca": {},
}
PROJECTION_METHODS = tuple(DEFAULT_PARAMS)
#: Bump when the computation changes, so maps cached by older code are recomputed.
PROJECTION_VERSION = "1"
#: A map of more samples than this (a million) is fitted on a seeded sample of this many and places the
#: rest with the fitted transform: UMAP's fit grows faster than its transform, and PCA's needs a copy of all.
MAP_FIT_ROWS = 50_000


def _resolve_params(method: str, params: dict[str, Any] | None) -> dict[str, Any]:
    require(
        method in DEFAULT_PARAMS,
        f"unknown projection method {method!r}; choose one of: {', '.join(PROJECTION_METHODS)}",
    )
    given = dict(params or {})
    unknown = sorted(set(given) - set(DEFAULT_PARAMS[method]))
    require(
        not unknown,
        f"projection {method!r} has no parameter(s) {', '.join(unknown)}; "
        f"it takes {', '.join(DEFAULT_PARAMS[method]) or 'none'}",
    )
    resolved = {**DEFAULT_PARAMS[method], **given}
    if method == "umap":
        resolved["n_neighbors"] = int(resolved["n_neighbors"])
        resolved["min_dist"] = float(resolved["min_dist"])
        require(resolved["n_neighbors"] >= 2, f"n_neighbors must be at least 2, got {resolved['n_neighbors']}")
        require(0.0 <= resolved["min_dist"] <= 1.0, f"min_dist must be in [0, 1], got {resolved['min_dist']}")
    return resolved


def project(
    vectors: np.ndarray,
    method: str = "umap",
    *,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    fit_rows: int | None = None,
) -> np.ndarray:
    """Map N x d vectors to N x 2 float32 coordinates.

    Args:
        vectors: the embedding, one row per sample (finite values).
        method: ``umap`` (umap-learn; neighbourhoods kept, slow the first time because numba
            compiles it) or ``pca`` (the two leading principal components; instant).
        seed: fixes UMAP's layout (umap-learn then runs single-threaded) and PCA's solver.
        params: ``n_neighbors`` and ``min_dist`` for UMAP.
        fit_rows: fit the map on a seeded sample of at most this many rows and place the
            others with the fitted map's transform (a million points: UMAP's fit grows faster
            than its transform); ``None`` or a smaller N fits on every row, as always.
    """
    resolved = _resolve_params(method, params)
    x = np.asarray(vectors, dtype=np.float32)
    require(
        x.ndim == 2 and x.shape[0] >= 3 and x.shape[1] >= 2,
        f"need an N x d embedding with N >= 3 and d >= 2 to project, got shape {x.shape}",
    )
    require(bool(np.isfinite(x).all()), "the embedding holds NaN or infinite values; recompute it (samplesift embed)")
    sample = None
    if fit_rows is not None and len(x) > fit_rows:
        require(fit_rows >= 3, f"fit_rows must be at least 3, got {fit_rows}")
        sample = np.sort(np.random.default_rng(seed).choice(len(x), fit_rows, replace=False))
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed)
        if sample is None:
            return pca.fit_transform(x).astype(np.float32)
        pca.fit(x[sample])
        return np.concatenate([pca.transform(x[s : s + 65536]) for s in range(0, len(x), 65536)]).astype(np.float32)
    try:
        import umap
    except ImportError:
        raise SampleSiftError(
            "umap-learn is not installed; `pip install umap-learn`, or use the pca projection"
        ) from None
    neighbours = min(resolved["n_neighbors"], len(x) - 1)
    with warnings.catch_warnings():
        # "n_jobs overridden to 1 by setting random_state": expected, a seed is how maps stay reproducible.
        warnings.simplefilter("ignore", UserWarning)
        reducer = umap.UMAP(
            n_components=2, n_neighbors=neighbours, min_dist=resolved["min_dist"], random_state=seed, n_jobs=1
        )
        if sample is None:
            return np.asarray(reducer.fit_transform(x), dtype=np.float32)
        coords = np.zeros((len(x), 2), np.float32)
        coords[sample] = reducer.fit_transform(x[sample])
        rest = np.setdiff1d(np.arange(len(x)), sample)
        coords[rest] = reducer.transform(x[rest])
        return coords


def map_fit_rows(num_points: int) -> int | None:
    """The rows a map of ``num_points`` is fitted on: all (``None``) up to :data:`MAP_FIT_ROWS`, else a sample."""
    return MAP_FIT_ROWS if num_points > MAP_FIT_ROWS else None


def projection_key(
    embedding_fingerprint: str,
    method: str,
    seed: int,
    params: dict[str, Any] | None = None,
    fit_rows: int | None = None,
) -> str:
    """The cache key of a map: embedding fingerprint, method, resolved parameters, seed and fitted sample."""
    resolved = _resolve_params(method, params)
    spec = ",".join(f"{k}={resolved[k]!r}" for k in sorted(resolved))
    # Maps fitted on every row keep the key they always had (their cached files stay valid).
    sample = () if fit_rows is None else (f"fit_rows={int(fit_rows)}",)
    return fingerprint_bytes(PROJECTION_VERSION, embedding_fingerprint, method, spec, str(int(seed)), *sample)[:16]


@dataclass
class Projection:
    """A 2-d map of every training sample of an embedding.

    Attributes:
        coords: N x 2 float32, row i is training sample i.
        method: ``umap`` or ``pca``.
        params: the method's resolved parameters.
        seed: the seed it was computed with.
        embedding_fingerprint: fingerprint of the embedding it maps.
        path: the cached ``.npy`` file.
        compute_time_s: how long the computation took when it was made.
        fit_rows: the size of the seeded sample the map was fitted on (the rest placed by its
            transform), or ``None`` when it was fitted on every row (see :data:`MAP_FIT_ROWS`).
    """

    coords: np.ndarray
    method: str
    params: dict[str, Any]
    seed: int
    embedding_fingerprint: str
    path: Path
    compute_time_s: float
    fit_rows: int | None = None

    def describe(self) -> dict[str, Any]:
        """What a selection drawn on this map records about it."""
        return {
            "method": self.method,
            "params": self.params,
            "seed": self.seed,
            "embedding_fingerprint": self.embedding_fingerprint,
            "path": str(self.path),
        }


def _paths(embedding: Embedding, method: str, seed: int, params: dict[str, Any] | None, ws: Workspace) -> Path:
    key = projection_key(embedding.fingerprint, method, seed, params, map_fit_rows(embedding.vectors.shape[0]))
    return ws.projections_dir(str(embedding.manifest["dataset"]["key"])) / f"{method}-{key}.npy"


def find_projection(
    embedding: Embedding,
    method: str = "umap",
    *,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    workspace: Workspace | str | Path | None = None,
) -> Projection | None:
    """The cached map of ``embedding`` with these settings, or ``None`` if none was computed."""
    path = _paths(embedding, method, seed, params, as_workspace(workspace))
    record_path = path.with_suffix(".json")
    if not (path.is_file() and record_path.is_file()):
        return None
    try:
        record = read_json(record_path, "projection record")
        coords = np.load(path, allow_pickle=False)
    except (SampleSiftError, OSError, ValueError):
        return None  # a damaged cache entry is computed again
    if coords.shape != (embedding.vectors.shape[0], 2) or record.get("embedding_fingerprint") != embedding.fingerprint:
        return None
    return Projection(
        coords=coords,
        method=method,
        params=record["params"],
        seed=int(record["seed"]),
        embedding_fingerprint=embedding.fingerprint,
        path=path,
        compute_time_s=float(record["compute_time_s"]),
        fit_rows=record.get("fit_rows"),
    )


def load_or_compute_projection(
    embedding: Embedding,
    method: str = "umap",
    *,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    workspace: Workspace | str | Path | None = None,
) -> Projection:
    """The map of ``embedding``: from the workspace cache, else computed once and cached."""
    ws = as_workspace(workspace)
    cached = find_projection(embedding, method, seed=seed, params=params, workspace=ws)
    if cached is not None:
        return cached
    resolved = _resolve_params(method, params)
    start = time.perf_counter()
    fit_rows = map_fit_rows(embedding.vectors.shape[0])
    coords = project(embedding.vectors, method, seed=seed, params=resolved, fit_rows=fit_rows)
    elapsed = time.perf_counter() - start
    path = _paths(embedding, method, seed, resolved, ws)
    atomic_save_npy(path, coords)
    # The record is written last: a map without its record is never served.
    atomic_write_json(
        path.with_suffix(".json"),
        {
            "kind": "projection",
            "method": method,
            "params": resolved,
            "seed": int(seed),
            "embedding_fingerprint": embedding.fingerprint,
            "embedding": embedding.manifest.get("name"),
            "dataset": embedding.manifest["dataset"]["key"],
            "num_points": int(coords.shape[0]),
            "fit_rows": fit_rows,
            "compute_time_s": elapsed,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "versions": versions(),
        },
    )
    return Projection(coords, method, resolved, int(seed), embedding.fingerprint, path, elapsed, fit_rows)


def stratified_subsample(labels: np.ndarray, max_points: int = 20_000, *, seed: int = 0) -> np.ndarray:
    """At most ``max_points`` sample indices (sorted), every class kept in proportion.

    All indices are returned when there are no more than ``max_points``. Per-class counts
    follow :func:`toolkit.selectors.class_quotas` (largest remainders), and the samples within
    a class are drawn uniformly at random with ``seed``.
    """
    labels = np.asarray(labels)
    require(max_points >= 1, f"max_points must be at least 1, got {max_points}")
    n = len(labels)
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    picked = []
    for cls, quota in class_quotas(labels, max_points).items():
        members = np.flatnonzero(labels == cls)
        picked.append(rng.choice(members, size=quota, replace=False))
    return np.sort(np.concatenate(picked)).astype(np.int64)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Boolean mask of the ``points`` (N x 2) inside ``polygon`` (M x 2 vertices, even-odd rule).

    The polygon is closed implicitly (last vertex to first). Crossing tests run edge by edge,
    vectorised over the points inside the polygon's bounding box only, so 50,000 points and a
    lasso of a few hundred vertices take milliseconds.
    """
    pts = np.asarray(points, dtype=np.float64)
    poly = np.asarray(polygon, dtype=np.float64)
    inside = np.zeros(len(pts), dtype=bool)
    if poly.ndim != 2 or len(poly) < 3 or not len(pts):
        return inside
    low, high = poly.min(axis=0), poly.max(axis=0)
    box = np.flatnonzero(np.all((pts >= low) & (pts <= high), axis=1))
    px, py = pts[box, 0], pts[box, 1]
    crossings = np.zeros(len(box), dtype=bool)
    x0, y0 = poly[-1]
    for x1, y1 in poly:
        if y0 != y1:
            straddles = (y1 > py) != (y0 > py)
            x_cross = x1 + (py - y1) * (x0 - x1) / (y0 - y1)
            crossings ^= straddles & (px < x_cross)
        x0, y0 = x1, y1
    inside[box] = crossings
    return inside


def points_in_box(points: np.ndarray, x_range: tuple[float, float], y_range: tuple[float, float]) -> np.ndarray:
    """Boolean mask of the ``points`` (N x 2) inside an axis-aligned box (edges included)."""
    pts = np.asarray(points, dtype=np.float64)
    (xa, xb), (ya, yb) = sorted(map(float, x_range)), sorted(map(float, y_range))
    return (pts[:, 0] >= xa) & (pts[:, 0] <= xb) & (pts[:, 1] >= ya) & (pts[:, 1] <= yb)
