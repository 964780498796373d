"""The README's benchmark table, generated from the committed records in docs/bench/*.json.

Each row of the table in README.md's "Benchmarks" section belongs to one bench script and
one record file (``docs/bench/<script>.json``, written by ``python bench/<script>.py --out``).
Where the record is committed, the whole row is rendered from it: no figure is typed by
hand. Where it is not (yet), the row is left as written and says that it is being
re-measured; ``tests/test_bench_docs.py`` skips it, naming the missing file. Usage::

    python bench/readme_table.py            # print the rows the committed records give
    python bench/readme_table.py --check    # exit 1 when a README row disagrees with its record
    python bench/readme_table.py --write    # rewrite those rows in README.md
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RECORDS = ROOT / "docs" / "bench"


def _source(name: str) -> str:
    return f"[`docs/bench/{name}.json`](docs/bench/{name}.json)"


def _context(r: dict[str, Any]) -> str:
    """Load average at the start and the date, as every row states them."""
    load = r.get("load_average_start") or [r.get("load_average", float("nan"))]
    return f"load average {load[0]:.1f}, {str(r.get('date', '?'))[:10]}"


def train_throughput(r: dict[str, Any]) -> tuple[str, str]:
    low, high = r["speedup_batch_per_repeat_range"]
    lrn_low, lrn_high = r["speedup_lrn_per_repeat_range"]
    what = (
        f"classifier training images/s, batch {r['batch']}, {r['threads']} threads, warm-up excluded, median of "
        f"{r['repeats']} repeats of {r['timed_steps']} timed steps, against the textbook port (torchvision dataset + "
        f"per-sample transforms + DataLoader with {r['workers']} workers, NCHW, `nn.BatchNorm2d` / "
        f"`nn.LocalResponseNorm`); the same augmentation on both sides ({r['augmentation']})"
    )
    measured = (
        f"default (batch-norm) model {r['ours_batch_images_per_s']:,.0f} img/s "
        f"({r['ours_batch_gflop_per_s']:.0f} GFLOP/s, {r['peak_fraction']:.0%} of the "
        f"{r['matmul_peak_gflop_per_s']:.0f} GFLOP/s matmul peak) vs {r['reference_batch_images_per_s']:,.0f}: "
        f"**{r['speedup_batch']:.2f}x** (per repeat {low:.2f}-{high:.2f}x); LRN model "
        f"{r['ours_lrn_images_per_s']:,.0f} img/s ({r['ours_lrn_gflop_per_s']:.0f} GFLOP/s) vs "
        f"{r['reference_lrn_images_per_s']:,.0f}: {r['speedup_lrn']:.2f}x (per repeat {lrn_low:.2f}-{lrn_high:.2f}x)"
    )
    return what, measured


def data_cache(r: dict[str, Any]) -> tuple[str, str]:
    what = (
        f"loading the {r['images']:,} CIFAR-10 images: first load (JPEG decode + cache) vs cached, "
        f"median of {r['repeats']}"
    )
    measured = (
        f"{r['first_load_s']:.1f} s first, **{r['cached_load_s']:.2f} s** cached ({r['speedup_cached_vs_first']:.0f}x)"
    )
    return what, measured


def selector_speed(r: dict[str, Any]) -> tuple[str, str]:
    s = r["selectors"]
    source = "SYNTHETIC" if r.get("synthetic") else "real CIFAR-10"
    what = f"every selector on {r['n']:,} x {r['dim']} {source} embeddings, K = {r['k']:,}"
    peer, scale = r.get("peer") or {}, r.get("scale")
    if peer.get("n"):
        what += f"; apricot at N = {peer['n']:,}"
    if scale:
        what += f"; {scale['n']:,}-row scale"
    shown = []
    for method, label in (("topk-activation", "top-k activation"), ("k-center", "k-center")):
        if "seconds" in s.get(method, {}):
            seconds = s[method]["seconds"]
            shown.append(f"{label} {seconds:.3f} s" if seconds < 1 else f"{label} {seconds:.2f} s")
    if "seconds" in s.get("facility-location", {}):
        fl = s["facility-location"]
        shown.append(f"facility location {fl['seconds']:.1f} s / {fl['peak_rss_mb']:,.0f} MB")
    if "seconds" in s.get("k-means", {}):
        shown.append(f"k-means {s['k-means']['seconds']:.1f} s")
    measured = ", ".join(shown)
    if peer.get("n"):
        fl, fb = peer["facility_location"], peer["feature_based"]
        measured += (
            f"; against apricot at the same objective (facility location, feature-based): "
            f"**{fl['time_ratio_warm']:.1f}x** and **{fb['time_ratio_warm']:.1f}x** faster warm (compiled), "
            f"{fl['time_ratio_cold']:.0f}x and {fb['time_ratio_cold']:.0f}x cold (its first fit compiles numba kernels)"
        )
    return what, measured + "; see [docs/selectors.md](docs/selectors.md)"


def encoder_throughput(r: dict[str, Any]) -> tuple[str, str]:
    encoders = r["encoders"]
    repeats = {e["repeats"] for e in encoders.values()}
    what = (
        f"encoder training images/s and GFLOP/s of each Task's `train_step` (warm-up excluded, median of "
        f"{'/'.join(str(n) for n in sorted(repeats))}, {r['threads']} threads), FLOPs counted by torch's "
        "FlopCounterMode"
    )
    parts = []
    for name, e in encoders.items():
        views = ", two views per image" if e.get("views_per_image", 1) == 2 else ""
        parts.append(
            f"{name} {e['images_per_s']:,.0f} img/s ({e['gflop_per_s']:.1f} GFLOP/s, batch {e['batch']}{views})"
        )
    return what, "; ".join(parts)


def gpu_check(r: dict[str, Any]) -> tuple[str, str]:
    cuda, selectors = r.get("cuda") or {"name": "the CPU (smoke)", "cuda_version": "none"}, r["selectors"]
    tests = r.get("device_tests", {}).get("summary", "not run (--with-tests)")
    what = (
        f"the GPU check on {cuda['name']} (CUDA {cuda['cuda_version']}, torch {r['versions']['torch']}): the "
        "classifier in bf16 eager and compiled, batch 1,024, warm-up and compilation excluded; each encoder's "
        f"training step; every selector on CUDA against the CPU (N = {selectors['same_n']:,}), then timed at "
        f"{selectors['timed_n']:,} x 216, K = {selectors['timed_k']:,}; tests/test_device_paths.py"
    )
    eager, compiled = r["classifier_bf16_eager"], r["classifier_bf16_compiled"]
    same = [name for name, equal in selectors["same_picks_as_cpu"].items() if equal]
    near = ", ".join(f"{name} {share:.1%}" for name, share in selectors["overlap_where_different"].items())
    slowest = max(selectors["seconds"].items(), key=lambda item: item[1])
    fits = "fits" if r["paper_baseline_fits_30s"] else "does not fit"
    measured = (
        f"{'all checks passed' if not r['failures'] else 'FAILED: ' + ', '.join(r['failures'])}; classifier "
        f"{eager['images_per_s']:,.0f} img/s eager, {compiled['images_per_s']:,.0f} compiled (compiling took "
        f"{compiled['warmup_and_compile_s']:.1f} s); the paper's baseline (10,000 steps of 1,024) ~"
        f"{r['paper_baseline_estimate_s']:.1f} s at the better rate: it {fits} in 30 s; encoders "
        + ", ".join(f"{name} {e['images_per_s']:,.0f} img/s" for name, e in r["encoders"].items())
        + f"; selectors: {len(same)} of {len(selectors['same_picks_as_cpu'])} pick exactly what the CPU picks, the "
        f"others share {near} of the CPU's picks (floating-point near-ties); slowest at 50,000: {slowest[0]} "
        f"{slowest[1]:.1f} s; device tests: {tests.split(' in ')[0]}"
    )
    return what, measured


RENDERERS: dict[str, Callable[[dict[str, Any]], tuple[str, str]]] = {
    "train_throughput": train_throughput,
    "data_cache": data_cache,
    "selector_speed": selector_speed,
    "encoder_throughput": encoder_throughput,
    "gpu_check": gpu_check,
}


def render_row(name: str, record: dict[str, Any]) -> str:
    """The README table row of bench/<name>.py, rendered from its record."""
    what, measured = RENDERERS[name](record)
    return f"| `bench/{name}.py` | {what} | {measured}; {_context(record)}; {_source(name)} |"


def row_prefix(name: str) -> str:
    return f"| `bench/{name}.py` |"


def readme_rows(text: str) -> dict[str, str]:
    """The benchmark table's rows in ``text``, by script name."""
    rows = {}
    for line in text.splitlines():
        for name in RENDERERS:
            if line.startswith(row_prefix(name)):
                rows[name] = line
    return rows


def load_record(name: str, folder: Path = RECORDS) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def check(text: str, folder: Path = RECORDS) -> dict[str, tuple[str, str]]:
    """Per script: ``("ok" | "no-record" | "no-row" | "smoke" | "differs", message)``."""
    rows = readme_rows(text)
    results = {}
    for name in RENDERERS:
        record = load_record(name, folder)
        if record is None:
            results[name] = ("no-record", f"docs/bench/{name}.json is not committed yet: the README row is unchecked")
        elif record.get("smoke"):
            results[name] = ("smoke", f"docs/bench/{name}.json is a smoke run (--quick), not a measurement")
        elif name not in rows:
            results[name] = ("no-row", f"README.md has no row for bench/{name}.py although its record is committed")
        else:
            expected = render_row(name, record)
            if rows[name] == expected:
                results[name] = ("ok", "matches its record")
            else:
                results[name] = (
                    "differs",
                    f"README row of bench/{name}.py disagrees with docs/bench/{name}.json\n"
                    f"  README:   {rows[name]}\n  expected: {expected}\n"
                    "  (run python bench/readme_table.py --write)",
                )
    return results


def write(path: Path = README, folder: Path = RECORDS) -> list[str]:
    """Rewrite the rows whose record is committed; returns the names rewritten."""
    text = path.read_text(encoding="utf-8")
    rows = readme_rows(text)
    changed = []
    for name in RENDERERS:
        record = load_record(name, folder)
        if record is None or record.get("smoke"):
            continue
        expected = render_row(name, record)
        if name in rows and rows[name] != expected:
            text = text.replace(rows[name], expected)
            changed.append(name)
        elif name not in rows:
            print(f"README.md has no row for bench/{name}.py; add a line starting with {row_prefix(name)}")
    if changed:
        from toolkit.artifacts import atomic_write_text

        atomic_write_text(path, text)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a row disagrees with its record")
    parser.add_argument("--write", action="store_true", help="rewrite the rows in README.md from the records")
    args = parser.parse_args()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if args.write:
        changed = write()
        print(f"rewrote {', '.join(changed)}" if changed else "README.md already matches the committed records")
        return
    results = check(README.read_text(encoding="utf-8"))
    for name, (status, message) in results.items():
        print(f"{name:20s} {status:9s} {message}")
    if not args.check:
        for name in RENDERERS:
            record = load_record(name)
            if record is not None:
                print(render_row(name, record))
    if args.check and any(status in ("differs", "no-row", "smoke") for status, _ in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
