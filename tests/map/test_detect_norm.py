"""Detection normalises as the models were trained, unless told otherwise."""

import warnings

import rasterio
from detect_fixtures import Band0Model, member, smooth_scene, write_scene

import lsmap

KW = dict(window=64, overlap=16, device="cpu")


def test_auto_norm_follows_the_model_cards(tmp_path, rng):
    scene = write_scene(tmp_path / "s.tif", smooth_scene(rng, bands=14, h=80, w=96))
    trained_global = member(Band0Model(), train={"norm": "global"})
    trained_own = member(Band0Model(), train={"norm": "separated"})
    runs = {}
    for name, models, norm in (("global-auto", [trained_global], "auto"), ("global-model", [trained_global], "model"),
                               ("own-auto", [trained_own], "auto"), ("own-own", [trained_own], "own"),
                               ("mixed", [trained_global, trained_own], "auto")):
        prob = tmp_path / f"{name}.tif"
        gdf = lsmap.detect(scene, models, norm=norm, prob=prob, **KW)
        with rasterio.open(prob) as src:  # the pixels: the file's tags hold the time it was made
            runs[name] = (gdf.attrs["lsmap"]["norm"], src.read(1).tobytes())
    assert runs["global-auto"][0] == runs["global-model"][0] == "model"
    assert runs["own-auto"][0] == runs["own-own"][0] == runs["mixed"][0] == "own"
    assert runs["global-auto"][1] == runs["global-model"][1] and runs["own-auto"][1] == runs["own-own"][1]
    assert runs["global-auto"][1] != runs["own-auto"][1], "the two normalisations differ on this scene"


def test_the_statistics_pass_samples_less_when_its_statistics_are_not_used(tmp_path, rng, monkeypatch):
    """With the models' training statistics (or given ones) the pass only decides the input scale and the
    valid share: it samples SCALE_MAX_PIXELS; with the scene's own statistics STATS_MAX_PIXELS."""
    import lsmap.map.detect as detect_module
    from lsmap.core.normalize import BandStats
    from lsmap.data.scan import SCALE_MAX_PIXELS, STATS_MAX_PIXELS

    asked = []
    real = detect_module.scan_scene

    def spy(*args, **kwargs):
        asked.append(kwargs["max_pixels"])
        return real(*args, **kwargs)

    monkeypatch.setattr(detect_module, "scan_scene", spy)
    scene = write_scene(tmp_path / "s.tif", smooth_scene(rng, bands=14, h=40, w=48))
    model = member(Band0Model(), train={"norm": "global"})
    lsmap.detect(scene, [model], norm="model", **KW)
    lsmap.detect(scene, [model], norm="own", **KW)
    lsmap.detect(scene, [model], stats=BandStats((1.0,) * 14, (0.5,) * 14, 1), **KW)
    assert asked == [SCALE_MAX_PIXELS, STATS_MAX_PIXELS, SCALE_MAX_PIXELS]
    assert SCALE_MAX_PIXELS < STATS_MAX_PIXELS


def test_a_scene_unlike_the_training_data_is_said(tmp_path, rng):
    """Domain shift was not flagged (noticed since session 12): a real L2A scene's B9 lies 7.3 training standard
    deviations above the shipped l2a default's training mean, and moving B9 alone to that mean changed the map
    twentyfold (docs/detect.md). With the models' statistics normalising the scene, each band's shift is now in the
    summary, and beyond SHIFT_SIGMAS a warning names the bands; the cirrus band B10 is reported but not warned on."""
    import numpy as np
    import pytest

    from lsmap.data.scan import SHIFT_SIGMAS
    from lsmap.errors import LsmapWarning

    data = smooth_scene(rng, bands=14, h=80, w=96)
    model = member(Band0Model(), train={"norm": "global"})  # card: mean 1.0, std 0.5 in every band
    plain = write_scene(tmp_path / "plain.tif", data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LsmapWarning)
        shift = lsmap.detect(plain, [model], **KW).attrs["lsmap"]["shift_sigmas"]
    assert set(shift) == set(model.card.profile.bands) and max(abs(z) for z in shift.values()) < 1
    shifted = data.copy()
    shifted[8] += 3.6  # B9: + 7.2 standard deviations
    shifted[9] += 4.0  # B10: + 8, reported only
    scene = write_scene(tmp_path / "shifted.tif", shifted)
    with pytest.warns(LsmapWarning, match=r"shifted.tif: unlike the models' training data: B9 \+7\.\d standard "
                                          r"deviations from the training means \(Landslide4Sense's own patches stay "
                                          r"within 2\.5; the limit is 4\), so the map may miss landslides") as seen:
        info = lsmap.detect(scene, [model], **KW).attrs["lsmap"]
    assert not [w for w in seen if "B10" in str(w.message)]
    assert info["shift_sigmas"]["B9"] == pytest.approx((shifted[8].mean() - 1.0) / 0.5, abs=0.01)
    assert info["shift_sigmas"]["B9"] > SHIFT_SIGMAS
    assert info["shift_sigmas"]["B10"] > SHIFT_SIGMAS
    # the scene's own statistics normalise it: no shift is reported (none reaches the models)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LsmapWarning)
        assert lsmap.detect(scene, [model], norm="own", **KW).attrs["lsmap"]["shift_sigmas"] is None
    assert np.isfinite(list(info["shift_sigmas"].values())).all()


def test_a_constant_training_band_is_reported_as_the_models_see_it(tmp_path, rng):
    """A card whose training data held a band constant (std 0: cards allow it, and the models normalise with a floor
    under it) gave a NumPy 'divide by zero' RuntimeWarning and an infinite shift, which was dropped: the band the
    models see as shifted the most went unreported. Its shift is now taken with the normalisation's floor."""
    import numpy as np
    import pytest

    from lsmap.errors import LsmapWarning

    data = smooth_scene(rng, bands=14, h=80, w=96)
    model = member(Band0Model(), train={"norm": "global"})
    model.card.stats["std"][13] = 0.0  # DEM constant in training; the scene's DEM is not at its mean
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.warns(LsmapWarning, match=r"unlike the models' training data: DEM [+-]\d"):
            shift = lsmap.detect(write_scene(tmp_path / "s.tif", data), [model], **KW).attrs["lsmap"]["shift_sigmas"]
    assert np.isfinite(shift["DEM"]) and abs(shift["DEM"]) > 1e3
