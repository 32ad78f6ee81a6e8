"""`python -m bake` and the `bake` console script.

Signal handlers go in on the first line, through the C module `_signal` (importable in microseconds;
`signal` builds its enums for milliseconds), before the CLI and with it torch and transformers are
imported: Ctrl-C during start-up exits 128+signum with one line, not a traceback. Once `cli.main`
runs it handles signals itself (`bake/interrupt.py`)."""

import _signal
import sys

_early: list = []
_NAMES = {getattr(_signal, n): n for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(_signal, n)}


def _early_handler(signum, frame):
    if not _early:
        _early.append(signum)
        sys.stderr.write(f"bake: stopped by {_NAMES.get(signum, signum)} while starting up\n")
        raise SystemExit(128 + signum)


for _s in _NAMES:
    _signal.signal(_s, _early_handler)


def run() -> int:
    started = False
    try:
        from .files import interrupt

        interrupt.install()
        from .cli import main

        started = True
        return main()
    except BaseException:
        received = sys.modules["bake.files.interrupt"].received if "bake.files.interrupt" in sys.modules else None
        if not started and not _early and received is not None:
            print(f"bake: stopped by {interrupt.name(received)} while starting up", file=sys.stderr)
            raise SystemExit(128 + received) from None
        raise


if __name__ == "__main__":
    raise SystemExit(run())
