"""Pure: mask values and the label maps that turn other label conventions into them.

Masks are uint8: 0 background, 1 landslide, 255 unlabelled (ignored by losses and metrics). Label
rasters and mask exports often use other values (Chittagong's 0/1/2, 0/255 exports where 255 is
the landslide); a label map (``"0:255,1:0,2:1"``: value -> mask value) says how to read them.
:func:`mask_values` decides what a mask array holds and refuses what would be silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lsmap.errors import InputError

#: Mask value of unlabelled pixels (lsmap.io.patches.IGNORE_INDEX).
IGNORE = 255
MASK_VALUES = (0, 1, IGNORE)
#: The hint every label error ends with.
LABEL_MAP_HINT = "map them with `label_map` VALUE:MASK pairs, e.g. '0:0,255:1' for 0/255 masks or '0:255,1:0,2:1'"


def parse_label_map(text: str | Mapping[int, int] | None) -> dict[int, int] | None:
    """Parse ``"0:255,1:0,2:1"`` (label value -> mask value) into a dict; dicts and None pass through.

    Raises:
        InputError: malformed text, or a target outside 0, 1, 255.
    """
    if text is None:
        return None
    if isinstance(text, Mapping):
        mapping = {int(k): int(v) for k, v in text.items()}
    else:
        mapping = {}
        try:
            for item in text.split(","):
                if not item.strip():
                    continue
                src, dst = item.split(":")
                mapping[int(src)] = int(dst)
        except ValueError:
            raise InputError(
                f"`label_map` '{text}': expected comma-separated value:mask pairs, e.g. '0:255,1:0,2:1'"
            ) from None
    if not mapping:
        raise InputError("`label_map` is empty; give value:mask pairs, e.g. '0:255,1:0,2:1'")
    bad = sorted({v for v in mapping.values() if v not in MASK_VALUES})
    if bad:
        raise InputError(f"`label_map` maps to {bad}; mask values must be 0, 1 or 255")
    return mapping


def map_labels(labels: np.ndarray, mapping: Mapping[int, int] | None, path: object) -> np.ndarray:
    """Turn label values into mask values (uint8 0/1/255).

    Args:
        labels: Label values, any integer dtype.
        mapping: Value -> mask value; ``None`` accepts 0/1/255 masks as they are.
        path: Label file, named in errors.

    Raises:
        InputError: a value that ``mapping`` (or the 0/1 convention) does not cover.
    """
    mapping = {v: v for v in MASK_VALUES} if mapping is None else dict(mapping)
    values, inverse = np.unique(labels, return_inverse=True)
    unknown = [v.item() for v in values if v.item() not in mapping]
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:8]) + (" ..." if len(unknown) > 8 else "")
        raise InputError(
            f"{path}: label values {shown} are not covered by the label map "
            f"(default: 0/1 masks, 255 ignored); map them with `label_map`, e.g. '0:255,1:0,2:1'"
        )
    lut = np.array([mapping[v.item()] for v in values], np.uint8)
    return lut[inverse.reshape(labels.shape)]




def mask_values(mask: np.ndarray, mapping: Mapping[int, int] | None, path: object) -> np.ndarray:
    """A mask as read from a file -> uint8 0/1/255, refusing values that would be silently lost.

    Integer-valued floats (``0.0``, ``1.0``) are integers; other floats (``0.9``) or NaN are refused,
    as are values outside 0/1/255 that ``mapping`` does not cover (casting them to uint8 would turn
    them into background or "ignored").

    Raises:
        InputError: naming ``path``, the values found and the label-map fix.
    """
    arr = np.asarray(mask)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        frac = ~finite | (arr != np.round(arr))
        if frac.any():
            shown = ", ".join(f"{v:g}" for v in np.unique(arr[frac])[:5])
            raise InputError(f"{path}: mask holds non-integer values ({shown}); masks are 0 background, 1 landslide, "
                             f"255 ignored: threshold the mask to integers first, then {LABEL_MAP_HINT}")
        big = np.abs(arr) > 2**31
        if big.any():
            raise InputError(f"{path}: mask values {np.unique(arr[big])[0]:g} ... are not 0 (background), 1 "
                             f"(landslide) or 255 (ignored); {LABEL_MAP_HINT}")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise InputError(f"{path}: mask has dtype {arr.dtype}; expected integers 0/1/255")
    if mapping is None and arr.dtype == np.uint8:
        values = np.unique(arr)
        unknown = [int(v) for v in values if int(v) not in MASK_VALUES]
        if unknown:
            shown = ", ".join(str(v) for v in unknown[:8]) + (" ..." if len(unknown) > 8 else "")
            raise InputError(f"{path}: mask values {shown} are not 0 (background), 1 (landslide) or 255 (ignored); "
                             f"{LABEL_MAP_HINT}")
        return arr
    return map_labels(arr, mapping, path)


def parse_label_where(text: str | None) -> tuple[str, frozenset[str]] | None:
    """``"FIELD=VALUE[,VALUE...]"`` -> ``(field, values)``: which polygons of an inventory are landslides.

    >>> parse_label_where("class=landslide,debris flow")
    ('class', frozenset({'debris flow', 'landslide'}))

    Raises:
        InputError: no ``=``, an empty field or no value.
    """
    if text is None:
        return None
    field, sep, values = str(text).partition("=")
    chosen = frozenset(v.strip() for v in values.split(",") if v.strip())
    if not sep or not field.strip() or not chosen:
        raise InputError(f"`label_where` must be FIELD=VALUE[,VALUE...] (e.g. class=landslide), got {text!r}")
    return field.strip(), chosen
