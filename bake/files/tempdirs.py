"""Every temporary folder bake makes lives under one bake-owned root, and what a killed run left
there is swept by the next run.

`temp_dir(prefix)` makes `$TMPDIR/bake-<uid>/<prefix>-<pid>-<random>/` and holds an exclusive
`flock` on a `.lock` file inside it for as long as the folder is in use; it is removed on exit
(errors and signals included: bake's signal handlers unwind through it). A run killed with
SIGKILL cannot remove it, so `sweep()`, called when a command starts, removes every entry whose
lock nobody holds and whose process is gone (or that is older than a day): a lock held by a live
run is never taken from it.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import BakeError

LOCK = ".lock"
DAY = 24 * 3600


def root() -> Path:
    """bake's temp root for this user (created, mode 700)."""
    path = Path(tempfile.gettempdir()) / f"bake-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError as e:
        raise BakeError(f"cannot create bake's temporary folder {path} ({e.strerror or e}); set TMPDIR to a "
                        "writable folder") from None
    if not path.is_dir() or path.is_symlink():
        raise BakeError(f"{path} is not a folder bake can use for temporary files; remove it or set TMPDIR")
    return path


@contextmanager
def temp_dir(prefix: str):
    """A fresh folder under `root()`, locked while in use, removed on exit."""
    path = root() / f"{prefix}-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir(mode=0o700)
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep() -> list[Path]:
    """Remove what killed runs left under the temp root; returns what was removed. Never fails a command."""
    removed = []
    try:
        entries = list(root().iterdir())
    except (BakeError, OSError):
        return removed
    now = time.time()
    for entry in entries:
        try:
            pid = int(entry.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            pid = None
        try:
            if not entry.is_dir() or entry.is_symlink():
                continue
            fd = os.open(entry / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live run: left alone
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            if (pid is None or not _alive(pid) or pid == os.getpid()
                    or now - entry.stat().st_mtime > DAY):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        finally:
            os.close(fd)
    return removed
