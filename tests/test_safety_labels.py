"""Labels are never silently dropped: masks are 0/1/255 or mapped with --label-map (issue 14, 4)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lsmap.cli import main
from lsmap.core.labels import MASK_VALUES, mask_values
from lsmap.errors import InputError
from lsmap.io.patches import check_labels, find_patches, read_mask
from tests.patchgen import make_patches


def _rewrite_masks(folder: Path, fn) -> None:
    for p in sorted((folder / "mask").glob("*.h5")):
        with h5py.File(p, "r") as f:
            m = f["mask"][()]
        with h5py.File(p, "w") as f:
            f.create_dataset("mask", data=fn(m))


@given(st.lists(st.integers(0, 255), min_size=1, max_size=6))
@example([0, 255])
@example([0, 1, 2])
def test_mask_values_outside_0_1_255_are_refused_never_cast(values):
    """Law: a uint8 mask is returned unchanged iff all its values are 0, 1 or 255; otherwise an error names them."""
    arr = np.array(values, np.uint8).reshape(1, -1)
    if set(values) <= set(MASK_VALUES):
        np.testing.assert_array_equal(mask_values(arr, None, "m.h5"), arr)
    else:
        with pytest.raises(InputError, match="`label_map`"):
            mask_values(arr, None, "m.h5")


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=6))
@example([0.0, 0.9])
@example([0.0, 1.0])
def test_float_masks_are_read_only_when_integer_valued(values):
    """Law: a float mask is accepted iff every value is a finite integer among 0/1/255; never truncated."""
    arr = np.array(values, np.float32).reshape(1, -1)
    ok = all(np.isfinite(v) and float(v).is_integer() and int(v) in MASK_VALUES for v in arr.ravel())
    if ok:
        np.testing.assert_array_equal(mask_values(arr, None, "m.h5"), arr.astype(np.uint8))
    else:
        with pytest.raises(InputError):
            mask_values(arr, None, "m.h5")


def test_0_255_mask_folder_is_refused_with_the_label_map_hint_and_reads_with_it(tmp_path):
    data = make_patches(tmp_path / "p", 3, size=16)
    _rewrite_masks(data, lambda m: (m * 255).astype(np.uint8))
    patches = find_patches(data)
    with pytest.raises(InputError, match="no landslide pixel.*`label_map` 0:0,255:1"):
        check_labels(patches)
    counts = check_labels(patches, {0: 0, 255: 1})
    assert counts["landslide"] > 0 and counts["ignored"] == 0
    assert read_mask(patches[0].mask, {0: 0, 255: 1}).max() == 1


def test_float_09_masks_fail_train_and_evaluate_cli(tmp_path):
    data = make_patches(tmp_path / "p", 2, size=16)
    _rewrite_masks(data, lambda m: m.astype(np.float32) * 0.9)
    runner = CliRunner()
    res = runner.invoke(main, ["train", "--train", str(data), "--val", str(data), "--model", "tiny-unet", "--scale", "1",
                               "--steps", "1", "--device", "cpu", "-o", str(tmp_path / "run")])
    assert res.exit_code == 1 and "non-integer values (0.9)" in res.output, res.output
    assert not (tmp_path / "run").exists()


def test_mask_folder_without_landslides_fails_evaluate(tmp_path):
    from tests.detect_fixtures import tiny_checkpoint

    data = make_patches(tmp_path / "p", 2, size=16)
    _rewrite_masks(data, lambda m: np.zeros_like(m))
    model = tiny_checkpoint(tmp_path / "m")
    res = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(data), "--device", "cpu"])
    assert res.exit_code == 1 and "no landslide pixel" in res.output, res.output


def test_train_reads_0_255_masks_with_label_map(tmp_path):
    data = make_patches(tmp_path / "p", 2, size=16)
    _rewrite_masks(data, lambda m: (m * 255).astype(np.uint8))
    res = CliRunner().invoke(main, ["train", "--train", str(data), "--val", str(data), "--model", "tiny-unet",
                                    "--scale", "1", "--steps", "2", "--val-every", "2", "--batch-size", "2",
                                    "--device", "cpu", "--label-map", "0:0,255:1", "-o", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "best.safetensors").exists()


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.integers(0, 300), st.sampled_from(MASK_VALUES), min_size=1, max_size=5),
       st.lists(st.integers(0, 300), min_size=1, max_size=8))
def test_label_map_maps_covered_values_and_refuses_the_rest(mapping, values):
    """Law: with a label map every value it covers becomes its target; any uncovered value is an error."""
    arr = np.array(values, np.int64)
    if set(values) <= set(mapping):
        np.testing.assert_array_equal(mask_values(arr, mapping, "m"), [mapping[v] for v in values])
    else:
        with pytest.raises(InputError, match="not covered"):
            mask_values(arr, mapping, "m")
