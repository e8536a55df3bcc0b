"""Dense-CRF post-processing in ``lsmap evaluate`` and ``lsmap detect`` (the ``crf`` extra)."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from detect_fixtures import Band0Model, blurry_checkpoint, member, smooth_scene, write_scene
from patchgen import make_patches

import lsmap
import lsmap.learn.crf
from lsmap.cli import main
from lsmap.learn.evaluate import evaluate

needs_crf = pytest.mark.skipif(not lsmap.learn.crf.available(), reason="needs the crf extra (pydensecrf2)")


PIX = ("tp", "fp", "fn")


@pytest.fixture(scope="module")
def blurry(tmp_path_factory):
    root = tmp_path_factory.mktemp("crf")
    data = make_patches(root / "val", 4, size=64, seed=2)
    return data, blurry_checkpoint(root / "blur")


@needs_crf
def test_evaluate_crf_sharpens_blurred_edges(blurry):
    data, ckpt = blurry
    res = {(thr, crf): evaluate([ckpt], data, norm="model", device="cpu", threshold=thr, crf=crf)
           for thr in (0.2, 0.5, 0.8) for crf in (False, True)}
    plain, sharp = res[0.5, False], res[0.5, True]
    assert sharp.crf is True and plain.crf is False and sharp.patches == plain.patches == 4
    assert [sharp.pixel[k] for k in PIX] != [plain.pixel[k] for k in PIX]  # the CRF changed the probabilities
    assert sharp.pixel["tp"] + sharp.pixel["fn"] == plain.pixel["tp"] + plain.pixel["fn"]  # same ground truth
    assert sharp.pixel["f1"] >= plain.pixel["f1"] - 0.02
    # a blurred edge moves with the threshold (dilated at 0.2, eroded at 0.8); a sharpened one barely does
    for thr in (0.2, 0.8):
        assert res[thr, False].pixel["f1"] < plain.pixel["f1"] - 0.1
        assert res[thr, True].pixel["f1"] > res[thr, False].pixel["f1"] + 0.1
        assert abs(res[thr, True].pixel["f1"] - sharp.pixel["f1"]) < 0.02


@needs_crf
def test_cli_evaluate_crf_json(blurry):
    data, ckpt = blurry
    res = CliRunner().invoke(main, ["evaluate", str(ckpt), "--data", str(data), "--norm", "model", "--device", "cpu",
                                    "--crf", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["crf"] is True and 0.9 < out["pixel"]["f1"] <= 1
    res = CliRunner().invoke(main, ["evaluate", str(ckpt), "--data", str(data), "--norm", "model", "--device", "cpu",
                                    "--crf"])
    assert res.exit_code == 0 and ", CRF" in res.output


def _blob_scene(rng, h=160, w=200):
    """Band 0 is 2.0 on two blobs (one across window borders) and 0.5 elsewhere; the colour bands follow it."""
    data = smooth_scene(rng, h=h, w=w)
    yy, xx = np.mgrid[:h, :w]
    blobs = ((yy - 48) ** 2 + (xx - 48) ** 2 < 25**2) | ((yy >= 100) & (yy < 130) & (xx >= 120) & (xx < 180))
    data[0] = np.where(blobs, 2.0, 0.5)
    for b in (1, 2, 3):  # B2, B3, B4 (the CRF's colours) brighter on the blobs too
        data[b] += 0.5 * blobs
    return data, blobs


@needs_crf
def test_detect_with_crf_writes_a_valid_layer_that_differs(tmp_path, rng):
    data, blobs = _blob_scene(rng)
    data[:, 140:, :20] = -9999.0  # a nodata corner stays nodata
    scene = write_scene(tmp_path / "scene.tif", data, nodata=-9999.0)
    # probability sigmoid((b0 - 1) / 0.5): 0.88 on blobs, 0.27 off
    m = member(Band0Model(), mean=1.0, std=0.5)
    kw = dict(norm="model", window=64, overlap=16, device="cpu")
    plain = lsmap.detect(scene, [m], out=tmp_path / "plain.gpkg", prob=tmp_path / "plain.tif", **kw)
    sharp = lsmap.detect(scene, [m], out=tmp_path / "crf.gpkg", prob=tmp_path / "crf.tif", crf=True, **kw)
    assert sharp.attrs["lsmap"]["crf"] is True and plain.attrs["lsmap"]["crf"] is False
    assert "crf" in sharp.attrs["lsmap"]["timings"] and "crf" not in plain.attrs["lsmap"]["timings"]
    back = gpd.read_file(tmp_path / "crf.gpkg")
    assert back.crs == "EPSG:32645" and len(back) == len(sharp) == 2 and back.is_valid.all()
    assert back["max_prob"].le(1).all() and back["mean_prob"].gt(sharp.attrs["lsmap"]["threshold"]).all()
    # the polygons still cover the blobs
    inter = back.geometry.union_all().intersection(gpd.read_file(tmp_path / "plain.gpkg").geometry.union_all())
    assert inter.area > 0.9 * blobs.sum() * 100.0
    with rasterio.open(tmp_path / "plain.tif") as a, rasterio.open(tmp_path / "crf.tif") as b:
        qa, qb = a.read(1), b.read(1)
    assert (qa[140:, :20] == 255).all() and (qb[140:, :20] == 255).all()
    valid = qa != 255
    assert (qb[valid] != 255).all() and (qa != qb).mean() > 0.5
    # sharper: background further from the threshold, landslides closer to 1
    assert qb[valid & ~blobs].mean() < qa[valid & ~blobs].mean() and qb[blobs].mean() > qa[blobs].mean()


def test_missing_crf_extra_is_a_one_line_error_and_writes_nothing(tmp_path, rng, monkeypatch, blurry):
    monkeypatch.setattr(lsmap.learn.crf, "available", lambda: False)
    data, ckpt = blurry
    scene = write_scene(tmp_path / "scene.tif", smooth_scene(rng, h=64, w=64))
    runner = CliRunner()
    cases = [
        ["evaluate", str(ckpt), "--data", str(data), "--device", "cpu", "--crf"],
        ["detect", str(scene), "-o", str(tmp_path / "slides.gpkg"), "--model", str(ckpt), "--prob",
         str(tmp_path / "p.tif"), "--device", "cpu", "--crf"],
        ["detect", str(scene), str(scene), "-o", str(tmp_path / "event") + "/", "--model", str(ckpt), "--crf"],
    ]
    for args in cases:
        res = runner.invoke(main, args)
        assert res.exit_code == 1, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "pip install 'lsmap[crf]'" in lines[0]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]
    with pytest.raises(lsmap.errors.InputError, match=r"lsmap\[crf\]"):
        evaluate([ckpt], data, device="cpu", crf=True)


@needs_crf
def test_detect_many_passes_crf_and_keys_scenes_on_it(tmp_path, rng, blurry):
    _, ckpt = blurry
    data, _ = _blob_scene(rng, h=64, w=96)
    scenes = [str(write_scene(tmp_path / f"s{i}.tif", data)) for i in range(2)]
    out = tmp_path / "event"
    args = ["detect", *scenes, "-o", str(out) + "/", "--model", str(ckpt), "--device", "cpu", "--window", "64",
            "--overlap", "16", "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "crf" not in json.loads((out / "s0.done.json").read_text())["params"]  # off: earlier markers stay valid
    res = CliRunner().invoke(main, [*args, "--crf"])
    assert res.exit_code == 1 and "detected with other options (--crf default -> True)" in res.output  # names it
    res = CliRunner().invoke(main, [*args, "--crf", "--overwrite"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["skipped"] == []  # a different setting redoes the scenes
    assert json.loads((out / "s0.done.json").read_text())["params"]["crf"] is True
