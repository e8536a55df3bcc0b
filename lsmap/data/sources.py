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
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lsmap.data.masks import MaskSpec, check_masks, product_mask_layers
from lsmap.errors import InputError
from lsmap.io.s2product import is_product, is_url


def holds_band_files(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` (searched recursively) holds a raster named for a Sentinel-2 band (``B04.tif``,
    ``..._B8A_20m.jp2``), as ``lsmap stack`` finds loose bands."""
    from lsmap.io.bandfiles import RASTER_SUFFIXES, band_of

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
        return _checked_inputs(dict(source))
    if not isinstance(source, (str, os.PathLike)):
        if not hasattr(source, "__dict__"):
            raise InputError(f"the input must be a path (a GeoTIFF, a Sentinel-2 product or a band folder) or the "
                             f"inputs of 'lsmap stack' as a mapping (got {type(source).__name__})")
        return _checked_inputs(dict(vars(source)))
    if is_product(source) or (folders and os.path.isdir(source)):
        return {"s2": source}
    return None


def scene_inputs(scene: Any, dem: Any = None, slope: str | os.PathLike | None = None, offset: float | None = None, *,
                 folders: bool = True) -> Any:
    """``scene`` with the stacking inputs given beside it (``--dem``, ``--slope``, ``--offset`` on the command line,
    ``dem=``, ``slope=``, ``offset=`` in :func:`lsmap.detect`, :func:`lsmap.tile_scene`, :func:`lsmap.compute_stats`):
    the mapping :func:`stack_arguments` takes when a DEM, a product or a band folder is given, else ``scene``.

    Args:
        scene: A path (a stacked GeoTIFF, a product, a band folder) or stacking inputs as a mapping.
        dem: DEM file(s) to stack with the scene.
        slope: Slope raster (with ``dem``).
        offset: DN offset of loose band files (-1000 for processing baseline 04.00 and later).
        folders: A folder is band files; ``False`` (statistics, where a folder may hold patches): only with a
            ``dem`` or ``offset``.

    Raises:
        InputError: an empty path, ``slope`` without ``dem``, ``offset`` for a stacked GeoTIFF, or any of them
            beside a mapping.
    """
    from lsmap.core.checks import check_input_path

    check_input_path("scene", scene, "a scene: a GeoTIFF, a Sentinel-2 product or a band folder")
    if dem is not None and not isinstance(dem, (str, os.PathLike)):
        dem = list(dem) or None
    if dem is None and slope is None and offset is None:  # a product or folder is found by stack_arguments
        return scene
    if not isinstance(scene, (str, os.PathLike)):
        raise InputError("`dem`, `slope` and `offset` go inside the stacking inputs when the scene is given as a "
                         "mapping ({'s2': ..., 'dem': ..., 'offset': ...})")
    if slope is not None and not dem:
        raise InputError("`slope` needs `dem` (the scene is then the Sentinel-2 product or band folder)")
    folder = os.path.isdir(scene) and (folders or offset is not None)
    if dem or is_product(scene) or folder:
        return {"s2": scene, "dem": dem, "offset": offset, **({"slope": slope} if slope else {})}
    if offset is not None:
        raise InputError(f"{scene} is a stacked scene; `offset` is for the band files or product that 'lsmap stack' "
                         f"takes")
    return scene


#: The arguments of :func:`lsmap.data.stack.stack_scene` that stacking inputs may hold (not its output options).
STACK_INPUTS = ("s2", "dem", "slope", "bands", "block", "creation_options", "offset", "aoi", "layers", "encoding",
                "strict_offset")


def _checked_inputs(args: dict) -> dict:
    """Stacking inputs given as a mapping: an ``s2`` and only :func:`lsmap.data.stack.stack_scene`'s arguments
    (a mistyped key was a TypeError deep in the stacking)."""
    known = set(STACK_INPUTS)
    unknown = sorted(set(args) - known)
    if unknown:
        raise InputError(f"unknown stacking input(s) {', '.join(map(str, unknown))}; the inputs of 'lsmap stack' are: "
                         f"{', '.join(sorted(known))}")
    if args.get("s2") is None:
        raise InputError("the inputs of 'lsmap stack' need `s2`: a Sentinel-2 product or band files")
    return args


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
        args: ``stack_scene`` arguments; their own ``bands`` or ``layers`` win, ``aoi`` given here replaces theirs.
            ``strict_offset`` is always on (a caller's results would be wrong on offset DNs): ``False`` is
            refused.
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
    if kwargs.pop("strict_offset", True) is not True:  # it came twice to stack_scene: a TypeError (a review)
        raise InputError("`strict_offset` False applies to 'lsmap stack' only: tile, stats and detect refuse DNs "
                         "that look offset; give `offset` (e.g. -1000) instead")
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
    if (kwargs.get("dem") or kwargs.get("slope")) and kwargs.get("bands") is not None:
        from lsmap.core.bands import TERRAIN_BANDS, get_profile

        read = get_profile(kwargs["bands"])
        if not TERRAIN_BANDS & set(read.bands):  # stack_scene refuses it, as asked there
            import warnings

            from lsmap.errors import LsmapWarning, user_level

            warnings.warn(f"`dem` is not used: the bands read here ({read.name}) have no slope or DEM band; it is not "
                          f"stacked", LsmapWarning, stacklevel=user_level())
            kwargs.pop("dem", None)
            kwargs.pop("slope", None)
    # DNs that look offset with no offset given are refused, not warned about: the caller's results would be wrong
    result = stack_scene(**kwargs, out=work / "stack.tif", strict_offset=True)
    if "SCL" in written:
        spec = replace(spec, scl=written["SCL"])
    if "MSK_CLDPRB" in written:
        spec = replace(spec, cloud_prob=written["MSK_CLDPRB"])
    return Path(result.path), spec


def input_bands(args: Mapping) -> tuple[str, ...]:
    """The bands stacking ``args`` (:func:`stack_arguments`) can give: their ``bands``, or what the product's
    metadata or the band files' names list, and a DEM."""
    from lsmap.core.bands import get_profile
    from lsmap.io.bandfiles import fullest_band_set

    if args.get("bands") is not None:
        return get_profile(args["bands"]).bands
    return fullest_band_set(args.get("s2"), args.get("dem"), args.get("slope"))[0].bands


def input_band_set(scene: Any, args: Mapping | None):
    """The band set of an input when the caller gives none: what stacking ``args`` (:func:`stack_arguments`)
    can give (:func:`input_bands`: ``lsmap stack``'s own choice), else the stacked GeoTIFF ``scene``'s band
    names (its band descriptions, as ``lsmap stack`` writes them; the Landslide4Sense order for a 14-band file
    without them).

    Raises:
        MissingInputError: no such scene.
        InputError: a file whose bands cannot be told (no descriptions, not 14 bands): give its band set.
    """
    from lsmap.core.bands import get_profile
    from lsmap.io.scene import scene_band_names, scene_info

    if args is not None:
        return get_profile(input_bands(args))
    return get_profile(scene_band_names(scene_info(scene)))


def default_model_for_inputs(args: Mapping, bands: tuple[str, ...] | None = None) -> Path:
    """The shipped default model for stacking ``args``, chosen from the bands they can give (``bands``, when the
    caller has them: :func:`input_bands`) before anything is stacked.

    Raises:
        CheckpointError: no shipped model fits; the message names the input as given and says what each needs.
    """
    from lsmap.learn.models import default_model_for

    fix = ("give inputs with those bands (a DEM as `dem` for slope and DEM) or pass `model`"
           if args.get("dem") is None else "give inputs with those bands or pass `model`")
    return default_model_for(input_bands(args) if bands is None else bands, source_name(args), fix)


def offset_hint(files: Sequence[str | os.PathLike], side: int = 512) -> str:
    """What a quick look at loose band files says of their DN offset, for ``lsmap info``: the smallest non-zero DN
    of a ``side`` px nearest-neighbour sample of each file, and whether it looks offset by the rule
    ``lsmap stack`` applies to every pixel (:data:`lsmap.data.stack.OFFSET_DN_HINT`: no value below 1000)."""

    import numpy as np

    from lsmap.data.stack import OFFSET_BELOW_SHARE, OFFSET_DN_HINT
    from lsmap.io.rasters import open_raster, read_window

    low, shares = None, []
    for path in files:
        with open_raster(path, "band file") as src:
            f = max(1, max(src.width, src.height) // side)
            a = read_window(src, 1, None, out_shape=(max(1, src.height // f), max(1, src.width // f)))
        a = a[a > 0]  # 0: no data in Sentinel-2 products
        if a.size:
            low = int(a.min()) if low is None else min(low, int(a.min()))
            shares.append(float((a < OFFSET_DN_HINT).mean()))
    if low is None:
        return "no valid DN in a sample of the band files"
    share = float(np.median(shares))
    if share <= OFFSET_BELOW_SHARE:
        seen = f"no DN below {low}" if share == 0 else f"{100 * share:.1f} % of the DNs below {OFFSET_DN_HINT:g}"
        return (f"{seen} in a {side} px sample (the median band): looks offset (processing baseline >= "
                f"04.00 adds 1000): give --offset -1000")
    return (f"DNs down to {low}, {100 * share:.0f} % below {OFFSET_DN_HINT:g}, in a {side} px sample: not offset "
            f"(no --offset needed)")


def describe_source(source: str | os.PathLike) -> dict:
    """What lsmap sees in an input, before any work: for ``lsmap info`` and scripts that check downloads.

    A product (SAFE folder or zip, STAC Item file or URL) or a band folder: its kind, level, baseline and
    sensing time (products), the Sentinel-2 bands it has, the DN offset lsmap applies (or that it is unknown),
    its mask layers, the L4S band set a stack of it fills and the default model ``lsmap detect`` would take
    (or why none fits). A stacked GeoTIFF: its size, CRS, pixel size, bands, encoding, the DN offsets recorded
    at stacking (and whether its band files looked offset) and the default model.

    Raises:
        MissingInputError: no such input.
        InputError: an unreadable input.
    """
    from lsmap.core.bands import BAND_NAMES
    from lsmap.core.checks import check_input_path
    from lsmap.errors import LsmapError
    from lsmap.learn.models import default_model_for

    check_input_path("source", source, "a scene, a Sentinel-2 product or a band folder")

    def default_for(choose) -> dict:
        try:
            return {"default_model": choose().stem}
        except LsmapError as e:
            return {"default_model": None, "default_model_why": str(e)}

    if is_product(source) or os.path.isdir(source):
        from lsmap.io.bandfiles import band_candidates, band_set_of
        from lsmap.io.s2product import open_product

        if is_product(source):  # opened once: its bands give the band set too
            s2 = open_product(source)
            out = {"input": s2.where, "kind": s2.kind}
            if s2.metadata is not None:
                m = s2.metadata
                out |= {"level": m.level, "baseline": m.baseline, "sensing_time": m.sensing_time,
                        "image_format": m.image_format}
            found, layers, quant, where = set(s2.files), sorted(s2.layers), s2.quantification, s2.where
            hint = {}  # a product declares its offset
            offsets = ({b: s2.dn_offset(b) for b in BAND_NAMES if b in s2.files} if s2.offsets is not None else None)
        elif holds_band_files(source):
            out = {"input": str(source), "kind": "band files"}
            candidates, where = band_candidates(source)
            found, layers, quant, offsets = set(candidates), [], None, None
            hint = {"dn_offset_hint": offset_hint([files[0] for files in candidates.values()])}
        else:
            raise InputError(f"{source}: no Sentinel-2 band file in this folder (names like '*_B04*.jp2' or "
                             f"'B4.tif'); give a product, a band folder or a stack")
        profile, left_out = band_set_of(found, where)
        return out | {"bands": [b for b in BAND_NAMES if b in found], "dn_offsets": offsets, **hint,
                      "quantification": quant,
                      "layers": layers, "stack_bands": profile.name, "stack_left_out": left_out,
                      **default_for(lambda: default_model_for_inputs({"s2": source}, profile.bands))}
    from lsmap.io.rasters import missing_tiles, open_raster
    from lsmap.io.scene import OFFSET_TAG, STACK_TAG, scene_band_names, scene_info

    info = scene_info(source)
    with open_raster(source, "scene") as src:
        tags = src.tags()
        dtype = src.dtypes[0]
        cut = missing_tiles(src, Path(source).stat().st_size) if Path(source).is_file() else []
    try:
        bands = list(scene_band_names(info))
    except LsmapError:
        bands = None
    out = {"input": str(source), "kind": "stack" if STACK_TAG in tags else "raster",
           "width": info.width, "height": info.height, "crs": info.crs.to_string(),
           "pixel_size": [abs(info.transform.a), abs(info.transform.e)], "bands": bands,
           "encoding": tags.get("LSMAP_ENCODING", dtype), "dn_offsets": tags.get("LSMAP_DN_OFFSETS"),
           "dn_looks_offset": OFFSET_TAG in tags,
           "complete": ("yes" if not cut else f"no: {len(cut)} tiles lie past the end of the file ({cut[0]} the "
                        f"first): it was cut short; copy or download it again")}
    return out | (default_for(lambda: default_model_for(bands, source)) if bands else
                  {"default_model": None, "default_model_why": "the file does not name its bands"})
