"""The shipped default model: its card is honest and the retraining script reproduces it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
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
    """Law: same seed, same data -> the same metrics (measured: bit-identical weights on this CPU)."""
    l4s = shared_data("l4s")
    env = {**os.environ, "LSMAP_L4S": str(l4s), "LSMAP_DEFAULT_OUT": str(tmp_path / "rerun"),
           "LSMAP": f"{sys.executable} -m lsmap.cli", "PYTHON": sys.executable,
           "PYTHONPATH": str(ROOT)}
    subprocess.run(["bash", str(ROOT / "models" / "train_default_model.sh"), str(tmp_path / "work")],
                   env=env, check=True, capture_output=True)
    shipped = read_card(default_model_path()).metrics
    rerun = json.loads((tmp_path / "rerun.json").read_text())["metrics"]
    for k, v in shipped.items():
        if isinstance(v, float):
            assert rerun[k] == pytest.approx(v, abs=0.02), k
