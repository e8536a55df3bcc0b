"""Quick-look rendering of a scene with polygons."""

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from lsmap.errors import InputError, OutputExistsError
from lsmap.map.quicklook import render_quicklook


@pytest.fixture
def scene(tmp_path, rng):
    path = tmp_path / "scene.tif"
    data = rng.random((4, 60, 80)).astype(np.float32) + 1
    data[:, :5] = 0  # nodata strip
    with rasterio.open(path, "w", driver="GTiff", width=80, height=60, count=4, dtype="float32",
                       crs="EPSG:32645", transform=from_origin(500000, 3000000, 10, 10), nodata=0) as dst:
        dst.write(data)
    return path


def test_quicklook_draws_polygons(scene, tmp_path):
    gdf = gpd.GeoDataFrame(geometry=[box(500100, 2999500, 500300, 2999700)], crs="EPSG:32645")
    out = render_quicklook(scene, gdf, tmp_path / "q.png", bands="rgbn")
    import matplotlib.image as mpimg

    img = mpimg.imread(out)
    red = (img[..., 0] > 0.9) & (img[..., 1] < 0.3) & (img[..., 2] < 0.2)
    assert red.sum() > 20, "polygon outline is drawn in red"
    with pytest.raises(OutputExistsError):
        render_quicklook(scene, gdf, out, bands="rgbn")


def test_quicklook_needs_natural_colour_bands(scene, tmp_path):
    from lsmap.core.bands import BandProfile

    p = BandProfile("nir", ("B8",), (1.0,), frozenset({"B8"}))
    with pytest.raises(InputError, match="B4/B3/B2"):
        render_quicklook(scene, None, tmp_path / "q.png", bands=p)
    assert not (tmp_path / "q.png").exists()
