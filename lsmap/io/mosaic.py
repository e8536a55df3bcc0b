"""DEM tiles as downloaded (e.g. Copernicus DEM GLO-30 1-degree tiles): several files or a folder, one raster.

:func:`dem_mosaic` writes a GDAL VRT that mosaics the tiles on the fly (nothing is copied): the
tiles must share one CRS and have one band; the VRT's pixel size is the finest of the tiles and
each tile is placed by its own georeferencing (a tile's nodata pixels do not hide a neighbour's
data). :func:`coverage` measures how much of an area the tiles cover, so a missing tile is found
before any work.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from lsmap.errors import InputError, MissingInputError
from lsmap.io.rasters import open_raster

#: Files taken from a DEM folder.
DEM_SUFFIXES = (".tif", ".tiff", ".vrt", ".hgt", ".dt1", ".dt2", ".img", ".asc")
_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64"}


def dem_files(dem: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The DEM files given as one file, several files, or folders (searched, not recursively).

    Raises:
        MissingInputError: a path does not exist, or a folder holds no raster.
    """
    items = [dem] if isinstance(dem, (str, os.PathLike)) else list(dem)
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if not p.exists():
            raise MissingInputError(f"{p}: DEM does not exist")
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in DEM_SUFFIXES)
            if not found:
                raise MissingInputError(f"{p}: DEM folder holds no raster ({', '.join(DEM_SUFFIXES)}); "
                                        f"put the DEM tiles there or give the files")
            files.extend(found)
        else:
            files.append(p)
    if not files:
        raise MissingInputError("no DEM given; pass `dem` FILE (several files or a folder of tiles work too)")
    return files


def dem_mosaic(files: Sequence[Path], out: Path) -> Path:
    """Write a VRT mosaicking ``files`` at ``out`` (absolute source paths) and return ``out``.

    Raises:
        InputError: a tile is unreadable, has several bands, has no CRS, or has another CRS than the
            first tile, or a grid that is rotated.
    """
    tiles = []
    crs = None
    for f in files:
        with open_raster(f, "DEM tile") as src:
            if src.count != 1:
                raise InputError(f"{f}: DEM tile has {src.count} bands; expected one band per file")
            if src.crs is None:
                raise InputError(f"{f}: DEM tile has no CRS; georeference it (e.g. gdal_edit.py -a_srs EPSG:4326)")
            if src.transform.b or src.transform.d:
                raise InputError(f"{f}: DEM tile grid is rotated; warp it to a north-up grid first (gdalwarp)")
            if crs is None:
                crs = src.crs
            elif src.crs != crs:
                raise InputError(f"{f}: DEM tile is in {src.crs}, the first tile ({files[0]}) in {crs}; "
                                 f"warp the tiles to one CRS first (gdalwarp -t_srs)")
            tiles.append((Path(f).resolve(), src.transform, src.width, src.height, src.dtypes[0], src.nodata,
                          src.block_shapes[0]))
    resx = min(abs(t[1].a) for t in tiles)
    resy = min(abs(t[1].e) for t in tiles)
    left = min(t[1].c for t in tiles)
    top = max(t[1].f for t in tiles)
    right = max(t[1].c + t[1].a * t[2] for t in tiles)
    bottom = min(t[1].f + t[1].e * t[3] for t in tiles)
    width = max(1, math.ceil((right - left) / resx - 1e-6))
    height = max(1, math.ceil((top - bottom) / resy - 1e-6))
    dtypes = {t[4] for t in tiles}
    dtype = _GDAL_TYPES.get(dtypes.pop(), "Float32") if len(dtypes) == 1 else "Float32"
    nodata = next((t[5] for t in tiles if t[5] is not None), None)
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
             f"  <SRS>{escape(crs.to_wkt())}</SRS>",
             f"  <GeoTransform>{left!r}, {resx!r}, 0.0, {top!r}, 0.0, {-resy!r}</GeoTransform>",
             f'  <VRTRasterBand dataType="{dtype}" band="1">']
    if nodata is not None:
        lines.append(f"    <NoDataValue>{nodata!r}</NoDataValue>")
    for path, tr, w, h, dt, nd, (by, bx) in tiles:
        x_off = (tr.c - left) / resx
        y_off = (top - tr.f) / resy
        lines += ["    <ComplexSource>",
                  f'      <SourceFilename relativeToVRT="0">{escape(str(path))}</SourceFilename>',
                  "      <SourceBand>1</SourceBand>",
                  f'      <SourceProperties RasterXSize="{w}" RasterYSize="{h}" DataType="{_GDAL_TYPES.get(dt, dt)}" '
                  f'BlockXSize="{bx}" BlockYSize="{by}" />',
                  f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}" />',
                  f'      <DstRect xOff="{x_off!r}" yOff="{y_off!r}" xSize="{w * abs(tr.a) / resx!r}" '
                  f'ySize="{h * abs(tr.e) / resy!r}" />']
        if nd is not None:
            lines.append(f"      <NODATA>{nd!r}</NODATA>")
        lines.append("    </ComplexSource>")
    lines += ["  </VRTRasterBand>", "</VRTDataset>", ""]
    out.write_text("\n".join(lines))
    return out


def coverage(files: Sequence[Path], crs, transform, width: int, height: int) -> float:
    """Fraction of a grid's footprint (``crs``/``transform``/size) that the tiles' footprints cover."""
    from pyproj import Transformer
    from shapely import segmentize, union_all
    from shapely import transform as shp_transform
    from shapely.geometry import box

    xs = [transform.c, transform.c + transform.a * width]
    ys = [transform.f, transform.f + transform.e * height]
    area = box(min(xs), min(ys), max(xs), max(ys))
    boxes, tile_crs = [], None
    for f in files:
        with open_raster(f, "DEM tile") as src:
            boxes.append(box(*src.bounds))
            tile_crs = src.crs
    if tile_crs is None:
        return 0.0
    if tile_crs != crs:
        area = segmentize(area, max(area.bounds[2] - area.bounds[0], area.bounds[3] - area.bounds[1]) / 50.0)
        try:
            tr = Transformer.from_crs(crs.to_wkt(), tile_crs.to_wkt(), always_xy=True)
            area = shp_transform(area, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        except Exception:  # noqa: BLE001 - CRSs PROJ cannot relate: nothing covered
            return 0.0
    if not area.is_valid or area.area == 0:
        return 0.0
    return float(area.intersection(union_all(boxes)).area / area.area)
