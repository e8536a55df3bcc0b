"""Process resources of a run (lsmap.io.resources): malloc arenas of streamed inference."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from lsmap.io import resources


@pytest.fixture
def fresh(monkeypatch):
    """A process where the arenas were never limited, with glibc's mallopt recorded instead of called."""
    calls = []

    def mallopt(param, value):
        calls.append((param, value))
        return 1

    monkeypatch.setattr(resources, "_arenas_limited", None)
    monkeypatch.setattr(resources, "_glibc_mallopt", lambda: mallopt)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    return calls


def test_arenas_are_limited_once(fresh):
    assert resources.limit_malloc_arenas() is True
    assert resources.limit_malloc_arenas() is True
    assert fresh == [(-8, resources.MALLOC_ARENAS)]  # M_ARENA_MAX, once


def test_users_malloc_arena_max_is_left_as_it_is(fresh, monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert resources.limit_malloc_arenas() is False
    assert fresh == []


def test_other_c_libraries_are_left_as_they_are(monkeypatch):
    monkeypatch.setattr(resources, "_arenas_limited", None)
    monkeypatch.setattr(resources, "_glibc_mallopt", lambda: None)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert resources.limit_malloc_arenas() is False


def test_a_refused_mallopt_is_not_reported_as_applied(monkeypatch):
    monkeypatch.setattr(resources, "_arenas_limited", None)
    monkeypatch.setattr(resources, "_glibc_mallopt", lambda: lambda param, value: 0)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert resources.limit_malloc_arenas() is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_takes_the_limit():
    """The real call, in a fresh process: glibc's mallopt accepts M_ARENA_MAX."""
    code = "from lsmap.io.resources import limit_malloc_arenas as f; print(f())"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "True"
