"""Band sets: ordered tuples of band names, with named profiles as shortcuts.

A band set (a :class:`BandProfile`) fixes the band order, which bands are spectral (colour
perturbation may touch only these), the divisors that bring raw values (Sentinel-2 digital numbers,
slope in degrees, DEM in metres) to the Landslide4Sense scale, and the nodata value of raw inputs.
Any ordered subset of :data:`BAND_NAMES` is a band set; :data:`PROFILES` names the common ones.
:func:`get_profile` takes a profile name, a comma list (``"B4,B3,B2,B8"``) or a sequence of names.

Band data is always matched *by name*: :func:`band_indices` finds a band set's bands among the
bands a file has (in any order), and names the missing band when one is absent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from lsmap.errors import BandMismatchError, InputError, MissingBandError

#: Landslide4Sense band order and the dataset authors' raw-to-scaled divisors (the benchmark's data loader).
L4S_BANDS: tuple[str, ...] = (
    "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "slope", "DEM",
)
L4S_DIVISORS: tuple[float, ...] = (
    1111.81236406, 824.63171476, 663.41636217, 445.17289745, 645.8582926, 1547.73508126,
    1960.44401001, 1941.32229668, 674.07572865, 9.04787384, 1113.98338755, 519.90397929,
    20.29228266, 772.83144788,
)
_L4S_DIVISOR = dict(zip(L4S_BANDS, L4S_DIVISORS, strict=True))
#: B8A is not in Landslide4Sense: it takes the divisor of B8, the band nearest to it.
_DIVISOR = {**_L4S_DIVISOR, "B8A": _L4S_DIVISOR["B8"]}
#: Every band name lsmap knows, in canonical (L4S) order; B8A after B8 as in Sentinel-2 products.
BAND_NAMES: tuple[str, ...] = (*L4S_BANDS[:8], "B8A", *L4S_BANDS[8:])
#: Sentinel-2 band names as they appear in file names, and their native resolution in metres.
S2_RESOLUTION: Mapping[str, int] = MappingProxyType({
    "B1": 60, "B2": 10, "B3": 10, "B4": 10, "B5": 20, "B6": 20, "B7": 20, "B8": 10, "B8A": 20,
    "B9": 60, "B10": 60, "B11": 20, "B12": 20,
})
TERRAIN_BANDS = frozenset({"slope", "DEM"})
_CANONICAL = {b.lower(): b for b in BAND_NAMES} | {"b01": "B1", "b02": "B2", "b03": "B3", "b04": "B4",
                                                   "b05": "B5", "b06": "B6", "b07": "B7", "b08": "B8",
                                                   "b09": "B9", "dem": "DEM", "slope": "slope"}


@dataclass(frozen=True)
class BandProfile:
    """What the bands of an input are (a band set).

    Attributes:
        name: Registry name, e.g. ``"l4s14"``, or the comma list of a set without one.
        bands: Band names in order.
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

    @property
    def label(self) -> str:
        """``name (B1, B2, ...)`` for messages; just the list for a set without a registry name."""
        listed = ", ".join(self.bands)
        return listed if self.name == ",".join(self.bands) else f"'{self.name}' ({listed})"

    def check_count(self, found: int, path: object) -> None:
        """Raise :class:`BandMismatchError` naming ``path`` unless ``found`` equals :attr:`count`."""
        if found != self.count:
            raise BandMismatchError(path, self.name, self.count, found)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "name": self.name, "bands": list(self.bands), "divisors": list(self.divisors),
            "spectral": sorted(self.spectral, key=self.bands.index), "nodata": self.nodata,
        }


def _from_names(name: str, bands: tuple[str, ...]) -> BandProfile:
    return BandProfile(
        name=name,
        bands=bands,
        divisors=tuple(_DIVISOR[b] for b in bands),
        spectral=frozenset(b for b in bands if b not in TERRAIN_BANDS),
    )


_NO_B10 = tuple(b for b in L4S_BANDS if b != "B10")
PROFILES: Mapping[str, BandProfile] = MappingProxyType({
    p.name: p
    for p in (
        _from_names("l4s14", L4S_BANDS),
        # RGB / RGB+NIR keep the L4S divisors of the matching Sentinel-2 bands (B4, B3, B2, B8).
        _from_names("rgb", ("B4", "B3", "B2")),
        _from_names("rgbn", ("B4", "B3", "B2", "B8")),
        _from_names("s2", L4S_BANDS[:12]),
        # What every L2A product (and an L1C one) has: the L4S bands without the cirrus band B10,
        # with terrain (a DEM) and without.
        _from_names("l2a-terrain", _NO_B10),
        _from_names("l2a", tuple(b for b in _NO_B10 if b not in TERRAIN_BANDS)),
    )
})
#: One line per profile, for help texts and error messages.
PROFILE_HELP = "; ".join(f"{n}: {','.join(p.bands)}" for n, p in PROFILES.items())


def canonical_band(name: str) -> str | None:
    """The canonical spelling of band ``name`` (``b04``/``B04``/``b4`` -> ``B4``, ``dem`` -> ``DEM``), or ``None``."""
    return _CANONICAL.get(str(name).strip().lower())


def _unknown(spec: object) -> InputError:
    return InputError(
        f"unknown band set '{spec}'; give a profile ({', '.join(PROFILES)}) or a comma list of band names "
        f"({', '.join(BAND_NAMES)}), e.g. `bands` B4,B3,B2,B8"
    )


def band_set(bands: Sequence[str]) -> BandProfile:
    """The band set of ``bands`` (in that order): the registered profile with exactly these bands, if any.

    Raises:
        InputError: an unknown or repeated band name, or no band.
    """
    names = []
    for b in bands:
        c = canonical_band(b)
        if c is None:
            raise InputError(f"unknown band '{b}'; band names are {', '.join(BAND_NAMES)}")
        if c in names:
            raise InputError(f"band '{c}' is named twice in {','.join(str(x) for x in bands)}; name each band once")
        names.append(c)
    if not names:
        raise InputError(f"empty band set; give a profile ({', '.join(PROFILES)}) or a comma list of band names")
    names = tuple(names)
    for p in PROFILES.values():
        if p.bands == names:
            return p
    return _from_names(",".join(names), names)


def get_profile(name: str | Sequence[str] | BandProfile) -> BandProfile:
    """The band set ``name``: a profile name, a comma list of band names, or a sequence of names.

    Profiles pass through.

    Raises:
        InputError: neither a profile nor valid band names; the message lists the valid ones.
    """
    if isinstance(name, BandProfile):
        return name
    if isinstance(name, str):
        key = name.strip()
        if key in PROFILES:
            return PROFILES[key]
        if key.lower() in PROFILES:
            return PROFILES[key.lower()]
        parts = [s for s in key.split(",") if s.strip()]
        if not parts or ("," not in key and canonical_band(key) is None):
            raise _unknown(name)
        return band_set(parts)
    return band_set(list(name))


def profile_from_dict(d: dict | Sequence[str]) -> BandProfile:
    """The band set stored in a model card or tiles.json: a list of names, or (older cards) a
    :meth:`BandProfile.to_dict` dict whose band names are used."""
    if isinstance(d, dict):
        return band_set(d["bands"])
    return band_set(list(d))


def band_indices(available: Sequence[str], wanted: BandProfile | str | Sequence[str], *,
                 source: object, user: object = None) -> tuple[int, ...]:
    """Indices into ``available`` of the bands of ``wanted``, in ``wanted``'s order.

    Args:
        available: The band names a file has, in its order.
        wanted: The band set to take from it.
        source: The file (for the message).
        user: Who wants the bands, e.g. a model path (for the message).

    Raises:
        MissingBandError: bands of ``wanted`` are not in ``available`` (all of them are named).
    """
    wanted = get_profile(wanted)
    have = {}
    for i, b in enumerate(available):
        c = canonical_band(b) or str(b)
        have.setdefault(c, i)
    missing = tuple(b for b in wanted.bands if b not in have)
    if missing:
        raise MissingBandError(missing, source, user, tuple(available))
    return tuple(have[b] for b in wanted.bands)
