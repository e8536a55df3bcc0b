"""Self-training domain adaptation: rounds of pseudo labelling an unlabelled target and retraining.

Two strategies from the Landslide4Sense 2022 winners (the competition report, Ghorbanzadeh et al. 2022):

``threshold`` (1st place, progressive label refinement)
    The current best models (round 0: the given ones) predict every target patch (normalised as
    chosen below); probabilities ``>= pos`` become landslide, ``<= neg`` background,
    the rest is ignored. Each model is then trained further (starting from its previous weights)
    on the source labels with its recipe loss plus the target pseudo labels with soft cross
    entropy; the new models label the target for the next round.

``uncertainty`` (3rd place, uncertainty-aware teacher-student)
    A fixed teacher (the given models, pre-trained on the source, in every round; ``teacher=
    "previous"``: the previous student from round 2 on) labels each target pixel with its predicted class; Monte-Carlo dropout on the first feature map gives a
    per-pixel variance, and over the whole target set the lowest-variance ``keep_bg`` of predicted
    background and ``keep_ls`` of predicted landslide pixels are kept. A student (starting from
    the first teacher's weights) is trained on labelled and pseudo-labelled batches alike, both
    with mix-up (lambda ~ Beta(a, a)) and cross entropy + Jaccard.

What guards the rounds (issue 16, measured on ``bench/cross_region.py``):

- Target normalisation (``norm``): the target's own statistics (the 1st place's separated
  normalisation) or the source's; ``auto`` chooses, before round 1 and without target labels, the
  one under which the given models predict a landslide share closest to the source labels'
  (:func:`choose_norm`). The choice is in ``norm.json``, every round summary and every model card
  (``train["refine"]``).
- Degenerate pseudo labels (``guard``): a landslide share collapsing towards 0, or growing round
  after round, stops the run before training on them; the models of the last good round are kept
  and a warning (:class:`~lsmap.errors.LsmapWarning`) says so (:func:`_guard`).
- Checkpoint (``select``): without a ``val`` folder, each round keeps its best checkpoint on the
  labelled source (the 1st place chose on validation), not the last one.
- Label-free proxies (:func:`proxies`): F1 on the labelled source (or ``val``), mean confidence on
  the target and the distance of its predicted landslide share from the source's; a round below
  the given models on any of them prints a warning.

Layout of a run folder ``OUT``::

    OUT/refine.json            run configuration and inputs (checked on --resume)
    OUT/source_stats.json      band statistics of the labelled source
    OUT/target_stats.json      band statistics of the target (its own normalisation; nodata fill left out)
    OUT/norm.json              how the target is normalised (own / model) and the label-free evidence
    OUT/round_<i>/pseudo/mask_<id>.h5          pseudo labels (L4S mask, 255 = ignored)
    OUT/round_<i>/maps/prob_<id>.npy           teacher landslide probability (float16)
    OUT/round_<i>/maps/uncertainty_<id>.npy    MC-dropout variance (float16; uncertainty only)
    OUT/round_<i>/selection.json               pixels per class, thresholds / cut-offs
    OUT/round_<i>/models/<k>/...               training output of each model (checkpoints)
    OUT/round_<i>/summary.json                 written last: the round is finished

A round is finished when its ``summary.json`` exists; ``resume`` continues after the last
finished round and redoes a partial one (its folder is removed first).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lsmap.core.bands import BandProfile, get_profile
from lsmap.core.checks import as_list, check_bool, check_int, check_number
from lsmap.core.constants import IGNORE_INDEX
from lsmap.core.metrics import Confusion, confusion, scores
from lsmap.core.normalize import BandStats
from lsmap.data.stats import patch_stats
from lsmap.errors import (
    InputError,
    LsmapWarning,
    MissingInputError,
    NoModelError,
    OutputExistsError,
    user_level,
)
from lsmap.io.locks import output_lock
from lsmap.io.outputs import OWNER_MARKER, check_owned_dir, check_writable, is_empty_dir, mark_owned, output_path
from lsmap.io.patches import (
    Patch,
    check_labels,
    find_patches,
    patch_digests,
    patch_keys,
    read_mask,
    read_observed,
    read_patch_image,
)
from lsmap.io.rasters import atomic_output
from lsmap.learn.crf import crf_refine, require, rgb_indices
from lsmap.learn.device import resolve_device
from lsmap.learn.ensemble import folded_members, inference_context, load_ensemble, predict_proba
from lsmap.learn.models import ModelCard, checkpoint_paths, read_card
from lsmap.learn.refine import STRATEGIES
from lsmap.learn.refine.pseudo import check_thresholds, confidence, ignore_unobserved, threshold_labels
from lsmap.learn.train import Source, TrainConfig, check_train_memory, fit

RUN_FILE = "refine.json"
SUMMARY_FILE = "summary.json"
#: What ``lsmap refine`` writes into its folder: ``--overwrite`` replaces a folder holding nothing else.
OUTPUT_PATTERNS = (RUN_FILE, "source_stats.json", "target_stats.json", "norm.json", "round_*/**")
#: Settings that must not change when a run is resumed.
_RESUME_KEYS = ("strategy", "bands", "pos_thresh", "neg_thresh", "keep_bg", "keep_ls", "mc_passes", "mc_p", "crf",
                "norm", "teacher")
#: Most self-training rounds a run takes (the winners ran 3; each round writes its maps and models).
MAX_ROUNDS = 100
#: How the target is normalised: chosen per run (``auto``), or forced.
REFINE_NORMS = ("auto", "own", "model")
#: Where the uncertainty strategy's teacher comes from in round 2 and later.
TEACHERS = ("fixed", "previous")
#: How each round's checkpoint is chosen when no ``val`` folder is given.
SELECTS = ("source", "last")
#: How much closer (log ratio) the source statistics' predicted landslide share must be for ``auto`` to leave ``own``.
NORM_MARGIN = float(np.log(1.2))
#: Tolerances of the label-free proxies before refine warns that a round looks worse than the source model.
PROXY_TOLERANCE = {"source_f1": 0.01, "target_confidence": 0.01, "share_distance": float(np.log(1.5) + 1e-9)}


@dataclass
class RefineConfig:
    """Settings of a refinement run.

    Attributes:
        strategy: ``threshold`` (1st place) or ``uncertainty`` (3rd place).
        rounds: Number of self-training rounds.
        steps: Training steps per round and model (``None``: 1000).
        batch_size: Batch size per source (``None``: the model card's, else 8).
        lr: Learning rate (``None``: the model card's, else the training default).
        pos_thresh: Threshold strategy: probability at or above which a pixel becomes landslide.
        neg_thresh: Threshold strategy: probability at or below which a pixel becomes background.
        keep_bg: Uncertainty strategy: fraction of predicted-background pixels kept.
        keep_ls: Uncertainty strategy: fraction of predicted-landslide pixels kept.
        mc_passes: Uncertainty strategy: Monte-Carlo dropout passes per model.
        mc_p: Uncertainty strategy: dropout probability on the first feature map.
        mixup_alpha: Mix-up ``Beta(a, a)`` parameter for both streams (``None``: 0 for
            threshold, i.e. off, and 0.4 for uncertainty).
        source_loss: Loss on source labels (``None``: the card's recipe for threshold, else
            ``ce+jaccard``).
        pseudo_loss: Loss on pseudo labels (``None``: ``softce`` for threshold, ``ce+jaccard``
            for uncertainty).
        pseudo_weight: Weight of the pseudo-label stream relative to the source stream.
        crf: Sharpen the teacher probabilities with a dense CRF before pseudo labelling.
        bands: Band set taken (by name) from source and target patches (``None``: the first
            model card's).
        device: ``auto``, ``cpu`` or ``cuda``.
        seed: Seed of every random generator (round ``i`` trains with ``seed + i``).
        amp: Mixed precision where it helps.
        predict_batch: Patches per forward pass when labelling and scoring the target.
        norm: Normalisation of the target: ``own`` (its own statistics, the 1st place's separated
            normalisation), ``model`` (the source statistics), or ``auto``: the one under which the
            given models predict a landslide share of the target closest to the source labels'
            (:func:`choose_norm`; label-free, recorded in every round summary and model card).
        teacher: Uncertainty strategy: ``fixed`` (the given models label the target in every
            round, the 3rd place's design) or ``previous`` (the previous round's student).
        select: Checkpoint of each round without ``val``: ``source`` (best F1 on the labelled
            source patches, checked every ``steps // 4``) or ``last``.
        guard: Stop (keep the previous round's models, warn) when the pseudo labels degenerate:
            a landslide share below ``collapse`` times the source labels', or, after round 1, one
            that grew since the last round to above ``growth`` times the largest of the source
            labels', the given models' predicted share and round 1's (:func:`_guard`).
        collapse: See ``guard``.
        growth: See ``guard``.
    """

    strategy: str = "threshold"
    rounds: int = 3
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    pos_thresh: float = 0.7
    neg_thresh: float = 0.3
    keep_bg: float = 0.9
    keep_ls: float = 0.7
    mc_passes: int = 10
    mc_p: float = 0.3
    mixup_alpha: float | None = None
    source_loss: str | None = None
    pseudo_loss: str | None = None
    pseudo_weight: float = 1.0
    crf: bool = False
    bands: str | None = None
    device: str = "auto"
    seed: int = 0
    amp: bool = True
    predict_batch: int = 16
    norm: str = "auto"
    teacher: str = "fixed"
    select: str = "source"
    guard: bool = True
    collapse: float = 0.01
    growth: float = 1.5

    def check(self) -> None:
        """Raise :class:`InputError` on a setting of the wrong type or out of range, before any work (as
        :meth:`lsmap.learn.config.TrainConfig.check`): ``mixup_alpha`` NaN ran and wrote NaN into refine.json, and
        ``lr`` NaN or -1 was refused only by round 1's training, over a folder already written (found by an audit).
        """
        if self.strategy not in STRATEGIES:
            raise InputError(f"unknown refinement strategy '{self.strategy}'; choose one of: {', '.join(STRATEGIES)}")
        check_int("rounds", self.rounds, 1, MAX_ROUNDS)  # 10^20 ran 345 rounds, 1.1 GB, before it was killed
        for name in ("steps", "batch_size"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1)
        check_int("predict_batch", self.predict_batch, 1)
        check_int("seed", self.seed, 0)
        if self.lr is not None:
            check_number("lr", self.lr, 0, lo_open=True)
        check_number("pos_thresh", self.pos_thresh, 0, 1)
        check_number("neg_thresh", self.neg_thresh, 0, 1)
        check_thresholds(self.pos_thresh, self.neg_thresh)
        for name in ("keep_bg", "keep_ls"):
            check_number(name, getattr(self, name), 0, 1, lo_open=True)
        check_int("mc_passes", self.mc_passes, 1)
        if self.mc_passes < 2 and self.strategy == "uncertainty":
            raise InputError(f"`mc_passes` must be at least 2 to measure a variance; got {self.mc_passes}")
        check_number("mc_p", self.mc_p, 0, 1, hi_open=True)
        if self.mixup_alpha is not None:
            check_number("mixup_alpha", self.mixup_alpha, 0)
        check_number("pseudo_weight", self.pseudo_weight, 0, lo_open=True)
        for name in ("crf", "amp", "guard"):
            check_bool(name, getattr(self, name))
        if self.bands is not None:
            get_profile(self.bands)
        for name, value, choices in (("`norm`", self.norm, REFINE_NORMS), ("`teacher`", self.teacher, TEACHERS),
                                     ("`select`", self.select, SELECTS)):
            if value not in choices:
                raise InputError(f"unknown {name} '{value}'; choose one of: {', '.join(choices)}")
        check_number("collapse", self.collapse, 0, 1, hi_open=True)
        check_number("growth", self.growth, 1, lo_open=True)

    @property
    def mixup(self) -> float:
        """Effective mix-up parameter."""
        if self.mixup_alpha is not None:
            return float(self.mixup_alpha)
        return 0.4 if self.strategy == "uncertainty" else 0.0


@dataclass
class RefineResult:
    """What a refinement run produced.

    Attributes:
        out_dir: The run folder.
        rounds: The summary of every finished round (``round_<i>/summary.json``), in order.
        models: Checkpoints of the final round (the given models when no round ran).
        resumed_after: Number of rounds found finished when the run started.
    """

    out_dir: Path
    rounds: list[dict] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    resumed_after: int = 0

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"out_dir": str(self.out_dir), "rounds": self.rounds, "models": self.models,
                "resumed_after": self.resumed_after}


# --- inputs -------------------------------------------------------------------------------------


def check_target_folder(target: Path) -> None:
    """Refuse a dataset root as the target: read as its training split (find_patches' default), refine adapted the
    models to their own labelled training patches and reported that as the target's F1 (found by an audit).

    Raises:
        InputError: ``target`` holds splits; the message names them and a folder to give.
    """
    from lsmap.io.patches import SPLITS, is_plain_folder, split_image_folder

    if not target.is_dir() or is_plain_folder(target):
        return
    splits = {s: f for s in SPLITS if (f := split_image_folder(target, s)) is not None}
    if not splits:
        return  # find_patches says what the folder lacks
    plain = [f.parent for f in splits.values() if f.name == "img"]
    hint = f"give e.g. {plain[-1]}" if plain else "give the folder of the patches to adapt to (DIR/img/)"
    raise InputError(f"{target}: a dataset root with splits ({', '.join(f'{s}: {f}' for s, f in splits.items())}); "
                     f"`target` is one folder of the patches to adapt to: {hint}")


def _say_target_labels(patches: Sequence[Patch], target: Path) -> None:
    """Warn when only some target patches have masks: the target F1 is then theirs alone, and a mask folder missing
    files by mistake should not go unnoticed."""
    labelled = sum(p.mask is not None for p in patches)
    if 0 < labelled < len(patches):
        warnings.warn(f"{target}: {labelled} of {len(patches)} target patches have masks; the target F1 is scored on "
                      f"those {labelled} alone (the masks are never trained on)", LsmapWarning, stacklevel=user_level())


def _batches(patches: Sequence[Patch], profile: BandProfile, size: int) -> Iterator[tuple[list[Patch], np.ndarray]]:
    """Consecutive patches of equal shape, read and stacked ``(N, C, H, W)``."""
    group: list[Patch] = []
    images: list[np.ndarray] = []
    for p in patches:
        image, _ = read_patch_image(p, profile)
        if images and (image.shape != images[0].shape or len(images) == size):
            yield group, np.stack(images)
            group, images = [], []
        group.append(p)
        images.append(image)
    if images:
        yield group, np.stack(images)


def _crf(prob: np.ndarray, image: np.ndarray, profile: BandProfile) -> np.ndarray:
    return crf_refine(prob, image, rgb=rgb_indices(profile.bands))


def _ensemble_threshold(members: Sequence[Any]) -> float:
    return float(np.mean([m.card.threshold for m in members]))


def score_target(members: Sequence[Any], patches: Sequence[Patch], stats: BandStats, profile: BandProfile, *,
                 crf: bool = False, batch: int = 16, amp: bool = True, progress: bool = False,
                 desc: str = "scoring target", domain: int | None = None) -> dict | None:
    """Pixel scores of the ensemble on the labelled patches among ``patches`` (``None`` if none has a mask).

    The ensemble predicts with the target's own statistics ``stats`` and the mean of its members'
    card thresholds (after the dense CRF with ``crf``), as :func:`refine` labels the target; ``domain``:
    the batch-norm domain of members with domain batch norms (default the target's; the source's for source
    patches).
    """
    import torch

    from lsmap.io.progress import progress_bar


    labelled = [p for p in patches if p.mask is not None]
    if not labelled:
        return None
    device = next(members[0].module.parameters()).device
    thr = _ensemble_threshold(members)
    total = Confusion()
    with progress_bar(total=len(labelled), desc=desc, unit="patch", disable=not progress, leave=False) as bar, \
            inference_context(device, amp):
        for group, x in _batches(labelled, profile, batch):
            prob = predict_proba(members, torch.from_numpy(x).to(device), stats, amp=amp, domain=domain).cpu().numpy()
            for k, p in enumerate(group):
                pk = _crf(prob[k], x[k], profile) if crf else prob[k]
                total = total + confusion(pk > thr, read_mask(p.mask))
            bar.update(len(group))
    out = scores(total)
    out["threshold"] = thr
    return out


def source_prior(patches: Sequence[Patch]) -> float:
    """Landslide share of the labelled pixels of ``patches`` (ignored pixels left out)."""
    ls = n = 0
    for p in patches:
        m = read_mask(p.mask)
        ls += int(np.count_nonzero(m == 1))
        n += int(np.count_nonzero(m <= 1))
    return ls / n if n else 0.0


def target_view(members: Sequence[Any], patches: Sequence[Patch], stats: BandStats, profile: BandProfile, *,
                batch: int = 16, amp: bool = True) -> dict:
    """Label-free view of the ensemble on ``patches``: predicted landslide share and mean confidence.

    Only observed pixels count (:func:`lsmap.io.patches.read_observed`: not nodata, clouds, padding).
    """
    import torch


    device = next(members[0].module.parameters()).device
    thr = _ensemble_threshold(members)
    ls = n = 0
    conf = 0.0
    with inference_context(device, amp):
        for group, x in _batches(patches, profile, batch):
            prob = predict_proba(members, torch.from_numpy(x).to(device), stats, amp=amp).cpu().numpy()
            for k, p in enumerate(group):
                obs = read_observed(p, x[k])
                valid = np.ones(prob[k].shape, bool) if obs is None else obs
                ls += int(np.count_nonzero((prob[k] > thr) & valid))
                n += int(np.count_nonzero(valid))
                conf += float(confidence(prob[k])[valid].sum())
    return {"share": ls / n if n else 0.0, "confidence": conf / n if n else None}


def _share_distance(share: float, prior: float) -> float:
    """How far a predicted landslide share is from the source prior: ``|log((share + e) / (prior + e))|``."""
    eps = 1e-4
    return float(abs(np.log((share + eps) / (prior + eps))))


def choose_norm(members: Sequence[Any], patches: Sequence[Patch], s_stats: BandStats, t_stats: BandStats,
                profile: BandProfile, prior: float, mode: str = "auto", *, batch: int = 16, amp: bool = True) -> dict:
    """Choose how to normalise the target: its own statistics or the source's (label-free).

    ``auto`` picks the normalisation under which the given models predict a landslide share of the
    target closest (in log ratio) to the landslide share of the source labels; ``model`` must be
    closer by :data:`NORM_MARGIN` (a factor of 1.2), else ``own`` (the 1st place's default) stays. The share is what the pseudo labels inherit: a normalisation that makes the models
    see (almost) no landslide makes every round train toward "no landslide" (or the reverse),
    while a confidence or entropy criterion cannot see that (a model that predicts nothing is
    confident). ``own`` and ``model`` force the choice; both views are measured and recorded anyway.

    Returns:
        ``{"chosen", "mode", "criterion", "prior", "own": view, "model": view}`` (views from
        :func:`target_view` plus their ``distance`` to the prior).
    """
    views = {}
    for name, stats in (("own", t_stats), ("model", s_stats)):
        v = target_view(members, patches, stats, profile, batch=batch, amp=amp)
        views[name] = v | {"distance": _share_distance(v["share"], prior)}
    if mode == "auto":
        chosen = "model" if views["model"]["distance"] < views["own"]["distance"] - NORM_MARGIN else "own"
    else:
        chosen = mode
    return {"chosen": chosen, "mode": mode, "prior": prior,
            "criterion": "predicted landslide share of the target closest to the source labels' (log ratio)",
            **views}


def _worse(now: dict, ref: dict) -> list[str]:
    """The label-free proxies on which ``now`` is below ``ref`` by more than :data:`PROXY_TOLERANCE`."""
    out = []
    if now.get("source_f1") is not None and ref.get("source_f1") is not None \
            and now["source_f1"] < ref["source_f1"] - PROXY_TOLERANCE["source_f1"]:
        out.append(f"F1 on the labelled source {now['source_f1']:.3f} < {ref['source_f1']:.3f}")
    if now.get("target_confidence") is not None and ref.get("target_confidence") is not None \
            and now["target_confidence"] < ref["target_confidence"] - PROXY_TOLERANCE["target_confidence"]:
        out.append(f"mean confidence on the target {now['target_confidence']:.3f} < {ref['target_confidence']:.3f}")
    if _share_distance(now["target_share"], ref["target_share"]) > PROXY_TOLERANCE["share_distance"]:
        out.append(f"predicted landslide share of the target {now['target_share']:.4f}, more than 1.5 times away "
                   f"from the source model's {ref['target_share']:.4f}")
    return out


def proxies(members: Sequence[Any], check_patches: Sequence[Patch], check_stats: BandStats, tgt_patches: Sequence[Patch],
            t_used: BandStats, profile: BandProfile, prior: float, *, batch: int = 16, amp: bool = True,
            check_domain: int | None = None) -> dict:
    """Label-free proxies of a model's quality on the target (no target label is read).

    ``source_f1``: F1 on the labelled ``check_patches`` (the ``val`` folder, else the source);
    ``target_confidence`` and ``target_share``: :func:`target_view` of the target under the
    chosen normalisation; ``share_distance``: how far that share is from the source prior.
    """
    f1 = score_target(members, check_patches, check_stats, profile, batch=batch, amp=amp, domain=check_domain)
    view = target_view(members, tgt_patches, t_used, profile, batch=batch, amp=amp)
    return {"source_f1": f1["f1"] if f1 else None, "target_confidence": view["confidence"],
            "target_share": view["share"], "prior": prior, "share_distance": _share_distance(view["share"], prior)}


def _warn(message: str, notes: list[str]) -> None:
    notes.append(message)
    warnings.warn(message, LsmapWarning, stacklevel=user_level())


# --- pseudo labels ------------------------------------------------------------------------------


def _save_map(path: Path, values: np.ndarray) -> None:
    np.save(path, np.asarray(values, np.float16))


def _write_mask(path: Path, mask: np.ndarray) -> None:
    import h5py


    with atomic_output(path, overwrite=True) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("mask", data=np.asarray(mask, np.uint8), compression="gzip")


def _pixel_summary(kept_bg: int, kept_ls: int, total: int, conf_sum: float) -> dict:
    kept = kept_bg + kept_ls
    return {
        "pixels": total,
        "kept": {"background": kept_bg, "landslide": kept_ls},
        "ignored": total - kept,
        "kept_fraction": kept / total if total else 0.0,
        "mean_confidence_kept": conf_sum / kept if kept else None,
    }


def pseudo_label_threshold(members: Sequence[Any], patches: Sequence[Patch], stats: BandStats, profile: BandProfile,
                           round_dir: Path, config: RefineConfig, progress: bool = True, desc: str = "pseudo labels") -> dict:
    """Label the target with the ensemble's thresholded probabilities; write masks, maps and selection stats.

    Returns:
        The selection statistics (also written to ``round_dir/selection.json``), including
        ``target_before``: scores of the ensemble on the labelled target patches, if any.
    """
    import torch

    from lsmap.io.progress import progress_bar


    device = next(members[0].module.parameters()).device
    thr = _ensemble_threshold(members)
    (round_dir / "pseudo").mkdir(parents=True, exist_ok=True)
    (round_dir / "maps").mkdir(parents=True, exist_ok=True)
    kept_bg = kept_ls = total = seen = 0
    conf_sum = conf_all = 0.0
    conf_mat, labelled = Confusion(), False
    with progress_bar(total=len(patches), desc=desc, unit="patch", disable=not progress) as bar, \
            inference_context(device, config.amp):
        for group, x in _batches(patches, profile, config.predict_batch):
            prob = predict_proba(members, torch.from_numpy(x).to(device), stats, amp=config.amp).cpu().numpy()
            for k, p in enumerate(group):
                pk = _crf(prob[k], x[k], profile) if config.crf else prob[k]
                observed = read_observed(p, x[k])
                mask = ignore_unobserved(threshold_labels(pk, config.pos_thresh, config.neg_thresh),
                                         observed)  # never from clouds, nodata, padding
                seen += mask.size if observed is None else int(observed.sum())
                _write_mask(round_dir / "pseudo" / f"mask_{p.id}.h5", mask)
                _save_map(round_dir / "maps" / f"prob_{p.id}.npy", pk)
                conf = confidence(pk)
                kept = mask != IGNORE_INDEX
                kept_bg += int(np.count_nonzero(mask == 0))
                kept_ls += int(np.count_nonzero(mask == 1))
                total += mask.size
                conf_sum += float(conf[kept].sum())
                conf_all += float(conf.sum())
                if p.mask is not None:
                    labelled = True
                    conf_mat = conf_mat + confusion(pk > thr, read_mask(p.mask))
            bar.update(len(group))
    sel = {"strategy": "threshold", "pos_thresh": config.pos_thresh, "neg_thresh": config.neg_thresh,
           "crf": config.crf, **_pixel_summary(kept_bg, kept_ls, total, conf_sum), "observed": seen,
           "mean_confidence": conf_all / total if total else None}
    if labelled:
        sel["target_before"] = {**scores(conf_mat), "threshold": thr}
    return sel


def pseudo_label_uncertainty(members: Sequence[Any], patches: Sequence[Patch], stats: BandStats, profile: BandProfile,
                             round_dir: Path, config: RefineConfig, progress: bool = True, desc: str = "pseudo labels") -> dict:
    """Label the target with the teacher's MC-dropout predictions and class-balanced selection.

    A pixel's predicted class is the arg-max of the MC-dropout mean (landslide when its
    probability is >= 0.5); its uncertainty is the MC-dropout variance.

    Two passes: the first runs the MC-dropout passes, writes the probability and uncertainty
    maps (float16) and fills the selector's histograms (and scores the deterministic teacher on
    the labelled target patches); the second reads the maps back and writes the pseudo labels.
    """
    import torch

    from lsmap.io.progress import progress_bar
    from lsmap.learn.refine.pseudo import (
        ClassBalancedSelector,
        confidence,
        mc_dropout_proba,
        to_float16_nonneg,
        uncertainty_labels,
    )

    torch.manual_seed(config.seed)
    device = next(members[0].module.parameters()).device
    thr = _ensemble_threshold(members)
    maps = round_dir / "maps"
    maps.mkdir(parents=True, exist_ok=True)
    (round_dir / "pseudo").mkdir(parents=True, exist_ok=True)
    selector = ClassBalancedSelector((config.keep_bg, config.keep_ls))
    conf_mat, labelled = Confusion(), False
    conf_all = 0.0
    total = seen = 0
    with progress_bar(total=len(patches), desc=f"{desc} (MC dropout)", unit="patch", disable=not progress) as bar, \
            inference_context(device, config.amp):
        for group, x in _batches(patches, profile, config.predict_batch):
            xt = torch.from_numpy(x).to(device)
            mean, var = mc_dropout_proba(members, xt, stats, config.mc_passes, config.mc_p, amp=config.amp)
            mean, var = mean.cpu().numpy(), var.cpu().numpy()
            det = None
            if any(p.mask is not None for p in group):
                det = predict_proba(members, xt, stats, amp=config.amp).cpu().numpy()
            for k, p in enumerate(group):
                pk = _crf(mean[k], x[k], profile) if config.crf else mean[k]
                p16 = np.asarray(pk, np.float16)
                u16 = to_float16_nonneg(var[k])
                _save_map(maps / f"prob_{p.id}.npy", p16)
                _save_map(maps / f"uncertainty_{p.id}.npy", u16)
                observed = read_observed(p, x[k])  # on the bands read, kept for the selection pass
                if observed is not None:
                    np.save(maps / f"observed_{p.id}.npy", observed)
                seen += p16.size if observed is None else int(observed.sum())
                selector.add(u16, p16.astype(np.float32) >= 0.5, observed)
                conf_all += float(confidence(p16.astype(np.float32)).sum())
                total += p16.size
                if det is not None and p.mask is not None:
                    labelled = True
                    dk = _crf(det[k], x[k], profile) if config.crf else det[k]
                    conf_mat = conf_mat + confusion(dk > thr, read_mask(p.mask))
            bar.update(len(group))
    classes = selector.finalize()
    kept_bg = kept_ls = 0
    conf_sum = 0.0
    for p in progress_bar(patches, desc=f"{desc} (selection)", unit="patch", disable=not progress, leave=False):
        p16 = np.load(maps / f"prob_{p.id}.npy").astype(np.float32)
        u16 = np.load(maps / f"uncertainty_{p.id}.npy")
        pred = (p16 >= 0.5).astype(np.uint8)
        # unobserved pixels are never kept: the same pixels as counted above (all the file's bands were judged here
        # before, so a smaller band set counted and selected different pixels; found by a code review)
        obs_file = maps / f"observed_{p.id}.npy"
        keep = selector.select(u16, pred, np.load(obs_file) if obs_file.exists() else None)
        mask = uncertainty_labels(pred, keep)
        _write_mask(round_dir / "pseudo" / f"mask_{p.id}.h5", mask)
        kept_bg += int(np.count_nonzero(mask == 0))
        kept_ls += int(np.count_nonzero(mask == 1))
        conf_sum += float(confidence(p16)[keep].sum())
    sel = {"strategy": "uncertainty", "mc_passes": config.mc_passes, "mc_p": config.mc_p,
           "keep_bg": config.keep_bg, "keep_ls": config.keep_ls, "crf": config.crf, "classes": classes,
           **_pixel_summary(kept_bg, kept_ls, total, conf_sum), "observed": seen,
           "mean_confidence": conf_all / total if total else None}
    if labelled:
        sel["target_before"] = {**scores(conf_mat), "threshold": thr}
    return sel


# --- rounds -------------------------------------------------------------------------------------


def _json_write(path: Path, obj: dict) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def _run_record(models: Sequence[str], source: Path, target: Path, val: Path | None, config: RefineConfig) -> dict:
    return {"models": [str(Path(m).resolve()) for m in models], "source": str(source.resolve()),
            "target": str(target.resolve()), "val": str(val.resolve()) if val else None, "config": asdict(config)}


def _check_resumable(out_dir: Path) -> None:
    """Refuse to resume where there is no refine run (no :data:`RUN_FILE`): a missing or empty folder started a new
    run without a word, where ``lsmap train --resume`` is refused (found by an audit).

    Raises:
        InputError: a folder with round folders or other files but no run record.
        MissingInputError: no run there at all.
    """
    if (out_dir / RUN_FILE).exists():
        return
    if out_dir.is_dir():
        if any(out_dir.glob("round_*")):
            raise InputError(f"{out_dir}: has round folders but no {RUN_FILE}; not a refine run folder, choose another "
                             f"`out_dir`")
        if any(p.name != OWNER_MARKER for p in out_dir.iterdir()):  # a folder of the user's (even '.'): not ours
            raise InputError(f"{out_dir}: no refine run to resume here (no {RUN_FILE}) and the folder holds other "
                             f"files; give the run's folder, or an empty or new one")
    raise MissingInputError(f"{out_dir}: no refine run to resume (no {RUN_FILE}); start without `resume`")


def _check_resume(out_dir: Path, record: dict) -> None:
    path = out_dir / RUN_FILE
    _check_resumable(out_dir)
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: unreadable ({e}); pass `overwrite` to start again") from None
    diffs = [k for k in ("models", "source", "target") if old.get(k) != record[k]]
    defaults = asdict(RefineConfig())  # a key missing from an older run's record had its default then
    diffs += [k for k in _RESUME_KEYS if old.get("config", {}).get(k, defaults[k]) != record["config"][k]]
    if diffs:
        raise InputError(f"{out_dir}: cannot resume, the run was started with other {', '.join(diffs)}; "
                         f"use the same settings, another `output`, or `overwrite`")


def finished_rounds(out_dir: str | os.PathLike) -> list[dict]:
    """Summaries of the consecutive finished rounds (``round_1``, ``round_2``, ...) of a run folder."""
    out = []
    i = 1
    while (p := Path(out_dir) / f"round_{i}" / SUMMARY_FILE).exists():
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError):
            break  # written atomically, so only a foreign file gets here: redo the round
        i += 1
    return out


def refine(models: Sequence[str | os.PathLike], source: str | os.PathLike, target: str | os.PathLike,
           out_dir: str | os.PathLike, config: RefineConfig | None = None, *, val: str | os.PathLike | None = None,
           resume: bool = False, overwrite: bool = False, progress: bool | None = None) -> RefineResult:
    """Run self-training rounds on an unlabelled target patch folder.

    Args:
        models: Checkpoints of the starting model(s) (an ensemble for ``threshold``; the teacher
            for ``uncertainty``).
        source: Labelled patch folder (the models' training data or any labelled set).
        target: Target patch folder (e.g. from ``lsmap tile``; one folder, not a dataset root); masks there,
            if any, are used only to report F1 before and after each round, never for training.
        out_dir: Run folder (layout in the module docstring).
        config: Settings (default :class:`RefineConfig`).
        val: Optional labelled folder (or a dataset root's validation split) for choosing each round's best
            checkpoint (normalised with its own statistics); default: as ``config.select`` says (the best
            checkpoint on the labelled source, or the last one).
        resume: Continue a run in ``out_dir`` after its last finished round.
        overwrite: Replace an existing ``out_dir``.
        progress: Progress on stderr (``True`` or ``None``): bars on a terminal, elsewhere a line now
            and then (:mod:`lsmap.io.progress`) and one per training validation; ``False``: none.

    Returns:
        The summaries of all finished rounds and the final models.

    Raises:
        OutputExistsError: ``out_dir`` exists without ``resume`` or ``overwrite`` (before any work).
        MissingInputError: ``resume`` where there is no run (before any work).
        InputError: bad settings, empty or unusable folders, a resume with other settings.
        BandMismatchError: a source or target file with another band count than ``config.bands``.
        CheckpointError: unreadable models or models trained on another band profile.
    """

    progress = progress is None or bool(progress)
    config = config or RefineConfig()
    config.check()
    if config.crf:
        require()
    out_dir = output_path(out_dir, directory=True, name="out_dir")  # '' was Path('.'): rounds into the working folder
    if resume and overwrite:  # together they continued the old rounds under new settings, unchecked (a review)
        raise InputError("give `resume` (continue the run in the folder with its settings) or `overwrite` (start it "
                         "again), not both")
    if out_dir.exists() and not (resume or overwrite) and not is_empty_dir(out_dir):  # a script's makedirs first
        raise OutputExistsError(out_dir)
    if resume:
        _check_resumable(out_dir)
    if overwrite and not resume:
        check_owned_dir(out_dir, True, "refine", OUTPUT_PATTERNS, manifests=(RUN_FILE,))
    else:
        check_writable(out_dir)
    with output_lock(out_dir) if out_dir.parent.exists() else contextlib.nullcontext():
        return _refine(models, source, target, out_dir, config, val, resume, overwrite, progress)


def _refine(models, source, target, out_dir: Path, config: RefineConfig, val, resume: bool, overwrite: bool,
            progress: bool) -> RefineResult:
    model_paths = [str(m) for m in as_list("models", models)]
    if not model_paths:
        raise NoModelError()
    profile = get_profile(config.bands) if config.bands is not None else read_card(model_paths[0]).profile
    config = dataclasses.replace(config, bands=profile.name)
    device = resolve_device(config.device)
    load_ensemble(model_paths, "cpu", profile)  # validate the models before any work
    source, target = Path(source), Path(target)
    src_patches = find_patches(source, require_masks=True)
    check_labels(src_patches, None, "source", mappable=False)
    for m in model_paths:  # a batch that cannot fit is refused now, as train does (it had no check; an audit)
        check_train_memory(src_patches[0], profile, _train_config(read_card(m), config, config.seed, val is not None),
                           streams=2, fix="use a smaller `batch_size`")  # a source and a target batch per step
    check_target_folder(target)
    tgt_patches = find_patches(target, partial=True)  # a few labelled patches score the target (the rest unlabelled)
    _say_target_labels(tgt_patches, target)
    val_patches = find_patches(val, "validation", require_masks=True) if val is not None else None
    if val_patches:  # without a landslide every round's best was chosen on an F1 of 0 (found by an audit)
        check_labels(val_patches, None, "validation", mappable=False)
    record = _run_record(model_paths, source, target, Path(val) if val else None, config)
    # a killed overwriting run is settled first: a resume is checked against the run it will continue (the
    # previous run may come back in place of a killed run without rounds; a review found the check made before)
    _recover_aside(out_dir)
    if resume:
        _check_resume(out_dir, record)
    s_stats = patch_stats(src_patches, profile, progress=progress, desc="source statistics")
    # Nodata fill (0.0 in every band, as lsmap tile writes it) is left out: a target with nodata
    # margins would otherwise be normalised by statistics that are not its own (detect does the same).
    t_stats = patch_stats(tgt_patches, profile, progress=progress, desc="target statistics")
    v_stats = patch_stats(val_patches, profile, progress=progress, desc="validation statistics") if val_patches else None

    # Inputs are valid: now touch the outputs.
    aside = None
    if overwrite and out_dir.exists() and not resume:
        check_owned_dir(out_dir, True, "refine", OUTPUT_PATTERNS, manifests=(RUN_FILE,))
        from lsmap.io.outputs import input_paths

        for p in input_paths(model_paths, source, target, val, [checkpoint_paths(m) for m in model_paths]):
            if p.resolve().is_relative_to(out_dir.resolve()):  # it would be moved aside, then deleted
                raise InputError(f"{p}: this input lies in the run folder {out_dir} that `overwrite` replaces; "
                                 f"copy it elsewhere first, or write the new run to another folder")
        # the previous run stays (beside, hidden) until this one has finished a round (it was deleted first: a
        # Ctrl-C in the first round lost every finished round; found by the failure audit)
        aside = _aside_path(out_dir)
        os.replace(out_dir, aside)
    try:
        return _rounds(out_dir, aside, record, s_stats, t_stats, model_paths, src_patches, tgt_patches, val_patches,
                       v_stats, profile, device, config, progress)
    except BaseException:
        if aside is not None and aside.exists() and not finished_rounds(out_dir):
            shutil.rmtree(out_dir, ignore_errors=True)
            os.replace(aside, out_dir)
        raise


def _aside_path(out_dir: Path) -> Path:
    from lsmap.io.locks import owner_tag

    return out_dir.parent / f".{out_dir.name}.lsmap-previous-run-{owner_tag()}"


def _recover_aside(out_dir: Path) -> None:
    """A killed overwriting run's set-aside previous run: back in place when the killed run finished no round,
    else deleted."""
    from lsmap.io.locks import glob_escape, stale

    for aside in out_dir.parent.glob(f".{glob_escape(out_dir.name)}.lsmap-previous-run-*"):
        if not aside.is_dir() or not stale(aside.name):
            continue
        if out_dir.exists() and finished_rounds(out_dir):
            shutil.rmtree(aside, ignore_errors=True)
        else:
            shutil.rmtree(out_dir, ignore_errors=True)
            os.replace(aside, out_dir)


def _rounds(out_dir: Path, aside: Path | None, record: dict, s_stats, t_stats, model_paths, src_patches, tgt_patches,
            val_patches, v_stats, profile, device, config: RefineConfig, progress: bool) -> RefineResult:
    """The rounds of :func:`refine` in ``out_dir`` (the previous run set aside at ``aside`` until one is done)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / OWNER_MARKER).exists():
        mark_owned(out_dir, "refine")
    _json_write(out_dir / RUN_FILE, record)
    s_stats.save(out_dir / "source_stats.json")
    t_stats.save(out_dir / "target_stats.json")
    done = finished_rounds(out_dir)
    for stale in out_dir.glob("round_*"):
        suffix = stale.name.removeprefix("round_")
        if stale.is_dir() and (not suffix.isdigit() or int(suffix) > len(done)):
            shutil.rmtree(stale)  # a partial round: redo it
    result = RefineResult(out_dir, list(done), list(done[-1]["models"]) if done else model_paths, len(done))
    if done and done[-1].get("stopped"):
        return result
    ctx = _context(model_paths, src_patches, tgt_patches, val_patches, s_stats, t_stats, v_stats, profile, device,
                   config, progress)
    _json_write(out_dir / "norm.json", ctx["norm"])
    for i in range(len(done) + 1, config.rounds + 1):
        summary = _run_round(i, result.models, ctx, result.rounds, src_patches, tgt_patches, val_patches, s_stats,
                             v_stats, profile, device, out_dir, config, progress)
        result.rounds.append(summary)
        result.models = summary["models"]
        if aside is not None and not summary.get("stopped"):  # a round of this run refined: the previous run goes
            shutil.rmtree(aside, ignore_errors=True)
            aside = None
        if summary.get("stopped"):
            break
    if aside is not None:  # stopped by the guard before refining anything: the previous run stays (a re-audit:
        # it was deleted, and the command ended with success and no refined model in the folder)
        shutil.rmtree(out_dir)
        os.replace(aside, out_dir)
        warnings.warn(f"{out_dir}: this run stopped in its first round and refined nothing, so the previous run "
                      f"there is kept as it was", LsmapWarning, stacklevel=user_level())
        done = finished_rounds(out_dir)
        return RefineResult(out_dir, done, list(done[-1]["models"]) if done else model_paths, len(done))
    final_caution(result.rounds)
    return result


def final_caution(rounds: Sequence[dict]) -> str | None:
    """Warn (and return the message) when the run cannot vouch for its models.

    With target labels (a labelled target folder: scores only), a final target F1 below the given
    models' is said plainly. Without them, and with no round warning in the last round, the standing
    caution is said: the label-free checks miss small losses (``bench/cross_region.py`` measured two
    runs that lost 0.002 and 0.010 F1 with every check level or better).
    """
    if not rounds or rounds[-1].get("stopped"):
        return None
    before, after = rounds[0].get("target_f1_before"), rounds[-1].get("target_f1_after")
    if before is not None and after is not None:
        if after >= before:
            return None
        message = (f"the refined models score below the given models on the target's labels (F1 {before:.4f} -> "
                   f"{after:.4f}); keep the given models")
    elif rounds[-1].get("warnings"):
        return None
    else:
        message = ("the target has no labels, so whether the rounds improved it is not measured: the label-free "
                   "checks passed, but they miss small losses; score the models on a few labelled target patches "
                   "(lsmap evaluate) before relying on them")
    warnings.warn(message, LsmapWarning, stacklevel=user_level())
    return message


def _context(model_paths: list[str], src_patches, tgt_patches, val_patches, s_stats: BandStats, t_stats: BandStats,
             v_stats: BandStats | None, profile: BandProfile, device: Any, config: RefineConfig, progress: bool) -> dict:
    """What every round needs from the given models: the normalisation choice and their proxies."""
    members = folded_members(load_ensemble(model_paths, device, profile))
    prior = source_prior(src_patches)
    norm = choose_norm(members, tgt_patches, s_stats, t_stats, profile, prior, config.norm,
                       batch=config.predict_batch, amp=config.amp)
    t_used = t_stats if norm["chosen"] == "own" else s_stats
    from lsmap.learn.domain_bn import SOURCE

    # the source's own batch-norm domain on source patches (they were scored with the target's: a review)
    check = (val_patches, v_stats, None) if val_patches is not None else (src_patches, s_stats, SOURCE)
    p0 = proxies(members, check[0], check[1], tgt_patches, t_used, profile, prior, batch=config.predict_batch,
                 amp=config.amp, check_domain=check[2])
    return {"models": list(model_paths), "prior": prior, "norm": norm, "t_used": t_used, "check": check,
            "proxies": p0}


def _run_round(i: int, current: list[str], ctx: dict, previous: list[dict], src_patches: list[Patch],
               tgt_patches: list[Patch], val_patches: list[Patch] | None, s_stats: BandStats,
               v_stats: BandStats | None, profile: BandProfile, device: Any, out_dir: Path, config: RefineConfig,
               progress: bool) -> dict:
    """One round: pseudo labels from the teachers, the guard, training, proxies, scoring; writes ``round_<i>``.

    ``current`` are the models the previous round ended with (round 1: the given ones). The
    teachers are ``current``, except for ``uncertainty`` with ``teacher="fixed"``: the given models.
    """

    start = time.monotonic()
    notes: list[str] = []
    round_dir = out_dir / f"round_{i}"
    round_dir.mkdir(parents=True, exist_ok=True)
    teachers = ctx["models"] if config.strategy == "uncertainty" and config.teacher == "fixed" else list(current)
    t_used, norm = ctx["t_used"], ctx["norm"]
    members = load_ensemble(teachers, device, profile)
    if config.strategy == "threshold":  # Monte-Carlo dropout after the first convolution needs its batch norm apart
        members = folded_members(members)
    label = pseudo_label_threshold if config.strategy == "threshold" else pseudo_label_uncertainty
    sel = label(members, tgt_patches, t_used, profile, round_dir, config, progress, desc=f"round {i}: pseudo labels")
    before = sel.pop("target_before", None)
    _json_write(round_dir / "selection.json", sel)
    if sel["kept"]["background"] + sel["kept"]["landslide"] == 0:
        conf = sel.get("mean_confidence")
        raise InputError(f"round {i}: no target pixel passed the selection: the model is not confident anywhere "
                         f"on this target{f' (mean confidence {conf:.2f})' if conf is not None else ''}; loosen "
                         f"`pos_thresh`/`neg_thresh` or raise `keep_bg`/`keep_ls`, or check that the target is "
                         f"prepared like the source (bands, scale)")
    del members
    # over the observed pixels: a target with wide nodata margins diluted the share the guard tests (a review)
    observed = sel.get("observed") or sel["pixels"]
    share = sel["kept"]["landslide"] / observed if observed else 0.0
    guard = _guard(i, share, ctx["prior"], previous, config, start=norm[norm["chosen"]]["share"],
                   kept_background=sel["kept"]["background"], kept_landslide=sel["kept"]["landslide"])
    summary = {
        "round": i,
        "strategy": config.strategy,
        "teachers": list(teachers),
        "norm": {k: norm[k] for k in ("chosen", "mode", "criterion", "prior")}
        | {"share": {"own": norm["own"]["share"], "model": norm["model"]["share"]}},
        "pixels": sel["pixels"],
        "kept": sel["kept"],
        "ignored": sel["ignored"],
        "pseudo_share": share,
        "guard": guard,
        "mean_confidence": sel["mean_confidence"],
        "mean_confidence_kept": sel["mean_confidence_kept"],
        "target_f1_before": before["f1"] if before else None,
        "target_before": before,
    }
    if guard["tripped"] and config.guard:
        _warn(f"round {i}: {guard['reason']}; stopped refining and kept the models of "
              f"{'round ' + str(i - 1) if i > 1 else 'the start'} ({', '.join(current)})", notes)
        last = previous[-1]["proxies"] if previous else {"source": ctx["proxies"], "round": ctx["proxies"], "worse": []}
        summary |= {"stopped": True, "models": list(current), "models_kept": True,
                    "target_f1_after": before["f1"] if before else None, "target_after": before, "train": [],
                    "proxies": last}
    else:
        if guard["tripped"]:
            _warn(f"round {i}: {guard['reason']} (the guard is off: training on them anyway)", notes)
        pseudo = [dataclasses.replace(p, mask=round_dir / "pseudo" / f"mask_{p.id}.h5") for p in tgt_patches]
        students = list(current) if config.strategy == "threshold" else list(current[:1])
        select = "val" if val_patches is not None else config.select
        if val_patches is None and config.select == "source":
            val_patches, v_stats = src_patches, s_stats
        card_note = {"round": i, "strategy": config.strategy, "target_norm": norm["chosen"], "norm_mode": norm["mode"],
                     "norm_criterion": norm["criterion"], "predicted_share": summary["norm"]["share"],
                     "source_prior": ctx["prior"], "select": select,
                     "teacher": config.teacher if config.strategy == "uncertainty" else "previous",
                     "target": str(tgt_patches[0].image.parent.resolve()),
                     "selection": ({"pos_thresh": config.pos_thresh, "neg_thresh": config.neg_thresh}
                                   if config.strategy == "threshold" else
                                   {"keep_bg": config.keep_bg, "keep_ls": config.keep_ls, "mc_passes": config.mc_passes})}
        trained = []
        for k, init in enumerate(students):
            trained.append(train_student(init, src_patches, pseudo, val_patches, s_stats, t_used, v_stats, profile,
                                         round_dir / "models" / str(k), config, seed=config.seed + i,
                                         progress=progress, note=card_note))
        new_members = folded_members(load_ensemble([t["checkpoint"] for t in trained], device, profile))
        after = score_target(new_members, tgt_patches, t_used, profile, crf=config.crf, batch=config.predict_batch,
                             amp=config.amp, progress=progress, desc=f"round {i}: scoring target")
        now = proxies(new_members, ctx["check"][0], ctx["check"][1], tgt_patches, t_used, profile, ctx["prior"],
                      batch=config.predict_batch, amp=config.amp, check_domain=ctx["check"][2])
        worse = _worse(now, ctx["proxies"])
        if worse:
            _warn(f"round {i}: the refined model is below the source model on label-free proxies ("
                  f"{'; '.join(worse)}): it may map the target worse; check it before use", notes)
        summary |= {"models": [t["checkpoint"] for t in trained],
                    "target_f1_after": after["f1"] if after else None, "target_after": after,
                    "train": [t["metrics"] for t in trained],
                    "proxies": {"source": ctx["proxies"], "round": now, "worse": worse}}
    summary |= {"warnings": notes, "seconds": round(time.monotonic() - start, 1)}
    _json_write(round_dir / SUMMARY_FILE, summary)
    return summary


#: The guard's one-sided test: pseudo labels of which landslides are more than this share are refused (the source
#: labels hold a few percent; an audit saw 13 background and 1,896 landslide pixels kept from an uncalibrated model,
#: whose student's held-out precision fell from 0.41 to 0.15).
ONE_SIDED = 0.5


def _guard(i: int, share: float, prior: float, previous: list[dict], config: RefineConfig,
           start: float = 0.0, kept_background: int | None = None, kept_landslide: int | None = None) -> dict:
    """Degenerate pseudo labels: a landslide share collapsing towards 0, growing round after round, or labels
    nearly all landslide.

    Collapse: the share of target pixels pseudo-labelled landslide is below ``collapse`` times
    the landslide share of the source labels (the 1st place's 0.7 threshold keeps a few percent of
    the predicted landslide pixels on a shifted target, which is still a usable seed; the
    collapse seen on a real target was 24 pixels of 1.3 million). Growth (round 2 on): the share
    grew since the previous round and exceeds ``growth`` times the largest of the source labels'
    share, the share the given models predict on the target (``start``: a landslide-rich region
    may hold far more than the source) and round 1's: pseudo labels that feed a model's false
    positives back grow that way. One-sided: landslides are more than :data:`ONE_SIDED` of the pixels kept as
    pseudo labels (``kept_background``, ``kept_landslide``): a model sure of no background teaches its false
    positives.
    """
    ref = next((r["pseudo_share"] for r in previous if r.get("pseudo_share") is not None), None)
    last = previous[-1].get("pseudo_share") if previous else None
    out = {"tripped": False, "reason": None, "share": share, "prior": prior, "start_share": start, "round_1_share": ref,
           "collapse": config.collapse, "growth": config.growth, "on": config.guard}
    if share < config.collapse * prior:
        out |= {"tripped": True, "reason": f"pseudo labels collapsed: landslide share {share:.5f} of the target, "
                                           f"below {config.collapse:g} x the source labels' {prior:.4f}"}
    elif kept_landslide and kept_landslide > ONE_SIDED * (kept_landslide + (kept_background or 0)):
        out |= {"tripped": True, "reason": f"pseudo labels one-sided: {kept_landslide:,} landslide against "
                                           f"{kept_background or 0:,} background pixels kept; the model is not sure "
                                           f"of the target's background (is it calibrated? try `strategy` uncertainty)"}
    elif i > 1 and ref is not None and last is not None and share > last \
            and share > config.growth * max(prior, start, ref):
        out |= {"tripped": True, "reason": f"pseudo labels grew: landslide share {share:.5f} of the target, above "
                                           f"{config.growth:g} x max(source labels {prior:.4f}, given models' "
                                           f"prediction {start:.4f}, round 1 {ref:.5f})"}
    return out


def _train_config(card: Any, config: RefineConfig, seed: int, has_val: bool, norm: str | None = None):
    """The training configuration of a round: the init model's recipe with the round's overrides."""
    import dataclasses


    names = {f.name for f in dataclasses.fields(TrainConfig)}
    recipe = {k: v for k, v in (card.train or {}).items() if k in names}
    steps = config.steps if config.steps is not None else 1000
    tc = TrainConfig(**recipe)
    every = min(tc.val_every, max(1, steps // 4))
    return dataclasses.replace(
        tc, model=card.model, scale=card.scale, domain_bn=card.domain_bn, threshold=card.threshold,
        steps=steps, seed=seed, device=config.device, amp=config.amp,
        batch_size=config.batch_size if config.batch_size is not None else int(recipe.get("batch_size", 8)),
        lr=config.lr if config.lr is not None else tc.lr,
        warmup=min(tc.warmup_steps, steps // 10), val_every=every if has_val else steps,
        workers=0, norm=norm or tc.norm,
    )


def train_student(init: str, src_patches: list[Patch], pseudo_patches: list[Patch], val_patches: list[Patch] | None,
                  s_stats: BandStats, t_stats: BandStats, v_stats: BandStats | None, profile: BandProfile,
                  out_dir: Path, config: RefineConfig, *, seed: int, progress: bool = True,
                  note: dict | None = None) -> dict:
    """Train one model from checkpoint ``init`` on source labels plus target pseudo labels.

    The source stream is normalised with the source statistics, the pseudo-labelled target
    stream with the target's own (separated normalisation); with domain BN they use domains 0
    and 1. Losses: ``threshold`` uses the init model's recipe loss on the source and soft CE on
    pseudo labels; ``uncertainty`` uses CE + Jaccard on both, and both streams are mixed up.
    ``note`` goes into the model card's ``train["refine"]`` (the round, the target normalisation
    and how it was chosen).

    Returns:
        ``{"checkpoint": path, "metrics": validation metrics of that checkpoint or {}}``: the
        best checkpoint on ``val_patches`` when given, else the last one.
    """
    from lsmap.data.dataset import Augment, PatchDataset
    from lsmap.learn.domain_bn import SOURCE, TARGET

    card = read_card(init)
    # The card's training norm is the target's: detect's --norm auto then normalises as refine did.
    tc = _train_config(card, config, seed, val_patches is not None, (note or {}).get("target_norm"))
    recipe_loss = (card.train or {}).get("loss", "lovasz+ohem")
    if config.strategy == "threshold":
        src_loss, pseudo_loss = config.source_loss or recipe_loss, config.pseudo_loss or "softce"
    else:
        src_loss, pseudo_loss = config.source_loss or "ce+jaccard", config.pseudo_loss or "ce+jaccard"
    aug = Augment() if (card.train or {}).get("augment", True) else None
    sources = [
        Source(PatchDataset(src_patches, s_stats, profile, augment=aug), src_loss, 1.0, SOURCE, config.mixup, "source"),
        Source(PatchDataset(pseudo_patches, t_stats, profile, augment=aug), pseudo_loss, config.pseudo_weight, TARGET,
               config.mixup, "pseudo"),
    ]
    val = PatchDataset(val_patches, v_stats, profile) if val_patches is not None else None
    norm = (note or {}).get("target_norm")
    template = ModelCard(model=card.model, bands=list(profile.bands), stats=s_stats.to_dict(),
                         train={"refine": note} if note else {}, trained_on=patch_keys(src_patches, card.trained_on),
                         adapted_on=patch_keys(pseudo_patches, card.adapted_on),
                         trained_digests=patch_digests(src_patches, card.trained_digests),
                         adapted_digests=patch_digests(pseudo_patches, card.adapted_digests),
                         data=f"self-training ({config.strategy}) from {Path(init).name}: "
                              f"{len(src_patches)} labelled + {len(pseudo_patches)} pseudo-labelled patches"
                              + (f"; target normalised with its {'own' if norm == 'own' else 'source'} statistics "
                                 f"(detect's --norm auto follows train.norm = {norm})" if norm else ""))
    on_source = val_patches is src_patches  # refine's `select` "source": the labelled patches it trains on
    res = fit(sources, val, tc, out_dir, card=template, init=init, progress=progress,
              val_split="source (the labelled patches it trains on)" if on_source else "validation",
              val_domain=SOURCE if on_source else None)
    path = res.best_path if val is not None and res.best_path is not None and res.best_path.exists() else res.last_path
    return {"checkpoint": str(path), "metrics": res.best_metrics}
