"""Sentinel-2 band files found by name, and the Sentinel-2 input of a stack resolved to them.

Inputs (:func:`resolve_s2`): a product as downloaded (``.SAFE`` folder, ``.SAFE.zip`` read in
place, STAC Item; :mod:`lsmap.io.s2product`, :mod:`lsmap.io.stac`), whose metadata gives the band
files by name and the DN offset (-1000 from processing baseline 04.00 on), or loose band files
(offset ``offset``, else unknown: :func:`lsmap.data.stack.stack_scene` warns when no DN below 1000
occurs in any band). Loose band files are recognised by the band named in the file name
(:func:`band_of`: ``..._B04_10m.jp2``, ``B4.tif``; ``B8A`` is never ``B8``); folders are searched
recursively, and of one band at several resolutions the finest file is taken. Without a band set,
:func:`fullest_band_set` picks every L4S band the inputs can fill.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from lsmap.core.bands import L4S_BANDS, S2_RESOLUTION, TERRAIN_BANDS, BandProfile, get_profile
from lsmap.errors import InputError, MissingInputError
from lsmap.io.rasters import open_raster
from lsmap.io.s2product import S2Source, enclosing_product, is_product, open_product

#: File extensions searched in Sentinel-2 folders.
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt")
#: A band token in a file name: ``B4``, ``B04``, ``B8A``, ``B11`` not glued to letters/digits.
_BAND_TOKEN = re.compile(r"(?<![A-Za-z0-9])B(\d{1,2})(A?)(?![A-Za-z0-9])", re.IGNORECASE)


def band_of(name: str) -> str | None:
    """The Sentinel-2 band named in a file name, or ``None`` when there is none or several.

    ``T45QYF_20230601_B04_10m.jp2`` -> ``"B4"``, ``B8A.tif`` -> ``"B8A"`` (never ``"B8"``),
    ``B01.tif`` -> ``"B1"``, ``B12.tif`` -> ``"B12"`` (never ``"B1"``).
    """
    found = set()
    for m in _BAND_TOKEN.finditer(Path(name).name):
        band = f"B{int(m.group(1))}{m.group(2).upper()}"
        if band in S2_RESOLUTION:
            found.add(band)
    return found.pop() if len(found) == 1 else None


def find_band_files(sources: str | os.PathLike | Sequence[str | os.PathLike], bands: Sequence[str]) -> dict[str, Path]:
    """Map each of ``bands`` to its file among ``sources`` (folders are searched recursively).

    When a folder holds one band at several resolutions (as a Sentinel-2 L2A product does), the
    finest one is used.

    Args:
        sources: Folders and/or band files.
        bands: Sentinel-2 band names needed, e.g. ``("B4", "B3", "B2", "B8")``.

    Returns:
        Band name -> file.

    Raises:
        MissingInputError: a source does not exist, or no file holds one of ``bands``.
        InputError: an explicitly given file names no band (or several), or one band has several
            files at the same resolution.
    """
    candidates, where = band_candidates(sources)
    missing = [band for band in bands if not candidates.get(band)]
    if missing:
        looked = ", ".join(f"'*_{b[0]}{b[1:].zfill(2)}*.jp2' or '{b}.tif'" for b in missing[:2])
        raise MissingInputError(
            f"{where}: no file for Sentinel-2 band{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(looked for names like {looked}); add {'them' if len(missing) > 1 else 'it'} or choose another "
            f"`bands` profile"
        )
    chosen: dict[str, Path] = {}
    for band in bands:
        files = candidates[band]
        chosen[band] = files[0] if len(files) == 1 else _finest(band, files)
    return chosen


def band_candidates(sources) -> tuple[dict[str, list[Path]], str]:
    """Band name -> the files among ``sources`` that hold it, and the sources as text."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sources = [Path(s) for s in sources]
    if not sources:
        raise MissingInputError("no Sentinel-2 input given; pass a folder or band files")
    candidates: dict[str, list[Path]] = {}
    for src in sources:
        if not src.exists():
            raise MissingInputError(f"{src}: Sentinel-2 input does not exist")
        if src.is_dir():
            files = sorted(p for p in src.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
            for p in files:
                band = band_of(p.name)
                if band is not None:
                    candidates.setdefault(band, []).append(p)
        else:
            band = band_of(src.name)
            if band is None:
                raise InputError(
                    f"{src}: cannot tell which Sentinel-2 band this file holds; name it like "
                    f"'..._B04.tif' (one band name per file)"
                )
            candidates.setdefault(band, []).append(src)
    return candidates, ", ".join(str(s) for s in sources)


def fullest_band_set(sources: str | os.PathLike | Sequence[str | os.PathLike], dem: object = None,
                     slope: object = None) -> tuple[BandProfile, dict[str, str]]:
    """The fullest L4S-ordered band set ``sources`` (and a DEM / slope raster) can fill.

    Returns:
        The band set, and each L4S band left out with why.

    Raises:
        MissingInputError: no source holds any L4S Sentinel-2 band.
    """
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if len(items) == 1 and is_product(items[0]):  # a SAFE / zip / STAC Item: its metadata lists its bands
        product = open_product(items[0])
        candidates, where = set(product.files), product.where
    else:
        candidates, where = band_candidates(sources)
    return band_set_of(candidates, where, dem, slope)


def band_set_of(present, where: object, dem: object = None, slope: object = None) -> tuple[BandProfile, dict[str, str]]:
    """:func:`fullest_band_set` of the Sentinel-2 bands ``present`` in the input ``where`` (for messages)."""
    candidates = set(present)
    names, left_out = [], {}
    for b in L4S_BANDS:
        if b in TERRAIN_BANDS:
            ok = dem is not None or (b == "slope" and slope is not None)
            why = "no DEM"
        else:
            ok, why = b in candidates, "no band file"
        if ok:
            names.append(b)
        else:
            left_out[b] = why
    if not any(b not in TERRAIN_BANDS for b in names):
        raise MissingInputError(f"{where}: no Sentinel-2 band file found (names like '*_B04*.jp2' or 'B4.tif')")
    return get_profile(names), left_out


def _finest(band: str, files: list[Path]) -> Path:
    sizes = []
    for p in files:
        with open_raster(p, f"band {band}") as src:
            sizes.append(abs(src.transform.a))
    best = min(sizes)
    winners = [p for p, s in zip(files, sizes, strict=False) if math.isclose(s, best, rel_tol=1e-9)]
    if len(winners) > 1:
        raise InputError(
            f"{winners[0].parent}: several files hold band {band} at the same resolution "
            f"({', '.join(p.name for p in winners)}); pass the band files explicitly"
        )
    return winners[0]

def resolve_s2(s2: str | os.PathLike | Sequence[str | os.PathLike], bands: Sequence[str],
               offset: float | None = None) -> S2Source:
    """Resolve the Sentinel-2 input of :func:`lsmap.data.stack.stack_scene` to band files by name, with their radiometry.

    Args:
        s2: One product (a ``.SAFE`` folder, a ``.SAFE.zip``, a STAC Item file or URL) or loose band
            files / folders of band files.
        bands: Sentinel-2 band names needed.
        offset: DN offset of loose band files (they carry no metadata); refused for products, which
            declare their own.

    Raises:
        MissingInputError: an input or a needed band does not exist.
        InputError: a bad product, several products, or ``offset`` with a product.
    """
    items = [s2] if isinstance(s2, (str, os.PathLike)) else list(s2)
    if len(items) == 1 and is_product(items[0]):
        source = open_product(items[0])
        if offset is not None:
            if source.offsets is not None:
                raise InputError(f"{source.where}: `offset` is for loose band files; this {source.kind} input "
                                 f"declares its own DN offsets (drop `offset`)")
            source = replace(source, offsets={b: float(offset) for b in source.files})
        return source.select(bands)
    products = [str(i) for i in items if is_product(i)]
    if products:
        raise InputError(f"{products[0]}: a Sentinel-2 product is stacked on its own; give one product "
                         f"(SAFE folder, zip or STAC Item) or loose band files, not both")
    inside = {enclosing_product(i) for i in items}
    if offset is None and len(inside) == 1 and None not in inside:
        safe = inside.pop()
        raise InputError(f"{items[0]}: these band files lie inside the product {safe.name}; give the product itself "
                         f"({safe}), which declares its DN offset and brings its SCL, or give `offset` with the "
                         f"band files")
    files = find_band_files(items, bands)
    offsets = None if offset is None else {b: float(offset) for b in files}
    return S2Source("files", ", ".join(str(i) for i in items), {b: str(p) for b, p in files.items()}, offsets)

