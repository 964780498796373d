"""Every step of the pipeline on an N-image folder, with the time and peak memory of each.

The folder is generated (synthetic, seeded, never committed): N images of 32x32 PNGs by
default, or 512x384 JPEGs with ``--jpeg`` (then decoded with ``--image-size 64``), in ten
classes (a class colour and a class stripe under per-image noise, so an embedding has
something to find), 1 % of each class in ``test/``. It goes to ``--folder`` (reused when it
already holds the same N, format and seed) or to a temporary folder that is removed after.

Each step runs in a fresh subprocess (``--smoke``: all in one), so its peak RSS (``VmHWM``)
is its own: the data set is loaded from the decode cache (memory-mapped) before the step's
clock starts, and the peak includes that load and Python, torch and the libraries. The steps:

``decode_cache``    the first load: parallel chunked decode into the memory-mapped cache (the
                    workers' own peak is reported beside, ``workers_peak_rss_mb``)
``embed_pixels_pca`` the pixels-pca encoder (PCA fitted on at most 50,000 images, the rest
                    projected in batches; quality figures included)
``embed_autoencoder`` autoencoder inference, streamed in batches (an untrained, seeded model:
                    inference costs the same; training is the train benchmark's subject)
``select_<method>`` random, top-k activation, k-means and facility location on the pixels-pca
                    embedding, K = 0.432 % of N (the paper's 8.64 % of 50,000 = 4,320 at 1M);
                    above 100,000 images facility location's k-NN graph comes from an inverted
                    file, whose measured recall the step reports (``neighbor_search``)
``export_csv``      the top-k selection written as CSV
``map_page``        the app's map data: a 2-d PCA fitted on a sample of 50,000 and applied to
                    every point, and the class-stratified sample of 20,000 it plots

Usage::

    python bench/scale.py                         # N = 1,000,000 32x32 PNGs (hours on 2 cores)
    python bench/scale.py --n 20000 --folder /tmp/scale-20k
    python bench/scale.py --jpeg --n 50000        # 512x384 JPEGs, --image-size 64
    python bench/scale.py --smoke                 # 1,000 images: checks the script (CI)

The last line printed is one JSON object (``bench/benchmeta.py``); ``--out`` also writes it
to docs/bench/scale.json. The target (issue 15): every step's peak RSS under 8 GB at 1M.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchmeta import add_out_argument, finish, header

#: What the steps import, imported before their clocks start (scikit-learn alone takes seconds on a busy
#: machine; ``versions()``, which every record calls, imports torchvision).
PRELOADED = (
    "sklearn.cluster",
    "sklearn.decomposition",
    "torchvision",
    "toolkit.encoders",
    "toolkit.encoders.autoencoder",
    "toolkit.export",
    "toolkit.projection",
    "toolkit.selection",
)
STEPS = (
    "decode_cache",
    "embed_pixels_pca",
    "embed_autoencoder",
    "select_random",
    "select_topk-activation",
    "select_k-means",
    "select_facility-location",
    "export_csv",
    "map_page",
)
CLASSES = 10
TARGET_PEAK_RSS_MB = 8 * 1024
MAP_POINTS = 20_000
#: The fewest images that give every class a test image (1 % of each class), and the smoke run's N.
SMOKE_N = 100 * CLASSES


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MiB (``VmHWM``; ``ru_maxrss`` carries a parent's peak over)."""
    with open("/proc/self/status", encoding="ascii") as handle:
        line = next(row for row in handle if row.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def generate(folder: Path, n: int, *, jpeg: bool, seed: int) -> float:
    """Write ``n`` synthetic images to ``folder`` (train/ and test/, ten classes) unless it holds them; seconds."""
    from PIL import Image

    marker = folder / "generated.json"
    plan = {"n": n, "jpeg": jpeg, "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()) == plan:
        return 0.0
    if folder.exists():
        shutil.rmtree(folder)
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    height, width = (384, 512) if jpeg else (32, 32)
    palette = rng.integers(40, 216, (CLASSES, 3))
    for i in range(n):
        label = i % CLASSES
        split = "test" if (i // CLASSES) % 100 == 99 else "train"  # 1 % of each class
        target = folder / split / f"class_{label}"
        target.mkdir(parents=True, exist_ok=True)
        noise = rng.integers(-40, 41, (height, width, 3))
        pixels = palette[label] + noise
        stripe = slice(label * height // CLASSES, (label + 1) * height // CLASSES)
        pixels[stripe] += 30
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        image.save(target / f"{i:07d}.{'jpg' if jpeg else 'png'}", quality=90)
    marker.write_text(json.dumps(plan))
    return time.perf_counter() - start


def run_step(step: str, args: argparse.Namespace) -> dict[str, Any]:
    """One step in a fresh process (in this one with ``--smoke``); its seconds and peak RSS, and what else it reports.

    A smoke run checks the script, so it saves the nine interpreter starts: its peaks are then
    this process's high-water mark so far, not each step's own.
    """
    if args.smoke:
        figures = measure(step, args)
    else:
        command = [sys.executable, __file__, "--step", step, "--folder", str(args.folder)]
        command += ["--workspace", str(args.workspace), "--k", str(args.k)]
        command += ["--image-size", str(args.image_size)] if args.image_size else []
        command += ["--decode-workers", str(args.decode_workers)] if args.decode_workers else []
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"step {step} failed:\n{done.stderr[-3000:]}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{step:26s} {figures['seconds']:9.2f} s  peak RSS {figures['peak_rss_mb']:8.0f} MiB", file=sys.stderr)
    return figures


def measure(step: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``step`` in this process: its seconds, this process's peak RSS, and the step's own figures.

    The modules a step uses are imported, and the data set loaded from the cache, before its
    clock starts.
    """
    for module in PRELOADED:
        importlib.import_module(module)
    from toolkit.data import load_dataset

    load = {"workspace": args.workspace, "image_size": args.image_size, "decode_workers": args.decode_workers}
    if step == "decode_cache":
        start = time.perf_counter()
        dataset = load_dataset(str(args.folder), **load)
        seconds = time.perf_counter() - start
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        extra = {"images": dataset.num_train + dataset.num_test, "image_shape": list(dataset.image_shape)}
        extra["workers_peak_rss_mb"] = children
        extra["cache_mb"] = sum(p.stat().st_size for p in Path(args.workspace).rglob("*.npy")) / 2**20
    else:
        dataset = load_dataset(str(args.folder), **load)
        start = time.perf_counter()
        extra = STEP_BODIES[step](dataset, args)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), **extra}


def _embed_pixels_pca(dataset: Any, args: argparse.Namespace) -> dict[str, Any]:
    from toolkit.encoders import get_encoder

    embedding = get_encoder("pixels-pca").embed(dataset, workspace=args.workspace, progress=False)
    # the PCA's own fit rows (at most 50,000), beside the quality figures (which name their own fit_rows)
    return {"dim": embedding.dim, "quality": embedding.quality, "pca_fit_rows": embedding.manifest["fit_rows"]}


def _embed_autoencoder(dataset: Any, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from toolkit.device import seeded
    from toolkit.encoders.autoencoder import embed_images
    from toolkit.models import Autoencoder

    with seeded(0):
        model = Autoencoder(dataset.channels, dataset.default_crop)
    start = time.perf_counter()
    vectors = embed_images(model, dataset.train_images, device=torch.device("cpu"))
    return {"dim": int(vectors.shape[1]), "images_per_s": len(vectors) / (time.perf_counter() - start)}


def _select(method: str) -> Any:
    def body(dataset: Any, args: argparse.Namespace) -> dict[str, Any]:
        from toolkit.selection import make_selection

        selection = make_selection(
            dataset, method, size=args.k, workspace=args.workspace, embedding="pixels-pca", diagnostics=False
        )
        search = selection.manifest["info"].get("neighbor_search")  # facility location's k-NN: exact or approximate
        return {"k": len(selection.indices), **({"neighbor_search": search} if search else {})}

    return body


def _export_csv(dataset: Any, args: argparse.Namespace) -> dict[str, Any]:
    from toolkit.export import export_selection
    from toolkit.selection import load_selection

    selection = load_selection(f"topk-activation-k{args.k}-seed0", dataset, workspace=args.workspace)
    path = export_selection(selection, dataset, Path(args.workspace) / "exports" / "topk.csv", "csv", overwrite=True)
    return {"csv_bytes": path.stat().st_size}


def _map_page(dataset: Any, args: argparse.Namespace) -> dict[str, Any]:
    from toolkit.embedding import load_embedding
    from toolkit.projection import load_or_compute_projection, stratified_subsample

    embedding = load_embedding(dataset, workspace=args.workspace, name="pixels-pca")
    projection = load_or_compute_projection(embedding, "pca", workspace=args.workspace)  # what the page calls
    shown = stratified_subsample(dataset.train_labels, MAP_POINTS, seed=0)
    return {"points": len(projection.coords), "plotted": len(shown)}


STEP_BODIES = {
    "embed_pixels_pca": _embed_pixels_pca,
    "embed_autoencoder": _embed_autoencoder,
    **{f"select_{m}": _select(m) for m in ("random", "topk-activation", "k-means", "facility-location")},
    "export_csv": _export_csv,
    "map_page": _map_page,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="images to generate (default 1,000,000)")
    parser.add_argument("--jpeg", action="store_true", help="512x384 JPEGs decoded with --image-size 64")
    parser.add_argument("--smoke", action="store_true", help="1,000 images: checks the script, not for docs/bench")
    parser.add_argument("--folder", type=Path, help="where the images go (reused if they match; default: a temp dir)")
    parser.add_argument("--workspace", type=Path, help="the workspace (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    parser.add_argument("--k", type=int, help="selection size (default: 0.432 %% of N, at least 10)")
    parser.add_argument("--image-size", type=int, help="--image-size for decoding (default: 64 with --jpeg)")
    parser.add_argument("--decode-workers", type=int, help="decode processes (default: the toolkit's)")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # a step's own process
    add_out_argument(parser, "scale")
    args = parser.parse_args()
    if args.step:  # one step, in the fresh process run_step started
        print(json.dumps(measure(args.step, args)))
        return
    if args.n < SMOKE_N and not args.smoke:
        parser.error(f"--n must be at least {SMOKE_N:,} (1 %% of each class is its test split); or use --smoke")
    n = SMOKE_N if args.smoke else args.n
    args.k = args.k or max(10, round(n * 0.00432))
    args.image_size = args.image_size or (64 if args.jpeg else None)
    figures = header("scale", smoke=args.smoke)
    with tempfile.TemporaryDirectory(prefix="samplesift-scale-") as scratch:
        args.folder = args.folder or Path(scratch) / "images"
        args.workspace = args.workspace or Path(scratch) / "workspace"
        generated = generate(args.folder, n, jpeg=args.jpeg, seed=args.seed)
        print(f"{n:,} images in {args.folder} (generated in {generated:.1f} s)", file=sys.stderr)
        steps = {step: run_step(step, args) for step in STEPS}
    peak = max(s["peak_rss_mb"] for s in steps.values())
    figures.update(
        images=n,
        format="512x384 jpeg" if args.jpeg else "32x32 png",
        image_size=args.image_size,
        k=args.k,
        decode_workers=args.decode_workers,
        cpu_count=os.cpu_count(),
        generate_s=generated,
        steps=steps,
        peak_rss_mb=peak,
        target_peak_rss_mb=TARGET_PEAK_RSS_MB,
        within_target=peak < TARGET_PEAK_RSS_MB,
    )
    finish(figures, args.out)


if __name__ == "__main__":
    main()
