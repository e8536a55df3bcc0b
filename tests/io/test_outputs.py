"""Outputs that behave: umask modes, vector paths that are never folders, RFC 7946 GeoJSON,
one name for -o, a summary of every file written, plain training log lines off a terminal."""

from __future__ import annotations

import json
import os
import stat

import geopandas as gpd
import numpy as np
import pytest
from click.testing import CliRunner
from detect_fixtures import Band0Model, member, smooth_scene, tiny_checkpoint, write_scene
from patchgen import make_patches

import lsmap
from lsmap.cli import main
from lsmap.data.tile import tile_scene
from lsmap.learn.train import TrainConfig, log_line, train


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_get_the_umask_modes(tmp_path, rng, umask_027):
    scene = write_scene(tmp_path / "scene.tif", smooth_scene(rng, h=64, w=64))
    tile_scene(scene, tmp_path / "patches", size=32, progress=False)
    assert _mode(tmp_path / "patches") == 0o750, "not the 0700 of a temporary folder"
    assert _mode(tmp_path / "patches" / "img" / "image_1.h5") == 0o640
    weights = tiny_checkpoint(tmp_path / "model")
    assert _mode(weights) == 0o640, "not the 0600 safetensors writes"
    assert _mode(tmp_path / "model.json") == 0o640


def test_vector_named_output_with_several_scenes_is_refused(tmp_path, rng):
    a = write_scene(tmp_path / "a.tif", smooth_scene(rng, h=32, w=32))
    b = write_scene(tmp_path / "b.tif", smooth_scene(rng, h=32, w=32))
    res = CliRunner().invoke(main, ["detect", str(a), str(b), "-o", str(tmp_path / "out" / "slides.gpkg")])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1
    assert "slides.gpkg" in res.output and "folder" in res.output
    assert not (tmp_path / "out").exists(), "nothing created"


def test_geojson_is_rfc7946_wgs84_with_areas_in_metres(tmp_path, rng):
    data = smooth_scene(rng, h=96, w=96)
    data[0] = 0.5
    data[0, 20:40, 30:60] = 2.0  # one 20 x 30 px landslide: 60 000 m2
    scene = write_scene(tmp_path / "scene.tif", data)
    m = member(Band0Model(), mean=1.0, std=0.5)
    kw = dict(norm="model", window=64, overlap=16, device="cpu")
    lsmap.detect(scene, [m], out=tmp_path / "slides.geojson", **kw)
    lsmap.detect(scene, [m], out=tmp_path / "slides.gpkg", **kw)
    doc = json.loads((tmp_path / "slides.geojson").read_text())
    assert "crs" not in doc, "RFC 7946 has no crs member"
    lon, lat = np.array(doc["features"][0]["geometry"]["coordinates"][0]).T
    assert (80 < lon).all() and (lon < 90).all() and (20 < lat).all() and (lat < 30).all()  # UTM 45N, lon/lat
    gj, gp = gpd.read_file(tmp_path / "slides.geojson"), gpd.read_file(tmp_path / "slides.gpkg")
    assert gj.crs == "EPSG:4326" and gp.crs == "EPSG:32645", "GeoPackage keeps the scene CRS"
    assert gj["area_m2"].tolist() == gp["area_m2"].tolist() == [60000.0]
    assert gj.to_crs(gp.crs).geometry.iloc[0].area == pytest.approx(60000.0, rel=1e-4)


def test_detect_output_names_and_summary(tmp_path, rng):
    scene = write_scene(tmp_path / "scene.tif", smooth_scene(rng, h=64, w=64))
    model = tiny_checkpoint(tmp_path / "m")
    runner = CliRunner()
    for flag in ("-o", "--output", "--out"):  # --output is the name everywhere; --out stays as an alias
        out = tmp_path / f"slides{flag.strip('-')}.shp"
        res = runner.invoke(main, ["detect", str(scene), flag, str(out), "--model", str(model), "--device", "cpu",
                                   "--window", "32", "--overlap", "8", "--prob", str(tmp_path / f"p{flag}.tif")])
        assert res.exit_code == 0, res.output
        wrote = res.output.strip().splitlines()[-1]
        assert wrote.startswith("wrote: ")
        files = wrote.removeprefix("wrote: ").split(", ")
        assert set(files) == {str(out), str(tmp_path / f"p{flag}.tif"),
                              *(str(out.with_suffix(s)) for s in (".shx", ".dbf", ".prj", ".cpg"))}
        assert all(os.path.exists(f) for f in files)
    assert "-o, --output, --out" in runner.invoke(main, ["detect", "--help"]).output


def test_train_off_a_terminal_prints_a_line_per_validation(tmp_path, capsys):
    make_patches(tmp_path / "p", 6, seed=1)
    cfg = TrainConfig(model="tiny-unet", batch_size=4, scale=1.0, steps=4, val_every=2, amp=False, device="cpu")
    train(tmp_path / "q", train_dir=tmp_path / "p", config=cfg, progress=False)  # a quiet script (the API audit)
    assert "step " not in capsys.readouterr().err
    train(tmp_path / "r", train_dir=tmp_path / "p", config=cfg)  # progress=None: capsys is no terminal
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("step ")]
    assert [ln.split()[1] for ln in lines] == ["2/4", "4/4"]
    for ln in lines:
        words = ln.split()
        assert words[2] == "loss" and words[4] == "F1" and words[7] == "images/s" and words[8] == "ETA"
        float(words[3]), float(words[5]), float(words[6])
    assert lines[-1].endswith("ETA 0s")
    assert log_line({"step": 5, "loss": 1.0, "images_per_s": 2.0}, 10, 4000) == \
        "step 5/10  loss 1.0000  F1 -  2.0 images/s  ETA 1h06m"


def test_a_failed_output_removes_the_folders_it_created_and_nothing_else(tmp_path):
    """``lsmap.detect(scene, out="newdir/x.gpkg", bands=...)`` failing on its bands left ``newdir/`` (API audit)."""
    from lsmap.io.outputs import atomic_output

    with pytest.raises(RuntimeError), atomic_output(tmp_path / "new" / "deeper" / "x.gpkg") as tmp:
        tmp.write_text("half")
        raise RuntimeError("the run failed")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "kept" / "new" / "x.gpkg"):
        (tmp_path / "kept" / "new" / "mine.txt").write_text("a file written meanwhile stays, and its folder")
        raise RuntimeError("the run failed")
    assert (tmp_path / "kept" / "new" / "mine.txt").exists()


def _one_line(res) -> str:
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    return res.output


@pytest.mark.parametrize("command", ["stack", "stats", "detect", "tile"])
def test_empty_output_path_asks_for_a_name(tmp_path, rng, monkeypatch, command):
    """-o '' was Path('.'): stack --overwrite ended in a RasterioIOError traceback, stats said '.: output exists;
    pass --overwrite' and then 'Is a directory', detect '.: unknown vector format'. Now: give an output name."""
    scene = write_scene(tmp_path / "scene.tif", smooth_scene(rng, h=32, w=32))
    make_patches(tmp_path / "patches", 2, size=16)
    source = str(tmp_path / ("patches" if command == "stats" else "scene.tif"))
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    for extra in ([], ["--overwrite"]) if command != "detect" else ([],):
        out = _one_line(CliRunner().invoke(main, [command, source, "-o", "", *extra]))
        assert "--output is empty; give an output" in out and "exists" not in out and ".:" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert scene.exists()


def test_folder_as_file_output_is_refused_before_overwrite_is_suggested(tmp_path, rng):
    """'-o st' naming a folder said 'output exists; pass --overwrite', and following that advice gave 'is a
    folder'. The folder is refused at once, with or without --overwrite, and kept."""
    source = str(write_scene(tmp_path / "scene.tif", smooth_scene(rng, h=32, w=32)))
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "mine.txt").write_text("kept")
    for extra in ([], ["--overwrite"]):
        out = _one_line(CliRunner().invoke(main, ["stack", source, "-o", str(tmp_path / "st"), *extra]))
        assert "is a folder; give a file name" in out and "--overwrite" not in out
    assert (tmp_path / "st" / "mine.txt").read_text() == "kept"


def test_library_outputs_refuse_an_empty_path_and_a_folder(tmp_path):
    from lsmap.errors import InputError, OutputError
    from lsmap.io.outputs import atomic_output, check_output

    with pytest.raises(InputError, match="output path is empty"):
        check_output("", True)
    with pytest.raises(InputError, match="output path is empty"):
        with atomic_output("", True):
            pass
    with pytest.raises(OutputError, match="is a folder; give a file name"):
        check_output(tmp_path, False)  # not 'output exists; pass `overwrite`', which cannot help
    with pytest.raises(InputError, match="`out_dir` is empty; give an output folder name"):
        train("", data=tmp_path / "none")  # '' trained into the working folder


@pytest.mark.parametrize("args", [["info", ""], ["detect", "", "-o", "x.gpkg"], ["stats", "", "-o", "x.json"],
                                  ["stack", "", "-o", "x.tif"], ["train", "--data", "", "-o", "run"]])
def test_empty_input_path_says_empty_not_dot(tmp_path, monkeypatch, args):
    """An empty input was '.': info said '.: raster is a folder', stats and stack read the working folder."""
    make_patches(tmp_path / "patches", 2, size=16)
    monkeypatch.chdir(tmp_path / "patches")  # '' read as '.' found these patches
    res = CliRunner().invoke(main, args)  # detect and stats refuse SCENE as click's usage error (exit 2)
    assert res.exit_code in (1, 2) and "Traceback" not in res.output, res.output
    assert "empty path" in res.output and ".:" not in res.output
    assert sorted(p.name for p in (tmp_path / "patches").iterdir()) == ["img", "mask"]


def test_a_detect_run_failing_after_its_checks_removes_the_output_folder_it_made(tmp_path, monkeypatch):
    """The review: detect made the output's folder before its temporary outputs, so a failure while predicting
    (or a Ctrl-C) left ``newdir/`` behind although the atomic outputs remove the folders they make."""
    import lsmap.map.detect as det

    scene = write_scene(tmp_path / "s.tif", smooth_scene(np.random.default_rng(0), h=48, w=48))
    model = tiny_checkpoint(tmp_path / "m")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(det, "predict_scene", interrupted)
    with pytest.raises(KeyboardInterrupt):
        det.detect(scene, [model], out=tmp_path / "newdir" / "sub" / "x.gpkg", device="cpu")
    assert not (tmp_path / "newdir").exists()


def test_a_mount_point_is_refused_as_a_folder_output_before_any_work(tmp_path, monkeypatch):
    """An empty mount point (docker -v out:/out) is now accepted as an empty folder, but the output folder is renamed
    into place at the end: EBUSY after all the work (the review). It is refused first, with a folder inside it."""
    from lsmap.errors import OutputError
    from lsmap.io.outputs import check_owned_dir

    (tmp_path / "mnt").mkdir()
    monkeypatch.setattr(os.path, "ismount", lambda p: str(p) == str(tmp_path / "mnt"))
    with pytest.raises(OutputError, match=r"mnt: is a mount point.*e\.g\. `out_dir` .*mnt/tile_out"):
        check_owned_dir(tmp_path / "mnt", False, "tile", ["**"])
    assert check_owned_dir(tmp_path / "mnt" / "new", False, "tile", ["**"]) == tmp_path / "mnt" / "new"
