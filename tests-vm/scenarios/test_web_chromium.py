"""The web pages (docs/specifications.md §7) as a phone shows them: headless Chromium
with a 390 x 844 CSS-pixel touch screen and JavaScript off.

Each page must lay out at the device width (a viewport meta tag; without one a
phone browser lays out 980 px and shrinks the text), never be wider than the
screen (no horizontal scrolling), and carry its text; the index page's QR code
must be on screen, square and large enough to scan. Screenshots go to the
test's temporary directory (kept with `cargo xtask e2e --keep`), never into the
repository.

Chromium is driven over the DevTools protocol on a pipe
(`--remote-debugging-pipe`: JSON messages ending in a NUL byte on file
descriptors 3 and 4), so nothing beyond the Python standard library is needed.
Skipped when no `chromium` is installed (Debian package `chromium`).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

# A common phone screen in CSS pixels, at 3 device pixels per CSS pixel.
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True}
# A QR code smaller than this (CSS px) is hard to scan from another phone.
MIN_QR = 160
PAGES = {
    "/": ["chatmail relay", "Delta Chat", "Get an account in Delta Chat"],
    "/info": ["Storage per account", "Messages deleted after", "Unused accounts deleted after"],
    "/privacy": ["What is stored", "No IP addresses", "What is deleted, and when"],
}
TIMEOUT = 30


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class Browser:
    """One headless Chromium and one page in it, spoken to over the DevTools pipe."""

    def __init__(self, binary: str, profile: Path):
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()
        # The browser expects the pipe on file descriptors 3 (in) and 4 (out).
        high = [os.dup(fd) for fd in (to_browser, from_browser)]

        def wire_fds():
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--disable-gpu",
                "--no-sandbox",
                "--no-first-run",
                "--remote-debugging-pipe",
                "--ignore-certificate-errors",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # The dup2 copies are inheritable; every other descriptor of ours is not.
            preexec_fn=wire_fds,
            close_fds=False,
        )
        for fd in (to_browser, from_browser, *high):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def close(self):
        self.process.kill()
        self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            assert time.monotonic() < deadline, "Chromium did not answer"
            chunk = os.read(self._from_browser, 1 << 16)
            assert chunk, "Chromium closed the DevTools pipe"
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Sends one command and returns its result (events seen meanwhile are kept)."""
        self._next_id += 1
        request = {"id": self._next_id, "method": method, "params": params}
        if session:
            request["sessionId"] = session
        os.write(self._to_browser, json.dumps(request).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            message = self._read_message(deadline)
            if message.get("id") == self._next_id:
                assert "error" not in message, (method, message["error"])
                return message["result"]
            self._events.append(message)

    def page(self, method: str, **params) -> dict:
        """A command to the page."""
        return self.call(method, self.session, **params)

    def wait_for(self, event: str):
        deadline = time.monotonic() + TIMEOUT
        while True:
            if any(e.get("method") == event for e in self._events):
                self._events = [e for e in self._events if e.get("method") != event]
                return
            self._events.append(self._read_message(deadline))

    def open(self, url: str):
        """Loads `url` as a phone with JavaScript off and waits for the load event."""
        self.page("Emulation.setDeviceMetricsOverride", **PHONE)
        self.page("Emulation.setTouchEmulationEnabled", enabled=True)
        self.page("Emulation.setScriptExecutionDisabled", value=True)
        self.page("Page.enable")
        self.page("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def box(self, selector: str) -> dict | None:
        """The border box (x, y, width, height in CSS px) of the first match, or None."""
        root = self.page("DOM.getDocument", depth=0)["root"]["nodeId"]
        node = self.page("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        if not node:
            return None
        quad = self.page("DOM.getBoxModel", nodeId=node)["model"]["border"]
        xs, ys = quad[0::2], quad[1::2]
        return {"x": min(xs), "y": min(ys), "width": max(xs) - min(xs), "height": max(ys) - min(ys)}

    def text(self) -> str:
        """The text of the page, from the accessibility tree (no script runs)."""
        nodes = self.page("Accessibility.getFullAXTree")["nodes"]
        return " ".join(str(n.get("name", {}).get("value", "")) for n in nodes if not n.get("ignored"))

    def screenshot(self, path: Path) -> tuple[int, int]:
        """A PNG of the whole page; returns its size in device pixels."""
        data = base64.b64decode(self.page("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
        path.write_bytes(data)
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture
def browser(tmp_path):
    binary = find_chromium()
    if not binary:
        pytest.skip("no chromium installed")
    browser = Browser(binary, tmp_path / "chromium-profile")
    yield browser
    browser.close()


@pytest.mark.parametrize("path", list(PAGES))
def test_page_fits_a_phone_screen_without_javascript(relay, browser, tmp_path, path):
    browser.open(f"https://{relay.host}:{relay.https_port}{path}")
    metrics = browser.page("Page.getLayoutMetrics")
    viewport, content = metrics["cssLayoutViewport"], metrics["cssContentSize"]
    assert viewport["clientWidth"] == PHONE["width"], f"laid out at {viewport['clientWidth']} px, not the device width"
    assert content["width"] <= viewport["clientWidth"], f"{content['width']} px wide: scrolls sideways"

    text = browser.text()
    for expected in PAGES[path]:
        assert expected in text, f"{expected!r} missing from {path}: {text[:500]}"

    qr = browser.box("svg.qr")
    if path == "/":
        assert qr, "no QR code on the index page"
        assert abs(qr["width"] - qr["height"]) < 1, qr
        assert MIN_QR <= qr["width"] and qr["x"] >= 0 and qr["x"] + qr["width"] <= PHONE["width"], qr
    else:
        assert qr is None

    shot = tmp_path / f"{path.strip('/') or 'index'}.png"
    width, height = browser.screenshot(shot)
    assert width == PHONE["width"] * PHONE["deviceScaleFactor"], (width, height)
    print(f"screenshot: {shot}")


def layout(browser, html: str) -> tuple[int, int, str]:
    """Layout viewport width, content width and text of an inline page on the phone."""
    browser.open("data:text/html," + urllib.parse.quote(html))
    metrics = browser.page("Page.getLayoutMetrics")
    return metrics["cssLayoutViewport"]["clientWidth"], metrics["cssContentSize"]["width"], browser.text()


def test_the_phone_check_catches_bad_pages_and_runs_no_script(browser):
    """The measurements above can fail: a page without a viewport tag, one wider
    than the screen, and a script that would add text are all seen as such."""
    viewport = '<meta name="viewport" content="width=device-width, initial-scale=1">'
    assert layout(browser, "<p>tiny</p>")[0] == 980
    width, content, _ = layout(browser, viewport + '<div style="width:800px">wide</div>')
    assert width != PHONE["width"] or content > width
    width, content, text = layout(browser, viewport + "<p>fine</p><script>document.body.append('ran')</script>")
    assert (width, content) == (PHONE["width"], PHONE["width"]) and "fine" in text and "ran" not in text
