"""Concurrent runs and leftovers: an output is locked for its run; dead runs' temporaries are removed (issue 14, 8 and 9)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lsmap.cli import main
from lsmap.errors import OutputLockedError
from lsmap.io.locks import _host, lock_path, output_lock, remove_stale, stale
from lsmap.io.outputs import atomic_output

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock on tmp_path/slides.gpkg until the test ends."""
    out = tmp_path / "slides.gpkg"
    code = textwrap.dedent(f"""
        import sys, time
        from lsmap.io.locks import output_lock
        with output_lock({str(out)!r}):
            print("locked", flush=True)
            sys.stdin.read()
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout.readline().strip() == "locked"
    yield out, proc
    proc.stdin.close()
    proc.wait(timeout=30)


def test_second_writer_fails_at_once_naming_the_first_pid(holder):
    out, proc = holder
    with pytest.raises(OutputLockedError, match=f"pid {proc.pid}"), atomic_output(out, lock=True):
        pass
    assert not out.exists()


def test_detect_on_a_locked_output_fails_and_keeps_the_first_result(holder, tmp_path, rng):
    from tests.detect_fixtures import smooth_scene, tiny_checkpoint, write_scene

    out, proc = holder
    scene = write_scene(tmp_path / "s.tif", smooth_scene(rng, h=64, w=64))
    model = tiny_checkpoint(tmp_path / "m")
    res = CliRunner().invoke(main, ["detect", str(scene), "-o", str(out), "--model", str(model), "--device", "cpu"])
    assert res.exit_code == 1
    assert f"pid {proc.pid}" in res.output and "Traceback" not in res.output


def test_lock_is_released_and_removed_and_reentrant(tmp_path):
    out = tmp_path / "a.tif"
    with output_lock(out) as lock:
        assert lock.exists()
        with output_lock(out):  # same process: re-entrant
            pass
        assert lock.exists()
    assert not lock_path(out).exists()
    with output_lock(out):  # and can be taken again
        pass


def test_stale_temporaries_of_dead_runs_are_removed_live_ones_kept(tmp_path):
    dead = 2**22 + 12345  # above the default pid_max: no such process
    host = _host()
    names = {
        f".slides.gpkg.lsmap-{host}-{dead}-abcd1234.tmp": True,
        f".lsmap-detect-lsmap-{host}-{dead}-0f0f0f0f-xyz": True,
        f".slides.gpkg.lsmap-{host}-{os.getpid()}-abcd1234.tmp": False,  # alive
        f".slides.gpkg.lsmap-otherhost-{dead}-abcd1234.tmp": False,  # another host may still write
        ".other.gpkg.lsmap-x-1-ab.tmp": False,  # another output's temporaries
        "thesis.txt": False,
    }
    for n in names:
        p = tmp_path / n
        if n.endswith(".tmp") or n.startswith(".lsmap-detect"):
            p.mkdir()
            (p / "inner").write_text("x")
        else:
            p.write_text("mine")
    removed = remove_stale(tmp_path, "slides.gpkg")
    assert sorted(p.name for p in removed) == sorted(n for n, gone in names.items() if gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, gone in names.items() if not gone)


def test_legacy_temporaries_without_owner_go_only_when_old():
    assert not stale(".slides.gpkg.k3j4h5.tmp", now=1000.0, mtime=900.0)
    assert stale(".slides.gpkg.k3j4h5.tmp", now=100000.0, mtime=900.0)


def test_a_later_run_cleans_the_leftovers_of_a_killed_run(tmp_path):
    """A run killed with SIGKILL leaves its temporary; the next run on the output removes it."""
    out = tmp_path / "stats.json"
    code = textwrap.dedent(f"""
        import os, signal
        from lsmap.io.outputs import atomic_output
        with atomic_output({str(out)!r}, lock=True) as tmp:
            tmp.write_text("partial")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    left = [p.name for p in tmp_path.iterdir()]
    assert any(n.startswith(".stats.json.lsmap-") for n in left), left
    with atomic_output(out, lock=True) as tmp:
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]


def test_concurrent_writers_in_threads_of_other_processes_one_wins(tmp_path):
    """Two processes race for one output: exactly one writes it, the other fails naming the lock."""
    out = tmp_path / "o.txt"
    code = textwrap.dedent(f"""
        import sys, time
        from lsmap.errors import OutputLockedError
        from lsmap.io.outputs import atomic_output
        try:
            with atomic_output({str(out)!r}, overwrite=True, lock=True) as tmp:
                time.sleep(1.5)
                tmp.write_text(sys.argv[1])
            print("wrote")
        except OutputLockedError as e:
            print("locked", e)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], stdout=subprocess.PIPE, text=True, env=env)
             for i in range(2)]
    outs = sorted(p.communicate(timeout=60)[0].split()[0] for p in procs)
    assert outs == ["locked", "wrote"]
    assert out.read_text() in ("0", "1")
    np.testing.assert_equal(len(list(tmp_path.iterdir())), 1)


def test_a_zombie_owns_nothing():
    """A killed process its parent has not reaped answers kill(pid, 0): its temporaries survived the next run
    (found by the failure audit)."""
    import subprocess
    import sys
    import time

    from lsmap.io.locks import pid_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    for _ in range(100):  # exited, not waited for: a zombie
        if open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.05)
    assert not pid_alive(child.pid)
    child.wait()
    assert pid_alive(os.getpid())
