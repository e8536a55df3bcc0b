"""Refine's guards (issue 16): the target normalisation choice, degenerate pseudo labels, the fixed
teacher, label-free proxies, and the warnings the user sees.

Tiny generated 3-band ("rgb") 32 x 32 patches (tests/patchgen.py: bright squares are landslides) and
a tiny-unet trained for a few steps once per module; every refine run takes 2 steps.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from patchgen import make_patches

from lsmap.errors import InputError, LsmapWarning
from lsmap.io.patches import write_patch
from lsmap.learn.models import read_card
from lsmap.learn.refine.rounds import RefineConfig, _guard, refine

PROFILE = "rgb"


def _background_patches(folder: Path, n: int, seed: int) -> Path:
    """Noise like the source background, no landslide: a model sees (almost) none here."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_patch(folder, str(i), rng.normal(1.0, 0.1, (3, 32, 32)).astype(np.float32), None)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    import torch

    from lsmap.learn.train import TrainConfig, train

    root = tmp_path_factory.mktemp("guards")
    make_patches(root / "src", 12, seed=1, bands=3)
    shifted = make_patches(root / "tgt", 8, seed=2, bands=3)
    from lsmap.core.bands import get_profile
    from lsmap.io.patches import find_patches, read_patch_image

    for p in find_patches(shifted):  # an affine shift: the target's own statistics undo it, the source's do not
        image, _ = read_patch_image(p, get_profile(PROFILE))
        write_patch(shifted, p.id, image * 1.6 + 0.8, None)
    _background_patches(root / "empty", 6, seed=3)
    config = TrainConfig(model="tiny-unet", steps=60, batch_size=8, scale=1, val_every=60, seed=0, device="cpu", loss="ce")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = train(root / "model", train_dir=root / "src", val_dir=root / "src", bands=PROFILE, config=config,
                        progress=False)
        yield {"root": root, "src": root / "src", "tgt": root / "tgt", "empty": root / "empty", "model": res.best_path}
    finally:
        torch.set_num_threads(threads)


def _refine(world, out, target="tgt", **kw):
    cfg = RefineConfig(**({"rounds": 1, "steps": 2, "batch_size": 4, "bands": PROFILE, "device": "cpu"} | kw))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = refine([world["model"]], world["src"], world[target], out, cfg, progress=False)
    return res, [str(w.message) for w in caught if issubclass(w.category, LsmapWarning)]


def _cli(world, out, *extra, target="tgt"):
    from lsmap.cli import main

    args = ["refine", "--model", str(world["model"]), "--source", str(world["src"]), "--target", str(world[target]),
            "--rounds", "1", "--steps", "2", "--batch-size", "4", "--bands", PROFILE, "--device", "cpu", "-o", str(out)]
    return CliRunner().invoke(main, args + list(extra))


def test_auto_norm_choice_is_recorded_in_summary_card_and_run_folder(world, tmp_path):
    """On an affinely shifted target the source statistics make the model see landslides almost
    everywhere; ``auto`` picks the target's own, and says so in every place a user looks."""
    res, _ = _refine(world, tmp_path / "run")
    (summary,) = res.rounds
    norm = summary["norm"]
    assert norm["mode"] == "auto" and norm["chosen"] == "own"
    assert abs(np.log(norm["share"]["own"] / norm["prior"])) < abs(np.log(norm["share"]["model"] / norm["prior"]))
    on_disk = json.loads((tmp_path / "run" / "round_1" / "summary.json").read_text())
    assert on_disk["norm"] == norm
    assert json.loads((tmp_path / "run" / "norm.json").read_text())["chosen"] == "own"
    card = read_card(summary["models"][0])
    assert card.train["refine"]["target_norm"] == "own" and card.train["refine"]["norm_mode"] == "auto"
    assert card.train["norm"] == "own" and "train.norm = own" in card.data
    assert card.train["steps"] == 2  # the training record is still there next to the note


def test_cli_norm_is_honoured_and_printed(world, tmp_path):
    res = _cli(world, tmp_path / "run", "--norm", "model")
    assert res.exit_code == 0, res.output
    # the source's statistics on this shifted target: the model is sure of landslides only, which the guard stops
    assert "pseudo labels one-sided" in res.output and "stopped refining" in res.output
    res = _cli(world, tmp_path / "run", "--norm", "model", "--no-guard", "--overwrite")
    assert res.exit_code == 0, res.output
    assert "target normalisation: model (forced by --norm)" in res.output
    summary = json.loads((tmp_path / "run" / "round_1" / "summary.json").read_text())
    assert summary["norm"]["chosen"] == "model" and summary["norm"]["mode"] == "model"
    card = read_card(summary["models"][0])
    assert card.train["refine"]["target_norm"] == "model" and card.train["norm"] == "model"
    from lsmap.core.norms import ensemble_norm

    assert ensemble_norm("auto", [card.train]) == "model"  # detect's default normalises as refine did
    # the alias of train/detect is accepted too
    res = _cli(world, tmp_path / "run2", "--norm", "target", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output[res.output.index("{"):])["rounds"][0]["norm"]["chosen"] == "own"


def test_collapsed_pseudo_labels_stop_the_run_with_a_warning(world, tmp_path):
    """A target where the model sees no landslide: the pseudo labels would train toward "no
    landslide", so the round is not trained, the given model is kept and the user is told."""
    res = _cli(world, tmp_path / "run", "--rounds", "2", "--norm", "model", target="empty")
    assert res.exit_code == 0, res.output
    assert "Warning: round 1: pseudo labels collapsed" in res.output
    assert "stopped refining and kept the models of the start" in res.output
    assert "(stopped: models kept)" in res.output
    summary = json.loads((tmp_path / "run" / "round_1" / "summary.json").read_text())
    assert summary["guard"]["tripped"] and summary["stopped"] and summary["models_kept"]
    assert summary["models"] == [str(world["model"])]
    assert summary["warnings"] and "collapsed" in summary["warnings"][0]
    assert not (tmp_path / "run" / "round_2").exists()  # the run stopped
    assert not (tmp_path / "run" / "round_1" / "models").exists()
    # resuming a stopped run does not train on
    res = _cli(world, tmp_path / "run", "--rounds", "2", "--norm", "model", "--resume", target="empty")
    assert res.exit_code == 0 and not (tmp_path / "run" / "round_2").exists()


def test_without_the_guard_the_collapse_is_still_reported(world, tmp_path):
    res, warned = _refine(world, tmp_path / "run", target="empty", norm="model", guard=False)
    (summary,) = res.rounds
    assert summary["guard"]["tripped"] and not summary.get("stopped")
    assert any("collapsed" in w and "guard is off" in w for w in warned)
    assert summary["models"] != [str(world["model"])]


def test_guard_thresholds():
    cfg = RefineConfig()  # collapse 0.01, growth 1.5
    assert not _guard(1, 0.05, 0.05, [], cfg)["tripped"]
    one_sided = _guard(1, 0.008, 0.05, [], cfg, kept_background=13, kept_landslide=1896)  # an audit's round
    assert one_sided["tripped"] and one_sided["reason"].startswith("pseudo labels one-sided: 1,896 landslide against 13")
    assert not _guard(1, 0.008, 0.05, [], cfg, kept_background=2000, kept_landslide=1896)["tripped"]
    assert _guard(1, 0.00049, 0.05, [], cfg)["reason"].startswith("pseudo labels collapsed")
    assert not _guard(1, 0.00051, 0.05, [], cfg)["tripped"]  # conservative (0.7-threshold) seeds are fine
    grown = _guard(3, 0.16, 0.05, [{"pseudo_share": 0.1}, {"pseudo_share": 0.12}], cfg)
    assert grown["tripped"] and grown["reason"].startswith("pseudo labels grew") and grown["round_1_share"] == 0.1
    assert not _guard(2, 0.14, 0.05, [{"pseudo_share": 0.1}], cfg)["tripped"]  # below 1.5 x 0.1
    assert not _guard(2, 0.07, 0.05, [{"pseudo_share": 0.003}], cfg)["tripped"]  # a small seed may grow to the prior
    assert _guard(2, 0.08, 0.05, [{"pseudo_share": 0.003}], cfg)["tripped"]  # ... not far beyond it
    assert not _guard(3, 0.16, 0.05, [{"pseudo_share": 0.1}, {"pseudo_share": 0.2}], cfg)["tripped"]  # shrinking
    # a landslide-rich target: growth up to 1.5 x what the given models predict there is no alarm
    assert not _guard(2, 0.17, 0.05, [{"pseudo_share": 0.02}], cfg, start=0.12)["tripped"]
    assert _guard(2, 0.19, 0.05, [{"pseudo_share": 0.02}], cfg, start=0.12)["tripped"]
    with pytest.raises(InputError, match="growth"):
        RefineConfig(growth=1.0).check()
    with pytest.raises(InputError, match="norm"):
        RefineConfig(norm="scene-ish").check()


def test_uncertainty_teacher_stays_fixed_unless_asked(world, tmp_path):
    fixed, _ = _refine(world, tmp_path / "fixed", strategy="uncertainty", rounds=2, mc_passes=2, guard=False)
    assert [r["teachers"] for r in fixed.rounds] == [[str(world["model"])]] * 2
    prev, _ = _refine(world, tmp_path / "prev", strategy="uncertainty", rounds=2, mc_passes=2, guard=False,
                      teacher="previous")
    assert prev.rounds[1]["teachers"] == prev.rounds[0]["models"]
    assert read_card(fixed.models[0]).train["refine"]["teacher"] == "fixed"


def test_a_round_below_the_source_on_a_proxy_warns(world, tmp_path):
    """A round that wrecks the model (a huge learning rate, last checkpoint) scores below the source
    model on the labelled source: the user is warned, and the summary lists what got worse."""
    res, warned = _refine(world, tmp_path / "run", lr=3.0, steps=6, select="last", guard=False)
    (summary,) = res.rounds
    assert summary["proxies"]["worse"], summary["proxies"]
    assert any("below the source model on label-free proxies" in w for w in warned)
    assert summary["warnings"] == [w for w in warned if w.startswith("round 1")]


def test_final_caution_says_what_the_run_cannot_vouch_for():
    """A run ending below its start on the target's labels warns; so does one without target labels."""
    from lsmap.learn.refine.rounds import final_caution

    labelled = [{"target_f1_before": 0.213, "target_f1_after": 0.220, "warnings": []},
                {"target_f1_before": 0.220, "target_f1_after": 0.211, "warnings": []}]
    with pytest.warns(LsmapWarning, match=r"below the given models on the target's labels \(F1 0\.2130 -> 0\.2110\)"):
        assert final_caution(labelled)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert final_caution([dict(labelled[0])]) is None  # better than the start: nothing to say
        assert final_caution([{"target_f1_before": None, "target_f1_after": None, "warnings": ["round 1: x"]}]) is None
        assert final_caution([{"stopped": True, "warnings": []}]) is None
        assert final_caution([]) is None
    with pytest.warns(LsmapWarning, match="no labels, so whether the rounds improved it is not measured"):
        final_caution([{"target_f1_before": None, "target_f1_after": None, "warnings": []}])


@pytest.mark.parametrize("extra, message", [
    (["--mixup-alpha", "nan"], "--mixup-alpha must be a finite number of at least 0 (got nan)"),
    (["--mixup-alpha", "inf"], "--mixup-alpha must be a finite number of at least 0 (got inf)"),
    (["--lr", "nan"], "--lr must be a finite number above 0 (got nan)"),
    (["--lr", "-1"], "--lr must be a finite number above 0 (got -1.0)"),
])
def test_bad_numbers_are_refused_before_any_work(world, tmp_path, extra, message):
    """--mixup-alpha nan ran (rc 0) and wrote NaN into refine.json, inf was refused naming --lr, and --lr nan or -1
    only by round 1's training, over a folder already written (found by an audit). RefineConfig.check refuses
    them first, naming the flag; nothing is written."""
    res = _cli(world, tmp_path / "out", *extra)
    assert res.exit_code != 0
    assert message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_refine_config_checks_types_and_ranges():
    for kw, message in (({"seed": -1}, "`seed` must be an integer of at least 0"),
                        ({"steps": 2.5}, "`steps` must be an integer"),
                        ({"pseudo_weight": float("nan")}, "`pseudo_weight` must be a finite number above 0"),
                        ({"growth": float("inf")}, "`growth` must be a finite number above 1"),
                        ({"guard": "no"}, "`guard` must be True or False")):
        with pytest.raises(InputError, match=message):
            RefineConfig(**kw).check()


@pytest.mark.parametrize("folder", ["new", "empty"])
def test_resume_without_a_run_is_refused(world, tmp_path, folder):
    """--resume -o FOLDER without a refine run started a new run without a word; train --resume refuses there
    (found by an audit). Nothing is written."""
    out = tmp_path / "out"
    if folder == "empty":
        out.mkdir()
    res = _cli(world, out, "--resume")
    assert res.exit_code != 0
    assert f"{out}: no refine run to resume (no refine.json); start without --resume" in res.output
    assert not out.exists() if folder == "new" else not list(out.iterdir())


def test_a_validation_folder_without_landslides_is_refused(world, tmp_path):
    """--val FOLDER whose masks hold no landslide pixel ran (rc 0), each round's best chosen on an F1 that is always
    0; train and evaluate refuse such folders (found by an audit). Nothing is written."""
    rng = np.random.default_rng(4)
    for i in range(3):
        write_patch(tmp_path / "val", str(i), rng.normal(1.0, 0.1, (3, 32, 32)).astype(np.float32),
                    np.zeros((32, 32), np.uint8))
    res = _cli(world, tmp_path / "out", "--val", str(tmp_path / "val"))
    assert res.exit_code != 0
    assert "the validation masks hold no landslide pixel (value 1) in 3 masks" in res.output
    assert "label_map" not in res.output.split("(train, evaluate")[0] and "--label-map 0:0" not in res.output
    assert not (tmp_path / "out").exists()


def test_a_batch_that_cannot_fit_is_refused_before_any_work(world, tmp_path):
    """--batch-size 100000 had no memory check in refine (train and detect refuse it with an estimate; an audit)."""
    res = _cli(world, tmp_path / "out", "--batch-size", "100000000")
    assert res.exit_code != 0
    assert "--batch-size 100000000: a training batch of 100000000 patches of 32 x 32 px" in res.output
    assert "would need about" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("extra", "flag"), [(["--strategy", "uncertainty", "--pos-thresh", "0.9"], "--pos-thresh"),
                                              (["--keep-bg", "0.5"], "--keep-bg"), (["--teacher", "fixed"], "--teacher")])
def test_a_setting_of_the_other_strategy_is_refused(world, tmp_path, extra, flag):
    """`--strategy uncertainty --pos-thresh 0.9` ran with exit 0 and the threshold unused (the CLI audit)."""
    res = _cli(world, tmp_path / "out", *extra)
    assert res.exit_code == 2 and f"{flag} belongs to the other strategy" in res.output, res.output
    assert not (tmp_path / "out").exists()


def test_an_overwriting_run_stopped_before_refining_keeps_the_previous_run(world, tmp_path):
    """`refine --overwrite` over a finished run, stopped by the guard in its first round, deleted the finished run
    and ended with success and no refined model in the folder (the re-audit). The previous run stays."""
    res = _cli(world, tmp_path / "run", "--rounds", "1", "--norm", "model")
    assert res.exit_code == 0, res.output
    before = sorted(str(p.relative_to(tmp_path / "run")) for p in (tmp_path / "run").rglob("*"))
    res = _cli(world, tmp_path / "run", "--rounds", "1", "--norm", "model", "--overwrite", target="empty")
    assert res.exit_code == 0 and "stopped refining" in res.output, res.output
    assert "refined nothing, so the previous run there is kept as it was" in res.output
    assert sorted(str(p.relative_to(tmp_path / "run")) for p in (tmp_path / "run").rglob("*")) == before
    assert not list(tmp_path.glob(".run.lsmap-previous-run-*"))


def test_rounds_are_bounded(world, tmp_path):
    """`--rounds 99999999999999999999` ran 345 rounds and wrote 1.1 GB before it was killed (the re-audit)."""
    res = _cli(world, tmp_path / "out", "--rounds", "101")
    assert res.exit_code != 0 and "--rounds must be an integer in [1, 100] (got 101)" in res.output, res.output
    assert not (tmp_path / "out").exists()
