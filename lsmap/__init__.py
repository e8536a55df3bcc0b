"""lsmap: map landslides from Sentinel-2 scenes.

The public API, for scripts that call lsmap without its command line::

    import lsmap
    slides = lsmap.detect("scene.tif", out="slides.gpkg")       # the default model

Names are imported lazily on first use (PEP 562) so that ``import lsmap`` stays fast. The
packages below spell the data flow: ``core`` (pure: bands, windows, constants, statistics,
metrics) -> ``io`` (the code that opens files) -> ``data`` (stack, tile, statistics, datasets)
-> ``learn`` (models, training, evaluation, refine) -> ``map`` (streamed ensemble inference,
polygons, detection, regional runs) -> ``cli`` (one module per command).
"""

from __future__ import annotations

__version__ = "0.1.0"

#: Public names: name -> module that defines it.
_PUBLIC = {
    "detect": "lsmap.map.detect",
    "detect_many": "lsmap.map.regional.run",
    "stack_scene": "lsmap.data.stack",
    "tile_scene": "lsmap.data.tile",
    "compute_stats": "lsmap.data.stats",
    "train": "lsmap.learn.train",
    "evaluate": "lsmap.learn.evaluate",
    "refine": "lsmap.learn.refine.rounds",
    "TrainConfig": "lsmap.learn.config",
    "RefineConfig": "lsmap.learn.refine.rounds",
    "DetectOptions": "lsmap.map.options",
    "LsmapError": "lsmap.errors",
    "InputError": "lsmap.errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    """Import a public name's module on first use (PEP 562)."""
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lsmap' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
