"""MSK_CLDPRB as a mask source (issue 19): pixels above ``cloud_prob_max`` are cloud, nodata never counts, SCL
reasons come first; bad values and inputs without the layer are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from lsmap.data.masks import check_cloud_prob_max, mask_spec, product_mask_layers, reasons_block
from lsmap.errors import InputError


def test_reasons_block_cloud_prob_above_the_threshold_is_cloud():
    cld = np.array([[0, 40, 41, 100, 255]], np.uint8)
    assert reasons_block(None, (), None, cloud_prob=cld, cloud_prob_max=40).tolist() == [[0, 0, 2, 2, 0]]
    scl = np.array([[3, 3, 3, 11, 4]], np.uint8)
    got = reasons_block(scl, (3, 11), None, cloud_prob=cld, cloud_prob_max=40)
    assert got.tolist() == [[3, 3, 3, 4, 0]]  # shadow and snow keep their SCL reason
    assert not reasons_block(None, (), None, cloud_prob=cld, cloud_prob_max=None).any()


@pytest.mark.parametrize("bad", [-1, 100, "x", float("nan")])
def test_bad_cloud_prob_max(bad):
    with pytest.raises(InputError, match="`cloud_prob_max`"):
        check_cloud_prob_max(bad)


def test_cloud_prob_max_needs_the_layer(tmp_path):
    from products_fixtures import make_safe

    spec = mask_spec(cloud_prob_max=50)
    assert not spec.active  # nothing to read yet: the product layer is stacked first
    with_layer = make_safe(tmp_path / "a", bands=("B4",))
    assert set(product_mask_layers(with_layer, spec)) == {"SCL", "MSK_CLDPRB"}
    assert set(product_mask_layers(with_layer, mask_spec(scl_mask="none", cloud_prob_max=50))) == {"MSK_CLDPRB"}
    without = make_safe(tmp_path / "b", bands=("B4",), cldprb=False)
    with pytest.raises(InputError, match="no MSK_CLDPRB"):
        product_mask_layers(without, spec)
    assert product_mask_layers(without, mask_spec()).keys() == {"SCL"}
    with pytest.raises(InputError, match="not a Sentinel-2 L2A product"):
        product_mask_layers(tmp_path / "scene.tif", spec)
