"""Model registry, checkpoints (safetensors + card, never unpickled), domain BN, ensemble prediction."""

import json
import re

import pytest
import torch

from lsmap.core.bands import get_profile
from lsmap.core.normalize import BandStats
from lsmap.errors import CheckpointError, InputError, MissingInputError
from lsmap.learn.domain_bn import SOURCE, TARGET, DomainBatchNorm2d, convert_domain_bn, set_domain
from lsmap.learn.ensemble import Member, load_ensemble, predict_proba
from lsmap.learn.models import ModelCard, build_model, load_checkpoint, read_card, save_checkpoint


def _card(profile="rgbn", model="tiny-unet", **kw):
    p = get_profile(profile)
    stats = BandStats((1.0,) * p.count, (0.5,) * p.count, 100, p.bands).to_dict()
    return ModelCard(model, p.to_dict(), stats, **kw)


def test_unknown_model_lists_valid_names():
    with pytest.raises(InputError, match="unet-resnet34"):
        build_model("unet-resnet1000", 14)


@pytest.mark.parametrize("name", ["tiny-unet", "unet-resnet18", "segformer-mit_b0"])
def test_registry_models_take_any_band_count(name):
    m = build_model(name, 5).eval()
    with torch.no_grad():
        assert m(torch.zeros(1, 5, 64, 64)).shape == (1, 2, 64, 64)


def test_checkpoint_roundtrip_without_pickle(tmp_path):
    m = build_model("tiny-unet", 4)
    save_checkpoint(tmp_path / "best", m, _card(scale=2.5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.safetensors"]
    card = json.loads((tmp_path / "best.json").read_text())
    assert card["scale"] == 2.5 and card["bands"] == ["B4", "B3", "B2", "B8"] and card["lsmap_version"]
    m2, card2 = load_checkpoint(tmp_path / "best.safetensors")
    for (k, v), v2 in zip(m.state_dict().items(), m2.state_dict().values(), strict=False):
        assert torch.equal(v, v2), k
    # the card embedded in the weights file is enough on its own
    (tmp_path / "best.json").unlink()
    assert read_card(tmp_path / "best").scale == 2.5


@pytest.mark.parametrize("name", ["tiny-unet", "unet-resnet18", "unet-efficientnet-b0", "segformer-mit_b0",
                                  "deeplabv3plus-resnet34"])
def test_loaded_models_give_the_saved_models_logits(tmp_path, name):
    # load_checkpoint builds the model without initialising it (meta device) and takes the file's tensors
    torch.manual_seed(3)
    m = build_model(name, 4).eval()
    save_checkpoint(tmp_path / "m", m, _card(model=name))
    loaded, _ = load_checkpoint(tmp_path / "m")
    assert not loaded.training
    tensors = [*loaded.parameters(), *loaded.buffers()]
    assert tensors and not any(t.is_meta for t in tensors)
    assert all(p.requires_grad for p in loaded.parameters())  # trainable again (refine, fine-tuning)
    x = torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))


def test_loaded_weights_take_the_models_dtype(tmp_path):
    m = build_model("tiny-unet", 4).eval()
    save_checkpoint(tmp_path / "m", m.half(), _card())  # weights stored as float16
    loaded, _ = load_checkpoint(tmp_path / "m")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    for k, v in m.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v.float() if v.is_floating_point() else v), k


def test_a_model_with_a_tensor_outside_its_state_is_loaded_the_usual_way(tmp_path, monkeypatch):
    import lsmap.learn.models as models

    m = build_model("tiny-unet", 4).eval()
    save_checkpoint(tmp_path / "m", m, _card())
    real = models.build_model

    def with_private_buffer(name, in_channels, **kw):
        module = real(name, in_channels, **kw)
        module.register_buffer("table", torch.arange(3.0), persistent=False)  # not in the checkpoint
        return module

    monkeypatch.setattr(models, "build_model", with_private_buffer)
    loaded, _ = load_checkpoint(tmp_path / "m")
    assert torch.equal(loaded.table, torch.arange(3.0))
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    x = torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))


def test_weights_that_do_not_fit_are_a_checkpoint_error(tmp_path):
    save_checkpoint(tmp_path / "m", build_model("tiny-unet", 5), _card())  # the card says 4 bands
    with pytest.raises(CheckpointError, match=r"m.safetensors: weights do not fit model 'tiny-unet'"):
        load_checkpoint(tmp_path / "m")


def test_old_cards_with_a_profile_dict_still_load(tmp_path):
    save_checkpoint(tmp_path / "m", build_model("tiny-unet", 4), _card())
    card = json.loads((tmp_path / "m.json").read_text())
    card["bands"] = get_profile("rgbn").to_dict()  # how cards stored bands before band names
    (tmp_path / "m.json").write_text(json.dumps(card))
    _, loaded = load_checkpoint(tmp_path / "m")
    assert loaded.bands == ["B4", "B3", "B2", "B8"] and loaded.profile.name == "rgbn"


def test_checkpoint_refuses_other_band_profile(tmp_path):
    save_checkpoint(tmp_path / "m", build_model("tiny-unet", 4), _card())
    with pytest.raises(CheckpointError, match=r"'rgbn'.*'l4s14'"):
        load_checkpoint(tmp_path / "m", expect="l4s14")


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(MissingInputError, match="nope"):
        load_checkpoint(tmp_path / "nope")
    save_checkpoint(tmp_path / "m", build_model("tiny-unet", 4), _card())
    (tmp_path / "m.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="m.safetensors"):
        load_checkpoint(tmp_path / "m")


def test_domain_bn_keeps_separate_statistics():
    m = convert_domain_bn(torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3)))
    bn = m[1]
    assert isinstance(bn, DomainBatchNorm2d)
    m.train()
    set_domain(m, SOURCE)
    m(torch.randn(4, 2, 8, 8))
    src = bn.running_mean[SOURCE].clone()
    assert torch.equal(bn.running_mean[TARGET], torch.zeros(3)), "target stats untouched by source batches"
    set_domain(m, TARGET)
    m(torch.randn(4, 2, 8, 8) + 5)
    assert torch.equal(bn.running_mean[SOURCE], src)
    assert not torch.equal(bn.running_mean[TARGET], torch.zeros(3))


class _Band0(torch.nn.Module):
    """Logits (0, x0): the landslide probability is sigmoid of normalised band 0."""

    def forward(self, x):
        return torch.stack([torch.zeros_like(x[:, 0]), x[:, 0]], 1)


def test_predict_normalises_scales_and_averages():
    # a smooth image: bilinear up- then down-sampling (scale promotion) is near-identity on it
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 36), indexing="ij")
    x = torch.stack([yy + xx, yy, xx, yy * xx]).expand(2, 4, 40, 36) * 1.5
    card = _card(scale=2.5)
    (p,) = [predict_proba([Member(_Band0(), card)], x, amp=False)]
    expected = torch.sigmoid((x[:, 0] - 1.0) / 0.5)
    assert p.shape == (2, 40, 36)
    torch.testing.assert_close(p, expected, atol=5e-3, rtol=0)
    target = BandStats((2.0,) * 4, (1.0,) * 4, 1)
    p2 = predict_proba([Member(_Band0(), _card())], x, stats=target, amp=False)
    torch.testing.assert_close(p2, torch.sigmoid(x[:, 0] - 2.0))
    ens = predict_proba([Member(_Band0(), _card()), Member(_Band0(), _card())], x, stats=target, tta=True, amp=False)
    torch.testing.assert_close(ens, p2)


def test_load_ensemble_needs_a_model():
    with pytest.raises(CheckpointError, match="`models`"):
        load_ensemble([])


def test_info_prints_the_card(tmp_path):
    from click.testing import CliRunner

    from lsmap.cli import main

    save_checkpoint(tmp_path / "m", build_model("tiny-unet", 4),
                    _card(metrics={"f1": 0.5}, data="15 patches", trained_on={"/d/img": ["0", "3"]},
                          adapted_on={"/t/img": ["1", "2", "5"]}, trained_digests=["0123456789abcdef"] * 2))
    res = CliRunner().invoke(main, ["info", str(tmp_path / "m.safetensors")])
    assert res.exit_code == 0, res.output
    assert "tiny-unet" in res.output and "rgbn: B4, B3, B2, B8" in res.output and "0.5000" in res.output
    assert "trained on           2 patches of /d/img" in res.output
    assert "adapted on           3 patches of /t/img (images, no labels)" in res.output
    assert "content digests      2 trained on, 0 adapted on (their copies are recognised too)" in res.output
    save_checkpoint(tmp_path / "t", build_model("tiny-unet", 4), _card(train={
        "norm": "model", "loss": "lovasz+ohem", "steps": 200, "batch_size": 16, "lr": None, "seed": 3,
        "effective": {"lr": 0.0005}}))
    res = CliRunner().invoke(main, ["info", str(tmp_path / "t.safetensors")])
    assert "training             norm model, loss lovasz+ohem, steps 200, batch 16, lr 0.0005, seed 3" in res.output
    res = CliRunner().invoke(main, ["info", str(tmp_path / "m"), "--json"])
    assert json.loads(res.output)["data"] == "15 patches"
    res = CliRunner().invoke(main, ["info", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "missing.safetensors" in res.output


def test_version():
    from click.testing import CliRunner

    from lsmap import __version__
    from lsmap.cli import main

    res = CliRunner().invoke(main, ["--version"])
    assert res.exit_code == 0 and __version__ in res.output


def test_info_lists_the_shipped_defaults():
    from click.testing import CliRunner

    from lsmap.cli import main
    from lsmap.learn.models import DEFAULT_MODELS, shipped_defaults

    res = CliRunner().invoke(main, ["info"])
    assert res.exit_code == 0, res.output
    assert "shipped default models" in res.output
    for p in shipped_defaults():
        assert p.stem in res.output and p.stem in DEFAULT_MODELS
    assert re.search(r"l4s14-default +14 bands: B1,B2,B3,B4,B5,B6,B7,B8,B9,B10,B11,B12,slope,DEM", res.output)
    assert re.search(r"l2a-terrain-default +13 bands: B1,B2,B3,B4,B5,B6,B7,B8,B9,B11,B12,slope,DEM", res.output)


def test_default_model_is_chosen_from_the_scene_bands(tmp_path, monkeypatch):
    """The first shipped model whose bands the scene has; a clear error when none fits."""
    import lsmap.learn.models as models

    for name, bands in (("l4s14-default", "l4s14"), ("l2a-terrain-default", "l2a-terrain"), ("l2a-default", "l2a")):
        p = get_profile(bands)
        save_checkpoint(tmp_path / name, build_model("tiny-unet", p.count), ModelCard("tiny-unet", list(p.bands)))
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    l4s = get_profile("l4s14").bands
    assert models.default_model_for(l4s).stem == "l4s14-default"
    assert models.default_model_for([b for b in l4s if b != "B10"]).stem == "l2a-terrain-default"
    assert models.default_model_for(get_profile("l2a").bands[::-1]).stem == "l2a-default", "order does not matter"
    with pytest.raises(CheckpointError, match=r"s\.tif: no shipped model fits its bands \(B4, B3, B2, B8\).*"
                                              r"l2a-default lacks B1, B5"):
        models.default_model_for(["B4", "B3", "B2", "B8"], "s.tif")


@pytest.mark.parametrize("args", [["detect", "scene.tif", "-o", "x.gpkg", "--model", ""],
                                  ["evaluate", "", "--data", "patches"]])
def test_empty_model_path_is_one_line(tmp_path, monkeypatch, rng, args):
    """--model '' and 'evaluate ""' were Path('.'): a "PosixPath('.') has an empty name" ValueError traceback."""
    from click.testing import CliRunner
    from detect_fixtures import smooth_scene, write_scene
    from patchgen import make_patches

    from lsmap.cli import main
    from lsmap.errors import CheckpointError
    from lsmap.learn.models import check_checkpoint_name

    write_scene(tmp_path / "scene.tif", smooth_scene(rng, h=32, w=32))
    make_patches(tmp_path / "patches", 2, size=16)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "empty path" in res.output and len(res.output.strip().splitlines()) == 1, res.output
    with pytest.raises(CheckpointError, match="`model` is an empty path"):
        check_checkpoint_name("")
    with pytest.raises(CheckpointError, match="is a folder"):
        check_checkpoint_name("/")


def test_info_on_a_training_run_folder_shows_its_best_checkpoint(tmp_path):
    """'lsmap info RUN_DIR' read the run folder as a band folder: "no Sentinel-2 band file in this folder"."""
    from click.testing import CliRunner
    from detect_fixtures import tiny_checkpoint

    from lsmap.cli import main

    run = tmp_path / "run"
    run.mkdir()
    tiny_checkpoint(run / "best.safetensors")
    tiny_checkpoint(run / "last.safetensors", seed=1)
    (run / "log.csv").write_text("step,f1\n")
    res = CliRunner().invoke(main, ["info", str(run)])
    assert res.exit_code == 0, res.output
    assert f"{run}: a training run folder" in res.output and str(run / "best.safetensors") in res.output
    assert "tiny-unet" in res.output and "band file" not in res.output
    res = CliRunner().invoke(main, ["info", str(run), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["path"] == str(run / "best.safetensors")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_info_refuses_a_checkpoint_whose_weights_are_damaged(tmp_path, damage):
    """`lsmap info` showed the card of a garbage or truncated weights file as if it were sound; detect and evaluate
    refused the same file (the re-audit)."""
    from click.testing import CliRunner

    from lsmap.cli import main

    save_checkpoint(tmp_path / "m", build_model("tiny-unet", 4), _card())
    weights = tmp_path / "m.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"garbage" if damage == "garbage" else data[: len(data) // 2])
    for args in (["info", str(weights)], ["info", str(weights), "--json"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1 and "m.safetensors: cannot read weights" in res.output, res.output
        assert "Traceback" not in res.output
