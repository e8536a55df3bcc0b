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


def test_band_sets_by_name_and_comma_list():
    assert get_profile("B4,B3,B2,B8") is PROFILES["rgbn"], "a list equal to a profile is that profile"
    p = get_profile("b08, B02,dem")
    assert p.bands == ("B8", "B2", "DEM") and p.name == "B8,B2,DEM"
    assert p.spectral_indices == (0, 1), "terrain is never spectral"
    assert p.divisors == (L4S_DIVISORS[7], L4S_DIVISORS[1], L4S_DIVISORS[13])
    assert get_profile(["B8A"]).divisors == (L4S_DIVISORS[7],), "B8A takes B8's divisor"
    assert get_profile(("slope",)).spectral == frozenset()


def test_l2a_profiles_are_l4s_without_b10():
    assert get_profile("l2a-terrain").bands == tuple(b for b in L4S_BANDS if b != "B10")
    assert get_profile("l2a").bands == tuple(b for b in L4S_BANDS if b not in ("B10", "slope", "DEM"))


@pytest.mark.parametrize("spec, msg", [
    ("B4,B13", "unknown band 'B13'; band names are B1, B2"),
    ("B4,B4", "band 'B4' is named twice"),
    ("sentinel", "give a profile .*l2a-terrain.* or a comma list of band names .*B8A"),
    (",", "unknown band set"),
])
def test_bad_band_sets_list_valid_names(spec, msg):
    with pytest.raises(InputError, match=msg):
        get_profile(spec)


def test_band_indices_by_name_in_wanted_order():
    from lsmap.core.bands import band_indices
    from lsmap.errors import MissingBandError

    assert band_indices(L4S_BANDS, "rgbn", source="x.tif") == (3, 2, 1, 7)
    assert band_indices(["b04", "DEM", "B02"], "B2,B4", source="x.tif") == (2, 0)
    with pytest.raises(MissingBandError, match=r"^x\.tif: no band B10 needed by m\.safetensors \(it has B1, B2"):
        band_indices(get_profile("l2a").bands, "s2", source="x.tif", user="m.safetensors")
    with pytest.raises(MissingBandError, match=r"no bands B1, B10 needed"):
        band_indices(["B4", "B3", "B2", "B8", "B5", "B6", "B7", "B9", "B11", "B12"], "s2", source="x.tif",
                     user="m.safetensors")


def test_old_profile_dicts_still_read():
    d = get_profile("rgbn").to_dict()
    assert profile_from_dict(d) is PROFILES["rgbn"]
    assert profile_from_dict(["B4", "B3", "B2", "B8"]) is PROFILES["rgbn"]
