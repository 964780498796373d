"""The samplesift command line: the pipeline end to end, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from toolkit.cli import main
from toolkit.data import ImageDataset

REPO = Path(__file__).resolve().parents[1]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and modification time."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def pipeline_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace where the whole CLI pipeline has run once on digits."""
    workspace = tmp_path_factory.mktemp("cli")
    ws = ["--workspace", str(workspace)]
    assert main(["embed", *ws, "--epochs", "2", "--batch", "128", "--device", "cpu", "--quiet"]) == 0
    assert main(["select", *ws, "--method", "topk-activation", "--size", "120"]) == 0
    assert main(["select", *ws, "--method", "random", "--fraction", "0.1", "--seed", "2", "--name", "rand"]) == 0
    assert (
        main(
            [
                "train",
                *ws,
                "--selection",
                "topk-activation-k120-seed0",
                "--split",
                "0.5",
                "--steps",
                "20",
                "--batch",
                "32",
                "--evals",
                "1",
                "--device",
                "cpu",
                "--quiet",
                "--name",
                "half",
            ]
        )
        == 0
    )
    return workspace


def test_the_pipeline_writes_every_artifact(pipeline_workspace: Path, digits: ImageDataset, capsys) -> None:
    key_dir = pipeline_workspace / "datasets" / digits.key
    assert (key_dir / "embeddings" / "autoencoder" / "model.safetensors").exists()
    assert (key_dir / "selections" / "topk-activation-k120-seed0.json").exists()
    assert json.loads((key_dir / "selections" / "rand.json").read_text())["size"] == 144  # 10% of 1,437
    code, out, _ = run_cli(
        capsys, "runs", "--workspace", str(pipeline_workspace), "--format", "json", "--kind", "train"
    )
    assert code == 0
    (row,) = json.loads(out)
    assert row["status"] == "finished" and row["split"] == 0.5 and row["steps"] == 20 and row["name"] == "half"
    summary = json.loads((pipeline_workspace / "runs" / row["run_id"] / "summary.json").read_text())
    assert {"test_accuracy", "steps", "wall_time_s", "selection", "split", "seed"} <= set(summary)
    code, out, _ = run_cli(capsys, "runs", "--workspace", str(pipeline_workspace), "--data", "digits")
    assert code == 0 and row["run_id"] in out and "%" in out
    code, out, _ = run_cli(capsys, "runs", "--workspace", str(pipeline_workspace), "--format", "csv")
    assert out.splitlines()[0].startswith("run_id,name,kind,status")
    assert ",embed," in out and ",train," in out  # both kinds of run, each labelled


def test_reconstruct_writes_the_figure4_png(pipeline_workspace: Path, capsys, tmp_path: Path) -> None:
    out_png = tmp_path / "fig4.png"
    code, out, _ = run_cli(
        capsys, "reconstruct", "--workspace", str(pipeline_workspace), "--indices", "0,5,9", "--out", str(out_png)
    )
    assert code == 0 and "[0, 5, 9]" in out
    # three columns of 6x6 crops upscaled 4x (24 px) with 2 px gaps; rows: input, the 216
    # embedding values as a 15 x 15 grid of 1x1 channel maps, reconstruction
    assert Image.open(out_png).size == (3 * 24 + 2 * 2, 24 + 15 + 24 + 2 * 2)


def _bad_image_folder(root: Path) -> Path:
    for split in ("train", "test"):
        (root / split / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(root / split / "cat" / "ok.png")
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def bad_cases(workspace: Path, tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "empty").mkdir(exist_ok=True)
    (tmp / "flat" / "cat").mkdir(parents=True, exist_ok=True)
    _bad_image_folder(tmp / "corrupt")
    ws = ["--workspace", str(workspace)]
    return [
        (["select", *ws, "--data", str(tmp / "missing"), "--method", "random", "--size", "5"], "does not exist"),
        (["select", *ws, "--data", str(tmp / "empty"), "--method", "random", "--size", "5"], "no train/ and test/"),
        (["select", *ws, "--data", str(tmp / "flat"), "--method", "random", "--size", "5"], "no train/ and test/"),
        (["select", *ws, "--data", str(tmp / "corrupt"), "--method", "random", "--size", "1"], "not readable images"),
        (["select", *ws, "--method", "random", "--size", "0"], "--size must be between 1 and 1437"),
        (["select", *ws, "--method", "random", "--size", "1438"], "--size must be between 1 and 1437"),
        (["select", *ws, "--method", "random", "--fraction", "1.5"], "--fraction must be in (0, 1]"),
        (["select", *ws, "--method", "best-ever", "--size", "5"], "unknown selection method 'best-ever'"),
        (["train", *ws, "--split", "1.5", "--steps", "5", "--selection", "rand"], "--split must be between 0 and 1"),
        (["train", *ws, "--split", "0", "--steps", "0"], "--steps must be a positive"),
        (["train", *ws, "--split", "0.5", "--steps", "5"], "needs --selection"),
        (["train", *ws, "--split", "0.5", "--steps", "5", "--selection", "nope"], "no selection named 'nope'"),
        (["train", *ws, "--resume", "no-such-run"], "no run 'no-such-run'"),
    ]


def test_bad_input_gives_one_line_a_nonzero_exit_and_no_partial_artifact(
    pipeline_workspace: Path, capsys, tmp_path: Path
) -> None:
    before = snapshot(pipeline_workspace)
    for argv, message in bad_cases(pipeline_workspace, tmp_path):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, argv
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("samplesift: error: "), (argv, err)
        assert message in lines[0], (message, lines[0])
        assert snapshot(pipeline_workspace) == before, argv


def test_a_selection_from_another_dataset_is_refused(pipeline_workspace: Path, capsys, digits) -> None:
    foreign = pipeline_workspace / "datasets" / digits.key / "selections" / "rand.json"
    before = snapshot(pipeline_workspace)
    code, _, err = run_cli(
        capsys,
        "train",
        "--workspace",
        str(pipeline_workspace),
        "--max-per-class",
        "50",
        "--selection",
        str(foreign),
        "--split",
        "0.5",
        "--steps",
        "5",
    )
    assert code == 2 and "was made on data set" in err and "samplesift select --data digits --max-per-class 50" in err
    assert snapshot(pipeline_workspace) == before


def test_argument_errors_exit_nonzero_in_a_real_process(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "toolkit", "train", "--workspace", str(tmp_path), "--steps", "ten"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2 and "expected" not in result.stdout
    assert "invalid int value: 'ten'" in result.stderr
    assert not any(tmp_path.iterdir())
