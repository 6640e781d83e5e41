"""Open a page in headless Chromium over the DevTools protocol (a pipe, no port): its requests, console errors,
load time, DOM facts and a screenshot. Used by the report's tests and benchmark; Chromium is not a dependency."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcn.leftovers import scratch_dir

# Where Debian, Ubuntu's snap, and Google's packages put the browser; VCN_CHROMIUM overrides.
_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/snap/bin/chromium", "/usr/bin/google-chrome")
# Everything that would make Chromium itself talk to the network or show first-run UI is off.
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--disable-component-update", "--disable-default-apps", "--disable-extensions", "--disable-sync",
          "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
          "--no-first-run", "--no-default-browser-check", "--mute-audio", "--hide-scrollbars",
          "--remote-debugging-pipe"]


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or None."""
    env = os.environ.get("VCN_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for c in _CANDIDATES:
        if Path(c).is_file():
            return c
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@dataclass
class PageCheck:
    url: str
    load_ms: float                                  # navigate -> load event, wall clock
    requests: list[str] = field(default_factory=list)        # every URL the page asked for, but itself
    network_requests: list[str] = field(default_factory=list)  # of those, the ones that are not data: URIs
    console_errors: list[str] = field(default_factory=list)
    facts: Any = None                               # the value of `expression`
    screenshot: bytes | None = None                 # PNG


class _Pipe:
    """DevTools protocol over Chromium's --remote-debugging-pipe (JSON messages ended by NUL on fds 3 and 4)."""

    def __init__(self, executable: str, profile: str, extra_flags: list[str]):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_fds() -> None:
            # In the child, before exec: put the pipe ends on fds 3 and 4, where Chromium looks for them. Both
            # are first copied to 100 and up, so moving one onto 3 or 4 cannot clobber the other.
            a = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 100)
            b = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 100)
            os.dup2(a, 3)  # os.dup2 makes the copies inheritable, so they survive exec
            os.dup2(b, 4)
            os.close(a)
            os.close(b)

        # close_fds=False: the parent's other descriptors are close-on-exec already (Python's default), and
        # closing "all but pass_fds" would also close 3 and 4, which only exist after wire_fds.
        self.proc = subprocess.Popen([executable, *_FLAGS, f"--user-data-dir={profile}", *extra_flags],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=wire_fds, close_fds=False)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self.events: "queue.Queue[dict]" = queue.Queue()
        self._replies: dict[int, dict] = {}
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._replies[-1] = {"error": {"message": "the browser closed the pipe"}}
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self.events.put(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._next_id += 1
        mid = self._next_id
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._replies:
                if -1 in self._replies:
                    raise RuntimeError(f"{method}: {self._replies[-1]['error']['message']}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{method}: no reply from the browser in {timeout} s")
                self._cond.wait(left)
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass


def _console_text(params: dict) -> str:
    parts = []
    for arg in params.get("args", []):
        parts.append(str(arg.get("value", arg.get("description", ""))))
    return " ".join(parts)


def check_page(path: str | Path, expression: str | None = None, screenshot: bool = False, width: int = 1200,
               height: int = 900, full_page: bool = False, timeout: float = 60.0,
               executable: str | None = None) -> PageCheck:
    """Load a local HTML file in headless Chromium and report what it requested, logged and shows.

    `expression` (JavaScript) is evaluated after the load event; its JSON value lands in `facts`.
    """
    executable = executable or find_chromium()
    if not executable:
        raise FileNotFoundError("no Chromium found; install it (Debian: apt-get install -y chromium) "
                                "or set VCN_CHROMIUM to its path")
    url = Path(path).resolve().as_uri()
    with scratch_dir("chromium") as profile:
        pipe = _Pipe(executable, profile, [])
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Network", "Runtime", "Log"):
                pipe.call(f"{domain}.enable", session=session)
            pipe.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                               "deviceScaleFactor": 1, "mobile": False},
                      session=session)
            check = PageCheck(url=url, load_ms=float("nan"))
            t0 = time.perf_counter()
            pipe.call("Page.navigate", {"url": url}, session=session)
            loaded_at = None
            deadline = time.monotonic() + timeout
            # Keep listening a moment after the load event: late console errors still count.
            while True:
                wait = deadline - time.monotonic() if loaded_at is None else loaded_at + 0.5 - time.monotonic()
                if wait <= 0:
                    break
                try:
                    ev = pipe.events.get(timeout=wait)
                except queue.Empty:
                    continue
                if ev.get("sessionId") != session:
                    continue
                method, params = ev.get("method"), ev.get("params", {})
                if method == "Page.loadEventFired" and loaded_at is None:
                    check.load_ms = (time.perf_counter() - t0) * 1000
                    loaded_at = time.monotonic()
                elif method == "Network.requestWillBeSent":
                    req = params.get("request", {}).get("url", "")
                    if req != url:
                        check.requests.append(req)
                        if not req.startswith("data:"):
                            check.network_requests.append(req)
                elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                    check.console_errors.append(_console_text(params))
                elif method == "Runtime.exceptionThrown":
                    details = params.get("exceptionDetails", {})
                    check.console_errors.append(details.get("exception", {}).get("description")
                                                or details.get("text", "exception"))
                elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                    check.console_errors.append(params["entry"].get("text", ""))
            if loaded_at is None:
                raise TimeoutError(f"{url} did not finish loading in {timeout} s")
            if expression:
                result = pipe.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                   session=session)
                if "exceptionDetails" in result:
                    raise RuntimeError(f"evaluating the check failed: {result['exceptionDetails'].get('text')}")
                check.facts = result.get("result", {}).get("value")
            if screenshot:
                params: dict[str, Any] = {"format": "png"}
                if full_page:
                    size = pipe.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
                    params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": size["width"],
                                                                     "height": size["height"], "scale": 1})
                shot = pipe.call("Page.captureScreenshot", params, session=session)
                check.screenshot = base64.b64decode(shot["data"])
            return check
        finally:
            pipe.close()
