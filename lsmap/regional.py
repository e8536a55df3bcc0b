"""Regional mapping: detection over many scenes, one after another or on a Dask cluster.

:func:`detect_many` expands a scene list (paths, globs, ``@list.txt`` files), runs single-scene
detection on each scene (in this process, or as one task per scene on the workers of a Dask
distributed cluster), writes one polygon layer per scene (``OUT_DIR/<stem>.gpkg``) and merges them
into one layer for the whole event (``OUT_DIR/event.gpkg``).

Resumability: a scene is complete when its layer exists (written under a temporary name and renamed,
so it never exists half-written) *and* its sidecar ``<stem>.done.json`` (written after the layer)
records the same scene, models and detection parameters as the current run. Complete scenes are
skipped on a re-run; ``overwrite=True`` redoes them; a scene whose sidecar is missing or records
other parameters is redone.

On a cluster every worker must see the scenes, the model files and ``out_dir`` under the same paths
(a shared filesystem): workers write the per-scene layers themselves and return only a summary; the
client reads the layers back to merge them. Models are loaded once per worker process (a cache keyed
by the model files) and reused for every scene that worker runs.

The merged layer: polygons from different scenes that intersect (scene overlaps, or a landslide
cut by a scene border) are replaced by their union, once; ``scene`` lists the scene stems they came
from, comma-joined. All layers are brought to the first scene's CRS, or to EPSG:4326 when the scenes
have different CRSs. ``area_m2`` is recomputed as the geodesic (true) area on the CRS's ellipsoid.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import __version__
from .errors import InputError, LsmapError, MissingInputError
from .io import atomic_output

#: Suffix of the per-scene completion marker written after the scene's layer.
DONE_SUFFIX = ".done.json"
#: File name extensions that mark a text file of scene paths (besides an ``@`` prefix).
LIST_SUFFIXES = frozenset({".txt", ".lst"})
_GLOB_CHARS = frozenset("*?[")

#: Per-scene raster outputs of the detector that ``detect_many`` turns into ``<stem>.<name>.tif``.
RASTER_OUTPUTS = ("prob", "mask")

#: Per-process cache of loaded ensembles: on a Dask worker, models load once per worker process.
_ENSEMBLES: dict[tuple, Any] = {}
#: How many times this process loaded an ensemble (read by tests through ``Client.run``).
_ENSEMBLE_LOADS = 0

Detector = Callable[..., Any]


# --- scene lists --------------------------------------------------------------------------------


def _expand_one(item: str | os.PathLike, base: Path | None, seen_lists: tuple[Path, ...]) -> list[Path]:
    text = os.fspath(item)
    if isinstance(item, str) and text.startswith("@"):
        return _read_list(Path(text[1:]), base, seen_lists)
    path = Path(text).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if path.suffix.lower() in LIST_SUFFIXES:
        return _read_list(path, None, seen_lists)
    if _GLOB_CHARS & set(os.fspath(path)):
        found = sorted(Path(p) for p in _glob.glob(os.fspath(path), recursive=True))
        if not found:
            raise MissingInputError(f"{text}: no file matches this pattern; check the path or quote it")
        return found
    return [path]


def _read_list(path: Path, base: Path | None, seen_lists: tuple[Path, ...]) -> list[Path]:
    path = Path(path).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise MissingInputError(f"{path}: scene list does not exist; give a text file with one scene path per line")
    if path.resolve() in seen_lists:
        raise InputError(f"{path}: scene list includes itself")
    out: list[Path] = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        if line:
            out += _expand_one(line, path.parent, seen_lists + (path.resolve(),))
    return out


def is_scene_list(item: str | os.PathLike) -> bool:
    """Whether ``item`` names several scenes: a glob pattern or a list file (``@list.txt``, ``*.txt``)."""
    text = os.fspath(item)
    return text.startswith("@") or Path(text).suffix.lower() in LIST_SUFFIXES or bool(_GLOB_CHARS & set(text))


def expand_scenes(scenes: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The scenes named by ``scenes``, absolute, in order, without duplicates.

    Each item is a scene path, a glob pattern (``scenes/*.tif``; ``**`` recurses), or a text file of
    scene paths (``@list.txt``, or any path ending in ``.txt``/``.lst``): one path or pattern per line,
    blank lines and ``#`` comment lines ignored, relative paths taken from the list file's folder.

    Args:
        scenes: One item or a sequence of items.

    Returns:
        Absolute scene paths (existence is checked per scene when it runs, so that a missing scene is
        one failure among others).

    Raises:
        MissingInputError: a pattern matches nothing, or a list file does not exist.
        InputError: no scene at all.
    """
    items = [scenes] if isinstance(scenes, (str, os.PathLike)) else list(scenes)
    out: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        for p in _expand_one(item, None, ()):
            p = p.absolute()
            if p not in seen:
                seen.add(p)
                out.append(p)
    if not out:
        raise InputError("no scene given; pass scene paths, a glob such as 'scenes/*.tif', or @list.txt")
    return out


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".tif", ".tiff", ".vrt", ".jp2", ".img", ".SAFE", ".zip"):
        if name.lower().endswith(suffix.lower()):
            return name[: -len(suffix)] or name
    return path.stem or name


def scene_stems(scenes: Sequence[Path], reserved: Iterable[str] = ()) -> list[str]:
    """Unique output names for ``scenes``: the file stem, prefixed by parent folders where two clash.

    ``a/S2.tif`` and ``b/S2.tif`` become ``a_S2`` and ``b_S2``; a name that still clashes (or equals a
    ``reserved`` name, e.g. the merged layer's) gets ``-2``, ``-3``, ... The names depend only on the
    paths, so the same scene list gives the same names on a re-run.
    """
    reserved = {r.lower() for r in reserved}
    names = [_stem(p) for p in scenes]
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        groups.setdefault(n.lower(), []).append(i)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        for depth in range(1, 9):
            prefixed = ["_".join([*[q.name for q in scenes[i].parents][:depth][::-1], names[i]]) for i in idx]
            if len({x.lower() for x in prefixed}) == len(idx):
                for i, x in zip(idx, prefixed):
                    names[i] = x.lstrip("_")
                break
    used: set[str] = set(reserved)
    out = []
    for n in names:
        name, k = n, 2
        while name.lower() in used:
            name, k = f"{n}-{k}", k + 1
        used.add(name.lower())
        out.append(name)
    return out


# --- jobs and completion markers ----------------------------------------------------------------


def _fingerprint(path: Path) -> list:
    try:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return [None, None]


def _model_files(models: Sequence[str]) -> list[Path]:
    from .models import checkpoint_paths

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
    """

    scene: str
    stem: str
    out: str
    models: tuple[str, ...]
    params: dict = field(default_factory=dict)
    key: str = ""
    detector: Detector | None = None
    rasters: tuple[tuple[str, str], ...] = ()

    @property
    def marker(self) -> Path:
        """The completion marker beside the layer."""
        out = Path(self.out)
        return out.with_name(_stem_of_out(out) + DONE_SUFFIX)


def _stem_of_out(out: Path) -> str:
    return out.name[: -len(out.suffix)] if out.suffix else out.name


def _detector_name(detector: Detector | None) -> str:
    if detector is None:
        return "lsmap.detect"
    return f"{getattr(detector, '__module__', '?')}.{getattr(detector, '__qualname__', repr(detector))}"


def job_key(scene: Path, models: Sequence[str], params: Mapping, detector: Detector | None) -> str:
    """Hash of what a scene's result depends on (scene file, model files, parameters, detector)."""
    payload = {
        "scene": [str(scene), *_fingerprint(scene)],
        "models": [[str(f), *_fingerprint(f)] for f in _model_files(models)],
        "params": dict(params),
        "detector": _detector_name(detector),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_complete(job: SceneJob) -> bool:
    """Whether ``job``'s layer exists and its marker records the same scene and key."""
    if not all(Path(p).is_file() for p in (job.out, job.marker, *(v for _, v in job.rasters))):
        return False
    try:
        done = json.loads(job.marker.read_text())
    except (OSError, ValueError):
        return False
    return done.get("scene") == job.scene and done.get("key") == job.key


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
    """

    scene: str
    stem: str
    out: str | None = None
    polygons: int = 0
    seconds: float = 0.0
    skipped: bool = False
    error: str | None = None
    worker: str = "local"


class SceneError(RuntimeError):
    """An unexpected (possibly transient) error while detecting one scene; Dask retries it.

    A plain :class:`RuntimeError` with a message only, so that it pickles back from a worker.
    """


def _name_scene(scene: str, message: str) -> str:
    return message if scene in message or Path(scene).name in message else f"{scene}: {message}"


def cached_ensemble(models: Sequence[str], device: str = "auto") -> list:
    """Load ``models`` as ensemble members once per process (keyed by the files and the device).

    Returns:
        ``list[lsmap.predict.Member]``; the same objects on every call with the same files.
    """
    global _ENSEMBLE_LOADS
    key = (tuple(models), tuple(tuple(_fingerprint(f)) for f in _model_files(models)), str(device))
    members = _ENSEMBLES.get(key)
    if members is None:
        from .device import resolve_device
        from .predict import load_ensemble

        members = load_ensemble(list(models), resolve_device(device))
        _ENSEMBLES.clear()  # one ensemble per process at a time: a long-lived worker does not pile up models
        _ENSEMBLES[key] = members
        _ENSEMBLE_LOADS += 1
    return members


def _remove_stale_temps(out: Path) -> None:
    # atomic_output's temporary folders are ".<name>.<random>.tmp"; a killed process leaves them.
    for tmp in out.parent.glob(f".{out.name}.*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


def run_scene(job: SceneJob) -> SceneOutcome:
    """Detect one scene and write its layer and completion marker (runs on a worker or locally).

    The layer is written by the detector through :func:`lsmap.io.atomic_output` (never half-written);
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
        if not Path(job.scene).exists():
            raise MissingInputError(f"{job.scene}: scene does not exist")
        members = cached_ensemble(job.models, job.params.get("device", "auto"))
        params = {**job.params, **{k: v for k, v in job.rasters}}
        if job.detector is None:
            from .detection import detect

            gdf = detect(job.scene, members, out=out, overwrite=True, progress=False, **params)
        else:
            gdf = job.detector(job.scene, members, out=out, overwrite=True, **params)
        missing = [p for p in (out, *(Path(v) for _, v in job.rasters)) if not p.is_file()]
        if missing:
            raise SceneError(f"{job.scene}: the detector returned without writing {missing[0]}")
        n = len(gdf) if gdf is not None else 0
        done = {
            "scene": job.scene, "key": job.key, "models": list(job.models), "params": job.params,
            "detector": _detector_name(job.detector), "polygons": n, "lsmap_version": __version__,
            "seconds": round(time.perf_counter() - t0, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with atomic_output(job.marker, overwrite=True) as tmp:
            tmp.write_text(json.dumps(done, indent=2, default=str) + "\n")
    except LsmapError as e:
        return SceneOutcome(job.scene, job.stem, error=_name_scene(job.scene, str(e)),
                            seconds=time.perf_counter() - t0, worker=worker)
    except SceneError:
        raise
    except Exception as e:  # anything else: report it as a plain, picklable, retryable error
        raise SceneError(_name_scene(job.scene, f"{type(e).__name__}: {e}")) from None
    return SceneOutcome(job.scene, job.stem, out=str(out), polygons=n,
                        seconds=time.perf_counter() - t0, worker=worker)


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "local"


# --- merging ------------------------------------------------------------------------------------


def true_area_m2(geoms) -> "Any":
    """Geodesic area in m2 of each geometry of a GeoSeries, on its CRS's ellipsoid.

    Correct for geographic CRSs and for projected ones whatever their distortion.

    Raises:
        InputError: the GeoSeries has no CRS.
    """
    import numpy as np

    if geoms.crs is None:
        raise InputError("polygon layer has no CRS; cannot compute areas in m2")
    crs = geoms.crs
    lonlat = geoms if crs.is_geographic else geoms.to_crs(crs.geodetic_crs)
    geod = crs.get_geod()
    return np.array([abs(geod.geometry_area_perimeter(g)[0]) if g is not None and not g.is_empty else 0.0
                     for g in lonlat], dtype="float64")


def _common_crs(layers: Mapping[str, Any]):
    from pyproj import CRS

    crss = [g.crs for g in layers.values() if g.crs is not None]
    if not crss:
        raise InputError("no scene layer has a CRS; cannot merge them")
    first = crss[0]
    return first if all(CRS(c) == CRS(first) for c in crss) else CRS.from_epsg(4326)


def _components(n: int, left, right) -> list[list[int]]:
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(left.tolist(), right.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def merge_layers(layers: Mapping[str, Any]):
    """Merge per-scene polygon layers into one event layer.

    Polygons of different scenes that intersect (touching included) are joined, transitively, and
    replaced by their union; polygons within one scene are otherwise kept as they are. Numeric
    attributes of joined polygons are combined: columns named ``max*`` by maximum, ``min*`` by
    minimum, others by an area-weighted mean. ``area_m2`` is recomputed as the true area.

    Args:
        layers: ``{scene name: GeoDataFrame}`` in scene order.

    Returns:
        GeoDataFrame with ``scene`` (comma-joined names for joined polygons), ``n_parts``,
        ``area_m2`` and the layers' other attributes, in the first scene's CRS, or EPSG:4326 when the
        scenes' CRSs differ.
    """
    import geopandas as gpd
    import numpy as np
    import pandas as pd
    import shapely

    layers = {k: v for k, v in layers.items() if v is not None}
    if not layers:
        return gpd.GeoDataFrame({"scene": [], "n_parts": [], "area_m2": []}, geometry=[], crs="EPSG:4326")
    crs = _common_crs(layers)
    frames = []
    for name, g in layers.items():
        g = g.to_crs(crs) if g.crs is not None and g.crs != crs else g.set_crs(crs, allow_override=True)
        g = g.copy()
        g["scene"] = name
        frames.append(g)
    allp = pd.concat(frames, ignore_index=True)
    allp = gpd.GeoDataFrame(allp, geometry=allp.geometry.name, crs=crs)
    allp = allp[~(allp.geometry.isna() | allp.geometry.is_empty)].reset_index(drop=True)
    geoms = shapely.make_valid(allp.geometry.values)
    allp = allp.set_geometry(gpd.GeoSeries(geoms, crs=crs))
    scenes = allp["scene"].to_numpy()
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    cross = scenes[left] != scenes[right]
    groups = _components(len(allp), left[cross], right[cross])
    weights = true_area_m2(allp.geometry)
    order = {name: i for i, name in enumerate(layers)}
    value_cols = [c for c in allp.columns if c not in (allp.geometry.name, "scene", "area_m2", "n_parts")]
    rows = []
    for idx in groups:
        part = allp.iloc[idx]
        row: dict[str, Any] = {}
        for c in value_cols:
            col = part[c]
            if len(idx) == 1:
                row[c] = col.iloc[0]
            elif pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
                low = c.lower()
                if low.startswith("max"):
                    row[c] = col.max()
                elif low.startswith("min"):
                    row[c] = col.min()
                else:
                    w = weights[idx]
                    row[c] = float(np.average(col.to_numpy(dtype="float64"), weights=w)) if w.sum() > 0 else col.mean()
            else:
                row[c] = col.iloc[0]
        row["scene"] = ",".join(sorted(set(part["scene"]), key=order.__getitem__))
        row["n_parts"] = len(idx)
        row["geometry"] = part.geometry.iloc[0] if len(idx) == 1 else shapely.union_all(part.geometry.values)
        rows.append(row)
    out = gpd.GeoDataFrame(rows, geometry="geometry", crs=crs)
    out["area_m2"] = true_area_m2(out.geometry)
    first = ["scene", "n_parts", "area_m2"]
    return out[[*first, *[c for c in value_cols], "geometry"]]


# --- the run ------------------------------------------------------------------------------------


@dataclass
class RegionalResult:
    """Outcome of :func:`detect_many`.

    Attributes:
        outputs: ``{scene path: layer path}`` of every scene with a complete layer (new or skipped).
        failures: ``{scene path: message}`` of the scenes that failed (the message names the scene).
        merged: Path of the merged event layer (``None`` when no scene has a layer or none asked).
        gdf: The merged event layer.
        skipped: Scenes that were already complete and were not run again.
        scenes: Per-scene outcomes, in scene order.
        crs: CRS of the merged layer (as a string).
    """

    outputs: dict[str, Path]
    failures: dict[str, str]
    merged: Path | None
    gdf: Any
    skipped: list[str] = field(default_factory=list)
    scenes: list[SceneOutcome] = field(default_factory=list)
    crs: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every scene has a complete layer."""
        return not self.failures

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {
            "outputs": {k: str(v) for k, v in self.outputs.items()},
            "failures": dict(self.failures),
            "skipped": list(self.skipped),
            "merged": str(self.merged) if self.merged else None,
            "crs": self.crs,
            "polygons": 0 if self.gdf is None else len(self.gdf),
            "area_m2": 0.0 if self.gdf is None or not len(self.gdf) else float(self.gdf["area_m2"].sum()),
            "scenes": [vars(s) for s in self.scenes],
        }


def _client(scheduler: Any):
    """``(client, owned)`` for a scheduler address or an existing client."""
    try:
        import distributed
    except ImportError:
        raise InputError(
            f"--scheduler {scheduler}: Dask distributed is not installed; pip install 'lsmap[cluster]'"
        ) from None
    if isinstance(scheduler, distributed.Client):
        return scheduler, False
    try:
        return distributed.Client(str(scheduler), timeout="20s", set_as_default=False), True
    except (OSError, TimeoutError) as e:
        raise InputError(
            f"--scheduler {scheduler}: cannot reach the Dask scheduler ({e}); start one with "
            f"`dask scheduler` and give its address, e.g. tcp://host:8786"
        ) from None


def _describe(job: SceneJob, e: BaseException) -> str:
    name = type(e).__name__
    if name == "KilledWorker":
        return (f"{job.scene}: the Dask worker running it died (also on retry); "
                f"the scene may need more memory than a worker has; rerun to retry it")
    if name == "CancelledError":
        return f"{job.scene}: task cancelled (the cluster went away?); rerun to retry it"
    return _name_scene(job.scene, str(e) or name)


def detect_many(
    scenes: str | os.PathLike | Iterable[str | os.PathLike],
    models: str | os.PathLike | Sequence[str | os.PathLike] | None,
    out_dir: str | os.PathLike,
    *,
    scheduler: Any = "local",
    merged: str | os.PathLike | None = "event.gpkg",
    overwrite: bool = False,
    progress: bool = True,
    retries: int = 1,
    detector: Detector | None = None,
    **detect_kwargs: Any,
) -> "RegionalResult":
    """Detect landslides in many scenes and merge them into one event layer.

    Args:
        scenes: Scene paths, glob patterns and/or ``@list.txt`` files (see :func:`expand_scenes`).
        models: One or more model checkpoints (an ensemble), as for :func:`lsmap.detect`; ``None``: the
            shipped default model.
        out_dir: Folder of the outputs: ``<stem>.gpkg`` and ``<stem>.done.json`` per scene, and the
            merged layer. Must be on a filesystem the workers share when ``scheduler`` is a cluster.
        scheduler: ``"local"`` (scenes one after another in this process), a Dask scheduler address
            (``"tcp://host:8786"``: one task per scene on the cluster's workers), or a
            ``distributed.Client``.
        merged: File name (in ``out_dir``) or path of the merged layer; ``None`` writes none.
        overwrite: Redo scenes whose complete outputs exist (otherwise they are skipped).
        progress: Show a progress bar over scenes (tqdm, on stderr).
        retries: Extra attempts of a scene on the cluster after an unexpected error; a scene whose
            worker dies is rescheduled by Dask (``distributed.scheduler.allowed-failures`` times).
        detector: Per-scene function ``detector(scene, members, *, out, overwrite, **detect_kwargs)``
            that writes ``out`` atomically and returns its GeoDataFrame; default :func:`lsmap.detect`.
            Must be importable on the workers.
        **detect_kwargs: Passed to the detector for every scene (JSON-able values: they are hashed
            into the completion marker, so changing one redoes the scenes). ``prob=True`` /
            ``mask=True`` write ``<stem>.prob.tif`` / ``<stem>.mask.tif`` per scene.

    Returns:
        The per-scene layers, the failures, and the merged layer.

    Raises:
        InputError: no scene, an unusable option, or an unreachable scheduler.
        MissingInputError: a glob matches nothing, a list file or a model is missing.
    """
    from tqdm.auto import tqdm

    paths = expand_scenes(scenes)
    if models is None:
        from .detection import default_models

        models = default_models()
    model_list = [models] if isinstance(models, (str, os.PathLike)) else list(models)
    if not model_list:
        raise InputError("no model given; pass --model PATH (one or more)")
    from .models import checkpoint_paths

    model_abs = []
    for m in model_list:
        weights, card = checkpoint_paths(Path(m).absolute())
        if not weights.exists() and not card.exists():
            raise MissingInputError(f"{m}: checkpoint does not exist (neither {weights.name} nor {card.name})")
        model_abs.append(str(weights))
    out_dir = Path(out_dir).absolute()
    merged_path = None if merged is None else (out_dir / merged if not Path(merged).is_absolute() else Path(merged))
    if merged_path is not None:
        from .vectorize import vector_driver

        vector_driver(merged_path)  # an unknown format fails before any work
    reserved = [] if merged_path is None or merged_path.parent != out_dir else [_stem_of_out(merged_path)]
    stems = scene_stems(paths, reserved)
    params = dict(detect_kwargs)
    try:
        json.dumps(params)
    except TypeError as e:
        raise InputError(f"detection parameters must be plain values (numbers, strings, lists): {e}") from None
    if params.get("crf") and detector is None and scheduler in (None, "local"):  # a cluster's workers decide there
        from .crf import available

        if not available():
            raise InputError("--crf needs the 'crf' extra: pip install 'lsmap[crf]' (pydensecrf2)")
    raster_kw = [k for k in RASTER_OUTPUTS if params.pop(k, None)]
    for k in RASTER_OUTPUTS:
        params.pop(k, None)
    keyed = {**params, **{k: True for k in raster_kw}}
    jobs = [
        SceneJob(str(p), s, str(out_dir / f"{s}.gpkg"), tuple(model_abs), params,
                 job_key(p, model_abs, keyed, detector), detector,
                 tuple((k, str(out_dir / f"{s}.{k}.tif")) for k in raster_kw))
        for p, s in zip(paths, stems)
    ]
    out_dir.mkdir(parents=True, exist_ok=True)

    outcomes: dict[str, SceneOutcome] = {}
    todo = []
    for job in jobs:
        if not overwrite and is_complete(job):
            outcomes[job.scene] = SceneOutcome(job.scene, job.stem, out=job.out, skipped=True,
                                               polygons=_done_polygons(job))
        else:
            todo.append(job)
    local = scheduler in (None, "local")
    client, owned = _client(scheduler) if todo and not local else (None, False)
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="scene", desc="scenes", disable=not progress)
    try:
        if local:
            for job in todo:
                try:
                    outcomes[job.scene] = run_scene(job)
                except Exception as e:
                    outcomes[job.scene] = SceneOutcome(job.scene, job.stem, error=_describe(job, e))
                bar.update(1)
        elif todo:
            outcomes.update(_run_on_cluster(todo, client, retries, bar))
    finally:
        bar.close()
        if owned:
            client.close()
    _remove_stale_work(out_dir)
    ordered = [outcomes[j.scene] for j in jobs]
    outputs = {o.scene: Path(o.out) for o in ordered if o.out and not o.error}
    failures = {o.scene: o.error or "failed" for o in ordered if o.error or not o.out}
    layers = _read_layers({o.stem: Path(o.out) for o in ordered if o.scene in outputs}, failures, outputs)
    gdf = merge_layers(layers)
    written = None
    if merged_path is not None and layers:
        written = _write_merged(gdf, merged_path)
    return RegionalResult(
        outputs=outputs, failures=failures, merged=written, gdf=gdf,
        skipped=[o.scene for o in ordered if o.skipped], scenes=ordered,
        crs=gdf.crs.to_string() if layers and gdf.crs is not None else None,
    )


def _write_merged(gdf, path: Path) -> Path:
    # like lsmap.vectorize.write_vector, but joined polygons may be MultiPolygons (promoted, not forced)
    from .vectorize import vector_driver

    driver, sidecars = vector_driver(path)
    with atomic_output(path, overwrite=True) as tmp:
        gdf.to_file(tmp, driver=driver, engine="pyogrio")
        for s in sidecars:
            if tmp.with_suffix(s).exists():
                shutil.move(tmp.with_suffix(s), path.with_suffix(s))
    return path


def _remove_stale_work(out_dir: Path) -> None:
    # every task of this run has ended: temporaries left in out_dir belong to killed attempts
    for tmp in [*out_dir.glob(".lsmap-detect-*"), *out_dir.glob(".*.tmp")]:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)


def _done_polygons(job: SceneJob) -> int:
    try:
        return int(json.loads(job.marker.read_text()).get("polygons", 0))
    except (OSError, ValueError, TypeError):
        return 0


def _read_layers(paths: Mapping[str, Path], failures: dict, outputs: dict) -> dict:
    import geopandas as gpd

    layers = {}
    for stem, path in paths.items():
        try:
            layers[stem] = gpd.read_file(path, engine="pyogrio")
        except Exception as e:  # a layer deleted or damaged after it was marked complete
            scene = next(s for s, p in outputs.items() if p == path)
            failures[scene] = f"{path}: cannot read the scene's layer ({e}); rerun with --overwrite"
            outputs.pop(scene)
    return layers


def _run_on_cluster(jobs: Sequence[SceneJob], client: Any, retries: int, bar) -> dict[str, SceneOutcome]:
    """Submit one task per scene and collect the outcomes as they complete."""
    from distributed import as_completed

    outcomes: dict[str, SceneOutcome] = {}
    run = uuid.uuid4().hex[:8]
    futures = {
        client.submit(run_scene, job, pure=False, retries=retries, key=f"lsmap-detect-{job.stem}-{run}"): job
        for job in jobs
    }
    for fut in as_completed(futures, loop=client.loop):
        job = futures[fut]
        try:
            outcomes[job.scene] = fut.result()
        except Exception as e:
            outcomes[job.scene] = SceneOutcome(job.scene, job.stem, error=_describe(job, e))
        bar.update(1)
    return outcomes
