"""Sentinel-2 products as they are downloaded: ``.SAFE`` folders and ``.SAFE.zip`` files, L1C or L2A.

:func:`open_safe` reads a product's metadata (``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml``) and finds
its band files through the metadata's ``IMAGE_FILE`` list, the finest resolution *present* of each
band (a product whose 10 m files were left out still stacks from its 20/60 m files). A zip is read
in place: its directory and the metadata member with :mod:`zipfile`, the rasters through GDAL's
``/vsizip/`` virtual file system; nothing is unzipped.

Radiometry (:class:`ProductMetadata`): since processing baseline 04.00 (January 2022) the digital
numbers carry an additive offset declared per band (``BOA_ADD_OFFSET`` in L2A, ``RADIO_ADD_OFFSET``
in L1C, -1000 in every product seen so far): reflectance = (DN + offset) / quantification value.
Older products have no offset element: offset 0. :class:`S2Source` is what every Sentinel-2 input
(loose band files, a SAFE product, a STAC Item) resolves to: a GDAL path per band by name, the DN
offset per band (``None`` when unknown: loose files without ``--offset``), the quantification value,
and the product's extra layers: the scene classification ``SCL`` and the cloud probability
``MSK_CLDPRB`` where present (read them with nearest-neighbour resampling at full resolution,
:mod:`lsmap.data.resample`; JPEG 2000 overviews blend classes).
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from lsmap.core.bands import S2_RESOLUTION
from lsmap.errors import InputError, MissingInputError

#: Metadata file names of L2A and L1C products.
MTD_NAMES = ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml")
#: Band ids of the metadata's offset lists, when a product has no ``Spectral_Information`` table.
STANDARD_BAND_IDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
#: Reflectance DN scale of the Landslide4Sense data (and of every product so far): reflectance * 10000.
L4S_QUANTIFICATION = 10000.0
#: Extra layers a product may hold, beside its spectral bands.
LAYERS = ("SCL", "MSK_CLDPRB")
_EXT = {"JPEG2000": (".jp2",), "GEOTIFF": (".tif", ".tiff")}
# ..._B04_10m, ..._B8A (L1C), ..._SCL_20m; the band token is the last but one (or last) part
_IMAGE_TOKEN = re.compile(r"_(B\d{2}|B8A|SCL|TCI|AOT|WVP)(?:_(\d{2})m)?$", re.IGNORECASE)
_CLDPRB = re.compile(r"(?:^|/)QI_DATA/MSK_CLDPRB_(\d{2})m\.(?:jp2|tif)$", re.IGNORECASE)


@dataclass(frozen=True)
class ProductMetadata:
    """What a product's ``MTD_MSIL*.xml`` says about its pixels.

    Attributes:
        product_type: ``S2MSI2A`` or ``S2MSI1C``.
        level: ``L2A`` or ``L1C``.
        baseline: Processing baseline, e.g. ``"04.00"``.
        sensing_time: ``PRODUCT_START_TIME`` (ISO 8601).
        quantification: DN per unit reflectance (``BOA_QUANTIFICATION_VALUE`` / ``QUANTIFICATION_VALUE``).
        offsets: Band name -> additive DN offset (empty when the product declares none).
        image_files: ``IMAGE_FILE`` entries (relative to the SAFE root, without extension).
        image_format: ``JPEG2000`` or ``GeoTIFF`` (the granule's ``imageFormat``).
        product_uri: ``PRODUCT_URI`` (the SAFE name).
    """

    product_type: str
    level: str
    baseline: str
    sensing_time: str
    quantification: float
    offsets: Mapping[str, float]
    image_files: tuple[str, ...]
    image_format: str = "JPEG2000"
    product_uri: str = ""

    def offset(self, band: str) -> float:
        """DN offset of ``band`` (0 when the product declares none for it)."""
        return float(self.offsets.get(band, 0.0))

    def to_dict(self) -> dict:
        """JSON-ready form (without the file list)."""
        return {"product_type": self.product_type, "level": self.level, "baseline": self.baseline,
                "sensing_time": self.sensing_time, "quantification": self.quantification,
                "offsets": dict(self.offsets), "product_uri": self.product_uri}


@dataclass(frozen=True)
class S2Source:
    """A Sentinel-2 input resolved to band files by name, with its radiometry.

    Attributes:
        kind: ``"files"`` (loose band files), ``"SAFE"``, ``"SAFE zip"`` or ``"STAC"``.
        where: The input as the user gave it (for messages).
        files: Band name (``B4``, ``B8A``, ...) -> GDAL path (local, ``/vsizip/``, ``/vsicurl/``).
        offsets: Band name -> additive DN offset; ``None`` when unknown (loose files, no ``--offset``).
        quantification: DN per unit reflectance.
        layers: ``SCL`` / ``MSK_CLDPRB`` -> GDAL path, where the product has them.
        metadata: Product metadata (SAFE products), else ``None``.
        notes: Human-readable remarks (e.g. a band read from a coarser file than listed).
    """

    kind: str
    where: str
    files: Mapping[str, str]
    offsets: Mapping[str, float] | None = None
    quantification: float = L4S_QUANTIFICATION
    layers: Mapping[str, str] = field(default_factory=dict)
    metadata: ProductMetadata | None = None
    notes: tuple[str, ...] = ()

    def dn_offset(self, band: str) -> float:
        """Additive DN offset of ``band`` (0 when unknown)."""
        return float((self.offsets or {}).get(band, 0.0))

    def select(self, bands) -> S2Source:
        """The same source restricted to ``bands`` (which must all be present).

        Raises:
            MissingInputError: a band has no file; the message names the input and the band.
        """
        missing = [b for b in bands if b not in self.files]
        if missing and self.kind == "STAC":
            from lsmap.io.stac import asset_hint

            have = ", ".join(sorted(self.files, key=_band_key))
            raise InputError(
                f"{self.where}: the STAC Item has no asset for Sentinel-2 band {missing[0]} (asset key "
                f"{asset_hint(missing[0])}; bands present: {have}); give a Sentinel-2 Item with that asset, or "
                f"choose a band set its assets fill with `bands`"
            )
        if missing:
            have = ", ".join(sorted(self.files, key=_band_key)) or "none"
            raise MissingInputError(
                f"{self.where}: no file for Sentinel-2 band {missing[0]} in this {self.kind} input (bands present: "
                f"{have}); choose a band set these bands fill with `bands`, or give the band file"
            )
        notes = tuple(n for n in self.notes if n.split(":", 1)[0] in bands)
        return S2Source(self.kind, self.where, {b: self.files[b] for b in bands}, self.offsets,
                        self.quantification, self.layers, self.metadata, notes)


def _band_key(b: str) -> tuple[int, str]:
    m = re.match(r"B(\d+)(A?)", b)
    return (int(m.group(1)), m.group(2)) if m else (99, b)


# --- metadata ----------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_mtd(xml: bytes | str | os.PathLike, where: str | None = None) -> ProductMetadata:
    """Parse a product metadata file (``MTD_MSIL2A.xml`` or ``MTD_MSIL1C.xml``), any baseline.

    Args:
        xml: The file's bytes, or its path.
        where: Name of the file for messages (default: the path).

    Returns:
        The product's :class:`ProductMetadata`; ``offsets`` is empty when the product has no
        ``BOA_ADD_OFFSET`` / ``RADIO_ADD_OFFSET`` element (baselines before 04.00).

    Raises:
        InputError: not parseable XML, or not a Sentinel-2 L1C/L2A product metadata file.
    """
    if not isinstance(xml, bytes):
        where = where or str(xml)
        try:
            xml = Path(xml).read_bytes()
        except OSError as e:
            raise MissingInputError(f"{where}: cannot read the product metadata ({e.strerror})") from None
    where = where or "product metadata"
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as e:
        raise InputError(f"{where}: not valid XML ({e}); the product is incomplete or corrupt: re-download it") \
            from None
    tag = _local(root.tag)
    if tag not in ("Level-2A_User_Product", "Level-1C_User_Product"):
        raise InputError(f"{where}: not a Sentinel-2 L1C/L2A product metadata file (root element {tag})")
    level = "L2A" if tag.startswith("Level-2A") else "L1C"
    texts: dict[str, str] = {}
    offsets_by_id: dict[str, float] = {}
    band_ids: dict[str, str] = {}
    files: list[str] = []
    image_format = "JPEG2000"
    quant_name = "BOA_QUANTIFICATION_VALUE" if level == "L2A" else "QUANTIFICATION_VALUE"
    offset_name = "BOA_ADD_OFFSET" if level == "L2A" else "RADIO_ADD_OFFSET"
    for el in root.iter():
        name = _local(el.tag)
        if name in ("PRODUCT_TYPE", "PROCESSING_BASELINE", "PRODUCT_START_TIME", "PRODUCT_URI", quant_name):
            texts.setdefault(name, (el.text or "").strip())
        elif name == offset_name:
            offsets_by_id[el.get("band_id", "")] = float(el.text)
        elif name == "Spectral_Information" and el.get("bandId") is not None:
            band_ids[el.get("bandId")] = el.get("physicalBand", "")
        elif name == "IMAGE_FILE" and el.text:
            files.append(el.text.strip())
        elif name == "Granule" and el.get("imageFormat"):
            image_format = el.get("imageFormat")
    if quant_name not in texts:
        raise InputError(f"{where}: no {quant_name} in the product metadata; the file is incomplete, re-download it")
    offsets: dict[str, float] = {}
    for band_id, value in offsets_by_id.items():
        band = band_ids.get(band_id) or (STANDARD_BAND_IDS[int(band_id)] if band_id.isdigit()
                                         and int(band_id) < len(STANDARD_BAND_IDS) else None)
        if band in S2_RESOLUTION:
            offsets[band] = value
    return ProductMetadata(
        product_type=texts.get("PRODUCT_TYPE", f"S2MSI{level[1:]}"), level=level,
        baseline=texts.get("PROCESSING_BASELINE", ""), sensing_time=texts.get("PRODUCT_START_TIME", ""),
        quantification=float(texts[quant_name]), offsets=offsets, image_files=tuple(files),
        image_format=image_format, product_uri=texts.get("PRODUCT_URI", ""),
    )


def baseline_offset(baseline: str | None) -> float:
    """The DN offset ESA applies from processing baseline 04.00 on (-1000), else 0.

    For inputs that state their baseline but not their offset (some STAC Items).
    """
    try:
        return -1000.0 if baseline is not None and float(baseline) >= 4.0 else 0.0
    except ValueError:
        return 0.0


# --- products ----------------------------------------------------------------------------------


def is_safe(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Sentinel-2 product: a ``.zip``, a ``*.SAFE`` folder or a folder with its metadata."""
    p = Path(path)
    if p.suffix.lower() == ".zip":
        return True
    if p.is_dir():
        return p.name.upper().endswith(".SAFE") or any((p / n).is_file() for n in MTD_NAMES)
    return False


def enclosing_product(path: str | os.PathLike, levels: int = 5) -> Path | None:
    """The ``.SAFE`` folder ``path`` lies inside (``GRANULE/<id>/IMG_DATA/R10m`` of a product), or ``None``."""
    p = Path(path).absolute()
    for parent in list(p.parents)[:levels]:
        if parent.name.upper().endswith(".SAFE") and any((parent / n).is_file() for n in MTD_NAMES):
            return parent
    return None


def open_safe(path: str | os.PathLike) -> S2Source:
    """Read a ``.SAFE`` folder or a ``.SAFE.zip`` (in place) into an :class:`S2Source`.

    Band files come from the metadata's ``IMAGE_FILE`` list; of several resolutions of a band the
    finest present is used (the spectral bands of L2A products exist at 10, 20 and 60 m).

    Raises:
        MissingInputError: ``path`` does not exist.
        InputError: a truncated or corrupt zip, no ``MTD_MSIL*.xml``, unreadable metadata, or a
            metadata file that lists no band file present in the product.
    """
    p = Path(path)
    if not p.exists():
        raise MissingInputError(f"{p}: Sentinel-2 product does not exist")
    if p.is_dir():
        mtd = next((p / n for n in MTD_NAMES if (p / n).is_file()), None)
        if mtd is None:
            raise InputError(
                f"{p}: SAFE folder without MTD_MSIL2A.xml or MTD_MSIL1C.xml; the download is incomplete: "
                f"re-download the product, or pass its IMG_DATA folder (then give the DN offset with `offset`)"
            )
        meta = parse_mtd(mtd)
        present = {q.relative_to(p).as_posix() for q in (p / "GRANULE").rglob("*") if q.is_file()} \
            if (p / "GRANULE").is_dir() else set()
        prefix, kind = str(p.resolve()), "SAFE"
    else:
        try:
            with zipfile.ZipFile(p) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
                mtds = sorted((n for n in names if n.rsplit("/", 1)[-1] in MTD_NAMES), key=lambda n: n.count("/"))
                if not mtds:
                    raise InputError(
                        f"{p}: no MTD_MSIL2A.xml or MTD_MSIL1C.xml inside; not a Sentinel-2 SAFE product zip, "
                        f"or an incomplete one: re-download it"
                    )
                data = zf.read(mtds[0])
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise InputError(
                f"{p}: not a readable zip ({e}); the file is truncated or corrupt: re-download the product"
            ) from None
        root = mtds[0].rsplit("/", 1)[0] if "/" in mtds[0] else ""
        meta = parse_mtd(data, f"{p}/{mtds[0]}")
        cut = len(root) + 1 if root else 0
        present = {n[cut:] for n in names if n.startswith(root)}
        prefix = f"/vsizip/{p.resolve()}" + (f"/{root}" if root else "")
        kind = "SAFE zip"
    files, layers, notes = _pick_files(meta, present, prefix)
    if not files:
        raise InputError(
            f"{p}: the product metadata lists no band file that is present in the product; the download is "
            f"incomplete: re-download it"
        )
    return S2Source(kind=kind, where=str(p), files=files, offsets=dict(meta.offsets),
                    quantification=meta.quantification, layers=layers, metadata=meta, notes=tuple(notes))


def _pick_files(meta: ProductMetadata, present: set[str], prefix: str) -> tuple[dict, dict, list]:
    """Band -> finest present file, layers, and notes on bands read from coarser files than listed."""
    exts = _EXT.get(meta.image_format.upper(), ()) + (".jp2", ".tif", ".tiff")
    found: dict[str, list[tuple[int, str]]] = {}
    listed: dict[str, list[int]] = {}
    for entry in meta.image_files:
        m = _IMAGE_TOKEN.search(entry)
        if m is None:
            continue
        token = m.group(1).upper()
        band = token if not token[1:].isdigit() else f"B{int(token[1:])}"
        if band not in S2_RESOLUTION and band != "SCL":
            continue
        res = int(m.group(2)) if m.group(2) else S2_RESOLUTION.get(band, 20)
        listed.setdefault(band, []).append(res)
        rel = next((entry + e for e in exts if entry + e in present), None)
        if rel is not None:
            found.setdefault(band, []).append((res, rel))
    files, layers, notes = {}, {}, []
    for band, options in found.items():
        res, rel = min(options)
        target = layers if band == "SCL" else files
        target[band] = f"{prefix}/{rel}"
        if res > min(listed[band]):
            notes.append(f"{band}: read from its {res} m file (the {min(listed[band])} m file is not in the product)")
    cld = sorted((int(m.group(1)), n) for n in present if (m := _CLDPRB.search(n)))
    if cld:
        layers["MSK_CLDPRB"] = f"{prefix}/{cld[0][1]}"
    return files, layers, notes


# --- any Sentinel-2 input -------------------------------------------------------------------------


#: URL schemes lsmap reads inputs from (STAC Items and their assets).
URL_SCHEMES = ("http://", "https://")


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an ``http(s)://`` URL rather than a file path."""
    return isinstance(path, str) and path.startswith(URL_SCHEMES)


def is_stac(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a STAC Item: an ``http(s)://`` URL or a ``.json`` file."""
    return is_url(str(path)) or str(path).lower().endswith(".json")


def is_product(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a product (SAFE folder, SAFE zip, STAC Item) rather than loose band files."""
    return is_stac(path) or is_safe(path)


def open_product(path: str | os.PathLike) -> S2Source:
    """Read a SAFE folder, a SAFE zip or a STAC Item (file or URL) into an :class:`S2Source`.

    Raises:
        MissingInputError: the product does not exist.
        InputError: a bad product (see :func:`open_safe`, :func:`lsmap.io.stac.open_item`).
    """
    if is_stac(path):
        from lsmap.io.stac import open_item

        return open_item(str(path))
    return open_safe(path)
