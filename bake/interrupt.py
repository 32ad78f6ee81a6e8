"""SIGTERM that cannot be lost: the handler records the signal, long loops check it.

Raising from a signal handler alone is not reliable: Python drops an exception raised inside a
`__del__`, and a native extension can turn it into another exception. So the handler both raises
and records; `check()` (called between shards, before the final rename and between prompts)
re-raises while a signal is recorded, and the CLI maps any exception to 128+signum then.
"""

from __future__ import annotations

import signal

received: int | None = None


def handler(signum, frame):
    global received
    received = signum
    raise SystemExit(128 + signum)


def install():
    """Install the handler; returns the previous one for `uninstall`."""
    global received
    received = None
    return signal.signal(signal.SIGTERM, handler)


def uninstall(previous):
    global received
    received = None
    signal.signal(signal.SIGTERM, previous)


def check():
    if received is not None:
        raise SystemExit(128 + received)
