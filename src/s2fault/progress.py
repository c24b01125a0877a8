"""Progress on stderr: which variant, which stage, elapsed time.

On a terminal one status line is redrawn every second; elsewhere (CI logs)
each stage change is one plain line, and nothing ticks.
"""

from __future__ import annotations

import sys
import threading
import time

_start = time.monotonic()
_state = {"text": "", "quiet": False}
_lock = threading.Lock()
_ticker: threading.Thread | None = None


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet


def _tty() -> bool:
    # Some harnesses (Avocado) replace stderr with objects that have no isatty().
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _elapsed() -> str:
    s = int(time.monotonic() - _start)
    return f"{s // 60:02d}:{s % 60:02d}"


def _draw() -> None:
    with _lock:
        if _state["text"]:
            sys.stderr.write(f"\r\033[K[{_elapsed()}] {_state['text']}")
            sys.stderr.flush()


def _tick() -> None:
    while True:
        time.sleep(1.0)
        _draw()


def stage(subject: str, what: str) -> None:
    """Announce that `subject` (a variant, a variant/mode cell) entered stage `what`."""
    if _state["quiet"]:
        return
    text = f"{subject}: {what}"
    if not _tty():
        print(f"[{_elapsed()}] {text}", file=sys.stderr, flush=True)
        return
    global _ticker
    _state["text"] = text
    if _ticker is None:
        _ticker = threading.Thread(target=_tick, daemon=True)
        _ticker.start()
    _draw()


def clear() -> None:
    """Erase the status line before normal output is printed."""
    if _tty() and _state["text"] and not _state["quiet"]:
        with _lock:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            _state["text"] = ""
