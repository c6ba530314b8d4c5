"""The page at ``/`` in a real headless browser (Debian's chromium): it renders offline, lists
every operation of the OpenAPI document, and asks nothing of any host but the service.

The browser is driven over the DevTools protocol (aiohttp's websocket client, which BentoML
already brings), so every request the page makes is seen as the page makes it; chromium's
own calls home (sign-in, search preconnects) are not the page's and are not counted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import httpx
import pytest

pytestmark = pytest.mark.slow
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--window-size=1280,2400",
    "--remote-debugging-port=0",
]


class Page:
    """One browser tab over the DevTools protocol."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.requests: list[str] = []
        self._next = 0

    async def call(self, method: str, **params: object) -> dict:
        self._next += 1
        ident = self._next
        await self.socket.send_json({"id": ident, "method": method, "params": params})
        while True:
            message = json.loads((await self.socket.receive()).data)
            if message.get("method") == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
            if message.get("id") == ident:
                return message.get("result", {})

    async def settle(self, seconds: float) -> None:
        """Collect the page's requests for a while (Swagger UI fetches the document late)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                message = json.loads((await self.socket.receive(timeout=left)).data)
            except TimeoutError:
                return
            if message.get("method") == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])


async def _rendered(page: Page, url: str, paths: list[str], timeout: float = 120) -> str:
    """The page's DOM once Swagger UI has fetched the document and drawn every operation:
    polled, not a fixed wait (a busy machine renders in tens of seconds, a quiet one in one),
    then 2 s more of watching for requests to other hosts."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await page.settle(0.5)
        found = await page.call("Runtime.evaluate", expression="document.documentElement.outerHTML")
        dom = found["result"]["value"]
        done = f"{url}docs.json" in page.requests and all(f'data-path="{p}"' in dom for p in paths)
        if done or loop.time() > deadline:
            await page.settle(2)
            return dom


async def _visit(
    browser: str, url: str, profile: Path, paths: list[str]
) -> tuple[str, list[str], bytes]:
    process = await asyncio.create_subprocess_exec(
        browser, *FLAGS, f"--user-data-dir={profile}", "about:blank",
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        endpoint = None
        while endpoint is None:
            line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
            assert line, "chromium exited before its DevTools endpoint was up"
            found = re.search(r"ws://127\.0\.0\.1:(\d+)/", line)
            endpoint = found.group(1) if found else None
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{endpoint}/json/list") as targets:
                tab = next(t for t in await targets.json() if t["type"] == "page")
            async with session.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Network.enable")
                await page.call("Page.enable")
                await page.call("Page.navigate", url=url)
                dom = await _rendered(page, url, paths)
                shot = await page.call("Page.captureScreenshot", format="png")
                return dom, page.requests, base64.b64decode(shot["data"])
    finally:
        process.kill()
        await process.wait()


@pytest.fixture(scope="module")
def browser() -> str:
    if BROWSER is None:
        pytest.fail(
            "no chromium: install Debian's package `chromium` (apt-get install chromium); "
            "`make test` installs it when apt is available"
        )
    return BROWSER


def test_the_page_renders_offline_and_lists_every_endpoint(browser, service_url, tmp_path) -> None:
    html = httpx.get(service_url + "/", timeout=30).text
    assert "googletagmanager" not in html and "BentoML" not in html
    assert "https://" not in html and "http://" not in html  # nothing but this service
    paths = list(httpx.get(service_url + "/docs.json", timeout=30).json()["paths"])
    visit = _visit(browser, service_url + "/", tmp_path / "profile", paths)
    dom, requests, png = asyncio.run(visit)
    (tmp_path / "page.png").write_bytes(png)
    ours = urlsplit(service_url).netloc
    elsewhere = [r for r in requests if urlsplit(r).netloc not in (ours, "")]
    assert f"{service_url}/docs.json" in requests  # Swagger UI did load the document
    assert elsewhere == [], f"the page asked other hosts: {elsewhere}"
    assert "<title>Keras model serving" in dom and 'id="models"' in dom
    missing = [p for p in paths if f'data-path="{p}"' not in dom]
    assert not missing, f"operations the page does not list: {missing}"
    for model in ("digits", "flowers", "bank", "autoencoder"):
        assert f"/models/{model}/versions/1/card" in dom  # each model links its card
    assert len(png) > 10_000
