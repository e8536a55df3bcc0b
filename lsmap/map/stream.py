"""Sliding-window ensemble inference over whole scenes, streamed block by block.

A scene is cut into overlapping windows (:func:`lsmap.core.windows.window_grid`), read in batches from a
full-width strip of the window height: moving down one row of windows keeps the rows the two rows
share and reads only the new ones, so each pixel is decoded, scaled and filled once. A reader
thread prefetches the next batches into a bounded queue while the models run: on a GPU the
calling thread runs one batch at a time, on a CPU several model worker threads each run whole
batches on a share of the cores (:func:`model_threads`); results are blended in window order, so
the output does not depend on the number of workers. Each window's
probabilities are weighted with :func:`lsmap.core.windows.blend_weight` (Hann ramps over the overlap, a
small positive floor) and accumulated in a strip of ``window`` rows by the scene width; a row is
final as soon as the next row of windows starts below it, and is then written (weighted sum /
summed weights) to a float32 probability GeoTIFF. Peak memory is therefore a few batches plus two
strips and one row of GDAL blocks, whatever the scene's height, and grows only linearly with its
width.

Validity: a pixel is nodata (never a landslide; probability written as :data:`PROB_NODATA`) when
it is not valid by the one rule of :mod:`lsmap.io.scene` (masked by GDAL, non-finite, or, for files
declaring no nodata at all, a spectral band equal to the band profile's nodata value). Before
normalisation, nodata pixels are filled with the band means of the normalisation statistics so
they look like "average" ground to the model and do not create edge artefacts around data gaps.

Input scale: models see L4S-scaled values. A scene of raw values (Sentinel-2 digital numbers,
slope in degrees, DEM in metres) is divided by ``profile.divisors`` on the fly
(:func:`lsmap.io.scene.scale_raw`, as ``lsmap tile --raw`` does); :func:`lsmap.data.scan.scan_scene`
tells which scenes are raw, and computes the per-scene statistics. The probability raster is turned
into uint8 COGs by :mod:`lsmap.io.cog` and into polygons by :mod:`lsmap.map.vectorize`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lsmap.core.bands import BandProfile, band_indices, get_profile
from lsmap.core.normalize import BandStats
from lsmap.core.windows import Window, blend_weight, north_up_turn, offsets, window_grid
from lsmap.data.scan import check_stats
from lsmap.errors import CheckpointError, InputError, NoModelError
from lsmap.io.malloc import limit_malloc_arenas, reuse_freed_memory
from lsmap.io.outputs import gdal_write_check
from lsmap.io.rasters import geotiff_profile, open_raster, row_cache_bytes
from lsmap.io.scene import (
    SceneInfo,
    open_scene_mask,
    read_scene_window,
    scene_band_indices,
    scene_band_names,
    scene_info,
)
from lsmap.learn.crf import crf_refine, require, rgb_indices
from lsmap.learn.device import inference_channels_last, resolve_device
from lsmap.learn.ensemble import folded_members, inference_context, member_passes, predict_proba

#: Value of nodata pixels in the internal float32 probability raster.
PROB_NODATA = -1.0


@dataclass
class PredictResult:
    """What :func:`predict_scene` wrote and how long it took.

    Attributes:
        prob: Float32 probability GeoTIFF (nodata :data:`PROB_NODATA`), or ``None`` when the output only
            went to the ``sink``.
        uncertainty: Float32 uncertainty GeoTIFF, when asked for.
        uncertainty_method: ``"variance"`` (across ensemble members and TTA flips) or
            ``"bernoulli"`` (``p * (1 - p)`` of the mean probability, with a single pass).
        windows: Number of windows run through the models.
        passes: Forward passes per window (members x flips).
        batch_size: Windows per batch.
        seconds: Wall time.
        model_seconds: Time spent in the models (including host/device copies), summed over
            batches: with several CPU model workers running at once it exceeds the wall time.
        timings: Further seconds (``read``: preparing batches, in the reader thread when there is
            one; ``prob_write``: blending and writing; ``handoff``: in the ``sink``, when there is one;
            ``crf``) and ``workers``, the model workers used.
        valid_pixels: Pixels of the output with a value (not :data:`PROB_NODATA`).
    """

    prob: Path | None
    uncertainty: Path | None
    uncertainty_method: str | None
    windows: int
    passes: int
    batch_size: int
    seconds: float
    model_seconds: float
    timings: dict = field(default_factory=dict)
    valid_pixels: int = 0


def auto_window(members: Sequence, height: int | None = None, width: int | None = None,
                overlap: int = 32, device: Any = None) -> tuple[int, str]:
    """Detection's window for ``members`` when none is given: ``(pixels, why)``.

    When every member is a registered fully convolutional model (U-Nets, DeepLabV3+, the tiny U-Net: the
    window's size changes only pixels near its borders, which the overlap blends away; measured:
    bench/window_size.py), a large window (the batch shrinks to fit: :func:`auto_batch_size`): for a
    ``height`` x ``width`` scene the one of :data:`lsmap.core.constants.LARGE_WINDOWS` whose grid makes
    the models compute the fewest pixels (:func:`computed_pixels`; ties: the smaller); without the scene's
    size, :data:`~lsmap.core.constants.LARGE_WINDOW`. Scale-promoted models see the window enlarged by
    their factor: on a GPU their window is at most ``LARGE_WINDOW``; on a CPU (``device`` ``None`` or a
    CPU) it is chosen the same way among the multiples of the pad multiple whose enlarged size stays within
    the largest of ``LARGE_WINDOWS`` (x2.5: at most 256 px, 640 px inputs). Measured on a float32 CPU
    (BENCHMARKS.md, issue 20): a x2.5 ResNet-18 U-Net over 4096^2 took 173 s with 256 px windows against
    182 s with 448 px, although it computes 1.41x the scene's pixels against 1.20x, and peaked at 1466 MB
    against 1967 MB. Else :data:`lsmap.core.constants.WINDOW` (128), the Landslide4Sense patch size the
    models trained on (SegFormer's attention sees the whole window; unknown architectures).
    """
    from lsmap.core.constants import LARGE_WINDOW, LARGE_WINDOWS, PAD_MULTIPLE, WINDOW
    from lsmap.learn.registry import MODELS

    names = [m.card.model for m in members]
    other = sorted({n for n in names if n not in MODELS or not MODELS[n].fully_convolutional})
    if other:
        return WINDOW, f"auto: {WINDOW} px, the training patch size ({', '.join(other)} not fully convolutional)"
    scale = max(float(getattr(m.card, "scale", 1.0)) for m in members)
    candidates, kind = LARGE_WINDOWS, "fully convolutional models"
    if scale != 1 and getattr(device, "type", device or "cpu") == "cpu":
        top = max(2 * PAD_MULTIPLE, int(LARGE_WINDOWS[-1] / scale) // PAD_MULTIPLE * PAD_MULTIPLE)
        candidates = tuple(range(2 * PAD_MULTIPLE, top + 1, PAD_MULTIPLE))
        kind = f"fully convolutional models scaled x{scale:g} on a CPU (inputs at most {LARGE_WINDOWS[-1]} px)"
    elif scale != 1:
        candidates = tuple(w for w in LARGE_WINDOWS if w <= LARGE_WINDOW)
    default = min(candidates[-1], LARGE_WINDOW)
    if height is None or width is None:
        return default, f"auto: {default} px for {kind}"
    sizes = [w for w in candidates if w > overlap]
    if not sizes:  # an overlap as large as the windows: the window check names it
        return default, f"auto: {default} px for {kind}"
    best = min(sizes, key=lambda w: (computed_pixels(height, width, w, overlap), w))
    extra = computed_pixels(height, width, best, overlap) / (height * width)
    return best, (f"auto: {best} px for {kind}, the size in {sizes[0]}-{sizes[-1]} px whose "
                  f"windows cover this scene with the least work ({extra:.2f}x its pixels)")


def computed_pixels(height: int, width: int, window: int, overlap: int) -> int:
    """Pixels the models compute over a ``height`` x ``width`` scene in windows of ``window`` px overlapping
    by ``overlap`` (:func:`lsmap.core.windows.window_grid`, each window padded to the pad multiple)."""
    from lsmap.core.constants import PAD_MULTIPLE

    def padded(n: int) -> int:
        return -(-n // PAD_MULTIPLE) * PAD_MULTIPLE

    rows, cols = len(offsets(height, window, overlap)), len(offsets(width, window, overlap))
    return rows * cols * padded(min(window, height)) * padded(min(window, width))


def auto_batch_size(device, window: int, scale: float = 1.0, passes: int = 1) -> int:
    """Windows per batch for ``device``: about 16 L4S-sized windows on a CPU, more on a GPU by memory."""
    import torch

    pixels = (window * scale) ** 2
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        budget = total / 2**30 * 8  # ~8 windows of 128x128 per GiB for a mid-size U-Net
    else:
        budget = 16
    return int(max(1, min(256, budget * (128 * 128) / pixels)))


#: Bytes of model activations per (scaled) input pixel of a batch, a low estimate for the U-Nets in
#: inference: a ResNet-18 U-Net's largest live tensors are 64 channels at half resolution and 16 at
#: full resolution (float32).
ACTIVATION_BYTES = 256


def predict_memory(scene: SceneInfo, bands: int, win: Window, batch_size: int, scale: float, *,
                   on_cpu: bool = True, workers: int = 1, prefetch: int = 0, uncertainty: bool = False) -> int:
    """Bytes of host memory :func:`predict_scene` needs (a low estimate).

    Two strips of ``window`` rows by the width of a column panel (scene values and blend sums,
    :func:`column_panels`), the shared columns' sums over the scene height, the batches in flight
    (read ahead + being run), and on a CPU the models' activations at the scaled size.
    """
    h, w = win.height, win.width
    width = min(scene.width, max(PANEL_WIDTH, 4 * w))
    strip = bands * h * width * 4 + h * width  # values + validity
    blend = h * width * (8 * (3 if uncertainty else 2) + 1) + scene.height * w * 8 * (3 if uncertainty else 2)
    batch = batch_size * bands * h * w * 4
    in_flight = max(1, workers) + max(0, prefetch) + 1
    act = batch_size * (h * scale) * (w * scale) * ACTIVATION_BYTES * max(1, workers) if on_cpu else 0
    return int(strip + blend + batch * in_flight + act + h * w * 4)


def check_predict_memory(scene: SceneInfo, profile: BandProfile, win: Window, batch_size: int, scale: float, device,
                         *, workers: int = 1, prefetch: int | None = None, uncertainty: bool = False) -> None:
    """Refuse window, batch and scale settings whose buffers cannot fit in memory (before any allocation).

    Raises:
        TooLargeError: the estimate (:func:`predict_memory`) exceeds the available memory.
    """
    from lsmap.io.resources import check_memory

    cpu = getattr(device, "type", str(device)) == "cpu"
    pf = prefetch if prefetch is not None else (2 if not cpu else workers if workers > 1 else 0)
    need = predict_memory(scene, profile.count, win, batch_size, scale, on_cpu=cpu, workers=workers, prefetch=pf,
                          uncertainty=uncertainty)
    check_memory(need, f"--window {win.height}x{win.width} --batch-size {batch_size} (model scale x{scale:g})",
                 f"inference on a {scene.width} x {scene.height} px scene", "use a smaller --window or --batch-size")


def _pin(t):
    """Pinned (page-locked) copy of a CPU tensor for asynchronous copies; unchanged when unavailable."""
    try:
        return t.pin_memory()
    except RuntimeError:  # no CUDA driver: pinning is impossible (and pointless)
        return t


@dataclass
class _Batch:
    windows: list[Window]
    x: Any  # (B, C, h, w) float32 array or pinned tensor
    valid: np.ndarray  # (B, h, w) bool
    read_seconds: float


#: Widest column panel streamed at a time (px, at least 4 windows): a scene wider than this is run in
#: panels of whole window columns, each top to bottom, so that the strips, the blend sums and the
#: block cache hold a panel's width, not the scene's (peak memory flat from 2048^2 to 10980^2).
PANEL_WIDTH = 2048


def column_panels(windows: Sequence[Window]) -> list[list[Window]]:
    """``windows`` (row-major, one grid) in column panels: whole window columns, spanning at most
    ``max(PANEL_WIDTH, 4 * window)`` px; row-major within each panel, panels left to right.

    A scene no wider than one panel is one panel in the original order. Neighbouring panels share the
    columns their border windows overlap (blended as one, :class:`_PanelBlender`); no column is
    covered by windows of three panels (the span is at least 4 windows).
    """
    width = windows[0].width
    span = max(PANEL_WIDTH, 4 * width)
    groups: list[list[int]] = []
    for c in sorted({w.col_off for w in windows}):
        if not groups or c + width - groups[-1][0] > span:
            groups.append([])
        groups[-1].append(c)
    which = {c: k for k, g in enumerate(groups) for c in g}
    out: list[list[Window]] = [[] for _ in groups]
    for w in windows:
        out[which[w.col_off]].append(w)
    return out


def panel_columns(part: Sequence[Window]) -> tuple[int, int]:
    """Scene columns ``[c0, c1)`` the windows of one panel cover."""
    return min(w.col_off for w in part), max(w.col_off + w.width for w in part)


def final_columns(height: int, width: int, window: int, overlap: int) -> list[int]:
    """The scene columns where the column panels' final values start (and ``width``): :func:`predict_scene`
    writes (and hands its ``sink``) the columns ``[e[k], e[k + 1])`` of the panels' rows panel by panel."""
    panels = column_panels(window_grid(height, width, window, overlap))
    return [panel_columns(part)[0] for part in panels] + [width]


def last_window_row(height: int, window: int, overlap: int) -> int:
    """The scene row where the last row of windows starts: :func:`predict_scene` writes (and hands its
    ``sink``) the rows from it only when that row of windows is done, and the rows above it before."""
    return offsets(height, window, overlap)[-1]


#: What :func:`predict_scene` hands each piece of its output to, as it is written:
#: ``(row_off, col_off, probability, uncertainty or None)``, float32 with :data:`PROB_NODATA`.
Sink = Callable[[int, int, np.ndarray, "np.ndarray | None"], None]


#: Least GDAL block cache of streamed inference (MB): a panel's row of blocks needs 17 MB (uint16, 14 bands);
#: more is sized by :func:`lsmap.io.rasters.row_cache_bytes` (so that the probability rows written wait for
#: their tiles too).
STREAM_CACHE_MB = 32


class _Strips:
    """Batches of windows cut from a full-width strip of the scene, each pixel read and prepared once.

    The strip holds the ``height`` scene rows of the current row of windows, scaled (raw scenes) and
    with nodata pixels filled. Moving down to the next row of windows keeps the rows the two share
    (the overlap) and reads only the new ones, in pieces that never straddle a row of GDAL blocks
    (so a cache of one block row suffices: :func:`lsmap.io.rasters.row_cache_bytes`).
    """

    def __init__(self, src, scene: SceneInfo, profile: BandProfile, height: int, raw: bool, fill: np.ndarray,
                 indexes: Sequence[int] | None = None, mask=None, columns: tuple[int, int] | None = None) -> None:
        self.src, self.scene, self.profile, self.raw, self.indexes = src, scene, profile, raw, indexes
        self.mask = mask
        self.fill = np.asarray(fill, np.float32)[:, None, None]
        self.block_rows = src.block_shapes[0][0]
        self.c0, c1 = columns if columns is not None else (0, scene.width)  # the panel's scene columns
        self.data = np.empty((profile.count, height, c1 - self.c0), np.float32)
        self.valid = np.empty((height, c1 - self.c0), bool)
        self.top: int | None = None

    def _advance(self, row: int) -> None:
        """Make the strip hold scene rows ``[row, row + height)``."""
        h = self.valid.shape[0]
        keep = 0
        if self.top is not None and self.top < row < self.top + h:
            keep = self.top + h - row
            step = h - keep  # rows moved up by `step`, in pieces that do not overlap: no temporary copy
            for i in range(0, keep, step):
                j = min(keep, i + step)
                self.data[:, i:j] = self.data[:, i + step:j + step]
                self.valid[i:j] = self.valid[i + step:j + step]
        r = row + keep
        while r < row + h:  # new rows, split at block-row boundaries
            n = min(row + h, (r // self.block_rows + 1) * self.block_rows) - r
            rows = slice(r - row, r - row + n)
            data, ok = read_scene_window(self.src, Window(col_off=self.c0, row_off=r, width=self.valid.shape[1],
                                                          height=n),
                                         self.profile, raw=self.raw, declared=self.scene.declares_nodata,
                                         indexes=self.indexes, mask=self.mask, out=self.data[:, rows])
            if not ok.all():
                np.copyto(data, self.fill, where=~ok[None])
            self.valid[rows] = ok
            r += n
        self.top = row

    def batch(self, windows: Sequence[Window], pin: bool) -> _Batch:
        """The windows (in row-major order) as one batch of model inputs."""
        t0 = time.perf_counter()
        h, w = windows[0].height, windows[0].width
        x = np.empty((len(windows), self.profile.count, h, w), np.float32)
        valid = np.empty((len(windows), h, w), bool)
        for k, win in enumerate(windows):
            if win.row_off != self.top:
                self._advance(win.row_off)
            cs = slice(win.col_off - self.c0, win.col_off - self.c0 + w)
            x[k] = self.data[:, :, cs]
            valid[k] = self.valid[:, cs]
        xb: Any = x
        if pin:
            import torch

            xb = _pin(torch.from_numpy(x))
        return _Batch(list(windows), xb, valid, time.perf_counter() - t0)


def _read_batches(src, scene: SceneInfo, profile: BandProfile, windows: Sequence[Window], batch_size: int,
                  raw: bool, fill: np.ndarray, pin: bool, indexes: Sequence[int] | None = None) -> Iterator[_Batch]:
    with open_scene_mask(scene) as mask:  # the not-observed raster, when the scene has one
        for part in column_panels(windows):  # each panel top to bottom, its batches never mixing panels
            strips = _Strips(src, scene, profile, windows[0].height, raw, fill, indexes, mask, panel_columns(part))
            for s in range(0, len(part), batch_size):
                yield strips.batch(part[s:s + batch_size], pin)
            del strips


_DONE = object()


class _Prefetcher(threading.Thread):
    """Reads batches (with its own dataset handle) into a bounded queue while the consumer runs the model."""

    def __init__(self, cache_bytes: int, scene: SceneInfo, *args, prefetch: int) -> None:
        super().__init__(daemon=True, name="lsmap-reader")
        self.cache_bytes, self.scene, self.args = cache_bytes, scene, args
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self.stop = threading.Event()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        import rasterio

        try:
            with rasterio.Env(GDAL_CACHEMAX=self.cache_bytes, GDAL_NUM_THREADS=1), \
                    open_raster(self.scene.path, "scene") as src:
                for batch in _read_batches(src, self.scene, *self.args):
                    if not self._put(batch):
                        return
            self._put(_DONE)
        except BaseException as e:  # handed to the consumer, which re-raises it
            self._put(e)

    def __iter__(self) -> Iterator[_Batch]:
        while True:
            item = self.queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def ensemble_moments(members, x, stats: BandStats | None, tta: bool, want_var: bool, amp: bool = True):
    """Mean landslide probability over members (x flips) and, with ``want_var``, its variance.

    Shape:
        ``x``: ``(N, C, H, W)`` L4S-scaled; returns ``(N, H, W)`` mean and ``(N, H, W)`` variance
        (``None`` unless ``want_var``).
    """

    if not want_var:
        return predict_proba(members, x, stats=stats, tta=tta, amp=amp), None
    s = s2 = None
    n = 0
    for p in member_passes(members, x, stats, tta, amp):
        s = p if s is None else s + p
        s2 = p * p if s2 is None else s2 + p * p
        n += 1
    mean = s / n
    return mean, (s2 / n - mean * mean).clamp_min(0.0)


#: Most model workers on a CPU (more cores go to intra-op threads of each).
MAX_CPU_WORKERS = 4


def model_threads(device, workers: int | None = None) -> tuple[int, int]:
    """``(workers, threads)``: batches run through the models at once, and torch threads for each.

    On a CPU, by default one worker per core up to :data:`MAX_CPU_WORKERS` (the cores being
    ``torch.get_num_threads()``), the cores shared out among them. Whole batches on single
    threads keep the cores busier than one batch on all of them (no barrier between layers; the
    measured gain is in BENCHMARKS.md), and leave gaps for the reader thread. A GPU runs one batch at a time.

    Raises:
        InputError: ``workers`` is not positive.
    """
    import torch

    if workers is not None and workers < 1:
        raise InputError(f"model workers must be positive (got {workers})")
    if device.type != "cpu":
        return 1, torch.get_num_threads()
    cores = torch.get_num_threads()
    workers = workers or max(1, min(cores, MAX_CPU_WORKERS))
    return workers, max(1, cores // workers)


def ordered_map(fn: Callable, items: Iterator, workers: int,
                context: Callable[[], contextlib.AbstractContextManager] | None = None) -> Iterator[tuple]:
    """``(item, fn(item))`` in the order of ``items``, ``fn`` run by ``workers`` threads.

    Each worker thread runs all its calls inside one ``context()`` (e.g. autocast: the casts of
    the weights are then made once per thread, not once per batch). At most ``workers + 1``
    items are taken ahead of the one yielded, so memory stays a few batches. An exception in
    ``fn`` is raised here for its item; closing the generator drops the items not yet started and
    waits for the threads.
    """
    from collections import deque

    tasks: queue.Queue = queue.Queue()
    results: dict[int, tuple[bool, Any]] = {}
    broken: list[BaseException] = []  # a worker that failed outside ``fn`` (e.g. entering ``context``)
    done = threading.Condition()

    def work() -> None:
        try:
            with context() if context is not None else contextlib.nullcontext():
                while (task := tasks.get()) is not None:
                    k, item = task
                    try:
                        out = (True, fn(item))
                    except BaseException as e:  # raised to the consumer for this item
                        out = (False, e)
                    with done:
                        results[k] = out
                        done.notify_all()
        except BaseException as e:  # the consumer must not wait for results that never come
            with done:
                broken.append(e)
                done.notify_all()

    def result(k: int):
        with done:
            done.wait_for(lambda: k in results or broken)
            if k not in results:
                raise broken[0]
            ok, value = results.pop(k)
        if not ok:
            raise value
        return value

    threads = [threading.Thread(target=work, daemon=True, name=f"lsmap-model-{i}") for i in range(max(1, workers))]
    for t in threads:
        t.start()
    pending: deque = deque()
    try:
        for k, item in enumerate(items):
            tasks.put((k, item))
            pending.append((k, item))
            if len(pending) > len(threads):
                k0, first = pending.popleft()
                yield first, result(k0)
        while pending:
            k0, first = pending.popleft()
            yield first, result(k0)
    finally:
        while True:  # drop what no thread has started
            try:
                tasks.get_nowait()
            except queue.Empty:
                break
        for _ in threads:
            tasks.put(None)
        for t in threads:
            t.join()


def _default_fill(stats: BandStats | None, members: Sequence, bands: Sequence[str]) -> Sequence[float]:
    """What nodata pixels become, per band of ``bands``: the band means of the normalisation
    statistics (the scene's, or, per band, the mean of the training means of the members that take it)."""
    if stats is not None:
        return stats.mean
    cards = [m.card.band_stats for m in members]
    if any(c is None for c in cards):
        raise CheckpointError("a model card has no training statistics; use the scene's statistics (`norm` scene)")
    out = []
    for b in bands:
        means = [c.mean[list(m.card.bands).index(b)] for m, c in zip(members, cards, strict=True) if b in m.card.bands]
        out.append(float(np.mean(means)))
    return out


@dataclass(frozen=True)
class BandPlan:
    """Which scene bands are read and which of them each member takes.

    Attributes:
        profile: The bands read (the union of the members' bands, in the scene's order).
        indexes: Their 1-based band indexes in the scene file.
        members: The members, each with :attr:`lsmap.learn.ensemble.Member.inputs` set to its bands
            among ``profile``'s (copies: the given members are not changed).
        scene_bands: The names of all the scene's bands, in file order.
    """

    profile: BandProfile
    indexes: tuple[int, ...]
    members: list
    scene_bands: tuple[str, ...]


def band_plan(scene: SceneInfo, members: Sequence, bands: str | Sequence[str] | BandProfile | None = None) -> BandPlan:
    """Match every member's bands (its card's, by name) to the scene's bands.

    Args:
        scene: The scene (its band descriptions name its bands).
        members: Loaded ensemble members.
        bands: The scene's bands in file order, for a file without band descriptions (``--bands``).

    Raises:
        CheckpointError: no member.
        MissingBandError: a member needs a band the scene lacks (named with the scene and the member).
        InputError: the scene's band names cannot be told (see :func:`lsmap.io.scene.scene_band_names`).
    """
    if not members:
        raise NoModelError()
    sets = {tuple(m.card.bands) for m in members}
    assume = members[0].card.profile if len(sets) == 1 else None
    names = scene_band_names(scene, bands, assume=assume)
    needed: set[str] = set()
    for m in members:  # every member's bands by name; the first missing ones name it
        scene_band_indices(names, m.card.profile, source=scene.path, user=m.source or m.card.model)
        needed.update(m.card.bands)
    read = tuple(b for b in names if b in needed)
    profile = get_profile(read)
    planned = [dataclasses.replace(m, inputs=None if tuple(m.card.bands) == read else
                                   band_indices(read, m.card.profile, source=scene.path)) for m in members]
    return BandPlan(profile, scene_band_indices(names, profile, source=scene.path), planned, tuple(names))


#: Columns of the blend strip finalised at a time (a multiple of the 256 px GeoTIFF tiles).
FLUSH_COLUMNS = 2048


class _StripBlender:
    """Blends window probabilities into a strip of window rows by the scene width, writing each row
    as soon as no later window covers it: the weighted sum over the windows / the summed weights,
    :data:`PROB_NODATA` where the scene has no data. Windows must come in row-major order.

    The rows go to the rasters ``dst_p`` and ``dst_u`` (either may be ``None``: not written) and to the
    ``sink``; ``want_u``: the uncertainty is computed (for ``dst_u`` or the sink).
    """

    def __init__(self, weight: np.ndarray, width: int, dst_p, dst_u, use_var: bool, want_u: bool, col0: int = 0,
                 side_in: _Side | None = None, side_out: _Side | None = None, sink: Sink | None = None) -> None:
        from rasterio.windows import Window as RioWindow

        self.weight, self.dst_p, self.dst_u, self.use_var, self.sink = weight, dst_p, dst_u, use_var, sink
        self.want_u = want_u or dst_u is not None
        self.rio_window = RioWindow
        # a panel (:func:`column_panels`): scene columns [col0, col0 + width); the sums of its first
        # columns from the panel on its left (side_in), those of its last columns kept for the next
        self.col0, self.side_in, self.side_out = col0, side_in, side_out
        h = weight.shape[0]
        self.p = np.zeros((h, width), np.float64)  # sum of weight x probability
        self.w = np.zeros((h, width), np.float64)  # sum of weights
        self.u = np.zeros((h, width), np.float64) if use_var else None  # sum of weight x variance
        self.v = np.zeros((h, width), bool)  # valid input
        self.top = 0  # scene row of the strip's first row
        self.seconds = 0.0  # spent writing
        self.sink_seconds = 0.0  # spent handing pieces to the sink
        self.valid_pixels = 0  # pixels written with a value

    def add(self, win: Window, mean: np.ndarray, var: np.ndarray | None, valid: np.ndarray) -> None:
        """Blend one window's probability (and variance) in; rows above it are final and written."""
        if win.row_off != self.top:
            self.flush(win.row_off)
        h, w = self.weight.shape
        c = win.col_off - self.col0
        rs, cs = slice(win.row_off - self.top, win.row_off - self.top + h), slice(c, c + w)
        self.p[rs, cs] += self.weight * mean
        self.w[rs, cs] += self.weight
        if self.use_var:
            self.u[rs, cs] += self.weight * var
        self.v[rs, cs] = valid

    def flush(self, upto: int) -> None:
        """Write the rows above scene row ``upto`` and move the strip down to it."""
        n = upto - self.top
        if n <= 0:
            return
        t0 = time.perf_counter()
        width = self.p.shape[1]
        rows = slice(self.top, upto)
        if self.side_in is not None:  # the left panel's share of the columns both cover
            k = self.side_in.p.shape[1]
            self.p[:n, :k] += self.side_in.p[rows]
            self.w[:n, :k] += self.side_in.w[rows]
            if self.u is not None:
                self.u[:n, :k] += self.side_in.u[rows]
        if self.side_out is not None:  # columns the next panel covers too: not final yet
            width = self.side_out.col0 - self.col0
            self.side_out.p[rows] = self.p[:n, width:]
            self.side_out.w[rows] = self.w[:n, width:]
            if self.u is not None:
                self.side_out.u[rows] = self.u[:n, width:]
        # in column pieces: the temporaries stay a few MB whatever the scene's width (same values)
        in_sink = 0.0
        for c0 in range(0, width, FLUSH_COLUMNS):
            cs = slice(c0, min(width, c0 + FLUSH_COLUMNS))
            wsum = np.maximum(self.w[:n, cs], 1e-12)
            p = self.p[:n, cs] / wsum
            invalid = ~self.v[:n, cs]
            target = self.rio_window(self.col0 + c0, self.top, cs.stop - c0, n)
            p32 = _with_nodata(p, invalid)
            self.valid_pixels += invalid.size - int(np.count_nonzero(invalid))
            if self.dst_p is not None:
                self.dst_p.write(p32[None], window=target)
            u32 = None
            if self.want_u:
                u = self.u[:n, cs] / wsum if self.use_var else p * (1.0 - p)
                u32 = _with_nodata(u, invalid)
                if self.dst_u is not None:
                    self.dst_u.write(u32[None], window=target)
            if self.sink is not None:  # timed apart: a sink that waits for its workers is not writing
                t_sink = time.perf_counter()
                self.sink(self.top, self.col0 + c0, p32, u32)
                in_sink += time.perf_counter() - t_sink
        h = self.p.shape[0]
        for a in (self.p, self.w, self.u, self.v):
            if a is not None:
                a[: h - n] = a[n:]
                a[h - n:] = 0
        self.top = upto
        self.seconds += time.perf_counter() - t0 - in_sink
        self.sink_seconds += in_sink


def _with_nodata(values: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """``values`` as float32 with :data:`PROB_NODATA` where ``invalid`` (one float32 copy, no float64 one)."""
    out = values.astype(np.float32)
    out[invalid] = PROB_NODATA
    return out


@dataclass
class _Side:
    """Blend sums of the columns two neighbouring panels share (scene columns ``col0..``), every scene row."""

    col0: int
    p: np.ndarray
    w: np.ndarray
    u: np.ndarray | None


class _PanelBlender:
    """:class:`_StripBlender` over the column panels of :func:`column_panels`, one panel at a time
    (windows come panel by panel, row-major within each). The columns two panels share are blended
    from both: the left panel's sums wait in a :class:`_Side` (scene height x shared columns) until
    the right panel finalises those rows. One panel: exactly :class:`_StripBlender`."""

    def __init__(self, weight: np.ndarray, panels: Sequence[Sequence[Window]], height: int, dst_p, dst_u,
                 use_var: bool, want_u: bool, sink: Sink | None = None) -> None:
        self.weight, self.height, self.dst, self.sink = weight, height, (dst_p, dst_u, use_var, want_u), sink
        self.columns = [panel_columns(part) for part in panels]
        self.panel_of = {w.col_off: k for k, part in enumerate(panels) for w in part}
        self.k = -1
        self.current: _StripBlender | None = None
        self.seconds = self.sink_seconds = 0.0
        self.valid_pixels = 0

    def _collect(self) -> None:
        self.seconds += self.current.seconds
        self.sink_seconds += self.current.sink_seconds
        self.valid_pixels += self.current.valid_pixels
        self.current.seconds = self.current.sink_seconds = 0.0
        self.current.valid_pixels = 0

    def _open(self, k: int) -> None:
        side_in = None
        if self.current is not None:
            self.current.flush(self.height)
            self._collect()
            side_in = self.current.side_out
        c0, c1 = self.columns[k]
        side_out = None
        if k + 1 < len(self.columns):
            n0 = self.columns[k + 1][0]
            shape = (self.height, c1 - n0)
            side_out = _Side(n0, np.zeros(shape), np.zeros(shape), np.zeros(shape) if self.dst[2] else None)
        self.current = _StripBlender(self.weight, c1 - c0, *self.dst, col0=c0, side_in=side_in, side_out=side_out,
                                     sink=self.sink)
        self.k = k

    def add(self, win: Window, mean: np.ndarray, var: np.ndarray | None, valid: np.ndarray) -> None:
        k = self.panel_of[win.col_off]
        if k != self.k:
            self._open(k)
        self.current.add(win, mean, var, valid)

    def flush(self, upto: int) -> None:
        if self.current is not None:
            self.current.flush(upto)
            if upto >= self.height:
                self._collect()


#: Compression of the probability rasters: ZSTD level 1 with the floating-point predictor writes a
#: 4096^2 probability raster in about half the CPU time of DEFLATE level 1 and reads it faster, at the
#: same size (measured: BENCHMARKS.md, issue 20).
PROB_CREATION = {"compress": "zstd", "predictor": 3, "zstd_level": 1}


def _raster_profile(scene: SceneInfo, compress: bool) -> dict:
    """lsmap's GeoTIFF profile for a one-band float32 probability raster on the scene's grid:
    fast ZSTD (:data:`PROB_CREATION`), or none."""
    profile = geotiff_profile(crs=scene.crs, transform=scene.transform, width=scene.width, height=scene.height,
                              count=1, nodata=PROB_NODATA, creation_options=PROB_CREATION)
    if not compress:
        for key in PROB_CREATION:
            del profile[key]
    return profile


def predict_scene(scene: str | os.PathLike | SceneInfo, members: Sequence, prob_out: str | os.PathLike | None, *,
                  stats: BandStats | None, raw: bool = False, fill: Sequence[float] | None = None,
                  tta: bool = False, overlap: int = 32, window: int = 128, batch_size: int | None = None,
                  device: Any = "auto", uncertainty_out: str | os.PathLike | None = None,
                  amp: bool = True, pin_memory: bool | None = None, prefetch: int | None = None,
                  workers: int | None = None, crf: bool = False, compress: bool = True,
                  bands: str | Sequence[str] | None = None, progress: bool = False,
                  sink: Sink | None = None, uncertainty: bool = False) -> PredictResult:
    """Run the ensemble over a whole scene in overlapping windows; write a float32 probability raster
    (or hand it, piece by piece, to a ``sink``).

    Args:
        scene: Path of a stacked scene, or its :class:`SceneInfo`; each member takes the bands its card
            names from it, by name (:func:`band_plan`).
        members: Loaded ensemble members (:class:`lsmap.learn.ensemble.Member`), all on ``device``;
            they may take different band sets.
        prob_out: Float32 GeoTIFF to write: landslide probability in [0, 1], :data:`PROB_NODATA`
            where the scene has no data. Written directly (callers wrap it in an atomic output).
            ``None``: not written; the values only go to the ``sink``.
        stats: Normalisation statistics in L4S scale (the scene's own, for the bands read:
            :attr:`BandPlan.profile`, or named statistics holding them); ``None`` normalises with
            each member's training statistics (``--norm model``).
        raw: The scene holds raw values: divide by the profile's divisors when reading.
        fill: Per-band L4S-scale value put into nodata pixels (default: the mean of ``stats``, or
            the members' mean training means).
        tta: Average over horizontal/vertical flips too.
        overlap: Pixels shared by neighbouring windows (blended with Hann ramps).
        window: Window size in pixels.
        batch_size: Windows per batch (default :func:`auto_batch_size`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        uncertainty_out: Also write a float32 uncertainty raster here: the variance of the
            probability across members and flips, or ``p * (1 - p)`` with a single pass.
        amp: Mixed precision (bfloat16 + channels-last on AMX CPUs, AMP on CUDA).
        pin_memory: Copy batches through pinned memory, non-blocking (default: on CUDA).
        prefetch: Batches a reader thread may read ahead while the models run; 0 reads each batch
            in the calling thread just before it is needed. Default: 2 on a GPU, ``workers`` on a
            CPU with several model workers, else 0.
        workers: Batches run through the models at once (CPU only; default
            :func:`model_threads`): each worker thread runs whole batches with
            ``torch.get_num_threads() // workers`` intra-op threads, which keeps every core busy
            between the layers and lets the reader thread interleave. Torch's thread count is
            changed for the call and restored afterwards.
        crf: Refine each window's ensemble probability with a dense CRF
            (:func:`lsmap.learn.crf.crf_refine`, colours from the window's natural-colour bands, nodata
            filled as for the models) before it is blended; needs ``lsmap[crf]``. A variance
            uncertainty is the models' (not refined); ``p * (1 - p)`` uses the refined ``p``.
        compress: Compress the output rasters (:data:`PROB_CREATION`); off: 4 bytes a pixel on disk,
            but no compression on the writing thread.
        bands: The scene's bands in file order, for a file without band descriptions.
        progress: Show progress (a bar on a terminal, lines elsewhere: :mod:`lsmap.io.progress`).
        sink: Called with each piece of the output rasters as it is written (:data:`Sink`): every
            pixel once, rows in order within each column panel (:func:`final_columns`), panels left
            to right; e.g. :meth:`lsmap.map.components.BlockStream.add`, which traces the landslides
            while the models run on the rows below. The arrays are not used again here.
        uncertainty: Compute the uncertainty for the ``sink`` too, without ``uncertainty_out``.

    Returns:
        A :class:`PredictResult`.

    Raises:
        CheckpointError: no member.
        MissingBandError: a member needs a band the scene lacks.
        InputError: bad window/overlap, the scene's band names cannot be told, or nothing to write
            (no ``prob_out``, ``uncertainty_out`` or ``sink``).
    """
    import rasterio
    import torch

    if prob_out is None and uncertainty_out is None and sink is None:
        raise InputError("predict_scene has nowhere to put the probability: give `prob_out` or a `sink`")
    t_start = time.perf_counter()
    plan = _plan(scene, members, stats, fill, tta, overlap, window, batch_size, device, amp, pin_memory, bands)
    scene, profile, device, fill, passes, batch_size, pin = (plan.scene, plan.bands.profile, plan.device, plan.fill,
                                                            plan.passes, plan.batch_size, plan.pin)
    members, stats = plan.bands.members, plan.stats
    windows = window_grid(scene.height, scene.width, window, overlap)
    weight = blend_weight(window, overlap, crop=(windows[0].height, windows[0].width))
    scale = max(float(m.card.scale) for m in members)
    check_predict_memory(scene, profile, windows[0], batch_size, scale, device, workers=model_threads(device, workers)[0],
                         prefetch=prefetch, uncertainty=uncertainty or uncertainty_out is not None)
    want_unc = uncertainty or uncertainty_out is not None
    use_var = want_unc and passes > 1
    if crf:
        require()
        rgb = rgb_indices(profile.bands)

    workers, threads = model_threads(device, workers)
    limit_malloc_arenas()  # before the reader and model threads take arenas of their own
    if prefetch is None:
        prefetch = 2 if device.type != "cpu" else workers if workers > 1 else 0
    with open_raster(scene.path, "scene") as src:
        cache_bytes = row_cache_bytes(src, max(c1 - c0 for c0, c1 in map(panel_columns, column_panels(windows))),
                                      STREAM_CACHE_MB)
    read_args = (profile, windows, batch_size, raw, fill, pin, plan.bands.indexes)
    model_seconds = read_seconds = crf_seconds = 0.0
    bar = None
    if progress:
        from lsmap.io.progress import progress_bar

        bar = progress_bar(total=len(windows), unit="win", desc="detect")
    rprof = _raster_profile(scene, compress)
    with contextlib.ExitStack() as es:
        for out in (prob_out, uncertainty_out):
            if out is not None:
                es.enter_context(gdal_write_check(out))  # exits last: after the rasters are closed
        es.enter_context(rasterio.Env(GDAL_CACHEMAX=cache_bytes, GDAL_NUM_THREADS=1))
        es.enter_context(reuse_freed_memory())  # batch after batch, the same large arrays: no mmap, no page faults
        if threads != torch.get_num_threads():
            es.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(threads)
        dst_p, dst_u = (es.enter_context(rasterio.open(out, "w", **rprof)) if out is not None else None
                        for out in (prob_out, uncertainty_out))
        blender = _PanelBlender(weight, column_panels(windows), scene.height, dst_p, dst_u, use_var, want_unc, sink)
        batches = _batch_source(es, scene, read_args, prefetch, cache_bytes)
        if bar is not None:
            es.callback(bar.close)

        # the models learnt north-up, east-right images: a south-up (or west-right) grid's windows are shown to
        # them turned that way, and their output turned back
        turn = north_up_turn(scene.transform)

        def run(batch: _Batch) -> tuple:
            t0 = time.perf_counter()
            xb = batch.x if not isinstance(batch.x, np.ndarray) else torch.from_numpy(batch.x)
            xb = xb.to(device, non_blocking=pin)
            if turn:
                xb = xb.flip(turn)
            mean, var = ensemble_moments(members, xb, stats, tta, use_var, amp)
            if turn:
                mean, var = mean.flip(turn), var.flip(turn) if var is not None else None
            mean = mean.float().cpu().numpy()
            var = var.float().cpu().numpy() if var is not None else None
            t1 = time.perf_counter()
            if crf:  # per window, before blending: the CRF output is stitched with the same weights
                xn = batch.x if isinstance(batch.x, np.ndarray) else batch.x.numpy()
                mean = np.stack([crf_refine(mean[k], xn[k], rgb=rgb) for k in range(len(batch.windows))])
            return mean, var, t1 - t0, time.perf_counter() - t1

        results = ordered_map(run, batches, workers, lambda: inference_context(device, amp))
        es.callback(results.close)
        for batch, (mean, var, t_model, t_crf) in results:
            read_seconds += batch.read_seconds
            model_seconds += t_model
            crf_seconds += t_crf
            for k, win in enumerate(batch.windows):
                blender.add(win, mean[k], var[k] if var is not None else None, batch.valid[k])
            if bar is not None:
                bar.update(len(batch.windows))
        blender.flush(scene.height)
    return PredictResult(
        Path(prob_out) if prob_out is not None else None, Path(uncertainty_out) if uncertainty_out is not None else None,
        ("variance" if use_var else "bernoulli") if want_unc else None,
        len(windows), passes, batch_size, time.perf_counter() - t_start, model_seconds,
        {"read": read_seconds, "prob_write": blender.seconds, "workers": workers,
         **({"handoff": blender.sink_seconds} if sink is not None else {}),
         **({"crf": crf_seconds} if crf else {})},
        blender.valid_pixels,
    )


@dataclass
class _Plan:
    """What :func:`predict_scene` runs with, once its arguments are checked."""

    scene: SceneInfo
    bands: BandPlan
    stats: BandStats | None
    device: Any
    fill: np.ndarray
    passes: int
    batch_size: int
    pin: bool


def _plan(scene, members: Sequence, stats: BandStats | None, fill, tta: bool, overlap: int, window: int,
          batch_size: int | None, device: Any, amp: bool, pin_memory: bool | None, bands=None) -> _Plan:
    """Check :func:`predict_scene`'s arguments and settle its defaults; put the models in the memory
    format the device runs fastest."""
    import torch

    if not members:
        raise NoModelError()
    if not isinstance(scene, SceneInfo):
        scene = scene_info(scene)
    matched = band_plan(scene, members, bands)
    profile, members = matched.profile, matched.members
    if window < 1 or not 0 <= overlap < window:
        raise InputError(f"`overlap` must be in [0, `window`) (got window {window}, overlap {overlap})")
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    if stats is not None:
        stats = check_stats(stats, profile, "normalisation statistics")
    fill = np.asarray(fill if fill is not None else _default_fill(stats, members, profile.bands), np.float32)
    scale = max(float(m.card.scale) for m in members)
    passes = len(members) * (4 if tta else 1)
    if batch_size is None:
        batch_size = auto_batch_size(device, window, scale, passes)
    if batch_size < 1:
        raise InputError(f"`batch_size` must be positive (got {batch_size})")
    pin = device.type == "cuda" if pin_memory is None else pin_memory
    members = folded_members(members)  # batch norms folded into the convolutions: same logits, less work
    if inference_channels_last(device, amp):
        for m in members:
            m.module.to(memory_format=torch.channels_last)
    return _Plan(scene, dataclasses.replace(matched, members=members), stats, device, fill, passes, batch_size, pin)


def _batch_source(es: contextlib.ExitStack, scene: SceneInfo, read_args: tuple, prefetch: int,
                  cache_bytes: int) -> Iterator[_Batch]:
    """The batches of windows: read ahead by a :class:`_Prefetcher` thread, or in this thread."""
    if prefetch > 0:
        reader = _Prefetcher(cache_bytes, scene, *read_args, prefetch=prefetch)
        reader.start()
        es.callback(reader.join)
        es.callback(reader.stop.set)
        return iter(reader)
    src = es.enter_context(open_raster(scene.path, "scene"))
    batches = _read_batches(src, scene, *read_args)
    es.callback(batches.close)
    return batches
