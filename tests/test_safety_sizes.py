"""Sizes are estimated before allocating; stack counts and names what it finds (issue 14, 5 and 6)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from lsmap.cli import main
from lsmap.errors import InputError, TooLargeError
from tests._rasters import write_tif
from tests.detect_fixtures import smooth_scene, tiny_checkpoint, write_scene

GIB = 1 << 30


def test_tile_size_100000_is_refused_with_the_estimate(tmp_path, rng):
    scene = write_tif(tmp_path / "s.tif", rng.random((14, 20, 20)).astype(np.float32))
    res = CliRunner().invoke(main, ["tile", str(scene), "-o", str(tmp_path / "p"), "--size", "100000"])
    assert res.exit_code == 1 and "--size 100000" in res.output and "TiB of memory" in res.output, res.output
    assert not (tmp_path / "p").exists()


def test_detect_window_larger_than_the_scene_allocates_only_the_scene(tmp_path, rng):
    scene = write_scene(tmp_path / "s.tif", smooth_scene(rng, h=40, w=40))
    model = tiny_checkpoint(tmp_path / "m")
    res = CliRunner().invoke(main, ["detect", str(scene), "-o", str(tmp_path / "o.gpkg"), "--model", str(model),
                                    "--device", "cpu", "--window", "100000", "--overlap", "32"])
    assert res.exit_code == 0, res.output


def test_blend_weight_crop_equals_the_cropped_square():
    from lsmap.core.windows import blend_weight

    np.testing.assert_array_equal(blend_weight(64, 16, crop=(20, 40)), blend_weight(64, 16)[:20, :40])


def test_predict_memory_refuses_a_scale_and_window_that_cannot_fit(monkeypatch):
    import torch

    from lsmap.core.bands import get_profile
    from lsmap.core.windows import Window
    from lsmap.io import resources
    from lsmap.io.scene import SceneInfo
    from lsmap.map.stream import check_predict_memory

    monkeypatch.setattr(resources, "available_memory", lambda: 8 * GIB)
    scene = SceneInfo(None, 10000, 10000, 14, None, None, False)
    check_predict_memory(scene, get_profile("l4s14"), Window(0, 0, 128, 128), 16, 2.5, torch.device("cpu"))
    with pytest.raises(TooLargeError, match=r"--window 1000x1000 --batch-size 16 \(model scale x8\).*GiB"):
        check_predict_memory(scene, get_profile("l4s14"), Window(0, 0, 1000, 1000), 16, 8, torch.device("cpu"))


def test_train_batch_size_100000_is_refused_before_training(tmp_path):
    from tests.patchgen import make_patches

    data = make_patches(tmp_path / "p", 8, size=32)
    res = CliRunner().invoke(main, ["train", "--train", str(data), "--val", str(data), "--model", "tiny-unet",
                                    "--batch-size", "100000", "--device", "cpu", "-o", str(tmp_path / "run")])
    assert res.exit_code == 1 and "--batch-size 100000" in res.output and "memory" in res.output, res.output
    assert not (tmp_path / "run").exists()


def test_detect_refuses_a_scene_whose_scratch_cannot_fit(tmp_path, rng, monkeypatch):
    """The scratch probability raster (written for --prob, --mask and --gate) must fit; a run that writes
    none (the polygons are traced from the blender's pieces) needs no scratch space."""
    from lsmap.io import outputs

    scene = write_scene(tmp_path / "s.tif", smooth_scene(rng, h=40, w=40))
    model = tiny_checkpoint(tmp_path / "m")
    monkeypatch.setattr(outputs, "free_bytes", lambda p: 1000 if ".lsmap-detect" in str(p) else 1 << 40)
    args = ["detect", str(scene), "-o", str(tmp_path / "o.gpkg"), "--model", str(model), "--device", "cpu"]
    res = CliRunner().invoke(main, [*args, "--prob", str(tmp_path / "p.tif")])
    assert res.exit_code == 1 and "scratch rasters" in res.output, res.output
    assert not (tmp_path / "o.gpkg").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "m.json", "m.safetensors", "s.tif"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors", "o.gpkg", "s.tif"]


# --- stack ---------------------------------------------------------------------------------------


def _bands(folder, rng, names=("B02", "B03", "B04", "B08"), h=50, w=70, shift=None):
    folder.mkdir(exist_ok=True)
    for n in names:
        origin = (400000.0, 3690000.0) if n != shift else (900000.0, 3690000.0)
        write_tif(folder / f"{n}.tif", rng.integers(100, 3000, (h, w)).astype(np.uint16), origin=origin, nodata=0)
    return folder


def test_stack_never_reports_more_than_100_percent_valid(tmp_path, rng):
    from lsmap.data.stack import stack_scene

    s2 = _bands(tmp_path / "s2", rng)
    res = stack_scene(s2, tmp_path / "o.tif", bands="rgbn", block=32)  # 50 x 70 px in 32 px blocks
    assert res.valid_fraction == 1.0


def test_stack_names_the_band_file_off_the_footprint(tmp_path, rng):
    s2 = _bands(tmp_path / "s2", rng, shift="B03")
    res = CliRunner().invoke(main, ["stack", str(s2), "--bands", "rgbn", "-o", str(tmp_path / "o.tif")])
    assert res.exit_code == 1 and "B03.tif" in res.output and "do" in res.output, res.output
    assert not (tmp_path / "o.tif").exists()


def test_stack_with_an_all_nodata_band_fails_naming_it(tmp_path, rng):
    s2 = _bands(tmp_path / "s2", rng)
    write_tif(s2 / "B08.tif", np.zeros((50, 70), np.uint16), nodata=0)
    from lsmap.data.stack import stack_scene

    with pytest.raises(InputError, match=r"B8 \(.*B08.tif\)"):
        stack_scene(s2, tmp_path / "o.tif", bands="rgbn")
    assert not (tmp_path / "o.tif").exists()
