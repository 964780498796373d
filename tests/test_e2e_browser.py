"""The dashboard in a real browser: Playwright driving Debian's Chromium against `streamlit run app.py`.

The test starts the server on a free localhost port, opens every page, draws a lasso on the
embedding map with the mouse, queues a short training run from the form and waits for it
to finish, switches the sidebar's embedding picker, opens the sample detail with a click on a
map point, refreshes the Selectors page (its budget comes back from the URL), and saves a
screenshot of each page. It prints the time to first render of each page (cold, then with
everything cached) and the time from releasing the lasso to the image grid, on digits and on a
capped real CIFAR-10 (built in the test's own temporary workspace from ``$SAMPLESIFT_CIFAR10``
or ``../shared/datasets/cifar10``; skipped with the reason when neither is there).

Screenshots go to a temporary folder, so a test run leaves the work tree clean; with
``SAMPLESIFT_UPDATE_SCREENSHOTS=1`` they replace the ones in ``assets/`` (used in the README).
Elements that show machine paths (the workspace field, saved-file messages) are masked.

Chromium comes from Debian (``apt-get install -y chromium``), not ``playwright install``;
the tests are marked ``e2e`` and skipped when ``/usr/bin/chromium`` is missing.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CHROMIUM
from playwright.sync_api import expect

from toolkit.data import ImageDataset
from toolkit.embedding import Embedding
from toolkit.encoders import get_encoder
from toolkit.runs import RunStore
from toolkit.selection import list_selections

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
#: Set to 1 to write the screenshots into assets/ (otherwise a temporary folder).
UPDATE_SCREENSHOTS = os.environ.get("SAMPLESIFT_UPDATE_SCREENSHOTS") == "1"
#: Text that would show a machine's paths in a screenshot.
MACHINE_PATH = re.compile(r"(/tmp/|/work/|/home/|/root/|/Users/|[A-Z]:\\)")
PAGES = {
    "data": "Data",
    "embeddings": "Embeddings",
    "dimensions": "Dimensions",
    "selectors": "Selectors",
    "train": "Train",
    "results": "Results",
    "export": "Export",
}
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}; apt-get install -y chromium"),
]


@pytest.fixture(scope="session")
def browser_context_args() -> dict[str, Any]:
    return {"viewport": {"width": 1440, "height": 960}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(
    session_workspace: Path, digits_embedding: Embedding, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`streamlit run app.py` on a free localhost port, on the session workspace."""
    port = _free_port()
    env = {**os.environ, "SAMPLESIFT_WORKSPACE": str(session_workspace), "PYTHONPATH": str(REPO)}
    env["SAMPLESIFT_THREADS"] = "1"  # the runs it starts: one torch thread is much faster on 2 loaded cores
    env.pop("SAMPLESIFT_DATA", None)
    log_path = tmp_path_factory.mktemp("streamlit") / "server.log"
    command = [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true"]
    command += ["--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    command += ["--server.fileWatcherType", "none"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"streamlit did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.3)
    yield url
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def open_page(page: Any, url: str, heading: str, timeout: float = 120_000) -> float:
    """Load ``url`` and return the seconds until the page's script finished and its title shows."""
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(f"h1:has-text('{heading}')", timeout=timeout)
    page.wait_for_selector(IDLE, timeout=timeout)
    return time.perf_counter() - start


def navigate(page: Any, title: str) -> float:
    """Click a page in the sidebar menu; return the seconds until it has rendered."""
    start = time.perf_counter()
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
    page.wait_for_selector(f"h1:has-text('{title}')")
    page.wait_for_selector(IDLE)
    return time.perf_counter() - start


def draw_lasso(page: Any, chart_key: str = "embedding_map", share: float = 0.22) -> None:
    """Drag a closed loop with the mouse over the middle of the map (its drag mode is lasso)."""
    area = page.locator(f".st-key-{chart_key} .nsewdrag").first
    area.scroll_into_view_if_needed()
    page.wait_for_timeout(1_500)  # let WebGL finish drawing the points first
    box = area.bounding_box()
    cx, cy = box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5
    r = min(box["width"], box["height"]) * share
    points = [(cx + r * math.cos(2 * math.pi * k / 24), cy + r * math.sin(2 * math.pi * k / 24)) for k in range(25)]
    page.mouse.move(*points[0])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x, y, steps=2)
    page.mouse.up()


def wait_for_selected(page: Any, timeout: float = 120_000) -> int:
    """Wait until the grid's heading reports a non-empty selection; return the count."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('h3')].some(h => /Selected: [1-9]/.test(h.textContent))",
        timeout=timeout,
    )
    page.wait_for_selector(IDLE, timeout=timeout)
    text = page.locator("h3", has_text="Selected:").first.text_content()
    return int(re.search(r"Selected: ([\d,]+)", text).group(1).replace(",", ""))


def loneliest_point(page: Any) -> tuple[int, float, float]:
    """The embedding map's point farthest from any other, as (sample index, x, y in page pixels).

    On digits every sample is plotted in index order, so a point's position is its sample index;
    the loneliest one is the one a click hits unambiguously.
    """
    page.locator(".st-key-embedding_map .nsewdrag").first.scroll_into_view_if_needed()
    page.wait_for_timeout(1_500)  # let WebGL finish drawing the points first
    return tuple(
        page.evaluate(
            """() => {
            const gd = document.querySelector('.st-key-embedding_map .js-plotly-plot');
            const trace = gd._fullData[0], xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            const box = gd.getBoundingClientRect();
            const xs = Array.from(trace.x, v => box.left + xa._offset + xa.l2p(v));
            const ys = Array.from(trace.y, v => box.top + ya._offset + ya.l2p(v));
            let best = 0, bestGap = -1;
            for (let i = 0; i < xs.length; i++) {
                let gap = Infinity;
                for (let j = 0; j < xs.length && gap > bestGap; j++) {
                    if (j !== i) gap = Math.min(gap, Math.hypot(xs[i] - xs[j], ys[i] - ys[j]));
                }
                if (gap > bestGap) { best = i; bestGap = gap; }
            }
            return [best, xs[best], ys[best]];
        }"""
        )
    )


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: assets/ with SAMPLESIFT_UPDATE_SCREENSHOTS=1, else a temporary folder."""
    return ASSETS if UPDATE_SCREENSHOTS else tmp_path_factory.mktemp("screenshots")


def screenshot(page: Any, folder: Path, name: str) -> Path:
    """Save the page; the workspace field and any text naming a machine path are masked."""
    folder.mkdir(exist_ok=True)
    path = folder / f"dashboard-{name}.png"
    page.wait_for_timeout(600)  # let plotly finish drawing
    masks = [page.get_by_label("Workspace"), page.get_by_text(MACHINE_PATH)]
    page.screenshot(path=str(path), mask=masks, mask_color="#eceef2")  # a quiet grey, like an empty field
    assert path.stat().st_size > 20_000  # a real page, not a blank one
    return path


def pick(page: Any, label: str, option: str, where: str = "stSidebar") -> None:
    """Choose ``option`` in the selectbox ``label`` (a click, then the option in its list) in the
    sidebar, or in the part of the page with test id ``where``."""
    page.wait_for_selector(IDLE)
    choice = page.get_by_role("option", name=option).first
    for _ in range(3):  # a rerun that redraws the widget closes its list: open it again
        page.get_by_test_id(where).get_by_label(label, exact=True).click()
        try:
            choice.wait_for(timeout=10_000)
            break
        except Exception:  # playwright's TimeoutError
            page.keyboard.press("Escape")
    choice.click()
    page.wait_for_selector(IDLE)


class Frames:
    """Sizes and times of the websocket messages the page sends (to time a selection event)."""

    def __init__(self, page: Any) -> None:
        self.sent: list[tuple[float, int]] = []
        page.on(
            "websocket", lambda ws: ws.on("framesent", lambda data: self.sent.append((time.perf_counter(), len(data))))
        )

    def first_after(self, start: float, min_bytes: int = 1_000) -> tuple[float, int]:
        """(seconds after ``start``, size) of the first message of at least ``min_bytes`` sent since ``start``."""
        for moment, size in self.sent:
            if moment >= start and size >= min_bytes:
                return moment - start, size
        return float("nan"), 0


def timed_lasso(page: Any, frames: Frames, share: float, timeout: float = 120_000) -> tuple[int, float, float, int]:
    """Draw a lasso; return (selected count, seconds to the grid, seconds until the event left the browser, bytes)."""
    draw_lasso(page, share=share)
    released = time.perf_counter()
    count = wait_for_selected(page, timeout)
    seconds = time.perf_counter() - released
    sent_after, size = frames.first_after(released)
    return count, seconds, sent_after, size


def test_every_page_a_lasso_and_a_training_run_in_the_browser(
    server: str,
    page: Any,
    session_workspace: Path,
    digits: ImageDataset,
    shots: Path,
    capsys: pytest.CaptureFixture,
    request: pytest.FixtureRequest,
    gain_runs: list[Path],
) -> None:
    frames = Frames(page)
    outside: list[str] = []  # the app works offline: nothing is fetched from another host (the favicon was)
    page.on("request", lambda r: None if r.url.startswith((server, "data:", "blob:")) else outside.append(r.url))
    cold = open_page(page, f"{server}/", "Data")  # the server's first page: it imports and loads everything
    order = [*list(PAGES)[1:], "data"]
    first = {name: navigate(page, PAGES[name]) for name in order}  # first visits compute the PCA map once
    cached = {name: navigate(page, PAGES[name]) for name in order}  # everything cached
    screenshot(page, shots, "data")
    navigate(page, "Dimensions")
    screenshot(page, shots, "dimensions")

    # Embeddings: lasso with the mouse, the grid shows the selection, save it.
    navigate(page, "Embeddings")
    count, lasso_seconds, sent_after, payload = timed_lasso(page, frames, share=0.22)
    assert 0 < count < digits.num_train
    grid_images = page.locator(".st-key-emb_grid [data-testid='stImage'] img").count()
    assert grid_images == min(count, 60)
    page.get_by_label("Selection name").fill("browser-lasso")
    page.get_by_role("button", name="Save as a named selection").click()
    page.get_by_text("Saved").first.wait_for(timeout=60_000)
    # "Saved" shows once the rerun that writes the manifest has begun; on a loaded machine the file
    # lands a moment later, so wait for the file itself.
    deadline = time.monotonic() + 60
    while "browser-lasso" not in (saved := {s.name: s for s in list_selections(digits, workspace=session_workspace)}):
        assert time.monotonic() < deadline, f"the lasso selection was never saved; saved: {sorted(saved)}"
        time.sleep(0.25)
    assert saved["browser-lasso"].size == count
    screenshot(page, shots, "embeddings")
    # Recolouring redraws the map: the selection stays (the page keeps it, not the chart).
    pick(page, "Colour by", "dimension", where="stMain")
    page.locator(".st-key-emb_dim").first.wait_for(timeout=60_000)
    page.wait_for_selector(IDLE)
    assert page.locator("h3", has_text="Selected:").first.text_content().startswith(f"Selected: {count:,} samples")
    assert "color=dimension" in page.url

    # A click on a real point of the map opens that sample in the detail view. Streamlit turns point
    # clicks off while the map drags a lasso: pick Pan in the map's toolbar first, as the page says.
    page.locator(".st-key-embedding_map .modebar-btn[data-title='Pan']").first.click()
    page.wait_for_selector(IDLE)
    sample, x, y = loneliest_point(page)
    page.mouse.click(x, y)
    page.locator("strong", has_text=f"Sample #{sample}").first.wait_for(timeout=60_000)
    page.wait_for_selector(IDLE)
    assert page.get_by_role("spinbutton", name="Sample index").input_value() == str(sample)
    assert f"sample={sample}" in page.url
    page.locator("strong", has_text=f"Sample #{sample}").first.scroll_into_view_if_needed()
    screenshot(page, shots, "detail")

    # Selectors: run two and compare; the budget is kept in the URL, so a refresh restores it.
    navigate(page, "Selectors")
    budget = page.get_by_role("spinbutton", name="Samples K")
    budget.fill("150")
    budget.press("Enter")
    page.wait_for_url(re.compile(r"[?&]k=150(&|$)"), timeout=60_000)
    page.wait_for_selector(IDLE)
    page.get_by_role("button", name="Run selectors").click()
    page.get_by_text("Selected images").first.wait_for(timeout=120_000)
    page.wait_for_selector(IDLE)
    assert page.get_by_text("Coverage", exact=True).count() == 1  # what `samplesift compare` prints
    screenshot(page, shots, "selectors")
    page.reload()
    page.wait_for_selector("h1:has-text('Selectors')")
    page.wait_for_selector(IDLE)
    restored = page.get_by_role("spinbutton", name="Samples K")
    deadline = time.monotonic() + 30  # a loaded machine may rerun the page once more after it looks idle
    while restored.input_value() != "150" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert restored.input_value() == "150" and "k=150" in page.url

    # Train: queue a short run from the form and watch it finish.
    before = {run.id for run in RunStore(session_workspace)}
    navigate(page, "Train")
    steps = page.get_by_role("spinbutton", name="Steps")
    steps.fill("40")
    steps.press("Enter")
    page.wait_for_selector(IDLE)
    page.get_by_role("button", name="Queue runs").click()
    page.get_by_text("Queued 1 run(s)").wait_for(timeout=60_000)
    new = [run for run in RunStore(session_workspace) if run.id not in before]
    assert len(new) == 1
    deadline = time.monotonic() + 180
    while new[0].status()["state"] != "finished":
        assert new[0].status()["state"] in ("queued", "running"), new[0].status()
        assert time.monotonic() < deadline, "the run did not finish in time"
        time.sleep(0.5)
    page.get_by_text("No active runs").wait_for(timeout=30_000)  # the page polls the run store
    page.locator(".st-key-train_loss_curves .scatterlayer .trace").first.wait_for(state="attached", timeout=30_000)
    page.locator(".st-key-train_loss_curves").first.scroll_into_view_if_needed()
    screenshot(page, shots, "train")
    navigate(page, "Results")
    page.locator(".st-key-results_fig5 .main-svg").first.wait_for(state="attached", timeout=30_000)  # Fig. 5
    # The gain over random (the first tab): its table, figure and learning curve, from gain_runs' runs.
    page.get_by_role("tab", name="Gain over random").click()
    for key in ("results_gain", "results_learning_curve"):
        page.locator(f".st-key-{key} .main-svg").first.wait_for(state="visible", timeout=30_000)
    page.get_by_text("autoencoder:k-means+balanced").first.wait_for(state="attached", timeout=30_000)
    screenshot(page, shots, "results")
    navigate(page, "Export")
    screenshot(page, shots, "export")

    assert not outside, outside[:5]

    # The sidebar's embedding picker: a second embedding, chosen there, changes the Dimensions page.
    pixels = get_encoder("pixels-pca", components=32).embed(digits, workspace=session_workspace, progress=False)
    # The shared workspace's newest embedding is every other test's default: remove this one afterwards.
    request.addfinalizer(lambda: shutil.rmtree(pixels.path, ignore_errors=True))
    navigate(page, "Dimensions")
    page.locator(".st-key-dim_view button", has_text="Fig. 4").first.click()
    page.locator(".st-key-fig4 .main-svg").first.wait_for(state="attached", timeout=60_000)
    page.wait_for_selector(IDLE)
    pick(page, "Embedding", "pixels-pca (pixels-pca")
    page.get_by_text("made by the pixels-pca encoder").wait_for(timeout=60_000)
    assert "embedding=pixels-pca" in page.url
    pick(page, "Embedding", "autoencoder (autoencoder")
    page.locator(".st-key-fig4 .main-svg").first.wait_for(state="attached", timeout=60_000)
    assert "embedding=autoencoder" in page.url

    # A refresh keeps the data set, its cap and the embedding (they live in the URL).
    page.goto(f"{server}/dimensions?source=digits&cap=40")
    page.wait_for_selector("h1:has-text('Dimensions')")
    page.wait_for_selector(IDLE)
    page.get_by_text("has no embedding yet").first.wait_for(timeout=60_000)  # the capped digits have none
    cap_field = page.get_by_role("spinbutton", name="Images per class, training and test (0 = all)")
    expect(cap_field).to_have_value("40", timeout=30_000)  # the field is drawn before the page's last run ends
    page.reload()
    page.wait_for_selector(IDLE)
    expect(cap_field).to_have_value("40", timeout=30_000)
    assert "cap=40" in page.url

    with capsys.disabled():
        print(
            f"\n[e2e digits] first page of a fresh server: {cold:.2f} s; time to first render by in-app navigation (s):"
        )
        print("  page        first visit  cached")
        for name in order:
            print(f"  {name:11s} {first[name]:11.2f} {cached[name]:7.2f}")
        print(
            f"[e2e digits] lasso to grid: {lasso_seconds:.2f} s for {count} of {digits.num_train} samples "
            f"(the browser sent the selection event after {sent_after:.2f} s, {payload / 1e3:.0f} kB)"
        )
        print(f"[e2e digits] load average: {os.getloadavg()}")


@pytest.fixture(scope="module")
def cifar_in_workspace(cifar_small: ImageDataset, session_workspace: Path) -> ImageDataset:
    """Real CIFAR-10 capped at 100 images per class, with a pixels-pca embedding, in the test's workspace."""
    get_encoder("pixels-pca").embed(cifar_small, workspace=session_workspace, progress=False)
    return cifar_small


@pytest.mark.cifar
def test_lasso_on_capped_real_cifar10(
    server: str,
    page: Any,
    cifar_in_workspace: ImageDataset,
    cifar_root: Path,
    shots: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    frames = Frames(page)
    # The path relative to the server's folder (the repository): no machine path in the URL or screenshot.
    spec = os.path.relpath(cifar_root, REPO)
    cold = open_page(page, f"{server}/embeddings?data={spec}&cap=100", "Embeddings", timeout=300_000)
    page.get_by_text("Selected: 0 samples").wait_for(timeout=300_000)
    assert page.get_by_text("every sample is plotted").count() == 1
    data_page = navigate(page, "Data")
    cached = navigate(page, "Embeddings")
    count, lasso_seconds, sent_after, payload = timed_lasso(page, frames, share=0.3, timeout=300_000)
    assert 0 < count < cifar_in_workspace.num_train
    screenshot(page, shots, "embeddings-cifar10")
    with capsys.disabled():
        print(
            f"\n[e2e cifar10 {cifar_in_workspace.num_train:,} points] first render {cold:.2f} s cold, "
            f"{cached:.2f} s cached (Data page {data_page:.2f} s); lasso to grid {lasso_seconds:.2f} s for "
            f"{count:,} samples (the browser sent the selection event after {sent_after:.2f} s, "
            f"{payload / 1e6:.1f} MB); load average {os.getloadavg()}"
        )
