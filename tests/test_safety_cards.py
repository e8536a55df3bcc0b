"""Model cards are checked against a schema on load; checkpoint messages name what was given (issue 14, 7 and 12)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from lsmap.cli import main
from lsmap.core.bands import get_profile
from lsmap.errors import CheckpointError, MissingInputError
from lsmap.learn.models import read_card, read_state_dict
from tests.detect_fixtures import tiny_checkpoint


@pytest.fixture
def ckpt(tmp_path):
    weights = tiny_checkpoint(tmp_path / "m")
    return weights, tmp_path / "m.json"


_OLD = get_profile("l4s14").to_dict()


def _edit(card_path, fn):
    d = json.loads(card_path.read_text())
    card_path.write_text(json.dumps(fn(d)))


@pytest.mark.parametrize(("edit", "field"), [
    (lambda d: [d], "JSON list"),
    (lambda d: {**d, "threshold": "0.5"}, "'threshold'"),
    (lambda d: {**d, "threshold": 1.5}, "'threshold'"),
    (lambda d: {**d, "scale": 0}, "'scale'"),
    (lambda d: {**d, "scale": 1000}, "'scale'"),
    (lambda d: {**d, "bands": ["B1", "B2", "B99"]}, "'bands' names unknown bands B99"),
    (lambda d: {**d, "bands": ["B1", "B1"]}, "'bands' names a band twice"),
    (lambda d: {**d, "bands": d["bands"][:4]}, "'stats.mean' must have one value per band (4)"),
    # older cards: a band-profile object
    (lambda d: {**d, "bands": {**_OLD, "divisors": [0.0] * 14}}, "'bands.divisors'"),
    (lambda d: {**d, "bands": {**_OLD, "bands": ["B1"] * 13 + ["B99"]}}, "'bands.bands'"),
    (lambda d: {**d, "bands": {**_OLD, "bands": ["B99"] * 13 + ["B98"]}}, "names unknown bands B99, B98 (known"),
    (lambda d: {**d, "stats": {"mean": [float("nan")] * 14, "std": [1.0] * 14}}, "'stats.mean'"),
    (lambda d: {**d, "domain_bn": "yes"}, "'domain_bn'"),
    (lambda d: {**d, "model": 3}, "'model'"),
    (lambda d: {**d, "trained_on": ["0", "1"]}, "'trained_on' must be a JSON object"),
    (lambda d: {**d, "trained_on": {"/p/img": [0, 1]}}, "'trained_on' must map each folder to a list of patch ids"),
    (lambda d: {**d, "adapted_on": {"/p/img": "0"}}, "'adapted_on' must map each folder to a list of patch ids"),
    (lambda d: {**d, "trained_digests": {"/p/img": ["0123456789abcdef"]}}, "'trained_digests' must be a list of patch "
                                                                          "content digests"),
    (lambda d: {**d, "trained_digests": "0123456789abcdef"}, "'trained_digests' must be a list of patch content"),
    (lambda d: {**d, "trained_digests": None}, "'trained_digests' must be a list of patch content digests"),
    (lambda d: {**d, "adapted_digests": [12345678901234567]}, "'adapted_digests' must be a list of patch content"),
    (lambda d: {**d, "adapted_digests": ["not hex!"]}, "'adapted_digests' must be a list of patch content digests"),
])
def test_bad_cards_give_one_line_naming_card_and_field(ckpt, edit, field):
    weights, card_path = ckpt
    _edit(card_path, edit)
    with pytest.raises(CheckpointError) as e:
        read_card(weights)
    msg = str(e.value)
    assert str(card_path) in msg and field in msg and "\n" not in msg
    res = CliRunner().invoke(main, ["info", str(weights)])
    assert res.exit_code == 1 and field in res.output and "Traceback" not in res.output


def test_unknown_architecture_in_card_names_the_field(ckpt):
    from lsmap.learn.models import load_checkpoint

    weights, card_path = ckpt
    _edit(card_path, lambda d: {**d, "model": "resnet-9000"})
    with pytest.raises(CheckpointError, match="'model' names unknown architecture 'resnet-9000'"):
        load_checkpoint(weights)


def test_model_evil_pth_names_the_given_file(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1)}, evil)
    with pytest.raises(CheckpointError) as e:
        read_card(evil)
    assert str(evil) in str(e.value) and "evil.pth.safetensors" not in str(e.value)
    with pytest.raises(MissingInputError) as e:
        read_card(tmp_path / "nothing.pth")
    assert str(tmp_path / "nothing.pth") in str(e.value).split(":")[0]


def test_weights_only_refusal_is_one_line_never_suggesting_unpickling(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pickle ran",))

    path = tmp_path / "enc.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError) as e:
        read_state_dict(path)
    msg = str(e.value)
    assert "\n" not in msg and "weights_only=False" not in msg and "not a safetensors or weights-only" in msg


@pytest.mark.parametrize("name", ["model.SAFETENSORS", "model.bin"])
def test_safetensors_known_by_content_as_well_as_name(tmp_path, name):
    from safetensors.torch import save_file

    path = tmp_path / name
    save_file({"w": torch.arange(3.0)}, str(path))
    assert torch.equal(read_state_dict(path)["w"], torch.arange(3.0))
    torch.save({"w": torch.ones(2)}, tmp_path / "torch.bin")  # a torch file under the same suffix still reads
    assert torch.equal(read_state_dict(tmp_path / "torch.bin")["w"], torch.ones(2))
