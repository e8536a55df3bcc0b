"""The quick-look map: natural colour that keeps the colour balance, nodata and not-observed fills,
outlines coloured by probability, and the map furniture (coordinates, scale bar, north arrow, title)."""

from __future__ import annotations

import geopandas as gpd
import matplotlib.image as mpimg
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from lsmap.core.bands import get_profile
from lsmap.core.display import NODATA_COLOUR, PROB_CLASSES, prob_class
from lsmap.errors import InputError, OutputExistsError
from lsmap.map.quicklook import (
    grid_convergence,
    model_label,
    natural_colour,
    nice_length,
    render_quicklook,
    scene_date,
)

RGBN = get_profile("rgbn")


def _write(path, data, nodata=0, crs="EPSG:32645", origin=(500000, 3000000)):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype="float32", crs=crs, transform=from_origin(*origin, 10, 10), nodata=nodata) as dst:
        dst.write(data.astype(np.float32))
    return path


@pytest.fixture
def scene(tmp_path, rng):
    """rgbn on the L4S scale: a bluish surface (DN ratio R:G:B 0.6:0.8:1.0), nodata on the top rows, and
    a grey bright-rock block whose DN is the same in the three bands."""
    dn = rng.uniform(300, 900, (60, 80))
    data = np.stack([dn * 0.6, dn * 0.8, dn * 1.0, dn * 2.0])
    data[:3, 30:50, 50:75] = 1800.0  # bright grey rock
    data = data / np.asarray(RGBN.divisors)[:, None, None]
    data[:, :5] = 0  # nodata strip
    return _write(tmp_path / "scene.tif", data)


def _hex(c):
    return np.array([int(c[i:i + 2], 16) for i in (1, 3, 5)]) / 255


def _count(img, colour, tol=0.02):
    return int((np.abs(img[..., :3] - _hex(colour)) < tol).all(-1).sum())


def test_natural_colour_keeps_the_balance_and_marks_nodata(scene):
    nc = natural_colour(scene, "rgbn")
    assert nc.valid.shape == (60, 80) and not nc.valid[:5].any() and nc.valid[5:].all()
    rock = nc.rgb[30:50, 50:75]
    assert np.allclose(rock[..., 0], rock[..., 2], atol=1e-6) and rock.mean() > 0.9  # grey stays grey
    surface = nc.rgb[10:30, 5:45]
    assert surface[..., 2].mean() > surface[..., 0].mean() + 0.1  # bluish stays bluish
    rgba = nc.rgba8()
    assert (rgba[:5, :, :3] == np.round(_hex(NODATA_COLOUR) * 255)).all()  # nodata: flat dark grey, unlike rock
    assert rgba[30:50, 50:75, :3].min() > 200
    # the same scene as raw digital numbers gives the same picture
    with rasterio.open(scene) as src:
        raw = src.read() * np.asarray(RGBN.divisors, np.float32)[:, None, None]
    raw_scene = _write(scene.with_name("raw.tif"), raw)
    nc_raw = natural_colour(raw_scene, "rgbn")
    np.testing.assert_allclose(nc_raw.rgb, nc.rgb, atol=2e-3)
    assert natural_colour(raw_scene, "rgbn", input_scale="raw").rgb.tolist() == nc_raw.rgb.tolist()


def test_not_observed_mask_from_array_or_raster(scene, tmp_path):
    mask = np.zeros((60, 80), bool)
    mask[20:40, 10:30] = True
    nc = natural_colour(scene, "rgbn", not_observed=mask)
    assert (nc.not_observed == mask).all()
    assert not np.allclose(nc.rgba8()[25, 15], natural_colour(scene, "rgbn").rgba8()[25, 15])  # tinted
    path = _write(tmp_path / "clouds.tif", mask[None].astype(np.float32), nodata=None)
    assert (natural_colour(scene, "rgbn", not_observed=path).not_observed == mask).all()
    with pytest.raises(InputError, match="shape"):
        natural_colour(scene, "rgbn", not_observed=np.zeros((7, 7)))
    small = _write(tmp_path / "small.tif", np.zeros((1, 10, 10)), nodata=None)
    with pytest.raises(InputError, match="small.tif.*scene's grid"):
        natural_colour(scene, "rgbn", not_observed=small)


def test_quicklook_draws_outlines_by_probability_and_the_fills(scene, tmp_path):
    gdf = gpd.GeoDataFrame({"mean_prob": [0.55, 0.95], "area_m2": [4e4, 4e4]},
                           geometry=[box(500050, 2999450, 500250, 2999650), box(500450, 2999450, 500650, 2999650)],
                           crs="EPSG:32645")
    mask = np.zeros((60, 80), bool)
    mask[40:55, 5:25] = True
    out = render_quicklook(scene, gdf, tmp_path / "q.png", bands="rgbn", models="tiny (tiny-unet)", not_observed=mask)
    img = mpimg.imread(out)
    assert _count(img, prob_class(0.55).colour) > 50 and _count(img, prob_class(0.95).colour) > 50
    assert _count(img, PROB_CLASSES[2].colour) > 50  # the colour bar shows every class
    assert _count(img, NODATA_COLOUR) > 500  # the nodata strip (and its legend swatch)
    hatch = _count(img, "#3b3b8f", tol=0.08)
    assert hatch > 50  # not observed: hatched
    plain = mpimg.imread(render_quicklook(scene, gdf, tmp_path / "p.png", bands="rgbn"))
    assert _count(plain, "#3b3b8f", tol=0.08) < hatch / 10
    with pytest.raises(OutputExistsError):
        render_quicklook(scene, gdf, out, bands="rgbn")
    render_quicklook(scene, None, tmp_path / "none.png", bands="rgbn")  # no polygons: still a map


def test_quicklook_in_geographic_crs(tmp_path, rng):
    data = rng.uniform(0.5, 1.5, (4, 40, 40))
    with rasterio.open(tmp_path / "ll.tif", "w", driver="GTiff", width=40, height=40, count=4, dtype="float32",
                       crs="EPSG:4326", transform=from_origin(85.3, 27.8, 0.0001, 0.0001)) as dst:
        dst.write(data.astype(np.float32))
    out = render_quicklook(tmp_path / "ll.tif", None, tmp_path / "ll.png", bands="rgbn")
    assert mpimg.imread(out).shape[0] > 100


def test_quicklook_needs_natural_colour_bands(scene, tmp_path):
    from lsmap.core.bands import BandProfile

    p = BandProfile("nir", ("B8",), (1.0,), frozenset({"B8"}))
    with pytest.raises(InputError, match="B4/B3/B2"):
        render_quicklook(scene, None, tmp_path / "q.png", bands=p)
    assert not (tmp_path / "q.png").exists()


def test_scene_date_from_tags_or_name():
    assert scene_date("S2B_MSIL2A_20230601T045701_N0509_R119_T45RUL.tif") == "2023-06-01"
    assert scene_date("/data/S2A_MSIL1C_20220817T050701.SAFE/GRANULE/x/IMG_DATA") == "2022-08-17"
    assert scene_date("scene.tif", {"ACQUISITION_DATE": "2021-05-03T10:00:00Z"}) == "2021-05-03"
    assert scene_date("event_2019-07-12.tif") == "2019-07-12"
    assert scene_date("scene_l4s14.tif") is None and scene_date("tile_12345678901.tif") is None
    assert scene_date("x_20231345.tif") is None  # month 13: not a date


def test_model_label():
    from lsmap.learn.models import ModelCard

    card = ModelCard("tiny-unet", RGBN.to_dict())
    assert model_label([card]) == "tiny-unet"
    assert model_label(["models/l4s14-default.safetensors"]) == "l4s14-default"
    assert model_label(None) is None and model_label("x") == "x"


def test_scale_bar_length_and_north_arrow():
    assert [nice_length(s) for s in (5120, 100, 26000, 7)] == [1000, 20, 5000, 1]
    # UTM 45N (central meridian 87 E), 200 km east of it at about 27 N: grid convergence about
    # 2.0 deg x sin(27 deg) = 0.92 deg, so true north is turned that much anticlockwise from grid up
    assert grid_convergence("EPSG:32645", 700000, 3000000) == pytest.approx(-0.92, abs=0.05)
    assert grid_convergence("EPSG:32645", 500000, 3000000) == pytest.approx(0.0, abs=1e-6)
    assert grid_convergence("EPSG:4326", 85, 27) == 0.0


@pytest.mark.parametrize(("w", "h", "ratio"), [(600, 150, 3.0), (580, 200, 2.33), (200, 200, 1.09)])
def test_quicklook_map_keeps_the_scene_aspect(tmp_path, w, h, ratio):
    """A wide, short scene widens the map instead of letterboxing the image in a 5.9 in axes (which left
    the north arrow and the ticks off the image): the PNG's width/height follows the scene's."""
    from detect_fixtures import write_scene

    from lsmap.map.quicklook import render_quicklook

    rng = np.random.default_rng(0)
    scene = write_scene(tmp_path / "s.tif", rng.uniform(0.5, 1.5, (3, h, w)).astype(np.float32), bands=["B2", "B3", "B4"])
    img = mpimg.imread(render_quicklook(scene, None, tmp_path / "q.png"))
    assert img.shape[1] / img.shape[0] == pytest.approx(ratio, abs=0.05)  # it was 2.0 for both wide scenes


def test_outlines_get_their_halo_from_a_second_collection_not_a_path_effect():
    """The dark halo is a wider black collection drawn first: no path effect, which matplotlib draws path
    by path (25.9 s for the 153 k outlines of a fragmented mask, against 9.4 s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    from lsmap.map.quicklook import _outlined

    fig, ax = plt.subplots()
    segs = [np.array([[0, 0], [1, 0], [1, 1], [0, 0]], float), np.array([[2, 2], [3, 2], [3, 3], [2, 2]], float)]
    _outlined(ax, segs, ["red", "orange"], width=1.1, halo=2.4, halo_alpha=0.8, zorder=3)
    halo, lines = ax.collections
    assert not halo.get_path_effects() and not lines.get_path_effects()
    assert halo.get_linewidths()[0] == 2.4 and lines.get_linewidths()[0] == 1.1
    assert tuple(halo.get_colors()[0]) == to_rgba("black", 0.8)
    assert [tuple(c) for c in lines.get_colors()] == [to_rgba("red"), to_rgba("orange")]
    plt.close(fig)


def test_a_long_title_is_fitted_to_the_figure():
    # found with a real SAFE name: the quick-look's title ran off the image
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lsmap.map.quicklook import _fit_text

    fig = plt.figure(figsize=(4, 3), dpi=100)
    name = "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454 · 2022-10-05"
    renderer = fig.canvas.get_renderer()
    long = fig.text(0.1, 0.9, name, fontsize=11, fontweight="bold")
    short = fig.text(0.1, 0.8, "scene · 2022-10-05", fontsize=11, fontweight="bold")
    for t in (long, short):
        _fit_text(t, 300.0)
    assert long.get_window_extent(renderer).width <= 300.0 and long.get_fontsize() == 7.0
    shown = long.get_text()
    assert "..." in shown and shown.startswith("S2A_MSIL2A_2022") and shown.endswith("2022-10-05")
    assert short.get_text() == "scene · 2022-10-05" and short.get_fontsize() == 11
    plt.close(fig)
