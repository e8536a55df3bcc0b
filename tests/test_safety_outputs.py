"""Outputs: --overwrite replaces only lsmap's own folders; unwritable locations fail before any work (issue 14, 1 and 3)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lsmap.cli import main
from lsmap.errors import OutputError, OutputExistsError, OutputOwnershipError
from lsmap.io.outputs import OWNER_MARKER, atomic_output, check_owned_dir, check_writable, foreign_files
from tests._rasters import write_tif


@pytest.fixture
def scene(tmp_path: Path, rng) -> Path:
    return write_tif(tmp_path / "scene.tif", rng.random((14, 40, 40)).astype(np.float32))


def test_tile_overwrite_in_the_working_directory_is_refused_and_deletes_nothing(tmp_path, scene, monkeypatch):
    work = tmp_path / "w"
    work.mkdir()
    (work / "thesis.txt").write_text("mine\n")
    monkeypatch.chdir(work)
    res = CliRunner().invoke(main, ["tile", str(scene), "-o", ".", "--size", "16", "--overwrite"])
    assert res.exit_code == 1
    assert "working directory" in res.output and "Traceback" not in res.output
    assert (work / "thesis.txt").read_text() == "mine\n"


@pytest.mark.parametrize("target", ["home", "parent"])
def test_home_and_parents_of_the_working_directory_are_never_replaced(tmp_path, monkeypatch, target):
    home = tmp_path / "home"
    (home / "sub").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home) if target == "home" else str(tmp_path / "elsewhere"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(home / "sub" if target == "parent" else tmp_path / "cwd")
    why = "home directory" if target == "home" else "parent of the working directory"
    with pytest.raises(OutputOwnershipError, match=why):
        check_owned_dir(home, True, "tile", ["*"])


def test_tile_overwrite_refuses_a_folder_lsmap_did_not_write(tmp_path, scene):
    out = tmp_path / "mine"
    (out / "img").mkdir(parents=True)
    (out / "img" / "image_1.h5").write_bytes(b"user's own L4S patch")  # matches the pattern, but no marker
    res = CliRunner().invoke(main, ["tile", str(scene), "-o", str(out), "--size", "16", "--overwrite"])
    assert res.exit_code == 1 and "not written by 'lsmap tile'" in res.output
    assert (out / "img" / "image_1.h5").read_bytes() == b"user's own L4S patch"


def test_tile_overwrite_keeps_other_files_in_an_lsmap_folder(tmp_path, scene):
    out = tmp_path / "p"
    runner = CliRunner()
    assert runner.invoke(main, ["tile", str(scene), "-o", str(out), "--size", "16"]).exit_code == 0
    assert (out / OWNER_MARKER).is_file()
    (out / "notes.txt").write_text("keep me")
    res = runner.invoke(main, ["tile", str(scene), "-o", str(out), "--size", "16", "--overwrite"])
    assert res.exit_code == 1 and "notes.txt" in res.output
    assert (out / "notes.txt").read_text() == "keep me"
    (out / "notes.txt").unlink()
    res = runner.invoke(main, ["tile", str(scene), "-o", str(out), "--size", "20", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert '"size": 20' in (out / "tiles.json").read_text()


def test_refine_overwrite_refuses_foreign_folder(tmp_path):
    from lsmap.learn.refine.rounds import OUTPUT_PATTERNS, RUN_FILE

    out = tmp_path / "r"
    (out / "round_1" / "models").mkdir(parents=True)
    (out / RUN_FILE).write_text("{}")
    assert foreign_files(out, OUTPUT_PATTERNS) == []
    (out / "data.csv").write_text("x")
    assert foreign_files(out, OUTPUT_PATTERNS) == ["data.csv"]
    with pytest.raises(OutputOwnershipError, match="data.csv"):
        check_owned_dir(out, True, "refine", OUTPUT_PATTERNS, manifests=(RUN_FILE,))


def test_parent_that_is_a_file_fails_before_work(tmp_path, scene):
    (tmp_path / "afile").write_text("x")
    for args in (["stack", str(scene), "-o", str(tmp_path / "afile" / "s.tif")],
                 ["detect", str(scene), "-o", str(tmp_path / "afile" / "s.gpkg")],
                 ["tile", str(scene), "-o", str(tmp_path / "afile" / "p")],
                 ["stats", str(scene), "-o", str(tmp_path / "afile" / "s.json")]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1, args
        assert "Traceback" not in res.output and "afile" in res.output


def test_immutable_or_unwritable_folder_fails_before_any_work(tmp_path, monkeypatch):
    """A probe file is created and removed: its failure (EPERM of an immutable folder) is the error."""
    import errno

    real_open = os.open

    def refuse(path, flags, *a, **k):
        if ".lsmap-probe." in str(path):
            raise PermissionError(errno.EPERM, "Operation not permitted", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(OutputError, match="cannot write"):
        check_writable(tmp_path / "out.tif")


def test_train_checks_the_run_folder_before_training(tmp_path):
    from lsmap.learn.train import TrainConfig, train
    from tests.patchgen import make_patches

    data = tmp_path / "d"
    make_patches(data / "train", 2)
    make_patches(data / "val", 2)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="afile"):
        train(tmp_path / "afile" / "run", train_dir=data / "train", val_dir=data / "val",
              config=TrainConfig(model="tiny-unet", steps=1, scale=1.0, device="cpu"), progress=False)


def test_atomic_output_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "x.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(out, overwrite=True) as tmp:
        tmp.write_text("new")
        raise RuntimeError("boom")
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]
    with pytest.raises(OutputExistsError):
        with atomic_output(out):
            pass


def _digest(path: Path) -> bytes:
    import hashlib

    return hashlib.sha256(path.read_bytes()).digest()


def test_overwrite_never_replaces_an_input_of_the_run(tmp_path, scene):
    # --overwrite replaces what lsmap wrote before, never the files the run reads (found on real data: the
    # scene replaced by its own probability raster, a band of the folder by the stack)
    from tests.products_fixtures import loose_bands, make_safe

    bands = loose_bands(make_safe(tmp_path), tmp_path / "bands", ["B2", "B3", "B4", "B8"])
    dem = write_tif(tmp_path / "dem.tif", np.ones((1, 40, 40), np.float32))
    kept = {p: _digest(p) for p in [scene, dem, *bands.iterdir()]}
    for args, named in ((["detect", str(scene), "-o", str(tmp_path / "x.gpkg"), "--prob", str(scene)], "scene.tif"),
                        (["detect", str(bands), "-o", str(tmp_path / "y.gpkg"), "--mask", str(bands / "B04.tif")],
                         "inside the input folder"),
                        (["stack", str(bands), "--offset", "-1000", "-o", str(bands / "B02.tif")],
                         "inside the input folder"),
                        (["stack", str(bands), "--offset", "-1000", "--dem", str(dem), "--bands", "l2a-terrain",
                          "-o", str(dem)], "is the input"),
                        (["stats", str(scene), "--bands", "l4s14", "-o", str(scene)], "is the input")):
        res = CliRunner().invoke(main, [*args, "--overwrite"])
        assert res.exit_code == 1, (args, res.output)
        assert named in res.output and "write it elsewhere" in res.output and "Traceback" not in res.output
    assert kept == {p: _digest(p) for p in kept}
    assert not any(p.name.endswith((".gpkg", ".tmp")) for p in tmp_path.iterdir())


def test_overwrite_never_replaces_a_models_card_or_the_area_of_interest(tmp_path, scene):
    """A model named by its stem was not seen as an input, nor the card beside a .safetensors, nor an --aoi file:
    `-o run/best.json --overwrite` made the model unusable (found by the failure audit)."""
    import geopandas as gpd
    import rasterio
    import shapely
    from detect_fixtures import tiny_checkpoint

    with rasterio.open(scene) as src:
        area, crs, count = shapely.box(*src.bounds), src.crs, src.count
    tiny_checkpoint(tmp_path / "best", "l4s14" if count == 14 else "rgbn")
    gpd.GeoDataFrame(geometry=[area], crs=crs).to_file(tmp_path / "aoi.geojson")
    kept = {p: _digest(p) for p in (tmp_path / "best.safetensors", tmp_path / "best.json", tmp_path / "aoi.geojson")}
    for args in ((["--model", str(tmp_path / "best"), "-o", str(tmp_path / "best.json")]),
                 (["--model", str(tmp_path / "best.safetensors"), "-o", str(tmp_path / "best.json")]),
                 (["--model", str(tmp_path / "best"), "--aoi", str(tmp_path / "aoi.geojson"), "-o",
                   str(tmp_path / "aoi.geojson")])):
        res = CliRunner().invoke(main, ["detect", str(scene), *args, "--overwrite"])
        assert res.exit_code == 1 and "this output is the input" in res.output, (args, res.output)
    assert kept == {p: _digest(p) for p in kept}


def test_outputs_apart_sees_links_and_nested_inputs(tmp_path):
    from lsmap.errors import InputError
    from lsmap.io.outputs import check_outputs_apart, input_paths

    band = tmp_path / "B04.tif"
    band.write_bytes(b"x")
    (tmp_path / "link.tif").symlink_to(band)
    inputs = input_paths({"s2": [str(band)], "dem": None}, "https://example.com/item.json", object())
    assert inputs == [band]
    with pytest.raises(InputError, match="link.tif: this output is the input"):
        check_outputs_apart([None, tmp_path / "link.tif"], inputs)
    check_outputs_apart([tmp_path / "new.tif"], inputs)  # not there yet: nothing to replace
    check_outputs_apart([band], [])
