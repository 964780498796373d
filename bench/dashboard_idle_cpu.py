"""Idle CPU of the served dashboard with one open tab (issue 13: target under 2 % of one core).

Starts ``streamlit run app.py`` with the repository's ``.streamlit/config.toml`` on a free
localhost port, opens the Data page in headless Chromium (Debian's, as the browser tests use),
waits until the page is idle, then samples the server process's CPU time (user + system,
from ``/proc``) over ``--seconds``. Usage::

    python bench/dashboard_idle_cpu.py [--seconds 60] [--workspace DIR]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("SAMPLESIFT_CHROMIUM", "/usr/bin/chromium"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workspace", default=None, help="default: a temporary folder")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    workspace = args.workspace or tempfile.mkdtemp(prefix="samplesift-idle-")
    port = free_port()
    env = {**os.environ, "SAMPLESIFT_WORKSPACE": workspace, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true"]
    command += ["--server.port", str(port)]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("streamlit did not start")
            time.sleep(0.3)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("h1:has-text('Data')", timeout=180_000)
            page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=180_000)
            time.sleep(5)  # let the first render's work finish
            start_cpu, start = cpu_seconds(server.pid), time.monotonic()
            time.sleep(args.seconds)
            used, wall = cpu_seconds(server.pid) - start_cpu, time.monotonic() - start
            browser.close()
    finally:
        server.terminate()
        server.wait(15)
    result = {
        "bench": "dashboard_idle_cpu",
        "seconds": round(wall, 1),
        "server_cpu_s": round(used, 3),
        "server_cpu_percent_of_one_core": round(100 * used / wall, 2),
        "target_percent": 2.0,
        "load_average": os.getloadavg(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
