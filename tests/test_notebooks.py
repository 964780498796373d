"""The notebooks: committed without outputs, and each runs top to bottom in smoke mode on digits.

Every notebook is executed once per session with nbclient (a real Jupyter kernel, the
notebook's own parameter cell, so the smoke defaults), in one shared temporary workspace and
in ``01`` ... ``04`` order, as a reader would run them. Plotly figures must be embedded in the
saved notebook (plotly.js inline, no CDN), and, where Chromium is installed, the notebook's HTML
export must draw every figure with the network blocked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import CHROMIUM

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ["01_embeddings", "02_selectors", "03_two_phase_training", "04_export"]
PLOTLY_JSON = "application/vnd.plotly.v1+json"


def test_every_notebook_is_there() -> None:
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs_and_a_smoke_parameter_cell(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count)
    ]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them before committing"
    parameters = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"
    assert "SMOKE = True" in parameters[0].source and 'DATA = "digits"' in parameters[0].source


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Path], nbformat.NotebookNode]]:
    """Run a notebook (once) in a fresh kernel; notebooks share one temporary workspace."""
    from nbclient import NotebookClient

    workspace = tmp_path_factory.mktemp("notebook-workspace")
    done: dict[Path, nbformat.NotebookNode] = {}

    def run(path: Path) -> nbformat.NotebookNode:
        if path not in done:
            notebook = nbformat.read(path, as_version=4)
            with pytest.MonkeyPatch.context() as env:  # the kernel inherits this process's environment
                env.setenv("SAMPLESIFT_WORKSPACE", str(workspace))
                env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
                client = NotebookClient(
                    notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
                )
                client.execute()  # raises CellExecutionError, with the cell and traceback, if any cell fails
            done[path] = notebook
        return done[path]

    yield run


def figure_outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [out for cell in notebook.cells for out in cell.get("outputs", []) if PLOTLY_JSON in out.get("data", {})]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode_with_embedded_figures(path: Path, executed) -> None:
    notebook = executed(path)
    errors = [out for cell in notebook.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors
    figures = figure_outputs(notebook)
    if path.stem != "04_export":
        assert figures, f"{path.name} shows no plotly figure"
    html = [out["data"].get("text/html", "") for out in figures]
    assert all("Plotly.newPlot" in h for h in html), "every figure needs an HTML rendering for saved notebooks"
    if figures:
        scripts = [
            out.get("data", {}).get("text/html", "") for cell in notebook.cells for out in cell.get("outputs", [])
        ]
        assert any("plotly.js v" in s for s in scripts), "plotly.js must be embedded in the notebook (offline)"
        assert not any('src="https://cdn.plot.ly' in s for s in scripts)


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} to open the saved HTML")
def test_saved_html_draws_every_figure_offline(executed, tmp_path: Path, page: Any) -> None:
    from nbconvert import HTMLExporter

    pages = {}
    for path in NOTEBOOKS:
        notebook = executed(path)
        if figure_outputs(notebook):
            body, _ = HTMLExporter().from_notebook_node(notebook)
            pages[path.stem] = (tmp_path / f"{path.stem}.html", len(figure_outputs(notebook)))
            pages[path.stem][0].write_text(body, encoding="utf-8")
    assert pages
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
    for name, (html, expected) in pages.items():
        page.goto(html.as_uri())
        plots = page.locator(".js-plotly-plot .main-svg").first
        plots.wait_for(timeout=30_000)
        drawn = page.evaluate(
            "[...document.querySelectorAll('.js-plotly-plot')].filter(d => d.querySelector('.main-svg')).length"
        )
        assert drawn == expected, f"{name}: {drawn} of {expected} figures drawn"
