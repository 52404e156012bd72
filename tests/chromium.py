"""A headless Chromium driven over the DevTools protocol (aiohttp websocket), for the tests
that look at a page as a person would: the Label Studio review screen, the run report.

    with Browser(profile_dir) as browser:
        browser.set_cookie("sessionid", value, "http://127.0.0.1:8080")
        browser.goto("http://127.0.0.1:8080/projects/1/data?task=3")
        browser.wait_for("document.querySelector('textarea') !== null")
        height = browser.evaluate("document.querySelector('textarea').clientHeight")
        browser.screenshot(Path("/tmp/shot.png"))

Only Debian's `chromium` is needed (no driver, no download); `CHROMIUM` is None without it.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with one page; every call is synchronous."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 1000):
        self.profile, self.size = Path(profile), (width, height)
        self.loop = asyncio.new_event_loop()
        self.ids = itertools.count(1)

    def __enter__(self) -> Browser:
        self.profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        self.loop.run_until_complete(self._connect(f"http://127.0.0.1:{port}"))
        self.call("Page.enable")
        self.call("Runtime.enable")
        return self

    async def _connect(self, base: str) -> None:
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"{base}/json/list") as resp:
            pages = [t for t in await resp.json() if t["type"] == "page"]
        self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)

    def __exit__(self, *exc: Any) -> None:
        self.loop.run_until_complete(self._close())
        self.loop.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    async def _close(self) -> None:
        await self.ws.close()
        await self.session.close()

    async def _call(self, method: str, params: dict) -> dict:
        ident = next(self.ids)
        await self.ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads((await self.ws.receive(timeout=120)).data)
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def call(self, method: str, **params: Any) -> dict:
        return self.loop.run_until_complete(self._call(method, params))

    def set_cookie(self, name: str, value: str, url: str) -> None:
        self.call("Network.setCookie", name=name, value=value, url=url)

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, condition: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:  # a page still loading can have no body yet: not an answer, ask again
                if self.evaluate(f"Boolean({condition})"):
                    return
            except RuntimeError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"page never satisfied {condition}")
            time.sleep(0.25)

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            width, height = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        data = self.call("Page.captureScreenshot", **params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path
