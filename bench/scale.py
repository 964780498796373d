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
``select_<method>`` random, top-k activation, k-means and facility location (``--selectors``
                    chooses others, ``all`` every one but ccs) on the pixels-pca embedding,
                    K = 0.432 % of N (the paper's 8.64 % of 50,000 = 4,320 at 1M), the
                    selection's ``info`` recorded; above 100,000 images the rules that need
                    neighbours search an inverted file, whose measured recall the step
                    reports (``neighbor_search``)
``export_csv``      the top-k selection written as CSV
``open_map_page``   the app as a user opens it (Streamlit's AppTest, the whole script with its
                    widgets): the Data page's first run (listing the folder, loading the cache),
                    the map page's first run (loading the embedding, fitting the 2-d PCA on a
                    sample of 50,000 and placing every point, plotting a stratified 20,000), a
                    rerun (what every click costs), and a lasso from the plotted points' lowest x
                    and y to their medians (the points inside found among all N, the grid of the
                    selection drawn);
                    the step's seconds are their sum, each is reported (``*_s``)

Usage::

    python bench/scale.py                         # N = 1,000,000 32x32 PNGs (hours on 2 cores)
    python bench/scale.py --n 20000 --folder /tmp/scale-20k
    python bench/scale.py --jpeg --n 50000        # 512x384 JPEGs, --image-size 64
    python bench/scale.py --smoke                 # 1,000 images: checks the script (CI)
    python bench/scale.py --folder F --workspace W --only-selection --selectors all  # after a run on W

The last line printed is one JSON object (``bench/benchmeta.py``); ``--out`` also writes it
to docs/bench/scale.json. The target (issue 15): every step's peak RSS under 8 GB at 1M.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import os
import resource
import shutil
import signal
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
    "streamlit.testing.v1",
    "plotly.graph_objects",
)
#: The selections issue 15's acceptance times (``--selectors`` chooses others).
ACCEPTANCE_SELECTORS = ("random", "topk-activation", "k-means", "facility-location")
CLASSES = 10
TARGET_PEAK_RSS_MB = 8 * 1024
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

    A step that fails is reported as ``{"error": its last line}`` and the run goes on; the
    record lists the failed steps and the script exits non-zero after writing it.

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
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=args.step_timeout)
        except subprocess.TimeoutExpired:  # the child is killed; the record says how long it was given
            print(f"step {step} stopped after {args.step_timeout} s", file=sys.stderr)
            return {"error": f"stopped after {args.step_timeout} s (--step-timeout)"}
        if done.returncode != 0:  # recorded, and the run goes on: the record says which steps failed
            print(f"step {step} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
        figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{step:26s} {figures['seconds']:9.2f} s  peak RSS {figures['peak_rss_mb']:8.0f} MiB", file=sys.stderr)
    return figures


def measure(step: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``step`` in this process: its seconds, this process's peak RSS, and the step's own figures.

    The modules a step uses are imported, and the data set loaded from the cache, before its
    clock starts (but the app's: opening it loads the data set).
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
        # the app lists the folder and loads the cache itself: that is part of opening it
        dataset = None if step == "open_map_page" else load_dataset(str(args.folder), **load)
        start = time.perf_counter()
        body = _select(step.removeprefix("select_")) if step.startswith("select_") else STEP_BODIES[step]
        extra = body(dataset, args)
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
        info = selection.manifest["info"]
        search = info.get("neighbor_search")  # the rules that need neighbours: an exact or an approximate search
        return {"k": len(selection.indices), "info": info, **({"neighbor_search": search} if search else {})}

    return body


def _export_csv(dataset: Any, args: argparse.Namespace) -> dict[str, Any]:
    from toolkit.export import export_selection
    from toolkit.selection import load_selection

    selection = load_selection(f"topk-activation-k{args.k}-seed0", dataset, workspace=args.workspace)
    path = export_selection(selection, dataset, Path(args.workspace) / "exports" / "topk.csv", "csv", overwrite=True)
    return {"csv_bytes": path.stat().st_size}


def _open_map_page(dataset: Any, args: argparse.Namespace) -> dict[str, Any]:
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=3600)
    app.query_params.update(data=str(args.folder), workspace=str(args.workspace), embedding="pixels-pca", map="pca")
    if args.image_size:
        app.query_params["imgsize"] = str(args.image_size)
    figures: dict[str, Any] = {}

    def timed(name: str, run: Any) -> None:
        start = time.perf_counter()
        run()
        figures[f"{name}_s"] = time.perf_counter() - start
        problems = [e.value for e in app.exception] + [e.value for e in app.error]
        if problems:
            sys.exit(f"the app's {name.replace('_', ' ')} failed: {problems}")

    timed("data_page_first", app.run)
    timed("map_first", lambda: app.switch_page("toolkit/dashboard/embeddings.py").run())
    timed("map_rerun", app.run)
    trace = json.loads(next(c for c in app.get("plotly_chart") if c.proto.id.endswith("embedding_map")).proto.spec)
    x, y = (_plotly_array(trace["data"][0][axis]) for axis in ("x", "y"))
    (x0, x1), (y0, y1) = (np.quantile(x, [0.0, 0.5]), np.quantile(y, [0.0, 0.5]))  # lowest to median
    lasso = {"xref": "x", "yref": "y", "x": [x0, x1, x1, x0], "y": [y0, y0, y1, y1]}
    app.session_state["embedding_map"] = {"selection": {"points": [], "point_indices": [], "box": [], "lasso": [lasso]}}
    timed("lasso", app.run)
    figures["plotted"] = len(x)
    figures["lasso_selected"] = int(app.subheader[0].value.split()[1].replace(",", ""))  # "Selected: N samples"
    return {**figures, "seconds_are": "the sum of data_page_first_s, map_first_s, map_rerun_s and lasso_s"}


def _plotly_array(value: Any) -> np.ndarray:
    """A plotly JSON array: a list, or a base64 typed array ``{dtype, bdata}``."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value)


STEP_BODIES = {
    "embed_pixels_pca": _embed_pixels_pca,
    "embed_autoencoder": _embed_autoencoder,
    "export_csv": _export_csv,
    "open_map_page": _open_map_page,
}


def plan(args: argparse.Namespace) -> list[str]:
    """The steps to run: every step with the chosen selectors, or (``--only-selection``) their selections alone."""
    selects = [f"select_{method}" for method in args.selectors]
    if args.only_selection:
        return selects
    return ["decode_cache", "embed_pixels_pca", "embed_autoencoder", *selects, "export_csv", "open_map_page"]


def selector_names(text: str) -> list[str]:
    """``--selectors``: comma-separated registry names, or ``all`` (every one but ccs, see the option's help)."""
    from toolkit.selectors import available

    names = [name for name in available() if name != "ccs"] if text == "all" else text.split(",")
    unknown = [name for name in names if name not in available()]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown selectors {', '.join(unknown)}; choose from {', '.join(available())}"
        )
    return names


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
    parser.add_argument(
        "--selectors",
        type=selector_names,
        default=list(ACCEPTANCE_SELECTORS),
        help="comma-separated selectors to time, or 'all': every registered one but ccs, which ranks by the proxy "
        "encoder's training-dynamics scores (a training run's, not the pixels-pca embedding's); default: "
        + ",".join(ACCEPTANCE_SELECTORS),
    )
    parser.add_argument(
        "--only-selection",
        action="store_true",
        help="only the selections, on a --workspace where this benchmark already ran (its pixels-pca embedding)",
    )
    parser.add_argument("--step-timeout", type=int, help="seconds a step may run before it is stopped and recorded so")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # a step's own process
    add_out_argument(parser, "scale")
    args = parser.parse_args()
    if args.step:  # one step, in the fresh process run_step started
        started = time.perf_counter()

        def stopped(*_: Any) -> None:  # stopped by hand (SIGTERM): the record says so, and after how long
            sys.exit(f"stopped from outside (SIGTERM) after {time.perf_counter() - started:.0f} s")

        signal.signal(signal.SIGTERM, stopped)
        print(json.dumps(measure(args.step, args)))
        return
    if "topk-activation" not in args.selectors and not args.only_selection:
        parser.error("--selectors must include topk-activation: the CSV export step writes its selection")
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
        steps = {step: run_step(step, args) for step in plan(args)}
    failed = [step for step, figures in steps.items() if "error" in figures]
    peak = max((s["peak_rss_mb"] for s in steps.values() if "error" not in s), default=0.0)
    figures.update(
        images=n,
        format="512x384 jpeg" if args.jpeg else "32x32 png",
        image_size=args.image_size,
        k=args.k,
        selectors=args.selectors,
        only_selection=args.only_selection,
        decode_workers=args.decode_workers,
        cpu_count=os.cpu_count(),
        generate_s=generated,
        steps=steps,
        peak_rss_mb=peak,
        target_peak_rss_mb=TARGET_PEAK_RSS_MB,
        within_target=peak < TARGET_PEAK_RSS_MB,
        failed_steps=failed,
    )
    finish(figures, args.out)
    if failed:
        sys.exit(f"{len(failed)} steps failed: {', '.join(failed)} (their errors are in the record)")


if __name__ == "__main__":
    main()
