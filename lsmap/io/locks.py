"""Exclusive locks on output paths, and removal of the temporaries that killed runs left behind.

A run holds :func:`output_lock` on each of its outputs for as long as it writes them: a lock file
``.NAME.lsmap.lock`` beside the output, locked with ``flock`` (released by the kernel when the
process dies, so a killed run never leaves a stale lock). A second run asking for the same output
fails at once with :class:`lsmap.errors.OutputLockedError` naming the first run's pid, instead of
both running and the later rename silently replacing the earlier result.

Temporary files and folders that lsmap creates carry their owner in their name (:func:`owner_tag`:
``lsmap-HOST-PID-RANDOM``). :func:`remove_stale` deletes those of one output whose owner process
on this host is gone; it runs when the output's lock is taken, so it never races a live writer of
the same output.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from lsmap.errors import OutputLockedError

#: Temporaries without an owner in their name (written before owners were recorded) are removed
#: only when older than this many seconds.
LEGACY_TMP_AGE = 3600.0

_OWNER = re.compile(r"lsmap-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]+")
_held: dict[str, list] = {}  # lock path -> [fd, depth]: the locks of this process (re-entrant)
_held_guard = threading.Lock()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"


def owner_tag() -> str:
    """``lsmap-HOST-PID-RANDOM``: a unique name part saying which process on which host made a temporary."""
    return f"lsmap-{_host()}-{os.getpid()}-{secrets.token_hex(4)}"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a pid reused by another process counts as alive); a zombie
    (killed, not yet reaped by its parent) does not: its temporaries are stale (found by the failure audit)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    try:  # Linux: the state after the command's closing parenthesis
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stale(name: str, *, now: float | None = None, mtime: float | None = None) -> bool:
    """Whether a temporary named ``name`` belongs to a process of this host that is gone.

    Names without an owner tag are stale only when ``mtime`` is older than :data:`LEGACY_TMP_AGE`.
    Names tagged by another host are never stale here (that host may still be writing).
    """
    m = _OWNER.search(name)
    if m is None:
        return mtime is not None and (now or time.time()) - mtime > LEGACY_TMP_AGE
    return m.group("host") == _host() and not pid_alive(int(m.group("pid")))


def remove_stale(parent: str | os.PathLike, name: str) -> list[Path]:
    """Remove the temporaries of output ``parent/name`` left by dead runs; returns what was removed.

    Matches ``.NAME.*.tmp`` (atomic outputs, files or folders) and, for any output in ``parent``,
    ``.lsmap-*`` work folders whose owner is gone.
    """
    parent = Path(parent)
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    now = time.time()
    candidates = list(parent.glob(f".{glob_escape(name)}.*.tmp")) + list(parent.glob(".lsmap-*"))
    for p in candidates:
        if p.name.endswith(".lock"):
            continue
        try:
            mtime = p.lstat().st_mtime
        except OSError:
            continue
        if not stale(p.name, now=now, mtime=mtime):
            continue
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of output ``path``: ``.NAME.lsmap.lock`` beside it."""
    path = Path(path).absolute()
    return path.parent / f".{path.name}.lsmap.lock"


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, *, clean: bool = True) -> Iterator[Path]:
    """Hold an exclusive lock on output ``path`` (re-entrant within a process).

    Args:
        path: The output (file or folder); its parent folder must exist.
        clean: Also remove the temporaries of ``path`` left by dead runs (:func:`remove_stale`).

    Yields:
        The lock file.

    Raises:
        OutputLockedError: another process holds the lock (the message names its pid).
    """
    lock = lock_path(path)
    key = str(lock)
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield lock
        finally:
            with _held_guard:
                _held[key][1] -= 1
        return
    fd = _acquire(lock, Path(path))
    with _held_guard:
        _held[key] = [fd, 1]
    try:
        if clean:
            remove_stale(Path(path).absolute().parent, Path(path).name)
        yield lock
    finally:
        with _held_guard:
            depth = _held[key][1] - 1
            if depth == 0:
                del _held[key]
            else:
                _held[key][1] = depth
        if depth == 0:
            with contextlib.suppress(OSError):
                os.unlink(lock)  # while still locked: a waiting opener re-checks the inode
            os.close(fd)


def _acquire(lock: Path, path: Path) -> int:
    for _ in range(100):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:  # a read-only or full location: name the output, not the lock file
            from lsmap.io.outputs import OutputError, output_oserror

            raise (output_oserror(e, path) or OutputError(f"{path}: cannot lock the output ({e.strerror})")) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputLockedError(
                f"{path}: another lsmap run ({holder}) is writing this output; wait for it to finish or "
                f"choose another output"
            ) from None
        except OSError:
            os.close(fd)
            raise
        try:  # the file may have been unlinked by the previous holder between our open and flock
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {_host()}\n".encode())
            return fd
        os.close(fd)
    raise OutputLockedError(f"{path}: cannot lock {lock} (it keeps changing); retry")


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 200, 0).decode(errors="replace").split()
        if text:
            return f"pid {int(text[0])}" + (f" on {text[1]}" if len(text) > 1 and text[1] != _host() else "")
    return "pid unknown"
