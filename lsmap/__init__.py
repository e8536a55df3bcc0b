"""lsmap: map landslides from Sentinel-2 scenes.

The public API is re-exported here lazily so that ``import lsmap`` stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: Public names re-exported lazily: name -> submodule that defines it.
_LAZY = {"detect": "detection", "detect_many": "regional"}


def __getattr__(name: str):
    """Import a public function's module on first use (PEP 562)."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lsmap' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
