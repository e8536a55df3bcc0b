"""Generated L4S-style patches for training tests: bright squares on noise are landslides."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lsmap.io.patches import write_patch


def make_patches(folder: Path, n: int, size: int = 32, seed: int = 0, bands: int = 14, offset: float = 0.0,
                 masks: bool = True) -> Path:
    """Write ``n`` patches into ``folder`` (img/, mask/) and return it.

    Each patch is noise around 1.0 (+ ``offset``) with one or two squares whose spectral bands
    (all but the last two, the terrain bands) are 0.6 brighter; the squares are the landslides.
    """
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.normal(1.0 + offset, 0.1, (bands, size, size)).astype(np.float32)
        mask = np.zeros((size, size), np.uint8)
        for _ in range(int(rng.integers(1, 3))):
            s = int(rng.integers(size // 8, size // 3))
            r, c = rng.integers(0, size - s, 2)
            mask[r:r + s, c:c + s] = 1
        img[: bands - 2, mask == 1] += 0.6
        write_patch(folder, str(i), img, mask if masks else None)
    return folder
