"""Scene sources: a stacked GeoTIFF, or the inputs of ``lsmap stack`` stacked into a scratch folder first.

Detection, statistics and tiling read a scene as ``lsmap stack`` writes it. They also take what an
analyst downloads, and stack it themselves (on the L4S scale, with the bands they need):

- a Sentinel-2 product: a ``.SAFE`` folder, a ``.SAFE.zip`` or a STAC Item (JSON file or URL);
- a folder of band files (where the caller says folders are band files, not patches);
- a mapping of :func:`lsmap.data.stack.stack_scene` arguments: ``{"s2": folder, "dem": dem, "offset": -1000}``.

Beside the bands, a product's own mask layers are written on the stack's grid, those the
not-observed spec uses (:func:`lsmap.data.masks.product_mask_layers`: SCL by default, MSK_CLDPRB
with ``cloud_prob_max``), and the spec is pointed at them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from lsmap.data.masks import MaskSpec, check_masks, product_mask_layers
from lsmap.io.s2product import is_product, is_url


def holds_band_files(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` (searched recursively) holds a raster named for a Sentinel-2 band (``B04.tif``,
    ``..._B8A_20m.jp2``), as ``lsmap stack`` finds loose bands."""
    from lsmap.data.stack import RASTER_SUFFIXES, band_of

    return any(p.suffix.lower() in RASTER_SUFFIXES and band_of(p.name) is not None for p in Path(folder).rglob("*"))


def stack_arguments(source: Any, *, folders: bool = True) -> dict | None:
    """The :func:`~lsmap.data.stack.stack_scene` arguments of ``source``, or ``None`` for a stacked GeoTIFF.

    Args:
        source: A GeoTIFF path, a product path, a band folder, or a mapping (or namespace) of
            ``stack_scene`` arguments.
        folders: A directory that is not a product is a folder of band files (``False``: leave it to
            the caller, e.g. a patch folder).
    """
    if isinstance(source, Mapping):
        return dict(source)
    if not isinstance(source, (str, os.PathLike)):
        return dict(vars(source))
    if is_product(source) or (folders and os.path.isdir(source)):
        return {"s2": source}
    return None


def source_name(args: Mapping) -> str:
    """The Sentinel-2 input(s) of stacking ``args`` for records: URLs as given, local paths resolved."""
    s2 = args.get("s2")
    items = s2 if isinstance(s2, (list, tuple)) else [s2]
    names = [str(x) if is_url(x) else str(Path(x).resolve()) for x in items if x is not None]
    return ",".join(names) or "stacked inputs"


def stack_source(args: Mapping, work: Path, bands: Any, spec: MaskSpec, *, aoi: Any = None,
                 layers: Mapping[str, str] | None = None, progress: bool = False) -> tuple[Path, MaskSpec]:
    """Stack ``args`` (:func:`stack_arguments`) into ``work`` with the product mask layers ``spec`` needs.

    Args:
        args: ``stack_scene`` arguments; their own ``bands``, ``aoi`` or ``layers`` win.
        work: Scratch folder (the caller removes it).
        bands: Band profile to stack (the bands the caller reads).
        spec: The not-observed spec (:func:`lsmap.data.masks.mask_spec`).
        aoi: Crop before any work (:class:`lsmap.io.aoi.AOI`).
        layers: The product layers to write (:func:`lsmap.data.masks.product_mask_layers`, when the
            caller checked them before its work); found here when ``None``.
        progress: Show a progress bar.

    Returns:
        The stack's path, and ``spec`` with its SCL and cloud probability taken from the written layers.

    Raises:
        InputError: bad inputs (:func:`lsmap.data.stack.stack_scene`), a ``cloud_prob_max`` without
            MSK_CLDPRB, or bad mask files.
    """
    from lsmap.data.stack import stack_scene

    kwargs = dict(args)
    kwargs.setdefault("bands", bands)
    if aoi is not None:
        kwargs["aoi"] = aoi
    check_masks(spec, None)  # overlap is checked on the stack
    if layers is None:
        layers = product_mask_layers(kwargs.get("s2"), spec)
    written: dict[str, Path] = {}
    if layers and not kwargs.get("layers"):
        written = {name: work / f"{name.lower()}.tif" for name in layers}
        kwargs["layers"] = dict(written)
    kwargs.setdefault("progress", progress)
    # DNs that look offset with no offset given are refused, not warned about: the caller's results would be wrong
    result = stack_scene(**kwargs, out=work / "stack.tif", strict_offset=True)
    if "SCL" in written:
        spec = replace(spec, scl=written["SCL"])
    if "MSK_CLDPRB" in written:
        spec = replace(spec, cloud_prob=written["MSK_CLDPRB"])
    return Path(result.path), spec
