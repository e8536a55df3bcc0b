"""``lsmap train`` and ``lsmap evaluate`` through Click."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from patchgen import make_patches

from lsmap.cli import main
from lsmap.learn.models import read_card


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    make_patches(root / "train", 8, seed=1)
    make_patches(root / "val", 4, seed=2)
    return root


def _train_args(data, out, *extra):
    return ["train", "--train", str(data / "train"), "--val", str(data / "val"), "--model", "tiny-unet",
            "--scale", "1", "--steps", "6", "--val-every", "3", "--batch-size", "4", "--device", "cpu",
            "-o", str(out), *extra]


def test_train_then_evaluate(data, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, _train_args(data, tmp_path / "run", "--loss", "ce+jaccard", "--optimizer", "sgd",
                                          "--no-augment", "--norm", "global", "--no-amp", "--seed", "3"))
    assert res.exit_code == 0, res.output
    assert "best: " in res.output and "on validation" in res.output
    card = read_card(tmp_path / "run" / "best")
    assert card.train["optimizer"] == "sgd" and card.train["loss"] == "ce+jaccard" and card.train["seed"] == 3
    assert card.train["norm"] == "model" and card.train["augment"] is False and card.train["amp"] is False

    res = runner.invoke(main, ["evaluate", str(tmp_path / "run" / "best.safetensors"), "--data", str(data / "val"),
                               "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["patches"] == 4 and out["norm"] == ["model"] and 0 <= out["pixel"]["f1"] <= 1
    assert out["pixel"]["tp"] + out["pixel"]["fn"] > 0 and "n_true" in out["objects"]

    res = runner.invoke(main, ["evaluate", str(tmp_path / "run" / "best"), str(tmp_path / "run" / "last"),
                               "--data", str(data / "val"), "--device", "cpu", "--tta", "--norm", "target"])
    assert res.exit_code == 0, res.output
    assert "2 model(s)" in res.output and "TTA" in res.output and "pixels" in res.output

    # existing run: refused without --overwrite, and nothing is touched
    before = (tmp_path / "run" / "best.safetensors").read_bytes()
    res = runner.invoke(main, _train_args(data, tmp_path / "run"))
    assert res.exit_code == 1 and "pass --overwrite" in res.output
    assert (tmp_path / "run" / "best.safetensors").read_bytes() == before
    # --resume keeps the run's settings (sgd, ce+jaccard, ...) and takes the options given again
    res = runner.invoke(main, _train_args(data, tmp_path / "run", "--resume", "--steps", "8"))
    assert res.exit_code == 0, res.output
    card = json.loads((tmp_path / "run" / "last.json").read_text())
    assert card["metrics"]["step"] == 8 and card["train"]["optimizer"] == "sgd" and card["train"]["steps"] == 8
    res = runner.invoke(main, _train_args(data, tmp_path / "run", "--resume", "--steps", "9", "--optimizer", "adamw"))
    assert res.exit_code == 1 and "cannot resume with other settings (optimizer: run 'sgd', now 'adamw')" in res.output


def test_cli_errors(data, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, _train_args(data, tmp_path / "x", "--model", "resnet9000"))
    assert res.exit_code == 2 and "unet-resnet18" in res.output and "tiny-unet" in res.output
    res = runner.invoke(main, ["train", "-o", str(tmp_path / "y")])
    assert res.exit_code == 1 and "--data ROOT or --train DIR" in res.output
    res = runner.invoke(main, _train_args(data, tmp_path / "z", "--loss", "focal"))
    assert res.exit_code == 1 and "unknown loss 'focal'" in res.output
    res = runner.invoke(main, ["evaluate", str(tmp_path / "missing"), "--data", str(data / "val")])
    assert res.exit_code == 1 and "does not exist" in res.output
    assert not any((tmp_path / n).exists() for n in "xyz")


def test_help_examples():
    for cmd in ("train", "evaluate"):
        res = CliRunner().invoke(main, [cmd, "--help"])
        assert res.exit_code == 0 and f"$ lsmap {cmd}" in res.output


def test_evaluate_knows_the_patches_a_model_was_trained_on(data, tmp_path):
    """The card records the training patches (folder and ids, not the held-out ones): evaluating on them
    warns (scores of fit, not of accuracy), --unseen scores only the held-out ones, and refuses a folder
    the model trained on entirely. A copy of the training folder is recognised by the images' content (an audit
    found it scored as all unseen: 8 'not trained on' where 6 were); a card from before content digests still
    loads and recognises the training folder itself, not the copy."""
    import shutil

    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(main, ["train", "--train", str(data / "train"), "--val-fraction", "0.25", "--model", "tiny-unet",
                               "--scale", "1", "--steps", "2", "--val-every", "2", "--batch-size", "4", "--device", "cpu",
                               "-o", str(run)])
    assert res.exit_code == 0, res.output
    card = read_card(run / "best")
    (folder, ids), = card.trained_on.items()
    assert folder == str((data / "train" / "img").resolve()) and len(ids) == 6
    held = set(json.loads((run / "best.json").read_text())["data"].split("ids ")[1].rstrip(")").split(", "))
    assert len(held) == 2 and not held & set(ids)

    res = runner.invoke(main, ["evaluate", str(run / "best"), "--data", str(data / "train"), "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    assert f"6 of the 8 patches were used to train {run / 'best'};" in res.output
    out = json.loads(res.output[res.output.index("{"):])
    assert out["patches"] == 8 and out["seen_in_training"] == 6 and not out["unseen"]

    res = runner.invoke(main, ["evaluate", str(run / "best"), "--data", str(data / "train"), "--device", "cpu",
                               "--unseen"])
    assert res.exit_code == 0, res.output
    assert "2 patches not trained on" in res.output and "were used to train" not in res.output

    res = runner.invoke(main, ["evaluate", str(run / "best"), "--data", str(data / "val"), "--device", "cpu"])
    assert res.exit_code == 0 and "were used to train" not in res.output

    shutil.copytree(data / "train", tmp_path / "copy")
    res = runner.invoke(main, ["evaluate", str(run / "best"), "--data", str(tmp_path / "copy"), "--device", "cpu",
                               "--json"])
    assert res.exit_code == 0, res.output
    assert f"6 of the 8 patches were used to train {run / 'best'};" in res.output
    assert json.loads(res.output[res.output.index("{"):])["seen_in_training"] == 6
    res = runner.invoke(main, ["evaluate", str(run / "best"), "--data", str(tmp_path / "copy"), "--device", "cpu",
                               "--unseen", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["patches"] == 2 and out["unseen"] and out["seen_in_training"] == 0
    assert len(card.trained_digests) == 6 and not card.adapted_digests
    res = runner.invoke(main, ["info", str(run / "best")])
    assert res.exit_code == 0 and "content digests      6 trained on, 0 adapted on" in res.output

    # a card written before the digests: loads, and recognises the patches by folder and id only
    old = json.loads((run / "best.json").read_text())
    del old["trained_digests"], old["adapted_digests"]
    (run / "best.json").write_text(json.dumps(old))
    assert read_card(run / "best").trained_digests == []
    res = runner.invoke(main, ["evaluate", str(run / "best"), "--data", str(tmp_path / "copy"), "--device", "cpu",
                               "--unseen"])
    assert res.exit_code == 0 and "8 patches not trained on" in res.output
    res = runner.invoke(main, ["evaluate", str(run / "best"), "--data", str(data / "train"), "--device", "cpu",
                               "--unseen"])
    assert res.exit_code == 0 and "2 patches not trained on" in res.output
    res = runner.invoke(main, ["info", str(run / "best")])
    assert res.exit_code == 0 and "trained on" in res.output and "content digests" not in res.output

    res = runner.invoke(main, ["train", "--train", str(data / "train"), "--val", "none", "--model", "tiny-unet",
                               "--scale", "1", "--steps", "1", "--batch-size", "4", "--device", "cpu", "-o",
                               str(tmp_path / "all")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["evaluate", str(tmp_path / "all" / "last"), "--data", str(data / "train"),
                               "--device", "cpu", "--unseen"])
    assert res.exit_code == 1
    assert "every one of its 8 patches was used to train the model(s)" in res.output
    res = runner.invoke(main, ["evaluate", str(tmp_path / "all" / "last"), "--data", str(tmp_path / "copy"),
                               "--device", "cpu", "--unseen"])
    assert res.exit_code == 1
    assert "every one of its 8 patches was used to train the model(s)" in res.output


def test_a_bad_mixup_names_its_flag(data, tmp_path):
    """--mixup nan said 'mixup_alpha must be ...' (the config's name, which is no flag; found by an audit)."""
    res = CliRunner().invoke(main, _train_args(data, tmp_path / "r", "--mixup", "nan"))
    assert res.exit_code != 0
    assert "--mixup must be a finite number of at least 0 (got nan)" in res.output
    assert not (tmp_path / "r").exists()


def test_an_empty_init_names_its_flag(data, tmp_path):
    """`train --init ''` said '--model is an empty path' (the checkpoint reader's name; the re-audit)."""
    res = CliRunner().invoke(main, _train_args(data, tmp_path / "r", "--init", ""))
    assert res.exit_code != 0 and "--init is an empty path" in res.output and "--model" not in res.output, res.output
    assert not (tmp_path / "r").exists()
