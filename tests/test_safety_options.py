"""Options and API arguments: NaN, out of range and wrong types fail with the CLI's one-line message (issue 14, 5 and 10)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import example, given
from hypothesis import strategies as st

import lsmap
from lsmap.cli import main
from lsmap.core.checks import as_list, check_int, check_number
from lsmap.core.normalize import BandStats
from lsmap.errors import InputError
from tests.detect_fixtures import smooth_scene, tiny_checkpoint, write_scene


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("det")
    scene = write_scene(tmp / "s.tif", smooth_scene(np.random.default_rng(0), h=48, w=48))
    return scene, tiny_checkpoint(tmp / "m"), tmp


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), st.text(max_size=3),
                 st.booleans(), st.none()))
@example(float("nan"))
@example(2.0)
@example("0.5")
def test_threshold_check_accepts_exactly_finite_numbers_in_0_1(value):
    """Law: check_number('threshold', v, 0, 1) returns v iff v is a real (not bool) finite number in [0, 1]."""
    good = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and 0 <= value <= 1)
    if good:
        assert check_number("threshold", value, 0, 1) == value
    else:
        with pytest.raises(InputError, match="`threshold`"):
            check_number("threshold", value, 0, 1)


@given(st.one_of(st.integers(), st.floats(), st.text(max_size=2), st.booleans()))
def test_int_check_refuses_floats_strings_and_bools(value):
    """Law: check_int accepts ints (not bools) in range and nothing else."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 16:
        assert check_int("window", value, 16) == value
    else:
        with pytest.raises(InputError, match="`window`"):
            check_int("window", value, 16)


def test_a_single_model_path_is_one_model_never_its_characters():
    assert as_list("model", "model.safetensors") == ["model.safetensors"]
    assert as_list("model", Path("m.safetensors")) == [Path("m.safetensors")]
    assert as_list("model", ("a", "b")) == ["a", "b"]


@pytest.mark.parametrize("args", [["--threshold", "nan"], ["--min-area", "nan"], ["--simplify", "inf"],
                                  ["--fill-holes", "nan"]])
def test_detect_cli_refuses_nan_options(det, args):
    scene, model, tmp = det
    res = CliRunner().invoke(main, ["detect", str(scene), "-o", str(tmp / "x.gpkg"), "--model", str(model),
                                    "--device", "cpu", *args])
    assert res.exit_code != 0 and args[0] in res.output and "Traceback" not in res.output
    assert not (tmp / "x.gpkg").exists()


def test_detect_api_takes_one_model_string_and_validates(det):
    scene, model, tmp = det
    gdf = lsmap.detect(scene, str(model), device="cpu")
    assert gdf.attrs["lsmap"]["models"] == [str(model)]
    with pytest.raises(InputError, match=r"`threshold` must be a number in \(0, 1\) \(got 2.0\)"):
        lsmap.detect(scene, str(model), threshold=2.0, device="cpu")
    with pytest.raises(InputError, match=r"`threshold` must be a number in \(0, 1\) \(got 1.0\): a pixel is a "
                                         r"landslide where its probability is above it, so 0 would map every pixel"):
        lsmap.detect(scene, str(model), threshold=1.0, device="cpu")
    # 0 mapped every observed pixel as one landslide, with success; detect took [0, 1), evaluate and refine (0, 1)
    from tests.patchgen import make_patches

    data = make_patches(tmp / "p0", 2, size=16)
    for call in (lambda: lsmap.detect(scene, str(model), threshold=0, device="cpu"),
                 lambda: lsmap.evaluate(str(model), data, device="cpu", threshold=0.0)):
        with pytest.raises(InputError, match=r"`threshold` must be a number in \(0, 1\) \(got 0"):
            call()
    result = CliRunner().invoke(main, ["detect", str(scene), "--model", str(model), "-o", str(tmp / "z.gpkg"),
                                       "--threshold", "0"])
    assert result.exit_code == 2 and "0<x<1" in result.output and not (tmp / "z.gpkg").exists()
    # a one-sided range is said in words (it read "in [0, inf] (got inf)" for --min-area inf)
    with pytest.raises(InputError, match=r"`min_area` must be a finite number of at least 0 \(got inf\)"):
        lsmap.detect(scene, str(model), min_area=float("inf"), device="cpu")
    with pytest.raises(InputError, match="`window` must be an integer"):
        lsmap.detect(scene, str(model), window="128", device="cpu")
    with pytest.raises(InputError, match="`tta` must be True or False"):
        lsmap.detect(scene, str(model), tta="no", device="cpu")
    with pytest.raises(InputError, match="`models` must be a checkpoint path"):
        lsmap.detect(scene, [3.5], device="cpu")
    with pytest.raises(InputError, match="`scene` must be"):
        lsmap.detect(42, str(model), device="cpu")


def test_evaluate_api_takes_one_model_string(tmp_path, det):
    from tests.patchgen import make_patches

    _, model, _ = det
    data = make_patches(tmp_path / "p", 2, size=16)
    res = lsmap.evaluate(str(model), data, device="cpu")
    assert res is not None
    with pytest.raises(InputError, match="`threshold`"):
        lsmap.evaluate(str(model), data, device="cpu", threshold=float("nan"))


@pytest.mark.parametrize("std", [0.0, float("nan"), -1.0])
def test_statistics_files_with_zero_or_nan_std_are_refused(tmp_path, std):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"mean": [1.0, 1.0], "std": [0.5, std], "count": 3}).replace("NaN", "NaN"))
    with pytest.raises(InputError, match="band #2"):
        BandStats.load(path)


def test_stats_default_leaves_the_declared_nodata_fill_out(tmp_path):
    data = np.full((14, 20, 20), 0.5, np.float32)
    data[:, :, 1::2] = 1.5  # mean 1.0, std 0.5 (a constant band's statistics are not written)
    data[:, :10] = -9999.0
    scene = write_scene(tmp_path / "s.tif", data, nodata=-9999.0)
    res = CliRunner().invoke(main, ["stats", str(scene), "-o", str(tmp_path / "st.json"), "--json"])
    assert res.exit_code == 0, res.output
    stats = json.loads((tmp_path / "st.json").read_text())
    assert stats["mean"] == [1.0] * 14 and stats["count"] == 200
    res = CliRunner().invoke(main, ["stats", str(scene), "-o", str(tmp_path / "all.json"), "--all-pixels"])
    assert json.loads((tmp_path / "all.json").read_text())["mean"][0] < -1000


def test_settings_objects_may_be_given_as_dicts_of_their_fields():
    """``lsmap.detect(scene, options={"tta": True})`` was a TypeError from dataclasses.replace (the API audit)."""
    from lsmap.core.checks import as_settings
    from lsmap.map.detect import _options
    from lsmap.map.options import DetectOptions

    opts = _options({"tta": True, "window": 256}, {"window": 384})  # keywords still win over `options`
    assert isinstance(opts, DetectOptions) and opts.tta and opts.window == 384
    assert as_settings(None, DetectOptions, "options") is None
    with pytest.raises(InputError, match=r"`options`: unknown setting\(s\) treshold; valid: .*threshold"):
        _options({"treshold": 0.3}, {})
    with pytest.raises(InputError, match="`options` must be a DetectOptions or a dict of its fields .got list."):
        _options([1], {})


def test_contradictory_options_are_refused_not_ignored(tmp_path):
    """Found by the CLI audit: --pre-bands without --pre, --merged and --scheduler with one scene, and evaluate's
    --stats with --norm model all ran with exit 0 and the option ignored."""
    from tests.patchgen import make_patches

    scene = write_scene(tmp_path / "s.tif", smooth_scene(np.random.default_rng(0), h=48, w=48))
    model = tiny_checkpoint(tmp_path / "m")
    base = ["detect", str(scene), "--model", str(model), "--device", "cpu", "-o", str(tmp_path / "o.gpkg")]
    for extra, needle in ((["--pre-bands", "rgbn"], "--pre-bands names the bands of the pre-event scene; pass --pre"),
                          (["--merged", "e.gpkg"], "--merged applies to several scenes"),
                          (["--scheduler", "tcp://nowhere:1"], "--scheduler applies to several scenes")):
        r = CliRunner().invoke(main, [*base, *extra])
        assert r.exit_code != 0 and needle in r.output, (extra, r.output)
        assert not (tmp_path / "o.gpkg").exists()
    make_patches(tmp_path / "p", 2, size=32, seed=1)
    stats = tmp_path / "st.json"
    BandStats(mean=(1.0,) * 14, std=(0.5,) * 14, count=100).save(stats)
    r = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(tmp_path / "p"), "--stats", str(stats),
                                  "--norm", "model", "--device", "cpu"])
    assert r.exit_code == 1 and "--stats gives the data's statistics; it cannot be combined with --norm model" \
        in r.output, r.output
