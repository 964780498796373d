"""What every benchmark records beside its figures, and where it writes them.

Each ``bench/`` script ends with one JSON object on its last line of output; with ``--out``
it also writes that object to ``docs/bench/<name>.json`` (atomically), where the README's
benchmark table is checked against it (``bench/readme_table.py``, ``tests/test_bench_docs.py``).
Every record carries the machine, the load average before and after, the library versions
and the date, so a figure can be judged (and rerun) by someone else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DOCS_BENCH = ROOT / "docs" / "bench"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform's guess)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """Platform, CPU, core count, torch's threads and version, and the GPU if any."""
    import torch

    record: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name(0)
    return record


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(v, 2) for v in os.getloadavg()]


def utc_date() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def add_out_argument(parser: argparse.ArgumentParser, name: str) -> None:
    """``--out [PATH]``: write the JSON record to PATH (bare ``--out``: docs/bench/<name>.json)."""
    parser.add_argument(
        "--out",
        nargs="?",
        const=str(DOCS_BENCH / f"{name}.json"),
        default=None,
        metavar="PATH",
        help=f"also write the JSON record to PATH (bare --out: docs/bench/{name}.json, the committed record; "
        "only for real runs on a quiet machine)",
    )


def header(benchmark: str, *, smoke: bool) -> dict[str, Any]:
    """The record's common fields at the start of a run (call :func:`finish` at the end)."""
    from toolkit.artifacts import versions

    return {
        "benchmark": benchmark,
        "date": utc_date(),
        "smoke": smoke,
        "machine": machine(),
        "versions": versions(),
        "load_average_start": load_average(),
    }


def finish(figures: dict[str, Any], out: str | None) -> None:
    """Add the closing load average, print the record as the last line, write it to ``out`` if given."""
    from toolkit.artifacts import atomic_write_json, to_jsonable

    figures["load_average_end"] = load_average()
    if out:
        path = Path(out)
        if figures.get("smoke") and path.resolve().parent == DOCS_BENCH.resolve():
            sys.exit(f"refusing to write a smoke run's figures to {path}: docs/bench/ holds real measurements only")
        atomic_write_json(path, figures)
        print(f"wrote {path}", file=sys.stderr)
    print(json.dumps(to_jsonable(figures)))


def count_flops(step: Callable[[], Any]) -> int:
    """FLOPs of one call (forward and backward included), as torch's FlopCounterMode counts them.

    It counts matrix products and convolutions (2 per multiply-add), which is where nearly
    all of a CNN's arithmetic is; element-wise work (activations, norms, the optimizer) is
    not counted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())
