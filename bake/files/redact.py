"""One redaction layer for everything bake prints: no secret reaches the terminal.

Errors from the Hub, a proxy or `datasets` can carry the request that failed: an `Authorization:
Bearer hf_...` header echoed in a response body, an endpoint URL with `user:password@` in it. bake
prints such messages in one line (and whole tracebacks with BAKE_DEBUG=1), so every byte written
to stdout and stderr while a command runs passes through `redact`: Hub tokens, bearer and basic
credentials, URL passwords, and the values of the environment's secret-looking variables
(`HF_TOKEN`, `*_TOKEN`, `*_SECRET`, `*_PASSWORD`, `*_API_KEY`, ...) are replaced by `***`.
"""

from __future__ import annotations

import io
import os
import re

MASK = "***"
_PATTERNS = [
    (re.compile(r"\bhf_[A-Za-z0-9]{8,}"), MASK),                          # Hugging Face tokens
    # Authorization values (a credential has a digit or base64 padding: "Basic arithmetic" stays)
    (re.compile(r"\b(Bearer|Basic|bearer)(\s+)(?=[A-Za-z0-9._~+/=-]*[0-9=])[A-Za-z0-9._~+/=-]{8,}"), r"\1\2" + MASK),
    (re.compile(r"(?i)\b((?:access_|auth_|api_)?token|password|secret|api_?key)(=|:\s*)[A-Za-z0-9._~+/=-]{8,}"),
     r"\1\2" + MASK),                                                    # token=..., "password": ...
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/@\s:]*:[^/@\s]*@"), r"\1" + MASK + "@"),  # scheme://user:pw@
]
# a variable named by one of these words (HF_TOKEN, AWS_SECRET_ACCESS_KEY, DB_PASSWORD; not TOKENIZERS_PARALLELISM)
_SECRET_NAME = re.compile(r"(?i)(^|_)(token|secret|passw(or)?d|api_?key|apikey|credentials?|auth)(_|$)")


def _secret_values() -> list[str]:
    """The values of environment variables whose names say they hold a secret (6 characters or more:
    shorter values would mask ordinary words)."""
    vals = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6
            and not v.isdigit() and v.lower() not in ("true", "false")}
    return sorted(vals, key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with every secret it holds replaced by ***."""
    for v in _secret_values():
        text = text.replace(v, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


class RedactingStream(io.TextIOBase):
    """A text stream that redacts each line before it reaches `raw` (a partial line waits in a buffer,
    so that a secret split across two writes is still seen whole). Progress bars' carriage returns
    end a piece too."""

    def __init__(self, raw):
        self.raw = raw
        self._pending = ""

    def write(self, s: str) -> int:
        self._pending += s
        cut = max(self._pending.rfind("\n"), self._pending.rfind("\r"))
        if cut >= 0:
            done, self._pending = self._pending[:cut + 1], self._pending[cut + 1:]
            self.raw.write(redact(done))
        return len(s)

    def flush(self) -> None:
        if self._pending:
            self.raw.write(redact(self._pending))
            self._pending = ""
        self.raw.flush()

    def isatty(self) -> bool:
        return self.raw.isatty()

    def fileno(self) -> int:
        return self.raw.fileno()

    @property
    def encoding(self):
        return getattr(self.raw, "encoding", "utf-8")

    def writable(self) -> bool:
        return True

    def __getattr__(self, name):  # anything else a library asks of a standard stream (buffer, errors, ...)
        return getattr(self.raw, name)


def install():
    """Route sys.stdout and sys.stderr through `RedactingStream`; returns what to pass to `uninstall`."""
    import sys

    previous = (sys.stdout, sys.stderr)
    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout)
    if not isinstance(sys.stderr, RedactingStream):
        sys.stderr = RedactingStream(sys.stderr)
    return previous


def uninstall(previous) -> None:
    import sys

    for s in (sys.stdout, sys.stderr):
        if isinstance(s, RedactingStream):
            s.flush()
    sys.stdout, sys.stderr = previous
