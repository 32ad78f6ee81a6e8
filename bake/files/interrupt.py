"""Signals that cannot be lost: SIGTERM, SIGINT (Ctrl-C) and SIGHUP (a closed terminal) all unwind.

Raising from a signal handler alone is not reliable: Python drops an exception raised inside a
`__del__`, and a native extension can turn it into another exception. So the handler both raises
and records; `check()` (called between shards, before the final rename and between prompts)
re-raises while a signal is recorded, and the CLI maps any exception to 128+signum then. A second
signal while the first unwinds is recorded and otherwise ignored, so that the cleanup (removing the
temp folder) is not cut short.
"""

from __future__ import annotations

import signal

SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGINT", "SIGHUP")) if s is not None)
received: int | None = None


def handler(signum, frame):
    global received
    if received is not None:  # already unwinding: let the cleanup finish
        return
    received = signum
    raise SystemExit(128 + signum)


def install() -> dict:
    """Install the handler for every signal in SIGNALS; returns the previous ones for `uninstall`."""
    global received
    received = None
    return {s: signal.signal(s, handler) for s in SIGNALS}


def uninstall(previous: dict):
    global received
    received = None
    for s, h in previous.items():
        signal.signal(s, h)


def check():
    if received is not None:
        raise SystemExit(128 + received)


def name(signum: int) -> str:
    return signal.Signals(signum).name
