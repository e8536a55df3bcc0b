"""Shared fixtures: tiny generated rasters and patches, and the real-data location."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: ../shared/data beside the project checkout (absent on machines without it).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, skipping the calling test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def counts_agree(a: dict, b: dict, keys=("tp", "fp", "fn", "tn")) -> bool:
    """Confusion counts of one model run two ways (folded or not, training's or evaluate's path): the same
    in float32; under bfloat16 autocast (lsmap's default on a CPU with AMX or AVX512-BF16) the two round
    apart, so pixels at the threshold may flip: at most 0.1 % of the pixels (and 2) per count."""
    import torch

    from lsmap.learn.device import amp_dtype

    if amp_dtype(torch.device("cpu")) is None:
        return all(a[k] == b[k] for k in keys)
    total = sum(a[k] for k in keys)
    return all(abs(a[k] - b[k]) <= max(2, total // 1000) for k in keys)
