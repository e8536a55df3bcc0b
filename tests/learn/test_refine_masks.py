"""Refine's pseudo labels never come from pixels a patch did not observe (issue 19): ``lsmap tile`` records
them (the image file's ``valid`` dataset, labelled or not), pseudo labels are 255 there."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _rasters import write_tif
from detect_fixtures import tiny_checkpoint, write_scene

from lsmap.core.constants import FILL, IGNORE_INDEX
from lsmap.data.tile import tile_scene
from lsmap.io.patches import find_patches, read_image, read_mask, read_observed, write_patch
from lsmap.learn.refine.pseudo import ignore_unobserved
from lsmap.learn.refine.rounds import RefineConfig, refine

H, W, SIZE = 80, 72, 32


def _target(tmp_path, rng):
    """A 3-band scene tiled without labels, with a cloud mask (mask raster) and nodata; expected observed map."""
    data = rng.normal(1.0, 0.3, (3, H, W)).astype(np.float32)
    data[:, :6, :6] = -9999.0
    scene = write_scene(tmp_path / "t.tif", data, nodata=-9999.0)
    cloud = np.zeros((H, W), np.uint8)
    cloud[20:50, 10:40] = 1
    mask = write_tif(tmp_path / "cloud.tif", cloud, crs="EPSG:32645", origin=(500000.0, 3000000.0), pixel=10.0)
    res = tile_scene(scene, tmp_path / "tgt", bands="rgb", size=SIZE, min_valid=0.0, mask_raster=mask)
    observed = np.ones((H, W), bool)
    observed[:6, :6] = False
    observed[cloud == 1] = False
    return res, observed


def observed_for(tmp_path, pid, observed):
    """The expected observed map of patch ``pid`` from the tile index's window (padding not observed)."""
    import geopandas as gpd

    idx = gpd.read_file(tmp_path / "tgt" / "index.gpkg")
    row = idx[idx["id"].astype(str) == pid].iloc[0]
    exp = np.zeros((SIZE, SIZE), bool)
    r, c, h, w = int(row["row_off"]), int(row["col_off"]), int(row["height"]), int(row["width"])
    exp[:h, :w] = observed[r:r + h, c:c + w]
    return exp


def test_tile_records_not_observed_pixels_of_unlabelled_patches(tmp_path, rng):
    _, observed = _target(tmp_path, rng)
    patches = find_patches(tmp_path / "tgt")
    assert patches and all(p.mask is None for p in patches)
    for p in patches:
        img, _ = read_image(p.image)
        got = read_observed(p)
        exp = observed_for(tmp_path, p.id, observed)
        np.testing.assert_array_equal(got if got is not None else np.ones_like(exp), exp)
        assert (img[:, ~exp] == FILL).all()


def test_read_observed_without_the_dataset_takes_all_fill_pixels(tmp_path, rng):
    img = rng.normal(1.0, 0.3, (3, 8, 8)).astype(np.float32)
    img[:, 2:4, 2:5] = FILL
    img[0, 6, 6] = FILL  # one band at 0.0 is an observed pixel
    p = write_patch(tmp_path, "0", img)
    exp = np.ones((8, 8), bool)
    exp[2:4, 2:5] = False
    np.testing.assert_array_equal(read_observed(p), exp)
    assert read_observed(write_patch(tmp_path, "1", img + 5)) is None
    with pytest.raises(Exception, match="valid"):
        write_patch(tmp_path, "2", img, valid=np.ones((4, 4), bool))
    m = np.zeros((8, 8), np.uint8)
    assert (ignore_unobserved(m, exp)[~exp] == IGNORE_INDEX).all() and (m[exp] == 0).all()


@pytest.mark.parametrize("strategy", ["threshold", "uncertainty"])
def test_pseudo_labels_are_ignored_where_the_target_was_not_observed(tmp_path, rng, strategy):
    from test_refine import make_patches

    _, observed = _target(tmp_path, rng)
    src = make_patches(tmp_path / "src", 4, rng, "source")
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", "rgb")
    config = RefineConfig(strategy=strategy, rounds=1, steps=1, batch_size=2, bands="rgb", device="cpu", seed=0,
                          pos_thresh=0.5, neg_thresh=0.4999, keep_bg=1.0, keep_ls=1.0, mc_passes=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refine([ckpt], src, tmp_path / "tgt", tmp_path / "run", config, progress=False)
    patches = find_patches(tmp_path / "tgt")
    n_unobserved = 0
    for p in patches:
        exp = observed_for(tmp_path, p.id, observed)
        pseudo = read_mask(tmp_path / "run" / "round_1" / "pseudo" / f"mask_{p.id}.h5")
        assert (pseudo[~exp] == IGNORE_INDEX).all()  # never a label where the patch saw no ground
        n_unobserved += int((~exp).sum())
        if strategy == "uncertainty":  # every observed pixel kept (keep 1.0): the selection counts observed ones
            assert (pseudo[exp] != IGNORE_INDEX).all()
    assert n_unobserved > 0
    # the landslide share the guard tests is over the observed pixels (all pixels diluted it; found by a review)
    import json

    sel = json.loads((tmp_path / "run" / "round_1" / "selection.json").read_text())
    summary = json.loads((tmp_path / "run" / "round_1" / "summary.json").read_text())
    assert sel["observed"] == sel["pixels"] - n_unobserved
    assert summary["pseudo_share"] == pytest.approx(sel["kept"]["landslide"] / sel["observed"])


def test_uncertainty_selection_judges_the_pixels_it_counted(tmp_path):
    """With a band set smaller than the file's and no `valid` dataset, the counting pass judged observed pixels on
    the bands read and the selection pass on all of the file's: pixels without Sentinel-2 data but with slope/DEM
    were labelled, and the kept counts were not the asked fractions (found by a code review)."""
    from detect_fixtures import tiny_checkpoint

    from lsmap.core.bands import get_profile
    from lsmap.data.stats import patch_stats
    from lsmap.io.patches import write_patch
    from lsmap.learn.ensemble import load_ensemble
    from lsmap.learn.refine.rounds import pseudo_label_uncertainty

    img = np.random.default_rng(0).normal(1, 0.1, (14, 8, 8)).astype(np.float32)
    img[:12, :, :3] = 0.0  # no Sentinel-2 data on the left 3 columns; slope and DEM (the last 2 bands) there
    write_patch(tmp_path / "t", "0", img, None)
    (p,) = find_patches(tmp_path / "t")
    prof = get_profile("l2a")
    members = load_ensemble([tiny_checkpoint(tmp_path / "m", "l2a")], "cpu", prof)
    cfg = RefineConfig(strategy="uncertainty", keep_bg=0.5, keep_ls=0.5, mc_passes=3, amp=False)
    sel = pseudo_label_uncertainty(members, [p], patch_stats([p], prof, valid_only=True), prof, tmp_path / "r", cfg,
                                   progress=False)
    mask = read_mask(tmp_path / "r" / "pseudo" / "mask_0.h5")
    assert (mask[:, :3] == IGNORE_INDEX).all()
    kept = {c["class"]: c["kept"] for c in sel["classes"]}
    assert sel["kept"] == kept
