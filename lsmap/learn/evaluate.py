"""Score models (one, or an averaged ensemble) on a labelled patch split with the benchmark metric.

Pixel precision, recall, F1 and IoU of the landslide class are computed from TP/FP/FN summed over
every patch of the split (as the Landslide4Sense benchmark does, not averaged per patch), plus
object-level scores (:func:`lsmap.core.metrics.object_scores`: a predicted connected component matches
a true one at IoU >= 0.5).

Normalisation (``norm``, :data:`lsmap.core.normalize.NORMS`): ``own`` normalises the data with its own statistics (separated
normalisation, computed over the evaluated split), ``model`` with each model's training
statistics, ``auto`` picks per model what it was trained with (``target`` for ``separated``,
``model`` for ``global``); explicit ``stats`` override all of them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lsmap.core.bands import BAND_NAMES, band_indices, get_profile
from lsmap.core.checks import as_list, check_bool, check_int, check_number, check_threshold
from lsmap.core.labels import parse_label_map
from lsmap.core.metrics import Confusion, ObjectScores, confusion, object_scores, scores
from lsmap.core.normalize import BandStats
from lsmap.core.norms import norm_mode, trained_norm
from lsmap.data.scan import check_stats
from lsmap.data.stats import patch_stats
from lsmap.errors import InputError, LsmapWarning, NoModelError, user_level
from lsmap.io.patches import check_labels, find_patches, is_plain_folder, read_mask, read_patch_image, recorded
from lsmap.learn.crf import crf_refine, require, rgb_indices
from lsmap.learn.device import resolve_device
from lsmap.learn.ensemble import folded_members, inference_context, load_ensemble, predict_proba


@dataclass
class EvalResult:
    """Scores of a model or ensemble on one split.

    Attributes:
        models: Checkpoint paths of the ensemble members.
        data: The evaluated folder, and ``split`` (``None`` for a plain patch folder, which has no splits).
        patches: Number of patches scored.
        threshold: Probability threshold used.
        tta: Whether flips were averaged.
        norm: Normalisation used per member (``own``, ``model`` or ``stats``).
        crf: Whether the ensemble probability was refined with a dense CRF before thresholding.
        pixel: Confusion counts (``tp, fp, fn, tn``) and ``precision, recall, f1, iou, accuracy``.
        objects: ``n_pred, n_true, matched, precision, recall, f1`` of connected components.
        seen_in_training: How many of the patches some member was trained on (its card's
            ``trained_on``, or by content its ``trained_digests``); above 0 the scores measure fit, not
            accuracy on new data.
        unseen: Whether only the patches no member was trained on were scored.
        adapted_on: How many of the patches some member was adapted to without their labels (its card's
            ``adapted_on``: refine's self-training, domain batch norms): the benchmark's transductive protocol,
            said so that a score on them is not read as one on images the models never saw.
        landslide_pixels: Landslide pixels in the scored masks (0: only false alarms were measured).
    """

    models: list[str]
    data: str
    split: str | None
    patches: int
    threshold: float
    tta: bool
    norm: list[str]
    crf: bool = False
    pixel: dict = field(default_factory=dict)
    objects: dict = field(default_factory=dict)
    seen_in_training: int = 0
    unseen: bool = False
    adapted_on: int = 0
    landslide_pixels: int = -1

    def to_dict(self) -> dict:
        """JSON-ready form."""
        from dataclasses import asdict

        return asdict(self)


def _member_norm(card, norm: str) -> str:
    return trained_norm(card.train) if norm == "auto" else norm


def _ensemble_bands(members: list, bands: str | None, data: object) -> tuple:
    """``(band set read from the patches, members)``: the given set, the members' one set, or the
    union of their sets in canonical order; members on a set other than the one read get the
    indices of their bands in it (:attr:`lsmap.learn.ensemble.Member.inputs`)."""
    sets = {tuple(m.card.bands) for m in members}
    if bands is not None:
        profile = get_profile(bands)
    elif len(sets) == 1:
        profile = members[0].card.profile
    else:
        profile = get_profile([b for b in BAND_NAMES if any(b in s for s in sets)])
    out = [m if tuple(m.card.bands) == profile.bands else
           dataclasses.replace(m, inputs=band_indices(profile.bands, m.card.profile, source=f"{data} (`bands`)",
                                                      user=m.source))
           for m in members]
    return profile, out


def evaluate(models: Sequence[str | os.PathLike], data: str | os.PathLike, *, split: str = "validation",
             tta: bool = False, stats: BandStats | str | os.PathLike | None = None, norm: str = "auto",
             device: str = "auto", batch_size: int = 16, threshold: float | None = None,
             object_iou: float = 0.5, crf: bool = False, bands: str | None = None, progress: bool = False,
             label_map: str | dict | None = None, unseen: bool = False,
             allow_no_landslides: bool = False) -> EvalResult:
    """Score the ensemble of ``models`` on the labelled patches of ``data``.

    Args:
        models: Checkpoints (``NAME.safetensors``, ``NAME.json`` or ``NAME``); several are averaged.
        data: Patch folder or dataset root; every image needs a mask.
        split: Split to read from a dataset root.
        tta: Average predictions over flips.
        stats: Normalisation statistics of the data (a :class:`BandStats` or a JSON file).
        norm: ``auto``, ``own`` or ``model`` (aliases of :data:`lsmap.core.normalize.NORM_ALIASES` too; see the module
            docstring); ``stats`` takes the place of ``own`` (refused with ``model``).
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: Patches per forward pass.
        threshold: Probability threshold (``None``: the mean of the members' card thresholds).
        object_iou: IoU at which a predicted object matches a true one.
        crf: Refine each patch's ensemble probability with a dense CRF (:func:`lsmap.learn.crf.crf_refine`,
            colours from the patch's natural-colour bands) before thresholding; needs ``lsmap[crf]``.
        bands: Band set taken from the patches by name (they may hold more bands); each model
            takes its card's bands out of it. ``None``: the models' band set, or the union of theirs.
        progress: Show a progress bar.
        label_map: Mask values of the files -> 0/1/255 (``"0:0,255:1"`` for 0/255 masks).
        unseen: Score only the patches no member was trained on (by the folder and ids its card
            records, :attr:`ModelCard.trained_on`, or by their images' content, ``trained_digests``, so a
            copy of the training patches is recognised too): on the folder a model was trained from, the
            patches its training held out. Without it, scoring training patches warns.
        allow_no_landslides: Score masks without any landslide pixel (false alarms on stable ground: the
            ``fp`` count and ``false_alarm_rate``; recall and F1 are then 0 by convention). Without it such a
            folder is refused, as a 0/255 export read without ``label_map`` looks the same.

    Raises:
        InputError: empty folder, image without mask, wrong band count, NaN-only patch, bad option.
        CheckpointError: unreadable checkpoint, or members trained on different band profiles.
    """
    import numpy as np
    import torch

    from lsmap.io.progress import progress_bar

    models = as_list("models", models)
    norm = norm_mode(norm, auto=True)
    if norm == "model" and stats is not None:  # `stats` won silently (the CLI audit); detect refuses it too
        raise InputError("`stats` gives the data's statistics; it cannot be combined with `norm` model")
    check_int("batch_size", batch_size, 1)
    if threshold is not None:
        check_threshold(threshold)
    check_number("object_iou", object_iou, 0, 1, lo_open=True)
    for name, v in (("tta", tta), ("crf", crf), ("progress", progress), ("unseen", unseen)):
        check_bool(name, v)
    mapping = parse_label_map(label_map)
    if not models:
        raise NoModelError()
    if crf:
        require()
    patches = find_patches(data, split, require_masks=True)
    if allow_no_landslides:
        check_bool("allow_no_landslides", allow_no_landslides)
    counts = check_labels(patches, mapping, "evaluation", allow_empty=allow_no_landslides)
    dev = resolve_device(device)
    members = folded_members(load_ensemble(models, dev))  # batch norms folded, as detection runs them
    profile, members = _ensemble_bands(members, bands, data)
    if unseen:
        patches = unseen_patches(patches, members, data)
        counts = check_labels(patches, mapping, "unseen", allow_empty=allow_no_landslides)  # the patches left may hold none
    seen = warn_if_trained_on(patches, members, data)
    adapted = max(sum(recorded(patches, m.card.adapted_on, m.card.adapted_digests)) for m in members)
    if stats is not None and not isinstance(stats, BandStats):
        stats = BandStats.load(stats)
    if stats is not None:  # the models' bands, taken by name where the statistics name theirs, else counted
        stats = check_stats(stats, profile, "`stats`")
    norms = ["stats" if stats is not None else _member_norm(m.card, norm) for m in members]
    target_stats = stats
    if stats is None and "own" in norms:
        target_stats = patch_stats(patches, profile)
    member_stats = [target_stats if n in ("own", "stats") else None for n in norms]
    thr = threshold if threshold is not None else float(np.mean([m.card.threshold for m in members]))  # cards: (0, 1)

    conf, objs = Confusion(), ObjectScores()
    with inference_context(dev):  # weights cast to the autocast dtype once, not per batch
        for start in progress_bar(range(0, len(patches), batch_size), disable=not progress, desc="evaluate", unit="batch"):
            chunk = patches[start:start + batch_size]
            images, masks = [], []
            for p in chunk:
                image, n_bad = read_patch_image(p, profile)
                if n_bad == image.size:
                    raise InputError(f"{p.image}: patch has no finite value (all NaN/inf); remove it from the folder")
                mask = read_mask(p.mask, mapping)
                if mask.shape != image.shape[1:]:
                    raise InputError(f"{p.mask}: mask is {mask.shape} but the image is {image.shape[1:]}; they must match")
                images.append(image)
                masks.append(mask)
            groups: dict[tuple, list[int]] = {}
            for i, im in enumerate(images):
                groups.setdefault(im.shape, []).append(i)
            for idx in groups.values():
                x = torch.from_numpy(np.stack([images[i] for i in idx])).to(dev)
                prob = sum(predict_proba([m], x, s, tta=tta) for m, s in zip(members, member_stats, strict=False)) / len(members)
                if crf:
                    prob = np.stack([crf_refine(pk, images[i], rgb=rgb_indices(profile.bands))
                                     for pk, i in zip(prob.float().cpu().numpy(), idx, strict=False)])
                    pred = (prob > thr).astype(np.uint8)
                else:
                    pred = (prob > thr).cpu().numpy().astype(np.uint8)
                target = np.stack([masks[i] for i in idx])
                conf = conf + confusion(pred, target)
                objs = objs + object_scores(pred, target, iou=object_iou)
    return EvalResult(
        models=[str(Path(m)) for m in models], data=str(data), split=None if is_plain_folder(data) else split,
        patches=len(patches), threshold=thr,
        tta=tta, norm=norms, crf=crf, pixel=scores(conf), objects=objs.as_dict(), seen_in_training=seen,
        unseen=unseen, adapted_on=adapted, landslide_pixels=counts["landslide"],
    )


def unseen_patches(patches, members, data) -> list:
    """The ``patches`` no member's card records as a training patch.

    Raises:
        InputError: every patch was trained on.
    """
    seen = [_trained_on(patches, m.card) for m in members]
    kept = [p for p, *flags in zip(patches, *seen, strict=True) if not any(flags)]
    if not kept:
        raise InputError(f"{data}: every one of its {len(patches)} patches was used to train the model(s); "
                         f"give patches they did not train on, or leave out --unseen")
    return kept


def _trained_on(patches, card) -> list[bool]:
    """Per patch, whether ``card`` records it as a training patch: by its folder and id, or by its image's content
    (a copy, a folder mounted elsewhere; cards from before content digests: by folder and id only)."""
    return recorded(patches, card.trained_on, card.trained_digests)


def warn_if_trained_on(patches, members, data) -> int:
    """How many of ``patches`` some member was trained on (by the folder and id its card records, or the
    image's content: :func:`_trained_on`); a warning when there are any, since scores on them say how well the
    model fits its training data."""
    import warnings

    seen = [sum(_trained_on(patches, m.card)) for m in members]
    n = max(seen)
    if n:
        who = ", ".join(m.source or m.card.model for m, k in zip(members, seen, strict=True) if k)
        warnings.warn(f"{data}: {n} of the {len(patches)} patches were used to train {who}; scores on them "
                      f"measure fit, not accuracy on new data: evaluate on patches it did not train on "
                      f"(the held-out ids are in its card's 'data')", LsmapWarning, stacklevel=user_level())
    return n


def format_table(result: EvalResult) -> str:
    """Plain-text table of ``result`` for the terminal."""
    p, o = result.pixel, result.objects
    lines = [
        f"{result.data}{f' [{result.split}]' if result.split else ''}: {result.patches} "
        f"{'patches not trained on' if result.unseen else 'patches'}, "
        f"{len(result.models)} model(s), "
        f"threshold {result.threshold:g}{', TTA' if result.tta else ''}{', CRF' if result.crf else ''}, norm {'/'.join(sorted(set(result.norm)))}",
        f"{'':10}{'precision':>10}{'recall':>10}{'F1':>10}{'IoU':>10}{'mIoU':>10}",
        f"{'pixels':10}{p['precision']:>10.4f}{p['recall']:>10.4f}{p['f1']:>10.4f}{p['iou']:>10.4f}{p['miou']:>10.4f}"
        f"   (TP {p['tp']}, FP {p['fp']}, FN {p['fn']})",
        f"{'objects':10}{o['precision']:>10.4f}{o['recall']:>10.4f}{o['f1']:>10.4f}{'':>10}{'':>10}"
        f"   ({o['matched']} matched of {o['n_pred']} predicted, {o['n_true']} true)",
    ]
    if result.landslide_pixels == 0:
        p_fa = p["fp"] / (p["fp"] + p["tn"]) if p["fp"] + p["tn"] else 0.0
        lines.append(f"no landslide in these masks: only false alarms are measured, {p['fp']:,} of "
                     f"{p['fp'] + p['tn']:,} pixels ({100 * p_fa:.2f} %); recall and F1 are 0 by convention")
    if result.adapted_on:
        lines.append(f"{result.adapted_on} of the {result.patches} patches are ones the model(s) adapted to by "
                     f"self-training or domain batch norms (their images, not their labels)")
    return "\n".join(lines)
