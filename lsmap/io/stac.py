"""Sentinel-2 STAC Items (a JSON file or an http(s) URL) whose assets are COGs, read with pystac.

:func:`open_item` maps the Item's assets to band names by the keys of the common public catalogues
(:data:`ASSET_KEYS`: Earth Search's ``red``/``nir``/``scl``..., Planetary Computer's
``B04``/``B08``/``SCL``..., the Copernicus Data Space Ecosystem's ``B04_10m``/``SCL_20m``..., the finest
resolution of a band taken), then by the asset's ``eo:bands`` name. Hrefs are made absolute (relative
hrefs resolve against the Item's own location); remote ones are read in place through GDAL's
``/vsicurl/`` (HTTP range requests; nothing is downloaded whole). A bucket href (``s3://``, ``gs://``)
is replaced by the asset's http(s) alternate when the Item lists one (alternate-assets extension),
else read through ``/vsis3/`` / ``/vsigs/`` (:func:`_gdal_href`). Planetary Computer keeps its assets in
Azure Blob Storage, which refuses unsigned reads: an unsigned blob href gets a read-only SAS token from
the Planetary Computer's token API (:func:`sas_signed`), as ``planetary_computer.sign`` would give it.

DN offsets: from each asset's ``raster:bands`` (``value = DN * scale + offset``, so the DN offset is
``offset / scale`` and the quantification ``1 / scale``: Earth Search's ``scale 0.0001, offset -0.1``
is -1000 and 10000); an Item without them falls back to its ``s2:processing_baseline`` (or
``processing:version``, as the Copernicus Data Space Ecosystem's Items say it; -1000 from 04.00 on,
:func:`lsmap.io.s2product.baseline_offset`) unless it says the offset was already applied
(``earthsearch:boa_offset_applied``). An Item that says neither leaves the offset unknown (``--offset``).
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from lsmap.core.bands import S2_RESOLUTION
from lsmap.errors import InputError, MissingInputError
from lsmap.io.s2product import L4S_QUANTIFICATION, S2Source, baseline_offset, is_url

#: Asset key (lower case) -> band or layer, for Earth Search (v1) and Planetary Computer Items.
ASSET_KEYS: Mapping[str, str] = MappingProxyType({
    # Earth Search v1 (element84), common names
    "coastal": "B1", "blue": "B2", "green": "B3", "red": "B4", "rededge1": "B5", "rededge2": "B6",
    "rededge3": "B7", "nir": "B8", "nir08": "B8A", "nir09": "B9", "cirrus": "B10", "swir16": "B11",
    "swir22": "B12", "scl": "SCL",
    # the L2A cloud probability (QI_DATA/MSK_CLDPRB_20m) where a catalogue carries it
    "msk_cldprb": "MSK_CLDPRB", "cldprb": "MSK_CLDPRB",
    # Planetary Computer / Copernicus band ids
    **{f"b{int(b[1:]):02d}" if b != "B8A" else "b8a": b for b in S2_RESOLUTION},
    **{b.lower(): b for b in S2_RESOLUTION},
})
#: eo:bands common names -> band (for catalogues with other asset keys).
COMMON_NAMES: Mapping[str, str] = MappingProxyType({
    "coastal": "B1", "blue": "B2", "green": "B3", "red": "B4", "nir": "B8", "nir08": "B8A", "nir09": "B9",
    "cirrus": "B10", "swir16": "B11", "swir22": "B12",
})


#: An asset key with a resolution suffix, as the Copernicus Data Space Ecosystem names them: ``B04_10m``, ``SCL_20m``.
_RESOLVED_KEY = re.compile(r"^(B\d{1,2}A?|SCL)_(\d{2})m$", re.IGNORECASE)


#: :func:`_band_of_asset`'s resolution of an asset known only by its ``eo:bands``: any asset whose key names the
#: band wins over it (a review found a true-colour composite read as B4 over ``B04_10m``).
_UNKNOWN_RES = 10**6


def _band_of_asset(key: str, asset) -> tuple[str | None, int]:
    """The band or layer an asset holds, and the resolution its key says (metres; 0 when the key names the band
    without one: the native asset; :data:`_UNKNOWN_RES` when only its ``eo:bands`` say the band)."""
    band = ASSET_KEYS.get(key.lower())
    if band is not None:
        return band, 0
    m = _RESOLVED_KEY.match(key)
    if m is not None:
        return ASSET_KEYS.get(m.group(1).lower()), int(m.group(2))
    return _eo_band(key, asset), _UNKNOWN_RES


def _eo_band(key: str, asset) -> str | None:
    """The band an asset's ``eo:bands`` names (``None`` for an asset of several bands: a composite such as TCI)."""
    listed = asset.extra_fields.get("eo:bands") or []
    if len(listed) > 1:
        return None
    for eo in listed:
        name = str(eo.get("name", "")).upper()
        name = f"B{int(name[1:])}" if name[:1] == "B" and name[1:].isdigit() else name
        if name in S2_RESOLUTION:
            return name
        if eo.get("common_name") in COMMON_NAMES and not key.lower().endswith("-jp2"):
            return COMMON_NAMES[eo["common_name"]]
    return None


#: Cloud-bucket URL schemes -> GDAL virtual file systems (credentials from the environment, as GDAL
#: reads them: ``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``...).
BUCKETS: Mapping[str, str] = MappingProxyType({"s3://": "/vsis3/", "gs://": "/vsigs/"})
#: The Copernicus Data Space Ecosystem's bucket (its STAC Items point into the SAFE products there) and its S3
#: endpoint: no anonymous reads, keys of its own.
CDSE_BUCKET = "s3://eodata/"
CDSE_ENDPOINT = "eodata.dataspace.copernicus.eu"
#: Files that hold AWS credentials (any one of them: requests are signed, not anonymous).
_AWS_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE")


#: Planetary Computer's SAS token API (``PC_SDK_SAS_URL`` overrides it, as for its own SDK); a token for
#: ``{account}/{container}`` signs every blob of that container for about an hour.
PC_SAS_URL = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
#: Host names of Azure Blob Storage, where Planetary Computer's assets are.
BLOB_DOMAIN = ".blob.core.windows.net"
#: Seconds to wait for the token API.
SAS_TIMEOUT = 30.0


#: SAS tokens of this process: token API URL -> (token, expiry as a POSIX time); reused until
#: :data:`SAS_MARGIN` seconds before they expire (a detect call opens its Item twice; a regional run, many
#: Items of the same containers).
_SAS_TOKENS: dict[str, tuple[str, float]] = {}
#: Seconds before its expiry that a token is no longer handed out (a tile's stack and detection take minutes).
SAS_MARGIN = 900.0
#: How long a token whose response gives no ``msft:expiry`` is reused.
SAS_DEFAULT_LIFE = 600.0


def sas_signed(href: str) -> str:
    """``href`` with a SAS token when it is an unsigned Azure Blob Storage URL (Planetary Computer assets);
    other hrefs, and signed ones, as they are. One token per account/container, reused while it is valid.

    The token comes from :data:`PC_SAS_URL` (``PC_SDK_SAS_URL`` overrides it), with the
    ``PC_SDK_SUBSCRIPTION_KEY`` subscription key when set.

    Raises:
        InputError: the token API cannot be reached or gives no token.
    """
    import time
    from datetime import datetime
    from urllib.parse import urlsplit

    parts = urlsplit(href)
    host = parts.hostname or ""
    if not host.endswith(BLOB_DOMAIN) or "sig=" in parts.query:
        return href
    account, container = host.split(".")[0], parts.path.lstrip("/").split("/")[0]
    url = f"{os.environ.get('PC_SDK_SAS_URL', PC_SAS_URL).rstrip('/')}/{account}/{container}"
    token, expiry = _SAS_TOKENS.get(url, ("", 0.0))
    if expiry - SAS_MARGIN <= time.time():
        subscription = os.environ.get("PC_SDK_SUBSCRIPTION_KEY")
        request = urllib.request.Request(url, headers={"Ocp-Apim-Subscription-Key": subscription} if subscription else {})
        try:
            with urllib.request.urlopen(request, timeout=SAS_TIMEOUT) as r:
                body = json.load(r)
            token = str(body["token"]).lstrip("?")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{url}: cannot get a Planetary Computer SAS token to read {parts.scheme}://{host}/"
                             f"{container}/ ({str(e).strip() or type(e).__name__}); check the network (a "
                             f"subscription key goes in PC_SDK_SUBSCRIPTION_KEY), or give the Item signed "
                             f"(planetary_computer.sign) as a JSON file") from None
        try:
            expiry = datetime.fromisoformat(str(body["msft:expiry"]).replace("Z", "+00:00")).timestamp()
        except (KeyError, ValueError):
            expiry = time.time() + SAS_MARGIN + SAS_DEFAULT_LIFE
        _SAS_TOKENS[url] = (token, expiry)
    return f"{href}{'&' if parts.query else '?'}{token}"


def _asset_href(asset) -> str:
    """The asset's href to read: an http(s) alternate (STAC alternate-assets extension) of a bucket href first."""
    href = asset.get_absolute_href() or asset.href
    if href.startswith(tuple(BUCKETS)):
        for alt in (asset.extra_fields.get("alternate") or {}).values():
            if isinstance(alt, Mapping) and is_url(str(alt.get("href", ""))):
                return str(alt["href"])
    return href


def _gdal_href(href: str) -> str:
    """``href`` as GDAL opens it: ``/vsicurl/`` for http(s), ``/vsis3/``, ``/vsigs/`` for buckets, a path else.

    An ``s3://`` href with no AWS credentials in the environment is read anonymously
    (``AWS_NO_SIGN_REQUEST=YES``, what public buckets such as Earth Search's ``sentinel-cogs`` need),
    unless the user set ``AWS_NO_SIGN_REQUEST`` or has a credentials file.
    """
    if is_url(href):
        return f"/vsicurl/{href}"
    for scheme, vsi in BUCKETS.items():
        if href.startswith(scheme):
            credentials = any(os.environ.get(k) for k in _AWS_CREDENTIALS) or \
                (Path.home() / ".aws" / "credentials").exists()
            if href.startswith(CDSE_BUCKET):
                if not credentials:
                    raise InputError(f"{href}: the Copernicus Data Space Ecosystem's bucket needs its S3 keys; set "
                                     f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to keys made for it (and "
                                     f"AWS_S3_ENDPOINT if not {CDSE_ENDPOINT}), or download the product "
                                     f"(.SAFE.zip) and give that")
                os.environ.setdefault("AWS_S3_ENDPOINT", CDSE_ENDPOINT)
                os.environ.setdefault("AWS_VIRTUAL_HOSTING", "FALSE")
            elif scheme == "s3://" and not credentials:
                os.environ.setdefault("AWS_NO_SIGN_REQUEST", "YES")
            return vsi + href[len(scheme):]
    if href.startswith("file://"):
        href = href[len("file://"):]
    return href


def open_item(href: str | os.PathLike) -> S2Source:
    """Read a Sentinel-2 STAC Item (file path or http(s) URL) into an :class:`~lsmap.io.s2product.S2Source`.

    Raises:
        MissingInputError: a local Item file that does not exist.
        InputError: an unreadable Item (not JSON, not a STAC Item, an unreachable URL), or an Item
            with no Sentinel-2 band asset.
    """
    import pystac

    href = str(href)
    remote = is_url(href)
    if not remote and not Path(href).exists():
        raise MissingInputError(f"{href}: STAC Item file does not exist")
    try:
        item = pystac.Item.from_file(href if remote else str(Path(href).resolve()))
    except Exception as e:  # noqa: BLE001 - pystac raises JSON, HTTP, KeyError and STAC type errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{href}: cannot read the STAC Item ({first}); give a Sentinel-2 STAC Item JSON "
                         f"(a file or its URL)") from None
    # remote COGs: do not let GDAL list the parent "directory" of every asset
    os.environ.setdefault("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    files: dict[str, str] = {}
    layers: dict[str, str] = {}
    offsets: dict[str, float] = {}
    quant: float | None = None
    finest: dict[str, int] = {}  # band -> resolution (m) of the asset taken, for keys that say it (B04_10m)
    for key, asset in item.assets.items():
        band, res = _band_of_asset(key, asset)
        if band is None or ((band in files or band in layers) and res >= finest.get(band, 0)):
            continue
        finest[band] = res
        target = layers if band in ("SCL", "MSK_CLDPRB") else files
        target[band] = _gdal_href(sas_signed(_asset_href(asset)))
        rb = (asset.extra_fields.get("raster:bands") or [{}])[0]
        if target is files and "offset" in rb:
            scale = float(rb.get("scale", 1.0 / L4S_QUANTIFICATION)) or 1.0 / L4S_QUANTIFICATION
            offsets[band] = float(rb["offset"]) / scale
            quant = quant or 1.0 / scale
    if not files:
        raise InputError(f"{href}: the STAC Item has no Sentinel-2 band asset (assets: {', '.join(item.assets)}); "
                         f"give a Sentinel-2 L2A/L1C Item (asset keys 'red'/'nir'... or 'B04'/'B08'...)")
    props = item.properties
    known: dict[str, float] | None
    if offsets:
        known = {b: offsets.get(b, 0.0) for b in files}
    elif props.get("earthsearch:boa_offset_applied") is True:
        known = {b: 0.0 for b in files}
    elif (baseline := props.get("s2:processing_baseline", props.get("processing:version"))) is not None:
        known = {b: baseline_offset(str(baseline)) for b in files}  # processing:version: the Data Space's Items
    else:
        known = None
    return S2Source(kind="STAC", where=href, files=files, offsets=known,
                    quantification=round(quant, 6) if quant else L4S_QUANTIFICATION, layers=layers)


def asset_hint(band: str) -> str:
    """The asset keys that hold ``band`` in the common catalogues, for messages: ``'red' or 'B04'``."""
    keys = [k for k, b in ASSET_KEYS.items() if b == band and not re.fullmatch(r"b\d+a?", k)]  # not "b04": "blue" stays
    pc = f"B{int(band[1:]):02d}" if band[1:].isdigit() else band
    return " or ".join([f"'{k}'" for k in keys[:1]] + [f"'{pc}'"])

