"""Decode-once data loading: first (decoding) load vs cached load of an image-folder source.

The first load of a source decodes every file and writes the uint8 arrays to the workspace
cache; every later load re-checks the source fingerprint (every file's path, size and
mtime) and reads the arrays back. The issue's target: the cached 60,000 CIFAR-10 images load
in under 2 s. Usage::

    python bench/data_cache.py [--data PATH] [--repeats 3] [--out]
    python bench/data_cache.py --data PATH --max-per-class 5 --quick   # checks the script only

The last line printed is one JSON object with every figure (machine, load average, versions,
date); ``--out`` also writes it to docs/bench/data_cache.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmeta import ROOT, add_out_argument, finish, header

from toolkit.data import load_dataset


def main() -> None:
    default_data = os.environ.get("SAMPLESIFT_CIFAR10", str(ROOT.parent / "shared" / "datasets" / "cifar10"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_data)
    parser.add_argument("--repeats", type=int, default=3, help="cached loads; the figure is their median")
    parser.add_argument("--max-per-class", type=int, help="cap the images per class (smoke tests)")
    parser.add_argument("--quick", action="store_true", help="marks the record as a smoke run (not for docs/bench)")
    add_out_argument(parser, "data_cache")
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        sys.exit(f"no image folder at {args.data}; pass --data or set SAMPLESIFT_CIFAR10")
    figures = header("data_cache", smoke=args.quick or args.max_per_class is not None)
    load = figures["load_average_start"]
    print(f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at start; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as workspace:
        start = time.perf_counter()
        dataset = load_dataset(args.data, workspace=workspace, max_per_class=args.max_per_class)
        first = time.perf_counter() - start
        cached = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            again = load_dataset(args.data, workspace=workspace, max_per_class=args.max_per_class)
            cached.append(time.perf_counter() - start)
            assert again.fingerprint == dataset.fingerprint
    images = dataset.num_train + dataset.num_test
    print(
        f"{images} images from {args.data}: first load (decode + cache) {first:.1f} s, "
        f"cached load {statistics.median(cached):.2f} s (median of {args.repeats})"
    )
    figures.update(
        data=Path(args.data).name,  # the folder name only: no machine paths in committed records
        images=images,
        repeats=args.repeats,
        first_load_s=first,
        cached_load_s=statistics.median(cached),
        cached_load_all_s=cached,
        speedup_cached_vs_first=first / statistics.median(cached),
        load_average=figures["load_average_start"][0],
    )
    finish(figures, args.out)


if __name__ == "__main__":
    main()
