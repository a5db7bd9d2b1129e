"""What the console tests, the console benchmark and the screenshot script share: a real
``facefleet serve`` on a free loopback port, and headless Debian Chromium for Selenium.

Imported by ``tests/web/conftest.py``, ``bench/bench_console.py`` and
``scripts/screenshots.py`` (which put ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from testkit import free_port

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@contextmanager
def serving(root: Path, log: Path | None = None, *, timeout: float = 60.0) -> Iterator[str]:
    """``facefleet serve`` for the workspace ``root`` on 127.0.0.1 (output to ``log``, or
    discarded); yields its base URL once ``/health`` answers, stops it afterwards. A server
    that exits or stays silent for ``timeout`` seconds raises RuntimeError with its log."""
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"}
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "facefleet.cli.main", "-w", str(root), "serve", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    finally:
        if log is not None:
            out.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                said = log.read_text(errors="replace")[-3000:] if log is not None else ""
                raise RuntimeError(f"facefleet serve did not start:\n{said}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextmanager
def chromium(window: str = "1400,1000", *extra_flags: str) -> Iterator[object]:
    """A Selenium driver for headless Debian Chromium with a fresh profile (removed after).
    The flags keep it off the network: this machine has none, and Chromium retries many
    connections at start-up without them."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        raise RuntimeError("chromium and chromium-driver are needed (scripts/setup.sh installs them)")
    profile = tempfile.mkdtemp(prefix="facefleet-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={window}",
        *extra_flags,
    ):
        opts.add_argument(flag)
    driver = None
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
