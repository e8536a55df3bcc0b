"""Full and read-only disks, for real: a small tmpfs is mounted per test (issue 14, 2 and 3).

Runs only as root where mounting works (CI here runs as root); skipped otherwise. Inputs are
written outside the tmpfs, outputs into it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lsmap.cli import main
from tests._rasters import write_tif


def _mount(path: Path, size: str = "2m", *options: str) -> None:
    opts = ",".join((f"size={size}", *options))
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()})")


def _mounted(tmp_path: Path, name: str, *options: str):
    """A 2 MB tmpfs at ``tmp_path/name`` (skipped without root), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / name
    mnt.mkdir()
    _mount(mnt, "2m", *options)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def tmpfs(tmp_path):
    yield from _mounted(tmp_path, "mnt")


@pytest.fixture
def readonly(tmp_path):
    yield from _mounted(tmp_path, "ro", "ro")


@pytest.fixture
def s2(tmp_path, rng):
    folder = tmp_path / "s2"
    folder.mkdir()
    for n in ("B02", "B03", "B04", "B08"):
        write_tif(folder / f"{n}.tif", rng.integers(100, 30000, (512, 512)).astype(np.uint16), nodata=0)
    return folder


def _one_line_failure(res, *needles):
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    for n in needles:
        assert n in res.output, res.output


def test_stack_on_a_full_disk_fails_and_leaves_nothing(tmpfs, s2):
    out = tmpfs / "stack.tif"
    res = CliRunner().invoke(main, ["stack", str(s2), "--bands", "rgbn", "-o", str(out)])
    _one_line_failure(res, "no space left on", str(tmpfs), str(out))
    assert list(tmpfs.iterdir()) == []


def test_tile_stats_detect_on_a_full_disk_give_one_line(tmpfs, tmp_path, rng):
    from tests.detect_fixtures import smooth_scene, tiny_checkpoint, write_scene

    scene = write_scene(tmp_path / "scene.tif", smooth_scene(rng, h=200, w=200))
    model = tiny_checkpoint(tmp_path / "m")
    runner = CliRunner()
    res = runner.invoke(main, ["tile", str(scene), "-o", str(tmpfs / "patches"), "--size", "32"])
    _one_line_failure(res, "no space left on", str(tmpfs / "patches"))
    (tmpfs / "filler").write_bytes(b"\0" * (2 * 1024 * 1024 - 8192))  # fill the disk
    res = runner.invoke(main, ["stats", str(scene), "-o", str(tmpfs / "s.json")])
    _one_line_failure(res, "no space left on", str(tmpfs / "s.json"))
    res = runner.invoke(main, ["detect", str(scene), "-o", str(tmpfs / "o.gpkg"), "--model", str(model),
                               "--device", "cpu"])
    _one_line_failure(res, "no space left on")
    assert sorted(p.name for p in tmpfs.iterdir()) == ["filler"]


def test_train_on_a_full_disk_fails_before_training(tmpfs, tmp_path):
    from tests.patchgen import make_patches

    data = make_patches(tmp_path / "p", 2, size=16)
    (tmpfs / "filler").write_bytes(b"\0" * (2 * 1024 * 1024 - 8192))
    res = CliRunner().invoke(main, ["train", "--train", str(data), "--val", str(data), "--model", "tiny-unet",
                                    "--scale", "1", "--steps", "100000", "--device", "cpu", "-o", str(tmpfs / "run")])
    _one_line_failure(res, "no space left on")


@pytest.mark.parametrize("command", ["stack", "tile", "stats", "detect", "train"])
def test_read_only_disk_fails_at_once_for_every_command(readonly, tmp_path, rng, s2, command):
    from tests.detect_fixtures import smooth_scene, tiny_checkpoint, write_scene
    from tests.patchgen import make_patches

    scene = write_scene(tmp_path / "scene.tif", smooth_scene(rng, h=64, w=64))
    args = {
        "stack": ["stack", str(s2), "--bands", "rgbn", "-o", str(readonly / "s.tif")],
        "tile": ["tile", str(scene), "-o", str(readonly / "p"), "--size", "32"],
        "stats": ["stats", str(scene), "-o", str(readonly / "s.json")],
        "detect": ["detect", str(scene), "-o", str(readonly / "o.gpkg"), "--device", "cpu",
                   "--model", str(tiny_checkpoint(tmp_path / "m"))],
        "train": ["train", "--train", str(make_patches(tmp_path / "p", 2, size=16)), "--val", str(tmp_path / "p"),
                  "--model", "tiny-unet", "--scale", "1", "--steps", "100000", "--device", "cpu",
                  "-o", str(readonly / "run")],
    }[command]
    res = CliRunner().invoke(main, args)
    _one_line_failure(res, "Read-only file system")


def test_a_training_state_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    """torch's writer fails with 'unexpected pos' under a file-size limit or a quota: a 40-line traceback from
    lsmap train (found by the failure audit)."""
    import torch

    from lsmap.errors import OutputError
    from lsmap.learn.run_folder import save_state

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OutputError, match=r"last_state.pt: cannot write the training state \(.*unexpected pos"):
        save_state(tmp_path / "last_state.pt", {"step": 1})
    assert list(tmp_path.iterdir()) == []
