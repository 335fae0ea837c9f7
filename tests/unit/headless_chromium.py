"""Debian's chromium for the report's browser test: find it, install it, render a page headless.

The test dependency is installed the way the Slurm packages are (slurm/devcluster.py): apt-get
when this is root on Debian/Ubuntu; where that is impossible the test skips with the command to
run, except under CI=true, where it fails. `python tests/unit/headless_chromium.py install
--best-effort` does the install ahead of the tests (a Makefile target can call it).

`render` runs one headless chromium on a file and returns the screenshot, the serialised DOM and
the page's console errors. Chromium writes console messages to its log (`--enable-logging=stderr`)
as `...:INFO:CONSOLE(line)] "text", source: URL (line)` (or `CONSOLE:line]` in newer builds);
uncaught exceptions and `console.error` are the ones a report must never produce.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = "chromium"
PROGRAMS = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/usr/local/bin", "/usr/sbin", "/sbin"])
# A console line in chromium's log; group 1 is everything after the source position.
CONSOLE_LINE = re.compile(r":CONSOLE[(:]\d+\)?\]\s*(.*)")
ERROR_MARKERS = ("Uncaught", "Error", "ERROR", "Failed to load", "Refused to")


class BrowserMissing(RuntimeError):
    """No chromium here and none could be installed; the message says how to install it."""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def find() -> str | None:
    for program in PROGRAMS:
        path = shutil.which(program, path=SEARCH_PATH)
        if path:
            return path
    return None


def install() -> str:
    """apt-get install chromium when missing (root only); returns the browser's path."""
    found = find()
    if found:
        return found
    apt = shutil.which("apt-get", path=SEARCH_PATH)
    command = f"apt-get install -y --no-install-recommends {PACKAGE}"
    if apt is None or os.geteuid() != 0:
        raise BrowserMissing(f"no chromium on PATH; as root on Debian/Ubuntu: {command}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "--no-install-recommends", PACKAGE]):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1200)
        if proc.returncode != 0:
            raise BrowserMissing(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    found = find()
    if not found:
        raise BrowserMissing(f"`{command}` succeeded but no chromium is on PATH ({', '.join(PROGRAMS)})")
    return found


def ensure_chromium() -> str:
    """The browser's path, installing it first when missing. Raises BrowserMissing."""
    return install()


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Rendered:
    screenshot: Path
    dom: str  # the DOM after load, as chromium serialises it
    console: list[str]  # every console message of the page
    console_errors: list[str]  # the ones that are errors (uncaught exceptions, console.error, failed loads)
    log: str  # chromium's whole stderr, for failure messages


def _run(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run chromium in its own process group, so a timeout ends its helper processes too."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise RuntimeError(f"chromium did not finish within {timeout_s:g} s: {err[-2000:]}") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def console_messages(log: str) -> list[str]:
    return [m.group(1).strip() for m in map(CONSOLE_LINE.search, log.splitlines()) if m]


def is_error(message: str) -> bool:
    return any(marker in message for marker in ERROR_MARKERS)


def render(browser: str, page: Path, screenshot: Path, *, width: int = 1280, height: int = 2400,
           timeout_s: float = 90.0) -> Rendered:
    """Open `page` headless: a screenshot of the first `width` x `height` pixels, the DOM, the console."""
    url = page.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        common = [
            browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-dev-shm-usage",
            "--hide-scrollbars", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
            f"--window-size={width},{height}", "--virtual-time-budget=5000",
        ]
        shot = _run([*common, f"--screenshot={screenshot}", url], timeout_s)
        dom = _run([*common, "--dump-dom", url], timeout_s)
    log = shot.stderr + dom.stderr
    if shot.returncode != 0 or dom.returncode != 0:
        raise RuntimeError(f"chromium exited with {shot.returncode}/{dom.returncode}: {log[-3000:]}")
    console = console_messages(dom.stderr)  # one load's messages (the screenshot load repeats them)
    return Rendered(screenshot=screenshot, dom=dom.stdout, console=console,
                    console_errors=[m for m in console if is_error(m)], log=log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("install",))
    parser.add_argument("--best-effort", action="store_true",
                        help="warn instead of failing when chromium cannot be installed (unless CI=true)")
    args = parser.parse_args(argv)
    try:
        print(f"chromium: {install()}")
    except (BrowserMissing, OSError, subprocess.SubprocessError) as exc:
        if args.best_effort and not in_ci():
            print(f"warning: {exc}; the report's browser test will be skipped", file=sys.stderr)
            return 0
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
