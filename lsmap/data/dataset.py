"""Torch datasets over L4S-style patch lists, augmentations, and a step-based sampler.

A :class:`PatchDataset` reads patches with :func:`lsmap.io.patches.read_patch_image` / ``read_mask``
(the band set's bands taken by name, so patches may hold more bands than it),
applies augmentations to the L4S-scaled image (random flips, 90-degree rotations, colour
perturbation of the *spectral* bands only: slope and DEM are moved geometrically with the image
but their values are never changed), then normalises it with one :class:`BandStats` (separated
normalisation: the source's statistics for labelled data, the target's own for target data).

Randomness: a dataset item is addressed by ``index`` or by ``(index, seed)``; the augmentation of
``(index, seed)`` is a pure function of both. :class:`StepSampler` hands out such pairs, derived
from one run seed, the source number and the position in the sample stream, so a run (and a
resumed run, and every rank of a distributed run) draws exactly the same batches.

Scale promotion (x2.5, x4) is not done here: the training loop upsamples normalised batches, as
:func:`lsmap.learn.ensemble.member_logits` does at inference.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lsmap.core.bands import BandProfile, get_profile
from lsmap.core.constants import IGNORE_INDEX
from lsmap.core.normalize import _MIN_STD, BandStats
from lsmap.errors import InputError
from lsmap.io.patches import Patch, read_mask, read_patch_image

#: Datasets smaller than this (bytes of float32 images) are held in memory by default.
CACHE_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Augment:
    """Which augmentations to apply, and how strongly.

    Attributes:
        flip: Random horizontal and vertical flips.
        rotate: Random rotation by a multiple of 90 degrees.
        contrast: Spectral bands are stretched about their image mean by a factor in
            ``[1 - contrast, 1 + contrast]`` (0 disables).
        brightness: Spectral bands are multiplied by ``g * g_b``: one factor ``g`` in
            ``[1 - brightness, 1 + brightness]`` per image and one ``g_b`` in
            ``[1 - brightness/2, 1 + brightness/2]`` per band (0 disables).
    """

    flip: bool = True
    rotate: bool = True
    contrast: float = 0.1
    brightness: float = 0.1

    @property
    def colour(self) -> bool:
        """Whether any colour perturbation is on."""
        return self.contrast > 0 or self.brightness > 0


def augment_sample(image: np.ndarray, target: np.ndarray, weight: np.ndarray | None,
                   rng: np.random.Generator, aug: Augment, spectral: Sequence[int]):
    """Apply ``aug`` to one sample (geometric transforms to all arrays, colour to ``spectral`` bands).

    Args:
        image: L4S-scaled image (not normalised).
        target: Class mask (moved with the image, never changed).
        weight: Optional per-pixel weight map (moved with the image).
        rng: Source of randomness.
        aug: What to apply.
        spectral: Indices of the bands colour perturbation may change.

    Returns:
        ``(image, target, weight)`` as new contiguous arrays.

    Shape:
        ``image`` ``(C, H, W)``; ``target`` and ``weight`` ``(H, W)``.
    """
    arrays = [image, target[None]] + ([weight[None]] if weight is not None else [])
    if aug.flip:
        if rng.random() < 0.5:
            arrays = [a[:, :, ::-1] for a in arrays]
        if rng.random() < 0.5:
            arrays = [a[:, ::-1, :] for a in arrays]
    if aug.rotate:
        k = int(rng.integers(4))
        if k:
            arrays = [np.rot90(a, k, axes=(1, 2)) for a in arrays]
    # one copy of the image, C-contiguous: never write into the caller's (cached) array
    image = np.array(arrays[0], np.float32, order="C", copy=True)
    arrays = [image] + [np.ascontiguousarray(a) for a in arrays[1:]]
    idx = np.asarray(spectral, dtype=np.intp)
    if aug.colour and idx.size:
        # a run of bands is changed in place through a view; otherwise on a copy written back.
        # The in-place arithmetic is the same float32 operations as mean + (bands - mean) * k.
        run = bool(np.all(np.diff(idx) == 1))
        bands = image[int(idx[0]):int(idx[-1]) + 1] if run else image[idx]
        if aug.contrast > 0:
            k = rng.uniform(1 - aug.contrast, 1 + aug.contrast)
            mean = bands.mean(axis=(1, 2), keepdims=True)
            bands -= mean
            bands *= np.float32(k)
            bands += mean
        if aug.brightness > 0:
            g = rng.uniform(1 - aug.brightness, 1 + aug.brightness)
            gb = rng.uniform(1 - aug.brightness / 2, 1 + aug.brightness / 2, size=(idx.size, 1, 1))
            bands *= (g * gb).astype(np.float32)
        if not run:
            image[idx] = bands
    return image, arrays[1][0], (arrays[2][0] if weight is not None else None)


class PatchDataset(Dataset):
    """Patches as normalised tensors for training and validation.

    Items are dicts: ``image`` ``(C, H, W)`` float32 normalised, ``target`` ``(H, W)`` int64
    (255 = ignored; all 255 for a patch without mask), and ``weight`` ``(H, W)`` float32 when the
    dataset was given weight maps.

    Args:
        patches: The patches (from :func:`lsmap.io.patches.find_patches`).
        stats: Normalisation statistics for these patches (``None``: no normalisation).
        profile: Band set; its bands are taken from each image by name (per-band statistics and
            colour perturbation follow it).
        augment: Augmentations (``None``: none, e.g. for validation).
        targets: Optional masks overriding the patches' own (e.g. pseudo labels), one per patch,
            ``(H, W)`` uint8 with 255 = ignored.
        weights: Optional per-pixel loss weights, one ``(H, W)`` float map (or ``None``) per patch.
        cache: Hold images and masks in memory after the first read (``None``: when the
            dataset is smaller than :data:`CACHE_BYTES`).
        label_map: Mask value in the files -> 0/1/255 (:func:`lsmap.core.labels.parse_label_map`).

    Raises:
        InputError: no patches, or ``targets``/``weights`` of another length than ``patches``.
    """

    def __init__(self, patches: Sequence[Patch], stats: BandStats | None, profile: BandProfile | str = "l4s14", *,
                 augment: Augment | None = None, targets: Sequence[np.ndarray | None] | None = None,
                 weights: Sequence[np.ndarray | None] | None = None, cache: bool | None = None,
                 label_map: dict[int, int] | None = None) -> None:
        self.patches = list(patches)
        if not self.patches:
            raise InputError("no patches to build a dataset from; check the patch folder")
        for name, seq in (("targets", targets), ("weights", weights)):
            if seq is not None and len(seq) != len(self.patches):
                raise InputError(f"{name}: {len(seq)} given for {len(self.patches)} patches")
        self.stats = stats
        self.label_map = label_map
        self.profile = get_profile(profile)
        if stats is not None and len(stats.mean) != self.profile.count:
            raise InputError(f"band statistics have {len(stats.mean)} bands, profile '{self.profile.name}' has {self.profile.count}")
        self.augment = augment
        self.targets = list(targets) if targets is not None else None
        self.weights = list(weights) if weights is not None else None
        self._spectral = self.profile.spectral_indices
        self._norm = None
        if stats is not None:  # as BandStats.normalize computes them, for in-place normalisation
            self._norm = (np.asarray(stats.mean, np.float32).reshape(-1, 1, 1),
                          np.maximum(np.asarray(stats.std, np.float32), np.float32(_MIN_STD)).reshape(-1, 1, 1))
        if cache is None:
            cache = len(self.patches) * self.profile.count * 128 * 128 * 4 < CACHE_BYTES
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.patches)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The L4S-scaled image ``(C, H, W)`` float32 and mask ``(H, W)`` uint8 of patch ``index``.

        Raises:
            InputError: wrong band count, mask of another size than the image, or an image
                without any finite value (a NaN-only patch carries no information; remove it).
        """
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        patch = self.patches[index]
        image, n_bad = read_patch_image(patch, self.profile)
        if n_bad == image.size:
            raise InputError(f"{patch.image}: patch has no finite value (all NaN/inf); remove it from the folder")
        if self.targets is not None and self.targets[index] is not None:
            mask = np.asarray(self.targets[index], np.uint8)
        elif patch.mask is not None:
            mask = read_mask(patch.mask, self.label_map)
        else:
            mask = np.full(image.shape[1:], IGNORE_INDEX, np.uint8)
        if mask.shape != image.shape[1:]:
            src = patch.mask if patch.mask is not None else "target"
            raise InputError(f"{src}: mask is {mask.shape} but image {patch.image} is {image.shape[1:]}; they must match")
        if self._cache is not None:
            self._cache[index] = (image, mask)
        return image, mask

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, index_seed(key))
        image, mask = self.load(index)
        weight = None
        if self.weights is not None:
            w = self.weights[index]
            weight = np.ones(mask.shape, np.float32) if w is None else np.asarray(w, np.float32)
        fresh = False  # whether ``image`` is a new array of ours (not the cached one)
        if self.augment is not None:
            rng = np.random.default_rng(seed)
            image, mask, weight = augment_sample(image, mask, weight, rng, self.augment, self._spectral)
            fresh = True
        if self.stats is not None:
            if fresh:  # the same float32 (x - mean) / std as BandStats.normalize, without temporaries
                mean, std = self._norm
                image -= mean
                image /= std
            else:
                image = self.stats.normalize(image)
                fresh = True
        item = {
            "image": torch.from_numpy(image if fresh else np.array(image, np.float32, copy=True)),
            "target": torch.from_numpy(mask.astype(np.int64)),
        }
        if weight is not None:
            item["weight"] = torch.from_numpy(np.array(weight, np.float32, copy=True))
        return item


def index_seed(index: int) -> int:
    """Default augmentation seed of an item addressed by index alone."""
    return int(np.random.SeedSequence((0, index)).generate_state(1)[0])


class StepSampler(Sampler):
    """Endless stream of ``(index, seed)`` items for step-based training.

    Position ``p`` of the global stream (all ranks together) holds item ``perm_e[p mod n]`` of
    epoch ``e = p // n`` (a fresh permutation per epoch); step ``s`` of rank ``r`` takes positions
    ``((s * world + r) * batch_size + j)`` for ``j < batch_size``, so the ranks never share an item
    within a step and a run restarted at ``start_step`` continues the same stream.

    Args:
        n: Dataset length.
        batch_size: Items per step on this rank.
        seed: Run seed.
        stream: Number distinguishing several sources of one run.
        rank: This process's rank.
        world: Number of processes.
        start_step: First step to draw.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, stream: int = 0, rank: int = 0, world: int = 1,
                 start_step: int = 0) -> None:
        if n <= 0:
            raise InputError("cannot sample from an empty dataset")
        self.n, self.batch_size, self.seed, self.stream = n, batch_size, seed, stream
        self.rank, self.world, self.start_step = rank, world, start_step

    def _perm(self, epoch: int) -> np.ndarray:
        cache = self.__dict__.setdefault("_perms", {})
        if epoch not in cache:
            if len(cache) > 4:
                cache.clear()
            cache[epoch] = np.random.default_rng((self.seed, self.stream, epoch)).permutation(self.n)
        return cache[epoch]

    def __len__(self) -> int:  # effectively endless
        return 2**62

    def item(self, position: int) -> tuple[int, int]:
        """The ``(index, seed)`` item at ``position`` of the global stream."""
        epoch, k = divmod(position, self.n)
        seed = int(np.random.SeedSequence((self.seed, self.stream, 1, position)).generate_state(1)[0])
        return int(self._perm(epoch)[k]), seed

    def __iter__(self) -> Iterator[tuple[int, int]]:
        step = self.start_step
        while True:
            base = (step * self.world + self.rank) * self.batch_size
            for j in range(self.batch_size):
                yield self.item(base + j)
            step += 1



def _held_count(n: int, fraction: float) -> tuple[int, int]:
    """``(n, k)``: ``k`` of the ``n`` training patches to hold out for ``fraction``, at least one on each side.

    Raises:
        InputError: ``fraction`` outside ``(0, 1)`` or fewer than 2 patches.
    """
    if not 0 < fraction < 1:
        raise InputError(f"`val_fraction` must be between 0 and 1 (exclusive), got {fraction}")
    if n < 2:
        raise InputError(f"{n} training patch(es): too few to hold out validation patches; give a validation "
                         f"folder (`val_dir`) or none (--val none)")
    return n, min(n - 1, max(1, round(fraction * n)))


def hold_out(patches: Sequence[Patch], fraction: float, seed: int) -> tuple[list[Patch], list[Patch]]:
    """Split ``patches`` into ``(train, validation)``: a seeded random ``fraction`` held out.

    At least one patch goes to each side; the same patches, ``fraction`` and ``seed`` always give
    the same split (both sides keep the input order).

    Raises:
        InputError: ``fraction`` outside ``(0, 1)`` or fewer than 2 patches.
    """
    n, k = _held_count(len(patches), fraction)
    chosen = set(np.random.default_rng(seed).permutation(n)[:k].tolist())
    return ([p for i, p in enumerate(patches) if i not in chosen], [p for i, p in enumerate(patches) if i in chosen])


def spatial_hold_out(patches: Sequence[Patch], fraction: float, seed: int,
                     windows: Mapping[str, tuple[int, int, int, int]]) -> tuple[list[Patch], list[Patch], int]:
    """Split the patches of one scene into ``(train, validation, dropped)``: a block of the scene held out.

    A random hold-out of tiled patches validates on the neighbours of training patches, and with
    ``lsmap tile --overlap`` on pixels whose images the model trained on (an audit found 96 % of the validation
    pixels of a Chittagong hold-out inside training images). Here the validation patches are ``fraction`` of
    them, consecutive in row-major order of their windows (a band of rows of the scene), starting at a place drawn
    with ``seed``; training patches whose windows overlap a validation window are left out of both (``dropped``
    of them), so no pixel the model trains on is a validation pixel.

    Args:
        windows: ``(row_off, col_off, height, width)`` of each patch id in the scene (``lsmap tile``'s index).

    Raises:
        InputError: ``fraction`` outside ``(0, 1)``, fewer than 2 patches, a patch without a window, or nothing
            left to train on.
    """
    n, k = _held_count(len(patches), fraction)
    missing = [p.id for p in patches if p.id not in windows]
    if missing:
        raise InputError(f"patches {', '.join(missing[:5])} are not in the folder's patch index; a spatial hold-out "
                         f"needs the index lsmap tile writes")
    order = sorted(range(n), key=lambda i: windows[patches[i].id][:2])
    start = int(np.random.default_rng(seed).integers(0, n - k + 1))
    val_idx = set(order[start:start + k])
    held = [windows[patches[i].id] for i in sorted(val_idx)]

    def touches(w: tuple[int, int, int, int]) -> bool:
        r, c, h, wd = w
        return any(r < r2 + h2 and r2 < r + h and c < c2 + w2 and c2 < c + wd for r2, c2, h2, w2 in held)

    rest = [i for i in range(n) if i not in val_idx]
    train = [patches[i] for i in rest if not touches(windows[patches[i].id])]
    if not train:
        raise InputError(f"a spatial hold-out of {k} of {n} patches leaves none to train on (every other patch "
                         f"overlaps it); lower `val_fraction`")
    return train, [patches[i] for i in sorted(val_idx)], len(rest) - len(train)
