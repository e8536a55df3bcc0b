"""One scene's detection job: its completion key and marker, and running it here or on a Dask worker.

A :class:`SceneJob` holds everything a worker needs as plain picklable values. :func:`run_scene`
runs the detector on the scene, which writes the scene's layer (under a temporary name, renamed when
complete, so it never exists half-written), then writes the completion marker ``<stem>.done.json``
beside it. :func:`is_complete` holds a job done when its outputs exist *and* the marker records the
same scene and the same :func:`job_key` (a hash of the scene file, the model files, the detection
parameters and the detector), so a re-run skips it and a run with other parameters redoes it.

Models are loaded once per process (:func:`cached_ensemble`, keyed by the model files), so a Dask
worker loads them once and reuses them for every scene it runs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsmap import __version__
from lsmap.errors import LsmapError, MissingInputError, OutsideError
from lsmap.io.rasters import atomic_output
from lsmap.io.s2product import is_url
from lsmap.learn.device import resolve_device
from lsmap.learn.ensemble import load_ensemble
from lsmap.learn.models import checkpoint_paths

#: Suffix of the per-scene completion marker written after the scene's layer.
DONE_SUFFIX = ".done.json"

#: Per-process cache of loaded ensembles: on a Dask worker, models load once per worker process.
_ENSEMBLES: dict[tuple, Any] = {}
#: How many times this process loaded an ensemble (read by tests through ``Client.run``).
_ENSEMBLE_LOADS = 0

Detector = Callable[..., Any]


def _fingerprint(path: Path | str) -> list:
    """Size and modification time of a file; of a folder (band files, a ``.SAFE`` product) the files in it, summed
    and the latest, since a folder's own do not change when a file in it is rewritten (found by the failure audit:
    a rerun skipped a band folder whose bands had changed); nothing for a URL (a STAC Item is taken as unchanged)."""
    if is_url(path):
        return [None, None]
    try:
        path = Path(path)
        if path.is_dir():
            stats = [p.stat() for p in path.rglob("*") if p.is_file()]
            return [sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0), len(stats)]
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return [None, None]


def _model_files(models: Sequence[str]) -> list[Path]:
    return [f for m in models for f in checkpoint_paths(m)]


@dataclass(frozen=True)
class SceneJob:
    """One scene to detect: everything a worker needs, as plain picklable values.

    Attributes:
        scene: Absolute scene path.
        stem: Unique output name of the scene.
        out: Path of the scene's polygon layer.
        models: Absolute model checkpoint paths.
        params: Keyword arguments for the detector (JSON-able).
        key: Hash of scene, models (paths, sizes, times), parameters and detector: the completion key.
        detector: Per-scene function (``None``: :func:`lsmap.detect`).
        rasters: Per-scene raster outputs as ``(detector keyword, path)`` pairs (``prob``, ``mask``).
        default_model: No model was given: ``models`` are the shipped defaults, and the detector gets
            ``None`` to take the one that fits the scene's bands.
        aoi: The run's area of interest (:class:`lsmap.io.aoi.AOI`): each scene is cropped to it, and a
            scene outside it is reported as outside, not failed.
    """

    scene: str
    stem: str
    out: str
    models: tuple[str, ...]
    params: dict = field(default_factory=dict)
    key: str = ""
    detector: Detector | None = None
    rasters: tuple[tuple[str, str], ...] = ()
    default_model: bool = False
    aoi: Any = None

    @property
    def marker(self) -> Path:
        """The completion marker beside the layer."""
        out = Path(self.out)
        return out.with_name(out.stem + DONE_SUFFIX)


def _detector_name(detector: Detector | None) -> str:
    if detector is None:
        return "lsmap.detect"
    return f"{getattr(detector, '__module__', '?')}.{getattr(detector, '__qualname__', repr(detector))}"


def job_key(scene: Path | str, models: Sequence[str], params: Mapping, detector: Detector | None) -> str:
    """Hash of what a scene's result depends on (scene file, model files, parameters, detector)."""

    payload = {
        "scene": [str(scene), *_fingerprint(scene)],
        "models": [[str(f), *_fingerprint(f)] for f in _model_files(models)],
        "params": dict(params),
        "detector": _detector_name(detector),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_done(job: SceneJob) -> dict | None:
    """``job``'s completion marker (``None``: missing, unreadable or not a record)."""
    try:
        done = json.loads(job.marker.read_text())
    except (OSError, ValueError):
        return None
    return done if isinstance(done, dict) else None


def is_complete(job: SceneJob, done: dict | None = None) -> bool:
    """Whether ``job``'s layer exists and its marker records the same scene and key, or its marker records it
    outside the run's area of interest (:func:`is_outside`: no layer); ``done``: the marker, already read."""
    done = read_done(job) if done is None else done
    if is_outside(job, done):
        return True
    if not all(Path(p).is_file() for p in (job.out, *(v for _, v in job.rasters))):
        return False
    return done is not None and done.get("scene") == job.scene and done.get("key") == job.key


def is_outside(job: SceneJob, done: dict | None = None) -> bool:
    """Whether ``job``'s marker records its scene outside the run's area of interest, with the same scene and key
    (the area is in the key): a re-run need not open the scene again (a STAC Item is fetched, a product read);
    ``done``: the marker, already read."""
    done = read_done(job) if done is None else done
    return (done is not None and done.get("outside") is True and done.get("scene") == job.scene
            and done.get("key") == job.key)


def skipped_outcome(job: SceneJob) -> SceneOutcome | None:
    """What a re-run reports for ``job`` without running it, from its marker read once: outside the area of
    interest, or complete with the polygons, km2 and shift the marker records; ``None``: the job must run."""
    done = read_done(job)
    if is_outside(job, done):
        return SceneOutcome(job.scene, job.stem, outside=True)
    if not is_complete(job, done):
        return None
    try:
        polygons = int(done.get("polygons", 0))
    except (TypeError, ValueError):
        polygons = 0
    km2 = {k: float(v) if isinstance(v := done.get(k), (int, float)) else None
           for k in ("observed_km2", "not_observed_km2")}
    shift = done.get("shift_sigmas")
    return SceneOutcome(job.scene, job.stem, out=job.out, skipped=True, polygons=polygons, **km2,
                        shift_sigmas=shift if isinstance(shift, dict) else None)


@dataclass
class SceneOutcome:
    """What happened to one scene.

    Attributes:
        scene: Scene path.
        stem: Output name.
        out: The scene's layer when it succeeded (or was already complete), else ``None``.
        polygons: Number of polygons in the layer.
        seconds: Wall time of the detection (0 when skipped).
        skipped: The scene was already complete.
        error: Failure message (names the scene) when it failed.
        worker: Where it ran (``"local"`` or the worker's address).
        observed_km2: Observed area of the scene when it was masked (``None``: no mask).
        not_observed_km2: Not-observed area of the scene when it was masked (``None``: no mask).
        outside: The scene does not overlap the run's area of interest (nothing to map; not a failure).
        shift_sigmas: Per band, the scene's shift from the models' training data (the run summary's; ``None``:
            not measured, e.g. the scene's own statistics normalised it). A worker's warnings never reach the
            user, so the run reports it (:meth:`lsmap.map.regional.run.RegionalResult.unlike_training`).
    """

    scene: str
    stem: str
    out: str | None = None
    polygons: int = 0
    seconds: float = 0.0
    skipped: bool = False
    error: str | None = None
    worker: str = "local"
    observed_km2: float | None = None
    not_observed_km2: float | None = None
    outside: bool = False
    shift_sigmas: dict | None = None


class SceneError(RuntimeError):
    """An unexpected (possibly transient) error while detecting one scene; Dask retries it.

    A plain :class:`RuntimeError` with a message only, so that it pickles back from a worker.
    """


def _name_scene(scene: str, message: str) -> str:
    return message if scene in message or Path(scene).name in message else f"{scene}: {message}"


def failure_message(job: SceneJob, e: BaseException) -> str:
    """The message (naming the scene) of ``job`` failing with ``e``, locally or on a Dask worker."""
    name = type(e).__name__
    if name == "KilledWorker":
        return (f"{job.scene}: the Dask worker running it died (also on retry); "
                f"the scene may need more memory than a worker has; rerun to retry it")
    if name == "CancelledError":
        return f"{job.scene}: task cancelled (the cluster went away?); rerun to retry it"
    return _name_scene(job.scene, str(e) or name)


def cached_ensemble(models: Sequence[str], device: str = "auto") -> list:
    """Load ``models`` as ensemble members once per process (keyed by the files and the device).

    Returns:
        ``list[lsmap.learn.ensemble.Member]``; the same objects on every call with the same files.
    """
    global _ENSEMBLE_LOADS
    key = (tuple(models), tuple(tuple(_fingerprint(f)) for f in _model_files(models)), str(device))
    members = _ENSEMBLES.get(key)
    if members is None:
        members = load_ensemble(list(models), resolve_device(device))
        _ENSEMBLES.clear()  # one ensemble per process at a time: a long-lived worker does not pile up models
        _ENSEMBLES[key] = members
        _ENSEMBLE_LOADS += 1
    return members


def _remove_stale_temps(out: Path) -> None:
    # the temporaries a killed run left (their owner process is gone); a live run's are kept
    from lsmap.io.locks import remove_stale

    remove_stale(out.parent, out.name)


def run_scene(job: SceneJob) -> SceneOutcome:
    """Detect one scene and write its layer and completion marker (runs on a worker or locally).

    The layer is written by the detector through :func:`lsmap.io.rasters.atomic_output` (never half-written);
    the marker is written after it. A stale marker is removed first, so an interrupted redo is never
    taken for complete.

    Args:
        job: The scene, its output and the detection parameters.

    Returns:
        The outcome; input errors (:class:`~lsmap.errors.LsmapError`) are returned as failures.

    Raises:
        SceneError: any other error (Dask retries the task; the caller reports it after the retries).
    """
    out = Path(job.out)
    t0 = time.perf_counter()
    worker = _worker_address()
    try:
        job.marker.unlink(missing_ok=True)
        _remove_stale_temps(out)
        if not is_url(job.scene) and not Path(job.scene).exists():  # a URL's Item is read by detect
            raise MissingInputError(f"{job.scene}: scene does not exist")
        members = None if job.default_model else cached_ensemble(job.models, job.params.get("device", "auto"))
        params = {**job.params, **{k: v for k, v in job.rasters}, **({"aoi": job.aoi} if job.aoi is not None else {})}
        if job.detector is None:
            from lsmap.map.detect import detect

            # a SAFE/zip/STAC product is stacked first and brings its own SCL (and MSK_CLDPRB)
            gdf = detect(job.scene, members, out=out, overwrite=True, progress=False, **params)
        else:
            gdf = job.detector(job.scene, members, out=out, overwrite=True, **params)
        missing = [p for p in (out, *(Path(v) for _, v in job.rasters)) if not p.is_file()]
        if missing:
            raise SceneError(f"{job.scene}: the detector returned without writing {missing[0]}")
        n = len(gdf) if gdf is not None else 0
        summary = getattr(gdf, "attrs", {}).get("lsmap", {}) if gdf is not None else {}
        km2 = {k: summary.get(k) for k in ("observed_km2", "not_observed_km2")}
        shift = summary.get("shift_sigmas")
        done = {
            "scene": job.scene, "key": job.key, "params": job.params,
            "aoi": job.aoi.to_dict() if job.aoi is not None else None,
            "models": list(summary.get("models") or job.models),  # the one default model that fitted, not all
            "detector": _detector_name(job.detector), "polygons": n, "lsmap_version": __version__, **km2,
            "shift_sigmas": shift,
            "seconds": round(time.perf_counter() - t0, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with atomic_output(job.marker, overwrite=True) as tmp:
            tmp.write_text(json.dumps(done, indent=2, default=str) + "\n")
    except LsmapError as e:
        if job.aoi is not None and isinstance(e, OutsideError):  # aoi_window's refusal: the scene lies elsewhere
            _mark_outside(job)
            return SceneOutcome(job.scene, job.stem, outside=True, seconds=time.perf_counter() - t0, worker=worker)
        return SceneOutcome(job.scene, job.stem, error=_name_scene(job.scene, str(e)),
                            seconds=time.perf_counter() - t0, worker=worker)
    except SceneError:
        raise
    except Exception as e:  # anything else: report it as a plain, picklable, retryable error
        raise SceneError(_name_scene(job.scene, f"{type(e).__name__}: {e}")) from None
    return SceneOutcome(job.scene, job.stem, out=str(out), polygons=n,
                        seconds=time.perf_counter() - t0, worker=worker, **km2, shift_sigmas=shift)


def _mark_outside(job: SceneJob) -> None:
    """Record that ``job``'s scene lies outside the run's area of interest (:func:`is_outside`), best effort: without
    the record a re-run opens the scene once more and finds the same."""
    done = {"scene": job.scene, "key": job.key, "outside": True, "params": job.params,
            "aoi": job.aoi.to_dict() if job.aoi is not None else None, "detector": _detector_name(job.detector),
            "lsmap_version": __version__, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        with atomic_output(job.marker, overwrite=True) as tmp:
            tmp.write_text(json.dumps(done, indent=2, default=str) + "\n")
    except (OSError, LsmapError):
        pass


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "local"
