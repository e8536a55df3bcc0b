"""What a detection is asked for: its options and its output files, checked before any work.

Kept apart from the detection job (:mod:`lsmap.map.detect`) so the command line and regional runs
take their defaults from here without importing the models or the readers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsmap.core.checks import check_bool, check_choice, check_int, check_number, check_threshold
from lsmap.core.constants import OVERLAP, WINDOW
from lsmap.core.norms import norm_mode
from lsmap.errors import InputError

if TYPE_CHECKING:
    from lsmap.core.normalize import BandStats

#: Input scales a scene may hold (:func:`lsmap.data.scan.scan_scene`).
INPUT_SCALES = ("auto", "raw", "l4s")


@dataclass(frozen=True)
class DetectOptions:
    """How a scene is mapped: everything of :func:`detect` but the scene, the models and the outputs.

    The fields are :func:`detect`'s keyword arguments of the same names (see there); one options
    object can be reused for many scenes (:func:`lsmap.detect_many` builds one per run).
    """

    bands: str | None = None
    tta: bool = False
    overlap: int = OVERLAP
    window: int | None = None
    batch_size: int | None = None
    norm: str = "auto"
    stats: str | os.PathLike | BandStats | None = None
    input_scale: str = "auto"
    threshold: float | None = None
    uncertainty: bool = False
    min_area: float = 0.0
    simplify: float = 0.0
    fill_holes: float = 0.0
    crf: bool = False
    device: Any = "auto"
    block: int = 1024
    pre: str | os.PathLike | Any | None = None
    pre_bands: str | None = None
    pre_offset: float | None = None
    min_ndvi_drop: float | None = None
    min_slope: float | None = None
    keep_rejected: bool = False
    gate: bool = False

    @property
    def evidence(self) -> bool:
        """Whether the evidence stage runs (:mod:`lsmap.map.evidence`): a pre scene or a slope limit."""
        return self.pre is not None or bool(self.min_slope)

    def check(self) -> None:
        """Raise :class:`InputError` for an option that cannot work, before any work.

        Types and ranges are checked as the command line would (:mod:`lsmap.core.checks`): NaN
        never passes, a threshold outside (0, 1) (0 would map everything, 1 nothing) or a string where a number belongs is refused.
        """
        if norm_mode(self.norm, auto=True) == "model" and self.stats is not None:
            raise InputError("`stats` gives the scene's statistics; it cannot be combined with `norm` model")
        check_choice("input_scale", self.input_scale, INPUT_SCALES)
        window = check_int("window", self.window, 16) if self.window is not None else WINDOW  # auto: >= WINDOW
        check_int("overlap", self.overlap, 0, window - 1)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, 1)
        check_int("block", self.block, 16)
        if self.threshold is not None:
            check_threshold(self.threshold)
        for name in ("min_area", "simplify", "fill_holes"):
            check_number(name, getattr(self, name), 0)
        for name in ("tta", "uncertainty", "crf"):
            check_bool(name, getattr(self, name))
        if self.bands is not None and not isinstance(self.bands, str):
            raise InputError(f"`bands` must be a band profile name (got {self.bands!r})")
        from lsmap.core.normalize import BandStats  # numpy: not at a command line's start

        if self.stats is not None and not isinstance(self.stats, (str, os.PathLike, BandStats)):
            raise InputError(f"`stats` must be a statistics JSON path or BandStats (got {type(self.stats).__name__})")
        for name in ("keep_rejected", "gate"):
            check_bool(name, getattr(self, name))
        if self.min_ndvi_drop is not None:
            check_number("min_ndvi_drop", self.min_ndvi_drop, -2, 2)
        if self.min_slope is not None:
            check_number("min_slope", self.min_slope, 0, 90)
        if self.pre is None and self.min_ndvi_drop is not None:
            raise InputError("`min_ndvi_drop` needs a pre-event scene; pass `pre`")
        if self.pre is None and self.pre_bands is not None:
            raise InputError("`pre_bands` names the bands of the pre-event scene; pass `pre`")
        if self.pre_offset is not None:
            check_number("pre_offset", self.pre_offset, -10000, 10000)
            if self.pre is None:
                raise InputError("`pre_offset` is the DN offset of a pre-event band folder; pass `pre`")
        for name in ("keep_rejected", "gate"):
            if getattr(self, name) and not self.evidence:
                raise InputError(f"`{name}` acts on the evidence of a pre-event scene or a slope limit; "
                                 f"pass `pre` or `min_slope`")
        if self.crf:
            from lsmap.learn.crf import require

            require()


def non_default(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without those equal to their :class:`DetectOptions` default.

    Regional runs record and hash only these, so a scene's completion marker stays valid when a
    new option (at its default) is added or a default is passed explicitly.
    """
    defaults = {f.name: f.default for f in fields(DetectOptions)}
    return {k: v for k, v in settings.items() if not (k in defaults and v == defaults[k])}


@dataclass(frozen=True)
class DetectOutputs:
    """The files a detection writes (``None``: not written)."""

    polygons: Path | None = None
    prob: Path | None = None
    mask: Path | None = None
    quicklook: Path | None = None
    report: Path | None = None

    def check(self, overwrite: bool) -> None:
        """Raise before any work when the outputs clash, have the wrong type, or exist."""

        from lsmap.map.vectorize import check_vector_output, vector_driver

        given = [p for p in vars(self).values() if p is not None]
        if len({p.resolve() for p in given}) != len(given):
            raise InputError("the polygon, probability, mask, quick-look and report outputs must be different files")
        if self.polygons is not None:
            vector_driver(self.polygons)
            check_vector_output(self.polygons, overwrite)
        for p in (self.prob, self.mask):
            if p is not None and p.suffix.lower() not in (".tif", ".tiff"):
                raise InputError(f"{p}: raster outputs are GeoTIFFs; use a .tif name")
        if self.quicklook is not None and self.quicklook.suffix.lower() != ".png":
            raise InputError(f"{self.quicklook}: the quick-look is a PNG; use a .png name")
        if self.report is not None and self.report.suffix.lower() not in (".html", ".htm"):
            raise InputError(f"{self.report}: the report is an HTML page; use a .html name")

    def named(self) -> dict[str, str]:
        """``{"polygons": path, ...}`` of the outputs written."""
        return {k: str(v) for k, v in vars(self).items() if v is not None}
