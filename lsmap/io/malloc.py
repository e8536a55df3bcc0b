"""glibc's malloc, set for streamed inference on a CPU: one arena, and freed tensors' memory kept for the next batch.

Two settings, both through ``mallopt`` and both measured on detection (BENCHMARKS.md, issue 20):

- :func:`limit_malloc_arenas`: all threads share :data:`MALLOC_ARENAS` arena(s). By default glibc gives
  threads up to 8 arenas per core, and each keeps the memory its thread freed: the model workers, the
  reader and the tracer each held their own high-water mark.
- :func:`reuse_freed_memory`, around the models' work: glibc serves large blocks (from 128 KiB, rising to
  32 MiB as such blocks are freed) with a fresh ``mmap`` each and returns them to the system when freed, so
  every forward of a model faulted in and zeroed its activations again (tens of MB a layer for a 544 px
  window): 1.6-2.0 M page faults and 5.0-5.5 s of system time over a 4096^2 scene with a ResNet-18 U-Net.
  Inside, large blocks come from the heap and stay there for the next batch; on leaving, the heap is trimmed
  and glibc's thresholds are set to where its own adjustment settles in a process that frees large arrays.

Neither overrides what the user chose through glibc's environment (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_*``...,
``GLIBC_TUNABLES``); both do nothing off glibc and where ``mallopt`` refuses.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

#: glibc malloc arenas streamed inference limits the process to (:func:`limit_malloc_arenas`): one, shared
#: by all threads (two measured within noise of one; the default, 8 per core, the highest).
MALLOC_ARENAS = 1
#: Free memory at the top of the heap kept while :func:`reuse_freed_memory` is held (not handed back).
KEEP_TRIM_THRESHOLD = 1 << 30
#: Set on leaving :func:`reuse_freed_memory`: the ceiling of glibc's dynamic mmap threshold on 64-bit systems
#: (``DEFAULT_MMAP_THRESHOLD_MAX``), and the trim threshold it pairs with it (twice), where a process that
#: frees large arrays settles (setting any of them stops glibc's own adjustment).
SETTLED_MMAP_THRESHOLD = 32 << 20
SETTLED_TRIM_THRESHOLD = 64 << 20
#: glibc's default number of mmap'ed blocks (``DEFAULT_MMAP_MAX``), restored on leaving.
DEFAULT_MMAP_MAX = 65536

# mallopt's parameter numbers (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -3, -4, -8
#: Environment variables (read by glibc at start-up) that mean the user chose the heap's thresholds.
THRESHOLD_VARIABLES = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_arenas_limited: bool | None = None
_lock = threading.Lock()
_holders = 0
_reuse_libc = None  # glibc, while reuse_freed_memory is set


def _glibc():
    """glibc, as a ``ctypes`` library, or ``None`` (another C library, or another system)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl has mallopt but no arenas or thresholds)
        return libc
    return None


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Have glibc's malloc share :data:`MALLOC_ARENAS` arenas among the process's threads (once).

    Measured on a 2-core float32 CPU (BENCHMARKS.md, issue 20): a ResNet-18 U-Net over a 4096^2 scene peaked
    at 1469-1519 MB instead of 1582-1679 MB, at the same speed. Not measured on many cores, where threads
    that allocate at once would wait for the one arena's lock (detect's model threads allocate once a batch).
    Left as it is where the user set ``MALLOC_ARENA_MAX`` (or ``glibc.malloc.arena_max`` in ``GLIBC_TUNABLES``),
    off glibc, and for arenas that threads already have. Returns whether it applied.
    """
    global _arenas_limited
    if _arenas_limited is None:
        chosen = os.environ.get("MALLOC_ARENA_MAX") or "malloc.arena_max" in os.environ.get("GLIBC_TUNABLES", "")
        libc = None if chosen else _glibc()
        _arenas_limited = bool(libc is not None and libc.mallopt(M_ARENA_MAX, int(arenas)) == 1)
    return _arenas_limited


def _user_set_thresholds() -> bool:
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(os.environ.get(v) for v in THRESHOLD_VARIABLES) or any(
        t in tunables for t in ("malloc.mmap_", "malloc.trim_", "malloc.top_pad"))


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[bool]:
    """Within: glibc serves large blocks from the heap and keeps freed ones for reuse (no ``mmap`` a block).

    For loops that allocate and free the same large arrays over and over, as a model's forward does batch
    after batch. Threads may hold it at once: the first to enter sets it, the last to leave ends it, then
    hands the heap's free memory back to the system (``malloc_trim``) and sets glibc's thresholds to
    :data:`SETTLED_MMAP_THRESHOLD` and :data:`SETTLED_TRIM_THRESHOLD`, so the process does not keep the
    run's peak afterwards. Yields whether it applies (see the module's notes for when it does not).
    """
    global _holders, _reuse_libc
    with _lock:
        if _holders == 0:
            libc = None if _user_set_thresholds() else _glibc()
            if libc is not None and libc.mallopt(M_MMAP_MAX, 0) == 1:
                libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)  # restored on leaving, taken or not
                _reuse_libc = libc
        _holders += 1
        applies = _reuse_libc is not None
    try:
        yield applies
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _reuse_libc is not None:
                libc, _reuse_libc = _reuse_libc, None
                libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                libc.mallopt(M_MMAP_THRESHOLD, SETTLED_MMAP_THRESHOLD)
                libc.mallopt(M_TRIM_THRESHOLD, SETTLED_TRIM_THRESHOLD)
                libc.malloc_trim(0)
