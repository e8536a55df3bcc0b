"""Test-only helpers for the detection tests: generated scenes and tiny stand-in models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

from lsmap.core.bands import get_profile
from lsmap.learn.ensemble import Member
from lsmap.learn.models import ModelCard, build_model, save_checkpoint


class Band0Model(nn.Module):
    """Identity-like: logits (0, x[:, 0]), so the landslide probability is sigmoid(normalised band 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, :1]], 1)


class ConstantModel(nn.Module):
    """Logits (0, c) everywhere: probability sigmoid(c) whatever the input."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.zeros_like(x[:, :1])
        return torch.cat([z, z + self.c], 1)


def card(profile: str = "l4s14", mean: float = 1.0, std: float = 0.5, **kw) -> ModelCard:
    """A card for band set ``profile`` (a profile name or a comma list of band names)."""
    bands = get_profile(profile).bands
    n = len(bands)
    return ModelCard(model="tiny-unet", bands=list(bands),
                     stats={"mean": [mean] * n, "std": [std] * n, "count": 1}, **kw)


def member(module: nn.Module, profile: str = "l4s14", **kw) -> Member:
    return Member(module.eval(), card(profile, **kw), source=type(module).__name__)


def tiny_checkpoint(path: Path, profile: str = "l4s14", seed: int = 0) -> Path:
    """Save an untrained tiny-unet checkpoint (random weights, fixed seed)."""
    torch.manual_seed(seed)
    module = build_model("tiny-unet", get_profile(profile).count).eval()
    return save_checkpoint(path, module, card(profile))


def write_scene(path: Path, data: np.ndarray, *, crs: str = "EPSG:32645", res: float = 10.0,
                origin: tuple[float, float] = (500000.0, 3000000.0), nodata: float | None = None,
                bands: Sequence[str] | None = None) -> Path:
    """Write a (C, H, W) float32 GeoTIFF (``bands``: band descriptions, as ``lsmap stack`` writes)."""
    c, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype="float32", crs=crs,
                       transform=from_origin(origin[0], origin[1], res, res), nodata=nodata,
                       tiled=True, blockxsize=64, blockysize=64) as dst:
        dst.write(data.astype(np.float32))
        for i, name in enumerate(bands or (), start=1):
            dst.set_band_description(i, name)
    return path


def smooth_scene(rng: np.random.Generator, bands: int = 14, h: int = 260, w: int = 300) -> np.ndarray:
    """A plausible L4S-scaled scene: per-band smooth fields around 1 with some noise."""
    yy, xx = np.mgrid[0:h, 0:w] / 40.0
    base = np.stack([np.sin(xx * (1 + b / 7)) * np.cos(yy * (1 + b / 11)) for b in range(bands)])
    return (1.0 + 0.4 * base + 0.05 * rng.standard_normal((bands, h, w))).astype(np.float32)


def _box(conv: torch.nn.Conv2d, pairs) -> None:
    """A 3 x 3 mean filter from input channel ``i`` to output channel ``o`` for each ``(o, i)``."""
    for o, i in pairs:
        conv.weight[o, i] = 1.0 / 9.0


def blurry_checkpoint(path, gain: float = 3.0):
    """A tiny-unet whose landslide logit is ``gain`` x (band 0, normalised, mean-filtered four times).

    Band 0 travels as relu(z) and relu(-z) through four 3 x 3 mean filters (two in ``enc1``, two in
    ``dec1`` via the skip connection); everything else is zero. The probability is right in the
    middle of a bright square and of the background but blurred over about 8 px across its edges.
    """
    m = build_model("tiny-unet", 14).eval()
    w = m.head.in_channels
    with torch.no_grad():
        for mod in m.modules():  # batch norms stay identities (eval mode, fresh running statistics)
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                for p in mod.parameters():
                    p.zero_()
        m.enc1[0].weight[0, 0] = 1.0 / 9.0  # relu(+z)
        m.enc1[0].weight[1, 0] = -1.0 / 9.0  # relu(-z)
        _box(m.enc1[3], [(0, 0), (1, 1)])
        _box(m.dec1[0], [(0, w), (1, w + 1)])  # e1 arrives after up1's (zero) channels
        _box(m.dec1[3], [(0, 0), (1, 1)])
        m.head.weight[1, 0, 0, 0] = gain
        m.head.weight[1, 1, 0, 0] = -gain
    return save_checkpoint(path, m, card("l4s14", mean=1.3, std=0.3))
