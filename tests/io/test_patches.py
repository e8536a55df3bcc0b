"""Patch folders in the official, Hugging Face and plain layouts."""

import h5py
import numpy as np
import pytest

from lsmap.core.bands import get_profile
from lsmap.errors import BandMismatchError, InputError, MissingBandError, MissingInputError
from lsmap.io.patches import (
    LAYOUTS,
    NONFINITE_FILL,
    find_patches,
    has_split,
    read_image,
    read_mask,
    read_patch_image,
    write_patch,
)


def _write(path, name, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset(name, data=data)


@pytest.fixture
def official(tmp_path, rng):
    for i in (1, 2, 10):
        _write(tmp_path / "TrainData/img" / f"image_{i}.h5", "img", rng.random((8, 8, 14)))
        _write(tmp_path / "TrainData/mask" / f"mask_{i}.h5", "mask", (rng.random((8, 8)) > 0.9).astype(np.uint8))
    _write(tmp_path / "ValidData/img/image_1.h5", "img", rng.random((8, 8, 14)))
    return tmp_path


def test_official_layout_sorted_numerically(official):
    train = find_patches(official, "train")
    assert [p.id for p in train] == ["1", "2", "10"]
    assert all(p.mask is not None for p in train)
    val = find_patches(official, "validation")
    assert [p.id for p in val] == ["1"] and val[0].mask is None


def test_huggingface_layout(tmp_path, rng):
    _write(tmp_path / "images/validation/image_5.h5", "img", rng.random((8, 8, 14)))
    _write(tmp_path / "annotations/validation/mask_5.h5", "mask", np.zeros((8, 8), np.uint8))
    (p,) = find_patches(tmp_path, "validation")
    assert p.id == "5" and p.mask.name == "mask_5.h5"


def test_split_folders_layout(tmp_path, rng):
    """ROOT/train|test/img (+ mask/): the layout of the real patches beside the project."""
    for i in (3, 1):
        _write(tmp_path / "train/img" / f"image_{i}.h5", "img", rng.random((8, 8, 14)))
        _write(tmp_path / "train/mask" / f"mask_{i}.h5", "mask", np.zeros((8, 8), np.uint8))
    _write(tmp_path / "test/img/image_9.h5", "img", rng.random((8, 8, 14)))
    assert [p.id for p in find_patches(tmp_path, "train", require_masks=True)] == ["1", "3"]
    (t,) = find_patches(tmp_path, "test")
    assert t.id == "9" and t.mask is None
    assert has_split(tmp_path, "train") and has_split(tmp_path, "test") and not has_split(tmp_path, "validation")
    with pytest.raises(InputError) as e:
        find_patches(tmp_path, "validation")
    msg = str(e.value)
    assert msg.endswith("no validation patches, but train and test patches; choose one with `split` ('train')")
    (tmp_path / "other").mkdir()
    with pytest.raises(InputError) as e:
        find_patches(tmp_path / "other", "validation")  # a folder without patches: the layouts read
    assert "no validation patches found" in str(e.value) and all(layout in str(e.value) for layout in LAYOUTS)


def test_id_mismatch_is_a_clear_error(official):
    (official / "TrainData/mask/mask_2.h5").unlink()
    with pytest.raises(InputError, match="images without mask: 2"):
        find_patches(official, "train")


def test_patches_without_any_mask_say_so_where_masks_are_needed(official):
    # found with the real unlabelled L4S test patches: `lsmap evaluate` said "image and mask ids do not match"
    with pytest.raises(InputError, match=r"no mask files \(.*ValidData/mask does not exist\); this needs labelled"):
        find_patches(official, "validation", require_masks=True)
    assert find_patches(official, "validation")[0].mask is None  # unlabelled patches are fine elsewhere


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(MissingInputError, match="nowhere"):
        find_patches(tmp_path / "nowhere")
    (tmp_path / "img").mkdir()
    with pytest.raises(InputError, match="no .h5"):
        find_patches(tmp_path)


def test_read_image_replaces_and_counts_nonfinite(tmp_path, rng):
    img = rng.random((8, 8, 14))
    img[0, 0, 3] = np.nan
    img[1, 2, 0] = np.inf
    _write(tmp_path / "a.h5", "img", img)
    arr, bad = read_image(tmp_path / "a.h5", get_profile("l4s14"))
    assert arr.shape == (14, 8, 8) and arr.dtype == np.float32 and bad == 2
    assert arr[3, 0, 0] == NONFINITE_FILL and np.isfinite(arr).all()
    np.testing.assert_allclose(arr[5], img[:, :, 5].astype(np.float32))
    _write(tmp_path / "b.h5", "img", img[:, :, :5])  # 5 bands, no names: the count is checked
    with pytest.raises(BandMismatchError, match="b.h5"):
        read_image(tmp_path / "b.h5", get_profile("rgbn"))


def test_band_set_taken_by_name_from_14_band_l4s_patch(tmp_path, rng):
    img = rng.random((8, 8, 14))
    _write(tmp_path / "a.h5", "img", img)  # no names: the L4S convention (B1..B12, slope, DEM)
    arr, _ = read_image(tmp_path / "a.h5", get_profile("rgbn"))
    np.testing.assert_array_equal(arr, img[:, :, [3, 2, 1, 7]].transpose(2, 0, 1).astype(np.float32))
    arr, _ = read_image(tmp_path / "a.h5", get_profile("DEM,B2"))  # any order
    np.testing.assert_array_equal(arr, img[:, :, [13, 1]].transpose(2, 0, 1).astype(np.float32))
    with pytest.raises(MissingBandError, match=r"a\.h5: no band B8A"):
        read_image(tmp_path / "a.h5", get_profile("B8A,B4"))


def test_recorded_band_names_are_used(tmp_path, rng):
    img = rng.random((3, 8, 8)).astype(np.float32)  # stored as B8, B2, DEM
    (p,) = [write_patch(tmp_path / "f", "1", img, bands=("B8", "B2", "DEM"))]
    assert p.bands == ("B8", "B2", "DEM")
    arr, _ = read_image(p.image, get_profile("B2,B8"))
    np.testing.assert_array_equal(arr, img[[1, 0]])
    with pytest.raises(MissingBandError, match="no bands B4, B3 .*it has B8, B2, DEM"):
        read_image(p.image, get_profile("rgbn"))
    # names from the folder's tiles.json (patches written before the attribute existed)
    _write(tmp_path / "g" / "img" / "image_1.h5", "img", img.transpose(1, 2, 0))
    (tmp_path / "g" / "tiles.json").write_text('{"bands": {"name": "x", "bands": ["B8", "B2", "DEM"]}}')
    (q,) = find_patches(tmp_path / "g")
    assert q.bands == ("B8", "B2", "DEM")
    np.testing.assert_array_equal(read_patch_image(q, get_profile("DEM"))[0], img[[2]])


def test_corrupt_file_names_the_file(tmp_path):
    (tmp_path / "c.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="c.h5"):
        read_image(tmp_path / "c.h5")
    with pytest.raises(InputError, match="c.h5"):
        read_mask(tmp_path / "c.h5")


def test_write_then_read_roundtrip(tmp_path, rng):
    img = rng.random((4, 16, 16)).astype(np.float32)
    mask = (rng.random((16, 16)) > 0.5).astype(np.uint8)
    write_patch(tmp_path, "7", img, mask)
    (p,) = find_patches(tmp_path, require_masks=True)
    np.testing.assert_array_equal(read_image(p.image)[0], img)
    np.testing.assert_array_equal(read_mask(p.mask), mask)
    with h5py.File(p.image) as f:
        assert f["img"].shape == (16, 16, 4), "files keep the L4S (H, W, C) layout"


def test_patch_keys_record_folders_and_ids_and_count_them_back(tmp_path):
    """The card's record of training patches: resolved image folder -> ids, merged with an earlier record;
    counted back by folder and id (another folder with the same ids is not the same patches)."""
    from lsmap.io.patches import find_patches, patch_keys, recorded, write_patch

    for name in ("a", "b"):
        for pid in ("0", "1", "2"):
            write_patch(tmp_path / name, pid, np.zeros((4, 8, 8), np.float32), np.zeros((8, 8), np.uint8))
    a, b = find_patches(tmp_path / "a"), find_patches(tmp_path / "b")
    rec = patch_keys(a[:2], {"/elsewhere/img": ["7"]})
    assert rec == {"/elsewhere/img": ["7"], str((tmp_path / "a" / "img").resolve()): ["0", "1"]}
    assert recorded(a, rec) == [True, True, False] and recorded(b, rec) == [False] * 3
    assert patch_keys(a + a[:1]) == {str((tmp_path / "a" / "img").resolve()): ["0", "1", "2"]}


def test_a_wrong_patch_folder_gets_a_message_naming_the_right_one(tmp_path):
    """The img/ folder itself names its parent; a root without the asked split names the splits it has."""
    from lsmap.io.patches import find_patches, write_patch

    write_patch(tmp_path / "p", "0", np.zeros((4, 8, 8), np.float32), np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match=rf"holds patch files itself; give the folder above it \({tmp_path / 'p'}\)"):
        find_patches(tmp_path / "p" / "img")
    write_patch(tmp_path / "root" / "train", "0", np.zeros((4, 8, 8), np.float32), np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match=r"no validation patches, but train patches; choose one with `split` \('train'\)"):
        find_patches(tmp_path / "root", "validation")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no train patches found; the layouts read are"):
        find_patches(tmp_path / "empty")


def test_two_files_with_one_patch_id_are_refused(tmp_path, rng):
    """A real L4S folder holds both 4.h5 and image_4.h5 (different images): every reader but refine's target kept
    one of them without a word (found by an audit: lsmap stats counted 4 of 5 patches). find_patches refuses it."""
    import shutil

    from click.testing import CliRunner

    from lsmap.cli import main
    from lsmap.io.patches import find_patches, write_patch

    for i in range(3):
        write_patch(tmp_path, str(i), rng.normal(1, 0.1, (14, 8, 8)).astype("float32"))
    shutil.copy(tmp_path / "img" / "image_1.h5", tmp_path / "img" / "1.h5")
    with pytest.raises(InputError, match=r"img: 1.h5 and image_1.h5 both have patch id '1'; rename one of them"):
        find_patches(tmp_path)
    r = CliRunner().invoke(main, ["stats", str(tmp_path), "-o", str(tmp_path / "s.json")])
    assert r.exit_code == 1 and "both have patch id '1'" in r.output and not (tmp_path / "s.json").exists()


def test_training_records_see_through_links(tmp_path, rng):
    """A folder of links to training patches passed as unseen (found by an audit: trained_on keyed by the folder
    path); the records now follow each file to what it links to, renamed links included."""
    from lsmap.io.patches import find_patches, patch_keys, recorded, write_patch

    for i in range(3):
        write_patch(tmp_path / "train", str(i), rng.normal(1, 0.1, (14, 8, 8)).astype("float32"))
    (tmp_path / "links" / "img").mkdir(parents=True)
    (tmp_path / "links" / "img" / "image_a1.h5").symlink_to(tmp_path / "train" / "img" / "image_1.h5")
    write_patch(tmp_path / "links", "new", rng.normal(1, 0.1, (14, 8, 8)).astype("float32"))
    record = patch_keys(find_patches(tmp_path / "train"))
    links = find_patches(tmp_path / "links")
    assert {p.id: seen for p, seen in zip(links, recorded(links, record), strict=True)} == {"a1": True, "new": False}


def test_training_records_recognise_copies_by_content(tmp_path, rng):
    """A copy of the training patches counted as all new (found by an audit: evaluate --unseen scored 8 patches as
    not trained on where 6 were): the card records each image's content digest too, which recognises a copy, a
    renamed one, and one written otherwise (compressed, float64); another image is not recognised, and a record
    without digests (an older card) reads no image."""
    import shutil
    from unittest import mock

    from lsmap.io import patches as mod
    from lsmap.io.patches import DIGEST_CHARS, find_patches, patch_digest, patch_digests, patch_keys, recorded

    images = [rng.normal(1, 0.1, (14, 8, 8)).astype("float32") for _ in range(3)]
    for i, im in enumerate(images):
        write_patch(tmp_path / "train", str(i), im)
    train = find_patches(tmp_path / "train")
    keys, digests = patch_keys(train[:2]), patch_digests(train[:2])
    assert len(digests) == 2 and all(len(d) == DIGEST_CHARS and int(d, 16) >= 0 for d in digests)
    assert patch_digests(train[:1] + train[:2], ["feedc0ffee000000"]) == ["feedc0ffee000000", *digests]

    shutil.copytree(tmp_path / "train", tmp_path / "copy")
    (tmp_path / "copy" / "img" / "image_1.h5").rename(tmp_path / "copy" / "img" / "image_x.h5")
    write_patch(tmp_path / "gz", "5", images[0], compression="gzip")  # the same image, written otherwise
    with h5py.File(tmp_path / "gz" / "img" / "image_6.h5", "w") as f:
        f["img"] = images[1].transpose(1, 2, 0).astype(np.float64)
    write_patch(tmp_path / "gz", "7", images[2] + 1)  # another image
    copy, gz = find_patches(tmp_path / "copy"), find_patches(tmp_path / "gz")
    assert {p.id: s for p, s in zip(copy, recorded(copy, keys, digests), strict=True)} == {"0": True, "2": False,
                                                                                         "x": True}
    assert recorded(gz, keys, digests) == [True, True, False]
    assert recorded(train, keys, digests) == [True, True, False]
    with mock.patch.object(mod, "patch_digest", side_effect=AssertionError("read")):  # an older card
        assert recorded(copy, keys) == [False] * 3 and recorded(train, keys) == [True, True, False]
    # a file rewritten with another image gets a new digest (the cache is keyed by the file as it is)
    before = patch_digest(copy[0])
    write_patch(tmp_path / "copy", "0", images[2])
    assert patch_digest(copy[0]) == patch_digest(train[2]) != before
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match=r"bad.h5: cannot read HDF5 patch"):
        patch_digest(tmp_path / "bad.h5")
