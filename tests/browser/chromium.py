"""A small DevTools-protocol client for headless Chromium (Debian's chromium-headless-shell):
load a page, collect its console errors, uncaught exceptions and failed loads, measure it with
a script, and take a full-page screenshot. No dependency beyond aiohttp."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["BINARIES", "Page", "PageReport", "find_chromium", "open_page"]

BINARIES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """The first Chromium binary on PATH (TOUCHFLOW_CHROMIUM overrides), or None."""
    chosen = os.environ.get("TOUCHFLOW_CHROMIUM")
    if chosen:
        return shutil.which(chosen)
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageReport:
    """What went wrong while a page loaded, as the browser reported it."""

    errors: list[str] = field(default_factory=list)


class Page:
    """One tab, driven over a flattened DevTools session."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._events: dict[str, asyncio.Event] = {}
        self.session = ""
        self.report = PageReport()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            data = message.json()
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(RuntimeError(str(data["error"])))
                    else:
                        future.set_result(data.get("result", {}))
                continue
            self._on_event(data.get("method", ""), data.get("params", {}))

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        errors = self.report.errors
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", "")))
                            for a in params.get("args", []))
            errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append("exception: " + str(details.get("exception", {}).get(
                "description", details.get("text", ""))))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"log ({entry.get('source')}): {entry.get('text')} "
                          f"{entry.get('url', '')}")
        event = self._events.get(method)
        if event is not None:
            event.set()

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   timeout: float = 30.0) -> Any:
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        await self._ws.send_json(message)
        return await asyncio.wait_for(future, timeout)

    async def load(self, url: str, width: int, height: int = 900) -> None:
        """Set the viewport, navigate, and wait for the load event."""
        await self.send("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        loaded = self._events["Page.loadEventFired"] = asyncio.Event()
        await self.send("Page.navigate", {"url": url})
        await asyncio.wait_for(loaded.wait(), 30)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a script evaluated in the page."""
        result = await self.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (beyond the viewport) at `path`."""
        shot = await self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def open_page(binary: str) -> AsyncIterator[Page]:
    """A fresh headless browser (its own profile directory) with one tab; closed after."""
    profile = tempfile.mkdtemp(prefix="touchflow-chromium-")
    process = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = await asyncio.wait_for(asyncio.to_thread(_devtools_url, process), 30)
        async with aiohttp.ClientSession() as http, http.ws_connect(
                url, max_msg_size=256 * 1024 * 1024) as ws:
            page = Page(ws)
            try:
                target = await page.send("Target.createTarget", {"url": "about:blank"})
                attached = await page.send("Target.attachToTarget", {
                    "targetId": target["targetId"], "flatten": True})
                page.session = attached["sessionId"]
                for domain in ("Page", "Runtime", "Log"):
                    await page.send(f"{domain}.enable")
                yield page
            finally:
                await page.close()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        shutil.rmtree(profile, ignore_errors=True)


def _devtools_url(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    for line in process.stderr:
        match = re.search(r"DevTools listening on (ws://\S+)", line)
        if match:
            # Keep reading stderr so the browser never blocks on a full pipe.
            threading.Thread(target=_drain, args=(process.stderr,), daemon=True).start()
            return match.group(1)
    raise RuntimeError(f"chromium exited ({process.poll()}) before it listened")


def _drain(stream: Any) -> None:
    for _ in stream:
        pass
