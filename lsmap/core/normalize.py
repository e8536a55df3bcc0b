"""Pure: streaming per-band statistics and per-domain normalisation.

The 1st-place solution normalised every domain (training data, validation, a new scene) by its
own per-band mean and standard deviation. :class:`RunningStats` accumulates those statistics over
any number of arrays without holding them (Chan et al.'s parallel update, float64 accumulators),
so a whole scene or patch folder is summarised block by block.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsmap.core.norms import NORM_ALIASES, NORMS, norm_choices, norm_mode  # noqa: F401 (their home before)
from lsmap.errors import InputError
from lsmap.io.rasters import atomic_output

_MIN_STD = 1e-6


@dataclass(frozen=True)
class BandStats:
    """Per-band mean and standard deviation over ``count`` valid pixels.

    Attributes:
        mean: One value per band.
        std: One value per band (population standard deviation).
        count: Number of pixels the statistics were computed over.
        bands: Band names, when known (checked against the data they are applied to).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    count: int
    bands: tuple[str, ...] | None = None

    def normalize(self, x: np.ndarray, axis: int = 0) -> np.ndarray:
        """Return ``(x - mean) / std`` as float32 with bands along ``axis`` (0 for CHW)."""
        if x.shape[axis] != len(self.mean):
            raise InputError(f"statistics have {len(self.mean)} bands, data has {x.shape[axis]}")
        shape = [1] * x.ndim
        shape[axis] = -1
        mean = np.asarray(self.mean, np.float32).reshape(shape)
        std = np.maximum(np.asarray(self.std, np.float32), _MIN_STD).reshape(shape)
        return ((x - mean) / std).astype(np.float32, copy=False)

    def take(self, indices: Sequence[int]) -> BandStats:
        """The statistics of the bands at ``indices`` (0-based), in that order."""
        idx = list(indices)
        return BandStats(tuple(self.mean[i] for i in idx), tuple(self.std[i] for i in idx), self.count,
                         tuple(self.bands[i] for i in idx) if self.bands is not None else None)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        d = {"mean": list(self.mean), "std": list(self.std), "count": self.count}
        if self.bands is not None:
            d["bands"] = list(self.bands)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BandStats:
        """Inverse of :meth:`to_dict`."""
        try:
            mean, std = tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"band statistics need 'mean' and 'std' lists of numbers ({e})") from None
        if len(mean) != len(std):
            raise InputError("band statistics: 'mean' and 'std' differ in length")
        bands = tuple(d["bands"]) if d.get("bands") is not None else None
        return cls(mean, std, int(d.get("count", 0)), bands)

    def save(self, path: str | os.PathLike, *, lock: bool = False) -> None:
        """Write as JSON (atomically, see :func:`lsmap.io.outputs.atomic_output`; ``lock`` for a command's output)."""

        with atomic_output(path, overwrite=True, lock=lock) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> BandStats:
        """Read statistics written by :meth:`save` (or ``lsmap stats``)."""
        path = Path(path)
        try:
            stats = cls.from_dict(json.loads(path.read_text()))
        except UnicodeDecodeError:  # a raster or other binary file given for the statistics JSON
            raise InputError(f"{path}: not a band statistics JSON file (binary content); give the JSON that "
                             f"'lsmap stats' writes") from None
        except (OSError, json.JSONDecodeError, AttributeError) as e:
            raise InputError(f"{path}: cannot read band statistics ({e}); write them with 'lsmap stats'") from None
        except InputError as e:
            raise InputError(f"{path}: {e}") from None
        problem = stats.problem()
        if problem:
            raise InputError(f"{path}: {problem}; normalising with it would give wrong values, recompute the "
                             f"statistics with 'lsmap stats' over data where every band varies")
        return stats

    def problem(self) -> str | None:
        """Why these statistics cannot normalise data (a NaN/inf value, a zero or negative std), or ``None``."""
        names = self.bands or tuple(f"#{i + 1}" for i in range(len(self.mean)))
        for name, m, s in zip(names, self.mean, self.std, strict=False):
            if not (np.isfinite(m) and np.isfinite(s)):
                return f"band {name} has mean {m} and std {s} (not finite)"
            if s <= 0:
                return f"band {name} has std {s} (a constant band)"
        return None


class RunningStats:
    """Accumulate per-band mean/variance over many arrays (streaming, numerically stable).

    Example:
        >>> rs = RunningStats(3)
        >>> rs.update(np.ones((3, 4, 4)))
        >>> rs.result().mean
        (1.0, 1.0, 1.0)
    """

    def __init__(self, bands: int) -> None:
        self.n = 0
        self.mean = np.zeros(bands, np.float64)
        self.m2 = np.zeros(bands, np.float64)

    def update(self, x: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add the pixels of ``x`` (shape ``(C, H, W)``) where ``valid`` (``(H, W)`` bool) is true.

        Non-finite values are never counted: a pixel with any non-finite band is treated as invalid.
        """
        x = np.asarray(x)
        flat = x.reshape(x.shape[0], -1)
        keep = np.isfinite(flat).all(axis=0) if flat.dtype.kind in "fc" else np.ones(flat.shape[1], bool)
        if valid is not None:
            keep &= np.asarray(valid, bool).reshape(-1)
        if not keep.all():
            flat = flat[:, keep]
        nb = flat.shape[1]
        if nb == 0:
            return
        # float64 arithmetic a band at a time: no whole-block float64 copy (4x faster on 512^2 x 14)
        mb = np.empty(flat.shape[0])
        m2b = np.empty(flat.shape[0])
        for b, band in enumerate(flat):
            d = band.astype(np.float64)
            mb[b] = d.sum() / nb
            d -= mb[b]
            m2b[b] = np.einsum("i,i", d, d)  # not np.dot: BLAS threads would fight the scan's threads
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta**2 * (self.n * nb / n)
        self.n = n

    def merge(self, other: RunningStats) -> None:
        """Fold another accumulator into this one (for parallel passes)."""
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.n / n)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / n)
        self.n = n

    def result(self, bands: tuple[str, ...] | None = None) -> BandStats:
        """Return the statistics so far.

        Raises:
            InputError: no valid pixel was seen.
        """
        if self.n == 0:
            raise InputError("no valid pixel to compute band statistics from")
        std = np.sqrt(self.m2 / self.n)
        return BandStats(tuple(self.mean.tolist()), tuple(std.tolist()), int(self.n), bands)
