"""Landslide4Sense-style patch folders: find, read and write ``image_N.h5`` / ``mask_N.h5``.

Layouts understood (``split`` is ``train``, ``validation`` or ``test``):

- plain: ``DIR/img/image_N.h5`` (+ ``DIR/mask/mask_N.h5``), as ``lsmap tile`` writes;
- official: ``ROOT/TrainData|ValidData|TestData/img|mask/``;
- split folders: ``ROOT/train|validation|test/img|mask/`` (``val``/``valid`` also name the
  validation split), e.g. the real patches beside the project;
- Hugging Face mirror: ``ROOT/images/<split>/`` and ``ROOT/annotations/<split>/``.

:data:`LAYOUTS` describes them for error messages.

Images are HDF5 dataset ``img`` of shape ``(H, W, C)`` (float64 or float32); masks are dataset
``mask`` of shape ``(H, W)``, uint8, 0 = background, 1 = landslide, 255 = unlabelled (ignored).
In memory lsmap uses channels-first ``(C, H, W)`` float32. Non-finite values (NaN, inf), which
occur in the wild, are replaced by :data:`NONFINITE_FILL` and counted.

Observed pixels: an image file may hold a second dataset ``valid`` (``(H, W)`` uint8, 1 = observed),
which ``lsmap tile`` writes for every patch with pixels that are not (nodata, clouds and shadows of
its masks, padding); those pixels also hold :data:`FILL` in every band. :func:`read_observed` reads it
(for patches without it: the pixels whose bands are not all :data:`FILL`), so an unlabelled patch
still says where it saw the ground.

Band names: an image's bands are known by name, so a band set can be taken from patches that hold
more bands (e.g. ``rgbn`` from the 14-band L4S patches). The names come from, in this order: the
``bands`` attribute of the ``img`` dataset (comma list; :func:`write_patch` writes it), the
``tiles.json`` of the folder (written by ``lsmap tile``), and the Landslide4Sense convention for a
14-band image without names (L4S order: B1..B12, slope, DEM). An image with another band count and
no names is taken to be in the order of the band set asked for (its count is checked).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsmap.core.bands import L4S_BANDS, BandProfile, band_indices
from lsmap.core.checks import is_empty_path
from lsmap.core.constants import FILL, IGNORE_INDEX
from lsmap.core.labels import mask_values
from lsmap.errors import InputError, MissingInputError
from lsmap.io.rasters import atomic_output

#: Value that replaces NaN/inf in patch images (L4S-scaled units: 0 is "no signal").
NONFINITE_FILL = FILL
#: Mask value of unlabelled pixels, ignored by losses and metrics.
SPLITS = ("train", "validation", "test")
_OFFICIAL = {"train": "TrainData", "validation": "ValidData", "test": "TestData"}
_SPLIT_DIRS = {"train": ("train",), "validation": ("validation", "val", "valid"), "test": ("test",)}
#: The folder layouts :func:`find_patches` reads, in the order it tries them.
LAYOUTS = (
    "DIR/img/ (+ DIR/mask/)",
    "ROOT/TrainData|ValidData|TestData/img/ (+ mask/)",
    "ROOT/train|validation|test/img/ (+ mask/)",
    "ROOT/images/<split>/ (+ ROOT/annotations/<split>/)",
)
_ID = re.compile(r"^(?:image_|mask_)?(.+)$")
#: Name of the metadata file ``lsmap tile`` writes beside ``img/`` (it records the band names).
META_NAME = "tiles.json"
#: HDF5 attribute of the ``img`` dataset holding its band names (comma list).
BANDS_ATTR = "bands"
#: HDF5 dataset of an image file marking its observed pixels (1) and the others (0).
VALID_NAME = "valid"
#: Hex digits kept of a patch's content digest (:func:`patch_digest`; 64 bits).
DIGEST_CHARS = 16


@dataclass(frozen=True)
class Patch:
    """One patch on disk: its id, image file, (when labelled) mask file, and (when the folder
    records them) its band names."""

    id: str
    image: Path
    mask: Path | None
    bands: tuple[str, ...] | None = None


def patch_id(path: str | os.PathLike) -> str:
    """The id of ``image_N.h5`` / ``mask_N.h5`` (``N``); other names keep their stem."""
    return _ID.match(Path(path).stem).group(1)


def patch_keys(patches: Sequence[Patch], before: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
    """Where ``patches`` lie, as a model card records its training patches: ``{image folder: [ids]}``.

    The folders are those of the resolved files, so the same files are recognised whichever path reaches them,
    through a linked folder or links to each file (found by an audit: a folder of links to training patches
    passed as unseen); a copy elsewhere is not by its place, but by its content (:func:`patch_digests`, which
    cards record beside). ``before`` (an earlier record, e.g. the card of the checkpoint a model started from) is
    merged in.
    """
    keys: dict[str, list[str]] = {str(k): list(v) for k, v in (before or {}).items()}
    seen = {k: set(v) for k, v in keys.items()}
    for p in patches:
        folder, pid = _resolved(p)
        if pid not in seen.setdefault(folder, set()):
            seen[folder].add(pid)
            keys.setdefault(folder, []).append(pid)
    return keys


def patch_digest(patch: Patch | str | os.PathLike) -> str:
    """The content digest of a patch's image (:data:`DIGEST_CHARS` hex digits of a SHA-256).

    Of the image array as the models read it (float32, ``(H, W, C)``, its shape hashed first), not of the file's
    bytes: the same image is recognised in a copy, and also in a file written otherwise (compressed, float64, by
    another HDF5 writer, without the band names), e.g. the official patches and a mirror of them. Digests are
    kept for the process by file (path, inode, size and modification time), so a file that changes is read again.

    Raises:
        InputError: unreadable file, or no ``img`` dataset.
    """
    path = Path(patch.image if isinstance(patch, Patch) else patch).resolve()
    try:
        st = path.stat()
    except OSError as e:
        raise InputError(f"{path}: cannot read the patch ({e.strerror or e}); re-create or remove the file") from None
    return _digest(str(path), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=1 << 16)
def _digest(path: str, ino: int, size: int, mtime_ns: int) -> str:
    """:func:`patch_digest` of the file at ``path`` as it is (``ino``, ``size`` and ``mtime_ns`` key the cache)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "img" not in f:
                raise InputError(f"{path}: no 'img' dataset; is this a Landslide4Sense image patch?")
            arr = np.ascontiguousarray(f["img"][()], dtype=np.float32)
    except OSError as e:
        raise InputError(f"{path}: cannot read HDF5 patch ({e}); re-create or remove the file") from None
    h = hashlib.sha256(repr(arr.shape).encode())
    h.update(arr.data)
    return h.hexdigest()[:DIGEST_CHARS]


def patch_digests(patches: Sequence[Patch], before: Sequence[str] | None = None) -> list[str]:
    """The content digests of ``patches``' images (:func:`patch_digest`), as a model card records them beside
    :func:`patch_keys`, each once; ``before`` (an earlier record) is merged in, first."""
    return list(dict.fromkeys([*(before or ()), *(patch_digest(p) for p in patches)]))


def recorded(patches: Sequence[Patch], record: Mapping[str, Sequence[str]],
             digests: Sequence[str] | None = None) -> list[bool]:
    """Per patch, whether a :func:`patch_keys` record holds it (by resolved folder and id) or, failing that, its
    image's content digest is one of ``digests`` (:func:`patch_digests`: a copy, a folder mounted elsewhere).
    Without ``digests`` (a card from before they were recorded) no image is read."""
    sets = {folder: set(ids) for folder, ids in record.items()}
    known = set(digests or ())
    out = []
    for p in patches:
        folder, pid = _resolved(p)
        out.append(pid in sets.get(folder, ()) or (bool(known) and patch_digest(p) in known))
    return out


def _resolved(p: Patch) -> tuple[str, str]:
    """The folder and id of the file a patch's image resolves to (a link named otherwise is its target)."""
    real = p.image.resolve()
    return str(real.parent), patch_id(real)


def _find_layout(root: Path, split: str) -> tuple[Path, Path] | None:
    """``(img folder, mask folder)`` of ``split`` under ``root``, or ``None``."""
    if (root / "img").is_dir():
        return root / "img", root / "mask"
    for folder in (_OFFICIAL[split], *_SPLIT_DIRS[split]):
        if (root / folder / "img").is_dir():
            return root / folder / "img", root / folder / "mask"
    if (root / "images" / split).is_dir():
        return root / "images" / split, root / "annotations" / split
    return None


def _layout(root: Path, split: str) -> tuple[Path, Path]:
    found = _find_layout(root, split)
    if found is not None:
        return found
    if next(root.glob("*.h5"), None) is not None:  # the img/ (or mask/) folder itself
        raise InputError(f"{root}: holds patch files itself; give the folder above it ({root.parent}), "
                         f"which holds img/ and mask/")
    others = [s for s in SPLITS if s != split and _find_layout(root, s) is not None]
    if others:
        raise InputError(f"{root}: no {split} patches, but {' and '.join(others)} patches; choose one with "
                         f"`split` ('{others[0]}')")
    raise InputError(f"{root}: no {split} patches found; the layouts read are: {'; '.join(LAYOUTS)}")


def has_split(root: str | os.PathLike, split: str) -> bool:
    """Whether ``root`` holds a folder of ``split`` patches in one of the :data:`LAYOUTS`.

    A plain patch folder (``DIR/img/``) holds every split.
    """
    return _find_layout(Path(root), split) is not None


def split_image_folder(root: str | os.PathLike, split: str) -> Path | None:
    """The image folder of ``split`` under ``root`` (any of the :data:`LAYOUTS`), or ``None``."""
    found = _find_layout(Path(root), split)
    return found[0] if found is not None else None


def is_plain_folder(root: str | os.PathLike) -> bool:
    """Whether ``root`` is a plain patch folder (``DIR/img/``) rather than a dataset root with splits."""
    return (Path(root) / "img").is_dir()


def _sort_key(pid: str) -> tuple:
    return (0, int(pid), "") if pid.isdigit() else (1, 0, pid)


def find_patches(root: str | os.PathLike, split: str = "train", require_masks: bool = False, *,
                 masks: bool = True, partial: bool = False) -> list[Patch]:
    """List the patches of ``split`` under ``root`` (any supported layout), sorted by id.

    Args:
        root: A plain patch folder or a dataset root.
        split: Which split to read from a dataset root (ignored for a plain folder).
        require_masks: Every image must have a mask.
        masks: Pair the images with their masks (and refuse ids that do not match); ``False`` (a reader of the
            images alone, such as the band statistics) lists the images with ``mask=None`` whatever the masks.
        partial: Images without a mask are listed with ``mask=None`` (an unlabelled target with a few patches
            labelled to score it); masks without an image are still refused.

    Raises:
        MissingInputError: ``root`` does not exist.
        InputError: no patches, or images and masks whose ids do not match.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")
    if is_empty_path(root):  # Path("") is '.': the working folder's patches were read
        raise InputError("empty path given as the patch folder; give a patch folder or a dataset root")
    root = Path(root)
    if not root.exists():
        raise MissingInputError(f"{root}: patch folder does not exist")
    img_dir, mask_dir = _layout(root, split)
    images = _by_id(img_dir)
    if not images:
        raise InputError(f"{img_dir}: folder holds no .h5 patch images")
    if require_masks and not masks:
        raise InputError("`require_masks` needs `masks`")
    masks = _by_id(mask_dir) if masks and mask_dir.is_dir() else {}
    if require_masks and not masks:
        raise InputError(f"{root}: no mask files ({mask_dir} {'holds no .h5 masks' if mask_dir.is_dir() else 'does not exist'}); "
                         f"this needs labelled patches: a mask/ folder beside img/ with a mask_N.h5 per image_N.h5")
    if masks or require_masks:
        missing = [] if partial and not require_masks else sorted(set(images) - set(masks), key=_sort_key)
        orphan = sorted(set(masks) - set(images), key=_sort_key)
        if missing or orphan:
            parts = []
            if missing:
                parts.append(f"images without mask: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
            if orphan:
                parts.append(f"masks without image: {', '.join(orphan[:5])}{' ...' if len(orphan) > 5 else ''}")
            raise InputError(f"{root}: image and mask ids do not match ({'; '.join(parts)}); add or remove the files")
    bands = _folder_bands(root)
    return [Patch(i, images[i], masks.get(i), bands) for i in sorted(images, key=_sort_key)]


def _by_id(folder: Path) -> dict[str, Path]:
    """The ``.h5`` files of ``folder`` by patch id.

    Raises:
        InputError: two files with one id (``4.h5`` and ``image_4.h5``, as in a real L4S folder): one of them would
            be dropped without a word.
    """
    found: dict[str, Path] = {}
    for f in sorted(folder.glob("*.h5")):
        pid = patch_id(f)
        if pid in found:
            raise InputError(f"{folder}: {found[pid].name} and {f.name} both have patch id '{pid}'; rename one of them "
                             f"(patch ids come from the file name)")
        found[pid] = f
    return found


def _folder_bands(root: Path) -> tuple[str, ...] | None:
    """The band names recorded in ``root/tiles.json`` (a band list or a band-profile dict), if any."""
    path = root / META_NAME
    if not path.is_file():
        return None
    try:
        bands = json.loads(path.read_text()).get("bands")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    if isinstance(bands, dict):
        bands = bands.get("bands")
    return tuple(str(b) for b in bands) if isinstance(bands, list) and bands else None


def _names_attr(value) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        return tuple(b.strip() for b in value.split(",") if b.strip()) or None
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in np.ravel(value)) or None


def read_image(
    path: str | os.PathLike, profile: BandProfile | None = None, *, fill: float | None = NONFINITE_FILL,
    bands: Sequence[str] | None = None,
) -> tuple[np.ndarray, int]:
    """Read a patch image as ``(C, H, W)`` float32 with non-finite values replaced.

    Args:
        path: ``image_N.h5`` file.
        profile: When given, its bands are taken from the image by name, in its order (see the
            module docstring for where the names come from); without names the band count is checked.
        fill: Value replacing NaN/inf; ``None`` keeps them (e.g. to leave them out of statistics).
        bands: The image's band names when known from elsewhere (e.g. :attr:`Patch.bands`); the
            file's own ``bands`` attribute takes precedence.

    Returns:
        The image (only ``profile``'s bands, when given) and the number of non-finite values in it
        (replaced unless ``fill`` is None).

    Raises:
        InputError: unreadable file, no ``img`` dataset, wrong rank, or (with ``profile``) a band it
            lacks (:class:`lsmap.errors.MissingBandError`) or, without names, the wrong band count.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "img" not in f:
                raise InputError(f"{path}: no 'img' dataset; is this a Landslide4Sense image patch?")
            names = _names_attr(f["img"].attrs.get(BANDS_ATTR))
            arr = np.asarray(f["img"][()], dtype=np.float32)
    except OSError as e:
        raise InputError(f"{path}: cannot read HDF5 patch ({e}); re-create or remove the file") from None
    if arr.ndim != 3:
        raise InputError(f"{path}: 'img' has shape {arr.shape}; expected (H, W, bands)")
    names = names or (tuple(bands) if bands is not None else None)
    if names is not None and len(names) != arr.shape[2]:
        raise InputError(f"{path}: {arr.shape[2]} bands but {len(names)} band names recorded "
                         f"({', '.join(names)}); re-create the patch")
    if names is None and arr.shape[2] == len(L4S_BANDS):
        names = L4S_BANDS  # the Landslide4Sense convention
    if profile is not None and names is not None:
        idx = band_indices(names, profile, source=path)
        arr = arr[:, :, list(idx)] if idx != tuple(range(arr.shape[2])) else arr
    elif profile is not None:
        profile.check_count(arr.shape[2], path)
    arr = np.ascontiguousarray(arr.transpose(2, 0, 1))
    bad = ~np.isfinite(arr)
    n_bad = int(bad.sum())
    if n_bad and fill is not None:
        arr[bad] = fill
    return arr, n_bad


def read_patch_image(patch: Patch, profile: BandProfile | None = None, *,
                     fill: float | None = NONFINITE_FILL) -> tuple[np.ndarray, int]:
    """:func:`read_image` of ``patch``'s image, with the band names its folder records."""
    return read_image(patch.image, profile, fill=fill, bands=patch.bands)


def read_observed(patch: Patch | str | os.PathLike, image: np.ndarray | None = None) -> np.ndarray | None:
    """Observed pixels ``(H, W)`` bool of a patch (``None``: all of them).

    The image file's ``valid`` dataset when it has one (:data:`VALID_NAME`); otherwise the pixels
    whose bands are not all exactly :data:`FILL` in ``image`` (``(C, H, W)``, read from the file when
    not given), the value ``lsmap tile`` has always written for pixels it did not observe.

    Raises:
        InputError: unreadable file, or a ``valid`` dataset of another shape than the image.
    """
    import h5py

    path = Path(patch.image if isinstance(patch, Patch) else patch)
    try:
        with h5py.File(path, "r") as f:
            valid = np.asarray(f[VALID_NAME][()]) != 0 if VALID_NAME in f else None
            shape = f["img"].shape[:2] if "img" in f else None
    except OSError as e:
        raise InputError(f"{path}: cannot read HDF5 patch ({e}); re-create or remove the file") from None
    if valid is not None:
        if shape is not None and valid.shape != tuple(shape):
            raise InputError(f"{path}: '{VALID_NAME}' has shape {valid.shape} but the image {tuple(shape)}; "
                             f"re-create the patch")
        return None if valid.all() else valid
    if image is None:
        image, _ = read_image(path, bands=patch.bands if isinstance(patch, Patch) else None)
    observed = ~(np.asarray(image) == FILL).all(axis=0)
    return None if observed.all() else observed


def read_mask(path: str | os.PathLike, label_map: Mapping[int, int] | None = None) -> np.ndarray:
    """Read a patch mask as ``(H, W)`` uint8: 0 background, 1 landslide, 255 ignored.

    Args:
        path: ``mask_N.h5`` file.
        label_map: Mask value in the file -> 0/1/255 (parsed :func:`lsmap.core.labels.parse_label_map`);
            ``None``: the file must hold 0/1/255 already.

    Raises:
        InputError: unreadable, no ``mask`` dataset, not 2-D, or values that would be silently lost
            (non-integer floats, values outside 0/1/255 not covered by ``label_map``).
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "mask" not in f:
                raise InputError(f"{path}: no 'mask' dataset; is this a Landslide4Sense mask patch?")
            arr = np.asarray(f["mask"][()])
    except OSError as e:
        raise InputError(f"{path}: cannot read HDF5 mask ({e}); re-create or remove the file") from None
    if arr.ndim != 2:
        raise InputError(f"{path}: 'mask' has shape {arr.shape}; expected (H, W)")
    return mask_values(arr, label_map, path)


def check_labels(patches: Sequence[Patch], label_map: Mapping[int, int] | None = None,
                 what: str = "labelled", allow_empty: bool = False, mappable: bool = True) -> dict[str, int]:
    """Read every mask of ``patches`` once and refuse a folder whose labels would be lost.

    Each mask goes through :func:`read_mask` (values outside 0/1/255, non-integer floats); then
    a folder without any landslide pixel is refused: training or scoring on it runs, but on
    nothing. A folder of 0/255 masks (a common export where 255 marks landslides, while L4S
    reads 255 as "ignored") gets the label map that reads it.

    Returns:
        Pixel counts ``{"background", "landslide", "ignored"}``.

    With ``allow_empty`` (scoring false alarms on stable ground) a folder without landslides is not refused:
    the caller says so.

    Raises:
        InputError: a bad mask, or no landslide pixel in the whole folder (unless ``allow_empty``).
    """
    counts = {"background": 0, "landslide": 0, "ignored": 0}
    masks = [p.mask for p in patches if p.mask is not None]
    for m in masks:
        arr = read_mask(m, label_map)
        n1 = int((arr == 1).sum())
        n255 = int((arr == IGNORE_INDEX).sum())
        counts["landslide"] += n1
        counts["ignored"] += n255
        counts["background"] += arr.size - n1 - n255
    if masks and counts["landslide"] == 0 and not allow_empty:
        folder = masks[0].parent
        found = ", ".join(f"{counts[k]:,} {k}" for k in counts if counts[k])
        hint = ("; if 255 marks the landslides (a 0/255 export), read them with `label_map` 0:0,255:1"
                if counts["ignored"] and label_map is None else
                "; check the masks, or map their values with `label_map`")
        if not mappable:  # the caller has no `label_map` (refine): say where the masks can be mapped
            hint = ("; check the masks: they are read as 0 background, 1 landslide, 255 ignored (train, evaluate "
                    "and tile map other values with `label_map`)")
        if what in ("evaluation", "unseen"):
            hint += "; to count false alarms on stable ground, allow it with `allow_no_landslides`"
        raise InputError(f"{folder}: the {what} masks hold no landslide pixel (value 1) in {len(masks)} masks "
                         f"({found}){hint}")
    return counts


def write_patch(
    folder: str | os.PathLike, pid: str, image: np.ndarray, mask: np.ndarray | None = None,
    *, compression: str | None = None, bands: Sequence[str] | None = None, valid: np.ndarray | None = None,
) -> Patch:
    """Write ``image`` (``(C, H, W)``) and optional ``mask`` (``(H, W)``) in the L4S format.

    ``valid`` (``(H, W)`` bool, the observed pixels) is stored as the image file's ``valid`` dataset
    (uint8) when some pixel is not observed (:func:`read_observed`).

    Files go to ``folder/img/image_<pid>.h5`` and ``folder/mask/mask_<pid>.h5`` (float32 ``img``
    stored ``(H, W, C)``, uint8 ``mask``), each written atomically. ``bands`` (one name per band)
    is recorded as the ``img`` dataset's ``bands`` attribute. ``compression`` (e.g.
    ``"gzip"`` at level 9, with the shuffle filter) makes smaller files that every HDF5 reader still opens;
    the default writes them uncompressed like the official patches.
    """
    opts = {"compression": compression, "shuffle": True} if compression else {}
    if compression == "gzip":
        opts["compression_opts"] = 9
    import h5py


    folder = Path(folder)
    image = np.asarray(image, np.float32)
    if bands is not None and len(bands) != image.shape[0]:
        raise InputError(f"patch {pid}: {image.shape[0]} bands but {len(bands)} band names given")
    if valid is not None and np.shape(valid) != image.shape[1:]:
        raise InputError(f"patch {pid}: `valid` has shape {np.shape(valid)}, the image {image.shape[1:]}")
    img_path = folder / "img" / f"image_{pid}.h5"
    with atomic_output(img_path, overwrite=True) as tmp:
        buf = io.BytesIO()  # built in memory, written by Python: a full disk raises here, never in
        with h5py.File(buf, "w") as f:  # an HDF5 close whose failure h5py leaves unreported
            f.create_dataset("img", data=image.transpose(1, 2, 0), **opts)
            if bands is not None:
                f["img"].attrs[BANDS_ATTR] = ",".join(bands)
            if valid is not None and not np.all(valid):
                f.create_dataset(VALID_NAME, data=np.asarray(valid, bool).astype(np.uint8), **opts)
        tmp.write_bytes(buf.getvalue())
    mask_path = None
    if mask is not None:
        mask_path = folder / "mask" / f"mask_{pid}.h5"
        with atomic_output(mask_path, overwrite=True) as tmp:
            buf = io.BytesIO()
            with h5py.File(buf, "w") as f:
                f.create_dataset("mask", data=np.asarray(mask, np.uint8), **opts)
            tmp.write_bytes(buf.getvalue())
    return Patch(pid, img_path, mask_path, tuple(bands) if bands is not None else None)
