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


#: Allocations from this size up get their own memory map, returned to the system when freed.
MMAP_THRESHOLD = 1 << 20
_heap_bounded = False


def bound_heap_growth() -> bool:
    """Keep large buffers from piling up in the C heap (glibc only; once per process; True if set).

    glibc serves a large ``malloc`` with its own memory map, returned to the system on ``free``, but
    raises that threshold (up to 32 MiB) each time such a map is freed; streamed inference frees
    window- and strip-sized numpy buffers (1-60 MB) all the time, so later ones come from the heap
    arenas of the reader and model threads, which keep freed memory: measured +145 MB of peak RSS on
    a 2048^2 detection (bench/detect_throughput.py). Fixing the threshold (``mallopt(M_MMAP_THRESHOLD)``,
    which also stops its growth) costs a few page faults per buffer, no copy.
    """
    global _heap_bounded
    if _heap_bounded:
        return True
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_mmap_threshold = -3
        _heap_bounded = bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD))
    return _heap_bounded
