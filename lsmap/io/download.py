"""Fetch public datasets: the Landslide4Sense benchmark archives from their Zenodo record.

:func:`download_l4s` reads the file list (names, sizes, MD5 checksums) of Zenodo record
:data:`L4S_RECORD` from Zenodo's JSON API (``GET {base}/api/records/{record}``), downloads each
archive to ``DIR/archives/NAME.part`` (resuming a partial file with an HTTP ``Range`` request),
checks its size and checksum before renaming it to ``NAME``, and unpacks it into ``DIR`` so that
``DIR`` is a dataset root in one of :data:`lsmap.io.patches.LAYOUTS` (the official
``TrainData/ ValidData/ TestData/`` with ``img/`` and ``mask/``). Re-running skips complete
archives and unpacked ones. The base URL is :data:`ZENODO_URL`, or the ``LSMAP_ZENODO_URL``
environment variable (a mirror, or the tests' loopback server).

The Hugging Face mirror (``ibm-nasa-geospatial/Landslide4sense``) holds the same patches as
single files in the ``images/<split>`` + ``annotations/<split>`` layout, which ``--data`` also
reads; fetch it with ``huggingface-cli download --repo-type dataset ibm-nasa-geospatial/Landslide4sense
--local-dir DIR``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from lsmap.errors import InputError, LsmapError
from lsmap.io.outputs import normal_mode

if TYPE_CHECKING:  # urllib.request (http, ssl, email) and zipfile are imported where used: not at a command line's start
    import urllib.request
    import zipfile

#: Zenodo, where the Landslide4Sense organisers published the benchmark.
ZENODO_URL = "https://zenodo.org"
#: Zenodo record of the Landslide4Sense 2022 data (doi:10.5281/zenodo.10463239).
L4S_RECORD = "10463239"
#: Environment variable overriding :data:`ZENODO_URL`.
URL_ENV = "LSMAP_ZENODO_URL"
#: Datasets ``lsmap download`` knows.
DATASETS = ("l4s",)
#: Longest wait for the server (seconds) a ``timeout`` may ask: a day (the socket refuses inf, NaN and huge values).
MAX_TIMEOUT = 86400.0
_CHUNK = 1 << 20


class DownloadError(LsmapError, OSError):
    """A download failed (network, HTTP error, wrong size or checksum)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a record: its name, URL, size in bytes and checksum (``md5:<hex>``)."""

    name: str
    url: str
    size: int | None
    checksum: str | None


@dataclass
class DownloadResult:
    """What :func:`download_l4s` did.

    Attributes:
        root: The dataset root (pass it to ``--data``).
        files: Archive names of the record.
        downloaded: Archives fetched (or completed) by this call; the others were complete.
        resumed: Archives continued from a partial download.
        unpacked: Archives unpacked by this call.
        patches: Patches per split found under ``root`` afterwards.
    """

    root: Path
    files: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    unpacked: list[str] = field(default_factory=list)
    patches: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {**asdict(self), "root": str(self.root)}


def base_url(url: str | None = None) -> str:
    """The Zenodo base URL: ``url``, else ``$LSMAP_ZENODO_URL``, else :data:`ZENODO_URL`.

    Raises:
        InputError: ``url`` (or the environment variable) is empty or not an http(s) URL.
    """
    from urllib.parse import urlsplit

    if url is not None:
        name, value = "`url`", url
    elif os.environ.get(URL_ENV):
        name, value = URL_ENV, os.environ[URL_ENV]
    else:
        return ZENODO_URL
    if not isinstance(value, str) or not value.strip():
        # an empty --url fell back to zenodo.org without a word
        raise InputError(f"{name} is empty; give the base URL of a Zenodo mirror, e.g. {ZENODO_URL}, or leave it "
                         f"out for Zenodo itself")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        # urlopen's "unknown url type" was a traceback
        raise InputError(f"{name} '{value}' is not an http(s) URL; give one like {ZENODO_URL} or http://host:port")
    return value.strip().rstrip("/")


def _check_timeout(timeout) -> float:
    """``timeout`` as seconds: finite, above 0 and at most :data:`MAX_TIMEOUT` (NaN and inf were tracebacks from the
    socket)."""
    from lsmap.core.checks import check_number

    return check_number("timeout", timeout, 0, MAX_TIMEOUT, lo_open=True)


def _open(request: urllib.request.Request | str, timeout: float, *, past_end_ok: bool = False):
    """``urlopen`` with lsmap's errors; with ``past_end_ok`` an HTTP 416 (a range starting at the end of the file:
    the part already holds all of it) gives ``None``."""
    import urllib.error
    import urllib.request

    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http/https URLs only)
    except urllib.error.HTTPError as e:
        if past_end_ok and e.code == 416:
            return None
        raise DownloadError(f"{e.url}: HTTP {e.code} {e.reason}; check the URL or try again later") from None
    except (urllib.error.URLError, OSError) as e:
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: cannot connect ({reason}); check the network and the base URL (`url`, else "
                            f"{URL_ENV}) and re-run: complete files are kept, partial ones resumed") from None


def zenodo_files(record: str = L4S_RECORD, url: str | None = None, timeout: float = 60.0) -> list[RemoteFile]:
    """The files of Zenodo ``record``, from its JSON API.

    Raises:
        DownloadError: the API cannot be reached or answers something else than a record.
    """
    import urllib.request

    timeout = _check_timeout(timeout)
    base = base_url(url)
    api = f"{base}/api/records/{record}"
    with _open(urllib.request.Request(api, headers={"Accept": "application/json"}), timeout) as resp:
        try:
            meta = json.load(resp)
            entries = meta["files"]
            if isinstance(entries, dict):  # InvenioRDM's {"entries": [...]} form
                entries = entries.get("entries", [])
            files = []
            for f in entries:
                name = f.get("key") or f["filename"]
                size = f.get("size", f.get("filesize"))  # the older record form says filesize
                files.append(RemoteFile(name, f"{base}/api/records/{record}/files/{name}/content",
                                        int(size) if size is not None else None, f.get("checksum")))
        except (ValueError, KeyError, TypeError) as e:
            raise DownloadError(f"{api}: not a Zenodo record ({type(e).__name__}: {e})") from None
    if not files:
        raise DownloadError(f"{api}: the record lists no files")
    return files


def _hash_file(path: Path, algo: str):
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h


def _check(path: Path, remote: RemoteFile, digest: str | None) -> str | None:
    """Why ``path`` is not ``remote`` (size or checksum), or ``None`` when it is."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"{size} bytes instead of {remote.size}"
    if remote.checksum and digest is not None:
        algo, _, want = remote.checksum.partition(":")
        if digest.lower() != want.lower():
            return f"{algo} {digest} instead of {want}"
    return None


def fetch(remote: RemoteFile, dest: Path, *, timeout: float = 60.0, progress: bool | None = None) -> str:
    """Download ``remote`` to ``dest`` (resuming ``dest.part``), checked before it is renamed.

    Returns:
        ``"complete"`` (already there), ``"downloaded"`` or ``"resumed"``.

    Raises:
        DownloadError: network or HTTP failure (the partial file is kept for the next run), or
            a wrong size or checksum (the bad partial file is removed).
    """
    import urllib.request

    from lsmap.io.progress import progress_bar

    timeout = _check_timeout(timeout)
    algo = remote.checksum.partition(":")[0] if remote.checksum else "md5"
    if algo not in hashlib.algorithms_available:
        raise DownloadError(f"{remote.url}: unknown checksum algorithm '{algo}'")
    if dest.exists():
        if _check(dest, remote, _hash_file(dest, algo).hexdigest()) is None:
            return "complete"
        raise DownloadError(f"{dest}: exists but is not the file of the record "
                            f"({_check(dest, remote, _hash_file(dest, algo).hexdigest())}); move it away and re-run")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    if remote.size is not None and start > remote.size:
        part.unlink()
        start = 0
    h = _hash_file(part, algo) if start else hashlib.new(algo)
    status = "resumed" if start else "downloaded"
    if remote.size is None or start < remote.size:
        headers = {"Range": f"bytes={start}-"} if start else {}
        # of unknown size, a part that holds the whole file gets 416 for the range after it: checked as it is
        # (every re-run failed with the 416 before; found by a code review)
        resp = _open(urllib.request.Request(remote.url, headers=headers), timeout, past_end_ok=start > 0)
    else:
        resp = None
    if resp is not None:
        with resp:
            if start and resp.status != 206:  # the server ignored the range: start over
                start, h, status = 0, hashlib.new(algo), "downloaded"
            show = sys.stderr.isatty() if progress is None else progress
            with open(part, "ab" if start else "wb") as out, \
                    progress_bar(total=remote.size, initial=start, unit="B", unit_scale=True, desc=remote.name,
                         disable=not show) as bar:
                try:
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        bar.update(len(chunk))
                except OSError as e:
                    raise DownloadError(f"{remote.url}: download interrupted ({e}); re-run to resume") from None
    problem = _check(part, remote, h.hexdigest())
    if problem is not None:
        part.unlink()
        raise DownloadError(f"{remote.url}: downloaded file is wrong ({problem}); removed it, re-run to download "
                            f"it again")
    os.replace(part, dest)
    return status


def _members(archive: zipfile.ZipFile, path: Path) -> list[zipfile.ZipInfo]:
    """The archive's members, refusing absolute paths and ``..`` (and skipping macOS metadata)."""
    members = []
    for info in archive.infolist():
        p = PurePosixPath(info.filename)
        if p.is_absolute() or ".." in p.parts:
            raise InputError(f"{path}: member '{info.filename}' points outside the archive; not unpacking it")
        if p.parts and p.parts[0] != "__MACOSX" and not p.name.startswith("._"):
            members.append(info)
    return members


def unpack(archive: Path, root: Path) -> list[Path]:
    """Unpack a zip ``archive`` into ``root``; returns the top-level entries it made.

    An archive whose members share one top folder (``TrainData/...``) is unpacked as it is;
    one with loose members (``img/``, ``mask/``) goes into a folder named after the archive.
    Members are written to a temporary folder first and moved into place when all are out.

    Raises:
        InputError: not a zip file, a member escaping the archive, or an entry that exists in
            ``root`` already (it is not replaced).
    """
    import zipfile

    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"{archive}: cannot open the archive ({e}); remove it and re-run to download it again") from None
    with zf:
        members = _members(zf, archive)
        tops = {PurePosixPath(m.filename).parts[0] for m in members}
        nested = len(tops) == 1 and any(len(PurePosixPath(m.filename).parts) > 1 for m in members)
        names = sorted(tops) if nested else [archive.name.split(".")[0]]
        for name in names:
            if (root / name).exists():
                raise InputError(f"{root / name}: exists already; move it away to unpack {archive.name} again")
        tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".tmp", dir=root))
        try:
            zf.extractall(tmp if nested else tmp / names[0], members)
            made = []
            for name in names:
                normal_mode(tmp / name)
                os.replace(tmp / name, root / name)
                made.append(root / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return made


def download_l4s(root: str | os.PathLike, *, url: str | None = None, record: str = L4S_RECORD,
                 keep_archives: bool = True, timeout: float = 60.0, progress: bool | None = None) -> DownloadResult:
    """Download and unpack the Landslide4Sense benchmark into ``root`` (a root ``--data`` reads).

    Args:
        root: Destination folder (created); archives go to ``root/archives/``.
        url: Zenodo base URL (default: ``$LSMAP_ZENODO_URL`` or :data:`ZENODO_URL`).
        record: Zenodo record id.
        keep_archives: Keep the archives after unpacking (a re-run then has nothing to fetch).
        timeout: Seconds to wait for the server on each request.
        progress: Progress bars (``None``: on a terminal).

    A failed run removes the folders it created that are still empty (``root``, its missing parents,
    ``root/archives``), never one that was there before or that holds anything (a partial download is kept
    for the next run).

    Raises:
        DownloadError: the record or a file cannot be fetched, or a file is wrong.
        InputError: ``url`` is empty or not a URL, ``timeout`` is not a number of seconds in
            (0, :data:`MAX_TIMEOUT`], or an archive cannot be unpacked.
        OutputLockedError: another download into ``root`` is running.
    """
    from lsmap.io.locks import output_lock
    from lsmap.io.outputs import drop_new_parents_on_error

    timeout = _check_timeout(timeout)
    base_url(url)  # refused before any folder is made
    root = Path(root)
    # a failed run removes the folders it made that are still empty (root, its new parents, archives/): an
    # unreachable server or a wrong URL left them behind; a partial download keeps its folder for the next run
    with drop_new_parents_on_error(root / "archives" / "-"):
        root.mkdir(parents=True, exist_ok=True)
        # one download into a folder at a time: two at once raced on the same .part (a traceback; the failure audit)
        with output_lock(root, clean=False):
            return _download(root, url, record, timeout, progress, keep_archives)


def _download(root: Path, url, record: str, timeout: float, progress, keep_archives: bool) -> DownloadResult:
    import zipfile

    from lsmap.io.patches import SPLITS, find_patches, has_split

    files = zenodo_files(record, url, timeout)
    result = DownloadResult(root, [f.name for f in files])
    archives = root / "archives"
    for remote in files:
        done_marker = archives / f".{remote.name}.unpacked"
        if done_marker.exists() and done_marker.read_text().strip() == (remote.checksum or str(remote.size)):
            continue  # unpacked by an earlier run (the archive may have been removed since)
        status = fetch(remote, archives / remote.name, timeout=timeout, progress=progress)
        if status != "complete":
            result.downloaded.append(remote.name)
        if status == "resumed":
            result.resumed.append(remote.name)
        if zipfile.is_zipfile(archives / remote.name):
            unpack(archives / remote.name, root)
            result.unpacked.append(remote.name)
            done_marker.write_text((remote.checksum or str(remote.size)) + "\n")
            if not keep_archives:
                (archives / remote.name).unlink()
    for split in SPLITS:
        if has_split(root, split):
            try:
                result.patches[split] = len(find_patches(root, split))
            except InputError:
                result.patches[split] = 0
    if not result.patches.get("train"):
        raise InputError(f"{root}: unpacked, but no training patches are there; the layouts read are listed in "
                         f"'lsmap train --help' (--data)")
    return result
