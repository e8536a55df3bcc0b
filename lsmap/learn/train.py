"""The training loop: step-based, several batch streams, validation-chosen checkpoints, resumable.

:func:`fit` trains one model on one or more :class:`Source` streams (e.g. labelled source patches
plus pseudo-labelled target patches in self-training). Each step draws one batch from every
source, sums their weighted losses (mix-up optional per source), and takes one optimizer step.
The learning rate follows a warmup + poly (or cosine) schedule over ``steps``. Every
``val_every`` steps the model is scored on the validation split by the landslide F1 summed over
the split (the benchmark metric); the best one is kept as ``best.safetensors`` + ``best.json``
(never chosen on training data), and ``last.*`` + ``last_state.pt`` allow ``resume``
(:mod:`lsmap.learn.run_folder` checks, reads and writes these files).

The recipe of the 1st-place solution is the default: separated normalisation (done by the
datasets), optional domain-specific batch norm, scale promotion (inputs upsampled by ``scale``,
logits brought back to the input resolution before the loss, exactly as
:func:`lsmap.learn.ensemble.member_logits` does at inference), flips/rotations/colour perturbation,
Lovasz + OHEM loss, AdamW.

Speed: bfloat16 autocast + channels-last on CPUs with bfloat16 units, mixed precision on CUDA
(with a gradient scaler for float16); pinned memory when on CUDA. Under ``torchrun`` the model
is wrapped in DistributedDataParallel (gloo on CPU, nccl on CUDA); every rank draws its own
share of each step's batch (:class:`lsmap.data.dataset.StepSampler`), rank 0 writes all files.

The decision threshold is ``config.threshold`` (0.5 by default); it is not tuned on the
validation split, so the validation F1 is not biased by a threshold search.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsmap.core.bands import get_profile
from lsmap.core.metrics import Confusion, confusion, scores
from lsmap.core.norms import norm_mode
from lsmap.data.dataset import Augment, PatchDataset, hold_out, spatial_hold_out
from lsmap.data.stats import patch_stats
from lsmap.errors import CheckpointError, InputError, LsmapError, LsmapWarning, TooLargeError, user_level
from lsmap.io.patches import find_patches, has_split, is_plain_folder, patch_digests, patch_keys
from lsmap.io.progress import is_terminal
from lsmap.learn.config import VAL_FRACTION, TrainConfig, max_workers
from lsmap.learn.device import amp_dtype, resolve_device, restore_rng_states, rng_states, use_channels_last
from lsmap.learn.forward import scaled_forward
from lsmap.learn.losses import build_loss
from lsmap.learn.models import (
    ModelCard,
    build_model,
    checkpoint_paths,
    nonfinite,
    read_card,
    read_state_dict,
    resolve_model,
    save_checkpoint,
)
from lsmap.learn.optim import AliasedOptimizer, needs_alias
from lsmap.learn.run_folder import (
    check_resume_data,
    check_run_dir,
    discard_aside,
    has_resumable,
    match_card,
    restore_aside,
    resume_state,
    save_state,
    set_aside_run,
    write_log,
)


class TrainingError(LsmapError, RuntimeError):
    """Training cannot continue (e.g. the loss became NaN)."""


@dataclass
class Source:
    """One stream of training batches.

    Attributes:
        dataset: Yields dicts ``image`` ``(C, H, W)`` float32 normalised, ``target`` ``(H, W)``
            int64 (255 ignored), optional ``weight`` ``(H, W)`` float32. It is indexed with
            ``(index, seed)`` keys (the seed drives its augmentation), as
            :class:`lsmap.data.dataset.PatchDataset` accepts.
        loss: :func:`lsmap.learn.losses.build_loss` spec, or a callable ``loss(logits, target, weight)``.
        weight: Weight of this stream's loss in the step's sum. ``0`` makes a statistics-only
            stream: its batches are run forward (no gradient) only to update the batch-norm
            statistics of ``domain`` (e.g. unlabelled target patches with domain BN).
        domain: Domain-BN domain of this stream (0 source, 1 target); ignored without domain BN.
        mixup_alpha: When > 0, each batch is mixed with a shuffled copy of itself with
            ``lam ~ Beta(a, a)`` and the loss is ``lam * L(y) + (1 - lam) * L(y_shuffled)``.
        name: Label in logs.
    """

    dataset: Any
    loss: str | Callable = "lovasz+ohem"
    weight: float = 1.0
    domain: int = 0
    mixup_alpha: float = 0.0
    name: str = ""


@dataclass
class TrainResult:
    """What :func:`fit` produced.

    Attributes:
        best_path: ``best.safetensors`` (``None`` when there was no validation split).
        best_metrics: Validation scores of the best checkpoint (``step``, ``f1``, ``precision``...).
        history: One row per validation (step, lr, losses, scores, speed).
        last_path: ``last.safetensors``.
        out_dir: The run folder.
        model: The trained module in its final (``last``) state, unwrapped from DDP, in train mode.
        validation: Where the validation patches came from: a folder, ``"held out"`` (then
            ``held_out`` lists their ids) or ``None`` (no validation).
        held_out: Ids of the training patches held out for validation by :func:`train`.
    """

    best_path: Path | None
    best_metrics: dict
    history: list[dict] = field(default_factory=list)
    last_path: Path | None = None
    out_dir: Path | None = None
    model: Any = field(default=None, repr=False)
    validation: str | None = None
    held_out: list[str] = field(default_factory=list)


# --- small pure helpers (also used by tests and the refine loop) ------------------------------------


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of ``step`` (0-based): linear warmup, then poly / cosine decay / constant."""
    base, warm, total = config.peak_lr, config.warmup_steps, config.steps
    if warm and step < warm:
        return base * (step + 1) / warm
    if config.schedule == "constant" or total <= warm:
        return base
    t = min(1.0, (step - warm) / max(1, total - warm))
    if config.schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * t))
    return base * (1 - t) ** 0.9


def warn_stretched_schedule(out_dir: Path, config: TrainConfig, step: int) -> None:
    """Warn when a resumed run's ``steps`` differ from the run's own: the learning-rate schedule is a function
    of the total, so it is stretched (or shrunk) over the new total and the rate jumps at the resumed step."""
    import warnings

    try:
        planned = int(saved_config(out_dir).steps)
    except (LsmapError, TypeError, ValueError):
        return
    if planned == config.steps or config.schedule == "constant":
        return
    was, now = lr_at(step, dataclasses.replace(config, steps=planned)), lr_at(step, config)
    if not math.isclose(was, now, rel_tol=1e-6):
        warnings.warn(f"{out_dir}: the run planned {planned} steps and resumes at step {step} of {config.steps}: its "
                      f"{config.schedule} learning-rate schedule is recomputed over {config.steps} steps, so the rate "
                      f"goes from {was:.3g} to {now:.3g} at step {step}", LsmapWarning, stacklevel=user_level())


def grad_scaler_enabled(device, amp: bool) -> bool:
    """Whether training on ``device`` needs a gradient scaler (CUDA float16 autocast only)."""
    import torch


    return bool(amp) and device.type == "cuda" and amp_dtype(device) == torch.float16


def loader_options(device, workers: int) -> dict:
    """DataLoader keyword arguments for ``device``: pinned memory on CUDA, persistent workers."""
    return {"num_workers": workers, "pin_memory": device.type == "cuda", "persistent_workers": workers > 0}


def show_bar(progress: bool | None) -> bool:
    """The progress rule of training: a bar only on a terminal (``progress`` true or ``None``); elsewhere rank 0
    writes a plain line per validation (:func:`log_line`); with ``progress`` false, nothing (a script's or
    ``--json``'s quiet run printed the lines all the same; found by the API audit)."""
    return (progress is None or bool(progress)) and is_terminal()


def log_line(row: dict, steps: int, eta_s: float) -> str:
    """One plain progress line of a validation row: step, loss, F1, images/s and ETA.

    >>> log_line({"step": 100, "loss": 0.51234, "f1": 0.4, "images_per_s": 31.4}, 400, 95)
    'step 100/400  loss 0.5123  F1 0.4000  31.4 images/s  ETA 1m35s'
    """
    f1 = f"{row['f1']:.4f}" if "f1" in row else "-"
    eta = int(round(eta_s))
    h, m, sec = eta // 3600, eta % 3600 // 60, eta % 60
    eta_text = f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"
    return (f"step {row['step']}/{steps}  loss {row['loss']:.4f}  F1 {f1}  "
            f"{row.get('images_per_s', 0.0):.1f} images/s  ETA {eta_text}")


# --- distributed ------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # we initialised the process group (and must destroy it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def sync_buffers(self, module) -> None:
        """Copy rank 0's buffers (batch-norm running statistics) to every rank.

        DDP broadcasts buffers at the start of each forward, so after the last training forward
        of a step the ranks' running statistics differ; this makes validation and the saved
        checkpoint use one set.
        """
        if self.world > 1:
            import torch.distributed as dist

            for b in module.buffers():
                dist.broadcast(b.data, 0)

    def average_domain_stats(self, module, domain: int) -> None:
        """Average ``domain``'s batch-norm running statistics over the ranks.

        A statistics-only stream (domain BN's target) runs outside DDP, and DDP's next forward broadcasts
        rank 0's buffers: without this, the target's statistics would follow rank 0's batches only. Each
        rank's update started from the same statistics, so the average is the update by the ranks' mean batch
        statistics (the variance being the mean of the ranks' variances, without the spread of their means).
        """
        if self.world > 1:
            import torch.distributed as dist

            from lsmap.learn.domain_bn import DomainBatchNorm2d

            for m in module.modules():
                if isinstance(m, DomainBatchNorm2d):
                    for b in (m.running_mean, m.running_var):
                        row = b.data[domain].clone()
                        dist.all_reduce(row)
                        b.data[domain] = row / self.world

    def close(self) -> None:
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()


def _setup_dist(device_name: str) -> tuple[_Dist, Any]:
    """Join the process group ``torchrun`` describes (env WORLD_SIZE > 1); pick this rank's device."""
    import torch
    import torch.distributed as dist


    device = resolve_device(device_name)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), device
    if not dist.is_available():
        raise TrainingError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owned = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owned = True
    return _Dist(dist.get_rank(), dist.get_world_size(), local, owned), device


# --- the run folder's configuration ---------------------------------------------------------------


def saved_config(out_dir: str | os.PathLike) -> TrainConfig:
    """The training configuration of the run in ``out_dir`` (from ``last.json``), e.g. to resume it.

    Raises:
        MissingInputError: no run in ``out_dir``.
    """
    card = read_card(Path(out_dir) / "last")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in card.train.items() if k in names})


def resume_config(out_dir: str | os.PathLike, given: dict[str, Any], explicit: set[str]) -> TrainConfig:
    """The configuration to resume the run in ``out_dir`` with: the run's own settings, except
    those in ``explicit`` (given by the caller on purpose), which take their values from ``given``.

    Raises:
        MissingInputError: no run in ``out_dir``.
        InputError: ``given`` names a setting :class:`TrainConfig` does not have.
    """
    unknown = sorted(set(given) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise InputError(f"unknown training setting(s) {', '.join(unknown)}")
    config = dataclasses.replace(saved_config(out_dir), **{k: v for k, v in given.items() if k in explicit})
    limit = max_workers()
    if "workers" not in explicit and config.workers > limit:  # a run from a larger machine resumes here (a review):
        config = dataclasses.replace(config, workers=limit)  # loader processes, not a setting of the results
    return config



# --- validation -----------------------------------------------------------------------------------------


def validate(module, loader, device, config: TrainConfig, dist: _Dist | None = None, channels_last: bool = False,
             domain: int | None = None, step: int | None = None):
    """Landslide confusion counts of ``module`` over ``loader``'s batches (summed over ranks); ``domain``: the
    batch-norm domain of a domain-BN model (default the target's; the source's for source patches); ``step``:
    the training step, for the message.

    Returns:
        A :class:`lsmap.core.metrics.Confusion` over the whole validation split.

    Raises:
        TrainingError: the model's output is NaN or infinite (a diverged training).
    """
    import numpy as np
    import torch

    from lsmap.learn.domain_bn import TARGET, set_domain

    was_training = module.training
    module.eval()
    if config.domain_bn:
        set_domain(module, TARGET if domain is None else domain)
    total = Confusion()
    bad = torch.zeros((), dtype=torch.bool, device=device)  # no per-batch host sync
    with torch.no_grad():
        for batch in loader:
            x = batch["image"].to(device, non_blocking=True)
            logits = scaled_forward(module, x, config.scale, config.amp, channels_last)
            bad |= ~torch.isfinite(logits).all()
            prob = torch.softmax(logits, dim=1)[:, 1]
            pred = (prob > config.threshold).cpu().numpy().astype(np.uint8)
            total = total + confusion(pred, batch["target"].numpy())
    module.train(was_training)
    diverged = bool(bad)
    if dist is not None and dist.world > 1:
        import torch.distributed as tdist

        t = torch.tensor([total.tp, total.fp, total.fn, total.tn, float(diverged)], dtype=torch.float64)
        tdist.all_reduce(t)
        total, diverged = Confusion(*(int(v) for v in t.tolist()[:4])), bool(t[4] > 0)
    if diverged:  # every pixel scored as background: an F1 of 0, and a diverged model kept as the best
        when = f" by step {step}" if step is not None else ""
        raise TrainingError(f"the model's output on the validation patches became NaN or infinite{when} (the "
                            f"training diverged); lower `lr` or check the data")
    return total


# --- the loop -------------------------------------------------------------------------------------------


def _build(config: TrainConfig, in_channels: int, init: Path | None, bands: list, *, fresh: bool = True):
    """The model (domain BN converted when asked), optionally initialised from checkpoint ``init``.

    ``fresh=False`` (resuming, or starting from ``init``: the weights are replaced) skips the encoder weights.
    """
    from lsmap.learn.domain_bn import convert_domain_bn

    module = build_model(config.model, in_channels, encoder_weights=config.encoder_weights if fresh else None)
    init_dbn = False
    state = None
    if init is not None:
        init = resolve_model(init)
        init_card = read_card(init)
        match_card(Path(init), init_card, config.model, bands, "the `init` checkpoint")
        init_dbn = init_card.domain_bn
        if init_dbn and not config.domain_bn:
            raise CheckpointError(f"{init}: checkpoint has domain-specific batch norm; train with `domain_bn`")
        state = read_state_dict(checkpoint_paths(init)[0])
    if init_dbn:
        convert_domain_bn(module)
    if state is not None:
        try:
            module.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"{init}: weights do not fit '{config.model}' ({str(e).splitlines()[0]})") from None
    if config.domain_bn and not init_dbn:
        convert_domain_bn(module)
    return module


def _optimizer(module, config: TrainConfig):
    import torch

    params = [p for p in module.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        cls, kw = torch.optim.SGD, {"lr": config.peak_lr, "momentum": 0.9, "nesterov": True, "weight_decay": config.decay}
    else:
        cls, kw = torch.optim.AdamW, {"lr": config.peak_lr, "weight_decay": config.decay}
    try:  # fused kernels: about 4x faster steps than the default per-tensor loop on CPU (measured here)
        if all(p.device.type == "cpu" for p in params) and any(needs_alias(p) for p in params):
            return AliasedOptimizer(cls, params, fused=True, **kw)  # channels-last weights: lsmap.learn.optim
        return cls(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):  # device or dtype without a fused implementation
        return cls(params, **kw)


def _loss_fn(loss: str | Callable) -> Callable:
    if callable(loss):
        return loss

    return build_loss(loss)


def _accumulate_step(model, module, sources, iters, losses, config: TrainConfig, device, dist: _Dist, scaler,
                     step: int, channels_last: bool, run_loss) -> int:
    """Forward and backward one batch of every source (gradients accumulate); returns images seen.

    Statistics-only sources (weight 0) run forward without gradient to update their domain's
    batch-norm statistics. With DDP, gradients are all-reduced once, on the last weighted source.
    Each source's unweighted loss is added to ``run_loss[i]``.
    """
    import numpy as np
    import torch

    from lsmap.learn.domain_bn import set_domain

    active = [i for i, s in enumerate(sources) if s.weight != 0]
    images = 0
    for i, s in enumerate(sources):
        batch = next(iters[i])
        x = batch["image"].to(device, non_blocking=True)
        images += x.shape[0] * dist.world
        if config.domain_bn:
            set_domain(module, s.domain)
        if s.weight == 0:
            with torch.no_grad():
                scaled_forward(module, x, config.scale, config.amp, channels_last)
            if config.domain_bn:
                dist.average_domain_stats(module, s.domain)
            continue
        y = batch["target"].to(device, non_blocking=True)
        w = batch["weight"].to(device, non_blocking=True) if "weight" in batch else None
        lam = None
        if s.mixup_alpha > 0:  # drawn from (seed, step, source, rank): resume-safe
            mix_rng = np.random.default_rng((config.seed, step, i, dist.rank))
            lam = float(mix_rng.beta(s.mixup_alpha, s.mixup_alpha))
            perm = torch.from_numpy(mix_rng.permutation(x.shape[0])).to(device)
            x = lam * x + (1 - lam) * x[perm]
        sync = dist.world == 1 or i == active[-1]
        with (contextlib.nullcontext() if sync else model.no_sync()):
            logits = scaled_forward(model, x, config.scale, config.amp, channels_last)
            loss = losses[i](logits, y, w)
            if lam is not None:
                loss = lam * loss + (1 - lam) * losses[i](logits, y[perm], None if w is None else w[perm])
            scaler.scale(loss * s.weight).backward()
        run_loss[i] += loss.detach().float()
    return images


def fit(sources: Sequence[Source], val, config: TrainConfig, out_dir: str | os.PathLike, *, card: ModelCard,
        init: str | os.PathLike | None = None, resume: bool = False, progress: bool | None = None,
        overwrite: bool = False, val_split: str = "validation", val_domain: int | None = None) -> TrainResult:
    """Train a model on ``sources``, choosing the best checkpoint on ``val``.

    Args:
        sources: Batch streams; each step draws one batch from each and sums their weighted losses.
        val: Validation dataset (normalised with the target's statistics) or ``None`` (then no
            ``best`` checkpoint is chosen; only ``last`` is written).
        config: Training configuration.
        out_dir: Run folder: ``best.*``, ``last.*``, ``last_state.pt``, ``log.csv``, ``curves.png``.
        card: Template model card: its ``bands``, ``stats`` and ``data`` are kept; ``model``,
            ``scale``, ``threshold``, ``domain_bn``, ``train`` and ``metrics`` are filled in.
        init: Checkpoint to start from (same model and bands), e.g. the previous refinement round.
        resume: Continue the interrupted run in ``out_dir`` from ``last``.
        progress: Progress on stderr, rank 0 only (:func:`show_bar`): a bar on a terminal, else one plain log line
            per validation (``True`` or ``None``); ``False``: none.
        overwrite: Start a new run over an existing one in ``out_dir``.
        val_split: What ``val`` is, recorded with the best checkpoint's metrics (``split``).
        val_domain: The batch-norm domain ``val`` is scored in with ``domain_bn`` (default the target's; the
            source's when ``val`` holds source patches: they were scored with the target's statistics, a review).

    Returns:
        The best checkpoint, its validation metrics and the history.

    Raises:
        InputError: bad configuration, empty dataset, batch size not divisible by the world size.
        OutputExistsError: ``out_dir`` holds a run and neither ``overwrite`` nor ``resume``.
        CheckpointError: ``init`` or the run to resume does not fit this configuration.
        TrainingError: the loss became NaN.
    """
    config.check(need_weights=not resume and init is None)
    out_dir = Path(out_dir)
    _check_sources(sources)
    check_run_dir(out_dir, overwrite, resume)
    in_channels = card.profile.count
    card = _with_run_patches(card, sources, val)
    state = resume_state(out_dir, config, card.bands) if resume else None
    if state is not None:
        card = check_resume_data(out_dir, card)
    if state is not None:
        warn_stretched_schedule(out_dir, config, int(state["step"]))
    losses = [_loss_fn(s.loss) for s in sources]  # fail on a bad spec before any work

    with contextlib.ExitStack() as es:
        if int(os.environ.get("RANK", "0")) == 0:  # one run per folder; the other ranks follow rank 0
            from lsmap.io.locks import output_lock

            out_dir.absolute().parent.mkdir(parents=True, exist_ok=True)
            es.enter_context(output_lock(out_dir))
        return _fit(sources, val, config, out_dir, card, init, resume, progress, overwrite, state, losses, in_channels,
                    val_split, val_domain)


def _fit(sources, val, config: TrainConfig, out_dir: Path, card: ModelCard, init, resume: bool, progress: bool,
         overwrite: bool, state, losses, in_channels: int, val_split: str = "validation",
         val_domain: int | None = None) -> TrainResult:
    dist, device = _setup_dist(config.device)
    aside = None
    try:
        batch_size = _rank_batch_size(config.batch_size, dist)
        module = _initial_module(config, in_channels, card.bands, init,
                                 resume_from=out_dir / "last.safetensors" if state is not None else None)
        # the previous run's files stay (set aside) until this run has finished: a run that failed after its
        # first save (a NaN loss, Ctrl-C) lost them before (found by an audit)
        aside = set_aside_run(out_dir) if overwrite and not resume and dist.main else None
        dist.barrier()
        run = _Run(module, sources, losses, config, card, out_dir, dist, device)
        run.aside = aside
        run.val_split, run.val_domain = val_split, val_domain
        if state is not None:
            run.restore(state)
        run.open_loaders(batch_size, val)
        run.take_steps(progress)
    except BaseException as e:
        # the previous run comes back when this one diverged or saved nothing to resume; an interrupted or failed
        # run that saved its last stays, resumable, and replaces it, as before (hours of training are not dropped)
        if aside is not None:
            if isinstance(e, TrainingError) or not has_resumable(out_dir):
                restore_aside(aside, out_dir)
            else:
                discard_aside(aside)
        raise
    finally:
        dist.close()
    if aside is not None:
        discard_aside(aside)
        run.aside = None
    return run.result()


def _patch_windows(root) -> dict[str, tuple[int, int, int, int]]:
    """Where each patch of a folder written by ``lsmap tile`` lies in its scene (its index), for a spatial
    hold-out.

    Raises:
        InputError: the folder has no index (patches not cut by lsmap tile, e.g. the L4S benchmark's).
    """
    from lsmap.data.tile import INDEX_NAME, read_index

    if not (Path(root) / INDEX_NAME).is_file():
        raise InputError(f"{root}: no patch index ({INDEX_NAME}): a spatial hold-out (`val_split` spatial) needs to "
                         f"know where each patch lies, which lsmap tile records; use `val_split` random here")
    index = read_index(root)
    return {str(r.id): (int(r.row_off), int(r.col_off), int(r.height), int(r.width)) for r in index.itertuples()}


def _with_run_patches(card: ModelCard, sources: Sequence[Source], val) -> ModelCard:
    """``card`` with this run's own patches in its ``train`` record (``fitted_on``: of the sources that carry a
    loss; ``validated_on``), so that a resumed run is checked against them (:func:`check_resume_data`)."""
    fitted = [p for s in sources if s.weight > 0 for p in getattr(s.dataset, "patches", [])]
    record = {"fitted_on": patch_keys(fitted)}
    if val is not None and hasattr(val, "patches"):
        record["validated_on"] = patch_keys(val.patches)
    return dataclasses.replace(card, train={**card.train, **record})


def _check_sources(sources: Sequence[Source]) -> None:
    """Refuse no sources, an empty one, or only statistics-only (weight 0) ones."""
    if not sources:
        raise InputError("no training source given")
    for s in sources:
        if len(s.dataset) == 0:
            raise InputError(f"training source {s.name or '?'} is empty")
    if all(s.weight == 0 for s in sources):
        raise InputError("every source has weight 0: nothing to learn from")


def _rank_batch_size(batch_size: int, dist: _Dist) -> int:
    """This process's share of each step's batch (per source)."""
    if batch_size % dist.world:
        raise InputError(f"batch size {batch_size} is not divisible by the {dist.world} processes")
    return batch_size // dist.world


def _initial_module(config: TrainConfig, in_channels: int, bands: list, init: str | os.PathLike | None, *,
                    resume_from: Path | None = None):
    """The model, built after seeding torch with ``config.seed``.

    Its weights are those of ``resume_from`` (an interrupted run's ``last.safetensors``) when
    given, else those of the ``init`` checkpoint, else fresh ones.

    Raises:
        CheckpointError: the weights do not fit the model.
    """
    import torch

    torch.manual_seed(config.seed)
    # encoder weights only for a model that starts fresh: a resumed run's or an init checkpoint's replace them
    module = _build(config, in_channels, Path(init) if init is not None and resume_from is None else None, bands,
                    fresh=resume_from is None and init is None)
    if resume_from is not None:
        try:
            module.load_state_dict(read_state_dict(resume_from))
        except RuntimeError as e:
            raise CheckpointError(f"{resume_from}: weights do not fit ({str(e).splitlines()[0]})") from None
    return module


class _Run:
    """One training run in this process: model, optimizer, batch streams, scores so far.

    :func:`fit` builds it, calls :meth:`restore` when resuming, :meth:`open_loaders`, then
    :meth:`take_steps` from ``step`` to ``config.steps``, which validates and saves every
    ``config.val_every`` steps. Rank 0 writes the files.
    """

    def __init__(self, module, sources: Sequence[Source], losses: list[Callable], config: TrainConfig,
                 card: ModelCard, out_dir: Path, dist: _Dist, device) -> None:
        """Place ``module`` on ``device`` (channels-last when it helps), wrap it in DDP under
        ``torchrun``, and make its optimizer and gradient scaler."""
        import torch


        self.sources, self.losses, self.config, self.out_dir, self.dist, self.device = (
            sources, losses, config, out_dir, dist, device)
        self.channels_last = use_channels_last(device, config.amp)
        module = module.to(device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        module.train()
        self.module = self.model = module
        if dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer = _optimizer(module, config)
        self.scaler = torch.amp.GradScaler(device.type, enabled=grad_scaler_enabled(device, config.amp))
        self.step, self.best_f1, self.best_metrics, self.history = 0, -1.0, {}, []
        self.val_split = "validation"  # what the best checkpoint is chosen on (fit's `val_split`)
        self.val_domain = None  # its batch-norm domain with domain_bn (fit's `val_domain`)
        self.aside: Path | None = None  # the previous run's files, until this run has finished
        self.saved_last = False  # this run wrote a last of its own (at a validation)
        self.iters: list = []
        self.val_loader = None
        self.run_loss = torch.zeros(len(sources), dtype=torch.float32, device=device)  # no per-step host sync
        self.run_n, self.interval_images, self.t0 = 0, 0, 0.0  # the interval's counters (:meth:`_new_interval`)
        self.base_card = dict(card.to_dict())
        self.train_info = dataclasses.asdict(config) | {
            "effective": {"lr": config.peak_lr, "weight_decay": config.decay, "warmup": config.warmup_steps},
            "world_size": dist.world,
            "sources": [{"name": s.name, "loss": s.loss if isinstance(s.loss, str) else getattr(s.loss, "__name__", "custom"),
                         "weight": s.weight, "domain": s.domain, "mixup_alpha": s.mixup_alpha, "patches": len(s.dataset)}
                        for s in sources],
        }

    def restore(self, state: dict) -> None:
        """Continue from a saved training state (see :meth:`save_last`)."""

        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best_f1 = float(state["best_f1"])
        self.best_metrics = json.loads(state["best_metrics"])
        self.history = json.loads(state["history"])
        restore_rng_states(state, self.device, self.dist.world)

    def open_loaders(self, batch_size: int, val) -> None:
        """One endless batch stream per source, from ``step`` on; this rank's share of ``val``."""
        from torch.utils.data import DataLoader, Subset

        from lsmap.data.dataset import StepSampler

        dist = self.dist
        opts = loader_options(self.device, self.config.workers)
        for i, s in enumerate(self.sources):
            sampler = StepSampler(len(s.dataset), batch_size, self.config.seed, i, dist.rank, dist.world, self.step)
            self.iters.append(iter(DataLoader(s.dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **opts)))
        if val is not None:
            if len(val) == 0:
                raise InputError("validation dataset is empty")
            shard = Subset(val, range(dist.rank, len(val), dist.world))
            self.val_loader = DataLoader(shard, batch_size=max(1, batch_size), shuffle=False,
                                         **{**opts, "persistent_workers": False})

    def take_steps(self, progress: bool | None) -> None:
        """Take steps up to ``config.steps``; on Ctrl-C a single process saves ``last`` first.

        With a progress bar the loss and F1 are shown on it; without one (off a terminal) rank 0 writes one
        plain line per validation to stderr; ``progress`` false shows neither.
        """
        from tqdm.auto import tqdm

        config, dist, start = self.config, self.dist, self.step
        use_bar = show_bar(progress)
        bar = tqdm(total=config.steps, initial=start, disable=not (use_bar and dist.main), desc="train",
                   dynamic_ncols=True, unit="step")
        log = dist.main and not use_bar and progress is not False
        t_start = time.perf_counter()
        self._new_interval()
        shown_f1 = self.best_metrics.get("f1")
        # batch-norm statistics move in the forward pass: a Ctrl-C before the step ends puts them back, so the
        # resumed run takes that step once (it updated them twice before; found by a code review)
        buffers = [b for name, b in self.module.named_buffers() if name.endswith(("running_mean", "running_var",
                                                                                   "num_batches_tracked"))]
        before, mid_step = None, False
        try:
            while self.step < config.steps:
                before, mid_step = [b.clone() for b in buffers], True
                lr = self._step()
                mid_step = False
                bar.update(1)
                if self.step % config.loss_every == 0 and bar.disable is False:
                    bar.set_postfix(loss=f"{self.run_loss.sum().item() / self.run_n:.4f}",
                                    f1="-" if shown_f1 is None else f"{shown_f1:.3f}", refresh=False)
                if self.step % config.val_every == 0 or self.step == config.steps:
                    row = self._end_interval(lr)
                    shown_f1 = row.get("f1", shown_f1)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", f1="-" if shown_f1 is None else f"{shown_f1:.3f}")
                    if log:
                        per_step = (time.perf_counter() - t_start) / (self.step - start)
                        print(log_line(row, config.steps, per_step * (config.steps - self.step)),
                              file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            if mid_step and before is not None:
                for b, saved in zip(buffers, before, strict=True):
                    b.copy_(saved)
            # its last is saved, resumable; an overwriting run interrupted before its first save gives the previous
            # run back instead (fit), not a last of a few steps in its place
            if dist.main and dist.world == 1 and self.step > start and (self.aside is None or self.saved_last):
                self.save_last()
            raise
        finally:
            bar.close()

    def _step(self) -> float:
        """One optimizer step over a batch of every source; returns its learning rate."""
        lr = lr_at(self.step, self.config)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        self.interval_images += _accumulate_step(self.model, self.module, self.sources, self.iters, self.losses,
                                                 self.config, self.device, self.dist, self.scaler, self.step,
                                                 self.channels_last, self.run_loss)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self.run_n += 1
        return lr

    def _new_interval(self) -> None:
        """Start counting losses, steps, images and time until the next validation."""
        self.run_loss.zero_()
        self.run_n, self.interval_images, self.t0 = 0, 0, time.perf_counter()

    def _end_interval(self, lr: float) -> dict:
        """Log the interval, validate, save ``best`` (when better) and ``last``; the log row."""
        row = self._interval_row(lr)
        self.dist.sync_buffers(self.module)
        self._check_weights()
        better = self._validate(row) if self.val_loader is not None else None
        self.history.append(row)
        if better is not None:
            if self.dist.main:
                save_checkpoint(self.out_dir / "best", self.module, self._card(better))
            # the best score is the one of the file on disk: set once it is written (a Ctrl-C while writing it
            # left a resumed run comparing with a score no file held; found by a code review)
            self.best_f1, self.best_metrics = better["f1"], better
        if self.dist.main:
            self.save_last()
            write_log(self.out_dir, self.history)
        self.dist.barrier()
        self._new_interval()
        return row

    def _check_weights(self) -> None:
        """Refuse weights or batch-norm statistics that are NaN or infinite: no checkpoint is saved of them."""
        bad = nonfinite(self.module.state_dict())
        if bad:
            raise TrainingError(f"the model's weights became NaN or infinite by step {self.step} ({bad}); lower `lr` "
                                f"or check the data")

    def _interval_row(self, lr: float) -> dict:
        """Step, learning rate, mean losses and speed of the interval; refuses a non-finite loss."""
        mean_loss = (self.run_loss.double().cpu() / max(self.run_n, 1)).tolist()
        if not all(math.isfinite(v) for v in mean_loss):
            raise TrainingError(f"training loss became {mean_loss} by step {self.step}; lower `lr` or check the data")
        elapsed = time.perf_counter() - self.t0
        # the objective: each source's loss times its weight (refine's pseudo_weight was left out; a review)
        row = {"step": self.step, "lr": lr, "loss": sum(s.weight * v for s, v in zip(self.sources, mean_loss, strict=False))}
        row |= {f"loss_{s.name or i}": v for i, (s, v) in enumerate(zip(self.sources, mean_loss, strict=False)) if s.weight != 0}
        row["images_per_s"] = self.interval_images / elapsed if elapsed > 0 else 0.0
        return row

    def _validate(self, row: dict) -> dict | None:
        """Add the validation scores to ``row``; the best checkpoint's metrics when they beat the best so far."""

        conf = validate(self.module, self.val_loader, self.device, self.config, self.dist, self.channels_last,
                        self.val_domain, self.step)
        sc = scores(conf)
        row |= {k: sc[k] for k in ("f1", "precision", "recall", "iou", "tp", "fp", "fn")}
        if sc["f1"] <= self.best_f1:
            return None
        return {"step": self.step, "split": self.val_split, **sc}

    def _card(self, metrics: dict) -> ModelCard:
        """The model card of a checkpoint of this run with ``metrics``."""
        config = self.config
        return ModelCard.from_dict(self.base_card | {
            "model": config.model, "scale": config.scale, "threshold": config.threshold,
            "domain_bn": config.domain_bn, "train": self.base_card.get("train", {}) | self.train_info, "metrics": metrics,
        })

    def save_last(self) -> None:
        """Write ``last.*`` and ``last_state.pt``: everything :meth:`restore` needs."""
        self.saved_last = True

        # the three files are written beside first and put in place together: a failed write (a full disk) left
        # step-20 weights with a step-17 state, which resume took (found by the failure audit)
        from lsmap.io.locks import owner_tag

        stage = self.out_dir / f".lsmap-last-{owner_tag()}.tmp"
        stage.mkdir(parents=True)
        try:
            save_checkpoint(stage / "last", self.module, self._card({"step": self.step}))
            save_state(stage / "last_state.pt", {
                "step": self.step, "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "best_f1": self.best_f1, "best_metrics": json.dumps(self.best_metrics),
                "history": json.dumps(self.history), **rng_states(self.device),
            })
            for name in ("last_state.pt", "last.json", "last.safetensors"):
                os.replace(stage / name, self.out_dir / name)
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def result(self) -> TrainResult:
        """What the run produced."""
        out_dir = self.out_dir
        best_path = checkpoint_paths(out_dir / "best")[0] if self.val_loader is not None else None
        return TrainResult(best_path, self.best_metrics, self.history, checkpoint_paths(out_dir / "last")[0],
                           out_dir, self.module)


# --- high level: folders in, run folder out ----------------------------------------------------------


#: Bytes of activations (kept for the backward pass) per scaled input pixel of a training batch: a low
#: estimate for a ResNet-18 U-Net in float32.
TRAIN_ACTIVATION_BYTES = 1024


def check_train_memory(patch, profile, config: TrainConfig, *, streams: int = 1,
                       fix: str = "use a smaller `batch_size` (or `scale`)") -> None:
    """Refuse a batch size (x scale promotion) whose batch cannot fit in memory, before any training; ``streams``:
    the batches each step holds at once (refine's source and target), ``fix``: the advice of the message.

    Raises:
        TooLargeError: the estimate exceeds the available memory (CPU) or the GPU's memory.
    """
    from lsmap.io.patches import read_image
    from lsmap.io.resources import check_memory, human

    image, _ = read_image(patch.image, profile)
    _, h, w = image.shape
    pixels = streams * config.batch_size * h * w * config.scale ** 2
    need = pixels * (profile.count * 4 + TRAIN_ACTIVATION_BYTES)
    option = f"`batch_size` {config.batch_size}"
    what = (f"a training batch of {config.batch_size} patches of {h} x {w} px at scale x{config.scale:g}"
            + (f", {streams} at once" if streams > 1 else ""))
    if resolve_device(config.device).type == "cuda":  # 'auto' on a GPU machine too (a review)
        import torch

        if torch.cuda.is_available():
            total = torch.cuda.get_device_properties(0).total_memory
            if need > total:
                raise TooLargeError(f"{option}: {what} would need about {human(need)} of GPU memory but the GPU has "
                                    f"{human(total)}; {fix}")
            return
    check_memory(need, option, what, fix)


def train(out_dir: str | os.PathLike, *, data: str | os.PathLike | None = None,
          train_dir: str | os.PathLike | None = None, val_dir: str | os.PathLike | None = None,
          target_dir: str | os.PathLike | None = None, config: TrainConfig | None = None,
          bands: str | Sequence[str] = "l4s14", init: str | os.PathLike | None = None, resume: bool = False,
          overwrite: bool = False, progress: bool | None = None, label_map: str | dict | None = None) -> TrainResult:
    """Train on patch folders with the recipe: what ``lsmap train`` runs.

    Validation patches come from ``val_dir``, else from the dataset root's validation split
    (``data``), else ``config.val_fraction`` (default :data:`VAL_FRACTION`) of the training
    patches are held out, drawn with ``config.seed`` (:func:`lsmap.data.dataset.hold_out`;
    their ids are in the result and the model card). ``config.val_fraction = 0`` trains without
    validation: no ``best`` checkpoint, only ``last``.

    Args:
        out_dir: Run folder.
        data: Dataset root (any layout of :data:`lsmap.io.patches.LAYOUTS`) or a plain patch folder.
        train_dir: Plain labelled patch folder (instead of ``data``).
        val_dir: Labelled validation folder.
        target_dir: Unlabelled target patches whose batch-norm statistics domain BN learns
            (default: the validation images; their labels are never used for it).
        config: Training configuration (defaults: the recipe).
        bands: Band set to train on: a profile name, a comma list of band names or a sequence of
            names; taken from the patches by name, so they may hold more bands (e.g. ``rgbn`` from
            14-band L4S patches). The card records the band names.
        init: Checkpoint to start from.
        resume: Continue the interrupted run in ``out_dir``.
        overwrite: Replace an existing run in ``out_dir``.
        progress: ``True`` or ``None``: a bar on a terminal, one plain log line per validation on stderr
            otherwise (as ``lsmap train``); ``False``: no progress (as ``lsmap train --json``).
        label_map: Mask values of the files -> 0/1/255 (``"0:0,255:1"`` for 0/255 masks).

    Raises:
        InputError: ``out_dir`` inside an input folder; neither ``data`` nor ``train_dir``, both, ``val_dir``
            with a hold-out fraction, empty folders, images without masks, NaN-only patches, wrong band count,
            masks with values outside 0/1/255 (unmapped) or without any landslide pixel.
        TooLargeError: a batch that cannot fit in memory.
        OutputExistsError: ``out_dir`` holds a run (checked before any data is read).
        OutputOwnershipError: ``out_dir`` holds no run but other files.
    """
    from lsmap.core.checks import check_input_path
    from lsmap.core.labels import parse_label_map
    from lsmap.io.outputs import check_outputs_apart, input_paths, output_path
    from lsmap.io.patches import check_labels
    from lsmap.learn.domain_bn import SOURCE, TARGET

    config = config or TrainConfig()
    config.check(need_weights=not resume and init is None)
    profile = get_profile(bands)
    out_dir = output_path(out_dir, directory=True, name="out_dir")  # '' was Path('.'): a run into the working folder
    if init is not None:  # '' was named as `model` by the checkpoint reader (the re-audit)
        check_input_path("init", init, "a checkpoint to start from (NAME.safetensors)")
    if data is not None and train_dir is not None:
        raise InputError("give either `data` ROOT or `train_dir` DIR, not both")
    if data is None and train_dir is None:
        raise InputError("give `data` ROOT or `train_dir` DIR (labelled patches)")
    if target_dir is not None and not config.domain_bn:
        raise InputError("`target_dir` gives the patches whose batch-norm statistics `domain_bn` learns; without "
                         "`domain_bn` nothing would use them: add `domain_bn` or leave `target_dir` out")
    if val_dir is not None and config.val_fraction is not None:
        raise InputError("give either `val_dir` DIR or `val_fraction` (patches held out of the training data), "
                         "not both")
    # a run folder inside a patch folder wrote its files among the patches (`-o patches/img`; an audit)
    check_outputs_apart([out_dir], input_paths(data, train_dir, val_dir, target_dir), new_too=True)
    check_run_dir(out_dir, overwrite, resume)
    root = data if data is not None else train_dir
    train_p = find_patches(root, "train", require_masks=True)
    val_p: list = []
    held: list[str] = []
    validation: str | None
    if val_dir is not None:
        val_p, validation = find_patches(val_dir, "validation", require_masks=True), str(val_dir)
    elif (data is not None and config.val_fraction is None and not is_plain_folder(data)
          and has_split(data, "validation")):
        val_p, validation = find_patches(data, "validation", require_masks=True), f"{data} (validation split)"
    elif config.val_fraction == 0:
        validation = None
    else:
        fraction = VAL_FRACTION if config.val_fraction is None else config.val_fraction
        if config.val_split == "spatial":
            train_p, val_p, dropped = spatial_hold_out(train_p, fraction, config.seed, _patch_windows(root))
        else:
            train_p, val_p = hold_out(train_p, fraction, config.seed)
        held, validation = [p.id for p in val_p], "held out"
    if held:
        fraction = VAL_FRACTION if config.val_fraction is None else config.val_fraction
        how = (f"a block of the scene held out ({dropped} training patches overlapping it left out)"
               if config.val_split == "spatial" else "patches held out")
        desc = (f"{root} (train {len(train_p)} patches, validation {len(held)} {how} of the training "
                f"data with fraction {fraction:g} and seed {config.seed}: ids {', '.join(held)})")
    elif validation is None:
        desc = f"{root} (train {len(train_p)} patches, no validation)"
    elif val_dir is None:
        desc = f"{data} (train {len(train_p)}, validation {len(val_p)} patches)"
    else:
        desc = f"train {root} ({len(train_p)} patches), validation {val_dir} ({len(val_p)})"
    mapping = parse_label_map(label_map)
    check_labels(train_p, mapping, "training")
    if val_p:
        # a bad mask (no 'mask' dataset, values out of range) raises its own error; only a held-out draw that missed
        # the landslides gets the message below (every error was reported as that before; found by an audit)
        counts = check_labels(val_p, mapping, "validation", allow_empty=bool(held))
        if held and counts["landslide"] == 0:
            # the masks as a whole hold landslides (checked before the hold-out): this draw missed them
            raise InputError(f"the {len(held)} patches held out for validation (ids {', '.join(held)}) hold no "
                             f"landslide pixel; draw others with another `seed` or a larger `val_fraction`, or give "
                             f"`val_dir`")
    check_train_memory(train_p[0], profile, config)
    source_stats = patch_stats(train_p, profile)  # nodata left out, as detect and refine do
    val_stats = (patch_stats(val_p, profile) if norm_mode(config.norm) == "own" else source_stats) if val_p else None
    aug = Augment() if config.augment else None
    sources = [Source(PatchDataset(train_p, source_stats, profile, augment=aug, label_map=mapping), config.loss, 1.0, SOURCE,
                      config.mixup_alpha, name="train")]
    if config.domain_bn:
        if target_dir is not None:
            tgt_p = find_patches(target_dir, "test", masks=False)  # its images only: a partial mask folder is no error
            tgt_stats = patch_stats(tgt_p, profile) if norm_mode(config.norm) == "own" else source_stats
        elif val_p:
            tgt_p, tgt_stats = [dataclasses.replace(p, mask=None) for p in val_p], val_stats
        else:
            raise InputError("`domain_bn` without validation patches needs `target_dir` (unlabelled target patches)")
        sources.append(Source(PatchDataset(tgt_p, tgt_stats, profile, augment=aug), config.loss, 0.0, TARGET, name="target"))
    val = PatchDataset(val_p, val_stats, profile, label_map=mapping) if val_p else None
    before = read_card(init) if init is not None else None
    adapted = tgt_p if config.domain_bn else []
    card = ModelCard(model=config.model, bands=list(profile.bands), stats=source_stats.to_dict(), data=desc,
                     trained_on=patch_keys(train_p, before.trained_on if before is not None else None),
                     adapted_on=patch_keys(adapted, before.adapted_on if before is not None else None),
                     trained_digests=patch_digests(train_p, before.trained_digests if before is not None else None),
                     adapted_digests=patch_digests(adapted, before.adapted_digests if before is not None else None))
    # held-out source patches with another target: scored in the source's batch-norm domain (without a target
    # folder the target's statistics are those of these very images)
    val_domain = SOURCE if config.domain_bn and held and target_dir is not None else None
    result = fit(sources, val, config, out_dir, card=card, init=init, resume=resume, progress=progress,
                 overwrite=overwrite, val_domain=val_domain)
    result.validation, result.held_out = validation, held
    return result
