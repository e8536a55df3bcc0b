"""Messages name everything at fault (issue 14, 12), and a scene's band descriptions are believed (5)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from lsmap.errors import InputError, MissingInputError
from lsmap.io.scene import check_band_order, open_scene
from tests._rasters import write_tif


def test_all_missing_sentinel2_bands_are_named(tmp_path):
    from lsmap.io.bandfiles import find_band_files

    for b in ("B02", "B03"):
        write_tif(tmp_path / f"{b}.tif", np.ones((8, 8), np.uint16))
    with pytest.raises(MissingInputError) as e:
        find_band_files(tmp_path, ("B4", "B3", "B2", "B8", "B11"))
    assert "bands B4, B8, B11" in str(e.value)


def test_scene_with_bands_in_another_order_is_refused(tmp_path, rng):
    path = write_tif(tmp_path / "s.tif", rng.random((4, 8, 8)).astype(np.float32))
    with rasterio.open(path, "r+") as dst:
        for i, n in enumerate(("B2", "B3", "B4", "B8"), start=1):
            dst.set_band_description(i, n)
    with pytest.raises(InputError, match="order B2, B3, B4, B8.*expects B4, B3, B2, B8"):
        with open_scene(path, "rgbn"):
            pass
    with rasterio.open(path, "r+") as dst:
        for i, n in enumerate(("B04", "B03", "B02", "B08"), start=1):
            dst.set_band_description(i, n)
    with open_scene(path, "rgbn"):  # the profile's order, spelled as Sentinel-2 files do
        pass


def test_free_text_descriptions_are_ignored():
    from lsmap.core.bands import get_profile

    check_band_order(("red", "green", "blue", "nir"), get_profile("rgbn"), "x")
    check_band_order((None, None, None, None), get_profile("rgbn"), "x")
    with pytest.raises(InputError, match="bands are B4, B3, B2, B11"):
        check_band_order(("B4", "B3", "B2", "B11"), get_profile("rgbn"), "x")
