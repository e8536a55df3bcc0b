"""Test-only Sentinel-2 products: a small fake SAFE (MTD XML + band rasters), its zip, STAC Items with
COG assets, and a loopback HTTP server that answers range requests (generated data only)."""

from __future__ import annotations

import http.server
import os
import re
import threading
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

CRS = "EPSG:32633"
X0, Y0 = 600000.0, 5000040.0  # top-left corner of the fake tile
SIZE = 120  # 10 m pixels: a 1.2 km tile
BAND_IDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
NATIVE = {"B1": 60, "B2": 10, "B3": 10, "B4": 10, "B5": 20, "B6": 20, "B7": 20, "B8": 10, "B8A": 20, "B9": 60,
          "B10": 60, "B11": 20, "B12": 20}


def band_dn(band: str, res: int, seed: int = 0, base: int = 1100) -> np.ndarray:
    """Smooth uint16 DNs of ``band`` at ``res`` m in [base, base + ~3000], 0 (no data) in the top-left corner."""
    n = SIZE * 10 // res
    rng = np.random.default_rng(zlib.crc32(f"{band}/{res}/{seed}".encode()))
    y, x = np.mgrid[0:n, 0:n] / n
    k = BAND_IDS.index(band) + 1
    dn = base + np.floor(1500 * (1 + np.sin(2 * np.pi * (k * x + y / k)))) + rng.integers(0, 50, (n, n))
    dn[: n // 6, : n // 6] = 0
    return dn.astype(np.uint16)


def write_band(path: Path, arr: np.ndarray, res: int, *, driver: str = "GTiff", nodata=None) -> Path:
    kw = {"driver": driver}
    if driver == "COG":
        kw.update(blocksize=128, overview_count=0)
    if driver == "JP2OpenJPEG":  # lossless, as Sentinel-2 JPEG 2000 files are
        kw.update(REVERSIBLE="YES", QUALITY=100)
    with rasterio.open(path, "w", width=arr.shape[1], height=arr.shape[0], count=1, dtype=arr.dtype.name, crs=CRS,
                       transform=from_origin(X0, Y0, res, res), nodata=nodata, **kw) as dst:
        dst.write(arr, 1)
    return path


def scl_classes(res: int = 20) -> np.ndarray:
    """A scene classification raster: stripes of classes 0..11."""
    n = SIZE * 10 // res
    return (np.arange(n)[None, :] * 12 // n).repeat(n, 0).astype(np.uint8)


def mtd_xml(name: str, files: Sequence[str], *, level: str = "L2A", baseline: str = "04.00",
            offsets: dict[str, float] | None = None, fmt: str = "GeoTIFF", quantification: int = 10000) -> str:
    """A product metadata file of the layout of the real ones (namespaces, lists, band ids)."""
    root = f"Level-{level[1:]}_User_Product"
    q = "BOA_QUANTIFICATION_VALUE" if level == "L2A" else "QUANTIFICATION_VALUE"
    off = "BOA_ADD_OFFSET" if level == "L2A" else "RADIO_ADD_OFFSET"
    image_files = "\n".join(f"<IMAGE_FILE>{f}</IMAGE_FILE>" for f in files)
    offset_list = ""
    if offsets:
        offset_list = (f"<{off}_VALUES_LIST>"
                       + "".join(f'<{off} band_id="{BAND_IDS.index(b)}">{v:g}</{off}>' for b, v in offsets.items())
                       + f"</{off}_VALUES_LIST>")
    spectral = "".join(f'<Spectral_Information bandId="{i}" physicalBand="{b}"><RESOLUTION>{NATIVE[b]}</RESOLUTION>'
                       f"</Spectral_Information>" for i, b in enumerate(BAND_IDS))
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:{root} xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_{root[:8]}.xsd">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>2024-07-30T05:10:31.024Z</PRODUCT_START_TIME>
      <PRODUCT_URI>{name}</PRODUCT_URI>
      <PROCESSING_LEVEL>Level-{level[1:]}</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI{level[1:]}</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
      <Product_Organisation><Granule_List><Granule granuleIdentifier="G" imageFormat="{fmt}">
{image_files}
      </Granule></Granule_List></Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      <QUANTIFICATION_VALUES_LIST><{q} unit="none">{quantification}</{q}>
        <AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>
      {offset_list}
      <Spectral_Information_List>{spectral}</Spectral_Information_List>
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:{root}>
"""


def make_safe(parent: Path, *, level: str = "L2A", baseline: str = "04.00", offset: float | None = -1000,
              bands: Sequence[str] = ("B2", "B3", "B4", "B8", "B5", "B11"),
              present: dict[str, Sequence[int]] | None = None,
              fmt: str = "GeoTIFF", scl: bool = True, cldprb: bool = True, seed: int = 0) -> Path:
    """Write a fake SAFE product under ``parent`` and return its folder.

    L2A: the metadata lists each band at its native resolution and every coarser one (as real
    products do); ``present`` (band -> resolutions) says which files exist (default: all listed).
    DNs carry ``-offset`` (so DN + offset is the reflectance DN).
    """
    tile, date = "T33TWN", "20240730T051031"
    name = f"S2B_MSI{level}_{date}_N{baseline.replace('.', '')}_R062_{tile}_20240730T080001.SAFE"
    safe = parent / name
    granule = f"GRANULE/{level}_{tile}_A038608_{date}"
    ext = ".jp2" if fmt == "JPEG2000" else ".tif"
    driver = "JP2OpenJPEG" if fmt == "JPEG2000" else "GTiff"
    files = []
    shift = int(-offset) if offset else 0
    for b in bands:
        listed = [r for r in (10, 20, 60) if r >= NATIVE[b]] if level == "L2A" else [NATIVE[b]]
        for res in listed:
            rel = (f"{granule}/IMG_DATA/R{res}m/{tile}_{date}_B{b[1:].zfill(2)}_{res}m" if level == "L2A"
                   else f"{granule}/IMG_DATA/{tile}_{date}_B{b[1:].zfill(2)}")
            files.append(rel)
            if present is not None and res not in present.get(b, listed):
                continue
            (safe / rel).parent.mkdir(parents=True, exist_ok=True)
            write_band(safe / (rel + ext), band_dn(b, res, seed, base=100 + shift), res, driver=driver)
    if level == "L2A":
        for res in (20, 60):
            rel = f"{granule}/IMG_DATA/R{res}m/{tile}_{date}_SCL_{res}m"
            files.append(rel)
            if scl:
                (safe / rel).parent.mkdir(parents=True, exist_ok=True)
                write_band(safe / (rel + ext), scl_classes(res), res, driver=driver)
        if cldprb:
            (safe / granule / "QI_DATA").mkdir(parents=True, exist_ok=True)
            write_band(safe / granule / "QI_DATA" / f"MSK_CLDPRB_20m{ext}",
                       (scl_classes(20).astype(np.uint16) * 9).astype(np.uint8), 20, driver=driver)
    offsets = {b: offset for b in BAND_IDS} if offset is not None else None
    (safe / f"MTD_MSI{level}.xml").write_text(mtd_xml(name, files, level=level, baseline=baseline,
                                                      offsets=offsets, fmt=fmt))
    (safe / "manifest.safe").write_text("<xfdu/>")
    return safe


def zip_safe(safe: Path, out: Path | None = None) -> Path:
    """Zip a SAFE folder as the Copernicus hub does (the .SAFE folder at the top of the archive)."""
    out = out or safe.parent / (safe.name + ".zip")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(safe.rglob("*")):
            zf.write(p, p.relative_to(safe.parent).as_posix())
    return out


def loose_bands(safe: Path, folder: Path, bands: Sequence[str], res: int = 10, offset: float = -1000) -> Path:
    """The 10 m (or ``res``) band files of ``safe`` as loose files ``B04.tif``... with the offset applied."""
    folder.mkdir(parents=True, exist_ok=True)
    for b in bands:
        src = next(safe.rglob(f"*_B{b[1:].zfill(2)}_{res}m.*"))
        with rasterio.open(src) as s:
            dn = s.read(1).astype(np.int32)
            r = int(round(s.transform.a))
        dn = np.where(dn > 0, dn + int(offset), 0).astype(np.uint16)
        write_band(folder / f"B{b[1:].zfill(2)}.tif", dn, r)
    return folder


def make_stac_item(folder: Path, bands: dict[str, str], *, raster_offset: bool = True, baseline: str | None = "05.10",
                   seed: int = 0, scl: str | None = "scl", base_url: str | None = None) -> Path:
    """Write COG assets (DN with the +1000 offset) and a STAC Item JSON with relative hrefs.

    Args:
        bands: asset key -> band (e.g. ``{"red": "B4"}`` or ``{"B04": "B4"}``).
        raster_offset: give ``raster:bands`` scale 0.0001 / offset -0.1 (Earth Search style).
        baseline: ``s2:processing_baseline`` property (Planetary Computer style), or none.
    """
    import pystac
    from shapely.geometry import box, mapping

    folder.mkdir(parents=True, exist_ok=True)
    from datetime import UTC, datetime

    item = pystac.Item(id="S2B_33TWN_20240730_0_L2A", geometry=mapping(box(14.0, 45.0, 14.02, 45.01)),
                       bbox=[14.0, 45.0, 14.02, 45.01], datetime=datetime(2024, 7, 30, 5, 10, 31, tzinfo=UTC),
                       properties={"s2:processing_baseline": baseline} if baseline else {})
    for key, band in bands.items():
        res = NATIVE[band]
        write_band(folder / f"{band}.tif", band_dn(band, res, seed, base=1100), res, driver="COG", nodata=0)
        extra = {"raster:bands": [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}]} \
            if raster_offset else {}
        item.add_asset(key, pystac.Asset(href=f"./{band}.tif", media_type=pystac.MediaType.COG, roles=["data"],
                                         extra_fields=extra))
    if scl:
        write_band(folder / "SCL.tif", scl_classes(20), 20, driver="COG")
        item.add_asset(scl, pystac.Asset(href="./SCL.tif", media_type=pystac.MediaType.COG, roles=["data"]))
    path = folder / "item.json"
    d = item.to_dict(include_self_link=False, transform_hrefs=False)
    import json

    path.write_text(json.dumps(d))
    return path


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP range requests (``Range: bytes=a-b`` -> 206), as object stores serve COGs."""

    ranges: list[str] = []

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def send_head(self):
        path = self.translate_path(self.path)
        m = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
        if not os.path.isfile(path) or m is None:
            return super().send_head()
        size = os.path.getsize(path)
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        if start >= size:
            self.send_error(416)
            return None
        f = open(path, "rb")  # noqa: SIM115 - closed by copyfile's caller
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        type(self).ranges.append(f"{self.path} {start}-{end}")
        self._remaining = end - start + 1
        return _Limited(f, end - start + 1)

    def end_headers(self) -> None:
        if "Range" not in self.headers:
            self.send_header("Accept-Ranges", "bytes")
        super().end_headers()


class _Limited:
    """A file object that reads at most ``n`` bytes (the requested range)."""

    def __init__(self, f, n: int) -> None:
        self.f, self.n = f, n

    def read(self, size: int = -1) -> bytes:
        if self.n <= 0:
            return b""
        size = self.n if size < 0 else min(size, self.n)
        data = self.f.read(size)
        self.n -= len(data)
        return data

    def close(self) -> None:
        self.f.close()


@contextmanager
def serve(folder: Path, base: type = RangeHandler) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 (a free port) with range requests (``base``: a :class:`RangeHandler`
    subclass); yields the base URL and the handler class."""
    handler = type("Handler", (base,), {"ranges": []})

    def make(*args, **kwargs):
        return handler(*args, directory=str(folder), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
