"""Sentinel-2 band files found by name: the band a file name holds, the finest file of a band."""

from __future__ import annotations

import numpy as np
import pytest
from _rasters import write_tif

from lsmap.io.bandfiles import band_of, find_band_files


@pytest.mark.parametrize("name,band", [
    ("T45QYF_20230601_B04_10m.jp2", "B4"), ("B4.tif", "B4"), ("B04.tif", "B4"),
    ("T45QYF_20230601_B8A_20m.jp2", "B8A"), ("B8A.tif", "B8A"), ("B08.tif", "B8"),
    ("B1.tif", "B1"), ("B01.tif", "B1"), ("B10.tif", "B10"), ("B11.tif", "B11"), ("x_B12_20m.tif", "B12"),
    ("T45QYF_20230601_TCI_10m.jp2", None), ("stack.tif", None), ("B2_B3.tif", None), ("AB04.tif", None),
    ("B13.tif", None), ("S2B_MSIL2A_B03.tif", "B3"),
])
def test_band_of(name, band):
    assert band_of(name) == band


def test_find_band_files_prefers_finest_resolution(tmp_path):
    for res in (10, 20, 60):
        write_tif(tmp_path / f"T_B02_{res}m.tif", np.ones((4, 4), np.uint16), crs="EPSG:32645",
                  origin=(500_000.0, 3_000_000.0), pixel=res)
    assert find_band_files(tmp_path, ["B2"]) == {"B2": tmp_path / "T_B02_10m.tif"}
