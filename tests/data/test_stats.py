"""lsmap.data.stats and the RunningStats laws it relies on."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _rasters import write_tif
from click.testing import CliRunner
from conftest import shared_data
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lsmap.cli import main
from lsmap.core.bands import get_profile
from lsmap.core.normalize import BandStats, RunningStats
from lsmap.data.stats import compute_stats
from lsmap.data.tile import tile_scene
from lsmap.errors import BandMismatchError, InputError, MissingInputError
from lsmap.io.patches import write_patch
from lsmap.io.scene import scale_raw

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


def numpy_stats(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference: mean/std (population) of ``(C, N)`` pixels in float64."""
    pixels = np.asarray(pixels, np.float64)
    return pixels.mean(axis=1), pixels.std(axis=1)


def assert_stats(result: BandStats, pixels: np.ndarray, rtol: float = 1e-10) -> None:
    mean, std = numpy_stats(pixels)
    np.testing.assert_allclose(result.mean, mean, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(result.std, std, rtol=max(rtol, 1e-9), atol=1e-12)
    assert result.count == pixels.shape[1]


# --- RunningStats laws --------------------------------------------------------------------------

chunks = st.lists(
    arrays(np.float64, st.tuples(st.just(3), st.integers(0, 5), st.integers(1, 5)),
           elements=st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)),
    min_size=1, max_size=6,
)


def _flat(xs):
    return np.concatenate([x.reshape(3, -1) for x in xs], axis=1)


@settings(max_examples=100, deadline=None)
@given(chunks)
@example([np.zeros((3, 0, 1))])  # only an empty chunk: nothing counted
@example([np.full((3, 1, 1), 1e4), np.full((3, 1, 1), -1e4)])
def test_update_in_chunks_equals_numpy_on_the_concatenation(xs):
    """Updating chunk by chunk gives numpy's mean and population std of all pixels together."""
    rs = RunningStats(3)
    for x in xs:
        rs.update(x)
    pixels = _flat(xs)
    assert rs.n == pixels.shape[1]
    if rs.n:
        mean, std = numpy_stats(pixels)
        np.testing.assert_allclose(rs.mean, mean, rtol=1e-9, atol=1e-7)
        np.testing.assert_allclose(np.sqrt(rs.m2 / rs.n), std, rtol=1e-7, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(chunks, chunks)
def test_merge_equals_updating_with_both(xs, ys):
    """merge(a, b) == one accumulator updated with a's and b's data; merging an empty one is a no-op."""
    a, b, both = RunningStats(3), RunningStats(3), RunningStats(3)
    for x in xs:
        a.update(x)
        both.update(x)
    for y in ys:
        b.update(y)
        both.update(y)
    before = (a.n, a.mean.copy(), a.m2.copy())
    a.merge(RunningStats(3))
    assert a.n == before[0] and (a.mean == before[1]).all() and (a.m2 == before[2]).all()
    a.merge(b)
    assert a.n == both.n
    np.testing.assert_allclose(a.mean, both.mean, rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(a.m2, both.m2, rtol=1e-7, atol=1e-4)


def test_update_skips_nonfinite_and_invalid_pixels(rng):
    x = rng.normal(size=(2, 4, 4))
    valid = rng.random((4, 4)) < 0.6
    x[1, 0, 0] = np.nan
    rs = RunningStats(2)
    rs.update(x, valid)
    keep = valid.copy()
    keep[0, 0] = False
    assert_stats(rs.result(), x[:, keep])
    with pytest.raises(InputError):
        RunningStats(2).result()


# --- patch folders ------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["plain", "official", "hf"])
def test_patch_folder_stats_equal_numpy(tmp_path, rng, layout):
    folder = {"plain": tmp_path, "official": tmp_path / "TrainData", "hf": tmp_path}[layout]
    images = [rng.normal(1.0, 0.5, size=(14, 16, 16)).astype(np.float32) for _ in range(3)]
    images[1][3, 2, 2] = np.nan  # NaNs in the wild: left out, not counted as 0
    images[2][:, 0, :] = 0.0  # an all-zero row: nodata fill written by lsmap tile
    for i, im in enumerate(images):
        if layout == "hf":
            write_patch(tmp_path / "tmp", str(i), im)
            (tmp_path / "images" / "train").mkdir(parents=True, exist_ok=True)
            (tmp_path / "tmp" / "img" / f"image_{i}.h5").rename(tmp_path / "images" / "train" / f"image_{i}.h5")
        else:
            write_patch(folder, str(i), im)
    pixels = np.concatenate([im.reshape(14, -1) for im in images], axis=1)
    finite = np.isfinite(pixels).all(axis=0)
    res = compute_stats(tmp_path, valid_only=False)
    assert res.bands == get_profile("l4s14").bands
    assert_stats(res, pixels[:, finite])
    nonzero = finite & ~(pixels == 0).all(axis=0)
    assert_stats(compute_stats(tmp_path, valid_only=True), pixels[:, nonzero])
    assert_stats(compute_stats(tmp_path), pixels[:, nonzero])  # the default, as training counts them


def test_patch_folder_errors(tmp_path, rng):
    write_patch(tmp_path, "0", rng.normal(size=(4, 8, 8)))
    with pytest.raises(BandMismatchError, match="image_0.h5"):
        compute_stats(tmp_path)
    with pytest.raises(InputError, match="`raw`"):
        compute_stats(tmp_path, "rgbn", raw=True)
    with pytest.raises(MissingInputError):
        compute_stats(tmp_path / "none")
    (tmp_path / "img" / "image_1.h5").write_bytes(b"garbage")
    with pytest.raises(InputError, match="image_1.h5"):
        compute_stats(tmp_path, "rgbn")


# --- scenes -------------------------------------------------------------------------------------


@pytest.fixture
def raw_scene(tmp_path, rng):
    data = rng.integers(1, 6000, size=(4, 48, 32)).astype(np.uint16)  # a multiple of 16: tiles do not overlap
    data[:, 10:20, 5:30] = 0
    data[2, 40:, :] = 0  # nodata in one band only
    return write_tif(tmp_path / "scene.tif", data, nodata=0, block=16), data


@pytest.mark.parametrize("block", [7, 512])
def test_scene_stats_equal_numpy_with_nodata_excluded(raw_scene, block):
    path, data = raw_scene
    prof = get_profile("rgbn")
    valid = (data != 0).all(axis=0)
    assert_stats(compute_stats(path, "rgbn", valid_only=True, block=block), data[:, valid])
    assert_stats(compute_stats(path, "rgbn", valid_only=False, block=block), data.reshape(4, -1))
    assert_stats(compute_stats(path, "rgbn", block=block), data[:, valid])  # the default leaves nodata out
    # raw: the raw values' statistics divided by the divisors (as detect's scan computes them), within float32
    # rounding of the statistics of the scaled float32 values
    assert_stats(compute_stats(path, "rgbn", valid_only=True, raw=True, block=block), scale_raw(data, prof)[:, valid],
                 rtol=1e-7)


def test_stats_of_tiled_scene_match_stats_of_the_scene(raw_scene, tmp_path):
    """Tiling (no overlap, nothing skipped) neither adds nor loses valid pixels."""
    path, _ = raw_scene
    tile_scene(path, tmp_path / "p", bands="rgbn", size=16, min_valid=0, raw=True)
    a = compute_stats(tmp_path / "p", "rgbn", valid_only=True)
    b = compute_stats(path, "rgbn", valid_only=True, raw=True)
    assert a.count == b.count
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-6)
    np.testing.assert_allclose(a.std, b.std, rtol=1e-5)


def test_scene_errors(tmp_path, raw_scene):
    path, _ = raw_scene
    with pytest.raises(BandMismatchError, match="scene.tif"):
        compute_stats(path, "l4s14")
    empty = write_tif(tmp_path / "empty.tif", np.zeros((4, 3, 3), np.uint16), nodata=0)
    with pytest.raises(InputError, match="empty.tif: the scene has no valid pixel"):
        compute_stats(empty, "rgbn", valid_only=True)


# --- CLI ----------------------------------------------------------------------------------------


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_stats_writes_band_stats_json(tmp_path, raw_scene):
    path, data = raw_scene
    out = tmp_path / "s.json"
    r = run_cli("stats", path, "-o", out, "--bands", "rgbn", "--valid-only", "--raw")
    assert r.exit_code == 0, r.output
    assert "over" in r.output and str(out) in r.output
    res = BandStats.load(out)
    assert res.bands == ("B4", "B3", "B2", "B8")
    valid = (data != 0).all(axis=0)
    assert_stats(res, scale_raw(data, get_profile("rgbn"))[:, valid], rtol=1e-7)  # raw: see the test above
    r = run_cli("stats", path, "-o", out, "--bands", "rgbn")
    assert r.exit_code != 0 and "--overwrite" in r.output and BandStats.load(out) == res
    r = run_cli("stats", path, "-o", out, "--bands", "rgbn", "--overwrite", "--json")  # raw DNs read as L4S: said
    assert r.output.startswith("Warning: ") and "raw digital numbers read as L4S values? give --raw" in r.output
    body = r.output[r.output.index("{"):]
    assert r.exit_code == 0 and json.loads(body)["count"] == int(valid.sum())  # a scene's nodata never counts
    r = run_cli("stats", path, "-o", out, "--bands", "rgbn", "--overwrite", "--all-pixels", "--json", "--raw")
    assert r.exit_code == 0 and json.loads(r.output)["count"] == data[0].size


@pytest.mark.parametrize("case", ["bands", "corrupt", "missing"])
def test_cli_stats_bad_input(tmp_path, raw_scene, case):
    path, _ = raw_scene
    bands = "rgbn"
    if case == "bands":
        bands = "rgb"
    elif case == "corrupt":
        path.write_bytes(b"II*\x00" + b"\x00" * 50)
    else:
        path = tmp_path / "nope.tif"
    before = sorted(p.name for p in tmp_path.iterdir())
    r = run_cli("stats", path, "-o", tmp_path / "s.json", "--bands", bands)
    msg = r.output.strip()
    assert r.exit_code != 0 and msg.startswith("Error: ") and len(msg.splitlines()) == 1, msg
    assert str(path) in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# --- real data ----------------------------------------------------------------------------------


@pytest.mark.realdata
def test_l4s_train_stats_match_the_recorded_figures():
    train = shared_data("l4s", "train")
    ref = json.loads(shared_data("l4s", "band_stats_train15.json").read_text())
    res = compute_stats(train)
    assert res.count == ref["n_patches"] * 128 * 128
    assert list(res.bands) == ref["bands"]
    # the reference is rounded to 6 decimals and was computed on the float64 files
    np.testing.assert_allclose(res.mean, ref["mean"], rtol=0, atol=2e-6)
    np.testing.assert_allclose(res.std, ref["std"], rtol=0, atol=2e-6)


def test_an_array_instead_of_a_path_is_an_input_error(tmp_path):
    # found by the API audit: compute_stats and tile_scene raised "TypeError: vars() argument must have __dict__"
    from lsmap.data.stack import stack_scene
    from lsmap.data.tile import tile_scene

    for call in (lambda: compute_stats(np.zeros(3)), lambda: tile_scene(np.zeros((14, 8, 8)), tmp_path / "t"),
                 lambda: stack_scene(np.zeros((3, 8, 8)), tmp_path / "s.tif")):
        with pytest.raises(InputError, match=r"must be .*path.* \(got ndarray\)"):
            call()
    assert not (tmp_path / "t").exists()


def test_stacking_inputs_as_a_mapping_are_checked_by_name():
    # found by the API audit: detect({"s2x": ...}) was "TypeError: 'NoneType' object is not iterable" in the stack
    import inspect

    from lsmap.data.sources import STACK_INPUTS, stack_arguments
    from lsmap.data.stack import stack_scene

    assert set(STACK_INPUTS) == set(inspect.signature(stack_scene).parameters) - {"out", "overwrite", "progress"}
    with pytest.raises(InputError, match=r"unknown stacking input\(s\) s2x; the inputs of 'lsmap stack' are: aoi"):
        stack_arguments({"s2x": "bands/"})
    with pytest.raises(InputError, match=r"need `s2`"):
        stack_arguments({"dem": "dem.tif"})
    assert stack_arguments({"s2": "bands/", "offset": -1000}) == {"s2": "bands/", "offset": -1000}


def test_an_area_of_interest_on_patches_is_refused(tmp_path, rng):
    """It was dropped without a word: the statistics of the whole folder (found by a code review)."""
    from lsmap.io.aoi import parse_bbox

    write_patch(tmp_path, "0", rng.normal(1.0, 0.1, (14, 8, 8)).astype(np.float32))
    with pytest.raises(InputError, match="`bbox`/`aoi` apply to scenes; a patch folder is summarised whole"):
        compute_stats(tmp_path, aoi=parse_bbox("10,10,10.001,10.001"))


def test_strict_offset_false_in_stacking_inputs_is_refused(tmp_path):
    """It reached stack_scene twice: a TypeError from stats, tile and detect (found by a code review)."""
    from products_fixtures import loose_bands, make_safe

    folder = loose_bands(make_safe(tmp_path), tmp_path / "loose", ["B2", "B3", "B4", "B8"])
    with pytest.raises(InputError, match="`strict_offset` False applies to 'lsmap stack' only"):
        compute_stats({"s2": str(folder), "offset": -1000, "strict_offset": False}, "rgbn")
    assert compute_stats({"s2": str(folder), "strict_offset": True}, "rgbn").count > 0


def test_stats_reads_the_images_of_a_folder_with_a_missing_mask(tmp_path):
    """stats reads no mask, yet a patch without its mask refused the folder ('image and mask ids do not match').
    Training and evaluation stay strict."""
    from patchgen import make_patches

    from lsmap.io.patches import find_patches

    folder = make_patches(tmp_path / "p", 3, size=16)
    next((folder / "mask").glob("*.h5")).unlink()
    res = CliRunner().invoke(main, ["stats", str(folder), "-o", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "s.json").read_text())["count"] == 3 * 16 * 16
    with pytest.raises(InputError, match="image and mask ids do not match"):
        find_patches(folder, require_masks=True)
    with pytest.raises(InputError, match="image and mask ids do not match"):
        find_patches(folder)
