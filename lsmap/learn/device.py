"""Device choice and mixed precision, shared by training and inference.

On CUDA lsmap uses float16 autocast (bfloat16 where the GPU supports it); on CPUs with bfloat16
matrix units (AMX, AVX512-BF16) it uses bfloat16 autocast with channels-last tensors, which runs
U-Nets 2-3x faster than float32 on this project's machines. Everything else runs float32; on a
CPU, inference runs channels-last in float32 too (:func:`inference_channels_last`).
"""

from __future__ import annotations

import contextlib
import functools
import re

from lsmap.errors import InputError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto"):
    """Return a ``torch.device`` for ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``.

    Raises:
        InputError: ``cuda`` was asked for and no GPU is visible, or the name is unknown.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", str(name))
    if m is not None:
        if not torch.cuda.is_available():
            raise InputError("`device` cuda: no CUDA GPU is visible; use `device` cpu or auto")
        if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
            raise InputError(f"`device` {name}: {torch.cuda.device_count()} CUDA GPU(s) visible (cuda:0"
                             f"{f'..cuda:{torch.cuda.device_count() - 1}' if torch.cuda.device_count() > 1 else ''})")
        return torch.device(name)
    raise InputError(f"unknown device '{name}'; choose one of: {', '.join(DEVICES)} (or cuda:N)")


@functools.cache
def cpu_has_bf16() -> bool:
    """True when the CPU has native bfloat16 matrix instructions (AMX or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def amp_dtype(device):
    """The autocast dtype lsmap uses on ``device``, or ``None`` for plain float32."""
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None


def autocast(device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Autocast context for ``device`` (a no-op when disabled or not beneficial)."""
    import torch

    dtype = amp_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def use_channels_last(device, enabled: bool = True) -> bool:
    """Whether to convert models and inputs to channels-last memory format on ``device``."""
    return enabled and amp_dtype(device) is not None


def inference_channels_last(device, amp: bool = True) -> bool:
    """Whether inference (detection, evaluation, refinement's predictions) runs models and inputs
    channels-last on ``device``: on every CPU, and on CUDA with autocast.

    oneDNN's channels-last convolutions are faster on CPUs in float32 as well: measured on a 2-core
    AMD EPYC without bfloat16 units (``bench/channels_last.py``, BENCHMARKS.md), the default tiny
    U-Net's forward 1.4-2.1x, the ResNet U-Nets' 1.2-1.3x; DeepLabV3+ and SegFormer within the noise
    of that machine (0.8-1.4x from run to run). Training keeps :func:`use_channels_last` (float32
    backward passes gain less and DeepLabV3+'s was slower in one of two runs).
    """
    return device.type == "cpu" or use_channels_last(device, amp)


def rng_states(device) -> dict:
    """The random states a resumed run needs: torch's CPU generator, and ``device``'s when it is a GPU."""
    import torch

    states = {"rng_torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["rng_cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(state: dict, device, world: int = 1) -> None:
    """Put back what :func:`rng_states` saved.

    The GPU's generator is restored on a GPU run of one process only: a saved state is rank 0's, and
    giving it to every rank of a several-GPU run would make their draws the same. A state saved on a GPU
    and resumed on the CPU (or the reverse) keeps the CPU generator only.
    """
    import torch

    torch.set_rng_state(state["rng_torch"])
    if device.type == "cuda" and world == 1 and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(state["rng_cuda"], device)
