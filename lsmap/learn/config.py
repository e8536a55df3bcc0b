"""Training settings: the 1st-place recipe as defaults, checked before a run starts.

Kept apart from the training loop (:mod:`lsmap.learn.train`) so that the command line can take
its choices and defaults from here without importing torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lsmap.core.norms import norm_mode
from lsmap.errors import InputError, MissingInputError

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("poly", "cosine", "constant")
#: How :func:`lsmap.learn.train.train` holds validation patches out of the training patches.
VAL_SPLITS = ("random", "spatial")
_DEFAULT_LR = {"adamw": 5e-4, "sgd": 1e-2}
_DEFAULT_WD = {"adamw": 1e-2, "sgd": 5e-4}
#: Most DataLoader worker processes per CPU of the machine that ``workers`` may ask for.
WORKERS_PER_CPU = 4
#: Fraction of the training patches held out for validation when no validation folder is given.
VAL_FRACTION = 0.2


def max_workers() -> int:
    """The most DataLoader worker processes a run may ask for on this machine (:data:`WORKERS_PER_CPU` per CPU)."""
    return WORKERS_PER_CPU * (os.cpu_count() or 1)


@dataclass
class TrainConfig:
    """Training configuration; the defaults are the 1st-place recipe (batch 16, 20k steps, x2.5).

    Attributes:
        model: Registry name (:data:`lsmap.learn.models.MODELS`).
        steps: Optimizer steps.
        batch_size: Images per step and source, over all processes.
        lr: Peak learning rate (``None``: 5e-4 for AdamW, 1e-2 for SGD).
        weight_decay: ``None``: 1e-2 for AdamW, 5e-4 for SGD (3rd place).
        optimizer: ``adamw`` or ``sgd`` (Nesterov, momentum 0.9).
        schedule: ``poly`` (power 0.9), ``cosine`` or ``constant`` after the warmup.
        warmup: Linear warmup steps (``None``: 5 % of ``steps``, at most 500).
        scale: Scale promotion factor (1, 2.5 or 4).
        val_every: Validate (and save ``last``) every this many steps, and at the end.
        seed: Seed of every random generator.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        amp: Mixed precision where it helps (bfloat16 on AMX CPUs, CUDA AMP).
        domain_bn: Domain-specific batch-norm statistics.
        threshold: Landslide probability threshold for validation and the model card.
        workers: DataLoader worker processes per source.
        loss: Loss spec used by :func:`train` for the labelled source.
        augment: Whether :func:`train` augments the training data.
        norm: ``own`` (validation/target data normalised by its own statistics, the 1st place's
            separated normalisation) or ``model`` (by the training statistics); see
            :data:`lsmap.core.normalize.NORMS` (``separated``/``global`` are accepted too).
        mixup_alpha: Mix-up of the labelled source in :func:`train` (0: off).
        encoder_weights: Encoder weights to start from: a local file, or ``"imagenet"`` for the
            encoder's published weights (:func:`lsmap.learn.models.load_published_encoder`);
            ``None``: random weights.
        loss_every: Steps between progress-bar loss updates.
        val_fraction: Fraction of the training patches :func:`lsmap.learn.train.train` holds out
            for validation (seeded by ``seed``) when no validation folder is given; ``None``:
            :data:`VAL_FRACTION`; ``0``: no validation (only ``last`` is written).
        val_split: How that fraction is drawn: ``random`` patches, or ``spatial``: a block of the scene, with the
            training patches that overlap it left out (:func:`lsmap.data.dataset.spatial_hold_out`; patches of
            ``lsmap tile``, which records where each lies).
    """

    model: str = "unet-resnet18"
    steps: int = 20000
    batch_size: int = 16
    lr: float | None = None
    weight_decay: float | None = None
    optimizer: str = "adamw"
    schedule: str = "poly"
    warmup: int | None = None
    scale: float = 2.5
    val_every: int = 500
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    domain_bn: bool = False
    threshold: float = 0.5
    workers: int = 0
    loss: str = "lovasz+ohem"
    augment: bool = True
    norm: str = "own"
    mixup_alpha: float = 0.0
    encoder_weights: str | None = None
    loss_every: int = 10
    val_fraction: float | None = None
    val_split: str = "random"

    def check(self, need_weights: bool = True) -> None:
        """Raise :class:`InputError` on values that cannot work, of the wrong type or out of range (an audit found
        ``lr=-1`` and ``nan`` failing as tracebacks after the data was read, ``amp="no"`` turning AMP on, and
        ``steps=10.5`` training 11 steps but saving step 10). ``need_weights=False`` (a resumed run, or one
        from an ``init`` checkpoint, whose weights replace the encoder's) does not ask for the
        ``encoder_weights`` file: refine and resume failed when it had moved (found by a code review)."""
        from lsmap.core.checks import check_bool, check_int, check_number, check_threshold
        from lsmap.learn.models import get_spec  # numpy: not at a command line's start

        get_spec(self.model)
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"unknown optimizer '{self.optimizer}'; choose one of: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"unknown schedule '{self.schedule}'; choose one of: {', '.join(SCHEDULES)}")
        self.norm = norm_mode(self.norm)
        for name in ("steps", "batch_size", "val_every", "loss_every"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0, 2**63 - 1)  # numpy's generators refuse a negative seed (a traceback before)
        check_int("workers", self.workers, 0)
        if self.workers > max_workers():  # 100000 ran into the OOM killer and left orphan workers (an audit)
            raise InputError(f"`workers` must be at most {max_workers()} ({WORKERS_PER_CPU} per CPU; this "
                             f"machine has {os.cpu_count() or 1}); got {self.workers}")
        if self.warmup is not None:
            check_int("warmup", self.warmup, 0)
        if self.lr is not None:
            check_number("lr", self.lr, 0, lo_open=True)
        if self.weight_decay is not None:
            check_number("weight_decay", self.weight_decay, 0)
        check_number("scale", self.scale, 0, lo_open=True)
        check_number("mixup_alpha", self.mixup_alpha, 0)
        check_threshold(self.threshold)
        for name in ("amp", "domain_bn", "augment"):
            check_bool(name, getattr(self, name))
        if need_weights and self.encoder_weights not in (None, "imagenet") and not Path(self.encoder_weights).is_file():
            raise MissingInputError(f"{self.encoder_weights}: `encoder_weights` file does not exist; give a "
                                    f"safetensors/state-dict file or 'imagenet'")
        if self.val_fraction is not None:
            check_number("val_fraction", self.val_fraction, 0, 1, hi_open=True)
        if self.val_split not in VAL_SPLITS:
            raise InputError(f"unknown `val_split` '{self.val_split}'; choose one of: {', '.join(VAL_SPLITS)}")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else _DEFAULT_LR[self.optimizer]

    @property
    def decay(self) -> float:
        return self.weight_decay if self.weight_decay is not None else _DEFAULT_WD[self.optimizer]

    @property
    def warmup_steps(self) -> int:
        return self.warmup if self.warmup is not None else min(500, self.steps // 20)
