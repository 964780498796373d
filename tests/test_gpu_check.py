"""bench/gpu_check.py, the script a CUDA session runs first, cannot rot: its --smoke mode runs the same code here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"
QUIET = {"OMP_NUM_THREADS": "1", "SAMPLESIFT_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **QUIET},
        cwd=REPO,
        check=False,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script runs its real checks")
def test_without_cuda_it_says_so_in_one_line_and_exits_2() -> None:
    done = run()
    assert done.returncode == 2
    assert done.stdout.strip().count("\n") == 0 and "no CUDA GPU" in done.stdout


def test_smoke_runs_every_check_and_ends_with_one_json_record(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    done = run("--smoke", "--out", str(out))
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record == json.loads(out.read_text())
    assert record["smoke"] is True and record["failures"] == []
    for key in ("classifier_bf16_eager", "classifier_bf16_compiled"):
        run_figures = record[key]
        assert run_figures["precision"] == "bfloat16" and run_figures["images_per_s"] > 0
        assert isinstance(run_figures["paper_baseline_fits_30s"], bool)
    assert record["classifier_bf16_compiled"]["compile"] is True
    assert set(record["encoders"]) == {"contrastive", "autoencoder", "proxy"}
    assert record["selectors"]["all_same"] is True
    assert isinstance(record["paper_baseline_fits_30s"], bool)
    for key in ("machine", "versions", "date", "load_average_start", "load_average_end"):
        assert key in record


def test_dry_run_is_the_smoke_mode() -> None:
    assert "--dry-run" in run("--help").stdout
