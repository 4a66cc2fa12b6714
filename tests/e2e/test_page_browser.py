"""The page for people (/ui/) in a real browser: Debian's Chromium, headless, offline but for this server,
driven by Playwright (issue 33). A chat round trip streams "Paris" with no console error, Stop ends the
generation on the server, the pool page loads and unloads a model, and the page asks for the API key of a
server that has keys.

`make test` installs chromium (the Makefile's `chromium` target); without it the tests skip, except in CI
(CI=true), where a missing chromium is a failure."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import MODEL, RunningServer, start_server, stop_server
from tests.e2e.test_docs_browser import FLAGS, chromium

playwright_api = pytest.importorskip("playwright.sync_api")
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium()
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=executable, args=FLAGS[1:], headless=True)
        yield launched
        launched.close()


def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    """A fresh page (its own storage) at `url`, and the console errors and page errors it will have."""
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(url)
    return page, problems


def ask(page: Any, text: str) -> None:
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    page.fill("#prompt", text)
    page.click("#send")


def test_chat_streams_paris_and_keeps_the_conversation(browser: Any, server: RunningServer) -> None:
    page, problems = open_page(browser, server.base_url + "/")  # the address alone leads to the page
    assert page.url.endswith("/ui/")
    page.select_option("#model", "smollm2")
    ask(page, QUESTION)
    page.wait_for_selector(".message.assistant .stats", timeout=60_000)
    answer = page.inner_text(".message.assistant .content")
    assert "Paris" in answer
    stats = page.inner_text(".message.assistant .stats")
    assert "generated" in stats and "tokens/s" in stats
    page.reload()  # kept in the browser
    page.wait_for_selector(".message.assistant")
    assert "Paris" in page.inner_text(".message.assistant .content")
    assert page.inner_text("#conversation-list li.current span").startswith("What is the capital")
    assert problems == []
    page.context.close()


def test_stop_ends_the_generation_on_the_server(browser: Any, make_server: Callable[[str], RunningServer]) -> None:
    server = make_server('models:\n  tiny: {path: "{model}", n_ctx: 1024, n_parallel: 2}\n')
    page, problems = open_page(browser, server.base_url + "/ui/")

    def no_end_of_text(route: Any) -> None:  # only Stop can end this answer: the end tokens are banned
        body = json.loads(route.request.post_data)
        body["logit_bias"] = {"0": -100, "2": -100}
        route.continue_(post_data=json.dumps(body))

    page.route("**/v1/chat/completions", no_end_of_text)
    page.fill("#max-tokens", "900")
    ask(page, "Tell me a long story.")
    page.wait_for_function("document.querySelector('.message.assistant .content').innerText.length > 20",
                           timeout=60_000)
    assert any(slot["is_processing"] for slot in httpx.get(server.base_url + "/slots", timeout=10).json())
    page.click("#stop")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        slots = httpx.get(server.base_url + "/slots", timeout=10).json()
        if not any(slot["is_processing"] for slot in slots):
            break
        time.sleep(0.05)
    assert not any(slot["is_processing"] for slot in slots)  # the slot is free: the server stopped
    page.wait_for_selector(".message.assistant .stats")
    assert page.inner_text(".message.assistant .stats") == "stopped"
    assert problems == []
    page.context.close()


def test_pool_page_loads_and_unloads(browser: Any, make_server: Callable[[str], RunningServer]) -> None:
    server = make_server('models:\n  tiny: {path: "{model}", n_ctx: 256}\n')
    page, problems = open_page(browser, server.base_url + "/ui/#pool")
    row = 'tr[data-model="tiny"]'
    page.wait_for_selector(f"{row} td:nth-child(2):text-is('unloaded')")

    def loaded() -> bool:
        return bool(httpx.get(server.base_url + "/admin/pool", timeout=10).json()["models"][0]["loaded"])

    page.click(f"{row} button.load")
    page.wait_for_selector(f"{row} td:nth-child(2):text-is('loaded')", timeout=60_000)
    assert loaded()
    assert page.inner_text(f"{row} td:nth-child(3)").isdigit()  # the worker's pid
    page.click(f"{row} button.unload")
    page.wait_for_selector(f"{row} td:nth-child(2):text-is('unloaded')", timeout=60_000)
    assert not loaded()
    assert "model_loaded" in page.inner_text("#log")  # the server's own log lines
    assert problems == []
    page.context.close()


def test_the_page_asks_for_the_api_key(browser: Any, tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(f'models:\n  tiny: {{path: "{MODEL}", n_ctx: 512}}\n')
    server = start_server(config, tmp_path / "server.log", ["--api-key", "team-key"])
    try:
        page, _ = open_page(browser, server.base_url + "/ui/")
        page.wait_for_selector("#key-dialog[open]")
        page.fill("#key-input", "team-key")
        page.click("#key-save")
        ask(page, QUESTION)
        page.wait_for_selector(".message.assistant .stats", timeout=60_000)
        assert "Paris" in page.inner_text(".message.assistant .content")
        page.context.close()
    finally:
        stop_server(server)
