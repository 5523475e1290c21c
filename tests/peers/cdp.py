#!/usr/bin/python3
"""Drive Debian's chromium (headless) through the Chrome DevTools Protocol
to check the status page: open it, see the sessions table, press play on a
cached title, and wait until the <video>'s currentTime passes a mark with no
error event.

Standard library only: the protocol goes over --remote-debugging-pipe
(NUL-terminated JSON on fds 3 and 4), so no WebSocket client is needed.
Prints one JSON line with what it saw; exits 0 when the video played past
the mark, 1 otherwise.
"""

import argparse
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time


class Browser:
    def __init__(self, binary, profile):
        # Our ends: we write commands to `to_browser`, read from `from_browser`.
        cmd_read, self.to_browser = os.pipe()
        self.from_browser, out_write = os.pipe()
        args = [
            binary,
            "--headless=new",
            "--remote-debugging-pipe",
            "--user-data-dir=" + profile,
            "--autoplay-policy=no-user-gesture-required",
            "--no-first-run",
            "--disable-gpu",
            "--mute-audio",
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # chromium refuses to run as root otherwise

        def fds():
            # The protocol's fixed descriptors: 3 reads commands, 4 writes
            # answers. Moved out of the way first, as either end may
            # itself be 3 or 4.
            high_read = fcntl.fcntl(cmd_read, fcntl.F_DUPFD, 10)
            high_write = fcntl.fcntl(out_write, fcntl.F_DUPFD, 10)
            os.dup2(high_read, 3)
            os.dup2(high_write, 4)

        self.proc = subprocess.Popen(
            args,
            preexec_fn=fds,
            # Kept open through exec (closing the others comes after fds()).
            pass_fds=(3, 4, cmd_read, out_write),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(cmd_read)
        os.close(out_write)
        self.buffer = b""
        self.next_id = 0

    def call(self, method, params=None, session=None, limit=30):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            while b"\0" not in self.buffer:
                chunk = os.read(self.from_browser, 65536)
                if not chunk:
                    raise RuntimeError("chromium closed the protocol pipe")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
        raise RuntimeError(f"{method}: no answer in {limit} s")

    def close(self):
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass
        self.proc.wait()


def evaluate(browser, session, expression):
    result = browser.call(
        "Runtime.evaluate",
        {"expression": expression, "returnByValue": True, "awaitPromise": True},
        session,
    )
    return result.get("result", {}).get("value")


def poll(browser, session, expression, limit):
    deadline = time.monotonic() + limit
    value = None
    while time.monotonic() < deadline:
        value = evaluate(browser, session, expression)
        if value:
            return value
        time.sleep(0.25)
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("url", help="the status page")
    parser.add_argument("--chromium", default="chromium")
    parser.add_argument("--play-past", type=float, default=3.0, help="seconds of video to see played")
    parser.add_argument("--session-path", help="a path the sessions table must list")
    parser.add_argument("--limit", type=float, default=40.0, help="seconds for each wait")
    args = parser.parse_args()

    seen = {}
    with tempfile.TemporaryDirectory(prefix="streamcache-chromium-") as profile:
        browser = Browser(args.chromium, profile)
        try:
            targets = browser.call("Target.getTargets")["targetInfos"]
            page = next(t["targetId"] for t in targets if t["type"] == "page")
            session = browser.call("Target.attachToTarget", {"targetId": page, "flatten": True})["sessionId"]
            browser.call("Page.navigate", {"url": args.url}, session)
            seen["sessions_table"] = bool(poll(
                browser, session,
                "document.querySelector('#sessions thead') !== null && document.querySelector('#sessions tbody tr') !== null",
                args.limit,
            ))
            if args.session_path:
                seen["session_listed"] = bool(poll(
                    browser, session,
                    f"[...document.querySelectorAll('#sessions tbody td')].some(td => td.textContent === {json.dumps(args.session_path)})",
                    args.limit,
                ))
            seen["play_button"] = bool(poll(browser, session, "document.querySelector('button.play') !== null", args.limit))
            evaluate(
                browser, session,
                "window.videoErrors = []; const v = document.getElementById('player');"
                "v.addEventListener('error', () => window.videoErrors.push(String(v.error && v.error.message)));"
                "document.querySelector('button.play').click(); true",
            )
            played = poll(
                browser, session,
                f"document.getElementById('player').currentTime > {args.play_past}"
                " ? document.getElementById('player').currentTime : 0",
                args.limit,
            )
            seen["current_time"] = played or evaluate(browser, session, "document.getElementById('player').currentTime")
            seen["src"] = evaluate(browser, session, "document.getElementById('player').currentSrc")
            seen["errors"] = evaluate(browser, session, "window.videoErrors")
        except Exception as e:  # reported, not raised: the test prints what was seen
            seen["failure"] = str(e)
        finally:
            browser.close()
    print(json.dumps(seen))
    ok = (
        seen.get("sessions_table")
        and seen.get("play_button")
        and seen.get("session_listed", True)
        and (seen.get("current_time") or 0) > args.play_past
        and seen.get("errors") == []
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
