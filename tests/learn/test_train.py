"""The training loop: learning, checkpoints, resume, validation choice, domain BN, device paths, bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import counts_agree
from patchgen import make_patches

from lsmap.core.bands import L4S_BANDS, PROFILES
from lsmap.data.dataset import Augment, PatchDataset
from lsmap.data.stats import patch_stats
from lsmap.errors import (
    BandMismatchError,
    CheckpointError,
    InputError,
    LsmapWarning,
    MissingBandError,
    MissingInputError,
    OutputExistsError,
    OutputOwnershipError,
)
from lsmap.io.patches import find_patches, patch_digests, read_image, write_patch
from lsmap.learn.evaluate import evaluate
from lsmap.learn.models import ModelCard, read_card, read_state_dict
from lsmap.learn.train import (
    Source,
    TrainConfig,
    TrainingError,
    fit,
    grad_scaler_enabled,
    loader_options,
    lr_at,
    scaled_forward,
    train,
)

# amp off: float32 is faster than bfloat16 for a tiny model on 32 x 32 patches (the shared run uses amp)
FAST = dict(model="tiny-unet", batch_size=8, scale=1.0, lr=3e-3, val_every=10, steps=30, amp=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_patches(root / "train", 16, seed=1)
    make_patches(root / "val", 8, seed=2)
    return root


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """One short recipe run shared by several tests."""
    out = tmp_path_factory.mktemp("runs") / "r"
    result = train(out, train_dir=data / "train", val_dir=data / "val", config=TrainConfig(**FAST | {"amp": True}),
                   progress=False)
    return out, result


def test_tiny_model_beats_chance(run):
    _, result = run
    # chance level: predicting every pixel as landslide gives F1 = 2p / (1 + p), p ~ 0.07 here
    assert result.best_metrics["f1"] > 0.7
    assert result.best_metrics["split"] == "validation"


def test_best_chosen_on_validation_and_matches_evaluate(run, data):
    out, result = run
    f1s = [row["f1"] for row in result.history]
    assert [row["step"] for row in result.history] == [10, 20, 30]
    assert result.best_metrics["f1"] == max(f1s)
    assert result.best_metrics["step"] == result.history[f1s.index(max(f1s))]["step"]
    # the saved best model scores the same through the inference path (predict.member_logits)
    ev = evaluate([result.best_path], data / "val", device="cpu")
    assert counts_agree(ev.pixel, result.best_metrics, ("tp", "fp", "fn"))
    if ev.pixel["fp"] == result.best_metrics["fp"] and ev.pixel["fn"] == result.best_metrics["fn"]:
        assert math.isclose(ev.pixel["f1"], result.best_metrics["f1"])


def test_checkpoint_card_contents(run, data):
    out, result = run
    card = read_card(out / "best")
    assert card.model == "tiny-unet" and card.bands == list(PROFILES["l4s14"].bands)
    stats = patch_stats(find_patches(data / "train"))
    np.testing.assert_allclose(card.stats["mean"], stats.mean)
    assert card.scale == 1.0 and card.threshold == 0.5 and card.domain_bn is False
    assert card.train["loss"] == "lovasz+ohem" and card.train["norm"] == "own" and card.train["augment"]
    assert card.train["sources"][0]["patches"] == 16
    assert card.metrics["f1"] == result.best_metrics["f1"] and card.lsmap_version
    assert "train" in card.data and "16 patches" in card.data
    log = (out / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,lr,loss") and len(log) == 4
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    state = torch.load(out / "last_state.pt", weights_only=True)
    assert state["step"] == 30


class _Interrupt(torch.utils.data.Dataset):
    """Wraps a dataset and raises KeyboardInterrupt at the ``after``-th item."""

    def __init__(self, ds, after):
        self.ds, self.after, self.calls = ds, after, 0

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, key):
        self.calls += 1
        if self.calls == self.after:
            raise KeyboardInterrupt
        return self.ds[key]


def _sources(data, wrap=None, mixup=0.0):
    patches = find_patches(data / "train")
    ds = PatchDataset(patches, patch_stats(patches), "l4s14", augment=Augment())
    return [Source(wrap(ds) if wrap else ds, "ce+dice", mixup_alpha=mixup)]


def _val(data):
    patches = find_patches(data / "val")
    return PatchDataset(patches, patch_stats(patches), "l4s14")


def _card(data):
    return ModelCard(model="", bands=PROFILES["l4s14"].to_dict(),
                     stats=patch_stats(find_patches(data / "train")).to_dict(), data="test")


def test_resume_continues_exactly(data, tmp_path):
    config = TrainConfig(**FAST | {"steps": 20})
    whole = fit(_sources(data, mixup=0.4), _val(data), config, tmp_path / "a", card=_card(data), progress=False)
    with pytest.raises(KeyboardInterrupt):  # interrupted while drawing the batch of step 14
        fit(_sources(data, lambda d: _Interrupt(d, 8 * 13 + 3), mixup=0.4), _val(data), config, tmp_path / "b",
            card=_card(data), progress=False)
    assert torch.load(tmp_path / "b" / "last_state.pt", weights_only=True)["step"] == 13
    resumed = fit(_sources(data, mixup=0.4), _val(data), config, tmp_path / "b", card=_card(data), resume=True,
                  progress=False)
    a, b = read_state_dict(whole.last_path), read_state_dict(resumed.last_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in resumed.history] == [10, 20]
    assert resumed.history[-1]["f1"] == whole.history[-1]["f1"]


def test_resume_after_a_ctrl_c_inside_a_step_continues_exactly(data, tmp_path):
    """A Ctrl-C after a step's forward pass (in its loss or backward, most of a step's time) saved the batch-norm
    statistics that forward had moved, and the resumed run moved them again (found by a code review: 30 of 66
    tensors apart, num_batches_tracked 21 for 20)."""
    from lsmap.learn.losses import build_loss

    base, calls = build_loss("ce+dice"), {"n": 0}

    def interrupting(logits, target, weight):
        calls["n"] += 1
        if calls["n"] == 14:
            raise KeyboardInterrupt
        return base(logits, target, weight)

    config = TrainConfig(**FAST | {"steps": 20})
    whole = fit(_sources(data), _val(data), config, tmp_path / "a", card=_card(data), progress=False)
    patches = find_patches(data / "train")
    broken = [Source(PatchDataset(patches, patch_stats(patches), "l4s14", augment=Augment()), interrupting)]
    with pytest.raises(KeyboardInterrupt):
        fit(broken, _val(data), config, tmp_path / "b", card=_card(data), progress=False)
    resumed = fit(_sources(data), _val(data), config, tmp_path / "b", card=_card(data), resume=True, progress=False)
    a, b = read_state_dict(whole.last_path), read_state_dict(resumed.last_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_with_more_steps_warns_that_the_schedule_is_recomputed(run, data, tmp_path):
    """The learning rate is a function of the total steps: resuming a 30-step run with 40 steps recomputes its
    poly decay, and the rate jumps from 0 (the end of the old schedule) at step 30; the warning says so."""
    import warnings

    out, _ = run
    shutil.copytree(out, tmp_path / "r")
    config = TrainConfig(**FAST | {"amp": True, "steps": 40})
    with pytest.warns(LsmapWarning, match=r"planned 30 steps and resumes at step 30 of 40: its poly learning-rate "
                                          r"schedule is recomputed over 40 steps, so the rate goes from 0 to 0.000"):
        train(tmp_path / "r", train_dir=data / "train", val_dir=data / "val", config=config, resume=True,
              progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LsmapWarning)  # the same total again: no warning
        train(tmp_path / "r", train_dir=data / "train", val_dir=data / "val", config=config, resume=True,
              progress=False)


def test_resume_with_other_model_is_refused_and_nothing_changes(run, data):
    out, _ = run
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(CheckpointError, match="'tiny-unet' model but this run trains 'unet-resnet18'"):
        train(out, train_dir=data / "train", val_dir=data / "val",
              config=TrainConfig(**FAST | {"model": "unet-resnet18"}), resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_existing_run_refused_before_any_work(run, tmp_path):
    """Refused before reading any data; the message offers `resume` where the run left its state to resume."""
    out, _ = run
    with pytest.raises(OutputExistsError, match="pass `overwrite` to replace it, or `resume` to continue that run"):
        train(out, train_dir=tmp_path / "missing", val_dir=tmp_path / "missing", config=TrainConfig(**FAST))
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "last_state.pt").unlink()
    with pytest.raises(OutputExistsError, match=r"pass `overwrite` to replace it$"):
        train(copy, train_dir=tmp_path / "missing", val_dir=tmp_path / "missing", config=TrainConfig(**FAST))


def test_resume_on_other_data_is_refused_and_keeps_the_record(run, data, tmp_path):
    """`--resume` with another folder (found by an audit) trained on it and drew another hold-out, choosing the best
    checkpoint across two validation sets and forgetting the first patches in `trained_on`. Refused now, naming
    both; the same data resumes, and the card keeps what the run trained on."""
    out, _ = run
    shutil.copytree(out, tmp_path / "r")
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}
    make_patches(tmp_path / "other", 12, seed=7)
    config = TrainConfig(**FAST | {"amp": True, "steps": 30})
    with pytest.raises(CheckpointError, match=r"cannot resume on other data \(training patches: run 16 of .*train/img, "
                                              r"now 12 of .*other/img\); resume with the run's data"):
        train(tmp_path / "r", train_dir=tmp_path / "other", val_dir=data / "val", config=config, resume=True,
              progress=False)
    with pytest.raises(CheckpointError, match=r"validation patches: run 8 of .*val/img, now 12 of .*other/img"):
        train(tmp_path / "r", train_dir=data / "train", val_dir=tmp_path / "other", config=config, resume=True,
              progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == before
    done = train(tmp_path / "r", train_dir=data / "train", val_dir=data / "val", config=config, resume=True,
                 progress=False)
    card = read_card(done.last_path)
    assert {k: len(v) for k, v in card.trained_on.items()} == {str((data / "train" / "img").resolve()): 16}
    assert card.trained_digests == patch_digests(find_patches(data / "train"))  # the images' content, once each
    assert card.train["validated_on"] == {str((data / "val" / "img").resolve()): [str(i) for i in range(8)]}


def test_training_statistics_leave_nodata_out_as_detect_does(tmp_path):
    """Patches tiled from a scene with nodata hold FILL there; training counted those pixels in its normalisation
    statistics while detect and refine leave nodata out (found by an audit: a 1.9x other scale on Chittagong).
    The card's statistics are now those of the valid pixels, as `lsmap stats` gives them."""
    from lsmap.core.constants import FILL
    from lsmap.data.stats import compute_stats
    from lsmap.io.patches import read_image, read_mask

    make_patches(tmp_path / "d", 6, seed=4)
    for p in find_patches(tmp_path / "d"):
        image, mask = read_image(p.image)[0], read_mask(p.mask)
        image[:, :10], mask[:10] = FILL, 255  # a third of the patch outside the scene
        write_patch(tmp_path / "d", p.id, image, mask)
    result = train(tmp_path / "run", train_dir=tmp_path / "d", config=TrainConfig(**FAST | {"steps": 2, "val_fraction": 0}),
                   progress=False)
    card = read_card(result.last_path)
    valid = compute_stats(tmp_path / "d", "l4s14")  # its default leaves them out too
    assert card.stats["mean"] == pytest.approx(list(valid.mean), rel=1e-6) and min(card.stats["mean"]) > 0.9


@pytest.mark.parametrize("change, message", [
    ({"lr": -1.0}, "`lr` must be a finite number above 0"),
    ({"lr": float("nan")}, "`lr` must be a finite number"),
    ({"weight_decay": -5.0}, "`weight_decay` must be a finite number of at least 0"),
    ({"steps": 10.5}, "`steps` must be an integer"),
    ({"batch_size": "4"}, "`batch_size` must be an integer"),
    ({"scale": "2.5"}, "`scale` must be a number"),
    ({"amp": "no"}, "`amp` must be True or False"),
    ({"warmup": -5}, "`warmup` must be an integer of at least 0"),
    ({"seed": -1}, r"`seed` must be an integer in \[0, "),  # numpy's ValueError traceback before (an audit)
    ({"workers": 100000}, r"`workers` must be at most \d+ \(4 per CPU; this machine has \d+\); got 100000"),
])
def test_bad_training_settings_are_one_line_errors(change, message):
    """Found by an audit: lr -1 or nan failed as tracebacks after the data was read, amp="no" turned AMP on,
    steps=10.5 trained 11 steps but saved step 10, strings were bare TypeErrors."""
    with pytest.raises(InputError, match=message):
        TrainConfig(**FAST | change).check()


def test_a_target_without_domain_bn_is_refused(data, tmp_path):
    with pytest.raises(InputError, match="`target_dir` gives the patches whose batch-norm statistics `domain_bn`"):
        train(tmp_path / "r", train_dir=data / "train", target_dir=data / "val", config=TrainConfig(**FAST))
    assert not (tmp_path / "r").exists()


def test_a_hold_out_without_landslides_names_the_draw(tmp_path):
    """A held-out draw that missed every landslide failed with 'check the masks, or map their values with
    --label-map' (found by an audit); the fix is another draw."""
    from lsmap.data.dataset import hold_out
    from lsmap.io.patches import read_mask, write_patch

    make_patches(tmp_path / "d", 10, seed=5)
    for p in find_patches(tmp_path / "d")[2:]:  # landslides in patches 0 and 1 only
        write_patch(tmp_path / "d", p.id, read_image(p.image)[0], np.zeros_like(read_mask(p.mask)))
    seed = next(s for s in range(100) if {"0", "1"}.isdisjoint(q.id for q in hold_out(find_patches(tmp_path / "d"),
                                                                                          0.2, s)[1]))
    with pytest.raises(InputError, match=r"the 2 patches held out for validation \(ids .*\) hold no landslide pixel; "
                                         r"draw others with another `seed` or a larger `val_fraction`"):
        train(tmp_path / "r", train_dir=tmp_path / "d", config=TrainConfig(**FAST | {"seed": seed}))


def test_unseen_patches_without_landslides_are_refused_unless_asked(tmp_path):
    """--unseen scored a landslide-free remainder silently as F1 0 (the labels were checked before the filter)."""
    from lsmap.io.patches import read_mask

    make_patches(tmp_path / "d", 4, seed=6)
    result = train(tmp_path / "r", train_dir=tmp_path / "d", config=TrainConfig(**FAST | {"steps": 2, "val_fraction": 0}),
                   progress=False)
    for i in ("7", "8"):  # added afterwards, landslide-free (other images: a training image is seen, by content)
        p = find_patches(tmp_path / "d")[0]
        write_patch(tmp_path / "d", i, read_image(p.image)[0] + int(i), np.zeros_like(read_mask(p.mask)))
    with pytest.raises(InputError, match=r"the unseen masks hold no landslide pixel \(value 1\) in 2 masks.*"
                                         r"to count false alarms on stable ground, allow it with `allow_no_landslides`"):
        evaluate([result.last_path], tmp_path / "d", unseen=True, device="cpu")
    # ... which, asked for, scores the false alarms there (an audit: stable ground could not be scored at all)
    from lsmap.learn.evaluate import format_table

    scored = evaluate([result.last_path], tmp_path / "d", unseen=True, device="cpu", allow_no_landslides=True)
    assert scored.landslide_pixels == 0 and scored.pixel["tp"] == scored.pixel["fn"] == 0
    assert scored.pixel["fp"] + scored.pixel["tn"] == 2 * 32 * 32
    assert f"no landslide in these masks: only false alarms are measured, {scored.pixel['fp']:,} of 2,048" \
        in format_table(scored)


def test_a_spatial_hold_out_of_tiled_patches(tmp_path):
    """`val_split` spatial: a block of the scene validates, the overlapping training patches are left out; patches
    without lsmap tile's index are refused with the fix."""
    import rasterio
    from rasterio.transform import from_origin

    from lsmap.data.tile import tile_scene

    rng = np.random.default_rng(3)
    scene, labels = rng.normal(1.0, 0.1, (14, 160, 96)).astype("float32"), (rng.random((160, 96)) < 0.05)
    scene[:12, labels] += 0.6
    for path, arr in ((tmp_path / "s.tif", scene), (tmp_path / "l.tif", labels[None].astype("uint8"))):
        with rasterio.open(path, "w", driver="GTiff", width=96, height=160, count=len(arr), dtype=arr.dtype,
                           crs="EPSG:32645", transform=from_origin(500000, 3000000, 10, 10)) as dst:
            dst.write(arr)
    tile_scene(tmp_path / "s.tif", tmp_path / "p", size=32, overlap=8, labels=tmp_path / "l.tif")
    config = TrainConfig(**FAST | {"steps": 2, "val_split": "spatial", "seed": 1})
    result = train(tmp_path / "run", train_dir=tmp_path / "p", config=config, progress=False)
    card = read_card(result.last_path)
    assert "a block of the scene held out (" in card.data and " training patches overlapping it left out)" in card.data
    (folder, fitted), = card.train["fitted_on"].items()
    (_, validated), = card.train["validated_on"].items()
    assert set(fitted).isdisjoint(validated) and len(fitted) + len(validated) < 28  # some left out
    with pytest.raises(InputError, match=r"no patch index \(index.gpkg\): a spatial hold-out"):
        train(tmp_path / "run2", train_dir=make_patches(tmp_path / "plain", 6, seed=2), config=config)


def test_domain_bn_scores_source_patches_in_the_source_domain(tmp_path):
    """Validation always ran in the target's batch-norm domain: held-out source patches (and refine's choice on the
    labelled source) were scored through a shifted target's statistics (found by a code review: F1 0.03 against
    0.99 in the source's). fit's val_domain says which domain the validation patches are."""
    from lsmap.core.bands import get_profile
    from lsmap.core.metrics import scores
    from lsmap.learn.domain_bn import SOURCE
    from lsmap.learn.models import load_checkpoint
    from lsmap.learn.train import Source, validate

    make_patches(tmp_path / "src", 8, seed=1)
    make_patches(tmp_path / "tgt", 8, seed=3, offset=3.0, masks=False)
    src, tgt = find_patches(tmp_path / "src"), find_patches(tmp_path / "tgt")
    st = patch_stats(src, "l4s14")
    cfg = TrainConfig(**FAST | {"steps": 25, "val_every": 25, "domain_bn": True})
    val = PatchDataset(src, st, "l4s14")
    sources = [Source(PatchDataset(src, st, "l4s14"), "lovasz+ohem", 1.0, 0, name="source"),
               Source(PatchDataset(tgt, st, "l4s14"), "lovasz+ohem", 0.0, 1, name="target")]
    card = ModelCard("tiny-unet", list(get_profile("l4s14").bands), stats=st.to_dict())
    res = fit(sources, val, cfg, tmp_path / "run", card=card, progress=False, val_domain=SOURCE)
    module, _ = load_checkpoint(res.last_path)
    loader = torch.utils.data.DataLoader(val, batch_size=8)
    in_source = scores(validate(module, loader, torch.device("cpu"), cfg, domain=SOURCE))["f1"]
    in_target = scores(validate(module, loader, torch.device("cpu"), cfg))["f1"]
    assert res.history[-1]["f1"] == pytest.approx(in_source) and in_source > in_target + 0.3


def test_a_moved_encoder_weights_file_does_not_stop_resume_or_refine(data, tmp_path):
    """The card keeps the encoder_weights path; resume and refine asked for the file again, though the run's or the
    init checkpoint's weights replace it (found by a code review: MissingInputError once the file had moved)."""
    import dataclasses
    import warnings
    from pathlib import Path

    from safetensors.torch import save_file

    from lsmap.learn.models import build_model
    from lsmap.learn.refine.rounds import RefineConfig, refine

    enc = tmp_path / "enc.safetensors"
    save_file({k: v.contiguous() for k, v in build_model("tiny-unet", 14).state_dict().items()}, str(enc))
    cfg = TrainConfig(**FAST | {"steps": 4, "val_every": 2, "encoder_weights": str(enc)})
    first = train(tmp_path / "run", train_dir=data / "train", val_dir=data / "val", config=cfg, progress=False)
    enc.unlink()
    resumed = train(tmp_path / "run", train_dir=data / "train", val_dir=data / "val", resume=True, progress=False,
                    config=dataclasses.replace(cfg, steps=6))
    assert read_card(resumed.last_path).train["encoder_weights"] == str(enc)  # still recorded
    make_patches(tmp_path / "tgt", 4, seed=3, masks=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = refine([str(first.best_path)], data / "train", tmp_path / "tgt", tmp_path / "ref",
                     RefineConfig(rounds=1, steps=2, device="cpu", amp=False, guard=False, pos_thresh=0.5,
                                  neg_thresh=0.4999), progress=False)  # a barely trained model: every pixel selected
    assert out.models and Path(out.models[0]).exists()


def test_a_ctrl_c_while_best_is_written_keeps_the_best_score_of_the_file(data, tmp_path, monkeypatch):
    """The best score was taken before best.* was written: a Ctrl-C while writing it saved that score in
    last_state.pt, and the resumed run compared with a score no file held (found by a code review)."""
    import json

    import lsmap.learn.train as train_module

    real, calls = train_module.save_checkpoint, {"best": 0}

    def interrupted(path, *args, **kwargs):
        if Path(path).name == "best":
            calls["best"] += 1
            if calls["best"] == 2:
                raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(train_module, "save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):  # at the second best (step 20 or 30 of this seeded run)
        fit(_sources(data), _val(data), TrainConfig(**FAST), tmp_path / "r", card=_card(data), progress=False)
    state = torch.load(tmp_path / "r" / "last_state.pt", weights_only=True)
    on_disk = json.loads((tmp_path / "r" / "best.json").read_text())["metrics"]
    assert json.loads(state["best_metrics"])["step"] == on_disk["step"] and state["best_f1"] == on_disk["f1"]


def test_an_overwriting_run_keeps_the_previous_one_until_it_saves_its_own(run, data, tmp_path):
    """--overwrite deleted the finished run before the new one had written anything: a Ctrl-C in its first minutes
    left an empty folder, and an --init checkpoint inside it was gone (found by the failure audit). The previous
    run's files are set aside and come back when the new run ends before its first save; a killed run's are
    recovered by the next one."""
    import os

    from lsmap.io.locks import owner_tag
    from lsmap.learn.run_folder import ASIDE_PREFIX, RUN_FILES

    out, _ = run
    shutil.copytree(out, tmp_path / "r")
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir() if p.name in RUN_FILES}
    broken = _sources(data, lambda d: _Interrupt(d, 8 * 3))  # Ctrl-C before the first validation
    with pytest.raises(KeyboardInterrupt):
        fit(broken, _val(data), TrainConfig(**FAST), tmp_path / "r", card=_card(data), init=tmp_path / "r" / "best",
            overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir() if p.name in RUN_FILES} == before
    assert not list((tmp_path / "r").glob(f"{ASIDE_PREFIX}*"))
    # a run killed (no Python left to put them back) before its first save: the next start restores them
    gone = owner_tag().replace(f"-{os.getpid()}-", "-999999999-")
    aside = tmp_path / "r" / f"{ASIDE_PREFIX}{gone}"
    aside.mkdir()
    for name in before:
        os.replace(tmp_path / "r" / name, aside / name)
    with pytest.raises(OutputExistsError):  # the restored run is refused without overwrite again
        train(tmp_path / "r", train_dir=data / "train", val_dir=data / "val", config=TrainConfig(**FAST))
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir() if p.name in RUN_FILES} == before
    # a run that saves its own replaces the previous one
    fit(_sources(data), _val(data), TrainConfig(**FAST), tmp_path / "r", card=_card(data), overwrite=True,
        progress=False)
    assert (tmp_path / "r" / "last.safetensors").read_bytes() != before["last.safetensors"]
    assert not list((tmp_path / "r").glob(f"{ASIDE_PREFIX}*"))


class _Diverge(_Interrupt):
    """Wraps a dataset and returns NaN images from the ``after``-th item on (a training loss that becomes NaN)."""

    def __getitem__(self, key):
        self.calls += 1
        item = self.ds[key]
        if self.calls >= self.after:
            item = {**item, "image": torch.full_like(item["image"], float("nan"))}
        return item


def test_an_overwriting_run_that_diverges_after_its_first_save_gives_the_previous_one_back(run, data, tmp_path):
    """The previous run was set aside only until the new run's first save: an overwriting run whose loss became NaN
    later left its own broken files, and the finished run was gone (found by an audit). It stays aside until the
    new run has finished, and comes back when the new run diverges."""
    from lsmap.learn.run_folder import ASIDE_PREFIX, RUN_FILES

    out, _ = run
    shutil.copytree(out, tmp_path / "r")
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir() if p.name in RUN_FILES}
    failing = _sources(data, lambda d: _Diverge(d, 8 * 15))  # at step 15, after the save of step 10
    with pytest.raises(TrainingError):
        fit(failing, _val(data), TrainConfig(**FAST), tmp_path / "r", card=_card(data), overwrite=True,
            progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir() if p.name in RUN_FILES} == before
    assert not list((tmp_path / "r").glob(f"{ASIDE_PREFIX}*"))


def test_an_overwriting_run_interrupted_or_killed_after_its_first_save_stays_resumable(run, data, tmp_path):
    """The review of the change above: an interrupted overwriting run gave the previous run back and dropped its
    own work, and after a kill the next --resume deleted the new run's checkpoints and resumed the old run. A run
    that saved its last is kept and resumed; the run it replaced goes, as when it finishes."""
    import os

    from lsmap.io.locks import owner_tag
    from lsmap.learn.run_folder import ASIDE_PREFIX, RUN_FILES, load_state

    out, _ = run
    shutil.copytree(out, tmp_path / "r")
    old_last = (tmp_path / "r" / "last.safetensors").read_bytes()
    failing = _sources(data, lambda d: _Interrupt(d, 8 * 15))  # Ctrl-C at step 15, after the save of step 10
    with pytest.raises(KeyboardInterrupt):
        fit(failing, _val(data), TrainConfig(**FAST), tmp_path / "r", card=_card(data), overwrite=True,
            progress=False)
    assert (tmp_path / "r" / "last.safetensors").read_bytes() != old_last
    assert load_state(tmp_path / "r" / "last_state.pt")["step"] == 14  # the interrupted step is not counted
    assert not list((tmp_path / "r").glob(f"{ASIDE_PREFIX}*"))
    new = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir() if p.name in RUN_FILES}
    # killed instead (no Python left to settle it): the next start keeps the new run's files
    gone = owner_tag().replace(f"-{os.getpid()}-", "-999999999-")
    aside = tmp_path / "r" / f"{ASIDE_PREFIX}{gone}"
    shutil.copytree(out, aside)
    res = fit(_sources(data), _val(data), TrainConfig(**FAST), tmp_path / "r", card=_card(data), resume=True,
              progress=False)
    assert res.best_path.parent == tmp_path / "r" and not aside.exists()
    assert load_state(tmp_path / "r" / "last_state.pt")["step"] == FAST["steps"]
    assert new["last.safetensors"] != old_last


def test_a_diverged_model_is_never_saved_nor_loaded(data, tmp_path):
    """lr 1e30: the step-1 weights (about 1e30) gave NaN outputs, scored F1 0 and were saved as best, which detect
    then used to find nothing, with success (found by an audit). Training stops before saving them; weights with
    NaN or inf are neither saved nor loaded."""
    from lsmap.learn.models import load_checkpoint, save_checkpoint

    with pytest.raises(TrainingError, match=r"output on the validation patches became NaN or infinite by step 1"):
        fit(_sources(data), _val(data), TrainConfig(**FAST | {"lr": 1e30, "val_every": 1}), tmp_path / "r",
            card=_card(data), progress=False)
    assert not [p.name for p in (tmp_path / "r").glob("*.safetensors")]
    from lsmap.learn.models import build_model

    module = build_model("tiny-unet", 14)
    card = ModelCard(model="tiny-unet", bands=PROFILES["l4s14"].to_dict())
    save_checkpoint(tmp_path / "ok", module, card)
    with torch.no_grad():
        next(module.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match=r"bad.safetensors: not saved: the weights hold NaN or infinite"):
        save_checkpoint(tmp_path / "bad", module, card)
    assert not (tmp_path / "bad.safetensors").exists()
    # a file written by something else: refused on loading, with its name
    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "ok.safetensors")
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone().fill_(float("inf"))
    save_file(state, tmp_path / "ok.safetensors", metadata={"lsmap_card": json.dumps(card.to_dict())})
    with pytest.raises(CheckpointError, match=r"ok.safetensors: weights hold NaN or infinite values"):
        load_checkpoint(tmp_path / "ok")


def test_last_files_of_different_steps_are_not_resumed(run, data, tmp_path):
    """A save cut short between last.safetensors and last_state.pt (a full disk) left weights and state of different
    steps, and resume took them and exited 0 (found by the failure audit). The three files are now put in place
    together; a mismatch is refused."""
    from lsmap.learn.run_folder import save_state

    out, _ = run
    shutil.copytree(out, tmp_path / "r")
    state = torch.load(tmp_path / "r" / "last_state.pt", weights_only=True)
    save_state(tmp_path / "r" / "last_state.pt", {**state, "step": int(state["step"]) - 3})
    with pytest.raises(CheckpointError, match=r"last.safetensors is of step 30 but last_state.pt of step 27: a save "
                                              r"was cut short"):
        train(tmp_path / "r", train_dir=data / "train", val_dir=data / "val", config=TrainConfig(**FAST | {"amp": True}),
              resume=True, progress=False)
    assert not list((tmp_path / "r").glob(".lsmap-last-*"))


def test_resume_without_run(data, tmp_path):
    with pytest.raises(MissingInputError, match="no interrupted run to resume"):
        train(tmp_path / "new", train_dir=data / "train", val_dir=data / "val", config=TrainConfig(**FAST), resume=True)


def _foreign_checkpoint(run, path, profile: str):
    """A copy of the run's best card with another band profile, on a tiny U-Net of that width."""
    from lsmap.learn.models import save_checkpoint
    from lsmap.learn.tiny_unet import TinyUNet

    card = read_card(run[0] / "best")
    idx = [L4S_BANDS.index(b) for b in PROFILES[profile].bands]
    card.bands = list(PROFILES[profile].bands)
    card.stats = {**card.stats, "mean": [card.stats["mean"][i] for i in idx], "std": [card.stats["std"][i] for i in idx],
                  "bands": list(PROFILES[profile].bands)}
    save_checkpoint(path, TinyUNet(PROFILES[profile].count), card)
    return run[0]


def test_init_from_checkpoint_of_other_bands_refused(run, data, tmp_path):
    _foreign_checkpoint(run, tmp_path / "s2", "s2")
    with pytest.raises(CheckpointError, match="trained on bands"):
        fit(_sources(data), _val(data), TrainConfig(**FAST), tmp_path / "x", card=_card(data), init=tmp_path / "s2",
            progress=False)
    assert not (tmp_path / "x").exists()


def test_domain_bn_keeps_separate_statistics(data, tmp_path):
    make_patches(tmp_path / "target", 8, seed=3, offset=3.0, masks=False)
    tgt = find_patches(tmp_path / "target")
    src = _sources(data)
    # target stream normalised with the *source* stats, so its BN inputs really differ
    target_ds = PatchDataset(tgt, src[0].dataset.stats, "l4s14")
    config = TrainConfig(**FAST | {"steps": 10, "domain_bn": True})
    result = fit(src + [Source(target_ds, weight=0.0, domain=1)], _val(data), config, tmp_path / "d",
                 card=_card(data), progress=False)
    state = read_state_dict(result.best_path)
    rm = state["enc1.1.running_mean"]
    assert rm.shape == (2, 16)
    assert (rm[1] - rm[0]).abs().mean() > 1.0  # target inputs are 3 source-std higher
    assert read_card(result.best_path).domain_bn is True


def test_a_target_with_some_masks_is_read_for_its_images(data, tmp_path):
    """`target_dir` gives images for domain BN only; a target mask folder missing some files (a few patches labelled to
    score the target) was refused as "image and mask ids do not match" (noticed in session 16)."""
    make_patches(tmp_path / "target", 4, seed=3, offset=3.0)
    (tmp_path / "target" / "mask" / "mask_1.h5").unlink()
    result = train(tmp_path / "r", train_dir=data / "train", val_dir=data / "val", target_dir=tmp_path / "target",
                   config=TrainConfig(**FAST | {"steps": 2, "val_every": 2, "domain_bn": True}), progress=False)
    assert read_card(result.best_path).domain_bn is True


def test_schedule():
    c = TrainConfig(steps=100, lr=1.0, warmup=10)
    assert lr_at(0, c) == pytest.approx(0.1) and lr_at(9, c) == pytest.approx(1.0)
    assert lr_at(10, c) == pytest.approx(1.0) and lr_at(99, c) < 0.05
    assert all(lr_at(s, c) >= lr_at(s + 1, c) for s in range(10, 99))
    cos = TrainConfig(steps=100, lr=1.0, warmup=0, schedule="cosine")
    assert lr_at(50, cos) == pytest.approx(0.5)
    assert TrainConfig(optimizer="sgd").peak_lr == 1e-2 and TrainConfig().decay == 1e-2


def test_device_paths_on_cpu(monkeypatch):
    """The CUDA-only options are decided by small functions: exercise their CUDA branches on a CPU."""
    import lsmap.learn.device
    import lsmap.learn.train

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert loader_options(cpu, 0) == {"num_workers": 0, "pin_memory": False, "persistent_workers": False}
    assert loader_options(cuda, 2)["pin_memory"] and loader_options(cuda, 2)["persistent_workers"]
    assert not grad_scaler_enabled(cpu, True)
    monkeypatch.setattr(lsmap.learn.train, "amp_dtype", lambda d: torch.float16)
    assert grad_scaler_enabled(cuda, True) and not grad_scaler_enabled(cuda, False)
    monkeypatch.setattr(lsmap.learn.train, "amp_dtype", lambda d: torch.bfloat16)
    assert not grad_scaler_enabled(cuda, True)
    scaler = torch.amp.GradScaler("cpu", enabled=False)  # the disabled path fit uses on CPU
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=1.0)
    scaler.scale((p * 2).sum()).backward()
    scaler.step(opt)
    assert torch.equal(p.detach(), -torch.ones(2))


@pytest.mark.parametrize("scale,channels_last", [(1.0, False), (2.5, True), (4.0, False)])
def test_scaled_forward_returns_input_resolution(scale, channels_last):
    from lsmap.learn.tiny_unet import TinyUNet

    m = TinyUNet(3).eval()
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    seen = []
    m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape))
    out = scaled_forward(m, torch.randn(2, 3, 20, 20), scale, amp=True, channels_last=channels_last)
    assert out.shape == (2, 2, 20, 20) and out.dtype == torch.float32
    side = round(20 * scale)
    assert seen[0][-1] == side + (-side) % 32


def test_bad_inputs(tmp_path, data):
    cfg = TrainConfig(**FAST)
    (tmp_path / "empty" / "img").mkdir(parents=True)
    with pytest.raises(InputError, match="holds no .h5 patch images"):
        train(tmp_path / "o1", train_dir=tmp_path / "empty", val_dir=data / "val", config=cfg)
    make_patches(tmp_path / "nomask", 2, size=16)
    (tmp_path / "nomask" / "mask" / "mask_1.h5").unlink()
    with pytest.raises(InputError, match="images without mask: 1"):
        train(tmp_path / "o2", train_dir=tmp_path / "nomask", val_dir=data / "val", config=cfg)
    make_patches(tmp_path / "nan", 2, size=16)
    write_patch(tmp_path / "nan", "1", np.full((14, 16, 16), np.nan, np.float32), np.zeros((16, 16), np.uint8))
    with pytest.raises(InputError, match="image_1.h5: patch has no finite value"):
        train(tmp_path / "o3", train_dir=tmp_path / "nan", val_dir=data / "val", config=cfg)
    make_patches(tmp_path / "five", 2, size=16, bands=5)  # no band names, 5 bands: counted against the set
    with pytest.raises(BandMismatchError, match="'rgbn' expects 4 bands but the file has 5"):
        train(tmp_path / "o4", train_dir=tmp_path / "five", val_dir=data / "val", config=cfg, bands="rgbn")
    with pytest.raises(MissingBandError, match="image_0.h5: no band B8A"):
        train(tmp_path / "o4", train_dir=data / "train", val_dir=data / "val", config=cfg, bands="B8A,B4")
    with pytest.raises(InputError, match="`data` ROOT or `train_dir` DIR"):
        train(tmp_path / "o5", config=cfg)
    with pytest.raises(InputError, match="unknown model 'nope'; choose one of: unet-resnet18"):
        train(tmp_path / "o6", train_dir=data / "train", val_dir=data / "val", config=TrainConfig(model="nope"))
    with pytest.raises(InputError, match="unknown loss 'nope'"):
        train(tmp_path / "o7", train_dir=data / "train", val_dir=data / "val", config=TrainConfig(**FAST | {"loss": "nope"}))
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 8))


def test_evaluate_takes_each_models_bands_by_name(run, data, tmp_path):
    """An rgb model on the 14-band patches takes B4, B3, B2; with a 14-band model the ensemble reads
    both sets; explicit `bands` without a model's band is refused naming it."""
    out = _foreign_checkpoint(run, tmp_path / "rgb", "rgb")
    alone = evaluate([tmp_path / "rgb"], data / "val", device="cpu")
    both = evaluate([out / "best", tmp_path / "rgb"], data / "val", device="cpu")
    assert alone.patches == both.patches > 0
    with pytest.raises(MissingBandError, match=r"no bands B1, B5.*needed by .*best"):
        evaluate([out / "best", tmp_path / "rgb"], data / "val", device="cpu", bands="rgbn")


def test_evaluate_checks_given_statistics_against_the_models_bands(run, data, tmp_path):
    # found by the API audit: 11-band statistics for a 14-band model were a tensor-size RuntimeError traceback,
    # and a GeoTIFF given for the statistics a UnicodeDecodeError
    from lsmap.core.normalize import BandStats

    out, _ = run
    BandStats((1.0,) * 11, (0.5,) * 11, 10).save(tmp_path / "s11.json")
    with pytest.raises(InputError, match=r"`stats`: statistics have 11 bands but the scene's profile 'l4s14' has 14"):
        evaluate([out / "best"], data / "val", device="cpu", stats=tmp_path / "s11.json")
    (tmp_path / "scene.tif").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError, match=r"scene.tif: not a band statistics JSON file \(binary content\)"):
        evaluate([out / "best"], data / "val", device="cpu", stats=tmp_path / "scene.tif")


def test_global_norm_baseline_card(data, tmp_path):
    cfg = TrainConfig(**FAST | {"steps": 10, "loss": "ce", "norm": "global", "augment": False})
    result = train(tmp_path / "g", train_dir=data / "train", val_dir=data / "val", config=cfg, progress=False)
    card = read_card(result.best_path)
    assert card.train["norm"] == "model" and card.train["loss"] == "ce"
    ev = evaluate([result.best_path], data / "val", device="cpu")
    assert ev.norm == ["model"]  # trained in float32, evaluated with bfloat16 autocast: close, not equal
    assert ev.pixel["f1"] == pytest.approx(result.best_metrics["f1"], abs=0.02)
    assert json.loads(json.dumps(ev.to_dict()))["objects"]["n_true"] > 0


def test_hugging_face_layout_with_domain_bn(data, tmp_path):
    """``--data ROOT`` in the Hugging Face layout; domain BN learns target statistics from the val images."""
    import shutil

    root = tmp_path / "hf"
    for split, src in (("train", data / "train"), ("validation", data / "val")):
        shutil.copytree(src / "img", root / "images" / split)
        shutil.copytree(src / "mask", root / "annotations" / split)
    cfg = TrainConfig(**FAST | {"steps": 4, "val_every": 2, "domain_bn": True})
    result = train(tmp_path / "run", data=root, config=cfg, progress=False)
    card = read_card(result.best_path)
    assert card.domain_bn and "train 16, validation 8 patches" in card.data
    assert [s["domain"] for s in card.train["sources"]] == [0, 1] and card.train["sources"][1]["weight"] == 0.0
    rm = read_state_dict(result.best_path)["enc1.1.running_mean"]
    assert not torch.equal(rm[0], rm[1])
    # the validation images took part (their batch-norm statistics, not their labels): recorded as adapted on
    assert {k: len(v) for k, v in card.adapted_on.items()} == {str((root / "images" / "validation").resolve()): 8}
    assert str((root / "images" / "validation").resolve()) not in card.trained_on
    # ... and by content: evaluate counts them in the folder they were copied from
    assert len(card.adapted_digests) == 8 and len(card.trained_digests) == 16
    scored = evaluate([result.best_path], data / "val", device="cpu")
    assert scored.adapted_on == 8 and scored.seen_in_training == 0


def test_evaluate_runs_the_models_folded_with_the_same_counts(run, data, monkeypatch):
    """evaluate runs each model with its batch norms folded into its convolutions, as detect does (less work per
    patch), and counts the same pixels as the model as trained."""
    import lsmap.learn.evaluate as ev_mod

    out, _ = run
    seen = []
    real = ev_mod.predict_proba

    def spy(members, *a, **k):
        seen.append(sum(type(x) is torch.nn.BatchNorm2d for m in members for x in m.module.modules()))
        return real(members, *a, **k)

    monkeypatch.setattr(ev_mod, "predict_proba", spy)
    folded = evaluate([out / "best"], data / "val", device="cpu")
    assert seen and set(seen) == {0}, "no batch norm left in the models evaluate runs"
    monkeypatch.setattr(ev_mod, "folded_members", list)
    seen.clear()
    as_trained = evaluate([out / "best"], data / "val", device="cpu")
    assert set(seen) != {0}, "the tiny U-Net has batch norms to fold"
    assert counts_agree(folded.pixel, as_trained.pixel)
    if folded.pixel == as_trained.pixel:
        assert folded.objects == as_trained.objects


def test_a_run_folder_inside_the_patches_or_among_a_users_files_is_refused(data, tmp_path):
    """-o PATCHES/img was accepted and wrote the run's files among the patches, and -o FOLDER of the user's (notes.txt)
    was taken without --overwrite (found by an audit). Both are refused before any work, nothing written; an empty
    folder is fine."""
    shutil.copytree(data / "train", tmp_path / "pc")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    for out in (tmp_path / "pc" / "img", tmp_path / "pc", tmp_path / "pc" / "runs" / "r"):
        with pytest.raises(InputError, match=r"this output is inside the input folder .*pc, whose files the run reads"):
            train(out, train_dir=tmp_path / "pc", config=TrainConfig(**FAST), overwrite=True)
    (tmp_path / "ud").mkdir()
    (tmp_path / "ud" / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(OutputOwnershipError, match=r"ud: holds files that are not a training run's \(notes.txt\); "
                                                       r"give a new or empty folder as `out_dir`"):
            train(tmp_path / "ud", train_dir=tmp_path / "pc", config=TrainConfig(**FAST), overwrite=overwrite)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if "ud" not in p.parts) == before
    assert [p.name for p in (tmp_path / "ud").iterdir()] == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    train(tmp_path / "empty", train_dir=tmp_path / "pc", config=TrainConfig(**FAST | {"steps": 2, "val_every": 2}),
          progress=False)
    assert (tmp_path / "empty" / "last.safetensors").exists()


def test_a_held_out_mask_that_is_no_mask_file_is_named(tmp_path):
    """A held-out patch whose mask file is really an image file was reported as 'no landslide pixel in the held-out
    patches'; the cause is the file without a 'mask' dataset, which is now said (found by an audit)."""
    from lsmap.data.dataset import hold_out

    make_patches(tmp_path / "p", 8, seed=1)
    patches = find_patches(tmp_path / "p")
    _, val = hold_out(patches, 0.2, 0)
    shutil.copyfile(val[0].image, val[0].mask)
    with pytest.raises(InputError, match=rf"{val[0].mask.name}: no 'mask' dataset"):
        train(tmp_path / "r", train_dir=tmp_path / "p", config=TrainConfig(**FAST))
    assert not (tmp_path / "r").exists()


def test_a_run_resumed_on_a_smaller_machine_takes_the_workers_it_allows(run, monkeypatch):
    """`workers` is capped at 4 per CPU; a run saved with more on a larger machine was refused on resume unless
    --workers was given again (the review). The loader count is the machine's, not a setting of the results."""
    import dataclasses

    from lsmap.learn.train import resume_config

    out, _ = run
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    big = resume_config(out, {"workers": 64}, {"workers"})
    assert big.workers == 64  # asked for: kept, and TrainConfig.check refuses it with the machine's count
    with pytest.raises(InputError, match="`workers` must be at most 4"):
        big.check()
    monkeypatch.setattr("lsmap.learn.train.saved_config",
                        lambda d: dataclasses.replace(TrainConfig(**FAST), workers=16))
    assert resume_config(out, {}, set()).workers == 4
