"""Detection by band name: each model gets the bands its card names, from any scene that has them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from detect_fixtures import Band0Model, member, smooth_scene, write_scene
from patchgen import make_patches

import lsmap
from lsmap.cli import main
from lsmap.core.bands import L4S_BANDS, get_profile
from lsmap.errors import MissingBandError
from lsmap.map.stream import predict_scene

KW = dict(window=64, overlap=16, device="cpu")


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1)


def test_ensemble_of_two_band_sets_on_one_scene(tmp_path, rng):
    """Member A sees (B4, B3, B2, B8), member B (B8, DEM): Band0Model's probability is sigmoid of the
    normalised first band of each, so the ensemble mean shows that each got its own bands, in order."""
    data = smooth_scene(rng, h=130, w=150)
    scene = write_scene(tmp_path / "s.tif", data, bands=L4S_BANDS)
    a, b = member(Band0Model(), "rgbn"), member(Band0Model(), "B8,DEM")
    info = lsmap.io.scene.scene_info(scene)
    res = predict_scene(info, [a, b], tmp_path / "p.tif", stats=None, **KW)
    b4, b8 = data[L4S_BANDS.index("B4")], data[L4S_BANDS.index("B8")]
    expected = (_sigmoid((b4 - 1) / 0.5) + _sigmoid((b8 - 1) / 0.5)) / 2
    np.testing.assert_allclose(_read(res.prob), expected, atol=2e-3)  # bfloat16 autocast on AMX CPUs
    # the same through lsmap.detect, with the scene's own statistics per member band
    gdf = lsmap.detect(scene, [a, b], norm="own", **KW)
    assert gdf.attrs["lsmap"]["bands"] == "B2,B3,B4,B8,DEM", "the scene bands read: the members' union, in file order"


def test_scene_band_order_does_not_matter(tmp_path, rng):
    data = smooth_scene(rng, h=100, w=120)
    order = [7, 13, 3, 2, 1]  # B8, DEM, B4, B3, B2
    s1 = write_scene(tmp_path / "l4s.tif", data, bands=L4S_BANDS)
    s2 = write_scene(tmp_path / "shuffled.tif", data[order], bands=[L4S_BANDS[i] for i in order])
    members = [member(Band0Model(), "rgbn"), member(Band0Model(), "B8,DEM")]
    p1 = predict_scene(lsmap.io.scene.scene_info(s1), members, tmp_path / "p1.tif", stats=None, **KW).prob
    p2 = predict_scene(lsmap.io.scene.scene_info(s2), members, tmp_path / "p2.tif", stats=None, **KW).prob
    np.testing.assert_array_equal(_read(p1), _read(p2))


def test_missing_band_is_one_line_naming_band_scene_and_model(tmp_path, rng):
    from detect_fixtures import card

    from lsmap.learn.models import save_checkpoint

    scene = write_scene(tmp_path / "rgbn.tif", smooth_scene(rng, bands=4, h=64, w=64), bands=("B2", "B3", "B4", "B8"))
    ck = save_checkpoint(tmp_path / "m", lsmap.learn.models.build_model("tiny-unet", 11), card("l2a"))
    with pytest.raises(MissingBandError, match=r"rgbn\.tif: no bands B1, B5, B6, B7, B9, B11, B12 needed by .*m\."):
        lsmap.detect(scene, [ck], **KW)
    r = CliRunner().invoke(main, ["detect", str(scene), "--model", str(ck), "-o", str(tmp_path / "o.gpkg"),
                                  "--device", "cpu"])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert "rgbn.tif: no bands B1" in r.output and "needed by" in r.output and "m.safetensors" in r.output
    assert not (tmp_path / "o.gpkg").exists()
    # a file without band descriptions: --bands names them
    bare = write_scene(tmp_path / "bare.tif", smooth_scene(rng, bands=4, h=64, w=64))
    r = CliRunner().invoke(main, ["detect", str(bare), "--model", str(ck), "-o", str(tmp_path / "o.gpkg"),
                                  "--device", "cpu", "--bands", "rgbn"])
    assert r.exit_code == 1 and "bare.tif: no bands B1" in r.output, r.output


@pytest.mark.parametrize("bands", ["rgbn", "B4,B3,B2,B8"])
def test_train_on_14_band_patches_then_detect_rgbn_and_14_band_scenes(tmp_path, rng, bands):
    """`lsmap train --bands rgbn` (or the comma list) on 14-band L4S patches; the card names the bands;
    the model then maps an RGBN scene (as `lsmap stack` writes it: B2, B3, B4, B8) and a 14-band scene
    holding the same pixels to the same probabilities."""
    make_patches(tmp_path / "tr", 4, size=32, seed=1)
    make_patches(tmp_path / "va", 2, size=32, seed=2)
    r = CliRunner().invoke(main, ["train", "--train", str(tmp_path / "tr"), "--val", str(tmp_path / "va"),
                                  "--model", "tiny-unet", "--scale", "1", "--bands", bands, "--steps", "3",
                                  "--batch-size", "2", "--val-every", "3", "--device", "cpu", "-o",
                                  str(tmp_path / "run"), "--json"])
    assert r.exit_code == 0, r.output
    ck = tmp_path / "run" / "best.safetensors"
    card = json.loads((tmp_path / "run" / "best.json").read_text())
    assert card["bands"] == ["B4", "B3", "B2", "B8"]
    assert len(card["stats"]["mean"]) == 4 and card["stats"]["bands"] == ["B4", "B3", "B2", "B8"]

    data = smooth_scene(rng, h=100, w=120)
    full = write_scene(tmp_path / "l4s.tif", data, bands=L4S_BANDS)
    idx = [L4S_BANDS.index(b) for b in ("B2", "B3", "B4", "B8")]
    rgbn = write_scene(tmp_path / "rgbn.tif", data[idx], bands=("B2", "B3", "B4", "B8"))
    probs = []
    for scene in (full, rgbn):
        out = tmp_path / f"{scene.stem}-prob.tif"
        r = CliRunner().invoke(main, ["detect", str(scene), "--model", str(ck), "-o", str(tmp_path / f"{scene.stem}.gpkg"),
                                      "--prob", str(out), "--device", "cpu", "--window", "64", "--overlap", "16"])
        assert r.exit_code == 0, r.output
        probs.append(_read(out))
    np.testing.assert_array_equal(probs[0], probs[1])
    assert 0 < probs[0].mean() < 254


def test_default_model_is_chosen_from_the_scene_bands(tmp_path, rng):
    """Without a model, detect takes the first shipped default whose bands the scene has."""
    from lsmap.learn.models import read_card, shipped_defaults

    shipped = {p.stem: read_card(p) for p in shipped_defaults()}
    assert {"l4s14-default", "l2a-terrain-default", "l2a-default"} <= set(shipped)
    for profile, model in (("l2a", "l2a-default"), ("l2a-terrain", "l2a-terrain-default"), ("l4s14", "l4s14-default")):
        names = get_profile(profile).bands
        scene = write_scene(tmp_path / f"{profile}.tif", smooth_scene(rng, bands=len(names), h=64, w=64), bands=names)
        gdf = lsmap.detect(scene, **KW)
        assert [p.split("/")[-1] for p in gdf.attrs["lsmap"]["models"]] == [f"{model}.safetensors"], profile


@pytest.mark.realdata
def test_real_l2a_bands_stack_and_detect_with_the_shipped_default(tmp_path):
    """Real post-event Sentinel-2 L2A bands (Puthumala, Aug 2019): 12 bands, no B10, no DEM. `lsmap
    stack` without --bands writes the 11 L4S bands it can fill; `lsmap detect` picks the shipped
    spectral-only default and maps the scene."""
    from conftest import shared_data

    bands_dir = shared_data("s2", "kerala", "puthumala_2019")
    scene = tmp_path / "s.tif"
    r = CliRunner().invoke(main, ["stack", str(bands_dir), "-o", str(scene)])
    assert r.exit_code == 0, r.output
    assert "11 bands (l2a: B1,B2,B3,B4,B5,B6,B7,B8,B9,B11,B12)" in r.output
    assert "left out: B10 (no band file); slope, DEM (no DEM)" in r.output
    r = CliRunner().invoke(main, ["detect", str(scene), "-o", str(tmp_path / "slides.gpkg"), "--quicklook",
                                  str(tmp_path / "q.png"), "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert [m.split("/")[-1] for m in summary["models"]] == ["l2a-default.safetensors"]
    # surface reflectance against the top-of-atmosphere training data: B9 +7.3 training standard deviations
    assert summary["shift_sigmas"]["B9"] > 7 and "unlike the models' training data: B9 +7." in r.stderr
    assert summary["bands"] == "l2a" and summary["input_scale"] == "l4s"
    assert (tmp_path / "q.png").stat().st_size > 10_000
    # the 2019 debris-flow scar: a corridor 150 m either side of its track (scene pixel col, row,
    # read off the quick-look), from the runout fan in the south-west up the channel to the north-east
    import geopandas as gpd
    from shapely.geometry import LineString

    with rasterio.open(scene) as src:
        track = LineString([src.transform @ p for p in ((347, 155), (363, 125), (391, 112), (426, 120),
                                                        (471, 95), (496, 72), (541, 34), (571, 4))])
    corridor = track.buffer(150)
    slides = gpd.read_file(tmp_path / "slides.gpkg")
    on = slides.intersects(corridor)
    assert slides[on].area.sum() > 40_000, "the fan and the lower channel are mapped (0.052 km2 measured)"
    assert slides[~on].area.sum() < 10_000, "little is flagged elsewhere (0.0004 km2 measured)"


def test_default_model_for_a_product_is_chosen_before_stacking(tmp_path, monkeypatch):
    """Without a model, a product or band folder gets the first shipped default its bands fit, read from its
    metadata (or file names) before it is stacked: only that model's bands are stacked, and a product that
    fits none fails at once, named as given (not as the scratch stack), with the fix."""
    from products_fixtures import make_safe, zip_safe

    import lsmap.data.stack
    from lsmap.errors import CheckpointError

    l2a = [b for b in get_profile("l2a").bands]
    safe = make_safe(tmp_path / "p", bands=(*l2a, "B8A"))
    stacked = []
    real = lsmap.data.stack.stack_scene
    monkeypatch.setattr(lsmap.data.stack, "stack_scene", lambda *a, **k: stacked.append(k["bands"]) or real(*a, **k))
    gdf = lsmap.detect(zip_safe(safe), **KW)
    assert [p.split("/")[-1] for p in gdf.attrs["lsmap"]["models"]] == ["l2a-default.safetensors"]
    assert [get_profile(b).bands for b in stacked] == [tuple(l2a)], "the model's bands, not B8A too"

    stacked.clear()
    short = make_safe(tmp_path / "q", bands=("B2", "B3", "B4", "B8"))
    with pytest.raises(CheckpointError) as e:
        lsmap.detect(short, out=tmp_path / "s.gpkg", **KW)
    msg = str(e.value)
    assert msg.startswith(f"{short.resolve()}: no shipped model fits its bands (B2, B3, B4, B8)"), msg
    assert "l2a-default lacks B1, B5" in msg and msg.endswith("(a DEM as `dem` for slope and DEM) or pass `model`")
    assert stacked == [] and not (tmp_path / "s.gpkg").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no scratch left behind"
    from lsmap.learn.models import shipped_defaults

    l2a_model = next(p for p in shipped_defaults() if p.stem == "l2a-default")
    missing = r"no bands B1, B5, B6, B7, B9, B11, B12 needed by .*l2a-default.*; give inputs with them, or a model without"
    with pytest.raises(MissingBandError, match=missing):
        lsmap.detect(short, [l2a_model], out=tmp_path / "s.gpkg", **KW)  # a model the product cannot feed
    assert stacked == [] and not (tmp_path / "s.gpkg").exists()
