"""The shipped default model: its card is honest and the retraining script reproduces it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import shared_data

from lsmap.learn.models import default_model_path, read_card

ROOT = Path(__file__).resolve().parents[2]


def test_default_model_card_states_its_data_and_scores():
    card = read_card(default_model_path())
    assert card.profile.name == "l4s14" and card.model == "tiny-unet"
    assert "12 labelled" in card.data and "handful" in card.data
    assert 0 < card.metrics["val3_f1"] < 1 and 0 < card.metrics["val3_f1_before_refine"] < 1
    assert card.train, "the training configuration is recorded"


@pytest.mark.slow
@pytest.mark.realdata
def test_retraining_script_reproduces_the_shipped_card(tmp_path):
    """Law: same seed, same data -> the shipped checkpoint's metrics, within 0.02 (the shipped weights were trained
    on another CPU; on the 2-core EPYC of sessions 14-17 the rerun scores F1 0.711 against the card's 0.706).

    Run as the README retrains the shipped weights (one global normalisation, float16, the better checkpoint of
    before and after refinement): without those settings, as until session 17, it trained another recipe than the
    shipped card's since its retraining (issue 16) and failed (held-out precision 0.51 against 0.73).

    The card's ``*_refined`` scores are those of the refined checkpoint the script did not ship, as refine scored
    it when the card was written: with refine as it was before issue 16's changes (BENCHMARKS.md, "The default
    model"). The rerun's refined F1 is 0.567 against the card's 0.666, the same at the start of session 17
    (05dd6e1) as after it. They are checked to be scores, not compared."""
    l4s = shared_data("l4s")
    env = {**os.environ, "LSMAP_L4S": str(l4s), "LSMAP_DEFAULT_OUT": str(tmp_path / "rerun"),
           "LSMAP_NORM": "global", "LSMAP_HALF": "1", "LSMAP_KEEP_BETTER": "1",
           "LSMAP": f"{sys.executable} -m lsmap.cli", "PYTHON": sys.executable,
           "PYTHONPATH": str(ROOT)}
    subprocess.run(["bash", str(ROOT / "models" / "train_default_model.sh"), str(tmp_path / "work")],
                   env=env, check=True, capture_output=True)
    shipped = read_card(default_model_path()).metrics
    rerun = json.loads((tmp_path / "rerun.json").read_text())["metrics"]
    compared = [k for k, v in shipped.items() if isinstance(v, float) and not k.endswith("_refined")]
    assert len(compared) == 8  # precision, recall, F1, IoU of the shipped checkpoint, and the same "before refine"
    for k in compared:
        assert rerun[k] == pytest.approx(shipped[k], abs=0.02), k
    assert all(0.0 <= rerun[k] <= 1.0 for k in shipped if k.endswith("_refined")), rerun


@pytest.mark.parametrize("write_shipped", [False, True])
def test_retraining_script_writes_the_shipped_weights_only_when_asked(tmp_path, write_shipped):
    """The script's final step gets WORK/l4s14-default unless LSMAP_WRITE_SHIPPED=1 (lsmap and python faked)."""
    l4s = tmp_path / "l4s"
    for sub in ("train/img", "train/mask", "test/img", "unknown_split/img"):
        (l4s / sub).mkdir(parents=True)
    (l4s / "train/img/image_1.h5").touch()
    fake = tmp_path / "fake_lsmap"  # records nothing, makes the files the script looks for
    fake.write_text('#!/bin/bash\nif [ "$1" = refine ]; then for a in "$@"; do [ "$prev" = -o ] && o=$a; prev=$a; '
                    'done; mkdir -p "$o/round_2/models/0"; touch "$o/round_2/models/0/best.safetensors"; fi\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("LSMAP_DEFAULT_OUT", "LSMAP_WRITE_SHIPPED")}
    env |= {"LSMAP_L4S": str(l4s), "LSMAP": str(fake), "PYTHON": "echo"}
    if write_shipped:
        env["LSMAP_WRITE_SHIPPED"] = "1"
    res = subprocess.run(["bash", str(ROOT / "models" / "train_default_model.sh"), str(tmp_path / "work")],
                         env=env, capture_output=True, text=True, check=True)
    final = res.stdout.strip().splitlines()[0].split()[-1]  # `echo finalize.py FINAL BEFORE AFTER OUT`
    assert final == ("lsmap/weights/l4s14-default" if write_shipped else str(tmp_path / "work" / "l4s14-default"))


def test_shipped_defaults_cover_real_products():
    """Defaults for L4S stacks, for L2A products with a DEM and without one ship; each card names its bands,
    states its data and scores, and its weights load (float16 on disk, float32 in memory)."""
    from safetensors import safe_open

    from lsmap.learn.models import DEFAULT_MODELS, load_checkpoint, shipped_defaults

    shipped = {p.stem: p for p in shipped_defaults()}
    want = {"l4s14-default": "l4s14", "l2a-terrain-default": "l2a-terrain", "l2a-default": "l2a"}
    assert set(want) == set(DEFAULT_MODELS) == set(shipped)
    for name, path in shipped.items():
        module, card = load_checkpoint(path)
        assert card.profile.name == want[name] and len(card.stats["mean"]) == card.profile.count
        assert "12 labelled" in card.data and 0 < card.metrics["val3_f1"] < 1
        assert next(module.parameters()).dtype.is_floating_point and str(next(module.parameters()).dtype) == "torch.float32"
        if name != "l4s14-default":
            with safe_open(str(path), "pt") as f:
                assert all(f.get_tensor(k).dtype in (torch.float16, torch.int64) for k in f.keys())
