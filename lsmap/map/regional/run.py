"""Regional mapping: detection over many scenes, one after another or on a Dask cluster.

:func:`detect_many` expands a scene list (paths, globs, ``@list.txt`` files; :mod:`lsmap.map.regional.scenelist`),
runs single-scene detection on each scene (in this process, or as one task per scene on the workers
of a Dask distributed cluster; :mod:`lsmap.map.regional.scenejob`), writes one polygon layer per scene
(``OUT_DIR/<stem>.gpkg``) and merges them into one layer for the whole event (``OUT_DIR/event.gpkg``;
:mod:`lsmap.map.regional.merge`).

Resumability: a scene is complete when its layer exists (written under a temporary name and renamed,
so it never exists half-written) *and* its sidecar ``<stem>.done.json`` (written after the layer)
records the same scene, models and detection parameters as the current run. Complete scenes are
skipped on a re-run; ``overwrite=True`` redoes them. Outputs of a scene whose sidecar is missing or
records other models, options or inputs are refused before any work unless ``overwrite``: they may be
results of another run, or files lsmap did not write.

On a cluster every worker must see the scenes, the model files and ``out_dir`` under the same paths
(a shared filesystem): workers write the per-scene layers themselves and return only a summary; the
client reads the layers back to merge them. Models are loaded once per worker process and reused for
every scene that worker runs.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lsmap.core.checks import as_list
from lsmap.data.masks import (
    check_blue_max,
    check_cloud_prob_max,
    check_dark_max,
    check_masks,
    mask_spec,
    parse_scl_classes,
)
from lsmap.errors import InputError, MissingInputError, NoModelError, OutputExistsError
from lsmap.io.aoi import as_aoi
from lsmap.io.outputs import atomic_output, provenance
from lsmap.learn.crf import require
from lsmap.learn.models import check_checkpoint_name
from lsmap.map.detect import NOT_OBSERVED_LAYER, default_models
from lsmap.map.options import DetectOptions, non_default
from lsmap.map.regional.merge import merge_layers, merge_not_observed, union_area_m2
from lsmap.map.regional.scenejob import (
    Detector,
    SceneJob,
    SceneOutcome,
    failure_message,
    job_key,
    read_done,
    run_scene,
    skipped_outcome,
)
from lsmap.map.regional.scenelist import expand_scenes, scene_stems
from lsmap.map.vectorize import VECTOR_DRIVERS, check_vector_output, vector_driver, write_layer

#: Per-scene raster outputs of the detector that ``detect_many`` turns into ``<stem>.<name>.tif``.
RASTER_OUTPUTS = ("prob", "mask")


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
        not_observed: The merged ``not_observed`` layer (dissolved per reason; ``None`` when no scene
            was masked), written as the second layer of a GeoPackage ``merged``.
        outside: Scenes that do not overlap the run's area of interest (no layer; not failures).
    """

    outputs: dict[str, Path]
    failures: dict[str, str]
    merged: Path | None
    gdf: Any
    skipped: list[str] = field(default_factory=list)
    scenes: list[SceneOutcome] = field(default_factory=list)
    crs: str | None = None
    not_observed: Any = None
    outside: list[str] = field(default_factory=list)

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
            "outside": list(self.outside),
            "merged": str(self.merged) if self.merged else None,
            "crs": self.crs,
            "polygons": 0 if self.gdf is None else len(self.gdf),
            "area_m2": 0.0 if self.gdf is None or not len(self.gdf) else float(self.gdf["area_m2"].sum()),
            "scenes": [vars(s) for s in self.scenes],
            "unlike_training": self.unlike_training(),
            **self.km2(),
        }

    def unlike_training(self) -> dict[str, str]:
        """``{scene: bands}`` of the scenes whose bands lie beyond :data:`lsmap.data.scan.SHIFT_SIGMAS` from the
        models' training data (``"B9 +7.3"``; :func:`lsmap.data.scan.far_bands`): their maps need checking
        against the imagery (docs/detect.md, "Scenes unlike the training data")."""
        from lsmap.data.scan import far_bands

        return {s.scene: far for s in self.scenes if (far := far_bands(s.shift_sigmas))}

    def km2(self) -> dict[str, float | None]:
        """Observed and not-observed km2 of the run (``None`` when no scene was masked).

        ``observed_km2`` / ``not_observed_km2`` add up the scenes' own figures (an area two scenes
        cover counts in each); ``not_observed_union_km2`` is the area of the merged layer, overlaps once.
        """
        def total(key: str) -> float | None:
            values = [getattr(s, key) for s in self.scenes if getattr(s, key) is not None]
            return float(sum(values)) if values else None

        return {"observed_km2": total("observed_km2"), "not_observed_km2": total("not_observed_km2"),
                "not_observed_union_km2": (union_area_m2(self.not_observed) / 1e6
                                           if self.not_observed is not None else None)}


#: How long to try to reach a Dask scheduler before giving up.
CONNECT_TIMEOUT = "20s"


#: How long the check that an address speaks Dask's protocol waits for the scheduler's greeting.
PROBE_TIMEOUT = 10.0
#: A Dask handshake message is a few hundred bytes; a "length" past this is not Dask talking.
_MAX_HANDSHAKE = 16 << 20


def probe_scheduler(address: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Check that ``address`` (``tcp://host:port``) is a Dask scheduler before handing it to Dask.

    A Dask scheduler greets every new connection at once with a handshake message whose first 8
    bytes are its little-endian length (a few hundred bytes). A service that sends nothing, closes
    the connection, or sends bytes that do not read as such a length is not a Dask scheduler;
    given to Dask it hangs or ends in a huge allocation. Other schemes (``tls://``, ``inproc://``)
    are not probed.

    Raises:
        InputError: the address cannot be reached, or does not speak Dask's protocol (within ``timeout``).
    """
    import socket
    import struct

    text = str(address)
    if "://" in text and not text.startswith("tcp://"):
        return
    hostport = text.removeprefix("tcp://").rstrip("/")
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise InputError(f"`scheduler` {address}: expected a Dask scheduler address like tcp://host:8786")
    fix = "start one with `dask scheduler` and give its address, e.g. tcp://host:8786"
    try:
        conn = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as e:
        raise InputError(f"`scheduler` {address}: cannot reach the Dask scheduler ({e}); {fix}") from None
    data = b""
    try:
        conn.settimeout(timeout)
        while len(data) < 8:
            chunk = conn.recv(8 - len(data))
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise InputError(f"`scheduler` {address}: the service there sent nothing within {timeout:g} s; it is not a "
                         f"Dask scheduler (which answers at once); {fix}") from None
    except OSError as e:
        raise InputError(f"`scheduler` {address}: connection failed ({e}); {fix}") from None
    finally:
        conn.close()
    if len(data) < 8:
        raise InputError(f"`scheduler` {address}: the service there closed the connection without a Dask "
                         f"handshake; it is not a Dask scheduler; {fix}")
    (length,) = struct.unpack("<Q", data)
    if not 0 < length <= _MAX_HANDSHAKE:
        shown = data.decode("ascii", "replace").encode("unicode_escape").decode()[:16]
        raise InputError(f"`scheduler` {address}: the service there does not speak Dask's protocol (it sent "
                         f"'{shown}'); it is not a Dask scheduler; {fix}")


def _client(scheduler: Any):
    """``(client, owned)`` for a scheduler address or an existing client."""
    try:
        import distributed
    except ImportError:
        raise InputError(
            f"`scheduler` {scheduler}: Dask distributed is not installed; pip install 'lsmap[cluster]'"
        ) from None
    if isinstance(scheduler, distributed.Client):
        return scheduler, False
    probe_scheduler(str(scheduler))
    try:
        return distributed.Client(str(scheduler), timeout=CONNECT_TIMEOUT, set_as_default=False), True
    except (OSError, TimeoutError) as e:
        raise InputError(
            f"`scheduler` {scheduler}: cannot reach the Dask scheduler ({e}); start one with "
            f"`dask scheduler` and give its address, e.g. tcp://host:8786"
        ) from None


#: lsmap.detect's keywords that are one scene's, or detect_many's own, with what to do instead.
NOT_PER_SCENE = {
    "pre": "`pre` is the pre-event scene of one scene; run lsmap.detect per scene to compare each with its own "
           "pre-event scene",
    "quicklook": "`quicklook` is one scene's map; run lsmap.detect on a scene for its map",
    "report": "`report` is one scene's page; run lsmap.detect on a scene for its report",
    "out": "`out`: each scene's layer is written in `out_dir` as <stem>.gpkg",
    "options": "`options`: pass the DetectOptions fields as keyword arguments (dataclasses.asdict(options))",
    **{k: f"`{k}` applies to one scene's stacking inputs; stack each scene first (lsmap.stack_scene) or run "
          f"lsmap.detect per scene" for k in ("dem", "slope", "offset")},
}
#: lsmap.detect's keywords a several-scene run passes to every scene, beside :class:`DetectOptions`' fields.
PER_SCENE = (*RASTER_OUTPUTS, "scl", "scl_mask", "mask_raster", "cloud_prob_max", "blue_max", "dark_max")


def check_detect_kwargs(kwargs: Mapping[str, Any]) -> None:
    """Refuse, before any work, what :func:`detect_many` cannot pass to :func:`lsmap.detect` for every scene: one
    scene's outputs, its own arguments, unknown names; and check the options' values.

    Raises:
        InputError: naming the keyword and what to do instead.
    """
    for k, why in NOT_PER_SCENE.items():
        if k in kwargs and (kwargs[k] is not None or k in ("out", "options")):
            raise InputError(why)
    known = {f.name for f in fields(DetectOptions)}
    unknown = sorted(set(kwargs) - known - set(PER_SCENE) - set(NOT_PER_SCENE))
    if unknown:
        raise InputError(f"unknown detection option(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(sorted(known | set(PER_SCENE)))}")
    DetectOptions(**{k: v for k, v in kwargs.items() if k in known}).check()


def check_output_folder(out_dir: str | os.PathLike) -> Path:
    """Refuse an output folder named like a vector file (``-o slides.gpkg`` with several scenes).

    Raises:
        InputError: ``out_dir`` ends in a vector extension (:data:`lsmap.map.vectorize.VECTOR_DRIVERS`).
    """
    out_dir = Path(out_dir)
    suffix = out_dir.suffix.lower()
    if suffix in VECTOR_DRIVERS and out_dir.is_dir():  # -o slides.gpkg where a folder of that name exists
        raise InputError(f"{out_dir}: is an existing folder, and a folder gets one layer per scene, but its {suffix} "
                         f"name reads as one file's; give one scene's polygons a path that is not a folder, or "
                         f"the scenes a folder without a vector extension")
    if suffix in VECTOR_DRIVERS:
        raise InputError(f"{out_dir}: several scenes write a folder (one layer each), but a {suffix} path names "
                         f"a file; give the output folder (-o, `out_dir`) such as {out_dir.with_suffix('')}/ or "
                         f"pass one scene")
    if out_dir.exists() and not out_dir.is_dir():  # FileExistsError from mkdir, after the checks (an audit)
        raise InputError(f"{out_dir}: is a file, and several scenes write a folder (one layer each); give the "
                         f"output folder (-o, `out_dir`) a new name or an existing folder")
    return out_dir


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
    aoi: Any = None,
    **detect_kwargs: Any,
) -> RegionalResult:
    """Detect landslides in many scenes and merge them into one event layer.

    Args:
        scenes: Scene paths, glob patterns and/or ``@list.txt`` files (see :func:`lsmap.map.regional.scenelist.expand_scenes`).
        models: One or more model checkpoints (an ensemble), as for :func:`lsmap.detect`; ``None``: for each
            scene the shipped default model whose bands it has, as :func:`lsmap.detect` chooses (the
            completion key holds every shipped default).
        out_dir: Folder of the outputs: ``<stem>.gpkg`` and ``<stem>.done.json`` per scene, and the
            merged layer. Must be on a filesystem the workers share when ``scheduler`` is a cluster.
        scheduler: ``"local"`` (scenes one after another in this process), a Dask scheduler address
            (``"tcp://host:8786"``: one task per scene on the cluster's workers), or a
            ``distributed.Client``.
        merged: File name (in ``out_dir``) or path of the merged layer; ``None`` writes none.
        overwrite: Redo scenes whose outputs exist (otherwise complete ones are skipped, and outputs of
            another run are refused: :func:`check_no_stale_layers`).
        progress: Show progress over scenes on stderr (a bar on a terminal, lines elsewhere: :mod:`lsmap.io.progress`).
        retries: Extra attempts of a scene on the cluster after an unexpected error; a scene whose
            worker dies is rescheduled by Dask (``distributed.scheduler.allowed-failures`` times).
        aoi: Area of interest (an AOI, a vector file or a lon/lat box: :func:`lsmap.io.aoi.as_aoi`): every scene is
            cropped to it before any work, as :func:`lsmap.detect` crops one; scenes outside it are listed
            as ``outside``, not failed.
        detector: Per-scene function ``detector(scene, members, *, out, overwrite, **detect_kwargs)``
            that writes ``out`` atomically and returns its GeoDataFrame; default :func:`lsmap.detect`.
            Must be importable on the workers.
        **detect_kwargs: Passed to the detector for every scene (JSON-able values: they are hashed
            into the completion marker, so changing one redoes the scenes). ``prob=True`` /
            ``mask=True`` write ``<stem>.prob.tif`` / ``<stem>.mask.tif`` per scene. Masks: SAFE/zip/STAC
            scenes are stacked first and bring their own SCL (``scl_mask`` chooses its classes) and,
            with ``cloud_prob_max``, their MSK_CLDPRB; one ``mask_raster`` (any grid) applies to
            every scene; one ``scl`` file for several scenes is refused (it belongs to one scene).
            Each scene's ``not_observed`` layer is merged (:func:`~lsmap.map.regional.merge.merge_not_observed`)
            into a second layer of a GeoPackage ``merged``.

    Returns:
        The per-scene layers, the failures, and the merged layer.

    Raises:
        InputError: no scene, an unusable option, or an unreachable scheduler.
        MissingInputError: a glob matches nothing, a list file or a model is missing.
    """
    from lsmap.io.progress import progress_bar

    if detect_kwargs.get("pre") is not None:  # with any detector: one pre-event scene cannot serve many scenes
        raise InputError(NOT_PER_SCENE["pre"])
    if detector is None:  # lsmap.detect's options fail before any work (and before the folder is made), as there
        check_detect_kwargs(detect_kwargs)
    aoi = as_aoi(aoi)
    check_output_folder(out_dir)
    paths = expand_scenes(scenes)
    mask_key = _check_masks(detect_kwargs, len(paths))
    per_scene = models is None  # each scene takes the default model that fits its bands (detect's choice)
    if per_scene:
        models = default_models()
    model_list = as_list("models", models)
    if not model_list:
        raise NoModelError()

    model_abs = []
    for m in model_list:
        weights, _ = check_checkpoint_name(m)
        weights = weights.absolute()
        model_abs.append(str(weights))
    out_dir = Path(out_dir).absolute()
    merged_path = None if merged is None else (out_dir / merged if not Path(merged).is_absolute() else Path(merged))
    if merged_path is not None:
        vector_driver(merged_path)  # an unknown format fails before any work
        _check_merged(merged_path, out_dir, overwrite, [*paths, *model_abs, getattr(aoi, "source", None)])
    reserved = [] if merged_path is None or merged_path.parent != out_dir else [merged_path.stem]
    stems = scene_stems(paths, reserved)
    params = non_default(detect_kwargs)
    try:
        json.dumps(params)
    except TypeError as e:
        raise InputError(f"detection parameters must be plain values (numbers, strings, lists): {e}") from None
    if params.get("crf") and detector is None and scheduler in (None, "local"):  # a cluster's workers decide there

        require()
    raster_kw = [k for k in RASTER_OUTPUTS if params.pop(k, None)]
    for k in RASTER_OUTPUTS:
        params.pop(k, None)
    keyed = {**params, **{k: True for k in raster_kw}, **mask_key,
             **({"aoi": aoi.to_dict()} if aoi is not None else {})}  # its geometry's digest included
    jobs = [
        SceneJob(str(p), s, str(out_dir / f"{s}.gpkg"), tuple(model_abs), params,
                 job_key(p, model_abs, keyed, detector), detector,
                 tuple((k, str(out_dir / f"{s}.{k}.tif")) for k in raster_kw), default_model=per_scene, aoi=aoi)
        for p, s in zip(paths, stems, strict=False)
    ]
    if not overwrite:
        check_no_stale_layers(jobs)
    out_dir.mkdir(parents=True, exist_ok=True)

    outcomes: dict[str, SceneOutcome] = {}
    todo = []
    for job in jobs:
        # complete, or recorded outside the area: not run (nor opened) again
        skipped = None if overwrite else skipped_outcome(job)
        if skipped is not None:
            outcomes[job.scene] = skipped
        else:
            todo.append(job)
    local = scheduler in (None, "local")
    client, owned = _client(scheduler) if todo and not local else (None, False)
    bar = progress_bar(total=len(jobs), initial=len(jobs) - len(todo), unit="scene", desc="scenes", disable=not progress)
    try:
        if local:
            for job in todo:
                try:
                    outcomes[job.scene] = run_scene(job)
                except Exception as e:
                    outcomes[job.scene] = SceneOutcome(job.scene, job.stem, error=failure_message(job, e))
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
    failures = {o.scene: o.error or "failed" for o in ordered if (o.error or not o.out) and not o.outside}
    layers, masked = _read_layers({o.stem: Path(o.out) for o in ordered if o.scene in outputs}, failures, outputs)
    gdf = merge_layers(layers)
    not_observed = merge_not_observed(masked) if masked else None
    if not_observed is not None and len(layers) and gdf.crs is not None:
        not_observed = not_observed.to_crs(gdf.crs)  # the same CRS as the polygons (empty layers default to 4326)
    written = None
    if merged_path is not None and layers:  # joined polygons may be MultiPolygons: the type is promoted, not forced
        written = _write_merged(gdf, not_observed, merged_path, out_dir)
    return RegionalResult(
        outputs=outputs, failures=failures, merged=written, gdf=gdf,
        skipped=[o.scene for o in ordered if o.skipped], scenes=ordered,
        outside=[o.scene for o in ordered if o.outside],
        crs=gdf.crs.to_string() if layers and gdf.crs is not None else None, not_observed=not_observed,
    )


def _check_masks(kwargs: dict, n_scenes: int) -> dict:
    """Check the mask options of a regional run before any work; ``mask_raster`` made absolute in ``kwargs``.

    Returns:
        What the completion key must hold beyond the options: the mask raster's size and time
        (a new mask redoes the scenes).

    Raises:
        InputError: one ``scl`` file for several scenes, an unknown class, a bad ``cloud_prob_max``,
            ``blue_max`` or ``dark_max``, an unusable mask raster.
        MissingInputError: the mask raster does not exist.
    """
    if kwargs.get("scl") is not None and n_scenes > 1:
        raise InputError(f"`scl` {kwargs['scl']}: one SCL file for {n_scenes} scenes is ambiguous (each scene has "
                         f"its own); products (.SAFE, .zip, STAC) use their own SCL, `mask_raster` applies to "
                         f"every scene, or run detect per scene with its `scl`")
    if kwargs.get("scl_mask") is not None:
        kwargs["scl_mask"] = ",".join(map(str, parse_scl_classes(kwargs["scl_mask"]))) or "none"
    if kwargs.get("cloud_prob_max") is not None:
        kwargs["cloud_prob_max"] = check_cloud_prob_max(kwargs["cloud_prob_max"])
    if kwargs.get("blue_max") is not None:
        kwargs["blue_max"] = check_blue_max(kwargs["blue_max"])
    if kwargs.get("dark_max") is not None:
        kwargs["dark_max"] = check_dark_max(kwargs["dark_max"])
    key: dict = {}
    for name in ("mask_raster", "scl"):
        if kwargs.get(name) is None:
            continue
        path = Path(kwargs[name]).absolute()
        if not path.is_file():
            raise MissingInputError(f"{path}: `{name}` does not exist; give the raster's path")
        check_masks(mask_spec(**{name: path}), None)  # bands, types; the overlap per scene when it runs
        kwargs[name] = str(path)
        st = path.stat()
        key[f"{name}_file"] = [st.st_size, st.st_mtime_ns]
    return key


#: The merged layers a folder's runs wrote (path -> size and mtime), so that a rerun replaces its own and only that.
MERGED_RECORD = ".lsmap-merged.json"


def _merged_record(out_dir: Path) -> dict:
    try:
        return json.loads((out_dir / MERGED_RECORD).read_text())
    except (OSError, ValueError):
        return {}


def _check_merged(path: Path, out_dir: Path, overwrite: bool, inputs: list) -> None:
    """Before any work: refuse a merged layer that is one of the run's inputs (an --aoi file, a scene), and, without
    ``overwrite``, an existing file that no run of this folder wrote (found by the failure audit: a field inventory
    named event.gpkg in the folder, or a --merged path, was replaced without --overwrite)."""
    from lsmap.io.outputs import check_outputs_apart, input_paths

    check_outputs_apart([path], input_paths(inputs))
    if overwrite or not path.exists():
        return
    st = path.stat()
    if _merged_record(out_dir).get(str(path)) != [st.st_size, st.st_mtime_ns]:
        raise OutputExistsError(path, "; no run of this folder wrote it (give another `merged` name, or none)")


def _write_merged(gdf, not_observed, path: Path, out_dir: Path) -> Path:
    """The merged layer at ``path`` (atomically), with the ``not_observed`` layer beside it in a GeoPackage; recorded
    in the folder's :data:`MERGED_RECORD`."""
    path = check_vector_output(path, True)
    with atomic_output(path, True) as tmp:
        scenes = sorted(set(",".join(gdf["scene"]).split(","))) if len(gdf) else []
        write_layer(gdf, tmp, path, geometry_type=None, metadata=provenance(scenes=", ".join(scenes)))
        if not_observed is not None and vector_driver(path)[0] == "GPKG":
            not_observed.to_file(tmp, layer=NOT_OBSERVED_LAYER, driver="GPKG", engine="pyogrio", mode="a",
                                 geometry_type="MultiPolygon", promote_to_multi=True)
    record = _merged_record(out_dir)
    st = path.stat()
    record[str(path)] = [st.st_size, st.st_mtime_ns]
    with atomic_output(out_dir / MERGED_RECORD, True) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    return path


def _remove_stale_work(out_dir: Path) -> None:
    """Remove the temporaries in ``out_dir`` whose process is gone (:func:`lsmap.io.locks.stale`: this run's killed
    attempts, or any dead run's). Those of live processes stay: another run or ``lsmap detect`` writing into the same
    folder lost its scratch folder or its output's temporary here before (found by a code review); so do those of
    other hosts, whose processes cannot be checked from here."""
    from lsmap.io.locks import stale

    for tmp in [*out_dir.glob(".lsmap-detect-*"), *out_dir.glob(".*.tmp")]:
        try:
            mtime = tmp.lstat().st_mtime
        except OSError:
            continue
        if not stale(tmp.name, mtime=mtime):
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _read_layers(paths: Mapping[str, Path], failures: dict, outputs: dict) -> tuple[dict, dict]:
    """The scenes' polygon layers and (GeoPackages that have one) their ``not_observed`` layers, by stem."""
    import geopandas as gpd
    import pyogrio

    layers, masked = {}, {}
    for stem, path in paths.items():
        try:
            # the GeoPackage also holds QGIS's layer_styles table: name the polygon layer (the file's stem)
            gpkg = path.suffix.lower() == ".gpkg"
            layer = {"layer": path.stem} if gpkg else {}
            layers[stem] = gpd.read_file(path, engine="pyogrio", **layer)
            if gpkg and NOT_OBSERVED_LAYER in {str(n) for n in pyogrio.list_layers(path)[:, 0]}:
                masked[stem] = gpd.read_file(path, engine="pyogrio", layer=NOT_OBSERVED_LAYER)
        except Exception as e:  # a layer deleted or damaged after it was marked complete
            scene = next(s for s, p in outputs.items() if p == path)
            failures[scene] = f"{path}: cannot read the scene's layer ({e}); rerun with `overwrite`"
            outputs.pop(scene)
            layers.pop(stem, None)
    return layers, masked


def check_no_stale_layers(jobs: Sequence[SceneJob]) -> None:
    """Refuse, before any work, scene outputs that exist but are not this run's complete ones: layers
    detected with other models, options or inputs, or without their completion record (a file lsmap did not
    write, or a run stopped between the two). Replacing them needs ``overwrite``.

    Raises:
        OutputExistsError: naming the first such output and the scenes.
    """
    stale = [(job, why) for job in jobs if (why := _stale(job))]
    if not stale:
        return
    first, why = stale[0]
    out = next(Path(p) for p in (first.out, *(v for _, v in first.rasters)) if Path(p).exists())
    names = ", ".join(j.stem for j, _ in stale[:5]) + (" ..." if len(stale) > 5 else "")
    raise OutputExistsError(out, f" and redo {len(stale)} scene(s) ({names}; the first {why}), or write to "
                                 f"another folder")


def _stale(job: SceneJob) -> str | None:
    """Why ``job``'s existing outputs are not this run's (``None``: none exist, or they are this run's, complete
    or with an output missing, which the run redoes)."""
    if not any(Path(p).exists() for p in (job.out, *(v for _, v in job.rasters))):
        return None
    done = read_done(job)
    if done is None:
        return f"without its completion record {job.marker.name}"
    if done.get("scene") != job.scene or done.get("key") != job.key:
        return "detected with other " + _what_changed(done, job)
    return None


def _what_changed(done: dict, job: SceneJob) -> str:
    """What differs between a completion record and ``job``: the options by name, else models or inputs."""
    then = json.loads(json.dumps(done.get("params") or {}, default=str))
    now = json.loads(json.dumps(job.params, default=str))
    def said(params: dict, k: str) -> str:  # options at their defaults are not recorded: say so, not "None"
        return repr(params[k]) if k in params else "default"

    changed = [f"`{k}` {said(then, k)} -> {said(now, k)}" for k in sorted(set(then) | set(now))
               if then.get(k) != now.get(k)]
    area = job.aoi.to_dict() if job.aoi is not None else None
    if done.get("aoi") != area:
        then_src, now_src = (done.get("aoi") or {}).get("source"), (area or {}).get("source")
        changed.append(f"`aoi` {then_src!r} -> {now_src!r}" if then_src != now_src else
                       f"`aoi` {now_src!r} (its area changed)")
    if changed:
        return f"options ({'; '.join(changed)})"
    return "models, options or inputs"


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
            outcomes[job.scene] = SceneOutcome(job.scene, job.stem, error=failure_message(job, e))
        bar.update(1)
    return outcomes
