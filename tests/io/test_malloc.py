"""glibc's malloc set for streamed inference (lsmap.io.malloc): one arena, freed memory reused by the models."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading

import pytest

from lsmap.io import malloc


class FakeLibc:
    """glibc's mallopt and malloc_trim, recorded instead of called (``refuse``: mallopt answers 0)."""

    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[tuple] = []
        self.refuse = refuse

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 0 if self.refuse else 1

    def malloc_trim(self, pad):
        self.calls.append(("trim", pad))
        return 1


@pytest.fixture
def libc(monkeypatch):
    """A process where nothing was set yet and the user set no malloc variable, with a fake glibc."""
    fake = FakeLibc()
    monkeypatch.setattr(malloc, "_arenas_limited", None)
    monkeypatch.setattr(malloc, "_holders", 0)
    monkeypatch.setattr(malloc, "_reuse_libc", None)
    monkeypatch.setattr(malloc, "_glibc", lambda: fake)
    for v in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES", *malloc.THRESHOLD_VARIABLES):
        monkeypatch.delenv(v, raising=False)
    return fake


ENTER = [(malloc.M_MMAP_MAX, 0), (malloc.M_TRIM_THRESHOLD, malloc.KEEP_TRIM_THRESHOLD)]
LEAVE = [(malloc.M_MMAP_MAX, malloc.DEFAULT_MMAP_MAX), (malloc.M_MMAP_THRESHOLD, malloc.SETTLED_MMAP_THRESHOLD),
         (malloc.M_TRIM_THRESHOLD, malloc.SETTLED_TRIM_THRESHOLD), ("trim", 0)]


def test_arenas_are_limited_once(libc):
    assert malloc.limit_malloc_arenas() is True
    assert malloc.limit_malloc_arenas() is True
    assert libc.calls == [(-8, malloc.MALLOC_ARENAS)]  # M_ARENA_MAX, once


@pytest.mark.parametrize("variable, value", [("MALLOC_ARENA_MAX", "8"), ("GLIBC_TUNABLES", "glibc.malloc.arena_max=8")])
def test_users_malloc_arena_max_is_left_as_it_is(libc, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    assert malloc.limit_malloc_arenas() is False
    assert libc.calls == []


def test_other_c_libraries_are_left_as_they_are(libc, monkeypatch):
    monkeypatch.setattr(malloc, "_glibc", lambda: None)
    assert malloc.limit_malloc_arenas() is False
    with malloc.reuse_freed_memory() as applies:
        assert applies is False


def test_a_refused_mallopt_is_not_reported_as_applied(libc):
    libc.refuse = True
    assert malloc.limit_malloc_arenas() is False
    with malloc.reuse_freed_memory() as applies:
        assert applies is False
    assert libc.calls == [(-8, malloc.MALLOC_ARENAS), (malloc.M_MMAP_MAX, 0)]  # nothing set: nothing to restore


def test_freed_memory_is_reused_within_and_handed_back_on_leaving(libc):
    with malloc.reuse_freed_memory() as applies:
        assert applies is True
        assert libc.calls == ENTER
    assert libc.calls == ENTER + LEAVE


def test_it_is_restored_when_the_work_inside_fails(libc):
    with pytest.raises(RuntimeError), malloc.reuse_freed_memory():
        raise RuntimeError("a model failed")
    assert libc.calls == ENTER + LEAVE


def test_threads_holding_it_at_once_set_it_once_and_the_last_restores(libc):
    """Regional runs predict several scenes on threads: the first in sets, the last out restores."""
    inside, release = threading.Barrier(3), threading.Event()

    def hold():
        with malloc.reuse_freed_memory():
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    assert libc.calls == ENTER  # both inside: set once
    release.set()
    for t in threads:
        t.join()
    assert libc.calls == ENTER + LEAVE
    with malloc.reuse_freed_memory():  # and again for the next run
        pass
    assert libc.calls == 2 * (ENTER + LEAVE)


@pytest.mark.parametrize("variable, value", [("MALLOC_MMAP_THRESHOLD_", "65536"), ("MALLOC_TRIM_THRESHOLD_", "0"),
                                             ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")])
def test_users_thresholds_are_left_as_they_are(libc, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with malloc.reuse_freed_memory() as applies:
        assert applies is False
    assert libc.calls == []


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_takes_the_settings():
    """The real calls, in a fresh process: glibc accepts them, and large arrays are allocated and freed inside
    (served by the heap, in two threads) and after (glibc's thresholds as set on leaving)."""
    code = ("import threading\nimport numpy as np\nfrom lsmap.io.malloc import limit_malloc_arenas, reuse_freed_memory\n"
            "print(limit_malloc_arenas())\n"
            "def work():\n"
            "    for _ in range(3):\n"
            "        a = np.ones(100_000_000 // 8); assert a.sum() == a.size; del a\n"
            "with reuse_freed_memory() as applies:\n"
            "    t = threading.Thread(target=work); t.start(); work(); t.join()\n"
            "print(applies)\n"
            "b = np.ones(100_000_000 // 8); print(b.sum() == b.size)")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES", *malloc.THRESHOLD_VARIABLES)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["True", "True", "True"]
