"""Outputs: checked before any work, written under a temporary name, renamed only when complete.

The one owner of how lsmap writes results:

- :func:`check_output` (before any work): refuses an existing output unless ``overwrite``, and
  probes the location (creates and removes a small file) so that a read-only or immutable folder,
  a parent that is a file, a full disk or a missing permission fail at once, not after the work.
- :func:`check_outputs_apart` (before any work): an existing output that is one of the run's inputs, or
  lies inside an input folder, is refused even with ``overwrite`` (:func:`input_paths` lists the inputs).
- :func:`atomic_output`: the output is written to a temporary beside it (its name records the
  owner process, :func:`lsmap.io.locks.owner_tag`) and renamed onto the final name when the block
  completes; on any failure the temporary is removed and an existing output is left as it was.
  With ``lock=True`` the output is locked for the run (:func:`lsmap.io.locks.output_lock`) and the
  temporaries of dead runs are removed. Files are flushed to disk (``fsync``) before the rename.
  OS errors of a full, read-only or forbidden filesystem become one-line
  :class:`lsmap.errors.OutputError` messages ("no space left on DEVICE for FILE").
- Output *folders* (``lsmap tile``, ``lsmap refine``) are marked as lsmap's with
  :data:`OWNER_MARKER`. ``overwrite`` replaces a folder only when it is lsmap's and holds nothing
  but what that command writes (:func:`check_owned_dir`); the working directory, its parents, the
  home directory and the filesystem root are never replaced.
- :func:`gdal_write_check`: GDAL reports some write errors (e.g. a full disk while tiles are
  compressed by threads) only as log messages; this turns them into errors, and
  :func:`verify_geotiff` reopens a written GeoTIFF and checks every tile lies inside the file.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from lsmap.core.checks import is_empty_path
from lsmap.errors import (
    InputError,
    LsmapError,
    NoSpaceError,
    OutputError,
    OutputExistsError,
    OutputOwnershipError,
)

#: File lsmap writes into the output folders it creates; ``overwrite`` replaces only such folders.
OWNER_MARKER = ".lsmap-output.json"
#: Below this many free bytes a failed write is reported as a full disk.
FULL_BYTES = 1 << 20

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


# --- describing filesystems and OS errors ------------------------------------------------------


def provenance(**fields: object) -> dict[str, str]:
    """What produced an output, as the text metadata of a file (GeoPackage layer metadata, GeoTIFF tags):
    ``lsmap_version`` and ``created`` (UTC, ISO 8601) with ``fields``."""
    from datetime import UTC, datetime

    from lsmap import __version__

    return {"lsmap_version": __version__, **{k: str(v) for k, v in fields.items()},
            "created": datetime.now(UTC).isoformat(timespec="seconds")}


def mount_of(path: str | os.PathLike) -> str:
    """``MOUNTPOINT (DEVICE, FSTYPE)`` of the filesystem holding ``path`` (from /proc/mounts when readable)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    best = ("", "", "")
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            dev, mnt, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
            if (str(p) == mnt or str(p).startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[1]):
                best = (dev, mnt, fstype)
    if best[1]:
        return f"{best[1]} ({best[0]}, {best[2]})"
    return str(p)


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes available to this user on the filesystem of ``path`` (its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _text_says_full(text: str) -> bool:
    t = text.lower()
    return "no space left" in t or "free disk space" in t or "disk quota" in t or "file too large" in t


def output_oserror(e: BaseException, path: str | os.PathLike) -> OutputError | None:
    """The :class:`OutputError` that ``e`` (raised while writing ``path``) means, or ``None``.

    ``ENOSPC``/``EDQUOT``/``EFBIG`` or a message saying so (GDAL, HDF5 and pyogrio put the OS
    error in their text) become :class:`NoSpaceError`; ``EROFS``, ``EACCES``, ``EPERM``, ``ENOTDIR``
    a plain :class:`OutputError`.
    """
    if isinstance(e, OutputError):
        return e
    path = Path(path)
    code = getattr(e, "errno", None)
    text = f"{e}"
    cause = e.__cause__ or e.__context__
    if cause is not None:
        text += f" {cause}"
    if code in _NO_SPACE or _text_says_full(text):
        return NoSpaceError(f"no space left on {mount_of(path)} for {path}; free some space or write elsewhere")
    if code in _NOT_WRITABLE or "read-only file system" in text.lower() or "permission denied" in text.lower():
        why = os.strerror(code) if code in _NOT_WRITABLE else _first_line(e)
        return OutputError(f"{path}: cannot write ({why}); choose a writable output location")
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# --- checks before any work --------------------------------------------------------------------


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and not p.is_symlink():
        if p == p.parent:
            break
        p = p.parent
    return p


def check_writable(path: str | os.PathLike) -> None:
    """Make sure output ``path`` can be written: its nearest existing folder takes a probe file.

    The probe (a hidden file, removed at once) catches read-only and immutable folders, full
    disks, missing permissions (also for root, which mode bits do not stop) and a parent path
    that is a file, before any work.

    Raises:
        OutputError: the location is not writable (the message says why and where).
        NoSpaceError: the filesystem is full.
    """
    from lsmap.io.locks import owner_tag

    path = Path(path)
    base = path if path.is_dir() else path.parent
    here = _existing_ancestor(base)
    if not here.is_dir():
        raise OutputError(f"{path}: cannot write there, {here} is a file, not a folder; choose another output path")
    probe = here / f".lsmap-probe.{owner_tag()}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"lsmap write probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        mapped = output_oserror(e, path) or OutputError(f"{path}: cannot write in {here} ({_first_line(e)})")
        raise mapped from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    free = free_bytes(here)
    if free is not None and free < FULL_BYTES:
        raise NoSpaceError(f"no space left on {mount_of(here)} for {path} ({free} bytes free); "
                           f"free some space or write elsewhere")


def output_path(path: str | os.PathLike, *, directory: bool = False, name: str | None = None) -> Path:
    """``path`` as a Path after the checks of the name alone, made before the existing-output check.

    An empty path is refused (``Path("")`` is the current folder: it was taken for an existing output,
    "pass --overwrite", and then failed as a folder), and so is an existing folder where the output is a file
    (refused before ``--overwrite`` is suggested, which could not help).

    Args:
        path: The output path as given.
        directory: The output is a folder.
        name: The argument that gave it (named in the message as ```name```), if known.

    Raises:
        InputError: ``path`` is empty.
        OutputError: a file output that is an existing folder.
    """
    what = "folder" if directory else "file"
    if is_empty_path(path):
        raise InputError(f"{f'`{name}`' if name else 'the output path'} is empty; give an output {what} name")
    path = Path(path)
    if not directory and path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name for the output")
    return path


def check_output(path: str | os.PathLike, overwrite: bool, *, probe: bool = True) -> Path:
    """Return ``path`` as a Path after the checks made before any work.

    Raises:
        InputError: ``path`` is empty.
        OutputExistsError: ``path`` exists and not ``overwrite``.
        OutputError: ``path`` is a folder, or the location cannot be written (see :func:`check_writable`).
    """
    path = output_path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(path)
    if probe:
        check_writable(path)
    return path


def input_paths(*inputs) -> list[Path]:
    """The local files and folders among a run's inputs: paths, nested in lists, tuples and mappings' values
    and namespaces (the inputs of ``lsmap stack``); URLs, empty paths, ``None`` and other objects (loaded models) are
    left out."""
    import argparse
    import types

    out: list[Path] = []
    stack = list(inputs)
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (types.SimpleNamespace, argparse.Namespace)):
            stack.extend(vars(item).values())
        elif isinstance(item, (list, tuple, set)):
            stack.extend(item)
        elif isinstance(item, (str, os.PathLike)) and "://" not in str(item) and not is_empty_path(item):
            path = Path(item)  # an empty path is no input (Path('') is the working folder): its reader refuses it
            if path.exists():
                out.append(path)
    return out


def check_outputs_apart(outputs: Sequence[str | os.PathLike | None], inputs: Sequence[Path], *,
                        new_too: bool = False) -> None:
    """Raise before any work when an existing output is one of the run's inputs, or lies inside an input folder
    (a band folder, a SAFE product): ``overwrite`` replaces what lsmap wrote before, never what it reads.
    ``new_too``: an output that does not exist yet is checked as well (a run folder written in place, among
    the patches it trains on).

    Raises:
        InputError: the first such output, with the input it would replace.
    """
    for out in outputs:
        if out is None or not (new_too or Path(out).exists()):
            continue
        target = Path(out).resolve()
        for source in inputs:
            if source.is_dir() and target.is_relative_to(source.resolve()):
                raise InputError(f"{out}: this output is inside the input folder {source}, whose files the run "
                                  f"reads; write it elsewhere")
            with contextlib.suppress(OSError):
                if os.path.samefile(target, source):
                    raise InputError(f"{out}: this output is the input {source}; write it elsewhere")


# --- owned output folders ------------------------------------------------------------------------


def _protected(path: Path) -> str | None:
    """Why folder ``path`` must never be replaced (working directory, its parents, home, root), or None."""
    try:
        p = path.resolve()
    except OSError:
        return None
    cwd = Path.cwd().resolve()
    try:
        home = Path.home().resolve()
    except (OSError, RuntimeError):
        home = None
    if p == Path(p.anchor):
        return "the filesystem root"
    if p == cwd:
        return "the working directory"
    if p in cwd.parents:
        return "a parent of the working directory"
    if home is not None and p == home:
        return "the home directory"
    return None


def _allowed(rel: str, is_dir: bool, patterns: Sequence[str]) -> bool:
    parts = rel.split("/")
    for a in patterns:
        if a.endswith("/**"):
            base = a[:-3].split("/")
            if len(parts) >= len(base) and all(fnmatch.fnmatchcase(p, b) for p, b in zip(parts, base, strict=False)):
                return True
            continue
        pat = a.split("/")
        if len(parts) == len(pat) and all(fnmatch.fnmatchcase(p, b) for p, b in zip(parts, pat, strict=True)):
            return True
        if is_dir and len(parts) < len(pat) and all(fnmatch.fnmatchcase(p, b) for p, b in zip(parts, pat, strict=False)):
            return True  # a folder on the way to allowed files
    return False


def foreign_files(folder: Path, patterns: Sequence[str]) -> list[str]:
    """Files and folders under ``folder`` (relative POSIX paths) that match none of ``patterns``.

    Patterns are matched part by part (``img/image_*.h5``; ``round_*/**`` allows anything under
    ``round_1/``); a folder is allowed when allowed files may lie inside it.
    """
    allowed = [*patterns, OWNER_MARKER]
    found = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if not _allowed(rel, p.is_dir() and not p.is_symlink(), allowed):
            found.append(rel)
    return found


def check_owned_dir(path: str | os.PathLike, overwrite: bool, command: str, patterns: Sequence[str],
                    manifests: Sequence[str] = ()) -> Path:
    """Checks before a command writes (or replaces) output folder ``path``.

    An existing folder may be replaced only with ``overwrite``, and only when lsmap wrote it: it
    holds :data:`OWNER_MARKER` (or, for folders of older versions, one of ``manifests``) and nothing
    that ``patterns`` do not describe. The working directory, its parents, the home directory and
    the root are refused outright, as is a path that is a file.

    Args:
        path: The output folder.
        overwrite: The caller may replace an existing folder.
        command: The lsmap command that writes it (``"tile"``), named in messages.
        patterns: Glob patterns (relative POSIX paths) of everything the command writes; ``x/**``
            allows anything under ``x``.
        manifests: Files that mark folders written by earlier lsmap versions.

    Raises:
        OutputOwnershipError: a protected folder, or one lsmap did not write or holding other files.
        OutputExistsError: ``path`` exists and not ``overwrite``.
        OutputError: ``path`` is a file, or cannot be written.
    """
    path = output_path(path, directory=True)
    why = _protected(path)
    if why is not None:
        raise OutputOwnershipError(f"{path}: refusing to write the {command} output into {why}; "
                                   f"give a new folder, e.g. `out_dir` {command}_out/")
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: is a file; the {command} output is a folder, choose another `out_dir`")
    if path.is_dir() and os.path.ismount(path):  # renamed into place at the end: EBUSY after all the work (a review)
        raise OutputError(f"{path}: is a mount point, and lsmap writes its {command} folder beside and renames it "
                          f"into place; give a new folder inside it, e.g. `out_dir` {path / (command + '_out')}")
    if path.exists():
        if not overwrite and not is_empty_dir(path):  # an empty folder (a script's makedirs) holds nothing to lose
            raise OutputExistsError(path)
        if any(path.iterdir()):
            owned = (path / OWNER_MARKER).is_file() or any((path / m).is_file() for m in manifests)
            if not owned:
                raise OutputOwnershipError(
                    f"{path}: folder was not written by 'lsmap {command}' (no {OWNER_MARKER}); `overwrite` "
                    f"replaces only lsmap's own output folders, choose a new `out_dir`")
            other = foreign_files(path, patterns)
            if other:
                shown = ", ".join(other[:5]) + (" ..." if len(other) > 5 else "")
                raise OutputOwnershipError(
                    f"{path}: holds files 'lsmap {command}' did not write ({shown}); move them away or choose "
                    f"a new `out_dir` (`overwrite` never deletes them)")
    check_writable(path)
    return path


def is_empty_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder with nothing in it."""
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def mark_owned(folder: str | os.PathLike, command: str) -> None:
    """Write :data:`OWNER_MARKER` into ``folder``: the folder is ``lsmap COMMAND``'s output."""
    from lsmap import __version__

    marker = {"lsmap": __version__, "command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (Path(folder) / OWNER_MARKER).write_text(json.dumps(marker) + "\n")


# --- atomic outputs -----------------------------------------------------------------------------


def _fsync_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EROFS, errno.EBADF):  # fsync unsupported there
            raise
    finally:
        os.close(fd)


def umask() -> int:
    """The process umask, read without changing it (``/proc/self/status`` on Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, hence the last resort)
    os.umask(old)
    return old


def normal_mode(path: Path) -> None:
    """Give ``path`` the mode the umask gives a new file (0666) or folder (0777).

    Some writers create files 0600 (safetensors) and ``tempfile`` its folders 0700; on a shared
    filesystem other users and workers could not read such outputs.
    """
    if path.exists() and not path.is_symlink():
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask())


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False, *, directory: bool = False,
                  lock: bool = False, before_replace: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``.

    The temporary name keeps the suffix of ``path`` so that drivers chosen by extension (GDAL,
    pyogrio) still pick the right format. On any exception the temporary file (or folder) is
    removed and ``path`` is left untouched; OS errors of a full, read-only or forbidden
    filesystem are raised as :class:`OutputError` naming the device and the file. The output
    gets the mode the umask gives a new file or folder (:func:`normal_mode`).

    Args:
        path: Final output path.
        overwrite: Replace an existing ``path``; otherwise an existing output is an error.
        directory: The output is a folder (it is created empty at the temporary path).
        lock: Hold :func:`lsmap.io.locks.output_lock` on ``path`` while the block runs (and remove
            the temporaries of dead runs). For the outputs a command is asked for; internal
            files written inside a locked folder need none.
        before_replace: Called with ``path`` just before an existing folder is replaced (e.g. a
            :func:`check_owned_dir` check that raises when the folder is not lsmap's).

    Raises:
        InputError: ``path`` is empty.
        OutputExistsError: ``path`` exists and ``overwrite`` is false (raised before any work).
        OutputLockedError: ``lock`` and another run holds the output.
        OutputError: the output cannot be written (e.g. no space left on the device).
    """
    path = output_path(path, directory=directory)
    if path.exists() and not overwrite:
        raise OutputExistsError(path)
    with drop_new_parents_on_error(path), _atomic(path, directory, lock, before_replace) as target:
        yield target


@contextlib.contextmanager
def drop_new_parents_on_error(path: str | os.PathLike) -> Iterator[None]:
    """On an exception, remove the parent folders of ``path`` that did not exist before and are empty again (a
    failed run left ``newdir/`` behind for ``-o newdir/x.gpkg``; found by the API audit)."""
    new = [p for p in Path(path).absolute().parents if not p.exists()]
    try:
        yield
    except BaseException:
        for p in new:  # deepest first; a folder something else wrote into stays
            with contextlib.suppress(OSError):
                p.rmdir()
        raise


@contextlib.contextmanager
def _atomic(path: Path, directory: bool, lock: bool, before_replace: Callable[[Path], None] | None) -> Iterator[Path]:
    """:func:`atomic_output` once the existing output is checked."""
    from lsmap.io.locks import output_lock, owner_tag

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise (output_oserror(e, path) or OutputError(f"{path}: cannot create its folder ({_first_line(e)})")) from None
    with output_lock(path) if lock else contextlib.nullcontext():
        tmp = path.parent / f".{path.name}.{owner_tag()}.tmp"
        try:
            tmp.mkdir()
        except OSError as e:
            raise (output_oserror(e, path) or OutputError(f"{path}: cannot write ({_first_line(e)})")) from None
        target = tmp if directory else tmp / path.name
        try:
            yield target
            if not directory:
                _fsync_file(target)
            normal_mode(target)
            if path.is_dir() and not path.is_symlink():
                if not directory:
                    raise OutputError(f"{path}: is a folder; the output is a file, choose another name")
                if before_replace is not None:
                    before_replace(path)
                old = path.parent / f".{path.name}.{owner_tag()}.old.tmp"
                os.replace(path, old)  # the old folder moves aside, the new one takes its name
                try:
                    os.replace(target, path)
                except BaseException:
                    os.replace(old, path)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(target, path)
        except LsmapError as e:
            if isinstance(e, OutputError):  # name the output, not the temporary it was written to
                text = str(e).replace(str(target), str(path)).replace(str(tmp), str(path))
                if text != str(e):
                    raise type(e)(text) from None
                raise
            full = free_bytes(path.parent)
            if full is not None and full < FULL_BYTES:  # e.g. "cannot read" our own half-written temporary
                raise NoSpaceError(f"no space left on {mount_of(path)} for {path}; free some space or write "
                                   f"elsewhere") from None
            raise
        except Exception as e:  # OS errors, and GDAL, HDF5 and pyogrio's wrappers of them
            mapped = output_oserror(e, path)
            if mapped is None:
                full = free_bytes(path.parent)
                if full is not None and full < FULL_BYTES:
                    mapped = NoSpaceError(f"no space left on {mount_of(path)} for {path}; free some space or "
                                          f"write elsewhere")
            if mapped is not None:
                raise mapped from None
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# --- GDAL write errors --------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "signalled an error" in msg or record.levelno >= logging.ERROR:
            self.messages.append(msg)


class WriteCheck:
    """What :func:`gdal_write_check` yields: :meth:`check` raises at once when GDAL has signalled a write error so
    far, so that a writer that calls it after each block stops at the first block GDAL failed to flush instead of
    going on to the end of the scene."""

    def __init__(self, path: str | os.PathLike, handler: _Collect) -> None:
        self.path, self._handler = path, handler

    def check(self) -> None:
        """Raise the write error GDAL signalled so far, if any.

        Raises:
            NoSpaceError: a message says the disk is full.
            OutputError: another GDAL write error.
        """
        write_errors = [m for m in self._handler.messages if "write" in m.lower() or _text_says_full(m)
                        or "free disk space" in m.lower()]
        if write_errors:
            free = free_bytes(Path(self.path).parent)
            if any(_text_says_full(m) for m in write_errors) or (free is not None and free < FULL_BYTES):
                raise NoSpaceError(f"no space left on {mount_of(self.path)} for {self.path}; free some space or "
                                   f"write elsewhere")
            raise OutputError(f"{self.path}: GDAL could not write the file ({write_errors[0]}); check the output location")


@contextlib.contextmanager
def gdal_write_check(path: str | os.PathLike) -> Iterator[WriteCheck]:
    """Fail when GDAL signals an error while the block writes ``path``.

    GDAL reports some write failures (a full disk while tiles are compressed by its worker
    threads) only as error messages, and the dataset then closes "successfully" with tiles
    missing. rasterio logs those messages (logger ``rasterio._err``); this collects them and
    raises when the block ends, or earlier at each :meth:`WriteCheck.check` the block calls.

    Raises:
        NoSpaceError: a message says the disk is full.
        OutputError: another GDAL write error.
    """
    handler = _Collect()
    loggers = [logging.getLogger(n) for n in ("rasterio._err", "rasterio._env", "rasterio._io")]
    saved = [(lg, lg.level, lg.disabled) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
        lg.disabled = False
    checker = WriteCheck(path, handler)
    try:
        yield checker
    finally:
        for lg, level, disabled in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.disabled = disabled
    checker.check()


def verify_geotiff(path: str | os.PathLike, final: str | os.PathLike | None = None) -> None:
    """Reopen a GeoTIFF just written and check every tile (strip) lies inside the file.

    A tile whose recorded offset + size runs past the end of the file was never written (a full
    disk): such a file opens, but its bands cannot be read.

    Raises:
        NoSpaceError / OutputError: the file does not reopen or has missing tiles (``final`` is the
            name used in the message).
    """
    import rasterio

    from lsmap.io.rasters import missing_tiles  # rasters imports this module

    path = Path(path)
    shown = Path(final) if final is not None else path
    try:
        with rasterio.open(path) as src:
            missing = missing_tiles(src, path.stat().st_size, first=True)
        if missing:
            raise OutputError(missing[0])
    except OutputError as e:
        full = free_bytes(path.parent)
        if full is not None and full < FULL_BYTES:
            raise NoSpaceError(f"no space left on {mount_of(shown)} for {shown}; free some space or write "
                               f"elsewhere") from None
        raise OutputError(f"{shown}: written incompletely ({e} missing); check the output location and "
                          f"rerun") from None
    except rasterio.errors.RasterioError as e:
        raise OutputError(f"{shown}: the written file does not reopen ({_first_line(e)}); check the output "
                          f"location and rerun") from None
