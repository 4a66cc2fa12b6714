"""The README's screenshots of the page (docs/page-chat.png, docs/page-pool.png), taken in Debian's
Chromium with Playwright against a server started here on the shipped models.yaml:

    .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium is missing: make chromium", file=sys.stderr)
        return 2
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "server", "--port", str(port), "--prompt-store-mib", "0"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1200, "height": 720})
            page.goto(url + "/ui/")
            page.wait_for_function("document.querySelectorAll('#model option').length > 0")
            for question in ("What is the capital of France?", "Write a Python function that adds two numbers."):
                page.fill("#prompt", question)
                page.click("#send")
                page.wait_for_function("document.body.dataset.streaming === 'no' && "
                                       "document.querySelectorAll('.message.assistant .stats').length > 0")
                time.sleep(0.5)
            page.screenshot(path=str(ROOT / "docs" / "page-chat.png"))
            page.goto(url + "/ui/#pool")
            page.wait_for_selector("#pool-table tbody tr")
            time.sleep(2.5)  # two snapshots: requests/s and tokens/s
            page.screenshot(path=str(ROOT / "docs" / "page-pool.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
