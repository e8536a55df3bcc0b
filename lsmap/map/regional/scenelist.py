"""Scene arguments -> scene paths and output names, for commands that take many scenes.

:func:`expand_scenes` turns scene paths, glob patterns (``scenes/*.tif``, ``**`` recurses) and text
files of scene paths (``@list.txt``, or any ``.txt``/``.lst`` path) into absolute scene paths, in
order and without duplicates; :func:`is_scene_list` tells whether one argument names several scenes;
:func:`scene_stems` gives every scene a unique, stable output name.
"""

from __future__ import annotations

import glob as _glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from lsmap.errors import InputError, MissingInputError

#: File name extensions that mark a text file of scene paths (besides an ``@`` prefix).
LIST_SUFFIXES = frozenset({".txt", ".lst"})
_GLOB_CHARS = frozenset("*?[")


def _expand_one(item: str | os.PathLike, base: Path | None, seen_lists: tuple[Path, ...]) -> list[Path]:
    text = os.fspath(item)
    if isinstance(item, str) and text.startswith("@"):
        return _read_list(Path(text[1:]), base, seen_lists)
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


def _read_list(path: Path, base: Path | None, seen_lists: tuple[Path, ...]) -> list[Path]:
    path = Path(path).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise MissingInputError(f"{path}: scene list does not exist; give a text file with one scene path per line")
    if path.resolve() in seen_lists:
        raise InputError(f"{path}: scene list includes itself")
    out: list[Path] = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        if line:
            out += _expand_one(line, path.parent, seen_lists + (path.resolve(),))
    return out


def is_scene_list(item: str | os.PathLike) -> bool:
    """Whether ``item`` names several scenes: a glob pattern or a list file (``@list.txt``, ``*.txt``)."""
    text = os.fspath(item)
    return text.startswith("@") or Path(text).suffix.lower() in LIST_SUFFIXES or bool(_GLOB_CHARS & set(text))


def expand_scenes(scenes: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The scenes named by ``scenes``, absolute, in order, without duplicates.

    Each item is a scene path, a glob pattern (``scenes/*.tif``; ``**`` recurses), or a text file of
    scene paths (``@list.txt``, or any path ending in ``.txt``/``.lst``): one path or pattern per line,
    blank lines and ``#`` comment lines ignored, relative paths taken from the list file's folder.

    Args:
        scenes: One item or a sequence of items.

    Returns:
        Absolute scene paths (existence is checked per scene when it runs, so that a missing scene is
        one failure among others).

    Raises:
        MissingInputError: a pattern matches nothing, or a list file does not exist.
        InputError: no scene at all.
    """
    items = [scenes] if isinstance(scenes, (str, os.PathLike)) else list(scenes)
    out: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        for p in _expand_one(item, None, ()):
            p = p.absolute()
            if p not in seen:
                seen.add(p)
                out.append(p)
    if not out:
        raise InputError("no scene given; pass scene paths, a glob such as 'scenes/*.tif', or @list.txt")
    return out


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".tif", ".tiff", ".vrt", ".jp2", ".img", ".SAFE", ".zip"):
        if name.lower().endswith(suffix.lower()):
            return name[: -len(suffix)] or name
    return path.stem or name


def scene_stems(scenes: Sequence[Path], reserved: Iterable[str] = ()) -> list[str]:
    """Unique output names for ``scenes``: the file stem, prefixed by parent folders where two clash.

    ``a/S2.tif`` and ``b/S2.tif`` become ``a_S2`` and ``b_S2``; a name that still clashes (or equals a
    ``reserved`` name, e.g. the merged layer's) gets ``-2``, ``-3``, ... The names depend only on the
    paths, so the same scene list gives the same names on a re-run.
    """
    reserved = {r.lower() for r in reserved}
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
