"""The files of a training run folder: may a run start or resume here, its saved state, its log.

A run folder holds :data:`RUN_FILES`: the validation-chosen ``best.*`` checkpoint, the latest
``last.*`` checkpoint with ``last_state.pt`` (optimizer, scaler, step, scores, torch RNG) to
resume from, and the log (``log.csv`` and ``curves.png``, one point per validation).
:func:`lsmap.learn.train.fit` writes them; this module checks, reads and writes them.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lsmap.errors import CheckpointError, MissingInputError, OutputError, OutputExistsError, OutputOwnershipError
from lsmap.io.rasters import atomic_output
from lsmap.learn.models import ModelCard, read_card

if TYPE_CHECKING:
    from lsmap.learn.train import TrainConfig

#: Files a run folder holds; a new run refuses to start over them without ``overwrite``.
RUN_FILES = ("best.safetensors", "best.json", "last.safetensors", "last.json", "last_state.pt", "log.csv",
             "curves.png")

#: Settings that define a run: resuming with other values is refused (steps, val_every, device,
#: workers and amp may change).
RUN_KEYS = ("model", "batch_size", "lr", "weight_decay", "optimizer", "schedule", "warmup", "scale", "seed",
            "domain_bn", "threshold", "loss", "augment", "norm", "mixup_alpha", "val_fraction", "val_split")


def check_run_dir(out_dir: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to start over an existing run unless ``overwrite``; ``resume`` needs one.

    Raises:
        MissingInputError: ``resume`` but no interrupted run in ``out_dir``.
        OutputExistsError: ``out_dir`` holds a run and neither ``overwrite`` nor ``resume``.
        OutputOwnershipError: ``out_dir`` holds no run but other files (an empty folder is fine).
        OutputError: ``out_dir`` cannot be written (read-only, full, a file in the way).
    """
    from lsmap.io.outputs import check_writable

    recover_asides(out_dir)
    existing = [n for n in RUN_FILES if (out_dir / n).exists()]
    if resume:
        if not has_resumable(out_dir):
            raise MissingInputError(f"{out_dir}: no interrupted run to resume (last.safetensors + last_state.pt); "
                                    f"start without `resume`")
        check_writable(out_dir)
        return
    if existing and not overwrite:
        raise OutputExistsError(out_dir / existing[0],
                                ", or `resume` to continue that run from its last step" if has_resumable(out_dir) else "")
    if not existing and out_dir.is_dir():  # a folder of the user's: the run's files went in among theirs (an audit)
        other = sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".lsmap"))
        if other:
            shown = ", ".join(other[:5]) + (" ..." if len(other) > 5 else "")
            raise OutputOwnershipError(f"{out_dir}: holds files that are not a training run's ({shown}); give a new "
                                       f"or empty folder as `out_dir`")
    check_writable(out_dir)  # a read-only or full location fails now, not after the training


#: Prefix of the hidden folder an overwriting run keeps the previous run's files in until it has saved its own.
ASIDE_PREFIX = ".lsmap-previous-run-"


def set_aside_run(out_dir: Path) -> Path | None:
    """Move the previous run's files of ``out_dir`` into a hidden folder (``None`` when there are none).

    ``overwrite`` deleted them before the new run had written anything: a Ctrl-C in its first minutes left an
    empty folder, and an ``init`` checkpoint inside it was gone (found by the failure audit). They stay set aside
    until the new run has finished (then :func:`discard_aside`). A run that ends otherwise calls
    :func:`restore_aside` when it diverged or saved nothing to resume (:func:`has_resumable`); one that saved its
    ``last`` stays, resumable, and discards them (a run that diverged after its first save lost the finished one
    before; found by an audit).
    """
    from lsmap.io.locks import owner_tag

    present = [n for n in RUN_FILES if (out_dir / n).exists()]
    if not present:
        return None
    aside = out_dir / f"{ASIDE_PREFIX}{owner_tag()}"
    aside.mkdir()
    for n in present:
        os.replace(out_dir / n, aside / n)
    return aside


def restore_aside(aside: Path, out_dir: Path) -> None:
    """Put the previous run's files back in place of those the unfinished new run wrote (its run files only)."""
    for n in RUN_FILES:  # set_aside_run moved all of the previous run's: those here are the new run's
        if (out_dir / n).is_file():
            (out_dir / n).unlink()
    for p in aside.iterdir():
        os.replace(p, out_dir / p.name)
    shutil.rmtree(aside, ignore_errors=True)


def discard_aside(aside: Path) -> None:
    """Delete the previous run's files: the new run has finished."""
    shutil.rmtree(aside, ignore_errors=True)


def has_resumable(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a run's ``last`` weights and training state (``--resume`` continues it)."""
    return (out_dir / "last_state.pt").is_file() and (out_dir / "last.safetensors").is_file()


def recover_asides(out_dir: Path) -> None:
    """Before a new run, settle what a killed overwriting run left: when it saved a resumable ``last`` its work
    is kept (``--resume`` continues it) and the previous run it replaced is deleted, as a finished run would have;
    when it saved nothing, the previous run's files go back. A resumable run is never replaced by an older one
    (the review of the set-aside change: a SIGTERM'd run's checkpoints were deleted by the next --resume)."""
    from lsmap.io.locks import stale

    for aside in out_dir.glob(f"{ASIDE_PREFIX}*") if out_dir.is_dir() else []:
        if aside.is_dir() and stale(aside.name):
            if has_resumable(out_dir):
                discard_aside(aside)
            else:
                restore_aside(aside, out_dir)


def match_card(path: Path, card: ModelCard, model: str, bands: list, what: str) -> None:
    """Refuse checkpoint ``path`` (``what``, for the message) unless it is a ``model`` on ``bands``.

    Raises:
        CheckpointError: another model or other bands.
    """
    if card.model != model:
        raise CheckpointError(f"{path}: {what} is a '{card.model}' model but this run trains '{model}'; "
                              f"use `model` {card.model} or another checkpoint")
    bands = ModelCard(model, bands).bands  # names, also from a band-profile dict
    if list(card.bands) != list(bands):
        raise CheckpointError(f"{path}: {what} was trained on bands {','.join(card.bands)} but this run uses "
                              f"{','.join(bands)}; choose the matching `bands`")


def resume_state(out_dir: Path, config: TrainConfig, bands: list) -> dict:
    """The saved training state of the interrupted run in ``out_dir``, once it fits ``config``.

    Raises:
        CheckpointError: the run trains another model, on other bands, with another domain-BN
            setting or other :data:`RUN_KEYS` values; unreadable ``last_state.pt``.
    """
    last_card = read_card(out_dir / "last")
    match_card(out_dir / "last.json", last_card, config.model, bands, "the run to resume")
    if last_card.domain_bn != config.domain_bn:
        raise CheckpointError(f"{out_dir}/last.json: run was trained with domain_bn={last_card.domain_bn}; "
                              f"resume with the same setting")
    _check_resume_config(out_dir, config)
    state = load_state(out_dir / "last_state.pt")
    step = last_card.metrics.get("step")
    if step is not None and int(state["step"]) != int(step):  # a save cut short between the files (found by an audit)
        raise CheckpointError(f"{out_dir}: last.safetensors is of step {step} but last_state.pt of step "
                              f"{int(state['step'])}: a save was cut short, and the run cannot be resumed exactly; "
                              f"start it again (`overwrite`) or take best.safetensors as `init`")
    return state


def check_resume_data(out_dir: Path, card):
    """Refuse to resume the run in ``out_dir`` on other patches than it trained and validated on (``card``: the
    resumed run's template card, with this run's ``train["fitted_on"]`` and ``train["validated_on"]``): another
    hold-out would choose the best checkpoint across two validation sets, some of them trained on before.

    Returns:
        ``card`` with the run's ``trained_on`` and ``adapted_on`` and their digests kept (merged in: a run resumed without the
        ``init`` it started from still records the patches that checkpoint was trained on).

    Raises:
        CheckpointError: the training or validation patches differ, named with both records.
    """
    last = read_card(out_dir / "last")
    diff = []
    for what, key in (("training", "fitted_on"), ("validation", "validated_on")):
        then, now = last.train.get(key), card.train.get(key)
        if not then:  # an older card, or datasets that do not list patches: nothing recorded to check against
            continue
        if {k: sorted(v) for k, v in then.items()} != {k: sorted(v) for k, v in (now or {}).items()}:
            diff.append(f"{what} patches: run {_patches(then)}, now {_patches(now or {})}")
    if diff:
        raise CheckpointError(f"{out_dir}: cannot resume on other data ({'; '.join(diff)}); resume with the run's data "
                              f"and hold-out ({last.data}) or start a new run")
    return dataclasses.replace(card, trained_on=_union(last.trained_on, card.trained_on),
                               adapted_on=_union(last.adapted_on, card.adapted_on),
                               trained_digests=list(dict.fromkeys([*last.trained_digests, *card.trained_digests])),
                               adapted_digests=list(dict.fromkeys([*last.adapted_digests, *card.adapted_digests])))


def _union(a: dict, b: dict) -> dict:
    out = {k: list(v) for k, v in a.items()}
    for k, ids in b.items():
        have = set(out.get(k, []))
        out[k] = out.get(k, []) + [i for i in ids if i not in have]
    return out


def _patches(record: dict) -> str:
    return " + ".join(f"{len(ids)} of {folder}" for folder, ids in record.items()) or "none"


def _check_resume_config(out_dir: Path, config: TrainConfig) -> None:
    saved = read_card(out_dir / "last").train
    diff = [f"{k}: run {saved[k]!r}, now {getattr(config, k)!r}" for k in RUN_KEYS
            if k in saved and saved[k] != getattr(config, k)]
    if diff:
        raise CheckpointError(f"{out_dir}: cannot resume with other settings ({'; '.join(diff)}); "
                              f"resume with the run's settings or start a new run")


def save_state(path: Path, state: dict) -> None:
    """Write the training ``state`` (tensors and plain values) to ``path`` atomically."""
    import torch


    with atomic_output(path, overwrite=True) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as e:  # torch's writer: 'unexpected pos', not the OS error (a file-size limit, a quota)
            raise OutputError(f"{path}: cannot write the training state ({str(e).splitlines()[0][:120]}); check the "
                              f"free space and any quota or file-size limit there") from None


def load_state(path: Path) -> dict:
    """The training state :func:`save_state` wrote.

    Raises:
        CheckpointError: ``path`` is corrupt or not a training state.
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types on corrupt or foreign files
        raise CheckpointError(f"{path}: cannot read training state ({e}); start without `resume`") from None


def write_log(out_dir: Path, history: Sequence[dict]) -> None:
    """Write ``log.csv`` (one row per validation) and ``curves.png`` into ``out_dir``."""
    import csv


    if not history:
        return
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with atomic_output(out_dir / "log.csv", overwrite=True) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, keys)
            w.writeheader()
            w.writerows(history)
    plot_curves(out_dir / "curves.png", history)


def plot_curves(path: Path, history: Sequence[dict]) -> None:
    """PNG of the training loss and the validation scores against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    steps = [r["step"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(steps, [r["loss"] for r in history], marker=".")
    a.set(xlabel="step", ylabel="training loss", title="loss")
    keys = [k for k in ("f1", "precision", "recall", "iou") if any(k in r for r in history)]
    for key in keys:
        b.plot(steps, [r.get(key, float("nan")) for r in history], marker=".", label=key)
    b.set(xlabel="step", ylabel="landslide class", title="validation" if keys else "no validation", ylim=(0, 1))
    if keys:
        b.legend()
    fig.tight_layout()
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
