"""The README's benchmark figures against the committed records (docs/bench/*.json), and the bench scripts' smoke runs.

Every row of the README's benchmark table belongs to a bench script; where its record
(``docs/bench/<script>.json``, written by ``--out``) is committed, the row must be exactly the
one ``bench/readme_table.py`` renders from it, so no figure in the table can drift from
what was measured. A record that is not committed yet skips its check, saying so. The
scripts themselves run here in their tiny ``--quick`` modes (never for figures), so they
and the table renderer cannot rot while no real record is committed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import benchmeta  # noqa: E402
import readme_table  # noqa: E402

QUIET = {"OMP_NUM_THREADS": "1", "SAMPLESIFT_THREADS": "1", "MKL_NUM_THREADS": "1"}


def start_script(script: str, *args: str, cwd: Path | None = None) -> tuple[str, subprocess.Popen[str]]:
    """Start bench/<script> (the smoke runs go side by side: each is mostly imports and start-up)."""
    process = subprocess.Popen(
        [sys.executable, str(BENCH / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **QUIET},
        cwd=cwd or REPO,
    )
    return script, process


def record_of(started: tuple[str, subprocess.Popen[str]], timeout: int = 600) -> dict[str, Any]:
    """Wait for a started script and return its last output line, the JSON record."""
    script, process = started
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, f"{script} failed:\n{stdout[-3000:]}\n{stderr[-3000:]}"
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(readme_table.RENDERERS))
def test_readme_row_matches_its_committed_record(name: str) -> None:
    status, message = readme_table.check(readme_table.README.read_text(encoding="utf-8"))[name]
    if status == "no-record":
        pytest.skip(message)
    assert status == "ok", message


def test_every_benchmark_row_names_its_record() -> None:
    rows = readme_table.readme_rows(readme_table.README.read_text(encoding="utf-8"))
    assert set(rows) == set(readme_table.RENDERERS), "every bench script with a record has a README row"
    for name, row in rows.items():
        assert f"docs/bench/{name}.json" in row, f"the README row of bench/{name}.py does not name its record"


def test_committed_records_are_measurements_with_their_context() -> None:
    records = sorted((REPO / "docs" / "bench").glob("*.json"))
    if not records:
        pytest.skip("no docs/bench/*.json committed yet (the real benchmarks have not been run on a quiet machine)")
    for path in records:
        record = json.loads(path.read_text(encoding="utf-8"))
        assert record.get("smoke") is False, f"{path.name} is a smoke run, not a measurement"
        for key in ("machine", "versions", "date", "load_average_start", "load_average_end"):
            assert key in record, f"{path.name} lacks {key}"


# --------------------------------------------------------------------------- the checker itself


@pytest.fixture(scope="module")
def smoke_records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Real records of each script's tiny --quick mode (figures meaningless, shapes real)."""
    tmp = tmp_path_factory.mktemp("bench")
    folder = tmp / "images"
    rng = np.random.default_rng(0)
    from PIL import Image

    for split in ("train", "test"):
        for label in ("cat", "dog"):
            (folder / split / label).mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / split / label / f"{i}.png")
    out = tmp / "data_cache.json"
    started = {
        # Each its own workspace: runs side by side must not share a cache being written.
        "encoder_throughput": start_script(
            "encoder_throughput.py", "--quick", "--threads", "1", "--workspace", str(tmp / "ws-encoder")
        ),
        "train_throughput": start_script(
            "train_throughput.py", "--quick", "--threads", "1", "--workspace", str(tmp / "ws-train")
        ),
        "selector_speed": start_script(
            "selector_speed.py",
            "--quick",
            "--threads",
            "1",
            "--methods",
            "random",
            "topk-activation",
            "--skip-peer",
            "--skip-scale",
        ),
        "data_cache": start_script(
            "data_cache.py", "--quick", "--data", str(folder), "--repeats", "1", "--out", str(out)
        ),
        "gpu_check": start_script("gpu_check.py", "--smoke"),
    }
    records = {name: record_of(process) for name, process in started.items()}
    assert json.loads(out.read_text()) == records["data_cache"]
    return records


def test_smoke_records_carry_machine_load_versions_and_date(smoke_records: dict[str, dict[str, Any]]) -> None:
    for name, record in smoke_records.items():
        assert record["benchmark"] == name
        assert record["smoke"] is True
        assert record["machine"]["cpu_count"] == os.cpu_count()
        assert len(record["load_average_start"]) == 3 and len(record["load_average_end"]) == 3
        assert {"torch", "numpy"} <= set(record["versions"])
        assert record["date"][:2] == "20"


def test_train_throughput_record_has_both_models_and_peak_fraction(smoke_records: dict[str, dict[str, Any]]) -> None:
    record = smoke_records["train_throughput"]
    assert set(record["speedup_vs_reference"]) == {"batch", "lrn"}
    assert record["peak_fraction"] > 0
    assert record["repeats"] == 1 and "no brightness" in record["augmentation"]


def test_encoder_throughput_record_has_every_encoder(smoke_records: dict[str, dict[str, Any]]) -> None:
    encoders = smoke_records["encoder_throughput"]["encoders"]
    assert set(encoders) == {"autoencoder", "contrastive", "proxy"}
    for figures in encoders.values():
        assert figures["images_per_s"] > 0 and figures["mflop_per_image"] > 0 and figures["gflop_per_s"] > 0
    # contrastive counts two views per image: per image, twice a single view's FLOPs
    assert encoders["contrastive"]["views_per_image"] == 2


@pytest.mark.parametrize("name", list(readme_table.RENDERERS))
def test_check_fails_when_the_readme_disagrees_and_write_fixes_it(
    name: str, smoke_records: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    record = {**smoke_records[name], "smoke": False}  # pretend, in a temporary folder only
    records = tmp_path / "records"
    records.mkdir()
    (records / f"{name}.json").write_text(json.dumps(record))
    readme = tmp_path / "README.md"
    readme.write_text(readme_table.README.read_text(encoding="utf-8"))
    assert readme_table.check(readme.read_text(), records)[name][0] == "differs"
    assert readme_table.write(readme, records) == [name]
    assert readme_table.check(readme.read_text(), records)[name] == ("ok", "matches its record")
    # one figure changed by hand is caught
    row = readme_table.render_row(name, record)
    edited = readme.read_text().replace(row, row.replace(" s", " s ", 1).replace("img/s", "img/s ", 1))
    assert readme_table.check(edited, records)[name][0] == "differs"
    # a smoke record is never accepted as the source of a figure
    (records / f"{name}.json").write_text(json.dumps(smoke_records[name]))
    assert readme_table.check(readme.read_text(), records)[name][0] == "smoke"


def test_a_smoke_run_cannot_write_into_docs_bench(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="smoke"):
        benchmeta.finish({"smoke": True}, str(benchmeta.DOCS_BENCH / "anything.json"))
    assert not (benchmeta.DOCS_BENCH / "anything.json").exists()
    benchmeta.finish({"smoke": True}, str(tmp_path / "x.json"))
    assert json.loads((tmp_path / "x.json").read_text())["smoke"] is True
