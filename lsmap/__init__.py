"""lsmap: map landslides from Sentinel-2 scenes.

The public API is re-exported here lazily so that ``import lsmap`` stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
