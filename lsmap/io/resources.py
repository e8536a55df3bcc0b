"""How much memory and disk a run may use: estimates checked before allocating anything.

Commands estimate what they will hold (patch buffers, strips, batches, scratch rasters) from
their options and refuse, with one line that gives the estimate and the fix, what cannot fit
(:class:`lsmap.errors.TooLargeError`) instead of allocating until the machine swaps or a
traceback comes from deep inside numpy or GDAL.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from lsmap.errors import TooLargeError

#: Part of the available memory a run may plan to use.
MEMORY_SHARE = 0.8


def available_memory() -> int | None:
    """Bytes of memory this process may still allocate: ``MemAvailable`` (Linux), bounded by a cgroup limit."""
    avail = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    if avail is None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        with contextlib.suppress(OSError, ValueError):
            text = Path(limit_file).read_text().strip()
            if text != "max" and int(text) < 1 << 60:
                left = int(text) - int(Path(usage_file).read_text().strip())
                avail = left if avail is None else min(avail, left)
            break
    return avail


def human(n: float) -> str:
    """``n`` bytes as ``12.3 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def check_memory(need: float, option: str, what: str, fix: str, *, available: int | None = None) -> None:
    """Refuse a run that would need ``need`` bytes of memory when less is available.

    Args:
        need: Estimated bytes.
        option: The option (or input) that decides the size, named first in the message.
        what: What the memory is for.
        fix: How to make it fit.
        available: Bytes available (default :func:`available_memory`).

    Raises:
        TooLargeError: ``need`` exceeds :data:`MEMORY_SHARE` of the available memory.
    """
    avail = available_memory() if available is None else available
    if avail is None:
        return
    if need > MEMORY_SHARE * avail:
        raise TooLargeError(f"{option}: {what} would need about {human(need)} of memory but {human(avail)} is "
                            f"available; {fix}")


def check_disk(folder: str | os.PathLike, need: float, what: str, fix: str) -> None:
    """Refuse a run whose scratch or output files would need more than the free space of ``folder``.

    Raises:
        TooLargeError: ``need`` exceeds the free bytes.
    """
    from lsmap.io.outputs import free_bytes, mount_of

    free = free_bytes(folder)
    if free is None:
        return
    if need > free:
        raise TooLargeError(f"{folder}: {what} would need about {human(need)} of disk but {mount_of(folder)} has "
                            f"{human(free)} free; {fix}")
