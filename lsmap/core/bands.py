"""Band profiles: named, immutable descriptions of what a raster's bands are.

A profile fixes the band order, which bands are spectral (colour perturbation may touch only
these), the divisors that bring raw values (Sentinel-2 digital numbers, slope in degrees, DEM in
metres) to the Landslide4Sense scale, and the nodata value of raw inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from lsmap.errors import BandMismatchError, InputError

#: Landslide4Sense band order and the dataset authors' raw-to-scaled divisors (the benchmark's data loader).
L4S_BANDS: tuple[str, ...] = (
    "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "slope", "DEM",
)
L4S_DIVISORS: tuple[float, ...] = (
    1111.81236406, 824.63171476, 663.41636217, 445.17289745, 645.8582926, 1547.73508126,
    1960.44401001, 1941.32229668, 674.07572865, 9.04787384, 1113.98338755, 519.90397929,
    20.29228266, 772.83144788,
)
_L4S_DIVISOR = dict(zip(L4S_BANDS, L4S_DIVISORS, strict=False))
#: Sentinel-2 band names as they appear in file names, and their native resolution in metres.
S2_RESOLUTION: Mapping[str, int] = MappingProxyType({
    "B1": 60, "B2": 10, "B3": 10, "B4": 10, "B5": 20, "B6": 20, "B7": 20, "B8": 10, "B8A": 20,
    "B9": 60, "B10": 60, "B11": 20, "B12": 20,
})
TERRAIN_BANDS = frozenset({"slope", "DEM"})


@dataclass(frozen=True)
class BandProfile:
    """What the bands of an input are.

    Attributes:
        name: Registry name, e.g. ``"l4s14"``.
        bands: Band names in file order.
        divisors: Raw value / divisor = L4S-scaled value, one per band.
        spectral: Names of the bands that colour perturbation may change.
        nodata: Nodata value of *raw* inputs of this profile (``None``: none declared).
    """

    name: str
    bands: tuple[str, ...]
    divisors: tuple[float, ...]
    spectral: frozenset[str]
    nodata: float | None = 0.0

    def __post_init__(self) -> None:
        if len(self.bands) != len(self.divisors):
            raise ValueError(f"profile {self.name}: {len(self.bands)} bands, {len(self.divisors)} divisors")
        if not self.spectral <= set(self.bands):
            raise ValueError(f"profile {self.name}: spectral bands {sorted(self.spectral - set(self.bands))} unknown")

    @property
    def count(self) -> int:
        """Number of bands."""
        return len(self.bands)

    @property
    def spectral_indices(self) -> tuple[int, ...]:
        """Indices (in band order) of the spectral bands."""
        return tuple(i for i, b in enumerate(self.bands) if b in self.spectral)

    @property
    def sentinel2_bands(self) -> tuple[str, ...]:
        """The bands that come from Sentinel-2 (everything but terrain)."""
        return tuple(b for b in self.bands if b not in TERRAIN_BANDS)

    def check_count(self, found: int, path: object) -> None:
        """Raise :class:`BandMismatchError` naming ``path`` unless ``found`` equals :attr:`count`."""
        if found != self.count:
            raise BandMismatchError(path, self.name, self.count, found)

    def to_dict(self) -> dict:
        """JSON-ready form (stored in model cards)."""
        return {
            "name": self.name, "bands": list(self.bands), "divisors": list(self.divisors),
            "spectral": sorted(self.spectral, key=self.bands.index), "nodata": self.nodata,
        }


def _from_l4s(name: str, bands: tuple[str, ...]) -> BandProfile:
    return BandProfile(
        name=name,
        bands=bands,
        divisors=tuple(_L4S_DIVISOR[b] for b in bands),
        spectral=frozenset(b for b in bands if b not in TERRAIN_BANDS),
    )


PROFILES: Mapping[str, BandProfile] = MappingProxyType({
    p.name: p
    for p in (
        _from_l4s("l4s14", L4S_BANDS),
        # RGB / RGB+NIR keep the L4S divisors of the matching Sentinel-2 bands (B4, B3, B2, B8).
        _from_l4s("rgb", ("B4", "B3", "B2")),
        _from_l4s("rgbn", ("B4", "B3", "B2", "B8")),
        _from_l4s("s2", L4S_BANDS[:12]),
    )
})


def get_profile(name: str | BandProfile) -> BandProfile:
    """Return the registered profile ``name`` (profiles pass through).

    Raises:
        InputError: ``name`` is not registered; the message lists the valid names.
    """
    if isinstance(name, BandProfile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise InputError(f"unknown band profile '{name}'; choose one of: {', '.join(PROFILES)}") from None


def profile_from_dict(d: dict) -> BandProfile:
    """Inverse of :meth:`BandProfile.to_dict`."""
    return BandProfile(
        name=d["name"], bands=tuple(d["bands"]), divisors=tuple(float(x) for x in d["divisors"]),
        spectral=frozenset(d["spectral"]), nodata=d.get("nodata"),
    )
