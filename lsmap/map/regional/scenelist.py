"""Scene arguments -> scene paths and output names, for commands that take many scenes.

:func:`expand_scenes` turns scene paths, glob patterns (``scenes/*.tif``, ``**`` recurses) and text
files of scene paths (``@list.txt``, or any ``.txt``/``.lst`` path) into absolute scene paths, in
order and without duplicates; STAC Item URLs (``https://...``) are kept as given, on the command line or
in a list. :func:`is_scene_list` tells whether one argument names several scenes; :func:`scene_stems`
gives every scene a unique, stable output name.
"""

from __future__ import annotations

import glob as _glob
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePath, PurePosixPath
from urllib.parse import urlsplit

from lsmap.errors import InputError, MissingInputError
from lsmap.io.s2product import is_url

#: A scene: a file path, or the URL of a STAC Item.
Scene = Path | str

#: File name extensions that mark a text file of scene paths (besides an ``@`` prefix).
LIST_SUFFIXES = frozenset({".txt", ".lst"})
_GLOB_CHARS = frozenset("*?[")


def _expand_one(item: str | os.PathLike, base: Path | None, seen_lists: tuple[Path, ...]) -> list[Scene]:
    text = os.fspath(item)
    if isinstance(item, str) and text.startswith("@"):
        return _read_list(Path(text[1:]), base, seen_lists)
    if is_url(text):  # a STAC Item: neither a path nor a pattern ('?' starts its query)
        return [text]
    path = Path(text).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if path.suffix.lower() in LIST_SUFFIXES:
        return _read_list(path, None, seen_lists)
    if _GLOB_CHARS & set(os.fspath(path)):
        found = sorted(Path(p) for p in _glob.glob(os.fspath(path), recursive=True))
        if not found:
            raise MissingInputError(f"{text}: no file matches this pattern; check the path or quote it")
        return found
    return [path]


def _read_list(path: Path, base: Path | None, seen_lists: tuple[Path, ...]) -> list[Scene]:
    path = Path(path).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise MissingInputError(f"{path}: scene list does not exist; give a text file with one scene path per line")
    if path.resolve() in seen_lists:
        raise InputError(f"{path}: scene list includes itself")
    out: list[Scene] = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        if line:
            out += _expand_one(line, path.parent, seen_lists + (path.resolve(),))
    return out


def is_scene_list(item: str | os.PathLike) -> bool:
    """Whether ``item`` names several scenes: a glob pattern or a list file (``@list.txt``, ``*.txt``)."""
    text = os.fspath(item)
    if is_url(text):  # one STAC Item, whatever its query holds
        return False
    return text.startswith("@") or Path(text).suffix.lower() in LIST_SUFFIXES or bool(_GLOB_CHARS & set(text))


def expand_scenes(scenes: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Scene]:
    """The scenes named by ``scenes``, absolute, in order, without duplicates.

    Each item is a scene path, a STAC Item URL (``http(s)://``, kept as a string), a glob pattern
    (``scenes/*.tif``; ``**`` recurses), or a text file of scenes (``@list.txt``, or any path ending in
    ``.txt``/``.lst``): one path, URL or pattern per line, blank lines and ``#`` comment lines ignored,
    relative paths taken from the list file's folder.

    Args:
        scenes: One item or a sequence of items.

    Returns:
        Absolute scene paths and URLs (existence is checked per scene when it runs, so that a missing
        scene is one failure among others).

    Raises:
        MissingInputError: a pattern matches nothing, or a list file does not exist.
        InputError: no scene at all.
    """
    items = [scenes] if isinstance(scenes, (str, os.PathLike)) else list(scenes)
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise InputError(f"each scene must be a path, a STAC Item URL, a glob or @list.txt (got "
                             f"{type(item).__name__})")
    out: list[Scene] = []
    seen: set[Scene] = set()
    for item in items:
        for p in _expand_one(item, None, ()):
            p = p if isinstance(p, str) else p.absolute()
            if p not in seen:
                seen.add(p)
                out.append(p)
    if not out:
        raise InputError("no scene given; pass scene paths, a glob such as 'scenes/*.tif', or @list.txt")
    return out


def _as_path(scene: Scene) -> PurePath:
    """The scene as a path whose name and parents give its output name: for a URL, its host and path,
    the query kept in the name (``https://host/v1/items/S2B_...`` -> ``host/v1/items/S2B_...``)."""
    if not is_url(scene):
        return Path(scene)
    parts = urlsplit(scene)
    path = [parts.netloc, *(q for q in parts.path.split("/") if q)]
    if parts.query:
        path[-1] += f"?{parts.query}"
    return PurePosixPath(*path)


def _stem(path: PurePath) -> str:
    name = path.name
    for suffix in (".tif", ".tiff", ".vrt", ".jp2", ".img", ".SAFE", ".zip"):
        if name.lower().endswith(suffix.lower()):
            return name[: -len(suffix)] or name
    return path.stem or name


def scene_stems(scenes: Sequence[Scene], reserved: Iterable[str] = ()) -> list[str]:
    """Unique output names for ``scenes``: the file stem, prefixed by parent folders where two clash.

    ``a/S2.tif`` and ``b/S2.tif`` become ``a_S2`` and ``b_S2``; a name that still clashes (or equals a
    ``reserved`` name, e.g. the merged layer's) gets ``-2``, ``-3``, ... A STAC Item URL is named by the
    last part of its path (Earth Search's ``.../items/S2B_43PFN_20190809_0_L2A``: the Item's id), with
    characters other than letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``. The names depend only
    on the paths, so the same scene list gives the same names on a re-run.
    """
    reserved = {r.lower() for r in reserved}
    urls = [is_url(p) for p in scenes]
    scenes = [_as_path(p) for p in scenes]
    names = [_stem(p) for p in scenes]
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        groups.setdefault(n.lower(), []).append(i)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        for depth in range(1, 9):
            prefixed = ["_".join([*[q.name for q in scenes[i].parents][:depth][::-1], names[i]]) for i in idx]
            if len({x.lower() for x in prefixed}) == len(idx):
                for i, x in zip(idx, prefixed, strict=False):
                    names[i] = x.lstrip("_")
                break
    # a URL's host (':' before a port) and path may hold characters no file name should
    names = [re.sub(r"[^\w.-]", "_", n) if url else n for n, url in zip(names, urls, strict=True)]
    used: set[str] = set(reserved)
    out = []
    for n in names:
        name, k = n, 2
        while name.lower() in used:
            name, k = f"{n}-{k}", k + 1
        used.add(name.lower())
        out.append(name)
    return out


def names_many(scenes: Sequence[str], out: str | os.PathLike) -> bool:
    """Whether a detection of ``scenes`` into ``out`` is a regional run (``out`` is then a folder).

    It is when several scenes are given, one argument names several (a glob, ``@list.txt``), or
    ``out`` ends with a path separator or is an existing folder.
    """
    out = str(out)
    return (len(scenes) > 1 or any(is_scene_list(s) for s in scenes) or out.endswith(("/", os.sep))
            or os.path.isdir(out))
