"""HTML report of a detection: one self-contained page that works offline.

:func:`write_report` fills the template ``report.html`` (beside this module) with one JSON blob:
the scene in natural colour (:func:`lsmap.map.quicklook.natural_colour`, embedded as a base64
JPEG, the not-observed mask as a base64 PNG), the polygons as SVG paths in full-resolution pixel
coordinates of the scene, coloured by the classes of :data:`lsmap.core.display.PROB_CLASSES`, the
polygon attributes for a sortable table, and the run's summary, options and model cards. A short
hand-written script draws the SVG and gives it pan and zoom (wheel, drag, buttons), a coordinate
readout in the scene CRS, a scale bar and a north arrow; clicking a table row zooms to its
polygon. Nothing is fetched: no CDN, no fonts, no tiles; the page opens from a file without a
network (a map library would add some 150 KB to every report for what 250 lines do here).
"""

from __future__ import annotations

import base64
import collections
import html
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from lsmap import __version__
from lsmap.core.bands import BandProfile
from lsmap.core.display import NODATA_COLOUR, PROB_CLASSES, REJECTED_COLOUR, prob_class
from lsmap.data.scan import far_bands
from lsmap.errors import InputError
from lsmap.io.rasters import atomic_output, check_output
from lsmap.map.components import index_ranges
from lsmap.map.quicklook import (
    _metres_per_unit,
    grid_convergence,
    model_label,
    natural_colour,
    polygon_rings,
    scene_date,
)
from lsmap.map.vectorize import areas_m2

#: JPEG quality of the embedded scene image.
JPEG_QUALITY = 88
#: Polygon vertices are written to this many decimals of a full-resolution pixel.
DECIMALS = 1
_COLUMNS = (("id", "#", 0), ("area_m2", "area (m²)", 0), ("mean_prob", "mean p", 2), ("max_prob", "max p", 2),
            ("mean_unc", "mean unc.", 3), ("n_parts", "parts", 0), ("scene", "scene", 0))


def _data_uri(img: np.ndarray, fmt: str, **save) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **save)
    mime = {"JPEG": "image/jpeg", "PNG": "image/png"}[fmt]
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _svg_paths(geoms, inv) -> tuple[list[str], list[list[float]]]:
    """SVG path data (``M x y L ... Z`` per ring, even-odd holes) of each (Multi)Polygon in pixel units, and
    its bbox (``""`` and zeros for one without a ring of 3 points).

    All rings at once (shapely's rings and coordinates, one affine map, one rounding); only the number
    formatting and the joins are per ring: 153 k polygons took 3.7 s, against 12.0 s one by one (BENCHMARKS.md).
    """
    geoms = list(geoms)
    n = len(geoms)
    paths, bboxes = [""] * n, [[0.0, 0.0, 0.0, 0.0] for _ in range(n)]
    if not n:
        return paths, bboxes
    xy, size, ring_owner = polygon_rings(geoms)
    ring_of = np.repeat(np.arange(len(size)), size)
    pts = np.round(np.stack([inv.a * xy[:, 0] + inv.b * xy[:, 1] + inv.c,
                             inv.d * xy[:, 0] + inv.e * xy[:, 1] + inv.f], 1), DECIMALS)
    end = np.cumsum(size)
    start = end - size
    last = np.maximum(end - 1, 0)
    closed = (size > 1) & (pts[start.clip(max=len(pts) - 1)] == pts[last]).all(1)  # Z closes the ring
    size = size - closed
    ok = size >= 3
    keep = np.zeros(len(pts), bool)
    keep[index_ranges(start[ok], size[ok])] = True
    lo = np.full((n, 2), np.inf)
    hi = np.full((n, 2), -np.inf)
    np.minimum.at(lo, ring_owner[ring_of[keep]], pts[keep])
    np.maximum.at(hi, ring_owner[ring_of[keep]], pts[keep])
    tokens = [f"{x:g} {y:g}" for x, y in pts.tolist()]
    pieces: list[list[str]] = [[] for _ in range(n)]
    for r in np.flatnonzero(ok).tolist():
        pieces[ring_owner[r]].append("M" + " ".join(tokens[start[r]:start[r] + size[r]]) + "Z")
    for i, rs in enumerate(pieces):
        if rs:
            paths[i] = "".join(rs)
            bboxes[i] = [float(lo[i, 0]), float(lo[i, 1]), float(hi[i, 0]), float(hi[i, 1])]
    return paths, bboxes


def _value(v: Any) -> Any:
    """A JSON-friendly cell value."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    return v if isinstance(v, (int, str, bool)) or v is None else str(v)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _card_fields(card: Any, source: str | None) -> dict:
    """A model card (ModelCard or dict) for the page: headline fields, scalar metrics, the training data
    description, and the whole card as JSON (less the per-band statistics)."""
    d = card.to_dict() if hasattr(card, "to_dict") else dict(card)
    fields = []
    if source:
        fields.append(("checkpoint", str(source)))
    fields.append(("architecture", str(d.get("model", "?"))))
    bands = d.get("bands") or {}
    if isinstance(bands, Mapping):
        fields.append(("bands", f"{bands.get('name', '?')} ({len(bands.get('bands', []))} bands)"))
    for key in ("threshold", "scale", "domain_bn", "created", "lsmap_version"):
        if d.get(key) not in (None, "", {}):
            fields.append((key.replace("_", " "), _fmt(d[key])))
    metrics = [(k, _fmt(v)) for k, v in (d.get("metrics") or {}).items() if isinstance(v, (int, float, str, bool))]
    # per-band statistics and the training patches' content digests (about 70 KB for the full benchmark): long and
    # not for reading; their counts stand in for the digests
    slim = {k: (f"{len(v)} content digests" if k.endswith("_digests") and isinstance(v, list) else v)
            for k, v in d.items() if k != "stats"}
    return {"fields": fields, "metrics": metrics, "data": str(d.get("data") or ""),
            "json": json.dumps(slim, indent=1, default=str)}


def _area_lines(image, summary: Mapping) -> list[tuple[str, str]]:
    """Scene, observed, not-observed and no-data areas: exact from the run's summary where it has them,
    else estimated (≈) from the decimated image."""
    km2 = summary.get("scene_km2")
    if km2 is None:
        from shapely.geometry import box

        km2 = float(areas_m2([box(*image.bounds)], image.crs)[0]) / 1e6 if image.crs is not None else 0.0
    km2 = float(km2) or 1e-12
    approx = ""
    not_obs, approx_no = summary.get("not_observed_km2"), ""
    if summary.get("valid_pixels") is not None and not summary.get("stats_sampled"):
        valid = km2 * int(summary["valid_pixels"]) / (image.width * image.height)
        # the run's valid pixels leave the not-observed ones out: they were counted as no data too (an audit:
        # the lines summed to 112 %)
        valid += float(not_obs or 0.0)
    else:
        valid, approx = km2 * float(image.valid.mean()), "≈ "
    if not_obs is None and image.not_observed is not None:
        not_obs, approx_no = km2 * float((image.not_observed & image.valid).mean()), "≈ "
    observed = summary.get("observed_km2")
    if observed is None:
        observed = valid - float(not_obs or 0.0)
        approx_obs = approx or approx_no
    else:
        approx_obs = ""

    def line(label: str, v: float, mark: str) -> tuple[str, str]:
        return label, f"{mark}{v:.2f} km² ({100 * v / km2:.1f} %)"

    lines = [("scene area", f"{km2:.2f} km²"), line("observed", float(observed), approx_obs)]
    if not_obs is not None:
        why = sorted((summary.get("not_observed") or {}).get("km2") or {})
        lines.append(line(f"not observed ({', '.join(why) if why else 'clouds, masks'})", float(not_obs), approx_no))
    lines.append(line("no data", max(km2 - valid, 0.0), approx))
    return lines


def write_report(out: str | os.PathLike, polygons, image, *, scene_name: str, date: str | None = None,
                 models: Any = None, summary: Mapping | None = None, options: Mapping | None = None,
                 overwrite: bool = False, title: str | None = None, rejected=None) -> Path:
    """Write the HTML report of a detection (see the module docstring).

    Args:
        out: HTML path (written atomically).
        polygons: GeoDataFrame of the landslide polygons (reprojected to the scene CRS if needed).
        image: :class:`lsmap.map.quicklook.NaturalColour` of the scene.
        scene_name: Name shown for the scene.
        date: Acquisition date, when known.
        models: Ensemble members (with ``card`` and ``source``), model cards, or ``None``.
        summary: The run's summary (``gdf.attrs["lsmap"]`` of :func:`lsmap.map.detect.detect`).
        options: Further options of the run to list (e.g. ``min_area_m2``).
        overwrite: Replace an existing ``out``.
        title: Page title (default: the scene's name and date).
        rejected: GeoDataFrame of the polygons the change/terrain evidence rejected (with ``reason``):
            drawn as dashed outlines (their reason in a tooltip), counted in the legend and summary.

    Raises:
        OutputExistsError: ``out`` exists and not ``overwrite``.
    """
    out = check_output(out, overwrite)
    summary = dict(summary or {})
    t = image.transform
    inv = ~t
    gdf = polygons
    if gdf is not None and len(gdf) and gdf.crs is not None and image.crs is not None and gdf.crs != image.crs:
        gdf = gdf.to_crs(image.crs)
    columns = [c for c in _COLUMNS if gdf is not None and (c[0] in gdf.columns or c[0] == "id")]
    polys = []
    records = gdf.drop(columns=gdf.geometry.name).to_dict("records") if gdf is not None else []
    svg = _svg_paths(gdf.geometry.values if gdf is not None else [], inv)
    for i, (geom, rec, d, bbox) in enumerate(zip(gdf.geometry if gdf is not None else [], records, *svg, strict=True)):
        if not d:
            continue
        item = {c[0]: _value(rec.get(c[0])) for c in columns}
        item["id"] = _value(rec.get("id", i + 1))
        if item.get("area_m2") is None:  # true square metres, whatever the CRS (found by a review: CRS units)
            item["area_m2"] = float(areas_m2([geom], image.crs)[0]) if image.crs is not None else float(geom.area)
        p = item.get("mean_prob")
        item["cls"] = PROB_CLASSES.index(prob_class(p if p is not None else 1.0))
        item["d"], item["bbox"] = d, bbox
        polys.append(item)

    dropped, reasons = [], collections.Counter()
    if rejected is not None and len(rejected):
        rj = rejected.to_crs(image.crs) if rejected.crs is not None and image.crs is not None and rejected.crs != image.crs \
            else rejected
        why = rj["reason"].tolist() if "reason" in rj else [""] * len(rj)
        # the layer's own areas (true m2), else measured in the scene's CRS: CRS units were shown before (a review)
        area = (rj["area_m2"].astype(float).tolist() if "area_m2" in rj else
                areas_m2(list(rj.geometry), image.crs).tolist() if image.crs is not None else list(rj.geometry.area))
        for reason, d, a in zip(why, _svg_paths(rj.geometry.values, inv)[0], area, strict=True):
            if d:
                dropped.append({"d": d, "reason": str(reason), "area_m2": float(a)})
                reasons.update(r for r in str(reason).split(",") if r)

    per_unit, unit = _metres_per_unit(image.crs, image.bounds) if image.crs is not None else (1.0, "")
    crs_name = ""
    if image.crs is not None:
        from pyproj import CRS

        c = CRS.from_user_input(image.crs)
        crs_name = c.name + (f" (EPSG:{c.to_epsg()})" if c.to_epsg() else "")
    left, bottom, right, top = image.bounds
    pixel_m = math.hypot(t.a, t.d) * per_unit
    pixel_h = math.hypot(t.b, t.e) * (111_320.0 if unit == "°" else per_unit)  # a degree of latitude: ~111 km
    size = f"{pixel_m:.3g} m" if abs(pixel_h - pixel_m) <= 0.01 * pixel_m else f"{pixel_m:.3g} × {pixel_h:.3g} m"
    n = len(polys)
    area_km2 = sum(p["area_m2"] for p in polys) / 1e6
    label = model_label(models)
    head = title or " · ".join(x for x in (Path(scene_name).stem, date) if x)
    sub = f"{n} landslide polygon{'s' if n != 1 else ''}, {area_km2:.2f} km²" + (f" · model: {label}" if label else "")

    rows = [("scene", scene_name), ("acquired", date or "unknown (no date in the tags or the file name)"),
            ("CRS", crs_name or "none"), ("size", f"{image.width} × {image.height} px of {size}")]
    rows += _area_lines(image, summary)
    rows += [("polygons", str(n)), ("landslide area", f"{area_km2:.3f} km²")]
    far = far_bands(summary.get("shift_sigmas"))
    if far:  # the warning of the run, where the reader of the report sees it (docs/detect.md)
        rows.append(("unlike the training data", f"{far} standard deviations from the models' training means: "
                                                  f"check the map against the imagery"))
    if dropped:
        rows.append(("rejected by evidence", f"{len(dropped)} ("
                     + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in sorted(reasons.items())) + ")"))
    if n:
        areas = np.array([p["area_m2"] for p in polys])
        rows += [("largest polygon", f"{areas.max():,.0f} m²"), ("median polygon", f"{np.median(areas):,.0f} m²")]
        counts = np.bincount([p["cls"] for p in polys], minlength=len(PROB_CLASSES))
        rows.append(("by mean probability", ", ".join(f"{c.label}: {k}" for c, k in zip(PROB_CLASSES, counts,
                                                                                         strict=False) if k)))
    opts = []
    for key in ("threshold", "tta", "crf", "norm", "input_scale", "bands", "window", "overlap", "batch_size",
                "windows", "uncertainty", "device"):
        if summary.get(key) is not None:
            opts.append((key.replace("_", " "), _fmt(summary[key])))
    for key, v in (options or {}).items():
        opts.append((key.replace("_", " "), _fmt(v)))
    cards = []
    for m in models or []:
        card = getattr(m, "card", m)
        if hasattr(card, "to_dict") or isinstance(card, Mapping):
            cards.append(_card_fields(card, getattr(m, "source", None)))
    if summary.get("models") and not cards:
        opts.append(("models", _fmt(summary["models"])))

    has_nodata = not bool(image.valid.all())
    data = {
        "title": head, "subtitle": sub,
        "image": {"href": _data_uri(image.rgba8()[..., :3], "JPEG", quality=JPEG_QUALITY),
                  "width": image.width, "height": image.height, "pixels": int(image.valid.shape[1])},
        "not_observed": (_data_uri(np.where(image.not_observed, 255, 0).astype(np.uint8), "PNG", optimize=True)
                         if image.not_observed is not None and image.not_observed.any() else None),
        "transform": [t.a, t.b, t.c, t.d, t.e, t.f],
        "crs": crs_name, "units": unit, "geographic": unit == "°", "pixel_m": pixel_m,
        "north": grid_convergence(image.crs, (left + right) / 2, (bottom + top) / 2) if image.crs is not None else 0.0,
        "classes": [{"lower": c.lower, "upper": c.upper, "colour": c.colour, "label": c.label} for c in PROB_CLASSES],
        "columns": [list(c) for c in columns],
        "polygons": polys, "rejected": dropped, "rejected_colour": REJECTED_COLOUR, "summary": rows, "options": opts, "models": cards,
        "has_nodata": has_nodata, "nodata_colour": NODATA_COLOUR,
        "footer": f"lsmap {__version__} · natural colour (B4, B3, B2), one stretch for the three bands · "
                  "polygon outlines coloured by mean landslide probability",
    }
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    page = _template().replace("{{TITLE}}", html.escape(head)).replace("{{DATA}}", blob)
    with atomic_output(out, overwrite) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


def render_report(scene: str | os.PathLike, polygons, out: str | os.PathLike, bands: str | BandProfile = "l4s14", *,
                  models: Sequence[Any] | None = None, summary: Mapping | None = None, not_observed: Any = None,
                  input_scale: str = "auto", date: str | None = None, overwrite: bool = False) -> Path:
    """Read ``scene`` in natural colour and write the report of ``polygons`` over it (:func:`write_report`).

    Raises:
        InputError: the profile lacks a natural-colour band; a bad not-observed mask.
        OutputExistsError: ``out`` exists and not ``overwrite``.
    """
    check_output(out, overwrite)
    image = natural_colour(scene, bands, input_scale=input_scale, not_observed=not_observed)
    return write_report(out, polygons, image, scene_name=Path(scene).name,
                        date=date or scene_date(scene, image.tags), models=models, summary=summary,
                        overwrite=overwrite)


def _template() -> str:
    try:
        return resources.files("lsmap.map").joinpath("report.html").read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"the report template is missing from the installation ({e}); reinstall lsmap") from None
