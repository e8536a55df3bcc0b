"""Dataset, augmentations and the step sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from patchgen import make_patches

from lsmap.core.bands import PROFILES
from lsmap.data.dataset import Augment, PatchDataset, StepSampler, augment_sample
from lsmap.data.stats import patch_stats
from lsmap.errors import BandMismatchError, InputError
from lsmap.io.patches import find_patches, write_patch

L4S = PROFILES["l4s14"]
TERRAIN = [L4S.bands.index("slope"), L4S.bands.index("DEM")]


def _dihedral(a: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/rotations of a 2-D array."""
    out = []
    for b in (a, a[::-1]):
        out += [np.rot90(b, k) for k in range(4)]
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), contrast=st.floats(0, 0.5), brightness=st.floats(0, 0.5))
@example(seed=0, contrast=0.5, brightness=0.5)
def test_augment_never_changes_terrain_values(seed, contrast, brightness):
    """Slope and DEM are only moved (flip/rotation, like the mask), never rescaled."""
    rng = np.random.default_rng(123)
    image = rng.normal(1, 0.3, (14, 16, 16)).astype(np.float32)
    mask = (rng.random((16, 16)) > 0.7).astype(np.uint8)
    out, m, _ = augment_sample(image.copy(), mask, None, np.random.default_rng(seed),
                               Augment(contrast=contrast, brightness=brightness), L4S.spectral_indices)
    matches = [k for k, t in enumerate(_dihedral(mask)) if np.array_equal(t, m)]
    assert matches
    for b in TERRAIN:
        assert any(np.array_equal(_dihedral(image[b])[k], out[b]) for k in matches)


def test_colour_changes_spectral_bands_only():
    rng = np.random.default_rng(1)
    image = rng.normal(1, 0.3, (14, 16, 16)).astype(np.float32)
    aug = Augment(flip=False, rotate=False, contrast=0.3, brightness=0.3)
    out, _, _ = augment_sample(image.copy(), np.zeros((16, 16), np.uint8), None, np.random.default_rng(5), aug,
                               L4S.spectral_indices)
    np.testing.assert_array_equal(out[TERRAIN], image[TERRAIN])
    assert not np.allclose(out[:12], image[:12])


def test_geometric_augment_moves_weight_with_mask():
    mask = np.zeros((8, 8), np.uint8)
    mask[0, :3] = 1
    weight = mask.astype(np.float32) * 0.5
    for seed in range(10):
        _, m, w = augment_sample(np.zeros((3, 8, 8), np.float32), mask, weight, np.random.default_rng(seed),
                                 Augment(contrast=0, brightness=0), (0, 1, 2))
        np.testing.assert_array_equal(w, m * 0.5)


@pytest.fixture
def folder(tmp_path):
    return make_patches(tmp_path / "p", 4, size=16)


def test_items_are_normalised_and_deterministic(folder):
    patches = find_patches(folder)
    stats = patch_stats(patches)
    ds = PatchDataset(patches, stats, "l4s14", augment=Augment())
    a, b, c = ds[(1, 7)], ds[(1, 7)], ds[(1, 8)]
    assert a["image"].shape == (14, 16, 16) and a["target"].dtype.is_floating_point is False
    assert np.array_equal(a["image"].numpy(), b["image"].numpy())
    assert not np.array_equal(a["image"].numpy(), c["image"].numpy())
    plain = PatchDataset(patches, stats, "l4s14")
    allim = np.stack([plain[i]["image"].numpy() for i in range(4)])
    np.testing.assert_allclose(allim.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(allim.std(axis=(0, 2, 3)), 1, atol=1e-3)


def test_unlabelled_patch_is_all_ignored_and_overrides_apply(tmp_path):
    make_patches(tmp_path / "u", 2, size=16, masks=False)
    patches = find_patches(tmp_path / "u")
    ds = PatchDataset(patches, None, "l4s14")
    assert (ds[0]["target"] == 255).all() and "weight" not in ds[0]
    pseudo = [np.ones((16, 16), np.uint8), None]
    weights = [np.full((16, 16), 0.25, np.float32), None]
    ds = PatchDataset(patches, None, "l4s14", targets=pseudo, weights=weights)
    assert (ds[0]["target"] == 1).all() and (ds[0]["weight"] == 0.25).all()
    assert (ds[1]["target"] == 255).all() and (ds[1]["weight"] == 1).all()
    with pytest.raises(InputError, match="weights: 1 given for 2"):
        PatchDataset(patches, None, "l4s14", weights=[None])


def test_nan_only_patch_is_an_error(tmp_path):
    img = np.full((14, 8, 8), np.nan, np.float32)
    write_patch(tmp_path / "n", "1", img, np.zeros((8, 8), np.uint8))
    patches = find_patches(tmp_path / "n")
    with pytest.raises(InputError, match="image_1.h5: patch has no finite value"):
        patch_stats(patches)
    with pytest.raises(InputError, match="no finite value"):
        PatchDataset(patches, None, "l4s14")[0]


def test_partial_nan_is_replaced_and_warned(tmp_path):
    img = np.ones((14, 8, 8), np.float32)
    img[:, 0, 0] = np.nan
    write_patch(tmp_path / "n", "1", img, np.zeros((8, 8), np.uint8))
    with pytest.warns(UserWarning, match="1?4 non-finite values replaced"):
        stats = patch_stats(find_patches(tmp_path / "n"))
    assert np.isfinite(stats.mean).all()


def test_band_subset_statistics_follow_the_selection(folder):
    full = patch_stats(find_patches(folder), "l4s14")
    sub = patch_stats(find_patches(folder), "B8,slope,B2")
    assert sub.bands == ("B8", "slope", "B2")
    idx = [7, 12, 1]
    np.testing.assert_allclose(sub.mean, [full.mean[i] for i in idx], rtol=1e-6)
    np.testing.assert_allclose(sub.std, [full.std[i] for i in idx], rtol=1e-6)


def test_colour_perturbation_follows_the_selection(folder):
    """With slope in the middle of the selection, only the spectral bands change in value."""
    patches = find_patches(folder)
    plain = PatchDataset(patches, None, "B8,slope,B2")
    aug = PatchDataset(patches, None, "B8,slope,B2", augment=Augment(flip=False, rotate=False, contrast=0.3,
                                                                   brightness=0.3))
    x, y = plain[0]["image"].numpy(), aug[(0, 123)]["image"].numpy()
    np.testing.assert_array_equal(x[1], y[1])  # slope: untouched
    assert not np.allclose(x[0], y[0]) and not np.allclose(x[2], y[2])


def test_wrong_band_count(tmp_path):
    write_patch(tmp_path / "p5", "1", np.ones((5, 8, 8), np.float32), np.zeros((8, 8), np.uint8))
    with pytest.raises(BandMismatchError, match="'rgb' expects 3 bands but the file has 5"):
        patch_stats(find_patches(tmp_path / "p5"), "rgb")


def test_sampler_ranks_disjoint_and_resumable():
    full = StepSampler(10, 3, seed=4, world=1)
    it = iter(full)
    stream = [next(it) for _ in range(30)]
    r0 = iter(StepSampler(10, 3, seed=4, rank=0, world=2))
    r1 = iter(StepSampler(10, 3, seed=4, rank=1, world=2))
    step0 = [next(r0) for _ in range(3)] + [next(r1) for _ in range(3)]
    assert step0 == stream[:6]  # step 0 of two ranks = first two per-rank batches of the stream
    resumed = iter(StepSampler(10, 3, seed=4, start_step=4))
    assert [next(resumed) for _ in range(6)] == stream[12:18]
    assert sorted(i for i, _ in stream[:10]) == list(range(10))  # each epoch is a permutation


def test_augmentation_never_modifies_the_cache(folder):
    """Regression: colour perturbation without a geometric change wrote into the cached image."""
    ds = PatchDataset(find_patches(folder), None, "l4s14", augment=Augment(flip=False, rotate=False), cache=True)
    before = ds.load(0)[0].copy()
    for seed in range(5):
        ds[(0, seed)]
    np.testing.assert_array_equal(ds.load(0)[0], before)


def test_spatial_hold_out_is_a_block_with_its_overlapping_neighbours_left_out():
    """A random hold-out of tiled patches validated on pixels inside training images (an audit: 96 % with
    --overlap 64 on Chittagong); the spatial one holds out a band of rows and leaves out what overlaps it."""
    from lsmap.data.dataset import spatial_hold_out
    from lsmap.io.patches import Patch

    windows = {str(k): (r, c, 32, 32) for k, (r, c) in enumerate((r, c) for r in range(0, 160, 24)
                                                                   for c in range(0, 96, 24))}
    patches = [Patch(k, Path(f"/x/img/image_{k}.h5"), None, None) for k in windows]
    for seed in range(5):
        train, val, dropped = spatial_hold_out(patches, 0.2, seed, windows)
        assert len(val) == round(0.2 * len(patches)) and len(train) + len(val) + dropped == len(patches)
        order = sorted(windows, key=lambda k: windows[k][:2])
        picked = sorted(order.index(p.id) for p in val)
        assert picked == list(range(picked[0], picked[0] + len(val)))  # consecutive in row-major order
        for t in train:
            r, c, h, w = windows[t.id]
            assert not any(r < r2 + h2 and r2 < r + h and c < c2 + w2 and c2 < c + w
                           for r2, c2, h2, w2 in (windows[v.id] for v in val))
        assert dropped > 0  # the 8 px overlaps
    with pytest.raises(InputError, match="not in the folder's patch index"):
        spatial_hold_out(patches, 0.2, 0, {})
