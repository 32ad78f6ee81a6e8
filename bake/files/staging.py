"""How bake writes anything: lock the output path, stage into a hidden temp sibling, re-check, rename.

Every output (a baked folder, an ONNX folder, a GGUF file) goes through `staged()`:

1. the path is resolved (a symlink loop or a file where a folder must be is a clear error) and
   must not be, or hold, any input of the run (`protect`: the recipe's folder, the model, the
   artifacts, the data);
2. an advisory lock (`.<name>.bake-lock` beside it, `flock`) is held for the whole run, so two
   bakes to one path cannot race; the second is refused at once;
3. what is already there is replaced only with `force`, and only when bake wrote it: a folder
   holding the marker file `.bake-output`, or a file that a `refuse` callback accepts (an export
   recorded, with its sha256, in the folder's report);
4. the work happens in `.<name>.bake-tmp-<pid>`; before the rename the path is checked again
   (something created or changed there meanwhile stops the run and is left alone), then the temp
   is renamed into place (a replaced folder is swapped out first and put back if the swap fails).

Errors, SIGTERM/SIGINT/SIGHUP and Ctrl-C remove the temp; a SIGKILLed run's temp is removed by the
next run to the same path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

from ..errors import BakeError
from . import interrupt

MARKER = ".bake-output"
TMP_TAG = ".bake-tmp-"
LOCK_TAG = ".bake-lock"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve_path(path: str | Path, what: str = "path") -> Path:
    """An absolute path with symlinks resolved; a loop or an unreadable component is a BakeError."""
    try:
        return Path(path).expanduser().resolve(strict=False)
    except (RuntimeError, OSError) as e:  # RuntimeError: symlink loop (Python < 3.13)
        raise BakeError(f"{what} {path}: cannot resolve the path ({e}); a symlink loop?") from None


def write_marker(folder: Path, what: str) -> None:
    """Mark `folder` as written by bake's command `what` ("bake apply", "bake eval", ...), so that a
    later `--force` of the same command may replace it."""
    from .. import __version__

    (folder / MARKER).write_text(json.dumps({"written_by": f"bake {__version__}", "what": what}) + "\n")


def marker_of(path: Path) -> str | None:
    """The command that wrote folder `path` (its marker's `what`), "" for an unreadable marker, None
    when it holds none."""
    try:
        data = json.loads((path / MARKER).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return ""
    return str(data.get("what", "")) if isinstance(data, dict) else ""


def bake_folder_refusal(path: Path) -> str | None:
    """None when `path` is a folder bake wrote (it holds the marker), else why it is not."""
    return None if (path / MARKER).is_file() else f"it has no {MARKER} marker"


def own_output(what: str) -> Callable[[Path], str | None]:
    """The `refuse` rule of a command that writes folders: only a folder that the same command wrote
    may be replaced (`bake eval --force` never deletes a baked checkpoint)."""
    def refuse(path: Path) -> str | None:
        by = marker_of(path)
        if by is None:
            return f"it has no {MARKER} marker"
        return None if by == what else f"it was written by {by or 'an unknown command'}"
    refuse.command = what
    return refuse


def baked_folder_around(out: Path) -> Path | None:
    """The folder written by `bake apply` that `out` lies inside, if any."""
    for a in out.parents:
        if marker_of(a) == "bake apply":
            return a
    return None


def _fingerprint(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    marker = path / MARKER  # a folder's mtime changes when an entry is added or removed
    return (st.st_dev, st.st_ino, st.st_size if not path.is_dir() else None, st.st_mtime_ns,
            marker.stat().st_mtime_ns if path.is_dir() and marker.is_file() else None)


def check_target(out: Path, *, folder: bool, force: bool, protect: Iterable[Path] = (), around: Iterable[Path] = (),
                 refuse: Callable[[Path], str | None] = bake_folder_refusal, what: str = "output",
                 recorded_in: Path | None = None):
    """Refuse an output path whose writing would lose something bake did not write; returns a
    fingerprint of what is there now (None when nothing is).

    The run's protected set: `protect` holds its inputs (a file, or a folder and everything inside
    it: the model, data, artifacts), `around` the folders that may hold outputs but must never be
    replaced (the recipe's folder). No output may be, hold, or (for `protect`) lie inside one of them.
    No output may lie inside a folder that `bake apply` wrote, except in `recorded_in` (the folder whose
    manifest records it: an export): that folder's manifest would no longer match its files."""
    for p in protect:
        p = resolve_path(p)
        if out == p or out in p.parents or (p.is_dir() and p in out.parents):
            held = "is" if out == p else "holds" if out in p.parents else "is inside"
            raise BakeError(f"{what} {out} {held} {p}, an input of this run; bake never writes into its inputs "
                            "or replaces a folder holding them: choose another output path")
    for p in around:
        p = resolve_path(p)
        if out == p or out in p.parents:
            held = "is" if out == p else "holds"
            raise BakeError(f"{what} {out} {held} {p}, an input of this run; bake never replaces its inputs "
                            "or a folder holding them: choose another output path")
    baked = baked_folder_around(out)
    if baked is not None and baked != recorded_in:
        raise BakeError(f"{what} {out} is inside the baked folder {baked}, whose manifest would no longer match "
                        "its files (`bake verify` would fail): choose a path outside it")
    for a in [out.parent, *out.parent.parents]:
        if a.exists() or a.is_symlink():
            if not a.is_dir():
                raise BakeError(f"{what} {out}: {a} is not a folder; choose an output path under a folder")
            break
    _not_locked(out, what)
    if not (out.exists() or out.is_symlink()):
        return None
    if folder and not out.is_dir():
        raise BakeError(f"{what} {out} exists and is not a folder; choose another path")
    if not folder and out.is_dir():
        raise BakeError(f"{what} {out} is a folder; give a file path")
    if folder and not any(out.iterdir()):
        return _fingerprint(out)  # an empty folder: nothing to lose
    reason = refuse(out)
    if not force and not reason:
        raise BakeError(f"{what} {out} exists{' and is not empty' if folder else ''}; pass --force to replace it "
                        "(bake replaces only what it wrote)")
    if reason:  # said the first time: --force would not help
        raise BakeError(f"{what} {out} was not written by {getattr(refuse, 'command', 'bake')} ({reason}); --force "
                        "replaces only an earlier output of the same command: choose another path, or remove it yourself")
    return _fingerprint(out)


def preflight_space(out: Path, needed: int, what: str = "output") -> None:
    """Refuse before writing when the file system holding `out` has clearly too little room."""
    probe = next((a for a in [out, *out.parents] if a.is_dir()), None)
    if probe is None:
        return
    usage = shutil.disk_usage(probe)
    if usage.total and usage.free < needed:  # (pseudo file systems report a total of 0)
        raise BakeError(f"not enough space for {what} {out}: about {needed / 2**20:,.0f} MiB needed, "
                        f"{usage.free / 2**20:,.0f} MiB free on its file system; free some space or choose another path")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


@contextmanager
def replacing(dest: Path):
    """Yield a temp sibling of `dest` (a file or folder path, nothing created) for bake's own files (caches,
    the report); on a normal exit rename it into place, so a reader sees the old state or all of the new
    one. The temp is removed on any failure. (A user's output goes through `staged`, which also checks,
    locks and reports.)"""
    dest = Path(dest)
    tmp = dest.parent / f".{dest.name}{TMP_TAG}{os.getpid()}"
    _remove(tmp)
    try:
        yield tmp
        _swap(tmp, dest)
    finally:
        _remove(tmp)


def _files(entry: Path) -> dict[str, Path]:
    files = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
    return {"." if f == entry else str(f.relative_to(entry)): f for f in files}


def _stat(f: Path) -> list[int]:
    s = f.stat()
    return [s.st_size, s.st_mtime_ns]


def _seal(entry: Path) -> dict:
    """What a cache entry is sealed with: each file's sha256, and its size and mtime when sealed."""
    files = _files(entry)
    return {"files": {n: sha256_file(f) for n, f in files.items()}, "stat": {n: _stat(f) for n, f in files.items()}}


def _intact(entry: Path, seal: dict) -> bool:
    """Every file of the entry is the one sealed: the same size and mtime (not read again: a multi-GB
    dequantized model is used on every run), else the same sha256 (read). A cut or rewritten file
    differs in one or the other."""
    files, sealed = _files(entry), seal.get("files", seal)  # (a seal of an older bake: sha256 only)
    stat = seal.get("stat", {}) if "files" in seal else {}
    if set(files) != set(sealed):
        return False
    return all(stat.get(n) == _stat(f) or sha256_file(f) == sealed[n] for n, f in files.items())


def _seal_path(entry: Path) -> Path:
    return entry.parent / f".{entry.name}.sha256"


def cache_hit(entry: Path) -> bool:
    """True when the cache entry `entry` (a file or a folder) is there and every file in it is the one
    sealed when it was written (`_intact`); a truncated, changed or unsealed entry is removed (so the
    caller makes it again) and False returned."""
    if not (entry.exists() or entry.is_symlink()):
        return False
    try:
        seal = json.loads(_seal_path(entry).read_text())
        if _intact(entry, seal):
            if "stat" not in seal:  # sealed by an older bake: add the sizes and mtimes, so the next hit reads nothing
                with contextlib.suppress(OSError):
                    _write_seal(entry, _seal(entry))
            return True
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    _remove(entry)
    _remove(_seal_path(entry))
    return False


@contextmanager
def caching(entry: Path):
    """`replacing` for a cache entry: the temp is renamed into place with the sha256 of its files
    recorded beside it (written first: a reader never sees a new entry without its seal)."""
    with replacing(entry) as tmp:
        yield tmp
        _write_seal(entry, _seal(tmp))


def _write_seal(entry: Path, seal: dict) -> None:
    path = _seal_path(entry)
    side = path.parent / f"{path.name}{TMP_TAG}{os.getpid()}"
    side.write_text(json.dumps(seal))
    os.replace(side, path)


def clean_stale(out: Path) -> None:
    """Remove temp siblings of `out` left by runs that were killed (their pid is gone)."""
    for tmp in out.parent.glob(f".{out.name}{TMP_TAG}*"):
        try:
            os.kill(int(tmp.name.rsplit("-", 1)[1]), 0)
        except (ValueError, ProcessLookupError):
            _remove(tmp)
        except PermissionError:
            pass


def _not_locked(out: Path, what: str) -> None:
    """Fail fast, before any work, when another run holds the output's lock (`locked` re-checks later)."""
    path = out.parent / f".{out.name}{LOCK_TAG}"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        if holder == str(os.getpid()):
            return  # this run's own lock (`staged` re-checks the target while holding it)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BakeError(f"another bake (pid {holder}) is writing {what} {out}; wait for it to finish, "
                        "or choose another output path") from None
    finally:
        os.close(fd)


@contextmanager
def locked(out: Path, what: str = "output"):
    """Hold an exclusive advisory lock on the output path `out` (refused at once when another run holds it)."""
    path = out.parent / f".{out.name}{LOCK_TAG}"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise BakeError(f"cannot write {what} {out}: {e.strerror} ({out.parent})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise BakeError(f"another bake (pid {holder}) is writing {out}; wait for it to finish, "
                            "or choose another output path") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino  # the lock file was not replaced meanwhile
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    try:
        yield
    finally:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        os.close(fd)


def _mkparent(out: Path, what: str) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BakeError(f"cannot create the folder for {what} {out}: {e.strerror or e}") from None


def write_error(e: OSError, out: Path, what: str) -> BakeError:
    """The one-line error for an OSError while writing `out`."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return BakeError(f"no space left on device while writing {what} {out}; nothing was written "
                         "(the input model is untouched)")
    return BakeError(f"cannot write {what} {out}: {e.strerror or e}"
                     + (f" ({e.filename})" if getattr(e, "filename", None) else "") + "; nothing was written")


@contextmanager
def staged(out: str | Path, *, folder: bool = True, force: bool = False, protect: Iterable[Path] = (),
           around: Iterable[Path] = (), refuse: Callable[[Path], str | None] = bake_folder_refusal,
           what: str = "output", recorded_in: Path | None = None):
    """Yield a temp sibling of `out` (an empty folder, or a file path when not `folder`) to write
    into; on a normal exit, re-check `out` and rename the temp into place. See the module docstring."""
    out = resolve_path(out, what)
    protect, around = list(protect), list(around)
    kw = dict(folder=folder, force=force, protect=protect, around=around, refuse=refuse, what=what, recorded_in=recorded_in)
    check_target(out, **kw)  # before any write
    _mkparent(out, what)
    with locked(out, what):
        before = check_target(out, **kw)
        clean_stale(out)
        tmp = out.parent / f".{out.name}{TMP_TAG}{os.getpid()}"
        _remove(tmp)
        try:
            if folder:
                tmp.mkdir()
            yield tmp
            interrupt.check()
            if _fingerprint(out) != before:  # checked (and locked against other bakes) at the start
                raise BakeError(f"{what} {out} was created or changed by another program while bake was "
                                "writing; it was left as it is and nothing was written: run again")
            _swap(tmp, out)
        except OSError as e:
            _remove(tmp)
            raise write_error(e, out, what) from None
        except BaseException:
            _remove(tmp)
            raise


def _swap(tmp: Path, out: Path) -> None:
    if not (out.exists() or out.is_symlink()):
        os.replace(tmp, out)
        return
    if not out.is_dir():  # a file: rename replaces it atomically
        os.replace(tmp, out)
        return
    trash = out.parent / f".{out.name}{TMP_TAG}old-{os.getpid()}"
    os.replace(out, trash)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(trash, out)
        raise
    shutil.rmtree(trash, ignore_errors=True)
