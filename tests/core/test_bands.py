"""Band profiles: the registry, the L4S divisor vector and band-count checks."""

import pytest

from lsmap.core.bands import L4S_BANDS, L4S_DIVISORS, PROFILES, get_profile, profile_from_dict
from lsmap.errors import BandMismatchError, InputError


def test_l4s14_matches_the_benchmark():
    p = get_profile("l4s14")
    assert p.bands == L4S_BANDS and p.count == 14
    assert p.divisors[3] == pytest.approx(445.17289745) and p.divisors[-1] == pytest.approx(772.83144788)
    assert p.spectral_indices == tuple(range(12)), "slope and DEM are never spectral"
    assert "B8A" not in p.bands


def test_rgb_profiles_reuse_sentinel2_divisors():
    div = dict(zip(L4S_BANDS, L4S_DIVISORS, strict=False))
    for name, bands in (("rgb", ("B4", "B3", "B2")), ("rgbn", ("B4", "B3", "B2", "B8"))):
        p = get_profile(name)
        assert p.bands == bands
        assert p.divisors == tuple(div[b] for b in bands)
        assert p.spectral_indices == tuple(range(len(bands)))


def test_profiles_are_immutable_and_roundtrip():
    p = get_profile("l4s14")
    with pytest.raises(AttributeError):
        p.name = "x"
    with pytest.raises(TypeError):
        PROFILES["x"] = p
    assert profile_from_dict(p.to_dict()) == p


def test_band_count_mismatch_names_file_and_counts():
    with pytest.raises(BandMismatchError, match=r"scene\.tif.*l4s14.*14 bands.*has 4"):
        get_profile("l4s14").check_count(4, "scene.tif")
    get_profile("rgbn").check_count(4, "scene.tif")


def test_unknown_profile_lists_valid_names():
    with pytest.raises(InputError, match="l4s14"):
        get_profile("sentinel")
