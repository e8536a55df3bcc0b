"""The registry of model architectures (segmentation-models-pytorch and a tiny built-in U-Net).

Pure Python, no numpy or torch at import: a command line's start lists the names from here; each
builder imports its library when called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from lsmap.errors import InputError


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: how to build it and what it is."""

    name: str
    description: str
    build: Callable[[int, int], Any]  # (in_channels, classes) -> nn.Module
    encoder: str | None = None  # segmentation-models-pytorch encoder name (published weights)
    #: Convolutions (and pooling/upsampling) only: a window of any size gives the same pixels away
    #: from its borders, so detection may run large windows (:func:`lsmap.map.stream.auto_window`).
    fully_convolutional: bool = True


def _smp(arch: str, encoder: str, **kw) -> Callable[[int, int], Any]:
    def build(in_channels: int, classes: int):
        import segmentation_models_pytorch as smp

        return smp.create_model(arch, encoder_name=encoder, encoder_weights=None,
                                in_channels=in_channels, classes=classes, **kw)

    return build


def _smp_spec(name: str, description: str, arch: str, encoder: str) -> ModelSpec:
    # SegFormer's attention sees the whole window: its output depends on the window's size
    return ModelSpec(name, description, _smp(arch, encoder), encoder, fully_convolutional=arch != "Segformer")


def _tiny(in_channels: int, classes: int):
    from lsmap.learn.tiny_unet import TinyUNet

    return TinyUNet(in_channels, classes)


MODELS: Mapping[str, ModelSpec] = MappingProxyType({
    s.name: s
    for s in (
        _smp_spec("unet-resnet18", "U-Net, ResNet-18 encoder (14.4 M parameters at 14 bands)", "Unet", "resnet18"),
        _smp_spec("unet-resnet34", "U-Net, ResNet-34 encoder (24.5 M)", "Unet", "resnet34"),
        _smp_spec("unet-efficientnet-b0", "U-Net, EfficientNet-B0 encoder (6.3 M)", "Unet", "efficientnet-b0"),
        _smp_spec("unet-efficientnet-b3", "U-Net, EfficientNet-B3 encoder", "Unet", "efficientnet-b3"),
        _smp_spec("segformer-mit_b0", "SegFormer, MiT-B0 encoder, MLP decoder (3.7 M)", "Segformer", "mit_b0"),
        _smp_spec("segformer-mit_b2", "SegFormer, MiT-B2 encoder, MLP decoder", "Segformer", "mit_b2"),
        _smp_spec("deeplabv3plus-resnet34", "DeepLabV3+, ResNet-34 encoder (22.5 M)", "DeepLabV3Plus", "resnet34"),
        _smp_spec("deeplabv3plus-resnet50", "DeepLabV3+, ResNet-50 encoder", "DeepLabV3Plus", "resnet50"),
        ModelSpec("tiny-unet", "small built-in U-Net for tests and CPU-only use", _tiny),
    )
})


def get_spec(name: str) -> ModelSpec:
    """Registered architecture ``name``.

    Raises:
        InputError: unknown name; the message lists the valid ones.
    """
    try:
        return MODELS[name]
    except KeyError:
        raise InputError(f"unknown model '{name}'; choose one of: {', '.join(MODELS)}") from None
