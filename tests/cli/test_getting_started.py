"""A new user's path: validation held out of the training data, shipped models by name, published
encoder weights, ``python -m lsmap``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from patchgen import make_patches

from lsmap.cli import main
from lsmap.data.dataset import hold_out
from lsmap.errors import InputError, MissingInputError
from lsmap.io.patches import find_patches
from lsmap.learn.models import (
    DEFAULT_ALIAS,
    MODELS,
    build_model,
    default_model_path,
    read_card,
    resolve_model,
    shipped_models,
)
from lsmap.learn.train import VAL_FRACTION, TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]
FAST = dict(model="tiny-unet", batch_size=4, scale=1.0, steps=4, val_every=2, amp=False, device="cpu")


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    return make_patches(tmp_path_factory.mktemp("gs") / "train", 10, seed=1)


def test_without_val_a_seeded_fraction_is_held_out_and_named(patches, tmp_path):
    a = train(tmp_path / "a", train_dir=patches, config=TrainConfig(**FAST), progress=False)
    assert a.validation == "held out" and len(a.held_out) == round(VAL_FRACTION * 10) == 2
    found = find_patches(patches)
    for seed in range(5):  # the split is a pure function of the patches, fraction and seed
        assert hold_out(found, 0.2, seed) == hold_out(found, 0.2, seed)
    assert [p.id for p in hold_out(found, VAL_FRACTION, 0)[1]] == a.held_out
    assert len({tuple(p.id for p in hold_out(found, 0.2, s)[1]) for s in range(5)}) > 1, "seeds differ"
    assert a.best_path is not None and a.best_metrics["split"] == "validation"
    card = read_card(a.best_path)
    assert f"ids {', '.join(a.held_out)}" in card.data and "train 8 patches" in card.data
    assert card.train["val_fraction"] is None


def test_val_none_trains_without_validation(patches, tmp_path):
    res = CliRunner().invoke(main, ["train", "--train", str(patches), "--val", "none", "--model", "tiny-unet",
                                    "--scale", "1", "--steps", "2", "--val-every", "2", "--batch-size", "4",
                                    "--device", "cpu", "--no-amp", "-o", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert "validation: none" in res.output and "best:" not in res.output
    assert not (tmp_path / "r" / "best.safetensors").exists() and (tmp_path / "r" / "last.safetensors").exists()
    assert "no validation" in read_card(tmp_path / "r" / "last").data


def test_cli_names_the_held_out_ids_and_takes_the_train_test_layout(patches, tmp_path):
    root = tmp_path / "l4s"  # the layout of the real patches beside the project: train/ and test/ with img/
    root.mkdir()
    (root / "train").symlink_to(patches)
    make_patches(root / "test", 2, seed=4, masks=False)
    res = CliRunner().invoke(main, ["train", "--data", str(root), "--val-fraction", "0.3", "--model", "tiny-unet",
                                    "--scale", "1", "--steps", "2", "--val-every", "2", "--batch-size", "4",
                                    "--device", "cpu", "--no-amp", "-o", str(tmp_path / "r"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    assert out["validation"] == "held out" and len(out["held_out"]) == 3
    # --val DIR and --val-fraction together: refused before any work
    res = CliRunner().invoke(main, ["train", "--train", str(patches), "--val", str(patches), "--val-fraction", "0.2",
                                    "-o", str(tmp_path / "x")])
    assert res.exit_code == 1 and "not both" in res.output and not (tmp_path / "x").exists()


def test_shipped_models_have_short_names():
    shipped = shipped_models()
    assert shipped[DEFAULT_ALIAS] == default_model_path()
    for name, path in shipped.items():  # every file in lsmap/weights/ by its name
        assert resolve_model(name) == path
        assert read_card(name).profile.count > 0
    with pytest.raises(MissingInputError, match=r"shipped models: default, l2a-default, l2a-terrain-default, l4s14-default"):
        resolve_model("no-such-model")


def test_info_prints_the_path_and_evaluate_defaults_to_the_default_model():
    runner = CliRunner()
    res = runner.invoke(main, ["info"])
    assert res.exit_code == 0 and res.output.splitlines()[0].split() == ["path", str(default_model_path())]
    res = runner.invoke(main, ["info", "default", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["path"] == str(default_model_path())
    res = runner.invoke(main, ["evaluate", "--data", str(ROOT / "sample_data" / "patches"), "--device", "cpu",
                               "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["models"] == [str(default_model_path())] and out["patches"] == 8 and out["split"] is None
    res = runner.invoke(main, ["evaluate", "default", "--data", str(ROOT / "sample_data" / "patches"),
                               "--device", "cpu"])
    assert res.exit_code == 0 and "[validation]" not in res.output, "a flat folder has no split"


def _fake_hub_cache(cache: Path, encoder: str) -> dict:
    """Put a published-weights file for ``encoder`` into a Hugging Face cache (as hf_hub_download would)."""
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders, get_encoder

    settings = encoders[encoder]["pretrained_settings"]["imagenet"]
    torch.manual_seed(7)
    state = {k: v.contiguous() for k, v in get_encoder(encoder, in_channels=3, weights=None).state_dict().items()}
    snap = cache / f"models--{settings['repo_id'].replace('/', '--')}" / "snapshots" / settings["revision"]
    snap.mkdir(parents=True)
    save_file(state, str(snap / "model.safetensors"))
    return state


def test_published_encoder_weights_load_from_the_cache_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    state = _fake_hub_cache(tmp_path / "hub", "resnet18")
    module = build_model("unet-resnet18", 14, encoder_weights="imagenet")
    own = module.encoder.state_dict()
    torch.testing.assert_close(own["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    rgb = state["conv1.weight"]  # the 3-band stem cycled over 14 bands, scaled by 3/14 (as smp does)
    assert own["conv1.weight"].shape[1] == 14
    torch.testing.assert_close(own["conv1.weight"][:, 5], rgb[:, 5 % 3] * 3 / 14)


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable"])
def test_published_encoder_weights_offline_fail_fast_naming_the_fix(tmp_path, monkeypatch, how):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    else:  # network on, but nothing answers: a refused port on the loopback
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
        for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(var, raising=False)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"--encoder-weights FILE") as e:
        build_model("unet-resnet18", 14, encoder_weights="imagenet")
    assert time.perf_counter() - t0 < 15
    assert "smp-hub/resnet18.imagenet" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="no published encoder"):
        build_model("tiny-unet", 14, encoder_weights="imagenet")


def test_every_registered_encoder_has_published_weights():
    from segmentation_models_pytorch.encoders import encoders

    for spec in MODELS.values():
        if spec.encoder is not None:
            assert "imagenet" in encoders[spec.encoder]["pretrained_settings"], spec.name


def test_python_dash_m_lsmap():
    res = subprocess.run([sys.executable, "-m", "lsmap", "--help"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert res.returncode == 0 and "download" in res.stdout and "detect" in res.stdout


def test_info_on_a_missing_raster_or_a_file_of_another_kind_says_what_it_reads(tmp_path):
    # found by the real-data audit: `lsmap info model.txt` said "model.txt.safetensors: checkpoint does not exist"
    from lsmap.cli import main

    (tmp_path / "notes.txt").write_text("hi\n")
    res = CliRunner().invoke(main, ["info", str(tmp_path / "notes.txt")])
    assert res.exit_code == 1 and "notes.txt: not a scene, product or lsmap checkpoint" in res.output
    assert ".safetensors: checkpoint does not exist" not in res.output
    res = CliRunner().invoke(main, ["info", str(tmp_path / "scene.tif")])
    assert res.exit_code == 1 and "scene.tif: no such file" in res.output and "Traceback" not in res.output
